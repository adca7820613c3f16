"""Rule-based diagnoser: the fallback whenever the LLM is down, slow or wrong, and the baseline.

Reads only Evidence signals (never raw text), so it generalises from the kinds of
messages kubelet, the scheduler and runtimes print, not from any corpus's wording.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from sre_agent.core.symptoms import WORKLOAD_SYMPTOMS
from sre_agent.domain import (
    CORDON_NODE,
    CREATE_ALERT,
    ROLLBACK_DEPLOYMENT,
    SCALE_DEPLOYMENT,
    Category,
    Diagnosis,
    Evidence,
    ProposedAction,
    Symptom,
)

EXPLANATIONS: dict[Category, str] = {
    Category.OOM: "the container exceeds its memory limit (limit too low or a leak)",
    Category.APP_ERROR: "the application itself fails",
    Category.BAD_CONFIG: "a ConfigMap, Secret, key, env var or config file is missing or wrong",
    Category.DEPENDENCY_UNAVAILABLE: "a service it depends on is unreachable",
    Category.IMAGE_ERROR: "the image cannot be pulled (name, tag or registry credentials)",
    Category.INSUFFICIENT_CAPACITY: "the cluster lacks the resources to schedule it",
    Category.SCHEDULING_CONSTRAINT: "its scheduling constraints exclude every node",
    Category.PROBE_MISCONFIGURED: "its probe is wrong while the app is fine",
    Category.OVERLOAD: "the app is saturated and its probes time out under load",
    Category.NODE_FAILURE: "its node is failing or under resource pressure",
    Category.VOLUME_ERROR: "a volume cannot be attached or mounted",
    Category.UNKNOWN: "the evidence is not enough to name a cause",
}

_SCHED_HEAD = re.compile(r"\d+/\d+ nodes are available:\s*", re.I)
_SCHED_COUNT = re.compile(r"^(\d+) (.+)$", re.S)
_CAPACITY_PART = re.compile(r"Insufficient|Too many pods|enough resource|exceeded quota", re.I)
_CONSTRAINT_PART = re.compile(
    r"affinity|selector|taint|topology|unschedulable|free ports|volume node affinity|had volume", re.I
)
_CONTROL_PLANE_TAINT = re.compile(r"node-role\.kubernetes\.io/(control-plane|master)", re.I)


def scheduler_reasons(message: str) -> list[tuple[int, str]]:
    """The scheduler's per-reason node counts, e.g. [(1, "node(s) had untolerated taint {...}"),
    (2, "Insufficient cpu")], from the filtering part of a FailedScheduling message (the
    preemption part after it is ignored). Commas and dots inside `{...}` belong to the reason."""
    head = _SCHED_HEAD.search(message)
    if head is None:
        return []
    body = message[head.end() :]
    parts: list[str] = []
    depth, start = 0, 0
    for i, ch in enumerate(body):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth = max(0, depth - 1)
        elif depth == 0 and ch == ",":
            parts.append(body[start:i])
            start = i + 1
        elif depth == 0 and ch == "." and (i + 1 == len(body) or body[i + 1].isspace()):
            break  # end of the filtering sentence ("... . preemption: ...")
    else:
        i = len(body)
    parts.append(body[start:i])
    out = []
    for part in parts:
        m = _SCHED_COUNT.match(part.strip())
        if m:
            out.append((int(m.group(1)), m.group(2).strip()))
    return out


def scheduler_node_counts(message: str) -> tuple[int, int]:
    """(nodes that fail only for resources, nodes excluded by constraints) in one scheduler message.

    The scheduler reports each node under the first filter it fails; taints, selectors and
    affinity are checked before resources, so a node listed as "Insufficient cpu" passed every
    constraint and lacks only room. Control-plane nodes are excluded on every cluster by their
    usual taint and say nothing about this pod.
    """
    capacity = constraint = 0
    for count, reason in scheduler_reasons(message):
        if _CONTROL_PLANE_TAINT.search(reason):
            continue
        if _CAPACITY_PART.search(reason):
            capacity += count
        elif _CONSTRAINT_PART.search(reason):
            constraint += count
    return capacity, constraint


@dataclass(frozen=True)
class _Finding:
    category: Category
    confidence: float
    why: str


def _first(evidence: Evidence, *kinds: str) -> str:
    for s in evidence.signals:
        if s.kind in kinds:
            return s.detail
    return ""


def _scheduling(evidence: Evidence) -> _Finding:
    """Weigh the scheduler's per-node reasons: which kind excludes the most nodes."""
    capacity = constraint = 0
    for detail in dict.fromkeys(
        evidence.details("insufficient_resources") + evidence.details("scheduling_constraint")
    ):
        fits, excluded = scheduler_node_counts(detail)
        capacity, constraint = max(capacity, fits), max(constraint, excluded)
    if evidence.has("unbound_pvc") and not capacity and not constraint:
        claim = _first(evidence, "pvc_pending")
        why = _first(evidence, "unbound_pvc")
        return _Finding(Category.VOLUME_ERROR, 0.85 if claim else 0.8, f"{claim} ({why})" if claim else why)
    if capacity:
        # Some node passes every constraint and lacks only resources: more room would place the pod.
        return _Finding(Category.INSUFFICIENT_CAPACITY, 0.85, _first(evidence, "insufficient_resources"))
    if evidence.has("insufficient_resources") and not constraint:
        return _Finding(Category.INSUFFICIENT_CAPACITY, 0.75, _first(evidence, "insufficient_resources"))
    if constraint or evidence.has("scheduling_constraint"):
        return _Finding(Category.SCHEDULING_CONSTRAINT, 0.85, _first(evidence, "scheduling_constraint"))
    return _Finding(Category.UNKNOWN, 0.3, "scheduler gave no reason")


