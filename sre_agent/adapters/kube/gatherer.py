"""Live context gatherer: builds the `IncidentContext` of one pod from the API server.

Fetches, concurrently: the pod's Events (field selector on involvedObject.uid), current
and previous logs of every container (tailLines and limitBytes bounded; a 400 for
previous logs of a container that never restarted is normal), the Node, node and pod
metrics from metrics.k8s.io when that API is served, and the owner chain
Pod -> ReplicaSet -> Deployment (or StatefulSet, DaemonSet, Job), returning the top
controller with the ReplicaSet's rollout revision noted on it. Every API failure is
logged in one line and the context goes on with what it has: gathering never fails.
`gather_workload` builds the context of a failing Deployment or Job the same way, around a
representative pod when there is one.

The live counterpart of `adapters.recorded` (incident files). Called by the operator's
pod intake before `Pipeline.decide`, by the decision handlers to re-check a pod before
executing an approved action, and by `capture`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sre_agent.adapters.kube.client import KubeClient, KubeError
from sre_agent.core import dependencies, rollout
from sre_agent.core.owners import controller_ref
from sre_agent.core.reasoning import Clock
from sre_agent.domain import JSON, IncidentContext

log = logging.getLogger("sre_agent.gatherer")

T = TypeVar("T")

# Annotations the gatherer adds to the owner object it returns (never written to the cluster).
ROLLOUT_REPLICASET = "sre.agentops.dev/replicaset"
ROLLOUT_REVISION = "sre.agentops.dev/replicaset-revision"
REVISION = "deployment.kubernetes.io/revision"
MAX_OWNER_DEPTH = 4


@dataclass(frozen=True)
class GatherLimits:
    tail_lines: int = 200
    limit_bytes: int = 64 * 1024
    log_timeout_seconds: float = 5.0
    max_events: int = 100
    # Events read for symptom detection (ProbeFailure, FailedMount): at most once per pod per interval.
    detection_events_interval_seconds: float = 30.0
    detection_events_pods: int = 5000  # pods whose last read is remembered (oldest dropped first)


def strip_managed_fields(obj: JSON) -> JSON:
    """A shallow copy without metadata.managedFields (noise for diagnosis and incident files)."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or "managedFields" not in meta:
        return obj
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


def _key(pod: JSON) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


