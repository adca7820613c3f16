"""Guardrail policy: decides whether a proposed action is allowed, needs approval, or is blocked.

Called by the pipeline for every decision and, again, by every executor right before it
acts, so no caller and no LLM answer can push an action past it. Pure: the clock and the
history of executed actions (the ledger) are passed in.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from sre_agent.domain import (
    BUILTIN_ACTIONS,
    CORDON_NODE,
    CREATE_ALERT,
    NO_ACTION,
    RESTART_POD,
    ROLLBACK_DEPLOYMENT,
    SCALE_DEPLOYMENT,
    ObjectRef,
    PolicyVerdict,
    ProposedAction,
)

# Kinds the agent never touches, whatever a policy says.
FORBIDDEN_KINDS = frozenset(
    {
        "Namespace",
        "PersistentVolume",
        "PersistentVolumeClaim",
        "Secret",
        "Role",
        "ClusterRole",
        "RoleBinding",
        "ClusterRoleBinding",
        "NetworkPolicy",
        "CustomResourceDefinition",
        "ServiceAccount",
    }
)
ALWAYS_PROTECTED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})
ALERT_SEVERITIES = ("info", "warning", "critical")
MAX_ALERT_SUMMARY = 1024
# Actions that change nothing in the cluster and so never count against rate limits.
NON_MUTATING = frozenset({CREATE_ALERT, NO_ACTION})

# The parameters each built-in action accepts; anything else is refused, not ignored.
ACTION_PARAMETERS: Mapping[str, frozenset[str]] = {
    RESTART_POD: frozenset({"namespace", "name"}),
    SCALE_DEPLOYMENT: frozenset({"namespace", "name", "replicas"}),
    CORDON_NODE: frozenset({"name"}),
    CREATE_ALERT: frozenset({"severity", "summary"}),
    # The ReplicaSet and revision to return to: the executor re-checks they are still the previous ones.
    ROLLBACK_DEPLOYMENT: frozenset({"namespace", "name", "replicaset", "revision"}),
    NO_ACTION: frozenset(),
}


class PolicyError(ValueError):
    """A policy file is invalid; the message names the file and the field."""


@dataclass(frozen=True)
class ActionRule:
    enabled: bool = True
    require_approval: bool = False
    min_replicas: int = 2
    max_replicas: int = 20
    max_step: int | None = None


@dataclass(frozen=True)
class Suppression:
    """How long a closed decision stops a new one for the same workload and root cause (core.lifecycle).

    Longest after a human said no; shortest after an action ran (if the workload is still broken,
    that is news). Failed counts as Executed.
    """

    after_rejected_seconds: int = 24 * 3600
    after_expired_seconds: int = 3600
    after_executed_seconds: int = 1800
    after_blocked_seconds: int = 6 * 3600


@dataclass(frozen=True)
class Policy:
    name: str
    actions: Mapping[str, ActionRule]
    dry_run: bool = False
    auto_approve_above: float | None = None  # None: everything needs approval
    protected_namespaces: frozenset[str] = ALWAYS_PROTECTED_NAMESPACES
    cooldown_seconds: int = 900
    per_namespace_per_hour: int = 5
    per_hour: int = 30
    decision_ttl_seconds: int = 3600
    suppression: Suppression = field(default_factory=Suppression)

    def allowed_actions(self) -> list[str]:
        return [name for name, rule in self.actions.items() if rule.enabled]

    def describe_actions(self) -> str:
        """A short human (and LLM) readable list of what may be proposed and within which bounds."""
        lines = []
        for name in self.allowed_actions():
            rule = self.actions[name]
            if name == SCALE_DEPLOYMENT:
                lines.append(f"- {name}: replicas between {rule.min_replicas} and {rule.max_replicas}")
            else:
                lines.append(f"- {name}")
        return "\n".join(lines)


# A policy without an `actions` key: every action but rollback_deployment, which a policy must enable.
DEFAULT_ACTIONS: Mapping[str, ActionRule] = {
    name: ActionRule(enabled=name != ROLLBACK_DEPLOYMENT) for name in BUILTIN_ACTIONS
}


def default_policy() -> Policy:
    return Policy(name="builtin-default", actions=DEFAULT_ACTIONS)


def _schema() -> dict[str, Any]:
    text = resources.files("sre_agent.schemas").joinpath("policy.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


MAX_POLICY_BYTES = 1024 * 1024


def _non_finite(data: Any) -> tuple[str, float] | None:
    """The path and value of the first NaN or infinity anywhere in a decoded document, if any.

    JSON Schema's bounds never reject NaN (every comparison with it is false), so `.nan` would pass
    `minimum: 0, maximum: 1` and then compare false against every confidence.
    """
    seen: set[int] = set()
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return where or "(top level)", value
        if isinstance(value, dict | list) and id(value) not in seen:  # YAML aliases share objects
            seen.add(id(value))
            items = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend((f"{where}.{k}" if where else str(k), v) for k, v in reversed(list(items)))
            if isinstance(value, dict):
                stack.extend((where or "(top level)", k) for k in value)
    return None


def parse_policy(data: Any, origin: str = "<policy>") -> Policy:
    """Validate a decoded policy document and build a Policy, or raise PolicyError."""
    bad = _non_finite(data)
    if bad is not None:
        raise PolicyError(f"{origin}: invalid policy at {bad[0]}: {bad[1]} is not a finite number")
    errors = sorted(jsonschema.Draft202012Validator(_schema()).iter_errors(data), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        where = ".".join(str(p) for p in first.absolute_path) or "(top level)"
        raise PolicyError(f"{origin}: invalid policy at {where}: {' '.join(first.message.split())[:300]}")
    actions: dict[str, ActionRule] = {}
    for name, raw in (data.get("actions") or {}).items():
        if name not in BUILTIN_ACTIONS:
            raise PolicyError(
                f"{origin}: invalid policy at actions.{name}: unknown action {name!r} "
                f"(known: {', '.join(BUILTIN_ACTIONS)})"
            )
        rule = ActionRule(
            enabled=raw.get("enabled", True),
            require_approval=raw.get("requireApproval", False),
            min_replicas=raw.get("minReplicas", 2),
            max_replicas=raw.get("maxReplicas", 20),
            max_step=raw.get("maxStep"),
        )
        if rule.min_replicas > rule.max_replicas:
            raise PolicyError(
                f"{origin}: invalid policy at actions.{name}: minReplicas "
                f"{rule.min_replicas} is above maxReplicas {rule.max_replicas}"
            )
        actions[name] = rule
    if "actions" not in data:
        actions = dict(DEFAULT_ACTIONS)
    actions.setdefault(NO_ACTION, ActionRule())
    rate = data.get("rateLimit") or {}
    return Policy(
        name=data["name"],
        actions=actions,
        dry_run=bool(data.get("dryRun", False)),
        auto_approve_above=data.get("autoApproveAboveConfidence"),
        protected_namespaces=ALWAYS_PROTECTED_NAMESPACES | frozenset(data.get("protectedNamespaces", [])),
        cooldown_seconds=data.get("cooldownSeconds", 900),
        per_namespace_per_hour=rate.get("perNamespacePerHour", 5),
        per_hour=rate.get("perHour", 30),
        decision_ttl_seconds=data.get("decisionTTLSeconds", 3600),
        suppression=_suppression(data.get("suppression") or {}),
    )


def _suppression(raw: Mapping[str, Any]) -> Suppression:
    default = Suppression()
    return Suppression(
        after_rejected_seconds=raw.get("afterRejectedSeconds", default.after_rejected_seconds),
        after_expired_seconds=raw.get("afterExpiredSeconds", default.after_expired_seconds),
        after_executed_seconds=raw.get("afterExecutedSeconds", default.after_executed_seconds),
        after_blocked_seconds=raw.get("afterBlockedSeconds", default.after_blocked_seconds),
    )


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses duplicate keys: a later duplicate would silently win, so a
    reviewer reading `autoApproveAboveConfidence: null` at the top could miss a second one below."""


