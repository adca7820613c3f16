"""Offline replay: run recorded incidents through the live pipeline and score the decisions.

Called by `sre-agent replay`. Same Pipeline as the operator; the evidence comes from
incident files and nothing is executed. The output is described in docs/incident-format.md
and validated by sre_agent/schemas/replay_report.schema.json.

Scoring is honest about what it does not know: a field the incident does not label is
`null` in `correct` and counted in `unscored`, never as right. With an LLM reasoner, the
summary says how many incidents the LLM answered and how many fell back to the rules, and
why. `compare` lists the incidents whose category, action or policy outcome changed
between two reports, with the change in every score.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
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
from sre_agent.core.cache import DiagnosisCache, fingerprint
from sre_agent.core.pipeline import Pipeline, PipelineObserver
from sre_agent.core.policy import Policy, may_execute
from sre_agent.core.reasoning import FixedClock, Reasoner
from sre_agent.core.symptoms import Thresholds
from sre_agent.domain import Decision, Diagnosis, Evidence, Symptom

# Replay has no clock of its own: an incident without captured_at is judged at this instant.
EPOCH_FALLBACK = datetime(2026, 1, 1, tzinfo=UTC)

SCORED_FIELDS = ("symptom", "category", "action")
# The summary scores `compare` reports (the counters as well as the accuracies).
COMPARED_SCORES = (
    "scored",
    "symptom_accuracy",
    "category_accuracy",
    "action_accuracy",
    "forbidden_actions_proposed",
    "forbidden_actions_allowed",
    "errors",
)
# What makes an incident "changed" between two runs.
COMPARED_FIELDS = ("category", "action", "policy")
MAX_REASONS = 5  # distinct fallback reasons listed in the summary
_SECONDS = re.compile(r"\b\d+(\.\d+)?s\b")


class CompareError(ValueError):
    """The previous report given to --compare is unreadable or not a replay report."""


@dataclass
class ReplayOptions:
    policy: Policy
    reasoner: Reasoner | None = None
    reasoner_id: str = ""
    thresholds: Thresholds = field(default_factory=Thresholds)
    use_cache: bool = True
    concurrency: int = 1  # LLM calls in flight at once (the CLI's --concurrency, default 8)


@dataclass
class Progress:
    """What the progress bar shows: incidents done, LLM calls made, cache hits, fallbacks."""

    done: int = 0
    total: int = 0
    calls: int = 0
    cache_hits: int = 0
    fallbacks: int = 0


ProgressCallback = Callable[[Progress], None]


class _Counting:
    """The reasoner, counting the calls that reach it (cache hits never do)."""

    def __init__(self, inner: Reasoner, progress: Progress) -> None:
        self.inner = inner
        self.name = inner.name
        self.reasoner_id = str(getattr(inner, "reasoner_id", inner.name))
        self._progress = progress

    async def diagnose(self, evidence: Evidence, allowed_actions: str) -> Diagnosis:
        self._progress.calls += 1
        return await self.inner.diagnose(evidence, allowed_actions)


def score(
    expected: Expected | None, decision: Decision | None, symptom: str
) -> dict[str, bool | None] | None:
    """Per labelled field, whether the decision got it right; None for a field without a label.

    An action listed in `forbidden_actions` is wrong even when no acceptable action is
    labelled (an exported rejected decision); otherwise the action is scored only against
    `actions`. An incident without any `expected` block is not scored at all (None).
    """
    if expected is None:
        return None
    category = decision.diagnosis.category.value if decision else None
    action = decision.action.name if decision else "none"
    if action in expected.forbidden_actions:
        action_ok: bool | None = False
    elif expected.actions:
        action_ok = action in expected.actions
    else:
        action_ok = None
    return {
        "symptom": None if expected.symptom is None else expected.symptom == symptom,
        "category": None if expected.category is None else expected.category == category,
        "action": action_ok,
    }


def _result(incident: RecordedIncident, decision: Decision | None, fallback: str | None) -> dict[str, Any]:
    symptom = decision.evidence.symptom.value if decision else "Healthy"
    correct = score(incident.expected, decision, symptom)
    if decision is None:
        return {
            "id": incident.context.incident_id, "symptom": symptom, "category": None, "action": "none",
            "parameters": {}, "confidence": None, "source": None, "policy": None, "policy_reason": "healthy: no incident",
            "summary": None, "reasoning": None, "fallback_reason": None,
            "correct": correct, "error": None, "notes": [],
        }  # fmt: skip
    d = decision.diagnosis
    forbidden = bool(incident.expected and d.action.name in incident.expected.forbidden_actions)
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
        "summary": d.summary,
        "reasoning": d.reasoning,
        "fallback_reason": fallback,
        "correct": correct,
        "error": None,
        "notes": list(d.notes),
        "_forbidden_proposed": forbidden,
        "_forbidden_allowed": forbidden and may_execute(decision.verdict, approved=False),
    }


def _error_result(path: Path, message: str) -> dict[str, Any]:
    return {
        "id": path.stem, "symptom": None, "category": None, "action": None, "parameters": {},
        "confidence": None, "source": None, "policy": None, "policy_reason": None,
        "summary": None, "reasoning": None, "fallback_reason": None, "correct": None,
        "error": " ".join(message.split()), "notes": [],
    }  # fmt: skip


def summarise(
    results: Sequence[dict[str, Any]], seconds: float, reasoner: str = "rules", llm: bool = False
) -> dict[str, Any]:
    """The summary block. Accuracies count only labelled fields; `unscored` counts the rest."""
    decided = [r for r in results if not r.get("error")]

    def labelled(key: str) -> list[bool]:
        return [r["correct"][key] for r in decided if r.get("correct") and r["correct"][key] is not None]

    def accuracy(key: str) -> float | None:
        marks = labelled(key)
        return round(sum(marks) / len(marks), 4) if marks else None

    summary: dict[str, Any] = {
        "incidents": len(results),
        "scored": sum(
            1 for r in decided if r.get("correct") and any(v is not None for v in r["correct"].values())
        ),
        "unscored": {key: len(decided) - len(labelled(key)) for key in SCORED_FIELDS},
        "symptom_accuracy": accuracy("symptom"),
        "category_accuracy": accuracy("category"),
        "action_accuracy": accuracy("action"),
        "forbidden_actions_proposed": sum(1 for r in results if r.get("_forbidden_proposed")),
        "forbidden_actions_allowed": sum(1 for r in results if r.get("_forbidden_allowed")),
        "errors": len(results) - len(decided),
        "seconds": round(seconds, 3),
        "reasoner": reasoner,
        "llm": None,
    }
    if llm:
        asked = [r for r in decided if r.get("source")]  # healthy pods ask nobody
        reasons: Counter[str] = Counter()
        example: dict[str, str] = {}
        for r in asked:
            if r.get("fallback_reason"):
                key = _SECONDS.sub("Ns", r["fallback_reason"])  # "next trial in 59s" and "60s" are one reason
                reasons[key] += 1
                example.setdefault(key, r["fallback_reason"])
        summary["llm"] = {
            "asked": len(asked),
            "answered": sum(1 for r in asked if r["source"] in ("llm", "cache")),
            "from_cache": sum(1 for r in asked if r["source"] == "cache"),
            "fallbacks": sum(reasons.values()),
            "fallback_reasons": [
                {"reason": example[key], "count": count} for key, count in reasons.most_common(MAX_REASONS)
            ],
        }
    return summary


def fallbacks(report: dict[str, Any]) -> int:
    """How many incidents the rules decided because the LLM did not answer (0 without an LLM)."""
    llm = report["summary"].get("llm")
    return int(llm["fallbacks"]) if llm else 0


async def replay(
    paths: Iterable[Path],
    options: ReplayOptions,
    progress: ProgressCallback | None = None,
    cache_timer: Callable[[], float] = lambda: 0.0,
    timer: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Replay every incident file; a bad file becomes an error result and the batch goes on.

    With an LLM reasoner, up to `options.concurrency` calls run at once, and the report is the
    one a sequential run gives: results stay in file order, and incidents that share a cache key
    (the same fingerprint) are decided one after the other in file order, so the first asks the
    LLM and the later ones hit the cache exactly as they would have (or ask again if it failed).
    """
    started = timer()
    files = list(incident_paths(paths))
    state = Progress(total=len(files))
    # Large enough to hold every incident's answer: no eviction, so concurrency cannot change a hit.
    cache = (
        DiagnosisCache(timer=cache_timer, maxsize=max(1024, len(files)))
        if options.use_cache and options.reasoner
        else None
    )
    reasoner = _Counting(options.reasoner, state) if options.reasoner is not None else None
    results: list[dict[str, Any] | None] = [None] * len(files)

    def pipeline_for(incident: RecordedIncident, fallback: list[str]) -> Pipeline:
        def on_cache(hit: bool) -> None:
            state.cache_hits += hit

        def on_fallback(reason: str) -> None:
            state.fallbacks += 1
            fallback.append(reason)

        return Pipeline(
            policy=options.policy,
            clock=FixedClock(incident.context.captured_at or EPOCH_FALLBACK),
            reasoner=reasoner,
            reasoner_id=options.reasoner_id,
            cache=cache,
            thresholds=options.thresholds,
            observer=PipelineObserver(on_fallback=on_fallback, on_cache=on_cache),
        )

    def load(path: Path) -> RecordedIncident | dict[str, Any]:
        try:
            return load_incident(path)
        except IncidentFileError as exc:
            return _error_result(path, str(exc))
        except (RecursionError, MemoryError) as exc:
            return _error_result(path, f"{path}: too deeply nested or too large ({type(exc).__name__})")

    async def decide(path: Path, incident: RecordedIncident) -> dict[str, Any]:
        fallback: list[str] = []
        try:
            decision = await pipeline_for(incident, fallback).decide(incident.context)
            return _result(incident, decision, fallback[-1] if fallback else None)
        except (RecursionError, MemoryError) as exc:
            return _error_result(path, f"{path}: too deeply nested or too large ({type(exc).__name__})")
        except Exception as exc:  # a bug, not the file's fault: still one line, and the batch goes on
            return _error_result(path, f"{path}: internal error while deciding: {type(exc).__name__}: {exc}")

    def finish(index: int, result: dict[str, Any]) -> None:
        results[index] = result
        state.done += 1
        if progress:
            progress(state)

    if reasoner is None or options.concurrency <= 1:
        for index, path in enumerate(files):
            loaded = load(path)
            finish(index, loaded if isinstance(loaded, dict) else await decide(path, loaded))
    else:
        await _concurrently(files, options, load, decide, finish)
    close = getattr(options.reasoner, "aclose", None)
    if close is not None:  # release the HTTP client inside this event loop
        await close()
    name = "rules" if options.reasoner is None else (options.reasoner_id or options.reasoner.name)
    done = [r for r in results if r is not None]
    summary = summarise(done, timer() - started, name, llm=options.reasoner is not None)
    public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in done]
    return {"summary": summary, "results": public}


