"""Replay of the bundled corpus and of two independently written sets, through the CLI.

tests/replay/unseen was written apart from the corpus, with other applications and wording; the
rules were later corrected on four of its misses, so it is no longer blind. tests/replay/holdout
was written afterwards by someone who never read the rules, the evidence extractor or either
other set, and it has not been tuned on: the rules must do as well on both as on the corpus.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sre_agent.cli import main
from sre_agent.domain import Category, Symptom

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "replay" / "incidents"
UNSEEN = Path(__file__).parent / "unseen"
HOLDOUT = Path(__file__).parent / "holdout"
RESULT_KEYS = {"id", "symptom", "category", "action", "parameters", "confidence", "source", "policy",
               "policy_reason", "summary", "reasoning", "fallback_reason", "correct", "error"}  # fmt: skip
SUMMARY_KEYS = {"incidents", "scored", "unscored", "symptom_accuracy", "category_accuracy", "action_accuracy",
                "forbidden_actions_proposed", "forbidden_actions_allowed", "errors", "seconds", "reasoner",
                "llm"}  # fmt: skip


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any], str]:
    code = main(["replay", *args, "--format", "json", "--no-progress"])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


@pytest.mark.parametrize("policy", ["default.yaml", "autopilot.yaml", "observe-only.yaml"])
def test_corpus_meets_the_bar(capsys: pytest.CaptureFixture[str], policy: str) -> None:
    code, report, _ = run_json(capsys, str(CORPUS), "--policy", str(ROOT / "policies" / policy))
    s = report["summary"]
    assert code == 0
    assert s["incidents"] >= 40 and s["scored"] == s["incidents"]
    assert s["errors"] == 0
    assert s["symptom_accuracy"] == 1.0
    assert s["forbidden_actions_allowed"] == 0
    assert s["category_accuracy"] >= 0.85, s
    assert s["action_accuracy"] >= 0.9, s
    assert set(s) == SUMMARY_KEYS
    for result in report["results"]:
        assert set(result) >= RESULT_KEYS
        assert result["source"] == "rules"
        assert result["policy"] in ("allowed", "needs_approval", "blocked")


def test_corpus_covers_every_symptom_and_category_twice(capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    symptoms: dict[str, int] = {}
    categories: dict[str, int] = {}
    for path in CORPUS.glob("*.yaml"):
        expected = yaml.safe_load(path.read_text())["expected"]
        symptoms[expected["symptom"]] = symptoms.get(expected["symptom"], 0) + 1
        categories[expected["category"]] = categories.get(expected["category"], 0) + 1
    assert set(symptoms) == {s.value for s in Symptom} - {"Healthy"}, symptoms
    assert min(symptoms.values()) >= 2, symptoms
    assert set(categories) == {c.value for c in Category} and min(categories.values()) >= 2, categories


@pytest.mark.parametrize("unseen_dir", [UNSEEN, HOLDOUT], ids=["unseen", "holdout"])
def test_unseen_incidents_are_classified_as_well_as_the_corpus(
    capsys: pytest.CaptureFixture[str], unseen_dir: Path
) -> None:
    if len(list(unseen_dir.glob("*.yaml"))) < 20:
        pytest.fail(f"{unseen_dir} should hold at least 20 incidents")
    _, corpus, _ = run_json(capsys, str(CORPUS))
    code, unseen, _ = run_json(capsys, str(unseen_dir))
    s = unseen["summary"]
    assert code == 0 and s["errors"] == 0
    assert s["symptom_accuracy"] == 1.0
    assert s["forbidden_actions_allowed"] == 0
    # Generalisation: within ten points of the corpus, and good in absolute terms.
    assert s["category_accuracy"] >= min(0.8, corpus["summary"]["category_accuracy"] - 0.1), s
    assert s["action_accuracy"] >= 0.85, s


def test_bad_files_get_one_line_errors_and_the_batch_goes_on(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    good = sorted(CORPUS.glob("*.yaml"))[:2]
    for path in good:
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "broken.yaml").write_text("id: broken\npod: {metadata: {name: x}\n")
    (tmp_path / "no-pod.json").write_text('{"id": "no-pod"}')
    (tmp_path / "bad-symptom.yaml").write_text(
        "id: bad-symptom\npod: {metadata: {name: x}}\nexpected: {symptom: Exploded}\n"
    )
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage")
    code, report, err = run_json(capsys, str(tmp_path))
    assert code == 1
    assert report["summary"]["errors"] == 4
    assert report["summary"]["incidents"] == 6
    errors = {r["id"]: r["error"] for r in report["results"] if r["error"]}
    assert "not valid YAML" in errors["broken"]
    assert "missing field pod: an incident needs a pod, or an owner" in errors["no-pod"]
    assert "expected.symptom" in errors["bad-symptom"]
    assert set(errors) == {"broken", "no-pod", "bad-symptom", "binary"}
    for message in errors.values():
        assert "\n" not in message
    assert err.count("error: ") == 4
    assert sum(1 for r in report["results"] if not r["error"]) == 2


def test_table_output_and_bad_policy(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["replay", str(CORPUS), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "symptom 100.0%" in out and "forbidden actions proposed" in out
    bad = tmp_path / "policy.yaml"
    bad.write_text("kind: Policy\nname: p\nactions: {scale_deployment: {maxReplicas: -1}}\n")
    assert main(["replay", str(CORPUS), "--policy", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sre-agent: ") and str(bad) in err and "maxReplicas" in err and "\n" not in err


def test_console_script_runs_the_embedded_default() -> None:
    """The README's first command: `sre-agent replay` with no arguments replays the bundled corpus."""
    exe = shutil.which("sre-agent") or f"{sys.executable} -m sre_agent.cli"
    proc = subprocess.run([*exe.split(), "replay", "--format", "json"], capture_output=True, text=True, timeout=120,
                          cwd="/")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["summary"]["incidents"] >= 40