def _unique_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may be overridden
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # an unhashable key: construct_mapping reports it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
    mapping: dict[Any, Any] = loader.construct_mapping(node, deep=True)
    return mapping


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def parse_policy_text(text: str, origin: str = "<policy>") -> Policy:
    if "\x00" in text:
        raise PolicyError(f"{origin}: not a policy: binary content (NUL bytes)")
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: plain data only
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())[:200]
        raise PolicyError(f"{origin}: not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise PolicyError(f"{origin}: not valid YAML: nested too deeply") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{origin}: invalid policy at (top level): expected a mapping")
    return parse_policy(data, origin)


def load_policy(path: str | Path) -> Policy:
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read policy: {exc.strerror}") from None
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError(f"{path}: not a policy: larger than {MAX_POLICY_BYTES // 1024} KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{path}: not a policy: not UTF-8 text (byte {exc.start})") from None
    return parse_policy_text(text, str(path))


@dataclass(frozen=True)
class ActionRequest:
    """What an action would do and to what: everything the policy needs to judge it.

    Built from a fresh Decision, or from a recorded AgentDecision when a human approves it.
    """

    action: ProposedAction
    pod: ObjectRef
    owner: ObjectRef | None
    node: str
    confidence: float
    current_replicas: int | None = None
    # For rollback_deployment: the (ReplicaSet, revision) the evidence shows as the previous one.
    previous_revision: tuple[str, int] | None = None


