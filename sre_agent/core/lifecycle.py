"""The life of an AgentDecision, and the agent's memory of the decisions it has made. Pure.

- **Phases and transitions**: `Phase` is `status.phase` (the CRD's enum); `TRANSITIONS` says which
  moves exist; `initial_phase()` turns a policy verdict into the first phase and its message.
- **Expiry and staleness**: `expired()`, `sweep_step()` (what the periodic sweep does to one
  decision) and `stale_reason()` (why an approved decision no longer applies, from what the
  operator just read about its target).
- **Root cause and suppression**: a decision is about one *workload* (the pod's owner as its
  own body names it; the node for NodeNotReady) and one *root cause*, the symptom's `Cause`
  family: CrashLoopBackOff, HighRestarts and OOMKilled of a workload are one cause (the same
  containers dying), every other symptom is its own. `DecisionMemory` keeps at most one open
  decision per (workload, cause): a later symptom of the same family joins it instead of opening
  a second; and one open decision per workload across the two levels (a stalled rollout or failed
  Job, `WORKLOAD_CAUSES`, and the pod-level causes of its pods); once closed (Rejected, Expired, Blocked, Executed, Failed) it suppresses a new one for
  as long as the policy's `suppression` says. The operator rebuilds the memory from the
  AgentDecisions (labels `LABEL_WORKLOAD` and `LABEL_CAUSE`) at start and whenever its replica
  becomes the active peer, and feeds it every decision event; so it survives restarts and
  hand-overs. `decision_name()` is deterministic: the same memory gives the same name, so two
  writers (or a retry) create one object, never two.

Used by `operator.service` (all of it) and `core.intake` (`Cause`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum, StrEnum

from sre_agent.core.policy import Suppression
from sre_agent.core.symptoms import Thresholds, detect
from sre_agent.domain import (
    CORDON_NODE,
    JSON,
    ROLLBACK_DEPLOYMENT,
    SCALE_DEPLOYMENT,
    ObjectRef,
    PolicyVerdict,
    Symptom,
)

# Actions on the owner Deployment: they still apply when the incident's pod was replaced.
WORKLOAD_ACTIONS = (SCALE_DEPLOYMENT, ROLLBACK_DEPLOYMENT)

# Labels every AgentDecision carries, so the memory is rebuilt from a label-selected list.
LABEL_WORKLOAD = "sre.agentops.dev/workload"  # sha256[:16] of the workload key (Kind/ns/name)
LABEL_CAUSE = "sre.agentops.dev/cause"  # Cause value
ANNOTATION_WORKLOAD = "sre.agentops.dev/workload"  # the readable workload key, for humans

# A decision whose status was never written (its writer died mid-record) counts as open this long.
UNSET_PHASE_GRACE = timedelta(minutes=5)
MAX_NAME = 63
MAX_REMEMBERED = 20_000  # keys; the oldest closed ones are dropped first


class Phase(StrEnum):
    """status.phase, exactly as the CRD's enum."""

    PENDING_APPROVAL = "PendingApproval"
    APPROVED = "Approved"
    EXECUTING = "Executing"
    EXECUTED = "Executed"
    REJECTED = "Rejected"
    BLOCKED = "Blocked"
    FAILED = "Failed"
    EXPIRED = "Expired"


OPEN_PHASES: frozenset[Phase] = frozenset({Phase.PENDING_APPROVAL, Phase.APPROVED, Phase.EXECUTING})

# Every move a decision can make; anything else is a bug or a forged status.
TRANSITIONS: Mapping[Phase, frozenset[Phase]] = {
    Phase.PENDING_APPROVAL: frozenset({Phase.APPROVED, Phase.REJECTED, Phase.EXPIRED}),
    Phase.APPROVED: frozenset({Phase.EXECUTING}),
    Phase.EXECUTING: frozenset({Phase.EXECUTED, Phase.FAILED}),
    Phase.EXECUTED: frozenset(),
    Phase.REJECTED: frozenset(),
    Phase.BLOCKED: frozenset(),
    Phase.FAILED: frozenset(),
    Phase.EXPIRED: frozenset(),
}


def can_move(current: Phase | None, to: Phase) -> bool:
    """A recorded phase may move to `to` (an unset phase may become any first phase)."""
    if current is None:
        return to in (Phase.PENDING_APPROVAL, Phase.APPROVED, Phase.BLOCKED)
    return to in TRANSITIONS[current]


