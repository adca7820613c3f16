"""Periodic work reads only what can be unhealthy.

The pod watch keeps an index of the pods that are not Ready or have a container waiting;
resync re-checks exactly those with one GET each and never lists every pod, and the index
forgets a pod once it is Ready again, deleted, or gone.
"""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any, cast

import pytest

from sre_agent.adapters.kube.client import KubeClient
from sre_agent.core.policy import load_policy
from sre_agent.core.symptoms import settled
from sre_agent.operator import service as service_module
from sre_agent.operator.app import build_service
from sre_agent.operator.metrics import Metrics
from sre_agent.operator.service import AgentService
from sre_agent.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def pod(
    name: str, *, ready: bool = True, waiting: str | None = None, phase: str = "Running"
) -> dict[str, Any]:
    state: dict[str, Any] = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "uid": f"uid-{name}"},
        "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "app:1"}]},
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [{"name": "app", "ready": ready, "restartCount": 0, "state": state}],
        },
    }


class FakeKube:
    """Records every read; pods by name, no decisions, no events."""

    def __init__(self) -> None:
        self.pods: dict[str, dict[str, Any]] = {}
        self.lists: list[tuple[str, str | None]] = []
        self.gets: list[str] = []

    async def list_objects(
        self, api_version: str, plural: str, namespace: str | None = None, **_: Any
    ) -> list[Any]:
        self.lists.append((plural, namespace))
        return []

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.gets.append(name)
        found = self.pods.get(name)
        return copy.deepcopy(found) if found else None

    async def events_for(self, namespace: str, uid: str, limit: int = 200) -> list[Any]:
        return []


@pytest.fixture
async def agent() -> Any:
    kube = FakeKube()
    settings = Settings(policy=load_policy(ROOT / "policies" / "default.yaml"))
    svc = build_service(settings, cast(Any, kube), Metrics(), "test")
    yield svc, kube
    for task in list(svc._rechecks.values()):
        task.cancel()
    await asyncio.gather(*svc._rechecks.values(), return_exceptions=True)


def test_settled_means_running_ready_and_nothing_waiting_or_finished() -> None:
    assert settled(pod("a"))
    assert settled(pod("a", ready=False, phase="Succeeded"))
    assert not settled(pod("a", ready=False))
    assert not settled(pod("a", waiting="ContainerCreating", ready=True))
    assert not settled(pod("a", phase="Pending", ready=False))
    assert not settled({"metadata": {}})


async def test_resync_gets_only_the_unsettled_pods_and_never_lists_pods(agent: Any) -> None:
    svc, kube = cast(tuple[AgentService, FakeKube], agent)
    for i in range(1000):
        healthy = pod(f"healthy-{i}")
        kube.pods[healthy["metadata"]["name"]] = healthy
        await svc.on_pod(healthy)
    starting = [pod("starting-1", ready=False), pod("starting-2", waiting="ContainerCreating", ready=False)]
    for p in starting:
        kube.pods[p["metadata"]["name"]] = p
        await svc.on_pod(p)
    kube.lists.clear()

    await svc.resync()
    assert ("pods", None) not in kube.lists and not [p for p, _ in kube.lists if p == "pods"]
    assert sorted(kube.gets) == ["starting-1", "starting-2"]  # not one of the 1,000 healthy pods

    # starting-1 became Ready; starting-2 was deleted: the next resync reads nothing at all.
    kube.pods["starting-1"] = pod("starting-1")
    del kube.pods["starting-2"]
    kube.gets.clear()
    await svc.resync()
    assert sorted(kube.gets) == ["starting-1", "starting-2"]
    kube.gets.clear()
    await svc.resync()
    assert kube.gets == [] and svc._unsettled == {}