async def _concurrently(
    files: list[Path],
    options: ReplayOptions,
    load: Callable[[Path], RecordedIncident | dict[str, Any]],
    decide: Callable[[Path, RecordedIncident], Awaitable[dict[str, Any]]],
    finish: Callable[[int, dict[str, Any]], None],
) -> None:
    """Decide in `options.concurrency` workers; incidents with one cache key form one chain, in order.

    Each worker takes the next chain (in order of first appearance) and decides its incidents
    one by one, so a chain never has two calls in flight and at most `concurrency` calls run.
    """
    chains: dict[str, list[tuple[int, Path, RecordedIncident]]] = {}
    probe = Pipeline(policy=options.policy, clock=FixedClock(EPOCH_FALLBACK), thresholds=options.thresholds)
    for index, path in enumerate(files):
        loaded = load(path)
        if isinstance(loaded, dict):
            finish(index, loaded)
            continue
        key = f"#{index}"
        if options.use_cache:
            try:
                probe.clock = FixedClock(loaded.context.captured_at or EPOCH_FALLBACK)
                symptom = probe.symptom_of(loaded.context)
                if symptom != Symptom.HEALTHY:
                    key = fingerprint(probe.evidence_of(loaded.context, symptom))
            except Exception:  # decide() meets the same problem and reports it as this incident's error
                pass
        chains.setdefault(key, []).append((index, path, loaded))
    queue = iter(list(chains.values()))

    async def worker() -> None:
        for chain in queue:
            for index, path, incident in chain:
                finish(index, await decide(path, incident))

    await asyncio.gather(*(worker() for _ in range(min(options.concurrency, max(len(chains), 1)))))


