"""Capture and export: live pods and recorded AgentDecisions become replayable incident files.

* `capture_incident` gathers one live pod (or a workload: `job/NAME`, `deployment/NAME`) with
  the same `Gatherer` the operator uses,
  detects its symptom, and returns an incident document (docs/incident-format.md) that
  went through the same redaction as the live path.
* `redacted_incident` builds that document from an IncidentContext; the operator stores it
  in every AgentDecision, compressed (`spec.zippedIncident`, see decisions.zip_incident). It
  is size-bounded (~256 KiB before compression): logs are cut to their tails first, then
  dropped, then the oldest events.
* `export_to_dir` turns AgentDecisions that carry an incident back into incident files.
  Their `expected` holds only what a human decided (`human_labels`): a rejected decision's
  action becomes a forbidden action, an approved and executed one an acceptable action;
  anything else stays unlabelled, so replay counts it as unscored instead of grading the
  agent against its own answer. What the agent decided is kept in `description`.

`capture_to_file`, `capture_document` and `export_to_dir` are synchronous entry points for
`sre-agent capture` / `sre-agent export`; every failure a user can cause becomes a
`CaptureError` with a one-line message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sre_agent.adapters.kube.client import KubeClient, KubeError
from sre_agent.adapters.kube.decisions import (
    DecisionFormatError,
    DecisionStore,
    Phase,
    RecordedDecision,
    incident_of,
    rfc3339,
)
from sre_agent.adapters.kube.gatherer import Gatherer, strip_managed_fields
from sre_agent.adapters.recorded import IncidentFileError, dump_incident, parse_incident
from sre_agent.core.reasoning import Clock
from sre_agent.core.redaction import LAST_APPLIED, Redactor
from sre_agent.core.symptoms import detect_incident
from sre_agent.domain import JSON, IncidentContext

log = logging.getLogger("sre_agent.capture")

MAX_INCIDENT_BYTES = 256 * 1024
LOG_TAIL_STEPS = (16 * 1024, 4 * 1024, 1024)  # per stream, tried in turn before logs are dropped
MIN_EVENTS = 10


class CaptureError(Exception):
    """Capture or export failed for a reason the user can act on; the message is one line."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


_NOT_ID = re.compile(r"[^a-z0-9-]+")


def incident_id_for(*parts: str) -> str:
    """An incident id ([a-z0-9][a-z0-9-]*) from namespace, pod or decision names."""
    text = _NOT_ID.sub("-", "-".join(p for p in parts if p).lower()).strip("-")
    return text[:200].strip("-") or "incident"


def _size(document: Mapping[str, Any]) -> int:
    return len(json.dumps(document, separators=(",", ":"), default=str).encode())


def _tail(text: str, limit: int) -> str:
    if len(text.encode()) <= limit:
        return text
    cut = text.encode()[-limit:].decode("utf-8", errors="ignore")
    newline = cut.find("\n")
    return cut[newline + 1 :] if 0 <= newline < len(cut) - 1 else cut


