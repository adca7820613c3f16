"""The live agent: what happens to a pod, node or AgentDecision event, as plain async methods.

Built once by `operator.app` and handed to the kopf handlers through `memo`; every handler
is one call into this object. Nothing here knows kopf, so it is the same code whatever
delivers the events.

- `on_pod`: cheap symptom check of the pod body -> intake (dedupe, group per workload,
  cooldown) -> for the first pod of a group only: gather -> `Pipeline.decide` (rules or LLM,
  the same pipeline replay runs) -> record an AgentDecision with the redacted incident ->
  execute at once when the policy allows it, else wait for approval (or record it blocked).
- `on_node`: NotReady / pressure -> log and gauge; pods of a NotReady node are decided as
  NodeNotReady incidents.
- `on_decision`: `spec.approved` true on a pending decision -> re-check (not expired, target
  still there and unhealthy) -> Approved -> Executing -> Executed/Failed, each step a
  resourceVersion-guarded status write, so a re-delivered event or a second replica can never
  execute twice; false -> Rejected.
- `sweep`: pending decisions past `spec.expiresAt` -> Expired; decisions older than the
  retention -> deleted. `resync`: every pod again, for symptoms that appear with time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sre_agent.adapters.kube.capture import redacted_incident
from sre_agent.adapters.kube.client import KubeClient, KubeError
from sre_agent.adapters.kube.decisions import (
    DecisionFormatError,
    DecisionStore,
    Phase,
    RecordedDecision,
)
from sre_agent.adapters.kube.executor import ActionRefused, Executor
from sre_agent.adapters.kube.gatherer import Gatherer
from sre_agent.core.intake import Admission, Intake, Verdict
from sre_agent.core.pipeline import Pipeline
from sre_agent.core.policy import ActionLedger, action_target
from sre_agent.core.reasoning import Clock
from sre_agent.core.symptoms import Thresholds, detect, node_is_not_ready, parse_time
from sre_agent.domain import CORDON_NODE, JSON, SCALE_DEPLOYMENT, Decision, Symptom
from sre_agent.operator.metrics import Metrics

log = logging.getLogger("sre_agent.operator")

PRESSURE_CONDITIONS = ("MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable")


def _key(obj: JSON) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name', '')}" if ns else str(meta.get("name", ""))


def node_problems(node: JSON) -> list[str]:
    """NotReady and the pressure conditions a node reports (`[]` when it is fine)."""
    problems = ["NotReady"] if node_is_not_ready(node) else []
    for cond in (node.get("status") or {}).get("conditions") or []:
        if (
            isinstance(cond, dict)
            and cond.get("type") in PRESSURE_CONDITIONS
            and cond.get("status") == "True"
        ):
            problems.append(str(cond["type"]))
    return problems


@dataclass(frozen=True)
class Tuning:
    """The knobs of the service (from Settings)."""

    decision_ttl_seconds: float = 3600
    retention_seconds: float = 7 * 24 * 3600
    namespaces: tuple[str, ...] = ()
    thresholds: Thresholds = field(default_factory=Thresholds)
    concurrency: int = 4
    identity: str = "sre-agent"


class AgentService:
    def __init__(
        self,
        *,
        kube: KubeClient,
        clock: Clock,
        pipeline: Pipeline,
        gatherer: Gatherer,
        store: DecisionStore,
        executor: Executor,
        intake: Intake,
        ledger: ActionLedger,
        metrics: Metrics,
        tuning: Tuning,
    ) -> None:
        self.kube = kube
        self.clock = clock
        self.pipeline = pipeline
        self.gatherer = gatherer
        self.store = store
        self.executor = executor
        self.intake = intake
        self.ledger = ledger
        self.metrics = metrics
        self.tuning = tuning
        self._slots = asyncio.Semaphore(tuning.concurrency)
        self._bad_nodes: dict[str, JSON] = {}  # name -> node body, for nodes NotReady now
        self._node_problems: dict[str, tuple[str, ...]] = {}
        self._warned: set[str] = set()  # malformed decisions already reported
        self._in_flight: set[str] = set()  # decisions this process is executing right now
        self._executing_seen: set[str] = set()  # Executing (and not ours) at the previous sweep

    # ------------------------------------------------------------------ start-up
    async def start(self) -> None:
        """Rebuild the action ledger from executed decisions, so cooldowns survive restarts."""
        try:
            objects = await self._decision_objects()
        except KubeError as exc:
            log.warning("Could not list AgentDecisions to rebuild the action ledger: %s", exc)
            return
        restored = 0
        for obj in objects:
            if not self._watched((obj.get("metadata") or {}).get("namespace")):
                continue
            try:
                rec = RecordedDecision.from_object(obj)
            except DecisionFormatError:
                continue
            executed_at = parse_time((obj.get("status") or {}).get("executedAt"))
            if rec.phase != Phase.EXECUTED or executed_at is None:
                continue
            target = action_target(rec.request())
            if target is not None:
                self.ledger.record(rec.action.name, target, executed_at)
                restored += 1
        log.info("Action ledger rebuilt from %d executed decision(s)", restored)

    def _watched(self, namespace: object) -> bool:
        return not self.tuning.namespaces or namespace in self.tuning.namespaces

    # ------------------------------------------------------------------ pods
    def symptom_of(self, pod: JSON, node: JSON | None = None) -> Symptom:
        if node is None:
            node = self._bad_nodes.get(str((pod.get("spec") or {}).get("nodeName") or ""))
        return detect(pod, (), node, self.clock.now(), self.tuning.thresholds)

    async def on_pod(self, pod: JSON, node: JSON | None = None) -> Decision | None:
        """One pod event (or re-check). Returns the decision made, if this pod was decided."""
        if not self._watched((pod.get("metadata") or {}).get("namespace")):
            return None
        if (pod.get("metadata") or {}).get("deletionTimestamp") and node is None:
            node = self._bad_nodes.get(str((pod.get("spec") or {}).get("nodeName") or ""))
            if node is None:
                return None  # an ordinary deletion in progress, not a stuck pod
        symptom = self.symptom_of(pod, node)
        if symptom == Symptom.HEALTHY:
            return None
        admission = self.intake.offer(pod, symptom)
        if admission.verdict in (Verdict.DECIDE, Verdict.ATTACH):
            self.metrics.incidents.labels(symptom.value).inc()
        if admission.verdict == Verdict.ATTACH:
            self.metrics.grouped.labels(symptom.value).inc()
            log.info(
                "Pod %s (%s) joins incident %s (%d pods)",
                _key(pod),
                symptom.value,
                admission.group.key,
                admission.group.size,
            )
        if not admission.decide:
            return None
        log.info("Incident %s: deciding about pod %s", admission.group.key, _key(pod))
        async with self._slots:
            try:
                return await self._decide(pod, node, admission)
            except (KubeError, DecisionFormatError) as exc:
                self.metrics.decision_errors.inc()
                self.intake.forget(admission.group.key)
                log.warning("Could not decide about pod %s: %s", _key(pod), exc)
                return None

    async def _decide(self, pod: JSON, node: JSON | None, admission: Admission) -> Decision | None:
        ctx = await self.gatherer.gather(pod, node=node)
        decision = await self.pipeline.decide(ctx)
        if decision is None:
            self.intake.forget(admission.group.key)
            log.info("Pod %s is healthy after all; no decision", _key(pod))
            return None
        verdict = decision.verdict
        if verdict.outcome == "blocked":
            phase, message = Phase.BLOCKED, f"blocked by policy: {verdict.reason}"
        elif verdict.dry_run:
            phase, message = (
                Phase.BLOCKED,
                f"dry-run policy, not executed ({verdict.outcome}: {verdict.reason})",
            )
        elif verdict.outcome == "allowed":
            phase, message = Phase.APPROVED, f"auto-approved: {verdict.reason}"
        else:
            phase, message = Phase.PENDING_APPROVAL, f"waiting for approval: {verdict.reason}"
        if admission.group.size > 1:
            message += f" ({admission.group.size} pods of {admission.group.key.owner})"
        expires_at = self.clock.now() + timedelta(seconds=self.tuning.decision_ttl_seconds)
        incident = redacted_incident(ctx, decision.incident_id, None)
        rec, created = await self.store.record(
            decision, phase=phase, message=message, expires_at=expires_at, incident=incident
        )
        if not created:
            log.info(
                "Incident %s already has open decision %s (%s)",
                admission.group.key,
                rec.key,
                rec.phase.value if rec.phase else "unset",
            )
            return decision
        d = decision.diagnosis
        self.metrics.decisions.labels(d.source, d.action.name, phase.value).inc()
        if phase == Phase.BLOCKED:
            self.metrics.block(verdict.reason)
        log.info(
            "Decided %s for %s: %s, %s (confidence %.2f, source %s)%s",
            rec.key,
            _key(pod),
            d.category.value,
            d.action.name,
            d.confidence,
            d.source,
            f"; notes: {'; '.join(d.notes)}" if d.notes else "",
        )
        if phase == Phase.APPROVED:
            await self.execute(rec, approved=False)
        return decision

    # ------------------------------------------------------------------ nodes
    async def on_node(self, node: JSON) -> None:
        name = str((node.get("metadata") or {}).get("name") or "")
        problems = tuple(node_problems(node))
        before = self._node_problems.get(name, ())
        if problems != before:
            if problems:
                log.warning("Node %s: %s", name, ", ".join(problems))
                self._node_problems[name] = problems
            else:
                log.info("Node %s is healthy again", name)
                self._node_problems.pop(name, None)
            self._refresh_node_gauge()
        if "NotReady" not in problems:
            self._bad_nodes.pop(name, None)
            return
        newly = name not in self._bad_nodes
        self._bad_nodes[name] = node
        if newly:
            await self._pods_of_node(node)

    async def forget_node(self, name: str) -> None:
        self._bad_nodes.pop(name, None)
        if self._node_problems.pop(name, None):
            self._refresh_node_gauge()

    def _refresh_node_gauge(self) -> None:
        counts: dict[str, int] = {}
        for problems in self._node_problems.values():
            for problem in problems:
                counts[problem] = counts.get(problem, 0) + 1
        for condition in ("NotReady", *PRESSURE_CONDITIONS):
            self.metrics.nodes_unhealthy.labels(condition).set(counts.get(condition, 0))

    async def _pods_of_node(self, node: JSON) -> None:
        name = str((node.get("metadata") or {}).get("name") or "")
        try:
            pods = await self.kube.list_objects("v1", "pods", None, field_selector=f"spec.nodeName={name}")
        except KubeError as exc:
            log.warning("Could not list the pods of NotReady node %s: %s", name, exc)
            return
        await asyncio.gather(*(self.on_pod(p, node) for p in pods))

    # ------------------------------------------------------------------ decisions
    async def on_decision(self, obj: JSON) -> None:
        """An AgentDecision was created or changed: act on approval, rejection or a lost execution."""
        meta = obj.get("metadata") or {}
        if meta.get("deletionTimestamp") or not self._watched(meta.get("namespace")):
            return
        try:
            rec = RecordedDecision.from_object(obj)
        except DecisionFormatError as exc:
            marker = f"{meta.get('uid')}/{meta.get('resourceVersion')}"
            if marker not in self._warned:
                self._warned.add(marker)
                log.warning("Ignoring AgentDecision: %s", exc)
            return
        if rec.phase == Phase.PENDING_APPROVAL:
            if rec.approved is True:
                await self._approved(rec, obj)
            elif rec.approved is False and await self._move(
                rec, Phase.REJECTED, "rejected: spec.approved is false, nothing executed"
            ):
                log.info("AgentDecision %s rejected; nothing executed", rec.key)
        elif rec.phase == Phase.APPROVED:
            # Approved but not yet executing: this replica (or a previous one) stopped in between.
            await self.execute(rec, approved=rec.approved is True)

    async def _approved(self, rec: RecordedDecision, obj: JSON) -> None:
        now = self.clock.now()
        if rec.expires_at is not None and now >= rec.expires_at:
            await self._move(rec, Phase.EXPIRED, f"approved after it expired at {rec.expires_at.isoformat()}")
            return
        try:
            stale = await self._stale_reason(rec)
        except KubeError as exc:
            log.warning("AgentDecision %s: cannot re-check the target yet: %s", rec.key, exc)
            return  # the next event or sweep retries
        if stale:
            log.info("AgentDecision %s approved but not executed: %s", rec.key, stale)
            await self._move(rec, Phase.EXPIRED, f"not executed: {stale}")
            return
        approved = await self.store.transition(
            rec, Phase.APPROVED, "approved; executing", expect={Phase.PENDING_APPROVAL}
        )
        if approved is None:
            return
        self.metrics.transitions.labels(Phase.APPROVED.value).inc()
        await self.execute(approved, approved=True)

    async def _stale_reason(self, rec: RecordedDecision) -> str:
        """Why an approved decision no longer applies ("" when it still does)."""
        if rec.action.name == CORDON_NODE:
            node = await self.kube.get_node(rec.node) if rec.node else None
            if node is None:
                return f"node {rec.node or '?'} no longer exists"
            if not node_problems(node):
                return f"node {rec.node} is healthy again"
            return ""
        if rec.action.name == SCALE_DEPLOYMENT and rec.owner is not None:
            owner = await self.kube.get_workload(
                rec.owner.api_version, rec.owner.kind, rec.owner.namespace, rec.owner.name
            )
            if owner is None:
                return f"{rec.owner.kind} {rec.owner.namespace}/{rec.owner.name} no longer exists"
        if rec.target.kind != "Pod":
            return ""
        pod = await self.kube.get_pod(rec.target.namespace, rec.target.name)
        if pod is None or (rec.target.uid and (pod.get("metadata") or {}).get("uid") != rec.target.uid):
            if rec.action.name == SCALE_DEPLOYMENT:
                return ""  # the deployment still exists; its pods come and go
            return f"pod {rec.target.namespace}/{rec.target.name} no longer exists"
        node_name = str((pod.get("spec") or {}).get("nodeName") or "")
        node = await self.kube.get_node(node_name) if node_name else None
        events = await self.kube.events_for(rec.target.namespace, str(pod["metadata"].get("uid") or ""))
        symptom = detect(pod, events, node, self.clock.now(), self.tuning.thresholds)
        if symptom == Symptom.HEALTHY:
            return f"pod {rec.target.namespace}/{rec.target.name} is healthy now"
        return ""

    async def execute(self, rec: RecordedDecision, *, approved: bool) -> RecordedDecision | None:
        """Approved -> Executing -> Executed / Failed; the first step is the once-only gate."""
        running = await self.store.transition(
            rec, Phase.EXECUTING, f"executing {rec.action.name}", expect={Phase.APPROVED}
        )
        if running is None:
            return None  # another event, or another replica, got there first
        self.metrics.transitions.labels(Phase.EXECUTING.value).inc()
        action = rec.action.name
        summary = {
            "symptom": rec.symptom.value,
            "category": rec.category.value,
            "decision": rec.name,
        }
        self._in_flight.add(rec.key)
        try:
            result = await self.executor.execute_decision(running, approved=approved, summary=summary)
        except ActionRefused as exc:
            self.metrics.block(str(exc))
            log.warning("AgentDecision %s: %s refused: %s", rec.key, action, exc)
            return await self._move(running, Phase.FAILED, f"refused: {exc}", expect=Phase.EXECUTING)
        except KubeError as exc:
            self.metrics.action_failures.labels(action).inc()
            log.warning("AgentDecision %s: %s failed: %s", rec.key, action, exc)
            return await self._move(running, Phase.FAILED, f"{action} failed: {exc}", expect=Phase.EXECUTING)
        finally:
            self._in_flight.discard(rec.key)
        self.metrics.executed.labels(action).inc()
        done = await self.store.transition(
            running,
            Phase.EXECUTED,
            result.message,
            expect={Phase.EXECUTING},
            executed_by=self.tuning.identity,
        )
        if done is not None:
            self.metrics.transitions.labels(Phase.EXECUTED.value).inc()
            log.info("AgentDecision %s executed: %s", rec.key, result.message)
        return done

    async def _move(
        self, rec: RecordedDecision, to: Phase, message: str, *, expect: Phase = Phase.PENDING_APPROVAL
    ) -> RecordedDecision | None:
        moved = await self.store.transition(rec, to, message, expect={expect})
        if moved is not None:
            self.metrics.transitions.labels(to.value).inc()
        return moved

    # ------------------------------------------------------------------ periodic work
    async def sweep(self) -> None:
        """Expire pending decisions past spec.expiresAt; delete decisions older than the retention."""
        now = self.clock.now()
        retention = (
            timedelta(seconds=self.tuning.retention_seconds) if self.tuning.retention_seconds else None
        )
        executing_now: set[str] = set()
        for obj in await self._decision_objects():
            try:
                rec = RecordedDecision.from_object(obj)
            except DecisionFormatError:
                continue
            if rec.phase == Phase.EXECUTING and rec.key not in self._in_flight:
                # Left Executing by an operator that stopped mid-action. Whether the action took
                # effect is unknown, so it is never retried blindly: it fails, for a human to look at.
                executing_now.add(rec.key)
                if rec.key in self._executing_seen and await self._move(
                    rec,
                    Phase.FAILED,
                    "interrupted: the operator stopped while executing; not retried, check the target",
                    expect=Phase.EXECUTING,
                ):
                    log.warning("AgentDecision %s was left Executing; marked Failed", rec.key)
                continue
            old = retention is not None and rec.created_at is not None and now - rec.created_at > retention
            if old and rec.phase not in (Phase.APPROVED, Phase.EXECUTING):
                await self.store.delete(rec.namespace, rec.name)
                log.info("Deleted AgentDecision %s (older than the retention)", rec.key)
                continue
            due = rec.phase == Phase.PENDING_APPROVAL and rec.expires_at is not None and now >= rec.expires_at
            if due and await self._move(rec, Phase.EXPIRED, f"nobody approved it before {rec.expires_at}"):
                log.info("AgentDecision %s expired", rec.key)
        self._executing_seen = executing_now

    async def _decision_objects(self) -> list[JSON]:
        if not self.tuning.namespaces:
            return await self.store.list_objects(None)
        out: list[JSON] = []
        for ns in self.tuning.namespaces:
            out.extend(await self.store.list_objects(ns))
        return out

    async def resync(self) -> None:
        """Re-check every pod (ProbeFailure and HighRestarts appear with time, without an event)."""
        namespaces: list[str | None] = list(self.tuning.namespaces) or [None]
        for ns in namespaces:
            for pod in await self.kube.list_objects("v1", "pods", ns):
                await self.on_pod(pod)


async def every(
    seconds: float, work: Callable[[], Awaitable[None]], what: str, gate: Callable[[], Awaitable[bool]]
) -> None:
    """Run `work` every `seconds` while `gate()` says this replica is the active one; never raise."""
    while True:
        await asyncio.sleep(seconds)
        try:
            if await gate():
                await work()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s failed: %s: %s", what, type(exc).__name__, exc)