@dataclass(frozen=True)
class ExecutedAction:
    action: str
    target: str
    namespace: str
    at: datetime


@dataclass
class ActionLedger:
    """Recent executed actions, for cooldowns and rate limits. Bounded; oldest drop first."""

    entries: deque[ExecutedAction] = field(default_factory=lambda: deque(maxlen=10_000))

    def record(self, action: str, target: ObjectRef, at: datetime) -> None:
        self.entries.append(ExecutedAction(action, target.key(), target.namespace, at))

    def record_action(self, request: ActionRequest, at: datetime) -> None:
        """Record an executed action under its cooldown key (`cooldown_target`)."""
        target = cooldown_target(request)
        if target is not None:
            self.record(request.action.name, target, at)

    def last_for(self, target: ObjectRef) -> datetime | None:
        key = target.key()
        times = [e.at for e in self.entries if e.target == key and e.action not in NON_MUTATING]
        return max(times) if times else None

    def count_since(self, since: datetime, namespace: str | None = None) -> int:
        return sum(
            1
            for e in self.entries
            if e.at >= since
            and e.action not in NON_MUTATING
            and (namespace is None or e.namespace == namespace)
        )


def action_target(request: ActionRequest) -> ObjectRef | None:
    """The one object an action acts on, bound to the incident, never to the LLM's say-so."""
    name = request.action.name
    if name == RESTART_POD or name in (CREATE_ALERT, NO_ACTION):
        return request.pod
    if name in (SCALE_DEPLOYMENT, ROLLBACK_DEPLOYMENT):
        return request.owner
    if name == CORDON_NODE:
        return ObjectRef(kind="Node", name=request.node) if request.node else None
    return request.pod


def cooldown_target(request: ActionRequest) -> ObjectRef | None:
    """What a cooldown is kept for: restart_pod's is the owner workload (a restarted pod gets a new
    name, its workload keeps it), every other action's is its target."""
    if request.action.name == RESTART_POD and request.owner is not None:
        return request.owner
    return action_target(request)


def bind_parameters(request: ActionRequest) -> dict[str, Any]:
    """Fill the target fields of an action's parameters from the incident.

    Fields already given (e.g. by an LLM) are kept so that evaluate() can refuse them when
    they name another object; missing ones are filled in.
    """
    params = dict(request.action.parameters)
    target = action_target(request)
    if target is None:
        return params
    if request.action.name in (RESTART_POD, SCALE_DEPLOYMENT, ROLLBACK_DEPLOYMENT):
        params.setdefault("namespace", target.namespace)
        params.setdefault("name", target.name)
    if request.action.name == ROLLBACK_DEPLOYMENT and request.previous_revision is not None:
        params.setdefault("replicaset", request.previous_revision[0])
        params.setdefault("revision", str(request.previous_revision[1]))
    elif request.action.name == CORDON_NODE:
        params.setdefault("name", target.name)
    return params