def _bounded(document: dict[str, Any], limit: int) -> dict[str, Any]:
    """Fit the document in `limit` bytes: log tails first, then no logs, then fewer events."""
    if _size(document) <= limit:
        return document
    logs = document.get("logs") or {}
    for step in LOG_TAIL_STEPS:
        document["logs"] = {
            c: {s: _tail(t, step) for s, t in streams.items() if isinstance(t, str)}
            for c, streams in logs.items()
        }
        if _size(document) <= limit:
            return document
    document.pop("logs", None)
    events = list(document.get("events") or [])
    while _size(document) > limit and len(events) > MIN_EVENTS:
        events = events[len(events) // 4 or 1 :]  # keep the newest
        document["events"] = events
    for key in ("related", "node_metrics", "pod_metrics", "node", "owner"):
        if key == "owner" and "pod" not in document:
            break  # a workload incident without a pod is its owner
        if _size(document) <= limit:
            break
        document.pop(key, None)
    return document


def redacted_incident(
    ctx: IncidentContext,
    incident_id: str,
    expected: Mapping[str, Any] | None,
    *,
    description: str | None = None,
    max_bytes: int = MAX_INCIDENT_BYTES,
) -> dict[str, Any]:
    """The contract-format incident document for a context: redacted and size-bounded. Pure."""
    document: dict[str, Any] = {"id": incident_id_for(incident_id)}
    if description:
        document["description"] = description
    if ctx.captured_at is not None:
        document["captured_at"] = rfc3339(ctx.captured_at)
    if ctx.pod:  # a workload incident may have no pod
        document["pod"] = strip_managed_fields(ctx.pod)
    document["events"] = [strip_managed_fields(e) for e in ctx.events]
    logs = {c: {s: t for s, t in streams.items() if isinstance(t, str)} for c, streams in ctx.logs.items()}
    if logs:
        document["logs"] = logs
    for key, value in (
        ("owner", ctx.owner),
        ("node", ctx.node),
        ("node_metrics", ctx.node_metrics),
        ("pod_metrics", ctx.pod_metrics),
    ):
        if value is not None:
            document[key] = strip_managed_fields(value)
    if ctx.related:
        document["related"] = [strip_managed_fields(o) for o in ctx.related]
    if expected:
        document["expected"] = dict(expected)
    return _bounded(redact_document(document, Redactor.for_context(ctx)), max_bytes)


def redact_document(document: Mapping[str, Any], redactor: Redactor | None = None) -> dict[str, Any]:
    """An incident document with the one redaction every path applies (default: its own pod's secrets).

    The kubectl.kubernetes.io/last-applied-configuration annotation (redacted inside by the
    Redactor) is dropped too: it repeats the spec and often an old secret, and says nothing new.
    """
    if redactor is None:
        related = document.get("related")
        extra = related if isinstance(related, list) else []
        redactor = Redactor.for_objects(document.get("pod"), document.get("owner"), *extra)
    redacted: dict[str, Any] = redactor.obj(dict(document))
    related_out = redacted.get("related")
    for obj in (
        redacted.get("pod"),
        redacted.get("owner"),
        *(related_out if isinstance(related_out, list) else []),
    ):
        annotations = ((obj if isinstance(obj, dict) else {}).get("metadata") or {}).get("annotations")
        if isinstance(annotations, dict):
            annotations.pop(LAST_APPLIED, None)
    return redacted


# `sre-agent capture` names a workload as kubectl does: job/NAME, deployment/NAME.
_WORKLOADS: dict[str, tuple[str, str]] = {
    **dict.fromkeys(("job", "jobs", "job.batch"), ("batch/v1", "Job")),
    **dict.fromkeys(("deployment", "deployments", "deploy", "deployment.apps"), ("apps/v1", "Deployment")),
}


async def capture_incident(kube: KubeClient, namespace: str, pod: str, clock: Clock) -> dict[str, Any]:
    """Gather one live pod (`NAME` or `pod/NAME`), or one workload (`job/NAME`, `deployment/NAME`:
    a workload incident, `Gatherer.gather_workload`), and return its redacted incident document,
    `expected.symptom` detected."""
    kind, _, name = pod.rpartition("/")
    gatherer = Gatherer(kube, clock)
    if kind.lower() in _WORKLOADS:
        api_version, kind_name = _WORKLOADS[kind.lower()]
        what = f"{kind_name.lower()} {namespace}/{name}"
        obj = await kube.get_workload(api_version, kind_name, namespace, name)
        if obj is None:
            raise CaptureError(f"{what} not found")
        obj.setdefault("apiVersion", api_version)
        obj.setdefault("kind", kind_name)
        ctx = await gatherer.gather_workload(obj)
    elif kind.lower() in ("", "pod", "pods", "po"):
        what = f"pod {namespace}/{name}"
        obj = await kube.get_pod(namespace, name)
        if obj is None:
            raise CaptureError(f"{what} not found")
        obj.setdefault("apiVersion", "v1")
        obj.setdefault("kind", "Pod")
        ctx = await gatherer.gather(obj)
    else:
        raise CaptureError(f"cannot capture {kind!r}: name a pod (NAME), job/NAME or deployment/NAME")
    symptom = detect_incident(ctx.pod, ctx.events, ctx.node, ctx.owner, clock.now())
    return redacted_incident(
        ctx,
        incident_id_for(namespace, name),
        {"symptom": symptom.value},
        description=f"captured from {what}; expected.symptom detected, category and actions unlabelled",
    )


# --------------------------------------------------------------------------------- export


def _approval(rec: RecordedDecision) -> str:
    if rec.approved is True:
        return "approved by a human"
    if rec.approved is False:
        return "REJECTED by a human: the proposed action is labelled forbidden"
    return "not reviewed by a human"


def human_labels(rec: RecordedDecision) -> dict[str, Any] | None:
    """The `expected` block an AgentDecision supports: only what a human decided, or None.

    Rejected: the action is forbidden. Approved and executed: the action is acceptable.
    Anything else (pending, expired, blocked, failed, auto-executed without review) says
    nothing about what is right, so it stays unlabelled and replay counts it as unscored.
    The symptom and category are the agent's own findings and are never copied.
    """
    if rec.approved is False or rec.phase == Phase.REJECTED:
        return {"forbidden_actions": [rec.action.name]}
    if rec.approved is True and rec.phase == Phase.EXECUTED:
        return {"actions": [rec.action.name]}
    return None


def incident_from_decision(obj: JSON) -> dict[str, Any] | None:
    """The incident file for one AgentDecision, or None when it carries no incident."""
    rec = RecordedDecision.from_object(obj)
    incident = incident_of(obj)
    if incident is None:
        return None
    # Redacted again: it may have been recorded by an older version, or edited since.
    document = redact_document(incident)
    document["id"] = incident_id_for(rec.name)
    phase = rec.phase.value if rec.phase else "unset"
    document["description"] = (
        f"exported from AgentDecision {rec.namespace}/{rec.name}: {rec.symptom.value}, "
        f"{rec.category.value}, action {rec.action.name} (source {rec.source}, confidence "
        f"{rec.confidence:.2f}, policy {rec.policy_outcome or 'unknown'}); {_approval(rec)}; phase {phase}"
    )
    labels = human_labels(rec)
    document.pop("expected", None)
    if labels is not None:
        document["expected"] = labels
    return document


def write_exports(objects: list[JSON], out: Path) -> list[Path]:
    """One incident file per AgentDecision with an incident; invalid ones are logged and skipped."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for obj in objects:
        meta = obj.get("metadata") or {}
        where = f"AgentDecision {meta.get('namespace')}/{meta.get('name')}"
        try:
            document = incident_from_decision(obj)
        except DecisionFormatError as exc:
            log.warning("Skipping %s", exc)
            continue
        if document is None:
            log.info("Skipping %s: it carries no incident", where)
            continue
        path = out / f"{document['id']}.yaml"
        try:
            parse_incident(document, str(path))
        except IncidentFileError as exc:
            log.warning("Skipping %s: %s", where, exc)
            continue
        path.write_text(dump_incident(document), encoding="utf-8")
        written.append(path)
    return written


# --------------------------------------------------------------------------------- CLI entry points


def _connect() -> KubeClient:
    try:
        return KubeClient.connect()
    except Exception as exc:  # kubeconfig missing or invalid: the kubernetes client's many types
        raise CaptureError(
            f"cannot load Kubernetes credentials: {' '.join(str(exc).split())[:200]}"
        ) from None


def _run(coro_factory: Any) -> Any:
    kube = _connect()
    try:
        return asyncio.run(coro_factory(kube))
    except KubeError as exc:
        raise CaptureError(f"Kubernetes API error: {exc}") from None
    finally:
        kube.close()


def capture_document(namespace: str, pod: str) -> dict[str, Any]:
    """Capture one pod with the current credentials (in-cluster, or $KUBECONFIG)."""

    async def go(kube: KubeClient) -> dict[str, Any]:
        return await capture_incident(kube, namespace, pod, SystemClock())

    result: dict[str, Any] = _run(go)
    return result


def capture_to_file(namespace: str, pod: str, out: Path | None) -> Path:
    """Capture one pod into `out` (default `./<namespace>-<pod>.yaml`); the path written."""
    document = capture_document(namespace, pod)
    path = out if out is not None else Path(f"{document['id']}.yaml")
    text = json.dumps(document, indent=2) + "\n" if path.suffix == ".json" else dump_incident(document)
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CaptureError(f"{path}: cannot write: {exc.strerror}") from None
    return path


def export_to_dir(namespace: str | None, out: Path) -> list[Path]:
    """Export recorded AgentDecisions (one namespace, or all) as incident files into `out`."""
    if out.exists() and not out.is_dir():
        raise CaptureError(f"{out}: not a directory")

    async def go(kube: KubeClient) -> list[JSON]:
        return await DecisionStore(kube, SystemClock()).list_objects(namespace)

    objects: list[JSON] = _run(go)
    try:
        return write_exports(objects, out)
    except OSError as exc:
        raise CaptureError(f"{out}: cannot write: {exc.strerror}") from None