async def test_a_deleted_pod_is_forgotten_and_the_index_is_bounded(
    agent: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc, _ = cast(tuple[AgentService, FakeKube], agent)
    gone = pod("gone", ready=False)
    await svc.on_pod(gone)
    assert "uid-gone" in svc._unsettled
    svc.forget_pod(gone)  # the watch's DELETED event
    assert "uid-gone" not in svc._unsettled and "uid-gone" not in svc._rechecks

    monkeypatch.setattr(service_module, "MAX_UNSETTLED", 5)
    for i in range(20):
        await svc.on_pod(pod(f"p-{i}", ready=False))
    assert len(svc._unsettled) == 5


def decision(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "sre.agentops.dev/v1alpha1",
        "kind": "AgentDecision",
        "metadata": {"name": name, "namespace": "shop", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {
            "symptom": "CrashLoopBackOff",
            "zippedIncident": "H4sI" + "A" * 50_000,
            "incident": {"big": 1},
        },
        "status": {"phase": "Rejected"},
    }


class PagingKube(FakeKube):
    """AgentDecisions served two at a time with continue tokens; records each page request."""

    list_paged = KubeClient.list_paged  # the real pagination, over this fake's request()

    def __init__(self, count: int) -> None:
        super().__init__()
        self.decisions = [decision(f"d-{i}") for i in range(count)]
        self.pages: list[dict[str, Any]] = []

    async def request(self, method: str, path: str, *, query: dict[str, Any] | None = None, **_: Any) -> Any:
        assert method == "GET" and path.endswith("/agentdecisions")
        query = dict(query or {})
        self.pages.append(query)
        start = int(query.get("continue") or 0)
        end = start + 2
        more = {"continue": str(end)} if end < len(self.decisions) else {}
        return {"items": copy.deepcopy(self.decisions[start:end]), "metadata": more}


async def test_rebuild_lists_decisions_page_by_page_without_keeping_their_incidents() -> None:
    kube = PagingKube(5)
    svc = build_service(
        Settings(policy=load_policy(ROOT / "policies" / "default.yaml")), cast(Any, kube), Metrics(), "t"
    )
    objects = await svc._decision_objects()
    assert [o["metadata"]["name"] for o in objects] == [f"d-{i}" for i in range(5)]
    assert all("zippedIncident" not in o["spec"] and "incident" not in o["spec"] for o in objects)
    assert [p.get("continue") for p in kube.pages] == [None, "2", "4"] and all(p["limit"] for p in kube.pages)
    assert not [p for p, _ in kube.lists if p == "agentdecisions"]  # never one unpaged list
    # The sweep reads no bodies at all: tests/unit/test_sweep_lean.py.


class PatchingKube(FakeKube):
    """Records decision patches; the first one is held until the test lets it through."""

    def __init__(self) -> None:
        super().__init__()
        self.patched: list[str] = []
        self.release = asyncio.Event()
        self._held = False

    async def patch(self, api_version: str, plural: str, namespace: str | None, name: str, body: Any) -> Any:
        if not self._held:
            self._held = True
            await self.release.wait()
        self.patched.append(body["metadata"]["annotations"][service_module.AFFECTED_ANNOTATION])
        return {}


async def test_concurrent_joins_never_leave_an_older_shorter_affected_list_on_the_decision() -> None:
    kube = PatchingKube()
    svc = build_service(
        Settings(policy=load_policy(ROOT / "policies" / "default.yaml")), cast(Any, kube), Metrics(), "test"
    )
    now = svc.clock.now()
    group = svc.correlator.open("shop", "shop/orders-db", "api-0-x-1", "Deployment/shop/api-0", now)
    svc.correlator.join("shop", "shop/orders-db", "Deployment/shop/api-1", now)
    first = asyncio.create_task(svc._list_affected("shop", group))
    await asyncio.sleep(0)  # its patch is on the wire (held)
    svc.correlator.join("shop", "shop/orders-db", "Deployment/shop/api-2", now)
    second = asyncio.create_task(svc._list_affected("shop", group))
    await asyncio.sleep(0)
    kube.release.set()
    await asyncio.gather(first, second)
    assert "Deployment/shop/api-2" in kube.patched[-1], kube.patched