def evaluate(policy: Policy, request: ActionRequest, ledger: ActionLedger, now: datetime) -> PolicyVerdict:
    """Judge one action request. Every path that is not explicitly allowed is blocked."""

    def blocked(reason: str) -> PolicyVerdict:
        return PolicyVerdict("blocked", reason, policy.dry_run)

    action = request.action
    name = action.name
    if not isinstance(name, str) or name not in policy.actions:
        return blocked(f"action {name!r} is not in policy {policy.name}")
    rule = policy.actions[name]
    if not rule.enabled:
        return blocked(f"action {name} is disabled by policy {policy.name}")
    if not isinstance(action.parameters, Mapping):
        return blocked("parameters must be an object")
    known = ACTION_PARAMETERS.get(name)
    if known is not None:
        extra = sorted(set(map(str, action.parameters)) - known)
        if extra:
            return blocked(f"{name} does not take parameter(s) {', '.join(repr(e) for e in extra)}")
    if name == NO_ACTION:
        return PolicyVerdict("allowed", "observe only: nothing to execute", policy.dry_run)

    target = action_target(request)
    if target is None:
        what = "a node" if name == CORDON_NODE else "an owning Deployment"
        return blocked(f"{name} needs {what} and the incident has none")
    if target.kind in FORBIDDEN_KINDS:
        return blocked(f"{target.kind} objects are never touched")
    params = action.parameters
    if "name" in params and params["name"] != target.name:
        return blocked(f"{name} targets {params['name']!r} but the incident is about {target.name!r}")
    if "namespace" in params and params["namespace"] != target.namespace:
        return blocked(
            f"{name} targets namespace {params['namespace']!r} but the incident is in {target.namespace!r}"
        )

    if name == CREATE_ALERT:
        severity = params.get("severity", "warning")
        summary = params.get("summary", "")
        if severity not in ALERT_SEVERITIES:
            return blocked(f"alert severity must be one of {', '.join(ALERT_SEVERITIES)}")
        if not isinstance(summary, str) or len(summary) > MAX_ALERT_SUMMARY:
            return blocked(f"alert summary must be a string of at most {MAX_ALERT_SUMMARY} characters")
    else:
        if target.namespace and target.namespace in policy.protected_namespaces:
            return blocked(f"namespace {target.namespace} is protected")
        if name == RESTART_POD and target.kind != "Pod":
            return blocked(f"restart_pod needs a Pod; the incident is about {target.kind} {target.name}")
        if name == RESTART_POD and request.owner is None:
            return blocked("restart_pod refused: the pod has no controller, deleting it would lose it")
        if name == ROLLBACK_DEPLOYMENT:
            refusal = _rollback_refusal(request, target)
            if refusal:
                return blocked(refusal)
        if name == SCALE_DEPLOYMENT:
            if target.kind != "Deployment":
                return blocked(f"scale_deployment needs a Deployment, the owner is a {target.kind}")
            replicas = params.get("replicas")
            if isinstance(replicas, bool) or not isinstance(replicas, int):
                return blocked("scale_deployment needs an integer replicas")
            if not rule.min_replicas <= replicas <= rule.max_replicas:
                return blocked(
                    f"replicas {replicas} outside the bounds {rule.min_replicas}-{rule.max_replicas}"
                )
            current = request.current_replicas
            if rule.max_step is not None and current is not None and abs(replicas - current) > rule.max_step:
                return blocked(f"scaling from {current} to {replicas} exceeds maxStep {rule.max_step}")
        cooling = cooldown_target(request) or target
        last = ledger.last_for(cooling)
        if last is not None and now - last < timedelta(seconds=policy.cooldown_seconds):
            return blocked(
                f"{cooling.key()} was acted on at {last.isoformat()}, cooldown {policy.cooldown_seconds}s"
            )
        hour_ago = now - timedelta(hours=1)
        if (
            target.namespace
            and ledger.count_since(hour_ago, target.namespace) >= policy.per_namespace_per_hour
        ):
            return blocked(
                f"rate limit: {policy.per_namespace_per_hour} actions per hour in {target.namespace}"
            )
        if ledger.count_since(hour_ago) >= policy.per_hour:
            return blocked(f"rate limit: {policy.per_hour} actions per hour")

    confidence = request.confidence
    if rule.require_approval:
        return PolicyVerdict(
            "needs_approval", f"{name} always needs approval in {policy.name}", policy.dry_run
        )
    if policy.auto_approve_above is None:
        return PolicyVerdict(
            "needs_approval", f"policy {policy.name} requires approval for every action", policy.dry_run
        )
    if confidence < policy.auto_approve_above:
        return PolicyVerdict(
            "needs_approval",
            f"confidence {confidence:.2f} below auto-approval threshold {policy.auto_approve_above:.2f}",
            policy.dry_run,
        )
    return PolicyVerdict("allowed", f"{name} allowed by policy {policy.name}", policy.dry_run)


def _rollback_refusal(request: ActionRequest, target: ObjectRef) -> str:
    """Why a rollback cannot be judged ("" when it can): it needs a Deployment and the previous
    revision named in its parameters, the one the evidence shows when the evidence shows one."""
    if target.kind != "Deployment":
        return f"rollback_deployment needs a Deployment, the owner is a {target.kind}"
    params = request.action.parameters
    replicaset, revision = params.get("replicaset"), params.get("revision")
    if not isinstance(replicaset, str) or not replicaset or not isinstance(revision, str | int):
        return "rollback_deployment needs the previous revision (replicaset, revision) and the incident shows none"
    if isinstance(revision, bool) or not str(revision).isdigit():
        return f"rollback_deployment revision must be a number, not {revision!r}"
    known = request.previous_revision
    if known is not None and (replicaset, int(revision)) != known:
        return (
            f"rollback_deployment names {replicaset} revision {revision} but the previous revision is "
            f"{known[0]} revision {known[1]}"
        )
    return ""


def may_execute(verdict: PolicyVerdict, approved: bool) -> bool:
    """The one rule every executor applies: allowed, or approved by a human, and never in dry-run."""
    if verdict.dry_run:
        return False
    return verdict.outcome == "allowed" or (verdict.outcome == "needs_approval" and approved)