def _application(evidence: Evidence, base: float) -> _Finding:
    """Crash loops, restarts and init failures: what the process itself said before dying."""
    if evidence.has("oom_killed"):
        return _Finding(Category.OOM, base + 0.1, _first(evidence, "oom_killed"))
    if evidence.has("missing_config", "config_error"):
        return _Finding(Category.BAD_CONFIG, base, _first(evidence, "missing_config", "config_error"))
    if evidence.has("auth_failure"):
        return _Finding(Category.BAD_CONFIG, base - 0.1, _first(evidence, "auth_failure"))
    if evidence.has("dependency_down"):
        return _Finding(Category.DEPENDENCY_UNAVAILABLE, base + 0.1, _dependency_why(evidence))
    if evidence.has("connection_error"):
        return _Finding(Category.DEPENDENCY_UNAVAILABLE, base, _dependency_why(evidence))
    if evidence.has("invalid_config"):
        return _Finding(Category.BAD_CONFIG, base - 0.1, _first(evidence, "invalid_config"))
    if evidence.has("app_exception"):
        return _Finding(Category.APP_ERROR, base, _first(evidence, "app_exception"))
    if evidence.has("memory_near_limit"):
        return _Finding(Category.OOM, base - 0.2, _first(evidence, "memory_near_limit"))
    return _Finding(
        Category.UNKNOWN, 0.3, _first(evidence, "exit_code", "init_failure") or "no telling evidence"
    )


_PROBE_STATUS = re.compile(r"^HTTP (\d{3})\b")


def _probe_answers_unavailable(evidence: Evidence) -> bool:
    """Every HTTP probe answer was a 5xx: the app is up and itself reports that it cannot serve."""
    codes = [m.group(1) for m in map(_PROBE_STATUS.match, evidence.details("probe_http_error")) if m]
    return bool(codes) and all(code.startswith("5") for code in codes)


def _probe(evidence: Evidence) -> _Finding:
    loaded = evidence.has("cpu_saturated", "overload")
    misconfigured = evidence.has(
        "probe_http_error", "probe_port_mismatch", "probe_too_early", "probe_refused", "probe_missing_file"
    )
    if loaded and (evidence.has("probe_timeout") or not misconfigured):
        return _Finding(Category.OVERLOAD, 0.75, _first(evidence, "cpu_saturated", "overload"))
    if (
        _probe_answers_unavailable(evidence)
        and evidence.has("connection_error")
        and not evidence.has("probe_port_mismatch", "probe_too_early")
    ):
        # A health endpoint that answers 503 while the logs show a dependency refusing: the probe is right.
        return _Finding(Category.DEPENDENCY_UNAVAILABLE, 0.7, _dependency_why(evidence))
    if misconfigured:
        return _Finding(
            Category.PROBE_MISCONFIGURED,
            0.75,
            _first(
                evidence,
                "probe_port_mismatch",
                "probe_too_early",
                "probe_http_error",
                "probe_refused",
                "probe_missing_file",
            ),
        )
    if evidence.has("connection_error"):
        return _Finding(Category.DEPENDENCY_UNAVAILABLE, 0.6, _dependency_why(evidence))
    if evidence.has("probe_timeout"):
        return _Finding(Category.OVERLOAD, 0.5, _first(evidence, "probe_timeout"))
    if evidence.has("app_exception"):
        return _Finding(Category.APP_ERROR, 0.5, _first(evidence, "app_exception"))
    return _Finding(Category.UNKNOWN, 0.3, _first(evidence, "probe_failed"))


