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
    pending_grace_seconds: int = (
        30  # a pod may be ContainerCreating / unready this long before events are read
    )


# kubelet's crash-loop back-off: 10 s doubling per restart up to 5 min (pkg/kubelet/kuberuntime).
BACKOFF_BASE_SECONDS = 10
BACKOFF_MAX_SECONDS = 300
# A run this short that ended in a non-zero exit is a crash, not a process that ran and then failed.
CRASH_RUN_SECONDS = 30
# ProbeFailure from the Unhealthy event history: this many failures, the last one this recent.
MIN_UNHEALTHY_COUNT = 3


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


def backoff_seconds(restarts: int) -> int:
    """The back-off kubelet waits before restart number `restarts` of a crashing container."""
    if restarts <= 1:
        return BACKOFF_BASE_SECONDS
    return min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS << min(restarts - 1, 16))


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else 0


def _restarts_on_failure(pod: JSON) -> bool:
    return (pod.get("spec") or {}).get("restartPolicy", "Always") in ("Always", "OnFailure")


def crash_looping(pod: JSON, status: JSON, now: datetime | None) -> bool:
    """Is this container (or init container) in a crash loop, whichever moment of it the status shows?

    A real kubelet shows a crash loop three ways in turn: `waiting: CrashLoopBackOff` (briefly),
    `terminated` with a growing restartCount (most of each back-off period), and `running` again
    for the few seconds before the next crash. All three count: waiting CrashLoopBackOff; a
    terminated container that will be restarted (non-zero exit, or already restarted before);
    a running container restarted after a short run that ended non-zero, still within the
    back-off of its restart count (twice it, plus a short run, for kubelet's jitter).
    """
    if _waiting_reason(status) == "CrashLoopBackOff":
        return True
    if not _restarts_on_failure(pod) or (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded"):
        return False
    restarts = _int(status.get("restartCount"))
    now_terminated = _terminated(status, "state")
    if now_terminated:
        code = now_terminated.get("exitCode")
        return (isinstance(code, int) and code != 0) or restarts >= 1
    last = _terminated(status, "lastState")
    code = last.get("exitCode")
    if "running" not in _state(status) or restarts < 1 or not isinstance(code, int) or code == 0:
        return False
    started, finished = parse_time(last.get("startedAt")), parse_time(last.get("finishedAt"))
    if started is None or finished is None or finished - started > timedelta(seconds=CRASH_RUN_SECONDS):
        return False
    window = timedelta(seconds=2 * backoff_seconds(restarts) + CRASH_RUN_SECONDS)
    return now is None or now - finished <= window


def _event_time(event: JSON, *keys: str) -> datetime | None:
    for key in keys:
        found = parse_time(event.get(key))
        if found is not None:
            return found
    return None


def unhealthy_history(events: Iterable[JSON]) -> tuple[int, datetime | None, datetime | None]:
    """(failures, first, last) of the pod's `Unhealthy` events (probe failures), series included."""
    count, first, last = 0, None, None
    for e in events:
        if not isinstance(e, dict) or e.get("reason") != "Unhealthy":
            continue
        series = e.get("series") if isinstance(e.get("series"), dict) else {}
        assert isinstance(series, dict)
        count += max(1, _int(e.get("count")), _int(series.get("count")))
        begin = _event_time(e, "firstTimestamp", "eventTime", "lastTimestamp")
        end = _event_time(series, "lastObservedTime") or _event_time(e, "lastTimestamp", "eventTime")
        end = end or begin
        if begin is not None and (first is None or begin < first):
            first = begin
        if end is not None and (last is None or end > last):
            last = end
    return count, first, last


def _probe_failing_long_enough(
    ready: JSON, events: Sequence[JSON], now: datetime | None, thresholds: Thresholds
) -> bool:
    """Ready=False for the threshold, or probes failing for the threshold (a readiness flap under
    load turns Ready back and forth, but its Unhealthy events keep counting)."""
    threshold = timedelta(seconds=thresholds.probe_failure_seconds)
    since = parse_time(ready.get("lastTransitionTime"))
    if now is None or since is None or now - since >= threshold:
        return True
    count, first, last = unhealthy_history(events)
    if count < MIN_UNHEALTHY_COUNT or first is None or last is None:
        return False
    last = min(last, now)  # a clock ahead of ours proves no longer failure
    return last - first >= threshold and now - last <= threshold


def needs_events(pod: JSON, now: datetime, thresholds: Thresholds = Thresholds()) -> bool:
    """May this pod be ProbeFailure or FailedMount, which only its Events can tell?

    Running but not Ready (a container running unready, past the start-up grace), or stuck
    creating containers on a node past the grace. The operator reads Events for these pods only.
    """
    status = pod.get("status") or {}
    phase = status.get("phase")
    grace = timedelta(seconds=thresholds.pending_grace_seconds)
    containers = _statuses(pod, "containerStatuses")
    if phase == "Running":
        ready = _condition(pod, "Ready")
        if ready is None or ready.get("status") != "False":
            return False
        for c in containers:
            started = parse_time((_state(c).get("running") or {}).get("startedAt"))
            if "running" in _state(c) and not c.get("ready") and (started is None or now - started >= grace):
                return True
        return False
    if phase == "Pending" and _creating(pod, containers):
        scheduled = _condition(pod, "PodScheduled")
        since = parse_time((scheduled or {}).get("lastTransitionTime")) or parse_time(
            (pod.get("metadata") or {}).get("creationTimestamp")
        )
        return since is None or now - since >= grace
    return False


def settled(pod: JSON) -> bool:
    """Running and Ready with no container waiting, or finished: time alone cannot make it an incident
    (the operator's resync re-checks only pods that are not settled)."""
    phase = (pod.get("status") or {}).get("phase")
    if phase == "Succeeded":
        return True
    if phase != "Running":
        return False
    ready = _condition(pod, "Ready")
    statuses = _statuses(pod, "containerStatuses") + _statuses(pod, "initContainerStatuses")
    waiting = any(_state(s).get("waiting") for s in statuses)
    return ready is not None and ready.get("status") == "True" and not waiting


def recheck_at(pod: JSON, now: datetime, thresholds: Thresholds = Thresholds()) -> datetime | None:
    """When detection of this pod may change with time alone, with no new pod update (or None).

    A real kubelet writes `Ready=False` or `ContainerCreating` once and then leaves the pod alone
    while probes keep failing or mounts keep timing out; the operator re-checks it at this time
    instead of waiting for the next resync.
    """
    status = pod.get("status") or {}
    phase = status.get("phase")
    grace = timedelta(seconds=thresholds.pending_grace_seconds)
    moments: list[datetime] = []
    if phase == "Running":
        ready = _condition(pod, "Ready")
        if ready is None or ready.get("status") != "False":
            return None
        since = parse_time(ready.get("lastTransitionTime"))
        if since is not None:
            moments.append(since + timedelta(seconds=thresholds.probe_failure_seconds))
        for c in _statuses(pod, "containerStatuses"):
            started = parse_time((_state(c).get("running") or {}).get("startedAt"))
            if started is not None and not c.get("ready"):
                moments.append(started + grace)
    elif phase == "Pending" and _creating(pod, _statuses(pod, "containerStatuses")):
        scheduled = _condition(pod, "PodScheduled")
        since = parse_time((scheduled or {}).get("lastTransitionTime")) or parse_time(
            (pod.get("metadata") or {}).get("creationTimestamp")
        )
        if since is not None:
            moments.append(since + grace)
    future = [m for m in moments if m > now]
    return min(future) if future else None


def _creating(pod: JSON, containers: list[JSON]) -> bool:
    return any(_waiting_reason(c) == "ContainerCreating" for c in containers) or (
        not containers and bool((pod.get("spec") or {}).get("nodeName"))
    )


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
        if crash_looping(pod, c, now) or (isinstance(exit_code, int) and exit_code != 0):
            found.add(Symptom.INIT_FAILURE)

    scheduled = _condition(pod, "PodScheduled")
    if scheduled and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        found.add(Symptom.UNSCHEDULABLE)

    if phase == "Pending" and _creating(pod, containers) and reasons & MOUNT_EVENT_REASONS:
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
        running_unready = any("running" in _state(c) and not c.get("ready") for c in containers)
        if running_unready and _probe_failing_long_enough(ready, events, now, thresholds):
            found.add(Symptom.PROBE_FAILURE)

    if any(crash_looping(pod, c, now) for c in containers):
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


# ----------------------------------------------------------------------------------- workloads

# Symptoms of a workload as a whole, named only when no pod of it shows a symptom of its own.
WORKLOAD_PRECEDENCE: tuple[Symptom, ...] = (Symptom.JOB_FAILED, Symptom.PROGRESS_DEADLINE)
WORKLOAD_SYMPTOMS: frozenset[Symptom] = frozenset(WORKLOAD_PRECEDENCE)


def workload_symptom(
    workload: JSON | None, now: datetime | None = None, thresholds: Thresholds = Thresholds()
) -> Symptom:
    """What the controller says about a Deployment or Job as a whole (Healthy for anything else).

    - ProgressDeadlineExceeded: a Deployment (not paused) whose `Progressing` condition is False
      with reason ProgressDeadlineExceeded, as the Deployment controller writes it when a rollout
      made no progress for `progressDeadlineSeconds` (new pods not created, e.g. over a quota, or
      not becoming available). It lasts until the next rollout, so it is current whenever seen.
    - JobFailed: a Job whose `Failed` condition is True, whatever its reason (BackoffLimitExceeded,
      DeadlineExceeded, PodFailurePolicy, ...). A Job's failure is an event, not a state: one that
      failed longer ago than `restart_window_seconds` (a Job kept for its history) is not an incident.
    """
    if not isinstance(workload, dict):
        return Symptom.HEALTHY
    kind = workload.get("kind")
    spec = workload.get("spec") if isinstance(workload.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    if kind == "Deployment":
        progressing = _condition(workload, "Progressing")
        if (
            progressing is not None
            and progressing.get("status") == "False"
            and progressing.get("reason") == "ProgressDeadlineExceeded"
            and spec.get("paused") is not True
        ):
            return Symptom.PROGRESS_DEADLINE
    elif kind == "Job":
        failed = _condition(workload, "Failed")
        if failed is not None and failed.get("status") == "True":
            since = parse_time(failed.get("lastTransitionTime"))
            window = timedelta(seconds=thresholds.restart_window_seconds)
            if now is None or since is None or now - since <= window:
                return Symptom.JOB_FAILED
    return Symptom.HEALTHY


def detect_incident(
    pod: JSON,
    events: Sequence[JSON] = (),
    node: JSON | None = None,
    owner: JSON | None = None,
    now: datetime | None = None,
    thresholds: Thresholds = Thresholds(),
) -> Symptom:
    """The symptom of an incident: the pod's own when it has one (pod-level symptoms take
    precedence), else its workload's (`workload_symptom` of the owner), else Healthy.
    `pod` may be empty: a workload incident without a representative pod."""
    if pod:
        found = detect(pod, events, node, now, thresholds)
        if found != Symptom.HEALTHY:
            return found
    return workload_symptom(owner, now, thresholds)