def initial_phase(verdict: PolicyVerdict) -> tuple[Phase, str]:
    """The first phase of a new decision and its status message, from the policy's verdict."""
    if verdict.outcome == "blocked":
        return Phase.BLOCKED, f"blocked by policy: {verdict.reason}"
    if verdict.dry_run:
        return Phase.BLOCKED, f"dry-run policy, not executed ({verdict.outcome}: {verdict.reason})"
    if verdict.outcome == "allowed":
        return Phase.APPROVED, f"auto-approved: {verdict.reason}"
    return Phase.PENDING_APPROVAL, f"waiting for approval: {verdict.reason}"


def expired(expires_at: datetime | None, now: datetime) -> bool:
    return expires_at is not None and now >= expires_at


# ----------------------------------------------------------------------------------- sweep


class SweepStep(Enum):
    KEEP = "keep"
    WATCH_EXECUTING = "watch"  # Executing and not ours: fail it if it is still so next sweep
    FAIL_INTERRUPTED = "fail"  # left Executing by an operator that stopped mid-action
    DELETE = "delete"  # older than the retention
    EXPIRE = "expire"  # pending past spec.expiresAt


INTERRUPTED_MESSAGE = "interrupted: the operator stopped while executing; not retried, check the target"


def sweep_step(
    phase: Phase | None,
    *,
    created_at: datetime | None,
    expires_at: datetime | None,
    now: datetime,
    retention: timedelta | None,
    ours_in_flight: bool,
    executing_last_sweep: bool,
) -> SweepStep:
    """What the periodic sweep does to one decision.

    A decision left Executing (not by an action running in this process) is failed only when the
    previous sweep saw it Executing too: whether its action took effect is unknown, so it is never
    retried blindly. Decisions older than the retention are deleted unless an action may be running.
    """
    if phase == Phase.EXECUTING and not ours_in_flight:
        return SweepStep.FAIL_INTERRUPTED if executing_last_sweep else SweepStep.WATCH_EXECUTING
    old = retention is not None and created_at is not None and now - created_at > retention
    if old and phase not in (Phase.APPROVED, Phase.EXECUTING):
        return SweepStep.DELETE
    if phase == Phase.PENDING_APPROVAL and expired(expires_at, now):
        return SweepStep.EXPIRE
    return SweepStep.KEEP


# ----------------------------------------------------------------------------------- staleness


@dataclass(frozen=True)
class Lookups:
    """What the operator must read before judging an approved decision (`lookups_for`)."""

    node: bool = False  # the node named by the decision
    owner: bool = False  # the owner workload
    pod: bool = False  # the target pod, its node and its events


def lookups_for(action: str, target: ObjectRef) -> Lookups:
    if action == CORDON_NODE:
        return Lookups(node=True)
    return Lookups(owner=action in WORKLOAD_ACTIONS, pod=target.kind == "Pod")


@dataclass(frozen=True)
class Observed:
    """What the operator read about a decision's target right now (None: absent, or not read)."""

    node: JSON | None = None
    owner_exists: bool = True
    pod: JSON | None = None
    pod_node: JSON | None = None
    events: tuple[JSON, ...] = ()


def stale_reason(
    *,
    action: str,
    target: ObjectRef,
    node_name: str,
    owner: ObjectRef | None,
    observed: Observed,
    node_problems: Iterable[str],
    now: datetime,
    thresholds: Thresholds,
) -> str:
    """Why an approved decision no longer applies ("" when it still does).

    A pod counts as unhealthy by the same detector the intake uses, so a crash loop seen between
    two back-offs (`terminated`, restarts growing, or running again for a few seconds) is still a
    crash loop. `node_problems` are the node's problems (NotReady, pressure) for cordon_node.
    """
    if action == CORDON_NODE:
        if observed.node is None:
            return f"node {node_name or '?'} no longer exists"
        if not list(node_problems):
            return f"node {node_name} is healthy again"
        return ""
    if action in WORKLOAD_ACTIONS and owner is not None and not observed.owner_exists:
        return f"{owner.kind} {owner.namespace}/{owner.name} no longer exists"
    if target.kind != "Pod":
        return ""
    pod = observed.pod
    if pod is None or (target.uid and (pod.get("metadata") or {}).get("uid") != target.uid):
        if action in WORKLOAD_ACTIONS:
            return ""  # the deployment still exists; its pods come and go
        return f"pod {target.namespace}/{target.name} no longer exists"
    if detect(pod, observed.events, observed.pod_node, now, thresholds) == Symptom.HEALTHY:
        return f"pod {target.namespace}/{target.name} is healthy now"
    return ""


# ----------------------------------------------------------------------------------- root cause