class Gatherer:
    """Collects the evidence of one pod. One instance per process; stateless between calls."""

    def __init__(self, kube: KubeClient, clock: Clock, limits: GatherLimits | None = None) -> None:
        self.kube = kube
        self.clock = clock
        self.limits = limits or GatherLimits()
        self._metrics_served: bool | None = None  # learnt on first use
        self._detection_events: OrderedDict[str, tuple[datetime, list[JSON]]] = OrderedDict()
        self.detection_event_reads = 0  # API calls made by events_for_detection (for tests and logs)

    async def _safe(self, what: str, pod: JSON, call: Callable[[], Awaitable[T]], default: T) -> T:
        try:
            return await call()
        except KubeError as exc:
            log.warning("Cannot read %s for pod %s: %s", what, _key(pod), exc)
        except Exception as exc:  # never let one source sink the whole context
            log.warning("Cannot read %s for pod %s: %s: %s", what, _key(pod), type(exc).__name__, exc)
        return default

    async def gather(self, pod: JSON, *, node: JSON | None = None) -> IncidentContext:
        """The full context of `pod` (the object as the watch delivered it, or freshly read)."""
        meta = pod.get("metadata") or {}
        namespace = str(meta.get("namespace") or "")
        name = str(meta.get("name") or "")
        node_name = str((pod.get("spec") or {}).get("nodeName") or "")
        events_t = self.events(pod)
        logs_t = self.logs(pod)
        node_t = self._node(pod, node_name, node)
        owner_t = self.owner(pod)
        node_metrics_t = self._metrics(pod, "nodes", None, node_name)
        pod_metrics_t = self._metrics(pod, "pods", namespace, name)
        events, logs, node_obj, owner, node_metrics, pod_metrics = await asyncio.gather(
            events_t, logs_t, node_t, owner_t, node_metrics_t, pod_metrics_t
        )
        history, deps, claims = await asyncio.gather(
            self.rollout_history(pod, owner), self.dependencies(pod, events, logs), self.claims(pod)
        )
        return IncidentContext(
            pod=strip_managed_fields(pod),
            events=tuple(events),
            logs=logs,
            owner=owner,
            node=node_obj,
            node_metrics=node_metrics,
            pod_metrics=pod_metrics,
            related=(*history, *deps, *claims),
            captured_at=self.clock.now(),
            incident_id=f"{namespace}-{name}",
        )

    async def gather_workload(self, workload: JSON) -> IncidentContext:
        """The context of a failing workload (a Deployment past its progress deadline, a failed Job):
        the workload as owner; its Events and those of the Deployment's newest ReplicaSet (a
        ResourceQuota's FailedCreate); the ReplicaSets (rollout history); and a representative pod,
        gathered like any pod (status, Events, logs, node, dependencies): the newest failed pod of
        the Job, the least ready pod of the newest ReplicaSet. No pod: `pod` is `{}`."""
        meta = workload.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        kind = str(workload.get("kind") or "")
        owner = _as_kind(strip_managed_fields(workload), str(workload.get("apiVersion") or ""), kind)
        history = await self.rollout_history(workload, owner) if kind == "Deployment" else []
        newest = history[0] if history else None
        representative = await self._representative(workload, newest)
        sources = [workload] + ([newest] if newest is not None else [])
        own_events = [e for found in await asyncio.gather(*(self.events(o) for o in sources)) for e in found]
        events: list[JSON] = list(own_events)
        logs: dict[str, dict[str, str]] = {}
        node_obj: JSON | None = None
        deps: list[JSON] = []
        if representative is not None:
            node_name = str((representative.get("spec") or {}).get("nodeName") or "")
            pod_events, logs, node_obj = await asyncio.gather(
                self.events(representative),
                self.logs(representative),
                self._node(representative, node_name, None),
            )
            events.extend(pod_events)
            deps = await self.dependencies(representative, events, logs)
        events.sort(key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
        return IncidentContext(
            pod=strip_managed_fields(representative) if representative is not None else {},
            events=tuple(events[-self.limits.max_events :]),
            logs=logs,
            owner=owner,
            node=node_obj,
            related=(*history, *deps),
            captured_at=self.clock.now(),
            incident_id=f"{namespace}-{name}",
        )

    async def _representative(self, workload: JSON, newest: JSON | None) -> JSON | None:
        """The pod that shows the workload's failure best, or None (e.g. a quota let none be created)."""
        meta = workload.get("metadata") or {}
        namespace = str(meta.get("namespace") or "")
        if workload.get("kind") == "Job":
            match = ((workload.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            if not isinstance(match, dict) or not match:
                match = {"batch.kubernetes.io/controller-uid": str(meta.get("uid") or "")}
            selector = ",".join(f"{k}={v}" for k, v in sorted(match.items()))
            rank = _failed_last
        elif newest is not None:
            template_hash = str(
                ((newest.get("metadata") or {}).get("labels") or {}).get(rollout.TEMPLATE_HASH) or ""
            )
            match = ((workload.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            if not template_hash or not isinstance(match, dict):
                return None
            labels = {**match, rollout.TEMPLATE_HASH: template_hash}
            selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
            rank = _unready_last
        else:
            return None

        async def call() -> list[JSON]:
            return await self.kube.list_objects("v1", "pods", namespace, label_selector=selector, limit=50)

        none: list[JSON] = []
        pods = await self._safe("pods", workload, call, none)
        if not pods:
            return None
        chosen = max(pods, key=rank)
        return _as_kind(chosen, "v1", "Pod")

    async def events(self, pod: JSON) -> list[JSON]:
        meta = pod.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        if not uid:
            return []

        async def call() -> list[JSON]:
            found = await self.kube.events_for(str(meta.get("namespace") or ""), uid, self.limits.max_events)
            found.sort(key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
            return [strip_managed_fields(e) for e in found[-self.limits.max_events :]]

        return await self._safe("events", pod, call, [])

    async def events_for_detection(self, pod: JSON) -> list[JSON]:
        """The pod's Events for symptom detection, read from the API at most once per pod per interval.

        The operator calls this only for pods that may be ProbeFailure or FailedMount
        (`core.symptoms.needs_events`); within the interval the previous answer is reused, so a
        pod that changes often costs one list call per interval, whatever its event rate.
        """
        uid = str((pod.get("metadata") or {}).get("uid") or "")
        if not uid:
            return []
        now = self.clock.now()
        interval = timedelta(seconds=self.limits.detection_events_interval_seconds)
        cached = self._detection_events.get(uid)
        if cached is not None and now - cached[0] < interval:
            return cached[1]
        self.detection_event_reads += 1
        events = await self.events(pod)
        self._detection_events[uid] = (now, events)
        self._detection_events.move_to_end(uid)
        while len(self._detection_events) > self.limits.detection_events_pods:
            self._detection_events.popitem(last=False)
        return events

    async def logs(self, pod: JSON) -> dict[str, dict[str, str]]:
        """Current and (when the container restarted) previous logs per container."""
        status = pod.get("status") or {}
        statuses = [
            s
            for key in ("initContainerStatuses", "containerStatuses")
            for s in status.get(key) or []
            if isinstance(s, dict) and s.get("name")
        ]
        jobs: list[tuple[str, str, Awaitable[str | None]]] = []
        for s in statuses:
            container = str(s["name"])
            state = s.get("state") or {}
            ever_ran = "running" in state or "terminated" in state or bool(s.get("restartCount"))
            if ever_ran:
                jobs.append((container, "current", self._log(pod, container, previous=False)))
            if (s.get("lastState") or {}).get("terminated") or s.get("restartCount"):
                jobs.append((container, "previous", self._log(pod, container, previous=True)))
        results = await asyncio.gather(*(job for _, _, job in jobs))
        out: dict[str, dict[str, str]] = {}
        for (container, stream, _), text in zip(jobs, results, strict=True):
            if text:
                out.setdefault(container, {})[stream] = text
        return out

    async def _log(self, pod: JSON, container: str, *, previous: bool) -> str | None:
        meta = pod.get("metadata") or {}
        try:
            return await self.kube.read_log(
                str(meta.get("namespace") or ""),
                str(meta.get("name") or ""),
                container,
                previous=previous,
                tail_lines=self.limits.tail_lines,
                limit_bytes=self.limits.limit_bytes,
                request_timeout=self.limits.log_timeout_seconds,
            )
        except KubeError as exc:
            stream = "previous" if previous else "current"
            if previous and exc.status == 400:  # no previous container: normal
                return None
            log.info("No %s logs for container %s of pod %s: %s", stream, container, _key(pod), exc)
            return None

    async def _node(self, pod: JSON, node_name: str, known: JSON | None) -> JSON | None:
        if known is not None or not node_name:
            return strip_managed_fields(known) if known is not None else None

        async def call() -> JSON | None:
            found = await self.kube.get_node(node_name)
            return strip_managed_fields(found) if found is not None else None

        return await self._safe(f"node {node_name}", pod, call, None)

    async def _metrics(self, pod: JSON, plural: str, namespace: str | None, name: str) -> JSON | None:
        """NodeMetrics/PodMetrics from metrics.k8s.io; None when not served or not found."""
        if not name or self._metrics_served is False:
            return None
        try:
            found = await self.kube.get("metrics.k8s.io/v1beta1", plural, namespace, name)
        except KubeError as exc:
            if exc.status in (404, 503) and self._metrics_served is None:
                log.info("metrics.k8s.io is not served (%s); metrics evidence disabled", exc.status)
                self._metrics_served = False
            else:
                log.info("Cannot read %s metrics for %s: %s", plural, name, exc)
            return None
        self._metrics_served = True if found is not None else self._metrics_served
        return strip_managed_fields(found) if found is not None else None

    async def owner(self, pod: JSON) -> JSON | None:
        """The top controller of the pod (Deployment, StatefulSet, DaemonSet, Job), or None."""
        namespace = str((pod.get("metadata") or {}).get("namespace") or "")
        current: JSON = pod
        top: JSON | None = None
        replicaset: JSON | None = None
        for _ in range(MAX_OWNER_DEPTH):
            ref = controller_ref(current)
            if ref is None:
                break
            kind, api_version, name = str(ref.get("kind")), str(ref.get("apiVersion")), str(ref.get("name"))

            async def call(av: str = api_version, k: str = kind, n: str = name) -> JSON | None:
                return await self.kube.get_workload(av, k, namespace, n)

            found = await self._safe(f"owner {kind}/{name}", pod, call, None)
            if found is None:
                break
            found.setdefault("kind", kind)
            found.setdefault("apiVersion", api_version)
            if kind == "ReplicaSet":
                replicaset = found
            top = found
            if kind == "Job":  # a CronJob's Job is the controller that matters for the pod
                break
            current = found
        if top is None:
            return None
        top = strip_managed_fields(top)
        if replicaset is not None and top is not replicaset:
            top = _with_rollout(top, replicaset)
        return top

    async def rollout_history(self, pod: JSON, owner: JSON | None) -> list[JSON]:
        """The ReplicaSets of the pod's Deployment, newest revision first (at most MAX_REPLICASETS)."""
        if not owner or owner.get("kind") != "Deployment":
            return []
        meta = owner.get("metadata") or {}
        match = ((owner.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        if not isinstance(match, dict) or not match:
            return []
        selector = ",".join(f"{k}={v}" for k, v in sorted(match.items()))

        async def call() -> list[JSON]:
            found = await self.kube.list_objects(
                "apps/v1", "replicasets", str(meta.get("namespace") or ""), label_selector=selector
            )
            owned = [
                rs
                for rs in found
                if rollout.owned_by(rs, str(meta.get("uid") or ""), str(meta.get("name") or ""))
            ]
            owned.sort(key=_revision, reverse=True)
            return [
                _as_kind(strip_managed_fields(rs), "apps/v1", "ReplicaSet") for rs in owned[:MAX_REPLICASETS]
            ]

        return await self._safe(f"ReplicaSets of Deployment {meta.get('name')}", pod, call, [])

    async def dependencies(
        self, pod: JSON, events: list[JSON], logs: dict[str, dict[str, str]]
    ) -> list[JSON]:
        """Services the failure lines name (core.dependencies), their EndpointSlices and workloads."""
        namespace = str((pod.get("metadata") or {}).get("namespace") or "")
        lines = [str(e.get("message") or "") for e in events]
        for streams in logs.values():
            for text in streams.values():
                lines.extend(text.splitlines()[-MAX_DEPENDENCY_LINES:])
        hosts = dependencies.hosts_in(lines)
        if not hosts or not namespace:
            return []

        async def call() -> list[JSON]:
            services: list[JSON] = []
            for ns in dependencies.namespaces_to_read(hosts, namespace)[:MAX_DEPENDENCY_NAMESPACES]:
                found = await self.kube.list_objects("v1", "services", ns)
                services.extend(_as_kind(strip_managed_fields(s), "v1", "Service") for s in found)
            out: list[JSON] = []
            seen: set[tuple[str, str]] = set()
            for host in hosts:
                svc = dependencies.resolve(host, namespace, services)
                if svc is None:
                    continue
                meta = svc.get("metadata") or {}
                ns, name = str(meta.get("namespace") or namespace), str(meta.get("name") or "")
                if (ns, name) in seen:
                    continue
                seen.add((ns, name))
                out.append(svc)
                slices = await self.kube.list_objects(
                    "discovery.k8s.io/v1",
                    "endpointslices",
                    ns,
                    label_selector=f"{dependencies.SERVICE_NAME_LABEL}={name}",
                )
                out.extend(
                    _as_kind(strip_managed_fields(x), "discovery.k8s.io/v1", "EndpointSlice") for x in slices
                )
                if ns == namespace:  # another namespace's workloads are not this incident's to show
                    out.extend(await self._workloads_behind(svc, ns))
            return out

        return await self._safe("dependencies", pod, call, [])

    async def claims(self, pod: JSON) -> list[JSON]:
        """For a Pending pod: the PersistentVolumeClaims it mounts that are not Bound, and their Events
        (the provisioner's ProvisioningFailed, WaitForFirstConsumer, ...)."""
        meta = pod.get("metadata") or {}
        namespace = str(meta.get("namespace") or "")
        if (pod.get("status") or {}).get("phase") != "Pending" or not namespace:
            return []
        names = [
            str(v["persistentVolumeClaim"]["claimName"])
            for v in (pod.get("spec") or {}).get("volumes") or []
            if isinstance(v, dict)
            and isinstance(v.get("persistentVolumeClaim"), dict)
            and v["persistentVolumeClaim"].get("claimName")
        ][:MAX_CLAIMS]
        if not names:
            return []

        async def call() -> list[JSON]:
            out: list[JSON] = []
            for name in names:
                claim = await self.kube.get("v1", "persistentvolumeclaims", namespace, name)
                if claim is None or (claim.get("status") or {}).get("phase") == "Bound":
                    continue
                out.append(_as_kind(strip_managed_fields(claim), "v1", "PersistentVolumeClaim"))
                uid = str((claim.get("metadata") or {}).get("uid") or "")
                if uid:
                    found = await self.kube.events_for(namespace, uid, MAX_CLAIM_EVENTS)
                    out.extend(
                        _as_kind(strip_managed_fields(e), "v1", "Event") for e in found[-MAX_CLAIM_EVENTS:]
                    )
            return out

        return await self._safe("PersistentVolumeClaims", pod, call, [])

    async def _workloads_behind(self, service: JSON, namespace: str) -> list[JSON]:
        selector = (service.get("spec") or {}).get("selector")
        if not isinstance(selector, dict) or not selector:
            return []
        out: list[JSON] = []
        for kind, plural in (("Deployment", "deployments"), ("StatefulSet", "statefulsets")):
            for obj in await self.kube.list_objects("apps/v1", plural, namespace):
                labels = (((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels")
                if isinstance(labels, dict) and dependencies.selects(selector, labels):
                    out.append(_workload_summary(obj, kind))
        return out[:MAX_DEPENDENCY_WORKLOADS]


MAX_REPLICASETS = 5
MAX_DEPENDENCY_LINES = 200
MAX_DEPENDENCY_NAMESPACES = 3
MAX_DEPENDENCY_WORKLOADS = 3
MAX_CLAIMS = 4
MAX_CLAIM_EVENTS = 10


def _created(pod: JSON) -> str:
    return str((pod.get("metadata") or {}).get("creationTimestamp") or "")


def _failed_last(pod: JSON) -> tuple[bool, str]:
    """A Job's pods ranked so that the newest failed one comes last."""
    return (pod.get("status") or {}).get("phase") == "Failed", _created(pod)


def _unready_last(pod: JSON) -> tuple[bool, str]:
    """A ReplicaSet's pods ranked so that the newest pod that is not Ready comes last."""
    ready = any(
        isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )
    return not ready, _created(pod)


def _revision(rs: JSON) -> int:
    value = ((rs.get("metadata") or {}).get("annotations") or {}).get(REVISION)
    return int(value) if isinstance(value, str) and value.isdigit() and len(value) < 10 else -1


def _as_kind(obj: JSON, api_version: str, kind: str) -> JSON:
    """List items come without kind and apiVersion; incident files need them."""
    return {
        "apiVersion": api_version,
        "kind": kind,
        **{k: v for k, v in obj.items() if k not in ("kind", "apiVersion")},
    }


def _workload_summary(obj: JSON, kind: str) -> JSON:
    """Only what dependency tracing reads of a workload: names, replicas, selector, pod labels, status."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "labels", "generation") if k in meta},
        "spec": {
            "replicas": spec.get("replicas"),
            "selector": spec.get("selector"),
            "template": {"metadata": {"labels": template_labels}},
        },
        "status": obj.get("status") or {},
    }


def _with_rollout(owner: JSON, replicaset: JSON) -> JSON:
    """Note which ReplicaSet (and rollout revision) the pod belongs to on the owner."""
    meta: dict[str, Any] = dict(owner.get("metadata") or {})
    annotations = dict(meta.get("annotations") or {})
    rs_meta = replicaset.get("metadata") or {}
    annotations[ROLLOUT_REPLICASET] = str(rs_meta.get("name") or "")
    revision = (rs_meta.get("annotations") or {}).get(REVISION)
    if revision is not None:
        annotations[ROLLOUT_REVISION] = str(revision)
    meta["annotations"] = annotations
    return {**owner, "metadata": meta}
