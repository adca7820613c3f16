"""Pure data shared by every layer: symptoms, categories, evidence, diagnoses, decisions.

Nothing here does I/O. The core builds these; adapters and the operator read them.
The names and string values follow shared/incident-format.md, the scoring contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

JSON = dict[str, Any]


class Symptom(StrEnum):
    """What is visibly wrong with a pod, or with a workload as a whole, detected without any LLM
    (contract section 2). ProgressDeadlineExceeded and JobFailed are about the workload (a
    Deployment, a Job): they are named only when no pod shows a symptom of its own."""

    CRASH_LOOP = "CrashLoopBackOff"
    OOM_KILLED = "OOMKilled"
    IMAGE_PULL = "ImagePullBackOff"
    CONFIG_ERROR = "CreateContainerConfigError"
    INIT_FAILURE = "InitContainerFailure"
    UNSCHEDULABLE = "Unschedulable"
    PROBE_FAILURE = "ProbeFailure"
    EVICTED = "Evicted"
    HIGH_RESTARTS = "HighRestarts"
    NODE_NOT_READY = "NodeNotReady"
    FAILED_MOUNT = "FailedMount"
    PROGRESS_DEADLINE = "ProgressDeadlineExceeded"  # a Deployment's rollout stalled
    JOB_FAILED = "JobFailed"  # a Job gave up: backoff limit, deadline or pod failure policy
    HEALTHY = "Healthy"


class Category(StrEnum):
    """The root cause the reasoner must name (contract section 3)."""

    OOM = "oom"
    APP_ERROR = "app_error"
    BAD_CONFIG = "bad_config"
    DEPENDENCY_UNAVAILABLE = "dependency_unavailable"
    IMAGE_ERROR = "image_error"
    INSUFFICIENT_CAPACITY = "insufficient_capacity"
    SCHEDULING_CONSTRAINT = "scheduling_constraint"
    PROBE_MISCONFIGURED = "probe_misconfigured"
    OVERLOAD = "overload"
    NODE_FAILURE = "node_failure"
    VOLUME_ERROR = "volume_error"
    UNKNOWN = "unknown"


# The six actions (contract section 4): the only ones a policy may name (core.policy refuses others).
RESTART_POD = "restart_pod"
SCALE_DEPLOYMENT = "scale_deployment"
CORDON_NODE = "cordon_node"
CREATE_ALERT = "create_alert"
ROLLBACK_DEPLOYMENT = "rollback_deployment"  # back to the immediately previous revision only
NO_ACTION = "none"
BUILTIN_ACTIONS: tuple[str, ...] = (
    RESTART_POD,
    SCALE_DEPLOYMENT,
    CORDON_NODE,
    CREATE_ALERT,
    ROLLBACK_DEPLOYMENT,
    NO_ACTION,
)

# The reason of the Warning Event create_alert posts on its target: the agent's own words, which
# evidence never reads back as a symptom of the pod.
ALERT_EVENT_REASON = "SREAgentAlert"
# The reason of the Event announcing a decision that waits for approval, posted on its target: the
# agent's own verdict, which evidence never reads back either.
PENDING_EVENT_REASON = "DecisionPendingApproval"

Source = Literal["rules", "llm", "cache"]
Outcome = Literal["allowed", "needs_approval", "blocked"]


# The group/version of each kind an incident or an action names (core/v1 for anything else).
API_VERSION_OF_KIND: Mapping[str, str] = {
    "Deployment": "apps/v1",
    "ReplicaSet": "apps/v1",
    "StatefulSet": "apps/v1",
    "DaemonSet": "apps/v1",
    "Job": "batch/v1",
    "CronJob": "batch/v1",
}


def api_version_of(kind: str) -> str:
    return API_VERSION_OF_KIND.get(kind, "v1")


@dataclass(frozen=True)
class ObjectRef:
    """A pointer to one Kubernetes object."""

    kind: str
    name: str
    namespace: str = ""
    uid: str = ""
    api_version: str = "v1"

    def key(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}" if self.namespace else f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class IncidentContext:
    """Everything gathered about one unhealthy pod, or one failing workload: the raw API objects.

    The live gatherer and the incident-file loader both produce this, so the
    pipeline cannot tell a live incident from a recorded one. An incident about a workload
    (a Job that failed, a Deployment past its progress deadline) has the workload as `owner`
    and a representative pod as `pod` when there is one (the newest failed pod of the Job, a pod
    of the Deployment's newest ReplicaSet), else `pod` is empty (`{}`).
    """

    pod: JSON
    events: tuple[JSON, ...] = ()
    logs: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    owner: JSON | None = None
    node: JSON | None = None
    node_metrics: JSON | None = None
    pod_metrics: JSON | None = None
    # Other objects read around the incident: the owner Deployment's ReplicaSets (its rollout
    # history), and the Services, EndpointSlices and workloads of dependencies the evidence names.
    related: tuple[JSON, ...] = ()
    captured_at: datetime | None = None
    incident_id: str = ""

    @property
    def namespace(self) -> str:
        found = self.pod.get("metadata", {}).get("namespace", "")
        if not found and isinstance(self.owner, dict):
            found = (self.owner.get("metadata") or {}).get("namespace", "")
        return str(found or "")

    @property
    def pod_name(self) -> str:
        return str(self.pod.get("metadata", {}).get("name", "") or "")


@dataclass(frozen=True)
class Signal:
    """One fact pulled out of the evidence, e.g. ("oom_killed", "container app exit 137")."""

    kind: str
    detail: str
    source: str  # "status", "event", "log:<container>", "node", "metrics", "spec"


@dataclass(frozen=True)
class Evidence:
    """The short, redacted, high-signal view of an incident that rules and LLM both read."""

    symptom: Symptom
    pod: ObjectRef  # the incident's target: the pod, or the workload for a workload symptom
    owner: ObjectRef | None
    node: str
    images: tuple[str, ...]
    signals: tuple[Signal, ...]
    excerpts: tuple[str, ...]  # redacted lines from events and logs, within a size budget
    facts: Mapping[str, Any] = field(default_factory=dict)  # small structured facts (restarts, limits)
    replicas: int | None = None  # owner Deployment's desired replicas, when known

    def has(self, *kinds: str) -> bool:
        return any(s.kind in kinds for s in self.signals)

    def details(self, kind: str) -> list[str]:
        return [s.detail for s in self.signals if s.kind == kind]


@dataclass(frozen=True)
class ProposedAction:
    name: str
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Diagnosis:
    """A reasoner's answer: root cause, explanation and one proposed action."""

    category: Category
    summary: str
    reasoning: str
    action: ProposedAction
    confidence: float
    source: Source
    notes: tuple[str, ...] = ()  # why a fallback happened, why confidence was lowered, ...
    model: str = ""
    tokens: int = 0


@dataclass(frozen=True)
class PolicyVerdict:
    outcome: Outcome
    reason: str
    dry_run: bool = False


@dataclass(frozen=True)
class Decision:
    """One choice of the agent about one incident, ready to record as an AgentDecision."""

    incident_id: str
    fingerprint: str
    evidence: Evidence
    diagnosis: Diagnosis
    verdict: PolicyVerdict
    decided_at: datetime

    @property
    def action(self) -> ProposedAction:
        return self.diagnosis.action