class Cause(StrEnum):
    """The root-cause family of a symptom: what one decision per workload is about."""

    CRASH = "crash"  # CrashLoopBackOff, HighRestarts, OOMKilled: the same containers dying
    IMAGE = "image"
    CONFIG = "config"
    INIT = "init"
    SCHEDULING = "scheduling"
    MOUNT = "mount"
    EVICTION = "eviction"
    NODE = "node"
    PROBE = "probe"
    ROLLOUT = "rollout"  # ProgressDeadlineExceeded: a Deployment's rollout as a whole
    JOB = "job"  # JobFailed: a Job as a whole


# Causes about a workload as a whole, not one of its pods. A workload has at most one open decision
# across these and its pods' causes: the stalled rollout or failed Job and the pods that failed it
# are one story (`DecisionMemory.recall`).
WORKLOAD_CAUSES: frozenset[Cause] = frozenset({Cause.ROLLOUT, Cause.JOB})


CAUSE_OF: Mapping[Symptom, Cause] = {
    Symptom.CRASH_LOOP: Cause.CRASH,
    Symptom.HIGH_RESTARTS: Cause.CRASH,
    Symptom.OOM_KILLED: Cause.CRASH,
    Symptom.IMAGE_PULL: Cause.IMAGE,
    Symptom.CONFIG_ERROR: Cause.CONFIG,
    Symptom.INIT_FAILURE: Cause.INIT,
    Symptom.UNSCHEDULABLE: Cause.SCHEDULING,
    Symptom.FAILED_MOUNT: Cause.MOUNT,
    Symptom.EVICTED: Cause.EVICTION,
    Symptom.NODE_NOT_READY: Cause.NODE,
    Symptom.PROBE_FAILURE: Cause.PROBE,
    Symptom.PROGRESS_DEADLINE: Cause.ROLLOUT,
    Symptom.JOB_FAILED: Cause.JOB,
}


def cause_of(symptom: Symptom) -> Cause:
    if symptom == Symptom.HEALTHY:
        raise ValueError("a healthy pod has no root cause")
    return CAUSE_OF[symptom]


