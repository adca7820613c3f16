"""Offline replay: run recorded incidents through the live pipeline and score the decisions.

Called by `sre-agent replay`. Same Pipeline as the operator; the evidence comes from
incident files and nothing is executed. Output follows section 5 of the incident contract.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from sre_agent.adapters.recorded import (
    Expected,
    IncidentFileError,
    RecordedIncident,
    incident_paths,
    load_incident,
)
from sre_agent.core.cache import DiagnosisCache
from sre_agent.core.pipeline import Pipeline
from sre_agent.core.policy import Policy, may_execute
from sre_agent.core.reasoning import FixedClock, Reasoner
from sre_agent.core.symptoms import Thresholds
from sre_agent.domain import Decision

# Replay has no clock of its own: an incident without captured_at is judged at this instant.
EPOCH_FALLBACK = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class ReplayOptions:
    policy: Policy
    reasoner: Reasoner | None = None
    reasoner_id: str = ""
    thresholds: Thresholds = field(default_factory=Thresholds)
    use_cache: bool = True


def _score(expected: Expected | None, decision: Decision | None, symptom: str) -> dict[str, bool] | None:
    if expected is None:
        return None
    category = decision.diagnosis.category.value if decision else None
    action = decision.action.name if decision else "none"
    return {
        "symptom": expected.symptom is None or expected.symptom == symptom,
        "category": expected.category is None or expected.category == category,
        "action": not expected.actions or action in expected.actions,
    }


def _result(incident: RecordedIncident, decision: Decision | None) -> dict[str, Any]:
    symptom = decision.evidence.symptom.value if decision else "Healthy"
    if decision is None:
        return {
            "id": incident.context.incident_id, "symptom": symptom, "category": None, "action": "none",
            "parameters": {}, "confidence": None, "source": None, "policy": None, "policy_reason": "healthy: no incident",
            "correct": _score(incident.expected, None, symptom), "error": None, "notes": [],
        }  # fmt: skip
    d = decision.diagnosis
    return {
        "id": decision.incident_id,
        "symptom": symptom,
        "category": d.category.value,
        "action": d.action.name,
        "parameters": dict(d.action.parameters),
        "confidence": d.confidence,
        "source": d.source,
        "policy": decision.verdict.outcome,
        "policy_reason": decision.verdict.reason,
        "correct": _score(incident.expected, decision, symptom),
        "error": None,
        "notes": list(d.notes),
        "_forbidden_proposed": bool(
            incident.expected and d.action.name in incident.expected.forbidden_actions
        ),
        "_forbidden_allowed": bool(
            incident.expected
            and d.action.name in incident.expected.forbidden_actions
            and may_execute(decision.verdict, approved=False)
        ),
    }


def _error_result(path: Path, message: str) -> dict[str, Any]:
    return {
        "id": path.stem, "symptom": None, "category": None, "action": None, "parameters": {},
        "confidence": None, "source": None, "policy": None, "policy_reason": None, "correct": None,
        "error": message, "notes": [],
    }  # fmt: skip


def summarise(results: Sequence[dict[str, Any]], seconds: float) -> dict[str, Any]:
    scored = [r for r in results if r.get("correct")]

    def accuracy(key: str) -> float | None:
        if not scored:
            return None
        return round(sum(1 for r in scored if r["correct"][key]) / len(scored), 4)

    return {
        "incidents": len(results),
        "scored": len(scored),
        "symptom_accuracy": accuracy("symptom"),
        "category_accuracy": accuracy("category"),
        "action_accuracy": accuracy("action"),
        "forbidden_actions_proposed": sum(1 for r in results if r.get("_forbidden_proposed")),
        "forbidden_actions_allowed": sum(1 for r in results if r.get("_forbidden_allowed")),
        "errors": sum(1 for r in results if r.get("error")),
        "seconds": round(seconds, 3),
    }


async def replay(
    paths: Iterable[Path],
    options: ReplayOptions,
    progress: Callable[[int, int], None] | None = None,
    cache_timer: Callable[[], float] = lambda: 0.0,
    timer: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Replay every incident file; a bad file becomes an error result and the batch goes on."""
    started = timer()
    files = list(incident_paths(paths))
    cache = DiagnosisCache(timer=cache_timer) if options.use_cache and options.reasoner else None
    results: list[dict[str, Any]] = []
    for index, path in enumerate(files, start=1):
        try:
            incident = load_incident(path)
            pipeline = Pipeline(
                policy=options.policy,
                clock=FixedClock(incident.context.captured_at or EPOCH_FALLBACK),
                reasoner=options.reasoner,
                reasoner_id=options.reasoner_id,
                cache=cache,
                thresholds=options.thresholds,
            )
            results.append(_result(incident, await pipeline.decide(incident.context)))
        except IncidentFileError as exc:
            results.append(_error_result(path, str(exc)))
        if progress:
            progress(index, len(files))
    close = getattr(options.reasoner, "aclose", None)
    if close is not None:  # release the HTTP client inside this event loop
        await close()
    summary = summarise(results, timer() - started)
    public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in results]
    return {"summary": summary, "results": public}


def progress_bar(stream: TextIO = sys.stderr, width: int = 30) -> Callable[[int, int], None]:
    def show(done: int, total: int) -> None:
        filled = width * done // max(total, 1)
        stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done == total:
            stream.write("\n")
        stream.flush()

    return show


def render_table(report: dict[str, Any]) -> str:
    headers = ("id", "symptom", "category", "action", "conf", "source", "policy", "ok")
    rows = []
    for r in report["results"]:
        if r["error"]:
            rows.append((r["id"], "ERROR", r["error"][:60], "", "", "", "", ""))
            continue
        ok = r["correct"]
        mark = "" if ok is None else "".join("." if ok[k] else "x" for k in ("symptom", "category", "action"))
        conf = "" if r["confidence"] is None else f"{r['confidence']:.2f}"
        rows.append((r["id"], r["symptom"], r["category"] or "", r["action"] or "", conf,
                     r["source"] or "", r["policy"] or "", mark))  # fmt: skip
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)) for row in [headers, *rows]]
    s = report["summary"]

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1%}"

    lines.append("")
    lines.append(
        f"{s['incidents']} incidents, {s['scored']} scored: symptom {pct(s['symptom_accuracy'])}, "
        f"category {pct(s['category_accuracy'])}, action {pct(s['action_accuracy'])}; "
        f"forbidden actions proposed {s['forbidden_actions_proposed']}, allowed {s['forbidden_actions_allowed']}; "
        f"errors {s['errors']}; {s['seconds']:.2f}s"
    )
    lines.append("ok column: symptom/category/action, '.' right, 'x' wrong")
    return "\n".join(lines)
