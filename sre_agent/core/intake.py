"""Incident intake: which unhealthy pods get a decision, and which join one already made.

Failing workloads (a Deployment past its progress deadline, a failed Job) come in through
`Intake.offer_workload()` and are grouped the same way, keyed by the workload (a CronJob's Job
by its CronJob) and their own cause.

Pure and clock-injected. The operator's pod and node watches call `Intake.offer()` for
every unhealthy pod they see, before any API call or LLM call. Pods are grouped per
owning workload and root cause (`core.lifecycle.Cause`: 20 crash-looping replicas of one
Deployment are one incident, and so are their later HighRestarts and OOMKilled),
or per node for NodeNotReady (every pod of a dead node is one incident): the first pod of
a group is decided, the others are attached to it and counted, and the same group is not
decided again until its cooldown has passed. `forget()` reopens a group whose decision
could not be made (API error), so the next event retries it.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from sre_agent.core.lifecycle import Cause, cause_of
from sre_agent.core.owners import controller_ref
from sre_agent.core.reasoning import Clock
from sre_agent.domain import JSON, Symptom

# A Job made by a CronJob is named <cronjob>-<minutes since epoch>.
_CRON_SUFFIX = re.compile(r"^(?P<base>.+)-\d{8,}$")
MAX_GROUPS = 10_000


@dataclass(frozen=True)
class OwnerKey:
    """The workload a pod belongs to, as far as its own body tells."""

    namespace: str
    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}" if self.namespace else f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class GroupKey:
    owner: OwnerKey
    cause: Cause

    def __str__(self) -> str:
        return f"{self.owner}:{self.cause.value}"


def owner_key(pod: JSON) -> OwnerKey:
    """The pod's workload from its controller ownerReference, without any API call.

    ReplicaSet `web-7d4b9c` of a pod labelled pod-template-hash=7d4b9c -> Deployment web;
    StatefulSet / DaemonSet / Job / other controller -> itself; a bare pod -> the pod.
    """
    meta = pod.get("metadata") or {}
    namespace = str(meta.get("namespace") or "")
    labels = meta.get("labels") or {}
    controller = controller_ref(pod)
    if controller is None:
        return OwnerKey(namespace, "Pod", str(meta.get("name") or ""))
    kind, name = str(controller.get("kind") or ""), str(controller.get("name") or "")
    if kind == "ReplicaSet":
        template_hash = str(labels.get("pod-template-hash") or "")
        if template_hash and name.endswith(f"-{template_hash}"):
            return OwnerKey(namespace, "Deployment", name[: -len(template_hash) - 1])
    if kind == "Job":
        match = _CRON_SUFFIX.match(name)
        if match:
            return OwnerKey(namespace, "CronJob", match["base"])
    return OwnerKey(namespace, kind, name)


def workload_key(workload: JSON) -> OwnerKey:
    """A Deployment or Job itself as the key `owner_key` gives its pods: a CronJob's Job (named
    <cronjob>-<minutes>) is keyed by the CronJob, so each failed run is not a new workload."""
    meta = workload.get("metadata") or {}
    namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    kind = str(workload.get("kind") or "")
    if kind == "Job":
        match = _CRON_SUFFIX.match(name)
        if match:
            return OwnerKey(namespace, "CronJob", match["base"])
    return OwnerKey(namespace, kind, name)


def group_key(pod: JSON, symptom: Symptom) -> GroupKey:
    """NodeNotReady groups by node (one dead node, one incident); everything else by workload."""
    node = str((pod.get("spec") or {}).get("nodeName") or "")
    if symptom == Symptom.NODE_NOT_READY and node:
        return GroupKey(OwnerKey("", "Node", node), cause_of(symptom))
    return GroupKey(owner_key(pod), cause_of(symptom))


class Verdict(StrEnum):
    DECIDE = "decide"  # first pod of a new group: gather and decide
    ATTACH = "attach"  # another pod of a group being decided: counted, nothing else
    DUPLICATE = "duplicate"  # a pod already seen in its group (another event of the same pod)
    COOLDOWN = "cooldown"  # the group was decided recently and its attach window is over


@dataclass
class Group:
    key: GroupKey
    opened_at: datetime
    leader: str  # namespace/name of the pod that is decided
    pods: set[str] = field(default_factory=set)  # pod uids (or names) seen in the group

    @property
    def size(self) -> int:
        return len(self.pods)


@dataclass(frozen=True)
class Admission:
    verdict: Verdict
    group: Group

    @property
    def decide(self) -> bool:
        return self.verdict == Verdict.DECIDE


def _pod_id(pod: JSON) -> str:
    meta = pod.get("metadata") or {}
    return str(meta.get("uid") or f"{meta.get('namespace', '')}/{meta.get('name', '')}")


class Intake:
    """De-duplication, grouping and cooldown of incidents. One per operator process."""

    def __init__(
        self,
        clock: Clock,
        *,
        cooldown_seconds: float = 300,
        window_seconds: float = 120,
        max_groups: int = MAX_GROUPS,
    ) -> None:
        if cooldown_seconds < 0 or window_seconds < 0:
            raise ValueError("cooldown and window must be 0 or more seconds")
        self.clock = clock
        self.cooldown = timedelta(seconds=cooldown_seconds)
        self.window = timedelta(seconds=window_seconds)
        self.max_groups = max_groups
        self._groups: OrderedDict[GroupKey, Group] = OrderedDict()

    @property
    def _lifetime(self) -> timedelta:
        return max(self.cooldown, self.window)

    def offer(self, pod: JSON, symptom: Symptom) -> Admission:
        """Admit one unhealthy pod: decide it, attach it to its group, or drop it as a repeat."""
        if symptom == Symptom.HEALTHY:
            raise ValueError("healthy pods are not incidents")
        return self._admit(group_key(pod, symptom), pod)

    def offer_workload(self, workload: JSON, symptom: Symptom) -> Admission:
        """Admit one failing workload (a Deployment past its progress deadline, a failed Job):
        grouped, de-duplicated and cooled down like pods, under its own key and cause."""
        if symptom == Symptom.HEALTHY:
            raise ValueError("healthy workloads are not incidents")
        return self._admit(GroupKey(workload_key(workload), cause_of(symptom)), workload)

    def _admit(self, key: GroupKey, obj: JSON) -> Admission:
        now = self.clock.now()
        self._prune(now)
        pod_id = _pod_id(obj)
        group = self._groups.get(key)
        if group is None or now - group.opened_at >= self._lifetime:
            meta = obj.get("metadata") or {}
            group = Group(key, now, f"{meta.get('namespace', '')}/{meta.get('name', '')}", {pod_id})
            self._groups[key] = group
            self._groups.move_to_end(key)
            return Admission(Verdict.DECIDE, group)
        if pod_id in group.pods:
            return Admission(Verdict.DUPLICATE, group)
        if now - group.opened_at < self.window:
            group.pods.add(pod_id)
            return Admission(Verdict.ATTACH, group)
        return Admission(Verdict.COOLDOWN, group)

    def forget(self, key: GroupKey) -> None:
        """Reopen a group (its decision failed): the next pod of it is decided again."""
        self._groups.pop(key, None)

    def group(self, key: GroupKey) -> Group | None:
        return self._groups.get(key)

    def __len__(self) -> int:
        return len(self._groups)

    def _prune(self, now: datetime) -> None:
        lifetime = self._lifetime
        while self._groups:
            oldest = next(iter(self._groups.values()))
            if now - oldest.opened_at < lifetime and len(self._groups) < self.max_groups:
                break
            self._groups.popitem(last=False)
