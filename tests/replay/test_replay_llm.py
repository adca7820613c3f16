"""Honest LLM replay, against the fake OpenAI-compatible server: who answered, why not, and what changed.

The summary must say how many incidents the LLM answered and how many the rules decided
instead, and why; `--strict` turns any fallback into exit code 3; `--explain` and the JSON
carry each answer's summary and reasoning; `--compare` lists exactly the incidents whose
category, action or policy outcome changed, with the change in every score.
"""

from __future__ import annotations

import json
import shutil
import socket
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from sre_agent.cli import main
from tests.fake_llm import FakeLLM, answer_for, reply, status

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "replay" / "incidents"
FILES = ("oom-java-heap-001.yaml", "crash-python-startup-001.yaml", "probe-wrong-port-002.yaml",
         "sched-taint-005.yaml", "image-tag-notfound-001.yaml")  # fmt: skip
REPORT = jsonschema.Draft202012Validator(
    json.loads(resources.files("sre_agent.schemas").joinpath("replay_report.schema.json").read_text())
)


@pytest.fixture
def incidents(tmp_path: Path) -> Path:
    out = tmp_path / "incidents"
    out.mkdir()
    for name in FILES:
        shutil.copy(CORPUS / name, out / name)
    return out


@pytest.fixture(autouse=True)
def quick_llm(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SRE_AGENT_LLM_API_KEY", "OPENAI_API_KEY", "SRE_AGENT_LLM_BASE_URL", "SRE_AGENT_LLM_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SRE_AGENT_LLM_MAX_RETRIES", "0")
    monkeypatch.setenv("SRE_AGENT_LLM_TIMEOUT", "5")
    monkeypatch.setenv("SRE_AGENT_LLM_BACKOFF_BASE", "0")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["replay", *args, "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any], str]:
    code, out, err = run(capsys, *args, "--format", "json")
    report = json.loads(out)
    REPORT.validate(report)
    return code, report, err


def dead_url() -> str:
    """An endpoint nobody listens on: a port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_answers_carry_summary_and_reasoning(
    capsys: pytest.CaptureFixture[str], fake_llm: FakeLLM, incidents: Path
) -> None:
    fake_llm.default = reply(answer_for("app_error"))
    code, report, err = run_json(
        capsys, str(incidents), "--reasoner", "llm", "--base-url", fake_llm.base_url, "--strict", "--no-cache"
    )
    assert code == 0, err
    llm = report["summary"]["llm"]
    assert llm == {"asked": 5, "answered": 5, "from_cache": 0, "fallbacks": 0, "fallback_reasons": []}
    assert report["summary"]["reasoner"].startswith("gpt") or "@" in report["summary"]["reasoner"]
    for result in report["results"]:
        assert result["source"] == "llm" and result["fallback_reason"] is None
        assert result["summary"] == "fake diagnosis: app_error"
        assert result["reasoning"] == "the fake model says app_error"
    assert "WARNING" not in err

    code, out, _ = run(capsys, str(incidents), "--reasoner", "llm", "--base-url", fake_llm.base_url, "--explain")
    assert code == 0
    assert out.count("    summary: fake diagnosis: app_error") == 5
    assert out.count("    reasoning: the fake model says app_error") == 5
    assert "LLM (" in out and "answered 5 of 5 incidents" in out and "0 fell back to the rules" in out


def test_some_fallbacks_are_counted_with_their_reason_and_strict_fails(
    capsys: pytest.CaptureFixture[str], fake_llm: FakeLLM, incidents: Path
) -> None:
    fake_llm.default = reply(answer_for("app_error"))
    fake_llm.script(status(500), reply("this is not JSON"))
    code, report, err = run_json(
        capsys, str(incidents), "--reasoner", "llm", "--base-url", fake_llm.base_url, "--no-cache"
    )
    assert code == 0  # without --strict, fallbacks are reported, not fatal
    llm = report["summary"]["llm"]
    assert (llm["asked"], llm["answered"], llm["fallbacks"]) == (5, 3, 2)
    reasons = [r["reason"] for r in llm["fallback_reasons"]]
    assert any("HTTP 500" in r for r in reasons), reasons
    fell_back = [r for r in report["results"] if r["fallback_reason"]]
    assert len(fell_back) == 2 and all(r["source"] == "rules" for r in fell_back)
    assert all(r["summary"] and r["reasoning"] for r in fell_back)  # the rules' own words
    [warning] = [line for line in err.splitlines() if line.startswith("WARNING")]
    assert "answered 3 of 5" in warning and "2 fell back to the rules" in warning and "HTTP 500" in warning

    fake_llm.script(status(500))
    code, out, _ = run(capsys, str(incidents), "--reasoner", "llm", "--base-url", fake_llm.base_url, "--strict")
    assert code == 3
    assert "WARNING: LLM" in out and "1 fell back to the rules" in out


def test_a_dead_endpoint_says_so_and_strict_exits_non_zero(
    capsys: pytest.CaptureFixture[str], incidents: Path
) -> None:
    url = dead_url()
    code, report, err = run_json(capsys, str(incidents), "--reasoner", "llm", "--base-url", url)
    assert code == 0
    s = report["summary"]
    assert s["llm"]["answered"] == 0 and s["llm"]["fallbacks"] == s["llm"]["asked"] == 5
    assert all(r["source"] == "rules" and r["fallback_reason"] for r in report["results"])
    assert "answered 0 of 5 incidents" in err and "5 fell back to the rules" in err
    assert "Traceback" not in err

    code, out, err = run(capsys, str(incidents), "--reasoner", "llm", "--base-url", url, "--strict")
    assert code == 3
    assert "WARNING: LLM" in out and "answered 0 of 5" in out
    assert "Traceback" not in err


# ----------------------------------------------------------------------------------- compare


def changed_ids(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    old = {r["id"]: r for r in before["results"]}
    return {
        r["id"] for r in after["results"]
        if any(old[r["id"]][k] != r[k] for k in ("category", "action", "policy"))
    }  # fmt: skip


def test_compare_lists_exactly_the_incidents_that_changed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _, before, _ = run_json(capsys, str(CORPUS))
    previous = tmp_path / "before.json"
    previous.write_text(json.dumps(before))
    code, after, _ = run_json(
        capsys, str(CORPUS), "--policy", str(ROOT / "policies" / "autopilot.yaml"), "--compare", str(previous)
    )
    assert code == 0
    comparison = after.pop("comparison")
    expected = changed_ids(before, after)
    assert expected, "the autopilot policy changes some outcomes"
    assert {c["id"] for c in comparison["changed"]} == expected
    for c in comparison["changed"]:
        if c["fields"] == ["policy"]:
            assert c["before"]["policy"] != c["after"]["policy"]
        else:  # autopilot enables rollback_deployment: rollouts that broke a workload get one
            assert c["fields"] == ["action", "policy"] or c["fields"] == ["action"], c
            assert c["after"]["action"] == "rollback_deployment", c
    assert comparison["added"] == comparison["removed"] == []
    for key, score in comparison["scores"].items():
        assert score["before"] == before["summary"][key] and score["after"] == after["summary"][key]

    # One hand-made difference in the previous run is reported, alone, with its score change.
    edited = json.loads(json.dumps(before))
    target = edited["results"][3]
    target["category"] = "unknown"
    target["correct"]["category"] = False
    edited["summary"]["category_accuracy"] = 0.5
    edited["results"].append({**edited["results"][0], "id": "gone-001"})
    previous.write_text(json.dumps(edited))
    code, out, _ = run(capsys, str(CORPUS), "--compare", str(previous))
    assert code == 0
    tail = out[out.index("compared with") :]
    assert f"compared with {previous}: 1 incident(s) changed" in tail
    assert f"  {target['id']}: category unknown -> " in tail and "correct: category False -> True" in tail
    assert "removed: gone-001" in tail
    delta = round(before["summary"]["category_accuracy"] - 0.5, 4)
    assert f"category_accuracy 0.5 -> {before['summary']['category_accuracy']} ({delta:+g})" in tail


def test_compare_against_an_llm_run(
    capsys: pytest.CaptureFixture[str], fake_llm: FakeLLM, incidents: Path, tmp_path: Path
) -> None:
    _, rules, _ = run_json(capsys, str(incidents))
    previous = tmp_path / "rules.json"
    previous.write_text(json.dumps(rules))
    fake_llm.default = reply(answer_for("app_error"))
    _, report, _ = run_json(
        capsys, str(incidents), "--reasoner", "llm", "--base-url", fake_llm.base_url, "--compare", str(previous)
    )
    comparison = report.pop("comparison")
    assert {c["id"] for c in comparison["changed"]} == changed_ids(rules, report)
    assert len(comparison["changed"]) >= 3  # every incident but the app_error one changes category


@pytest.mark.parametrize("content", ["not json", '{"summary": {}}', "[1, 2]"])
def test_an_unusable_previous_report_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str
) -> None:
    previous = tmp_path / "before.json"
    previous.write_text(content)
    code, out, err = run(capsys, str(CORPUS / FILES[0]), "--compare", str(previous))
    assert code == 2 and out == ""
    assert err.startswith(f"sre-agent: {previous}: ") and err.count("\n") == 1