def _node(evidence: Evidence) -> _Finding:
    """Evictions and lost pods are node failures only when something shows the node is at fault."""
    if evidence.has("node_not_ready", "node_pressure"):
        return _Finding(Category.NODE_FAILURE, 0.85, _first(evidence, "node_not_ready", "node_pressure"))
    if evidence.facts.get("node_ready") is True:
        # A healthy node that evicted or kept a pod: the pod's own limits or a stuck shutdown.
        return _Finding(Category.UNKNOWN, 0.4, _first(evidence, "evicted", "node_lost"))
    return _Finding(Category.NODE_FAILURE, 0.7, _first(evidence, "evicted", "node_lost"))


def _dependency_why(evidence: Evidence) -> str:
    """The traced dependency (Service, endpoints, workload) when known, else the error line."""
    traced = _first(evidence, "dependency_down", "dependency")
    error = _first(evidence, "connection_error")
    return f"{traced} (the pod's error: {error})" if traced else error


def _node_oom(evidence: Evidence) -> str:
    """The node's own OOM event (kubelet's SystemOOM), if the evidence has one."""
    return next((d for d in evidence.details("node_pressure") if " SystemOOM: " in d), "")


def _memory_limited(evidence: Evidence) -> bool:
    limits = evidence.facts.get("limits") or {}
    return any(isinstance(v, dict) and v.get("memory") for v in limits.values())


def _workload(evidence: Evidence) -> _Finding:
    """A stalled rollout or a failed Job: what kept its pods from being created, scheduled, ready
    or successful, from the controller's events and the representative pod's status and logs."""
    if evidence.has("quota_exceeded"):
        return _Finding(Category.INSUFFICIENT_CAPACITY, 0.85, _first(evidence, "quota_exceeded"))
    if evidence.has("insufficient_resources", "scheduling_constraint", "unbound_pvc"):
        return _scheduling(evidence)
    if evidence.symptom == Symptom.PROGRESS_DEADLINE and evidence.has("probe_failed"):
        return _probe(evidence)
    found = _application(evidence, 0.75 if evidence.symptom == Symptom.JOB_FAILED else 0.6)
    if found.category != Category.UNKNOWN or evidence.symptom != Symptom.JOB_FAILED:
        return found
    if any(" DeadlineExceeded: " in d for d in evidence.details("job_failed")):
        # Its pods were stopped at activeDeadlineSeconds: too slow, or stuck; their exit says nothing.
        return _Finding(Category.UNKNOWN, 0.4, _first(evidence, "job_failed"))
    if evidence.has("exit_code"):
        # The Job's own pods ran and exited non-zero: its program failed, whatever it printed.
        return _Finding(Category.APP_ERROR, 0.6, _first(evidence, "exit_code"))
    return found


def find_cause(evidence: Evidence) -> _Finding:
    symptom = evidence.symptom
    if symptom in WORKLOAD_SYMPTOMS:
        return _workload(evidence)
    if symptom == Symptom.OOM_KILLED:
        if _node_oom(evidence) and not _memory_limited(evidence):
            # No limit of its own to exceed: the kernel killed it because the node ran out of memory.
            return _Finding(Category.NODE_FAILURE, 0.75, _node_oom(evidence))
        return _Finding(Category.OOM, 0.9, _first(evidence, "oom_killed"))
    if symptom == Symptom.IMAGE_PULL:
        return _Finding(
            Category.IMAGE_ERROR,
            0.9,
            _first(evidence, "image_not_found", "image_auth", "invalid_image", "image_pull"),
        )
    if symptom == Symptom.CONFIG_ERROR:
        return _Finding(Category.BAD_CONFIG, 0.9, _first(evidence, "missing_config", "config_error"))
    if symptom == Symptom.UNSCHEDULABLE:
        return _scheduling(evidence)
    if symptom == Symptom.FAILED_MOUNT:
        if evidence.has("missing_config") and not evidence.has("volume_error"):
            return _Finding(Category.BAD_CONFIG, 0.8, _first(evidence, "missing_config"))
        return _Finding(
            Category.VOLUME_ERROR, 0.85, _first(evidence, "volume_error", "unbound_pvc", "volume_pending")
        )
    if symptom in (Symptom.EVICTED, Symptom.NODE_NOT_READY):
        return _node(evidence)
    killed_for_memory = any(s.kind == "oom_killed" and s.source == "status" for s in evidence.signals)
    restarting = symptom in (Symptom.CRASH_LOOP, Symptom.HIGH_RESTARTS)
    if restarting and evidence.has("liveness_restart") and not killed_for_memory:
        # The kubelet killed it for failing liveness: a probe question before an app question.
        return _probe(evidence)
    if symptom == Symptom.PROBE_FAILURE:
        return _probe(evidence)
    if symptom == Symptom.INIT_FAILURE:
        return _application(evidence, 0.7)
    if evidence.has("node_not_ready"):
        return _Finding(Category.NODE_FAILURE, 0.6, _first(evidence, "node_not_ready"))
    return _application(evidence, 0.75)