# --------------------------------------------------------------------------------- compare


def load_report(path: Path) -> dict[str, Any]:
    """A previous `--format json` report, checked enough to compare against; CompareError otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise CompareError(f"{path}: cannot read: {exc}") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CompareError(f"{path}: not a JSON replay report: {' '.join(str(exc).split())}") from None
    if not (
        isinstance(data, dict)
        and isinstance(data.get("summary"), dict)
        and isinstance(data.get("results"), list)
        and all(isinstance(r, dict) and isinstance(r.get("id"), str) for r in data["results"])
    ):
        raise CompareError(f"{path}: not a replay report (expected summary and results with an id each)")
    return data


def compare(previous: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """What changed from `previous` to `current`: incidents, then every summary score."""
    before = {r["id"]: r for r in previous["results"]}
    after = {r["id"]: r for r in current["results"]}
    changed = []
    for incident_id, now in after.items():
        then = before.get(incident_id)
        if then is None:
            continue
        fields = [k for k in COMPARED_FIELDS if then.get(k) != now.get(k)]
        if fields:
            changed.append({
                "id": incident_id,
                "fields": fields,
                "before": {k: then.get(k) for k in (*COMPARED_FIELDS, "correct")},
                "after": {k: now.get(k) for k in (*COMPARED_FIELDS, "correct")},
            })  # fmt: skip
    scores = {}
    for key in COMPARED_SCORES:
        old, new = previous["summary"].get(key), current["summary"].get(key)
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (old, new))
        delta = round(new - old, 4) if numeric else None
        scores[key] = {"before": old, "after": new, "delta": delta}
    return {
        "changed": changed,
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "scores": scores,
    }


# --------------------------------------------------------------------------------- rendering


def progress_bar(stream: TextIO = sys.stderr, width: int = 30) -> ProgressCallback:
    def show(p: Progress) -> None:
        filled = width * p.done // max(p.total, 1)
        counts = (
            f" llm calls {p.calls}, cache hits {p.cache_hits}, fallbacks {p.fallbacks}" if p.calls else ""
        )
        stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {p.done}/{p.total}{counts}")
        if p.done == p.total:
            stream.write("\n")
        stream.flush()

    return show


def _mark(ok: dict[str, bool | None] | None) -> str:
    if ok is None:
        return "---"
    return "".join("-" if ok[k] is None else "." if ok[k] else "x" for k in SCORED_FIELDS)


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1%}"


def llm_line(summary: dict[str, Any]) -> str | None:
    """One line on how the LLM did; None when replay used the rules only."""
    llm = summary.get("llm")
    if not llm:
        return None
    line = (
        f"LLM ({summary['reasoner']}) answered {llm['answered']} of {llm['asked']} incidents "
        f"({llm['from_cache']} from cache); {llm['fallbacks']} fell back to the rules"
    )
    if llm["fallbacks"]:
        why = "; ".join(f"{r['count']}x {r['reason']}" for r in llm["fallback_reasons"])
        line = f"WARNING: {line}: {why}"
    return line


def render_table(report: dict[str, Any], explain: bool = False) -> str:
    headers = ("id", "symptom", "category", "action", "conf", "source", "policy", "ok")
    rows: list[tuple[str, ...]] = []
    details: list[list[str]] = []
    for r in report["results"]:
        if r["error"]:
            rows.append((r["id"], "ERROR", r["error"][:60], "", "", "", "", ""))
            details.append([])
            continue
        conf = "" if r["confidence"] is None else f"{r['confidence']:.2f}"
        rows.append((r["id"], r["symptom"], r["category"] or "", r["action"] or "", conf,
                     r["source"] or "", r["policy"] or "", _mark(r["correct"])))  # fmt: skip
        extra = []
        if r.get("summary"):
            extra.append(f"summary: {r['summary']}")
        if r.get("reasoning"):
            extra.append(f"reasoning: {r['reasoning']}")
        if r.get("fallback_reason"):
            extra.append(f"fallback: {r['fallback_reason']}")
        details.append([" ".join(line.split()) for line in extra])
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(headers, widths, strict=True)).rstrip()]
    for row, extra in zip(rows, details, strict=True):
        lines.append("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        if explain:
            lines.extend(f"    {line}" for line in extra)
    s = report["summary"]
    unscored = s.get("unscored") or {}
    lines.append("")
    lines.append(
        f"{s['incidents']} incidents, {s['scored']} scored: symptom {_pct(s['symptom_accuracy'])}, "
        f"category {_pct(s['category_accuracy'])}, action {_pct(s['action_accuracy'])}; "
        f"forbidden actions proposed {s['forbidden_actions_proposed']}, allowed {s['forbidden_actions_allowed']}; "
        f"errors {s['errors']}; {s['seconds']:.2f}s"
    )
    if any(unscored.values()):
        lines.append("unscored (no label): " + ", ".join(f"{k} {unscored.get(k, 0)}" for k in SCORED_FIELDS))
    llm = llm_line(s)
    if llm:
        lines.append(llm)
    lines.append("ok column: symptom/category/action, '.' right, 'x' wrong, '-' not labelled")
    if "comparison" in report:
        lines.append("")
        lines.extend(render_comparison(report["comparison"]))
    return "\n".join(lines)


def _change(before: Any, after: Any) -> str:
    return f"{before if before is not None else '-'} -> {after if after is not None else '-'}"


def render_comparison(comparison: dict[str, Any]) -> list[str]:
    changed = comparison["changed"]
    lines = [
        f"compared with {comparison.get('previous', 'the previous run')}: {len(changed)} incident(s) changed"
    ]
    for c in changed:
        parts = [f"{k} {_change(c['before'][k], c['after'][k])}" for k in c["fields"]]
        was, now = c["before"].get("correct") or {}, c["after"].get("correct") or {}
        marks = [f"{k} {_change(was.get(k), now.get(k))}" for k in SCORED_FIELDS if was.get(k) != now.get(k)]
        if marks:
            parts.append("correct: " + ", ".join(marks))
        lines.append(f"  {c['id']}: " + "; ".join(parts))
    for key in ("added", "removed"):
        if comparison[key]:
            lines.append(f"  {key}: {', '.join(comparison[key])}")
    scores = []
    for key, v in comparison["scores"].items():
        delta = "" if v["delta"] is None else f" ({v['delta']:+g})"
        scores.append(f"{key} {_change(v['before'], v['after'])}{delta}")
    lines.append("scores: " + "; ".join(scores))
    return lines
