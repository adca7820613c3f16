"""The incident format (docs/incident-format.md): schemas, unknown keys, unlabelled fields, hostile files.

Every bundled incident and every replay report must validate against the schemas in
sre_agent/schemas/. A file that breaks the format gets one line naming the file and the field,
and the rest of the batch still runs; a file that passes the loader cannot make the core raise.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
import subprocess
import sys
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sre_agent.adapters.recorded import IncidentFileError, parse_incident
from sre_agent.cli import main
from sre_agent.core.pipeline import Pipeline
from sre_agent.core.policy import default_policy
from sre_agent.core.reasoning import FixedClock

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "replay" / "incidents"
BUNDLED = sorted(
    [*CORPUS.glob("*.yaml"), *(ROOT / "tests/replay/unseen").glob("*.yaml"),
     *(ROOT / "tests/replay/holdout").glob("*.yaml")]
)  # fmt: skip
BASE = yaml.safe_load((CORPUS / "crash-db-host-typo-009.yaml").read_text())
DOCS = [yaml.safe_load(p.read_text()) for p in sorted(CORPUS.glob("*.yaml"))]


def schema(name: str) -> jsonschema.Draft202012Validator:
    text = resources.files("sre_agent.schemas").joinpath(name).read_text()
    return jsonschema.Draft202012Validator(json.loads(text), format_checker=jsonschema.FormatChecker())


REPORT = schema("replay_report.schema.json")


def replay_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any], str]:
    code = main(["replay", *args, "--format", "json", "--no-progress"])
    out, err = capsys.readouterr()
    report = json.loads(out)
    REPORT.validate(report)
    return code, report, err


def write(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_every_bundled_incident_validates_against_the_schema() -> None:
    validator = schema("incident.schema.json")
    assert len(BUNDLED) >= 100
    for path in BUNDLED:
        errors = [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
        assert not errors, (path.name, errors[:3])


def test_the_docs_describe_the_format_in_the_repository() -> None:
    text = (ROOT / "docs" / "incident-format.md").read_text()
    for word in ("forbidden_actions", "unscored", "unknown key", "fallback_reason", "--compare",
                 "incident.schema.json", "replay_report.schema.json"):  # fmt: skip
        assert word in text, word
    readme = (ROOT / "README.md").read_text()
    assert "shared/incident-format.md" not in readme and "docs/incident-format.md" in readme


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(evnts=d.pop("events")), "unknown key 'evnts' (did you mean 'events'?)"),
        (lambda d: d["expected"].update(forbiden_actions=[]),
         "expected: unknown key 'forbiden_actions' (did you mean 'forbidden_actions'?)"),
        (lambda d: d["logs"]["api"].update(curent="x"), "logs.api: unknown key 'curent' (did you mean 'current'?)"),
        (lambda d: d.update(colour="red"), "unknown key 'colour' (known keys: captured_at, description,"),
        (lambda d: d["pod"]["status"]["containerStatuses"][0].update(restartCount="7"),
         "invalid field pod.status.containerStatuses[0].restartCount: '7' is not of type 'integer'"),
        (lambda d: d["events"][0].update(count=[1]), "invalid field events[0].count:"),
        (lambda d: d["pod"]["spec"]["containers"][0].update(ports=[{"containerPort": {}}]),
         "invalid field pod.spec.containers[0].ports[0].containerPort"),
        (lambda d: d.update(node={"status": {"conditions": ["Ready"]}}), "invalid field node.status.conditions[0]"),
    ],
)  # fmt: skip
def test_bad_fields_are_named(tmp_path: Path, mutate: Any, message: str) -> None:
    document = copy.deepcopy(BASE)
    mutate(document)
    path = write(tmp_path / "bad.yaml", document)
    with pytest.raises(IncidentFileError) as info:
        parse_incident(yaml.safe_load(path.read_text()), str(path))
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_missing_label_is_unscored_not_correct(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # The rules get this incident's category wrong on purpose; without the label it must not count.
    labelled = write(tmp_path / "labelled.yaml", copy.deepcopy(BASE))
    unlabelled = copy.deepcopy(BASE)
    unlabelled["id"] = "no-category"
    del unlabelled["expected"]["category"]
    write(tmp_path / "no-category.yaml", unlabelled)
    bare = copy.deepcopy(BASE)
    bare["id"] = "bare"
    del bare["expected"]
    write(tmp_path / "bare.yaml", bare)

    code, report, _ = replay_json(capsys, str(tmp_path))
    assert code == 0
    by_id = {r["id"]: r for r in report["results"]}
    assert by_id["crash-db-host-typo-009"]["correct"] == {"symptom": True, "category": False, "action": True}
    assert by_id["no-category"]["correct"] == {"symptom": True, "category": None, "action": True}
    assert by_id["bare"]["correct"] is None
    s = report["summary"]
    assert s["scored"] == 2
    assert s["unscored"] == {"symptom": 1, "category": 2, "action": 1}
    assert s["category_accuracy"] == 0.0  # one labelled category, and it is wrong
    assert s["symptom_accuracy"] == 1.0
    assert labelled.exists()


def test_a_forbidden_action_without_acceptable_ones_scores_wrong(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    document = copy.deepcopy(BASE)
    document["expected"] = {"forbidden_actions": ["create_alert"]}  # what the rules propose here
    write(tmp_path / "x.yaml", document)
    _, report, _ = replay_json(capsys, str(tmp_path))
    assert report["results"][0]["correct"] == {"symptom": None, "category": None, "action": False}
    assert report["summary"]["action_accuracy"] == 0.0
    assert report["summary"]["forbidden_actions_proposed"] == 1


# ----------------------------------------------------------------------------------- hostile files


def hostile(rng: random.Random, index: int) -> tuple[str, str]:
    """(file name, content): a corpus incident with wrong types planted anywhere, or worse."""
    values: list[Any] = [0, -1, 1.5, "x", "", None, True, [], {}, [1], ["a"], {"a": 1}, [{}], [None],
                         {"x": [1]}, "2026-99-99", 10**30]  # fmt: skip
    kind = index % 10
    if kind == 0:
        return f"deep-{index}.json", "[" * 50_000 + "]" * 50_000
    if index % 100 == 1:
        document = copy.deepcopy(rng.choice(DOCS))
        document["id"] = f"huge-{index}"
        document["logs"] = {"app": {"current": ("ERROR connection refused token=abc\n" * 20_000)}}
        return f"huge-{index}.yaml", yaml.safe_dump(document)
    if kind == 2:
        return f"text-{index}.yaml", rng.choice(["- a\n- b\n", "just text", "id: [", "\x00\x01", "{}"])
    document = copy.deepcopy(rng.choice(DOCS))
    document["id"] = f"mutant-{index}"
    for _ in range(rng.randint(1, 4)):
        node: Any = document
        while isinstance(node, dict | list) and node and rng.random() < 0.8:
            key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
            if not isinstance(node[key], dict | list) or not node[key]:
                node[key] = copy.deepcopy(rng.choice(values))
                break
            node = node[key]
        else:
            if isinstance(node, dict):
                node[rng.choice(["status", "spec", "reason", "containers", "conditions", "count", "name"])] = (
                    copy.deepcopy(rng.choice(values))
                )
    return f"mutant-{index}.yaml", yaml.safe_dump(document)


def test_a_thousand_hostile_files_give_one_line_each_and_the_batch_finishes(tmp_path: Path) -> None:
    rng = random.Random(8)
    for index in range(1000):
        name, content = hostile(rng, index)
        (tmp_path / name).write_text(content)
    proc = subprocess.run(
        [sys.executable, "-m", "sre_agent.cli", "replay", str(tmp_path), "--format", "json", "--no-progress"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr
    report = json.loads(proc.stdout)
    REPORT.validate(report)
    assert report["summary"]["incidents"] == 1000
    errors = [r["error"] for r in report["results"] if r["error"]]
    assert proc.returncode == (1 if errors else 0)
    assert 100 <= len(errors) < 1000  # both kinds happen: the seed is fixed
    assert proc.stderr.count("\n") == len(errors)
    for line, error in zip(proc.stderr.splitlines(), errors, strict=True):
        assert line == f"error: {error}"
        assert line.startswith(f"error: {tmp_path}/")
        assert "internal error" not in line  # the loader caught it, not the safety net


def decide(document: dict[str, Any]) -> None:
    try:
        incident = parse_incident(document, "fuzz.yaml")
    except IncidentFileError as exc:
        assert str(exc).startswith("fuzz.yaml: ") and "\n" not in str(exc)
        return
    clock = FixedClock(incident.context.captured_at or datetime(2026, 1, 1, tzinfo=UTC))
    asyncio.run(Pipeline(policy=default_policy(), clock=clock).decide(incident.context))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=3),
    max_leaves=8,
)
FIELD_NAMES = st.sampled_from(
    ["status", "spec", "metadata", "containers", "containerStatuses", "initContainerStatuses", "conditions",
     "state", "lastState", "terminated", "waiting", "running", "restartCount", "exitCode", "reason", "message",
     "ports", "containerPort", "livenessProbe", "readinessProbe", "httpGet", "port", "periodSeconds",
     "resources", "limits", "usage", "name", "count", "series", "lastTimestamp", "ownerReferences", "replicas",
     "env", "value", "nodeName", "type", "phase", "deletionTimestamp"]
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from(range(len(DOCS))),
    steps=st.lists(st.tuples(st.lists(st.integers(0, 50), max_size=8), FIELD_NAMES, JSON_VALUES), max_size=4),
)
def test_whatever_passes_the_loader_never_makes_the_core_raise(
    base: int, steps: list[tuple[list[int], str, Any]]
) -> None:
    document = copy.deepcopy(DOCS[base])
    for choices, key, value in steps:
        node: Any = document
        for choice in choices:  # walk down, the integers pick a branch
            children = list(node) if isinstance(node, dict) else list(range(len(node)))
            if not children or not isinstance(node[children[choice % len(children)]], dict | list):
                break
            node = node[children[choice % len(children)]]
        if isinstance(node, dict):
            node[key] = value
        elif node:
            node[0] = value
    decide(document)


# ----------------------------------------------------------------------------------- size


def test_twenty_thousand_events_are_validated_once_per_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    from sre_agent.adapters import recorded

    assert recorded._EVENTS_BY_SHAPE  # the event schema only constrains types and keys
    assert not recorded._shape_only({"type": "string", "pattern": "^x$"})
    calls = 0
    real = recorded._EVENT_VALIDATOR

    class Counting:
        def iter_errors(self, event: Any) -> Any:
            nonlocal calls
            calls += 1
            return real.iter_errors(event)

    monkeypatch.setattr(recorded, "_EVENT_VALIDATOR", Counting())
    monkeypatch.setattr(recorded, "_FAST_VALID", None)  # the jsonschema path, which invalid files take
    document = copy.deepcopy(BASE)
    template = document["events"][0]
    document["events"] = [{**template, "message": f"message {i}", "count": i} for i in range(20_000)]
    parse_incident(document, "big.json")
    assert calls == 1  # one shape

    document["events"][15_000]["count"] = "many"
    with pytest.raises(IncidentFileError) as info:
        parse_incident(document, "big.json")
    assert str(info.value) == "big.json: invalid field events[15000].count: 'many' is not of type 'integer', 'null'"