# Causes a rollout can bring (a new image, command, env or probe); not those outside the workload.
ROLLBACK_CATEGORIES = frozenset(
    {
        Category.APP_ERROR,
        Category.BAD_CONFIG,
        Category.IMAGE_ERROR,
        Category.OOM,
        Category.PROBE_MISCONFIGURED,
        Category.UNKNOWN,
    }
)


def choose_action(
    evidence: Evidence,
    category: Category,
    summary: str,
    max_replicas: int = 20,
    allowed: frozenset[str] | None = None,
) -> ProposedAction:
    """The safest useful action for a cause: humans get an alert unless an action clearly helps.

    `allowed`: the actions the policy enables (None: all); rollback_deployment is proposed only then.
    """
    if (
        category in ROLLBACK_CATEGORIES
        and evidence.has("rollout_regression")
        and evidence.owner
        and evidence.owner.kind == "Deployment"
        and (allowed is None or ROLLBACK_DEPLOYMENT in allowed)
    ):
        # The failures began with the newest rollout while the revision before it serves: go back.
        return ProposedAction(ROLLBACK_DEPLOYMENT, {})
    if (
        category == Category.OVERLOAD
        and evidence.owner
        and evidence.owner.kind == "Deployment"
        and evidence.replicas
    ):
        target = min(max_replicas, evidence.replicas + max(1, math.ceil(evidence.replicas * 0.5)))
        if target > evidence.replicas:
            return ProposedAction(SCALE_DEPLOYMENT, {"replicas": target})
    if (
        category == Category.NODE_FAILURE
        and evidence.node
        and evidence.has("node_not_ready", "node_pressure")
    ):
        return ProposedAction(CORDON_NODE, {})
    severity = {
        Category.UNKNOWN: "info",
        Category.NODE_FAILURE: "critical",
        Category.OOM: "warning",
    }.get(category, "warning")
    return ProposedAction(CREATE_ALERT, {"severity": severity, "summary": summary[:1000]})


class RuleReasoner:
    """Deterministic diagnosis from signals; cannot fail."""

    name = "rules"

    def __init__(self, max_replicas: int = 20, allowed: frozenset[str] | None = None) -> None:
        self.max_replicas = max_replicas
        self.allowed = allowed

    def diagnose_now(self, evidence: Evidence) -> Diagnosis:
        finding = find_cause(evidence)
        target = f"{evidence.pod.namespace}/{evidence.pod.name}"
        summary = f"{evidence.symptom.value} on {target}: {EXPLANATIONS[finding.category]}"
        traced = _first(evidence, "dependency_down", "dependency")
        if finding.category == Category.DEPENDENCY_UNAVAILABLE and traced:
            summary = f"{summary}: {traced}"
        reasoning = f"{summary}. Key evidence: {finding.why or 'none'}"
        workload = _first(evidence, "rollout_stalled", "job_failed")
        if workload:
            reasoning = f"{reasoning}. Workload: {workload}"
        action = choose_action(evidence, finding.category, summary, self.max_replicas, self.allowed)
        if action.name == ROLLBACK_DEPLOYMENT:
            regression = _first(evidence, "rollout_regression")
            changes = "; ".join(evidence.details("rollout_change")[:4])
            summary = f"{summary}; {regression}"
            reasoning = f"{reasoning}. Rollout: {regression}" + (f"; changes: {changes}" if changes else "")
        return Diagnosis(
            category=finding.category,
            summary=summary[:500],
            reasoning=reasoning[:2000],
            action=action,
            confidence=round(min(finding.confidence, 0.95), 2),
            source="rules",
        )

    async def diagnose(self, evidence: Evidence, allowed_actions: str = "") -> Diagnosis:
        return self.diagnose_now(evidence)
