"""The executor: the only code that changes anything in the cluster, and only within policy.

`Executor.execute` asks the policy again itself (`evaluate` + `may_execute`), whatever the
caller already checked, and refuses with `ActionRefused` (one-line reason, nothing touched)
unless the action is allowed, or needs approval and was approved, and the policy is not in
dry-run. On top of the policy it re-checks what only the live cluster can tell: the pod to
restart is really owned by a controller, the Deployment's current replica count for maxStep.
Every action targets the object bound to the incident (`action_target`), never a name an
LLM wrote, and is idempotent:

* restart_pod: delete the pod with a uid precondition (a pod already replaced is left alone);
* scale_deployment: merge-patch `deployments/<name>/scale` (no-op when already there);
* cordon_node: merge-patch `spec.unschedulable: true` (no-op when already cordoned);
* create_alert: a Warning Event (reason SREAgentAlert) on the target, aggregated by name
  when repeated, plus the configured notifier;
* rollback_deployment: like `kubectl rollout undo`, replace the Deployment's pod template with
  the one of its immediately previous revision, after re-reading the ReplicaSets and checking
  that this previous revision is still the one decided on (its ReplicaSet name and revision in
  the parameters); a JSON patch guarded by the Deployment's resourceVersion, and a no-op when
  the Deployment already runs that ReplicaSet's template;
* none: nothing.

`execute_decision` runs a recorded AgentDecision and first checks it is the decision the
operator made: its target (and owner) lie in the decision's own namespace (a Node aside, for
cordon_node), and what it would run matches `status.actionDigest`, the digest of the decided
action, parameters, target, owner and node written at creation where approvers cannot write.
So even with the CRD's immutability rules missing (an old CRD), an approver who rewrote
`spec` gets a refusal, never an action elsewhere.

Kubernetes API failures raise `KubeError` (the caller marks the decision Failed). Executed
actions go into the ledger for cooldowns and rate limits. Called by the operator.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from sre_agent.adapters.kube.client import KubeClient, KubeError, api_path
from sre_agent.adapters.kube.decisions import RecordedDecision, action_digest, rfc3339
from sre_agent.adapters.notify import Notifier
from sre_agent.core import rollout
from sre_agent.core.owners import controller_ref
from sre_agent.core.policy import (
    FORBIDDEN_KINDS,
    NON_MUTATING,
    ActionLedger,
    ActionRequest,
    Policy,
    action_target,
    bind_parameters,
    evaluate,
    may_execute,
)
from sre_agent.core.reasoning import Clock
from sre_agent.domain import (
    ALERT_EVENT_REASON,
    CORDON_NODE,
    CREATE_ALERT,
    JSON,
    NO_ACTION,
    RESTART_POD,
    ROLLBACK_DEPLOYMENT,
    SCALE_DEPLOYMENT,
    ObjectRef,
    ProposedAction,
)

log = logging.getLogger("sre_agent.executor")

ALERT_REASON = ALERT_EVENT_REASON
MAX_EVENT_MESSAGE = 1024


class ActionRefused(Exception):
    """The executor will not run this action; str(exc) is the one-line reason. Nothing was changed."""


@dataclass(frozen=True)
class ActionResult:
    action: str
    target: ObjectRef | None
    changed: bool
    message: str


class Executor:
    """Runs allowed actions against the cluster. One per process; the ledger is shared with the pipeline."""

    def __init__(
        self,
        kube: KubeClient,
        policy: Policy,
        ledger: ActionLedger,
        clock: Clock,
        *,
        notifier: Notifier | None = None,
        component: str = "sre-agent",
    ) -> None:
        self.kube = kube
        self.policy = policy
        self.ledger = ledger
        self.clock = clock
        self.notifier = notifier
        self.component = component

    # -- the gate --------------------------------------------------------------------------
    def check(self, request: ActionRequest, *, approved: bool) -> ObjectRef | None:
        """Raise ActionRefused unless the policy lets this request run now; return its target."""
        name = request.action.name
        verdict = evaluate(self.policy, request, self.ledger, self.clock.now())
        if verdict.outcome == "blocked":
            raise ActionRefused(f"{name} refused: {verdict.reason}")
        if self.policy.dry_run or verdict.dry_run:
            raise ActionRefused(f"{name} refused: policy {self.policy.name} is in dry-run ({verdict.reason})")
        if not may_execute(verdict, approved):
            raise ActionRefused(f"{name} refused: needs approval and is not approved ({verdict.reason})")
        target = action_target(request)
        if name == NO_ACTION:
            return target
        if target is None:
            raise ActionRefused(f"{name} refused: the incident names nothing to act on")
        if target.kind in FORBIDDEN_KINDS:
            raise ActionRefused(f"{name} refused: {target.kind} objects are never touched")
        if name not in NON_MUTATING and target.namespace in self.policy.protected_namespaces:
            raise ActionRefused(f"{name} refused: namespace {target.namespace} is protected")
        if name == SCALE_DEPLOYMENT:
            rule = self.policy.actions[name]
            replicas = request.action.parameters.get("replicas")
            if isinstance(replicas, bool) or not isinstance(replicas, int):
                raise ActionRefused(f"{name} refused: replicas must be an integer")
            if not rule.min_replicas <= replicas <= rule.max_replicas:
                raise ActionRefused(
                    f"{name} refused: replicas {replicas} outside {rule.min_replicas}-{rule.max_replicas}"
                )
        return target

    def check_decision(self, rec: RecordedDecision) -> ActionRequest:
        """Raise ActionRefused unless `rec` is, unchanged, what the operator decided; its request."""
        name = rec.action.name
        request = rec.request()
        if rec.target.namespace != rec.namespace:
            raise ActionRefused(
                f"{name} refused: target namespace {rec.target.namespace!r} is not the decision's "
                f"namespace {rec.namespace!r}"
            )
        target = action_target(request)
        if target is not None and target.kind != "Node" and target.namespace != rec.namespace:
            raise ActionRefused(
                f"{name} refused: {target.kind} {target.namespace}/{target.name} is outside the decision's "
                f"namespace {rec.namespace}"
            )
        if not rec.recorded_digest:
            raise ActionRefused(
                f"{name} refused: decision {rec.key} has no status.actionDigest, so what was decided "
                "cannot be verified"
            )
        if action_digest(request) != rec.recorded_digest:
            raise ActionRefused(
                f"{name} refused: decision {rec.key} was changed after it was made "
                "(spec differs from status.actionDigest)"
            )
        return request

    async def execute_decision(
        self, rec: RecordedDecision, *, approved: bool, summary: Mapping[str, Any] | None = None
    ) -> ActionResult:
        """Run a recorded decision if it is what was decided (`check_decision`) and policy allows it."""
        return await self.execute(self.check_decision(rec), approved=approved, summary=summary)

    async def execute(
        self, request: ActionRequest, *, approved: bool, summary: Mapping[str, Any] | None = None
    ) -> ActionResult:
        """Run one action if the policy allows it now; `summary` enriches create_alert's notification.

        Raises ActionRefused (nothing changed) or KubeError (the API failed).
        """
        request = replace(request, action=ProposedAction(request.action.name, bind_parameters(request)))
        name = request.action.name
        target = self.check(request, approved=approved)
        if name == NO_ACTION:
            return ActionResult(name, target, False, "observe only: nothing to execute")
        assert target is not None  # check() refuses a missing target for every other action
        if name == RESTART_POD:
            result = await self._restart_pod(target)
        elif name == SCALE_DEPLOYMENT:
            result = await self._scale(request, target, approved=approved)
        elif name == CORDON_NODE:
            result = await self._cordon(target)
        elif name == CREATE_ALERT:
            result = await self._alert(request, target, summary or {})
        elif name == ROLLBACK_DEPLOYMENT:
            result = await self._rollback(request, target)
        else:
            raise ActionRefused(f"{name} refused: the executor has no implementation for this action")
        if result.changed:
            self.ledger.record_action(request, self.clock.now())
        log.info("Executed %s on %s: %s", name, target.key(), result.message)
        return result

    # -- actions ---------------------------------------------------------------------------
    async def _restart_pod(self, target: ObjectRef) -> ActionResult:
        pod = await self.kube.get_pod(target.namespace, target.name)
        if pod is None:
            return ActionResult(RESTART_POD, target, False, f"pod {target.key()} is already gone")
        meta = pod.get("metadata") or {}
        if target.uid and meta.get("uid") != target.uid:
            return ActionResult(RESTART_POD, target, False, f"pod {target.key()} was already replaced")
        owner = controller_ref(pod)
        if owner is None:
            raise ActionRefused(
                f"restart_pod refused: pod {target.namespace}/{target.name} has no controller, "
                "deleting it would lose it"
            )
        if meta.get("deletionTimestamp"):
            return ActionResult(RESTART_POD, target, False, f"pod {target.key()} is already being deleted")
        try:
            deleted = await self.kube.delete(
                "v1", "pods", target.namespace, target.name, uid=str(meta.get("uid") or "") or None
            )
        except KubeError as exc:
            if exc.conflict:  # uid precondition failed: a new pod took the name
                return ActionResult(RESTART_POD, target, False, f"pod {target.key()} was already replaced")
            raise
        if not deleted:
            return ActionResult(RESTART_POD, target, False, f"pod {target.key()} is already gone")
        return ActionResult(
            RESTART_POD,
            target,
            True,
            f"deleted pod {target.namespace}/{target.name}; {owner.get('kind')} {owner.get('name')} recreates it",
        )

    async def _scale(self, request: ActionRequest, target: ObjectRef, *, approved: bool) -> ActionResult:
        replicas = int(request.action.parameters["replicas"])
        path = api_path("apps/v1", "deployments", target.namespace, target.name) + "/scale"
        try:
            scale = await self.kube.request("GET", path)
        except KubeError as exc:
            if exc.not_found:
                raise ActionRefused(
                    f"scale_deployment refused: deployment {target.namespace}/{target.name} does not exist"
                ) from None
            raise
        current = (scale.get("spec") or {}).get("replicas")
        if isinstance(current, int):
            # maxStep is judged against the live replica count, not the one seen at decision time.
            self.check(replace(request, current_replicas=current), approved=approved)
        if current == replicas:
            return ActionResult(
                SCALE_DEPLOYMENT, target, False, f"deployment {target.key()} already has {replicas} replicas"
            )
        await self.kube.patch(
            "apps/v1",
            "deployments",
            target.namespace,
            target.name,
            {"spec": {"replicas": replicas}},
            subresource="scale",
        )
        return ActionResult(
            SCALE_DEPLOYMENT,
            target,
            True,
            f"scaled deployment {target.namespace}/{target.name} from {current} to {replicas} replicas",
        )

    async def _rollback(self, request: ActionRequest, target: ObjectRef) -> ActionResult:
        params = request.action.parameters
        want_rs, want_rev = str(params.get("replicaset") or ""), str(params.get("revision") or "")
        deployment = await self.kube.get("apps/v1", "deployments", target.namespace, target.name)
        if deployment is None:
            raise ActionRefused(f"rollback_deployment refused: deployment {target.key()} does not exist")
        meta = deployment.get("metadata") or {}
        if target.uid and meta.get("uid") != target.uid:
            raise ActionRefused(f"rollback_deployment refused: deployment {target.key()} was replaced")
        selector = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        replicasets = await self.kube.list_objects(
            "apps/v1",
            "replicasets",
            target.namespace,
            label_selector=",".join(f"{k}={v}" for k, v in sorted(selector.items())) or None,
        )
        history = rollout.revisions(deployment, replicasets)
        if not history:
            raise ActionRefused(
                f"rollback_deployment refused: deployment {target.key()} has no rollout history"
            )
        current_template = rollout.without_hash((deployment.get("spec") or {}).get("template") or {})
        by_name = {r.replicaset: r for r in history}
        wanted = by_name.get(want_rs)
        if (
            wanted is not None
            and want_rev.isdigit()
            and wanted.number > int(want_rev)
            and rollout.without_hash(wanted.template) == current_template
        ):
            # Already rolled back: the controller gave that ReplicaSet a newer revision for the template.
            return ActionResult(
                ROLLBACK_DEPLOYMENT,
                target,
                False,
                f"deployment {target.key()} already runs the template of ReplicaSet {want_rs}",
            )
        previous = history[1] if len(history) > 1 else None
        if previous is None or previous.replicaset != want_rs or str(previous.number) != want_rev:
            now = f"{previous.replicaset} revision {previous.number}" if previous else "none"
            raise ActionRefused(
                f"rollback_deployment refused: the previous revision of {target.key()} is now {now}, "
                f"not the decided {want_rs} revision {want_rev}"
            )
        patch = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": meta.get("resourceVersion")},
            {"op": "replace", "path": "/spec/template", "value": rollout.without_hash(previous.template)},
        ]
        path = api_path("apps/v1", "deployments", target.namespace, target.name)
        try:
            await self.kube.request("PATCH", path, body=patch, content_type="application/json-patch+json")
        except KubeError as exc:
            if exc.status in (409, 422):  # the test op failed: someone changed the Deployment meanwhile
                raise ActionRefused(
                    f"rollback_deployment refused: deployment {target.key()} changed while rolling back; "
                    "nothing was changed"
                ) from None
            raise
        return ActionResult(
            ROLLBACK_DEPLOYMENT,
            target,
            True,
            f"rolled deployment {target.key()} back from revision {history[0].number} to revision "
            f"{previous.number} (ReplicaSet {previous.replicaset})",
        )

    async def _cordon(self, target: ObjectRef) -> ActionResult:
        node = await self.kube.get_node(target.name)
        if node is None:
            raise ActionRefused(f"cordon_node refused: node {target.name} does not exist")
        if (node.get("spec") or {}).get("unschedulable"):
            return ActionResult(CORDON_NODE, target, False, f"node {target.name} is already cordoned")
        await self.kube.patch("v1", "nodes", None, target.name, {"spec": {"unschedulable": True}})
        return ActionResult(CORDON_NODE, target, True, f"cordoned node {target.name}")

    async def _alert(
        self, request: ActionRequest, target: ObjectRef, summary: Mapping[str, Any]
    ) -> ActionResult:
        params = request.action.parameters
        severity = str(params.get("severity") or "warning")
        text = str(params.get("summary") or summary.get("summary") or f"sre-agent alert about {target.key()}")
        message = f"[{severity}] {' '.join(text.split())}"[:MAX_EVENT_MESSAGE]
        uid = target.uid
        if not uid:
            pod = await self.kube.get_pod(target.namespace, target.name)
            uid = str(((pod or {}).get("metadata") or {}).get("uid") or "")
        event = await self._post_event(target, uid, ALERT_REASON, message)
        if self.notifier is not None:
            details: dict[str, Any] = {
                "namespace": target.namespace,
                "pod": target.name,
                "node": request.node,
                "severity": severity,
                "summary": text,
                "action": CREATE_ALERT,
                **{k: v for k, v in summary.items() if v is not None},
            }
            details["severity"] = severity
            await self.notifier.notify(details)
        return ActionResult(CREATE_ALERT, target, True, f"posted Warning event {event} on {target.key()}")

    async def _post_event(self, target: ObjectRef, uid: str, reason: str, message: str) -> str:
        """A core/v1 Event on the target; the same alert again bumps `count` instead of adding one."""
        digest = hashlib.sha256(f"{uid}|{reason}|{message}".encode()).hexdigest()[:10]
        name = f"{target.name[:200]}.sre-agent-{digest}"
        namespace = target.namespace or "default"
        now = rfc3339(self.clock.now())
        involved: JSON = {"kind": target.kind, "name": target.name, "apiVersion": target.api_version}
        if target.namespace:
            involved["namespace"] = target.namespace
        if uid:
            involved["uid"] = uid
        body: JSON = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": "Warning",
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": self.component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.kube.create("v1", "events", namespace, body)
        except KubeError as exc:
            if not exc.conflict:
                raise
            existing = await self.kube.get("v1", "events", namespace, name) or {}
            count = existing.get("count")
            await self.kube.patch(
                "v1",
                "events",
                namespace,
                name,
                {"count": (count if isinstance(count, int) else 1) + 1, "lastTimestamp": now},
            )
        return f"{namespace}/{name}"
