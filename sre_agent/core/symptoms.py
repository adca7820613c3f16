"""Deterministic symptom detection from a Pod (and its Node and Events); no LLM involved.

Implements section 2 of shared/incident-format.md, including its precedence order.
Called by the pipeline for every incident and by the operator to decide whether a pod
is worth an incident at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sre_agent.domain import JSON, Symptom

IMAGE_PULL_REASONS = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName"})
CONFIG_ERROR_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError"})
MOUNT_EVENT_REASONS = frozenset({"FailedMount", "FailedAttachVolume"})

PRECEDENCE: tuple[Symptom, ...] = (
    Symptom.OOM_KILLED,
    Symptom.IMAGE_PULL,
    Symptom.CONFIG_ERROR,
    Symptom.INIT_FAILURE,
    Symptom.UNSCHEDULABLE,
    Symptom.FAILED_MOUNT,
    Symptom.EVICTED,
    Symptom.NODE_NOT_READY,
    Symptom.PROBE_FAILURE,
    Symptom.CRASH_LOOP,
    Symptom.HIGH_RESTARTS,
)


@dataclass(frozen=True)
class Thresholds:
    probe_failure_seconds: int = 120  # Ready=False for at least this long counts as ProbeFailure
    high_restarts: int = 5  # restartCount at or above this is HighRestarts ...
    restart_window_seconds: int = 3600  # ... if the last restart is this recent


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _statuses(pod: JSON, key: str) -> list[JSON]:
    value = (pod.get("status") or {}).get(key) or []
    return [s for s in value if isinstance(s, dict)]


def _state(status: JSON, which: str = "state") -> JSON:
    value = status.get(which) or {}
    return value if isinstance(value, dict) else {}


def _waiting_reason(status: JSON) -> str:
    return str((_state(status).get("waiting") or {}).get("reason") or "")


def _terminated(status: JSON, which: str) -> JSON:
    value = _state(status, which).get("terminated") or {}
    return value if isinstance(value, dict) else {}


def _condition(obj: JSON, ctype: str) -> JSON | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == ctype:
            return cond
    return None


def _event_reasons(events: Iterable[JSON]) -> set[str]:
    return {str(e.get("reason") or "") for e in events if isinstance(e, dict)}


def node_is_not_ready(node: JSON | None) -> bool:
    if not node:
        return False
    ready = _condition(node, "Ready")
    return ready is not None and ready.get("status") in ("False", "Unknown")


def matching_symptoms(
    pod: JSON,
    events: Sequence[JSON] = (),
    node: JSON | None = None,
    now: datetime | None = None,
    thresholds: Thresholds = Thresholds(),
) -> set[Symptom]:
    """Every symptom whose rule matches; detect() picks the most specific."""
    found: set[Symptom] = set()
    status = pod.get("status") or {}
    phase = status.get("phase")
    containers = _statuses(pod, "containerStatuses")
    inits = _statuses(pod, "initContainerStatuses")
    reasons = _event_reasons(events)

    for c in containers + inits:
        if "OOMKilled" in (_terminated(c, "state").get("reason"), _terminated(c, "lastState").get("reason")):
            found.add(Symptom.OOM_KILLED)
        waiting = _waiting_reason(c)
        if waiting in IMAGE_PULL_REASONS:
            found.add(Symptom.IMAGE_PULL)
        if waiting in CONFIG_ERROR_REASONS:
            found.add(Symptom.CONFIG_ERROR)

    for c in inits:
        exit_code = _terminated(c, "state").get("exitCode")
        if _waiting_reason(c) == "CrashLoopBackOff" or (isinstance(exit_code, int) and exit_code != 0):
            found.add(Symptom.INIT_FAILURE)

    scheduled = _condition(pod, "PodScheduled")
    if scheduled and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        found.add(Symptom.UNSCHEDULABLE)

    creating = any(_waiting_reason(c) == "ContainerCreating" for c in containers) or (
        phase == "Pending" and not containers and bool((pod.get("spec") or {}).get("nodeName"))
    )
    if phase == "Pending" and creating and reasons & MOUNT_EVENT_REASONS:
        found.add(Symptom.FAILED_MOUNT)

    if phase == "Failed" and status.get("reason") == "Evicted":
        found.add(Symptom.EVICTED)

    if (
        node_is_not_ready(node)
        or (pod.get("metadata") or {}).get("deletionTimestamp")
        or status.get("reason") == "NodeLost"
        or phase == "Unknown"
    ):
        found.add(Symptom.NODE_NOT_READY)

    ready = _condition(pod, "Ready")
    if phase == "Running" and ready is not None and ready.get("status") == "False" and "Unhealthy" in reasons:
        since = parse_time(ready.get("lastTransitionTime"))
        long_enough = (
            now is None or since is None or now - since >= timedelta(seconds=thresholds.probe_failure_seconds)
        )
        running_unready = any("running" in _state(c) and not c.get("ready") for c in containers)
        if long_enough and running_unready:
            found.add(Symptom.PROBE_FAILURE)

    if any(_waiting_reason(c) == "CrashLoopBackOff" for c in containers):
        found.add(Symptom.CRASH_LOOP)

    if phase == "Running":
        for c in containers:
            if int(c.get("restartCount") or 0) < thresholds.high_restarts:
                continue
            finished = parse_time(_terminated(c, "lastState").get("finishedAt"))
            recent = (
                now is None
                or finished is None
                or now - finished <= timedelta(seconds=thresholds.restart_window_seconds)
            )
            if recent:
                found.add(Symptom.HIGH_RESTARTS)
    return found


def detect(
    pod: JSON,
    events: Sequence[JSON] = (),
    node: JSON | None = None,
    now: datetime | None = None,
    thresholds: Thresholds = Thresholds(),
) -> Symptom:
    """The most specific symptom of the pod, or Healthy."""
    found = matching_symptoms(pod, events, node, now, thresholds)
    for symptom in PRECEDENCE:
        if symptom in found:
            return symptom
    return Symptom.HEALTHY
