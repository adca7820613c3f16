"""`sre-agent export` labels only what humans decided, and replay scores nothing else.

A decision is made by the real pipeline from a corpus incident, recorded as an AgentDecision
manifest, given a human verdict, exported and replayed: a rejected action must never be
scored as correct, and an unreviewed decision must not grade the agent against itself.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sre_agent.adapters.kube.capture import incident_from_decision, redacted_incident, write_exports
from sre_agent.adapters.kube.decisions import manifest_for
from sre_agent.adapters.recorded import load_incident
from sre_agent.core.pipeline import Pipeline
from sre_agent.core.policy import default_policy
from sre_agent.core.reasoning import FixedClock
from sre_agent.replay import ReplayOptions, replay

ROOT = Path(__file__).resolve().parents[2]
INCIDENT = ROOT / "replay" / "incidents" / "oom-java-heap-001.yaml"


def recorded(approved: bool | None, phase: str) -> dict[str, Any]:
    """The AgentDecision the operator would have written for the corpus incident, after a verdict."""
    incident = load_incident(INCIDENT)
    assert incident.context.captured_at is not None
    clock = FixedClock(incident.context.captured_at)
    decision = asyncio.run(Pipeline(policy=default_policy(), clock=clock).decide(incident.context))
    assert decision is not None
    document = redacted_incident(incident.context, incident.context.incident_id, None)
    obj = manifest_for(decision, expires_at=clock.now() + timedelta(hours=1), incident=document)
    if approved is not None:
        obj["spec"]["approved"] = approved
    obj["status"] = {"phase": phase}
    return obj


@pytest.mark.parametrize(
    ("approved", "phase", "expected"),
    [
        (False, "Rejected", {"forbidden_actions": ["create_alert"]}),
        (None, "Rejected", {"forbidden_actions": ["create_alert"]}),
        (True, "Executed", {"actions": ["create_alert"]}),
        (True, "Approved", None),  # approved, not executed (yet)
        (True, "Failed", None),
        (None, "PendingApproval", None),
        (None, "Expired", None),
        (None, "Blocked", None),
        (None, "Executed", None),  # ran without a human: nobody judged it
    ],
)
def test_only_human_decisions_become_labels(approved: bool | None, phase: str, expected: Any) -> None:
    document = incident_from_decision(recorded(approved, phase))
    assert document is not None
    assert document.get("expected") == expected
    assert "create_alert" in document["description"] and "oom" in document["description"]


def test_a_rejected_decision_replays_as_wrong_not_as_correct(tmp_path: Path) -> None:
    objects = [recorded(False, "Rejected"), recorded(None, "PendingApproval")]
    objects[1]["metadata"]["name"] += "-pending"
    written = write_exports(objects, tmp_path)
    assert len(written) == 2
    report = asyncio.run(replay([tmp_path], ReplayOptions(policy=default_policy())))
    by_id = {r["id"]: r for r in report["results"]}
    rejected = by_id[written[0].stem]
    pending = by_id[written[1].stem]
    assert rejected["action"] == "create_alert"  # the same answer as the one a human rejected
    assert rejected["correct"] == {"symptom": None, "category": None, "action": False}
    assert pending["correct"] is None
    summary = report["summary"]
    assert summary["action_accuracy"] == 0.0
    assert summary["symptom_accuracy"] is None and summary["category_accuracy"] is None
    assert summary["scored"] == 1
    assert summary["unscored"] == {"symptom": 2, "category": 2, "action": 1}
    assert summary["forbidden_actions_proposed"] == 1
