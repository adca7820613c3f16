"""The bundled corpus plants secrets (marked CANARY) and prompt injections in real-looking places.

Nothing marked CANARY may reach what the LLM would see (the rendered prompt), the evidence, the
rules' decision, or the incident document that `spec.incident`, `capture` and `export` write;
injected instructions must be flagged as such and never change the action.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sre_agent.adapters.kube.capture import redact_document, redacted_incident
from sre_agent.adapters.recorded import dump_incident
from sre_agent.core.evidence import extract
from sre_agent.core.prompts import load_prompts
from sre_agent.core.redaction import Redactor
from sre_agent.core.rules import RuleReasoner
from sre_agent.core.symptoms import detect_incident, parse_time
from sre_agent.domain import IncidentContext

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "replay" / "incidents"
MARKER = "CANARY"


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _context(data: dict[str, Any]) -> IncidentContext:
    return IncidentContext(
        pod=data.get("pod") or {}, events=tuple(data.get("events") or ()), logs=data.get("logs") or {},
        owner=data.get("owner"), node=data.get("node"), node_metrics=data.get("node_metrics"),
        pod_metrics=data.get("pod_metrics"), captured_at=parse_time(data.get("captured_at")),
        incident_id=data["id"],
    )  # fmt: skip


WITH_SECRETS = sorted(
    p
    for p in [*CORPUS.glob("*.yaml"), *(REPO / "tests" / "replay").glob("*/*.yaml")]
    if MARKER in p.read_text(encoding="utf-8")
)


def test_the_corpus_plants_enough_secrets_and_injections() -> None:
    assert len(WITH_SECRETS) >= 5
    flagged = 0
    for path in sorted(CORPUS.glob("*.yaml")):
        ctx = _context(_load(path))
        symptom = detect_incident(ctx.pod, ctx.events, ctx.node, ctx.owner, ctx.captured_at)
        flagged += extract(ctx, symptom, Redactor.for_context(ctx)).has("prompt_injection")
    assert flagged >= 5


@pytest.mark.parametrize("path", WITH_SECRETS, ids=lambda p: p.stem)
def test_planted_secrets_never_reach_the_llm_or_the_decision(path: Path) -> None:
    data = _load(path)
    ctx = _context(data)
    symptom = detect_incident(ctx.pod, ctx.events, ctx.node, ctx.owner, ctx.captured_at)
    evidence = extract(ctx, symptom, Redactor.for_context(ctx))
    prompt = load_prompts().render(evidence, "- create_alert")
    decision = RuleReasoner().diagnose_now(evidence)
    assert MARKER not in prompt.system + prompt.user
    assert MARKER not in repr(evidence)
    assert MARKER not in repr(decision)
    # spec.incident and `capture` write this document; `export` re-redacts what a CR holds.
    assert MARKER not in dump_incident(redacted_incident(ctx, ctx.incident_id, None))
    recorded = {k: v for k, v in data.items() if k != "description"}  # the author's notes say CANARY
    assert MARKER not in dump_incident(redact_document(recorded))
