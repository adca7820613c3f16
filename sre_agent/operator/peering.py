"""Is this replica the active one? The same answer kopf's peering gives, for our own periodic work.

kopf pauses its watches and handlers when another live operator with the same peering name has
a higher (or the same) priority. The sweep and resync loops are not kopf handlers, so they ask
this gate before each round: it reads the (Cluster)KopfPeering object kopf maintains and applies
kopf's rule. In standalone mode there is no peering and the gate is always open.

When this replica becomes the active one again after another peer held the lead, the gate calls
`on_activate` (the service rebuilds its action ledger and decision memory from the
AgentDecisions, since the other peer acted and decided meanwhile) before answering True.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

from sre_agent.adapters.kube.client import KubeClient, KubeError
from sre_agent.core.symptoms import parse_time
from sre_agent.domain import JSON

log = logging.getLogger("sre_agent.peering")

PEERING_API = "kopf.dev/v1"


def others_outrank(peering: JSON, identity: str, priority: int, now: datetime) -> list[str]:
    """Live peers other than `identity` with a priority >= ours (kopf pauses for them)."""
    out = []
    for peer_id, info in (peering.get("status") or {}).items():
        if peer_id == identity or not isinstance(info, dict):
            continue
        seen = parse_time(info.get("lastSeen"))
        if seen is not None and seen.tzinfo is None:
            seen = seen.replace(tzinfo=UTC)
        lifetime = info.get("lifetime", 60)
        if seen is None or not isinstance(lifetime, int | float):
            continue
        if now > seen + timedelta(seconds=float(lifetime)):
            continue  # dead peer
        if int(info.get("priority", 0) or 0) >= priority:
            out.append(str(peer_id))
    return out


class PeeringGate:
    def __init__(
        self,
        kube: KubeClient | None,
        *,
        name: str,
        identity: str,
        priority: int,
        namespaces: Sequence[str] = (),
        on_activate: Callable[[], Awaitable[None]] | None = None,
        on_pause: Callable[[], None] | None = None,
    ) -> None:
        self.kube = kube  # None: standalone
        self.name = name
        self.identity = identity
        self.priority = priority
        self.namespaces = tuple(namespaces)
        self._paused_for: tuple[str, ...] = ()
        self.on_activate = on_activate
        self.on_pause = on_pause  # e.g. zero the gauges only the active replica keeps right
        self.activations = 0  # how often this replica took over from another peer
        self.registered = kube is None  # kopf has entered this replica in the peering object

    async def active(self) -> bool:
        if self.kube is None:
            return True
        objects: list[JSON | None] = []
        try:
            if self.namespaces:
                for ns in self.namespaces:
                    objects.append(await self.kube.get(PEERING_API, "kopfpeerings", ns, self.name))
            else:
                objects.append(await self.kube.get(PEERING_API, "clusterkopfpeerings", None, self.name))
        except KubeError as exc:
            log.warning("Cannot read peering %s (%s): skipping this round", self.name, exc)
            return False
        now = datetime.now(UTC)
        self.registered = all(obj and self.identity in (obj.get("status") or {}) for obj in objects)
        blockers = tuple(
            sorted(
                {p for obj in objects if obj for p in others_outrank(obj, self.identity, self.priority, now)}
            )
        )
        if blockers != self._paused_for:
            took_over = bool(self._paused_for) and not blockers
            if blockers:
                log.info("Periodic work paused in favour of peers %s", ", ".join(blockers))
                if self.on_pause is not None:
                    self.on_pause()
            else:
                log.info("Periodic work resumed: no other active peer")
            self._paused_for = blockers
            if took_over:
                self.activations += 1
                if self.on_activate is not None:
                    await self.on_activate()
        return not blockers

    async def active_and_registered(self) -> bool:
        """Active, and kopf has registered this replica: by then it has seen the peers that started
        before it (a replica starting beside a higher-priority one must not begin work in between)."""
        return await self.active() and self.registered