def _hash(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


@dataclass(frozen=True)
class MemoryKey:
    """One workload and one root cause in one namespace (the decision's namespace)."""

    namespace: str
    workload: str  # hashed workload key (LABEL_WORKLOAD)
    cause: Cause

    @classmethod
    def of(cls, namespace: str, workload_key: str, cause: Cause) -> MemoryKey:
        return cls(namespace, _hash(workload_key, 16), cause)

    def labels(self) -> dict[str, str]:
        return {LABEL_WORKLOAD: self.workload, LABEL_CAUSE: self.cause.value}

    @classmethod
    def from_labels(cls, namespace: str, labels: Mapping[str, object]) -> MemoryKey | None:
        """The key of a recorded decision, or None when its labels are missing or malformed."""
        workload, cause = labels.get(LABEL_WORKLOAD), labels.get(LABEL_CAUSE)
        if not isinstance(workload, str) or not re.fullmatch(r"[0-9a-f]{16}", workload):
            return None
        try:
            return cls(namespace, workload, Cause(str(cause)))
        except ValueError:
            return None

    def __str__(self) -> str:
        return f"{self.namespace}/{self.workload}:{self.cause.value}"


_NOT_DNS = re.compile(r"[^a-z0-9-]+")
_SEQUENCE = re.compile(r"-(\d{1,9})$")


def decision_name(workload_name: str, key: MemoryKey, sequence: int) -> str:
    """`<workload>-<hash of key>-<n>`: DNS-1123, at most 63 characters, the same for the same inputs."""
    stem = _hash(str(key), 8)
    suffix = str(sequence)
    room = MAX_NAME - len(stem) - len(suffix) - 2
    slug = _NOT_DNS.sub("-", workload_name.lower()).strip("-")[:room].strip("-") or "decision"
    return f"{slug}-{stem}-{suffix}"


# ----------------------------------------------------------------------------------- memory


@dataclass(frozen=True)
class Remembered:
    """One recorded decision as the memory sees it."""

    name: str
    phase: Phase | None
    created_at: datetime | None
    closed_at: datetime | None = None  # status.finishedAt of a closed decision

    @property
    def sequence(self) -> int:
        found = _SEQUENCE.search(self.name)
        return int(found.group(1)) if found else 0


class Recall(Enum):
    NEW = "new"  # no open decision, nothing suppressing: decide
    OPEN = "open"  # an open decision exists: the pod joins it
    SUPPRESSED = "suppressed"  # a closed decision suppresses a new one until `until`


@dataclass(frozen=True)
class Answer:
    recall: Recall
    decision: str = ""  # the open or suppressing decision
    until: datetime | None = None  # end of the suppression
    sequence: int = 1  # for NEW: the sequence number of the decision to create


def _open(d: Remembered, now: datetime) -> bool:
    """Open, or being recorded right now (no phase yet, within the grace)."""
    if d.phase in OPEN_PHASES:
        return True
    return d.phase is None and (d.created_at is None or now - d.created_at < UNSET_PHASE_GRACE)


def suppression_for(phase: Phase, suppression: Suppression) -> timedelta:
    seconds = {
        Phase.REJECTED: suppression.after_rejected_seconds,
        Phase.EXPIRED: suppression.after_expired_seconds,
        Phase.EXECUTED: suppression.after_executed_seconds,
        Phase.FAILED: suppression.after_executed_seconds,
        Phase.BLOCKED: suppression.after_blocked_seconds,
    }.get(phase, 0)
    return timedelta(seconds=seconds)


@dataclass
class DecisionMemory:
    """At most one open decision per (workload, cause); closed ones suppress for a while. Pure."""

    suppression: Suppression
    _known: dict[MemoryKey, dict[str, Remembered]] = field(default_factory=dict)

    def observe(self, key: MemoryKey, decision: Remembered) -> None:
        """A decision was created, changed, or listed: remember its latest state."""
        self._known.setdefault(key, {})[decision.name] = decision
        if len(self._known) > MAX_REMEMBERED:
            self._known.pop(next(iter(self._known)))

    def forget(self, key: MemoryKey, name: str) -> None:
        """A decision was deleted (retention): it neither blocks nor suppresses any more."""
        known = self._known.get(key)
        if known is not None:
            known.pop(name, None)
            if not known:
                del self._known[key]

    def replace_all(self, entries: Iterable[tuple[MemoryKey, Remembered]]) -> int:
        """Rebuild from a full list of decisions (start, or becoming the active peer)."""
        self._known = {}
        count = 0
        for key, decision in entries:
            self.observe(key, decision)
            count += 1
        return count

    def recall(self, key: MemoryKey, now: datetime) -> Answer:
        """May a new decision be made for this workload and cause now?

        Besides its own cause, a workload-level cause (a stalled rollout, a failed Job) joins an
        open decision about a pod-level cause of the same workload, and a pod-level cause joins an
        open workload-level one: one open decision per workload across the two levels.
        """
        known = list(self._known.get(key, {}).values())
        sequence = 1 + max((d.sequence for d in known), default=0)
        for d in sorted(known, key=lambda d: d.created_at or now, reverse=True):
            if _open(d, now):
                return Answer(Recall.OPEN, d.name)
        for other in self._across_levels(key):
            for d in self._known.get(other, {}).values():
                if _open(d, now):
                    return Answer(Recall.OPEN, d.name)
        best: Answer | None = None
        for d in known:
            if d.phase is None or d.phase in OPEN_PHASES:
                continue
            closed = d.closed_at or d.created_at
            if closed is None:
                continue
            until = closed + suppression_for(d.phase, self.suppression)
            if now < until and (best is None or best.until is None or until > best.until):
                best = Answer(Recall.SUPPRESSED, d.name, until)
        return best or Answer(Recall.NEW, sequence=sequence)

    def _across_levels(self, key: MemoryKey) -> list[MemoryKey]:
        """The keys of the same workload on the other level (workload-level vs pod-level causes)."""
        workload_level = key.cause in WORKLOAD_CAUSES
        return [
            MemoryKey(key.namespace, key.workload, cause)
            for cause in Cause
            if cause != Cause.NODE and (cause in WORKLOAD_CAUSES) != workload_level
        ]

    def open_count(self) -> int:
        return sum(1 for known in self._known.values() for d in known.values() if d.phase in OPEN_PHASES)

    def pending_count(self) -> int:
        return sum(
            1 for known in self._known.values() for d in known.values() if d.phase == Phase.PENDING_APPROVAL
        )

    def pending(self, now: datetime) -> tuple[dict[str, int], float]:
        """Decisions waiting for approval per namespace, and the age in seconds of the oldest."""
        per_namespace: dict[str, int] = {}
        oldest = 0.0
        for key, known in self._known.items():
            for d in known.values():
                if d.phase != Phase.PENDING_APPROVAL:
                    continue
                per_namespace[key.namespace] = per_namespace.get(key.namespace, 0) + 1
                if d.created_at is not None and now > d.created_at:
                    oldest = max(oldest, (now - d.created_at).total_seconds())
        return per_namespace, oldest

    def __len__(self) -> int:
        return len(self._known)
