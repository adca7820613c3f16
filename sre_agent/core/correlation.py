"""Correlated incidents (pure): workloads failing on the same dead dependency share one decision.

When the evidence traces a workload's failure to a Service with no ready endpoints
(`core.dependencies`), that Service is the incident, not the workload: the first workload
to fail on it gets the decision, and every other workload of the same namespace that fails on
the same Service within the window joins it instead of getting its own (and its own LLM call).
The operator records the joined workloads on the decision (`AFFECTED_ANNOTATION`).

Groups never span namespaces: a decision lives in its pod's namespace and must not tell about
workloads in another. Bounded: the oldest groups are dropped first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sre_agent.domain import Evidence

AFFECTED_ANNOTATION = "sre.agentops.dev/affected-workloads"
DEPENDENCY_ANNOTATION = "sre.agentops.dev/dependency"  # "ns/service" on the decision that opened a group
MAX_GROUPS = 1000
MAX_WORKLOADS = 200  # listed per group; more are counted, not named


def annotations_for(evidence: Evidence, workload: str) -> dict[str, str]:
    """What a decision about a dead dependency carries, so a restarted operator can reopen its group."""
    dependency = dependency_key(evidence)
    return {DEPENDENCY_ANNOTATION: dependency, AFFECTED_ANNOTATION: workload} if dependency else {}


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        found = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return found if found.tzinfo is not None else None


def dependency_key(evidence: Evidence) -> str:
    """The dead dependency this incident is about ("ns/service"), or "" when there is none."""
    for dep in evidence.facts.get("dependencies") or []:
        if isinstance(dep, dict) and dep.get("ready_endpoints") == 0 and isinstance(dep.get("service"), str):
            return str(dep["service"])
    return ""


@dataclass
class Group:
    namespace: str
    dependency: str
    decision: str  # the AgentDecision's name
    opened_at: datetime
    phase: str = ""  # the decision's phase when it was recorded
    workloads: list[str] = field(default_factory=list)
    more: int = 0  # workloads beyond MAX_WORKLOADS

    def add(self, workload: str) -> bool:
        """Add a workload; False when it was already there."""
        if workload in self.workloads:
            return False
        if len(self.workloads) >= MAX_WORKLOADS:
            self.more += 1
        else:
            self.workloads.append(workload)
        return True

    def annotation(self) -> str:
        text = ", ".join(self.workloads)
        return f"{text} (+{self.more} more)" if self.more else text


class Correlator:
    """Open dependency groups per (namespace, dependency), each for `window` after it opened."""

    def __init__(self, window_seconds: float = 900.0, max_groups: int = MAX_GROUPS) -> None:
        self.window = timedelta(seconds=window_seconds)
        self.max_groups = max_groups
        self._groups: OrderedDict[tuple[str, str], Group] = OrderedDict()

    def join(self, namespace: str, dependency: str, workload: str, now: datetime) -> Group | None:
        """The open group this workload joins (added to it), or None when it must decide itself."""
        group = self._groups.get((namespace, dependency))
        if group is None:
            return None
        if now - group.opened_at >= self.window:
            del self._groups[(namespace, dependency)]
            return None
        group.add(workload)
        return group

    def open(
        self, namespace: str, dependency: str, decision: str, workload: str, now: datetime, phase: str = ""
    ) -> Group:
        group = Group(namespace, dependency, decision, now, phase)
        group.add(workload)
        self._groups[(namespace, dependency)] = group
        self._groups.move_to_end((namespace, dependency))
        while len(self._groups) > self.max_groups:
            self._groups.popitem(last=False)
        return group

    def recorded(self, namespace: str, decision: str, phase: str) -> Group | None:
        """The decision that opened a group was recorded, in this phase; its group, if any."""
        for (ns, _), group in self._groups.items():
            if ns == namespace and group.decision == decision:
                group.phase = phase
                return group
        return None

    def restore(self, obj: Any, now: datetime) -> Group | None:
        """Reopen the group of a recorded AgentDecision (after a restart), if it opened one and is
        still within the window. Annotations are editable, so only their shape is trusted: a
        group only ever makes workloads of the decision's own namespace join that decision."""
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
            return None
        annotations = meta.get("annotations") if isinstance(meta.get("annotations"), dict) else {}
        assert isinstance(annotations, dict)
        dependency, namespace = annotations.get(DEPENDENCY_ANNOTATION), meta.get("namespace")
        created = _time(meta.get("creationTimestamp"))
        if (
            not isinstance(dependency, str)
            or not dependency
            or not isinstance(namespace, str)
            or created is None
        ):
            return None
        if now - created >= self.window:
            return None
        current = self._groups.get((namespace, dependency))
        if current is not None and current.opened_at > created:
            return current  # a newer group (this process opened it) wins
        if current is None or current.decision != meta["name"]:
            status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
            phase = status.get("phase") if isinstance(status, dict) else ""
            current = self.open(namespace, dependency, meta["name"], "", created, str(phase or ""))
            current.workloads.clear()
        listed = annotations.get(AFFECTED_ANNOTATION)
        for workload in (listed.split(", ") if isinstance(listed, str) else [])[:MAX_WORKLOADS]:
            parts = workload.strip().split("/")
            if len(parts) == 3 and parts[1] == namespace and all(parts):
                current.add(workload.strip())
        return current

    def __len__(self) -> int:
        return len(self._groups)
