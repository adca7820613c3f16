"""The lean pod watcher (operator.watch) and the client's list pages and watch, on the real API server.

The initial list arrives in pages of `page_size` (limit/continue), the watch follows from the
list's version, a deleted pod makes the service forget it, the namespace filter is honoured, and
a metadata-only list carries no spec or status. (410 Gone and the re-list after it: the API
server's watch cache answers from memory even after etcd compacts, so tests/unit/test_watch.py
plays that part against a scripted stream.)
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from kubernetes import client

from sre_agent.adapters.kube.client import KubeClient
from sre_agent.core.policy import load_policy
from sre_agent.operator.app import build_service, pod_handler
from sre_agent.operator.metrics import Metrics
from sre_agent.operator.watch import Watcher
from sre_agent.settings import Settings
from tests.cluster import kubesim
from tests.cluster.conftest import REPO, Cluster

JSON = dict[str, Any]


def create_pod(cluster: Cluster, namespace: str, name: str, node: str = "nowhere") -> JSON:
    body = {
        "metadata": {"name": name, "labels": {"app": "podwatch"}},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app:1"}]},
    }
    client.CoreV1Api(cluster.api_client).create_namespaced_pod(namespace, body, _preload_content=False)
    return kubesim.get_pod(cluster.api_client, namespace, name)


def delete_pod(cluster: Cluster, namespace: str, name: str) -> None:
    client.CoreV1Api(cluster.api_client).delete_namespaced_pod(
        name, namespace, grace_period_seconds=0, _preload_content=False
    )


@pytest.fixture
async def kube(cluster: Cluster) -> AsyncIterator[KubeClient]:
    k = KubeClient.from_kubeconfig(str(cluster.kubeconfig))
    yield k
    k.close()


@pytest.fixture
def other_namespace(cluster: Cluster) -> Iterator[str]:
    name = f"t-podwatch-other-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(cluster.api_client)
    core.create_namespace({"metadata": {"name": name}}, _preload_content=False)
    yield name
    core.delete_collection_namespaced_pod(name, grace_period_seconds=0, _preload_content=False)
    core.delete_namespace(name, propagation_policy="Background", _preload_content=False)


class Seen:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []  # (type, namespace, name)
        self.changed = asyncio.Event()

    async def __call__(self, kind: str, pod: JSON) -> None:
        meta = pod["metadata"]
        self.events.append((kind, meta["namespace"], meta["name"]))
        self.changed.set()

    async def wait_for(self, wanted: tuple[str, str, str], seconds: float = 30) -> None:
        async def until() -> None:
            while wanted not in self.events:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(until(), seconds)


async def start(watcher: Watcher) -> asyncio.Task[None]:
    task = asyncio.create_task(watcher.run())
    await asyncio.wait_for(watcher.synced.wait(), 30)
    return task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_the_initial_list_arrives_page_by_page_then_the_watch_follows(
    cluster: Cluster, namespace: str, kube: KubeClient
) -> None:
    for i in range(7):
        create_pod(cluster, namespace, f"p{i}")
    seen = Seen()
    watcher = Watcher(kube, seen, namespaces=(namespace,), page_size=3)
    task = await start(watcher)
    try:
        await watcher.dispatcher.drain()
        assert watcher.stats.pages == 3  # 3 + 3 + 1
        assert sorted(n for k, _, n in seen.events if k == "ADDED") == [f"p{i}" for i in range(7)]
        create_pod(cluster, namespace, "late")
        await seen.wait_for(("ADDED", namespace, "late"))
        delete_pod(cluster, namespace, "p0")
        await seen.wait_for(("DELETED", namespace, "p0"))
        assert watcher.stats.lists == 1 and watcher.stats.failures == 0
    finally:
        await stop(task)


async def test_the_namespace_filter_is_honoured(
    cluster: Cluster, namespace: str, other_namespace: str, kube: KubeClient
) -> None:
    create_pod(cluster, namespace, "mine")
    create_pod(cluster, other_namespace, "theirs")
    seen = Seen()
    watcher = Watcher(kube, seen, namespaces=(namespace,))
    task = await start(watcher)
    try:
        create_pod(cluster, other_namespace, "theirs-later")
        create_pod(cluster, namespace, "mine-later")
        await seen.wait_for(("ADDED", namespace, "mine-later"))
        assert {ns for _, ns, _ in seen.events} == {namespace}
        assert {n for _, _, n in seen.events} == {"mine", "mine-later"}
    finally:
        await stop(task)


async def test_a_deleted_pod_is_forgotten_by_the_service(
    cluster: Cluster, namespace: str, node: str, kube: KubeClient
) -> None:
    """A not-Ready pod enters the service's re-check index through the watch and leaves it on deletion."""
    service = build_service(
        Settings(policy=load_policy(REPO / "policies" / "default.yaml"), namespaces=(namespace,)),
        kube,
        Metrics(),
        "test",
    )
    create_pod(cluster, namespace, "slow", node)
    uid = kubesim.run_pod(cluster.api_client, namespace, "slow", ready=False)["metadata"]["uid"]
    watcher = Watcher(kube, pod_handler(service), namespaces=(namespace,))
    task = await start(watcher)
    try:
        await watcher.dispatcher.drain()

        async def index_is(expected: bool) -> bool:
            for _ in range(300):
                if (uid in service._unsettled) == expected:
                    return True
                await asyncio.sleep(0.1)
            return False

        assert await index_is(True)
        delete_pod(cluster, namespace, "slow")
        assert await index_is(False)
    finally:
        await stop(task)
        for t in service._rechecks.values():
            t.cancel()


async def test_a_metadata_only_page_has_no_spec_or_status(
    cluster: Cluster, namespace: str, kube: KubeClient
) -> None:
    create_pod(cluster, namespace, "meta")
    page = await kube.list_page("v1", "pods", namespace, limit=10, metadata_only=True)
    assert [i["metadata"]["name"] for i in page["items"]] == ["meta"]
    assert page["items"][0]["kind"] == "PartialObjectMetadata"
    assert "spec" not in page["items"][0] and "status" not in page["items"][0]
    assert page["metadata"]["resourceVersion"]
