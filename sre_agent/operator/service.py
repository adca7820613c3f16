"""The live agent: what happens to a pod, node or AgentDecision event, as plain async methods.

Built once by `operator.app` and handed to the kopf handlers through `memo`; every handler
is one call into this object. Nothing here knows kopf, so it is the same code whatever
delivers the events.

- `on_pod`: cheap symptom check of the pod body (plus its Events, read at a bounded rate, for
  pods that may be ProbeFailure or FailedMount) -> intake (dedupe, group per workload and root
  cause, cooldown) -> decision memory (`core.lifecycle`: one open decision per workload and
  cause, closed ones suppress for the policy's time) -> for the first pod of a group only:
  gather -> `Pipeline.decide` (rules or LLM, the same pipeline replay runs) -> record an
  AgentDecision (deterministic name) with the redacted incident -> execute at once when the
  policy allows it, else wait for approval (announced by Events and the approval webhook), or
  record it blocked.
- `on_node`: NotReady / pressure -> log and gauge; pods of a NotReady node are decided as
  NodeNotReady incidents.
- `on_workload`: a Deployment past its progress deadline or a failed Job (`core.symptoms.
  workload_symptom`) -> the same intake, memory, pipeline and record, about the workload, around a
  representative pod (`Gatherer.gather_workload`); not when a decision about one of its pods is open.
- `on_decision`: `spec.approved` true on a pending decision -> re-check (not expired, target
  still there and unhealthy) -> Approved -> Executing -> Executed/Failed, each step a
  resourceVersion-guarded status write, so a re-delivered event or a second replica can never
  execute twice; false -> Rejected.
- `sweep`: pending decisions past `spec.expiresAt` -> Expired, decisions left Executing -> Failed
  (both from the open decisions the decision watch keeps); decisions older than the retention ->
  deleted (found by a metadata-only list, never the bodies); the pending gauges refreshed.
  `resync`: the pods that can still turn into an incident with time (not Ready, or a container
  waiting), from an index the pod watch keeps; one GET each, never a list of every pod.
- `rebuild`: the action ledger and the decision memory from the AgentDecisions, at start and
  whenever this replica becomes the active peer.

The rules (phases, expiry, staleness, suppression) live in `core.lifecycle`; this is I/O glue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sre_agent.adapters.kube.capture import redacted_incident
from sre_agent.adapters.kube.client import KubeClient, KubeError
from sre_agent.adapters.kube.decisions import (
    API_VERSION,
    KIND,
    PLURAL,
    DecisionFormatError,
    DecisionStore,
    RecordedDecision,
    rfc3339,
    without_incident,
)
from sre_agent.adapters.kube.executor import ActionRefused, Executor
from sre_agent.adapters.kube.gatherer import Gatherer
from sre_agent.adapters.notify import ApprovalWebhook, approval_text
from sre_agent.core.correlation import AFFECTED_ANNOTATION, Correlator, Group, annotations_for, dependency_key
from sre_agent.core.intake import Admission, Intake, Verdict
from sre_agent.core.lifecycle import (
    ANNOTATION_WORKLOAD,
    INTERRUPTED_MESSAGE,
    LABEL_WORKLOAD,
    OPEN_PHASES,
    Answer,
    DecisionMemory,
    MemoryKey,
    Observed,
    Phase,
    Recall,
    Remembered,
    SweepStep,
    cause_of,
    decision_name,
    expired,
    initial_phase,
    lookups_for,
    stale_reason,
    sweep_step,
)
from sre_agent.core.pipeline import Pipeline
from sre_agent.core.policy import ActionLedger
from sre_agent.core.reasoning import Clock
from sre_agent.core.symptoms import (
    Thresholds,
    detect,
    needs_events,
    node_is_not_ready,
    parse_time,
    recheck_at,
    settled,
    workload_symptom,
)
from sre_agent.domain import JSON, PENDING_EVENT_REASON, Decision, IncidentContext, ObjectRef, Symptom
from sre_agent.operator.metrics import Metrics

log = logging.getLogger("sre_agent.operator")

PRESSURE_CONDITIONS = ("MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable")
MAX_EVENT_MESSAGE = 1024
MAX_RECHECKS = 10_000  # pods waiting for a timed re-check
MAX_UNSETTLED = 50_000  # pods in the resync index (not Ready or waiting); beyond it the watch still sees them
# Symptoms a pod's Events can still outrank (ProbeFailure comes before them in the precedence).
_EVENTS_MAY_CHANGE = frozenset({Symptom.HEALTHY, Symptom.CRASH_LOOP, Symptom.HIGH_RESTARTS})


def _key(obj: JSON) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name', '')}" if ns else str(meta.get("name", ""))


def remembered(obj: JSON) -> tuple[MemoryKey, Remembered] | None:
    """What the decision memory keeps of an AgentDecision object (None: not one the memory knows)."""
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else None
    if not meta or not isinstance(meta.get("name"), str) or not isinstance(meta.get("namespace"), str):
        return None
    labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
    key = MemoryKey.from_labels(meta["namespace"], labels or {})
    if key is None:
        return None
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    try:  # labels are editable, spec.symptom is not (CRD rules): a relabelled cause is ignored
        if cause_of(Symptom(str(spec.get("symptom")))) != key.cause:
            return None
    except ValueError:
        return None
    status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
    assert isinstance(status, dict)
    try:
        phase: Phase | None = Phase(str(status.get("phase"))) if status.get("phase") else None
    except ValueError:
        return None
    created = parse_time(meta.get("creationTimestamp"))
    closed = parse_time(status.get("finishedAt")) if phase is not None and phase not in OPEN_PHASES else None
    return key, Remembered(meta["name"], phase, created, closed)


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
        memory: DecisionMemory,
        approval_webhook: ApprovalWebhook | None = None,
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
        self.memory = memory
        self.approval_webhook = approval_webhook
        self.correlator = Correlator()  # workloads failing on one dead dependency share its decision
        # One writer at a time for the affected-workloads annotation: concurrent joins must not let
        # an older, shorter list land after a newer one.
        self._affected_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(tuning.concurrency)
        self._ledger_stale = False  # the last rebuild failed: the next sweep tries again
        self._rechecks: dict[str, asyncio.Task[None]] = {}  # pod uid -> its scheduled re-check
        self._bad_nodes: dict[str, JSON] = {}  # name -> node body, for nodes NotReady now
        self._node_problems: dict[str, tuple[str, ...]] = {}
        self._warned: set[str] = set()  # malformed decisions already reported
        self._in_flight: set[str] = set()  # decisions this process is executing right now
        self._executing_seen: set[str] = set()  # Executing (and not ours) at the previous sweep
        # Decisions in an open phase (or none yet), without incidents, "ns/name" -> object: kept by
        # the decision watch and the rebuilds, so the sweep never lists decision bodies.
        self._open: dict[str, JSON] = {}
        # Pods the watch saw not Ready or waiting (uid -> namespace, name): what resync re-checks.
        # A pod leaves it when it is Ready again, deleted, or gone at the re-check.
        self._unsettled: dict[str, tuple[str, str]] = {}

    # ------------------------------------------------------------------ start-up / take-over
    async def start(self) -> None:
        """Rebuild the ledger and the decision memory, so cooldowns and suppression survive restarts."""
        await self.rebuild("start")

    async def rebuild(self, why: str = "this replica became the active peer") -> None:
        """The action ledger (cooldowns, rate limits) and the decision memory from the AgentDecisions.

        Called at start and whenever this replica takes over from another peer, which acted and
        decided meanwhile. Never raises: on an API error the next sweep tries again.
        """
        try:
            objects = await self._decision_objects()
        except KubeError as exc:
            self._ledger_stale = True
            log.warning("Could not list AgentDecisions to rebuild the ledger and memory (%s): %s", why, exc)
            return
        restored = self._rebuild_ledger(objects)
        remembered = self._rebuild_memory(objects)
        self._open.clear()
        for obj in objects:
            self._track_open(obj)
        log.info(
            "Rebuilt at %s: action ledger from %d executed decision(s), decision memory from %d decision(s)",
            why,
            restored,
            remembered,
        )

    def standing_by(self) -> None:
        """Another peer is active: its gauges count the pending decisions, not this replica's."""
        self.metrics.set_pending({}, 0)

    def _rebuild_ledger(self, objects: list[JSON]) -> int:
        self.ledger.entries.clear()
        restored = 0
        for obj in objects:
            try:
                rec = RecordedDecision.from_object(obj)
            except DecisionFormatError:
                continue
            executed_at = parse_time((obj.get("status") or {}).get("executedAt"))
            if rec.phase != Phase.EXECUTED or executed_at is None:
                continue
            self.ledger.record_action(rec.request(), executed_at)
            restored += 1
        self._ledger_stale = False
        return restored

    def _rebuild_memory(self, objects: list[JSON]) -> int:
        count = self.memory.replace_all(found for obj in objects if (found := remembered(obj)) is not None)
        for obj in objects:  # dependency groups (core.correlation) survive a restart
            self.correlator.restore(obj, self.clock.now())
        self._refresh_pending_gauge()
        return count

    def _refresh_pending_gauge(self) -> None:
        per_namespace, oldest = self.memory.pending(self.clock.now())
        self.metrics.set_pending(per_namespace, oldest)

    def _watched(self, namespace: object) -> bool:
        return not self.tuning.namespaces or namespace in self.tuning.namespaces

    # ------------------------------------------------------------------ pods
    def symptom_of(self, pod: JSON, node: JSON | None = None, events: tuple[JSON, ...] = ()) -> Symptom:
        if node is None:
            node = self._bad_nodes.get(str((pod.get("spec") or {}).get("nodeName") or ""))
        return detect(pod, events, node, self.clock.now(), self.tuning.thresholds)

    async def detect_live(self, pod: JSON, node: JSON | None = None) -> Symptom:
        """The same detector replay runs: the pod body first, then its Events for the pods that may
        be ProbeFailure or FailedMount (read at most once per pod per interval by the gatherer)."""
        symptom = self.symptom_of(pod, node)
        if symptom in _EVENTS_MAY_CHANGE and needs_events(pod, self.clock.now(), self.tuning.thresholds):
            events = tuple(await self.gatherer.events_for_detection(pod))
            symptom = self.symptom_of(pod, node, events)
        return symptom

    def _recheck_later(self, pod: JSON) -> None:
        """Look at the pod again when time alone may turn it into an incident (`recheck_at`)."""
        meta = pod.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        due = recheck_at(pod, self.clock.now(), self.tuning.thresholds)
        if due is None or not uid or uid in self._rechecks or len(self._rechecks) >= MAX_RECHECKS:
            return
        delay = (due - self.clock.now()).total_seconds() + 1
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")

        async def recheck() -> None:
            try:
                await asyncio.sleep(delay)
            finally:
                self._rechecks.pop(uid, None)  # from here on, on_pod may schedule the next one
            try:
                fresh = await self.kube.get_pod(namespace, name)
                if fresh is not None and (fresh.get("metadata") or {}).get("uid") == uid:
                    await self.on_pod(fresh)
            except KubeError as exc:
                log.info("Could not re-check pod %s/%s: %s", namespace, name, exc)

        self._rechecks[uid] = asyncio.get_running_loop().create_task(recheck())

    def _index(self, pod: JSON) -> None:
        meta = pod.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        if not uid:
            return
        if settled(pod):
            self._unsettled.pop(uid, None)
        elif uid in self._unsettled or len(self._unsettled) < MAX_UNSETTLED:
            self._unsettled[uid] = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))

    def forget_pod(self, pod: JSON) -> None:
        """The pod was deleted: drop what this process keeps about it."""
        uid = str((pod.get("metadata") or {}).get("uid") or "")
        self._unsettled.pop(uid, None)
        task = self._rechecks.pop(uid, None)
        if task is not None:
            task.cancel()

    async def on_pod(self, pod: JSON, node: JSON | None = None) -> Decision | None:
        """One pod event (or re-check). Returns the decision made, if this pod was decided."""
        if not self._watched((pod.get("metadata") or {}).get("namespace")):
            return None
        self._index(pod)
        if (pod.get("metadata") or {}).get("deletionTimestamp") and node is None:
            node = self._bad_nodes.get(str((pod.get("spec") or {}).get("nodeName") or ""))
            if node is None:
                return None  # an ordinary deletion in progress, not a stuck pod
        symptom = await self.detect_live(pod, node)
        if symptom == Symptom.HEALTHY:
            self._recheck_later(pod)
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
        return await self._decide_admitted(
            pod, symptom, admission, f"pod {_key(pod)}", lambda: self.gatherer.gather(pod, node=node)
        )

    async def _decide_admitted(
        self,
        subject: JSON,
        symptom: Symptom,
        admission: Admission,
        what: str,
        gather: Callable[[], Awaitable[IncidentContext]],
    ) -> Decision | None:
        """The first pod (or workload) of a group: the decision memory, then the cluster's decisions
        of the workload, may still say no; else gather and decide, within the concurrency bound."""
        key = self.memory_key(subject, admission)
        if not self._may_decide(subject, symptom, admission, self.memory.recall(key, self.clock.now())):
            return None
        log.info("Incident %s: deciding about %s", admission.group.key, what)
        async with self._slots:
            try:
                # The memory may lag behind another replica or an operator that just stopped: the
                # decisions of this workload, listed by label, are the authority.
                answer = await self._recall_from_cluster(key)
                if not self._may_decide(subject, symptom, admission, answer):
                    return None
                return await self._decide(subject, await gather(), admission, key, answer.sequence)
            except (KubeError, DecisionFormatError) as exc:
                self.metrics.decision_errors.inc()
                self.intake.forget(admission.group.key)
                log.warning("Could not decide about %s: %s", what, exc)
                return None

    # ------------------------------------------------------------------ workloads
    async def on_workload(self, workload: JSON) -> Decision | None:
        """A Deployment or Job event: past its progress deadline, or failed, with no pod decided for
        it, becomes a decision about the workload (same intake, memory, pipeline and record as pods)."""
        meta = workload.get("metadata") or {}
        if not self._watched(meta.get("namespace")) or meta.get("deletionTimestamp"):
            return None
        symptom = workload_symptom(workload, self.clock.now(), self.tuning.thresholds)
        if symptom == Symptom.HEALTHY:
            return None
        admission = self.intake.offer_workload(workload, symptom)
        if not admission.decide:
            return None
        self.metrics.incidents.labels(symptom.value).inc()
        what = f"{workload.get('kind')} {_key(workload)}"
        return await self._decide_admitted(
            workload, symptom, admission, what, lambda: self.gatherer.gather_workload(workload)
        )

    @staticmethod
    def memory_key(pod: JSON, admission: Admission) -> MemoryKey:
        namespace = str((pod.get("metadata") or {}).get("namespace") or "")
        return MemoryKey.of(namespace, str(admission.group.key.owner), admission.group.key.cause)

    def _may_decide(self, pod: JSON, symptom: Symptom, admission: Admission, answer: Answer) -> bool:
        if answer.recall == Recall.NEW:
            return True
        if answer.recall == Recall.OPEN:
            self.metrics.not_decided.labels("open").inc()
            log.info(
                "Pod %s (%s) joins open AgentDecision %s/%s (%s)",
                _key(pod),
                symptom.value,
                (pod.get("metadata") or {}).get("namespace"),
                answer.decision,
                admission.group.key,
            )
        else:
            self.metrics.not_decided.labels("suppressed").inc()
            log.info(
                "Pod %s (%s): no new decision until %s, suppressed by AgentDecision %s/%s",
                _key(pod),
                symptom.value,
                rfc3339(answer.until) if answer.until else "?",
                (pod.get("metadata") or {}).get("namespace"),
                answer.decision,
            )
        return False

    async def _recall_from_cluster(self, key: MemoryKey) -> Answer:
        """The decisions of this workload, every cause, listed by label: an open decision about one
        of its pods keeps a workload-level one from being made and the reverse (core.lifecycle)."""
        selector = f"{LABEL_WORKLOAD}={key.workload}"
        for obj in await self.kube.list_objects(API_VERSION, PLURAL, key.namespace, label_selector=selector):
            found = remembered(obj)
            if found is not None and not (obj.get("metadata") or {}).get("deletionTimestamp"):
                self.memory.observe(*found)
        return self.memory.recall(key, self.clock.now())

    async def _decide(
        self,
        pod: JSON,
        ctx: IncidentContext,
        admission: Admission,
        key: MemoryKey,
        sequence: int,
    ) -> Decision | None:
        name = decision_name(admission.group.key.owner.name, key, sequence)
        if await self._join_dependency(pod, ctx, admission, key, name):
            return None
        decision = await self.pipeline.decide(ctx)
        if decision is None:
            self.intake.forget(admission.group.key)
            log.info("Pod %s is healthy after all; no decision", _key(pod))
            return None
        if cause_of(decision.evidence.symptom) != key.cause:
            # The symptom changed since intake (or a workload's pod shows its own): the decision would
            # carry another cause than its labels; the pod watch decides the pod-level one.
            self.intake.forget(admission.group.key)
            log.info(
                "%s is %s now, not %s; no decision here",
                _key(pod),
                decision.evidence.symptom.value,
                key.cause.value,
            )
            return None
        verdict = decision.verdict
        phase, message = initial_phase(verdict)
        if admission.group.size > 1:
            message += f" ({admission.group.size} pods of {admission.group.key.owner})"
        now = self.clock.now()
        expires_at = now + timedelta(seconds=self.tuning.decision_ttl_seconds)
        incident = redacted_incident(ctx, decision.incident_id, None)
        owner = admission.group.key.owner
        rec, created = await self.store.record(
            decision,
            phase=phase,
            message=message,
            expires_at=expires_at,
            incident=incident,
            name=decision_name(owner.name, key, sequence),
            labels=key.labels(),
            annotations={
                ANNOTATION_WORKLOAD: str(owner)[:253],
                **annotations_for(decision.evidence, str(owner)),
            },
        )
        self.memory.observe(key, Remembered(rec.name, rec.phase, rec.created_at or now))
        if not created:
            log.info(
                "Incident %s already has decision %s (%s)",
                admission.group.key,
                rec.key,
                rec.phase.value if rec.phase else "unset",
            )
            return decision
        self._refresh_pending_gauge()
        group = self.correlator.recorded(key.namespace, rec.name, phase.value)
        if group is not None and len(group.workloads) > 1:  # others joined while it was decided
            await self._list_affected(key.namespace, group)
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
        elif phase == Phase.PENDING_APPROVAL:
            await self.announce(rec, decision, expires_at)
        return decision

    async def _join_dependency(
        self, pod: JSON, ctx: IncidentContext, admission: Admission, key: MemoryKey, name: str
    ) -> bool:
        """Join the open decision about the dead dependency this pod fails on (core.correlation):
        no LLM call, no new decision; the decision lists the workload. False: decide as usual (the
        decision about to be recorded, `name`, then opens the group for the next ones)."""
        symptom = self.pipeline.symptom_of(ctx)
        if symptom == Symptom.HEALTHY:
            return False
        dependency = dependency_key(self.pipeline.evidence_of(ctx, symptom))
        now = self.clock.now()
        owner = str(admission.group.key.owner)
        if not dependency:
            return False
        group = self.correlator.join(key.namespace, dependency, owner, now)
        if group is None:
            self.correlator.open(key.namespace, dependency, name, owner, now)
            return False
        if not await self._list_affected(key.namespace, group) and group.phase:
            return False  # the decision is gone: this workload gets its own
        self.memory.observe(key, Remembered(group.decision, Phase(group.phase) if group.phase else None, now))
        log.info(
            "Pod %s fails on %s like %d other workload(s): joins AgentDecision %s/%s",
            _key(pod),
            dependency,
            len(group.workloads) + group.more - 1,
            key.namespace,
            group.decision,
        )
        return True

    async def _list_affected(self, namespace: str, group: Group) -> bool:
        """Write the workloads of a dependency group on its decision; False when it does not exist."""
        try:
            async with self._affected_lock:  # the list as it is when written, never an older one
                patch = {"metadata": {"annotations": {AFFECTED_ANNOTATION: group.annotation()[:4000]}}}
                await self.kube.patch(API_VERSION, PLURAL, namespace, group.decision, patch)
        except KubeError as exc:
            if exc.not_found:  # not recorded yet (it is listed when it is), or deleted since
                return False
            log.warning("Could not list the affected workloads on %s/%s: %s", namespace, group.decision, exc)
        return True

    async def announce(self, rec: RecordedDecision, decision: Decision, expires_at: datetime) -> None:
        """Tell the approvers: an Event on the target and on the decision, and the approval webhook."""
        request = {
            "decision": rec.name,
            "namespace": rec.namespace,
            "kind": rec.target.kind,
            "target": rec.target.name,
            "symptom": rec.symptom.value,
            "category": rec.category.value,
            "action": rec.action.name,
            "confidence": rec.confidence,
            "diagnosis": decision.diagnosis.summary,
            "expiresAt": rfc3339(expires_at),
        }
        message = approval_text(request)[:MAX_EVENT_MESSAGE]
        itself = ObjectRef(KIND, rec.name, rec.namespace, uid=rec.uid, api_version=API_VERSION)
        for obj in (rec.target, itself):
            try:
                await self.executor._post_event(obj, obj.uid, PENDING_EVENT_REASON, message)
                self.metrics.notifications.labels("event", "sent").inc()
            except KubeError as exc:
                self.metrics.notifications.labels("event", "failed").inc()
                log.warning("Could not post a %s Event on %s: %s", PENDING_EVENT_REASON, obj.key(), exc)
        if self.approval_webhook is not None:
            delivered = await self.approval_webhook.announce(request)
            self.metrics.notifications.labels("webhook", "sent" if delivered else "failed").inc()

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
        self._track_open(obj)
        found = remembered(obj)
        if found is not None:
            self.memory.observe(*found)
            self._refresh_pending_gauge()
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

    def forget_decision(self, obj: JSON) -> None:
        """An AgentDecision was deleted: it neither blocks nor suppresses a new one any more."""
        self._open.pop(_key(obj), None)
        found = remembered(obj)
        if found is not None:
            self.memory.forget(found[0], found[1].name)
            self._refresh_pending_gauge()

    async def _approved(self, rec: RecordedDecision, obj: JSON) -> None:
        now = self.clock.now()
        if expired(rec.expires_at, now) and rec.expires_at is not None:
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
        """Why an approved decision no longer applies ("" when it still does): read, then ask the core."""
        look = lookups_for(rec.action.name, rec.target)
        node = await self.kube.get_node(rec.node) if look.node and rec.node else None
        owner_exists = True
        if look.owner and rec.owner is not None:
            owner = rec.owner
            owner_exists = (
                await self.kube.get_workload(owner.api_version, owner.kind, owner.namespace, owner.name)
                is not None
            )
        pod = pod_node = None
        events: tuple[JSON, ...] = ()
        if look.pod:
            pod = await self.kube.get_pod(rec.target.namespace, rec.target.name)
            uid = str(((pod or {}).get("metadata") or {}).get("uid") or "")
            if pod is not None and (not rec.target.uid or uid == rec.target.uid):
                node_name = str((pod.get("spec") or {}).get("nodeName") or "")
                pod_node = await self.kube.get_node(node_name) if node_name else None
                events = tuple(await self.kube.events_for(rec.target.namespace, uid))
        return stale_reason(
            action=rec.action.name,
            target=rec.target,
            node_name=rec.node,
            owner=rec.owner,
            observed=Observed(
                node=node, owner_exists=owner_exists, pod=pod, pod_node=pod_node, events=events
            ),
            node_problems=node_problems(node) if node is not None else (),
            now=self.clock.now(),
            thresholds=self.tuning.thresholds,
        )

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
        """Expire pending decisions past spec.expiresAt and fail decisions left Executing, from the
        open decisions the decision watch keeps (`_open`); delete decisions older than the
        retention, found by a metadata-only list (names and creation times: no spec, no incident),
        each read once just before it goes; refresh the pending gauges."""
        if self._ledger_stale:
            await self.rebuild("a sweep after a failed rebuild")
        now = self.clock.now()
        retention = (
            timedelta(seconds=self.tuning.retention_seconds) if self.tuning.retention_seconds else None
        )
        executing_now: set[str] = set()
        for obj in list(self._open.values()):
            await self._sweep_one(obj, now, retention, executing_now)
        if retention is not None:
            for ns in self.tuning.namespaces or (None,):
                async for meta in self.store.list_metadata(ns):
                    created = parse_time(meta.get("creationTimestamp"))
                    key = f"{meta.get('namespace')}/{meta.get('name')}"
                    if created is None or now - created <= retention or key in self._open:
                        continue
                    old = await self.store.get_object(str(meta.get("namespace")), str(meta.get("name")))
                    if old is not None:
                        await self._sweep_one(without_incident(old), now, retention, executing_now)
        self._executing_seen = executing_now
        self._refresh_pending_gauge()

    async def _sweep_one(
        self, obj: JSON, now: datetime, retention: timedelta | None, executing_now: set[str]
    ) -> None:
        try:
            rec = RecordedDecision.from_object(obj)
        except DecisionFormatError:
            return
        step = sweep_step(
            rec.phase,
            created_at=rec.created_at,
            expires_at=rec.expires_at,
            now=now,
            retention=retention,
            ours_in_flight=rec.key in self._in_flight,
            executing_last_sweep=rec.key in self._executing_seen,
        )
        if step == SweepStep.WATCH_EXECUTING:
            executing_now.add(rec.key)
        elif step == SweepStep.FAIL_INTERRUPTED:
            executing_now.add(rec.key)
            if await self._move(rec, Phase.FAILED, INTERRUPTED_MESSAGE, expect=Phase.EXECUTING):
                log.warning("AgentDecision %s was left Executing; marked Failed", rec.key)
        elif step == SweepStep.DELETE:
            await self.store.delete(rec.namespace, rec.name)
            self.forget_decision(obj)
            log.info("Deleted AgentDecision %s (older than the retention)", rec.key)
        elif step == SweepStep.EXPIRE and await self._move(
            rec, Phase.EXPIRED, f"nobody approved it before {rec.expires_at}"
        ):
            log.info("AgentDecision %s expired", rec.key)

    def _track_open(self, obj: JSON) -> None:
        """Keep the decisions the sweep may act on (open phases, or no phase yet), without incidents."""
        key = _key(obj)
        phase = (obj.get("status") or {}).get("phase") if isinstance(obj.get("status"), dict) else None
        if phase is None or phase in OPEN_PHASES:
            self._open[key] = without_incident(obj)
        else:
            self._open.pop(key, None)

    async def _decision_objects(self) -> list[JSON]:
        """Every AgentDecision without its incident, paginated (the sweep and rebuild need no incident)."""
        if not self.tuning.namespaces:
            return await self.store.list_lean(None)
        out: list[JSON] = []
        for ns in self.tuning.namespaces:
            out.extend(await self.store.list_lean(ns))
        return out

    async def resync(self) -> None:
        """Re-check the pods that are not Ready or have a container waiting (ProbeFailure and
        HighRestarts appear with time, without an event): one GET each from the index the pod
        watch keeps, so 10,000 healthy pods cost nothing here."""
        for uid, (namespace, name) in list(self._unsettled.items()):
            try:
                fresh = await self.kube.get_pod(namespace, name)
            except KubeError as exc:
                log.info("Could not re-check pod %s/%s: %s", namespace, name, exc)
                continue
            if fresh is None or (fresh.get("metadata") or {}).get("uid") != uid:
                self._unsettled.pop(uid, None)  # deleted, or replaced by a pod of the same name
                continue
            await self.on_pod(fresh)


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
