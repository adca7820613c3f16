"""The sweep reads no decision bodies: open decisions come from what the decision watch keeps,
old ones from a metadata-only list, and only a decision about to be deleted is read whole."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sre_agent.adapters.kube.client import METADATA_LIST, KubeClient
from sre_agent.adapters.kube.decisions import manifest_for
from sre_agent.core.policy import load_policy
from sre_agent.operator.app import build_service
from sre_agent.operator.metrics import Metrics
from sre_agent.operator.service import AgentService
from sre_agent.settings import Settings
from tests.unit.test_decision_manifest import make_decision

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime.now(UTC)


def stored(
    name: str, phase: str, *, age: timedelta, expires_in: timedelta = timedelta(hours=1)
) -> dict[str, Any]:
    obj = manifest_for(make_decision(), expires_at=NOW + expires_in, name=name)
    obj["metadata"].update(
        namespace="shop",
        uid=f"uid-{name}",
        resourceVersion="7",
        creationTimestamp=(NOW - age).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    obj["spec"]["zippedIncident"] = "H4sI" + "A" * 20_000
    obj["status"] = {"phase": phase, "attempts": 0}
    return obj


class DecisionsKube:
    """AgentDecisions two a page; records what each request asked for and which bodies were read."""

    list_page = KubeClient.list_page  # the real request shape, over this fake's request()

    def __init__(self, decisions: list[dict[str, Any]]) -> None:
        self.decisions = {d["metadata"]["name"]: d for d in decisions}
        self.accepts: list[str | None] = []
        self.got: list[str] = []
        self.deleted: list[str] = []
        self.patched: list[str] = []

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        accept: str | None = None,
        **_: Any,
    ) -> Any:
        assert method == "GET" and path.endswith("/agentdecisions")
        self.accepts.append(accept)
        start = int((query or {}).get("continue") or 0)
        names = sorted(self.decisions)[start : start + 2]
        items = [copy.deepcopy(self.decisions[n]) for n in names]
        if accept == METADATA_LIST:  # what the API server does for PartialObjectMetadataList
            items = [{"kind": "PartialObjectMetadata", "metadata": i["metadata"]} for i in items]
        more = {"continue": str(start + 2)} if start + 2 < len(self.decisions) else {}
        return {"items": items, "metadata": more}

    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> Any:
        self.got.append(name)
        return copy.deepcopy(self.decisions.get(name))

    async def delete(self, api_version: str, plural: str, namespace: str | None, name: str, **_: Any) -> bool:
        self.deleted.append(name)
        return self.decisions.pop(name, None) is not None

    async def patch(
        self, api_version: str, plural: str, namespace: str | None, name: str, body: Any, **_: Any
    ) -> Any:
        self.patched.append(name)
        obj = self.decisions[name]
        obj["status"] = {**obj.get("status", {}), **body.get("status", {})}
        return copy.deepcopy(obj)

    async def create(self, *args: Any, **kwargs: Any) -> Any:  # Events
        return {}


def service(kube: DecisionsKube) -> AgentService:
    return build_service(
        Settings(policy=load_policy(ROOT / "policies" / "default.yaml"), retention_seconds=7 * 24 * 3600),
        cast(Any, kube),
        Metrics(),
        "test",
    )


async def test_sweep_lists_metadata_only_and_reads_only_the_decisions_it_deletes() -> None:
    kube = DecisionsKube(
        [
            stored("fresh-closed", "Rejected", age=timedelta(hours=1)),
            stored("old-closed-1", "Executed", age=timedelta(days=8)),
            stored("old-closed-2", "Blocked", age=timedelta(days=9)),
            stored("fresh-pending", "PendingApproval", age=timedelta(minutes=5)),
            stored("old-executing", "Executing", age=timedelta(days=8)),
        ]
    )
    svc = service(kube)
    for obj in list(kube.decisions.values()):  # what kopf's decision watch delivers
        await svc.on_decision(copy.deepcopy(obj))
    assert sorted(svc._open) == ["shop/fresh-pending", "shop/old-executing"]
    assert all("zippedIncident" not in o["spec"] for o in svc._open.values())
    kube.accepts.clear()

    await svc.sweep()
    assert kube.accepts and set(kube.accepts) == {METADATA_LIST}  # never a page of bodies
    assert sorted(kube.got) == ["old-closed-1", "old-closed-2"]  # the bodies read: those deleted
    assert sorted(kube.deleted) == ["old-closed-1", "old-closed-2"]  # never one whose action may be running
    assert kube.patched == []


async def test_sweep_expires_a_pending_decision_known_from_the_watch_without_listing_bodies() -> None:
    late = stored("late", "PendingApproval", age=timedelta(hours=2), expires_in=-timedelta(minutes=1))
    kube = DecisionsKube([late])
    svc = service(kube)
    await svc.on_decision(copy.deepcopy(late))
    kube.accepts.clear()
    await svc.sweep()
    assert kube.patched == ["late"] and kube.decisions["late"]["status"]["phase"] == "Expired"
    assert set(kube.got) <= {"late"}  # at most the one it moves, never a list of bodies
    assert set(kube.accepts) <= {METADATA_LIST}
    # The watch then delivers the Expired decision: it is no longer open.
    await svc.on_decision(copy.deepcopy(kube.decisions["late"]))
    assert svc._open == {}


async def test_a_deleted_decision_leaves_the_open_index() -> None:
    pending = stored("p", "PendingApproval", age=timedelta(minutes=1))
    svc = service(DecisionsKube([pending]))
    await svc.on_decision(copy.deepcopy(pending))
    assert list(svc._open) == ["shop/p"]
    svc.forget_decision(pending)
    assert svc._open == {}
