"""The lean pod watcher (operator.watch) against a scripted list/watch API.

Pages are read one at a time and handed over, the watch resumes from the newest version seen,
410 Gone lists again, other failures back off (fake sleep), events of one pod are handled in
order with the newest winning, and the number of pods in hand stays bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from sre_agent.adapters.kube.client import KubeClient, KubeError
from sre_agent.operator.peering import PeeringGate
from sre_agent.operator.watch import Dispatcher, Watcher, while_active

JSON = dict[str, Any]


def pod(name: str, version: str = "1", namespace: str = "shop") -> JSON:
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "resourceVersion": version}
    }


class ScriptedKube:
    """Pods in pages; each watch call plays the next script: a list of events or an exception."""

    def __init__(self, pods: list[JSON], watches: list[list[JSON] | KubeError]) -> None:
        self.pods = pods
        self.watches = watches
        self.list_calls: list[tuple[str | None, int, str | None]] = []
        self.watch_calls: list[tuple[str | None, str]] = []
        self.list_version = 100
        self.gone_continue = False  # the next continued page answers 410
        self.done = asyncio.Event()

    async def list_page(
        self, api_version: str, plural: str, namespace: str | None = None, *, limit: int,
        continue_token: str | None = None, **_: Any,
    ) -> JSON:  # fmt: skip
        assert (api_version, plural) == ("v1", "pods")
        self.list_calls.append((namespace, limit, continue_token))
        if continue_token and self.gone_continue:
            self.gone_continue = False
            raise KubeError(410, "Expired", "The provided continue parameter is too old")
        mine = [p for p in self.pods if namespace in (None, p["metadata"]["namespace"])]
        start = int(continue_token or 0)
        page = mine[start : start + limit]
        more = start + limit < len(mine)
        meta: JSON = {"resourceVersion": str(self.list_version)}
        if more:
            meta["continue"] = str(start + limit)
        return {"items": page, "metadata": meta}

    async def watch(
        self, api_version: str, plural: str, namespace: str | None = None, *, resource_version: str,
        timeout_seconds: int = 300,
    ) -> AsyncGenerator[JSON, None]:  # fmt: skip
        self.watch_calls.append((namespace, resource_version))
        if not self.watches:
            self.done.set()
            await asyncio.Event().wait()  # a quiet watch, until cancelled
        script = self.watches.pop(0)
        if isinstance(script, KubeError):
            raise script
        for event in script:
            if event["type"] == "ERROR":
                raise KubeError(event["object"]["code"], "Expired", "too old resource version")
            yield event


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []  # (type, name, resourceVersion)

    async def __call__(self, kind: str, obj: JSON) -> None:
        meta = obj["metadata"]
        self.seen.append((kind, meta["name"], meta["resourceVersion"]))


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


async def run_until_quiet(watcher: Watcher, kube: ScriptedKube) -> None:
    task = asyncio.create_task(watcher.run())
    await asyncio.wait_for(kube.done.wait(), 5)
    await watcher.dispatcher.drain()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def event(kind: str, obj: JSON) -> JSON:
    return {"type": kind, "object": obj}


async def test_the_list_is_read_page_by_page_and_every_pod_handed_over() -> None:
    pods = [pod(f"p{i}") for i in range(12)]
    kube = ScriptedKube(pods, [])
    seen = Recorder()
    watcher = Watcher(cast(KubeClient, kube), seen, page_size=5, sleep=no_sleep)
    await run_until_quiet(watcher, kube)
    assert kube.list_calls == [(None, 5, None), (None, 5, "5"), (None, 5, "10")]
    assert sorted(name for _, name, _ in seen.seen) == sorted(f"p{i}" for i in range(12))
    assert {kind for kind, _, _ in seen.seen} == {"ADDED"}
    # the watch starts from the list's resourceVersion
    assert kube.watch_calls == [(None, "100")]
    assert watcher.synced.is_set()


async def test_watch_events_are_handed_over_and_the_watch_resumes_after_the_newest_version() -> None:
    bookmark = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "130"}}}
    kube = ScriptedKube(
        [pod("a")],
        [
            [event("MODIFIED", pod("a", "110")), event("DELETED", pod("a", "120")), bookmark],
            [event("ADDED", pod("b", "140"))],
        ],
    )
    seen = Recorder()
    watcher = Watcher(cast(KubeClient, kube), seen, sleep=no_sleep)
    await run_until_quiet(watcher, kube)
    assert [c[1] for c in kube.watch_calls] == ["100", "130", "140"]
    assert ("DELETED", "a", "120") in seen.seen and ("ADDED", "b", "140") in seen.seen
    assert len(kube.list_calls) == 1  # the server ending a watch is not a reason to list again


async def test_410_gone_lists_again_and_watches_from_the_new_list() -> None:
    kube = ScriptedKube([pod("a")], [[event("ERROR", {"code": 410})]])
    watcher = Watcher(cast(KubeClient, kube), Recorder(), sleep=no_sleep)
    kube_list_version_after = 200

    original = kube.list_page

    async def list_then_bump(*args: Any, **kwargs: Any) -> JSON:
        page = await original(*args, **kwargs)
        kube.list_version = kube_list_version_after
        return page

    kube.list_page = list_then_bump  # type: ignore[method-assign]
    await run_until_quiet(watcher, kube)
    assert len(kube.list_calls) == 2
    assert [c[1] for c in kube.watch_calls] == ["100", "200"]
    assert watcher.stats.relists_after_gone == 1


async def test_an_expired_continue_token_restarts_the_list() -> None:
    kube = ScriptedKube([pod(f"p{i}") for i in range(4)], [])
    kube.gone_continue = True
    watcher = Watcher(cast(KubeClient, kube), Recorder(), page_size=2, sleep=no_sleep)
    await run_until_quiet(watcher, kube)
    assert [c[2] for c in kube.list_calls] == [None, "2", None, "2"]


async def test_other_failures_back_off_doubling_and_resume_from_the_last_version() -> None:
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    down = KubeError(0, "ClientConnectorError", "connection refused")
    kube = ScriptedKube([pod("a")], [down, down, down, [event("MODIFIED", pod("a", "150"))]])
    watcher = Watcher(cast(KubeClient, kube), Recorder(), sleep=sleep)
    await run_until_quiet(watcher, kube)
    assert len(kube.list_calls) == 1
    assert [c[1] for c in kube.watch_calls] == ["100", "100", "100", "100", "150"]
    assert len(delays) == 3
    assert 0.8 <= delays[0] <= 1.2 and 1.6 <= delays[1] <= 2.4 and 3.2 <= delays[2] <= 4.8


async def test_a_watch_the_server_closes_at_once_is_retried_with_backoff_not_in_a_tight_loop() -> None:
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    kube = ScriptedKube([pod("a")], [[], [], [event("MODIFIED", pod("a", "150"))], []])
    watcher = Watcher(cast(KubeClient, kube), Recorder(), sleep=sleep)
    await run_until_quiet(watcher, kube)
    assert [c[1] for c in kube.watch_calls] == ["100", "100", "100", "150", "150"]
    # two empty watches back off (1 s, 2 s); a watch that delivered resets it (1 s again)
    assert len(delays) == 3 and 0.8 <= delays[0] <= 1.2 and 1.6 <= delays[1] <= 2.4 and delays[2] <= 1.2


async def test_namespaces_are_listed_and_watched_each_on_its_own() -> None:
    pods = [pod("a", namespace="shop"), pod("b", namespace="other"), pod("c", namespace="web")]
    kube = ScriptedKube(pods, [])
    seen = Recorder()
    watcher = Watcher(cast(KubeClient, kube), seen, namespaces=("shop", "web"), sleep=no_sleep)
    task = asyncio.create_task(watcher.run())
    await asyncio.wait_for(watcher.synced.wait(), 5)
    await asyncio.sleep(0.01)
    await watcher.dispatcher.drain()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert sorted(c[0] for c in kube.list_calls) == ["shop", "web"]
    assert sorted(name for _, name, _ in seen.seen) == ["a", "c"]


async def test_a_failing_handler_is_logged_and_the_watch_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    kube = ScriptedKube([pod("bad"), pod("good")], [])
    handled: list[str] = []

    async def handle(kind: str, obj: JSON) -> None:
        if obj["metadata"]["name"] == "bad":
            raise ValueError("boom")
        handled.append(obj["metadata"]["name"])

    watcher = Watcher(cast(KubeClient, kube), handle, sleep=no_sleep)
    await run_until_quiet(watcher, kube)
    assert handled == ["good"]
    assert "pod shop/bad: ADDED event failed: ValueError: boom" in caplog.text


async def test_dispatcher_handles_one_pod_in_order_with_the_newest_event_winning() -> None:
    release = asyncio.Event()
    order: list[str] = []

    async def handle(kind: str, obj: JSON) -> None:
        order.append(f"{kind}:{obj['metadata']['resourceVersion']}")
        if obj["metadata"]["resourceVersion"] == "1":
            await release.wait()

    d = Dispatcher(handle, concurrency=4)
    await d.put("ADDED", pod("a", "1"))
    await asyncio.sleep(0)
    await d.put("MODIFIED", pod("a", "2"))  # superseded while "1" is in hand
    await d.put("DELETED", pod("a", "3"))
    assert d.in_hand == 1
    release.set()
    await d.drain()
    assert order == ["ADDED:1", "DELETED:3"]
    assert d.in_hand == 0


async def test_dispatcher_keeps_at_most_concurrency_pods_in_hand() -> None:
    release = asyncio.Event()
    peak = 0
    d: Dispatcher

    async def handle(kind: str, obj: JSON) -> None:
        nonlocal peak
        peak = max(peak, d.in_hand)
        await release.wait()

    d = Dispatcher(handle, concurrency=3)

    async def stream() -> None:
        for i in range(10):
            await d.put("ADDED", pod(f"p{i}"))

    feeder = asyncio.create_task(stream())
    await asyncio.sleep(0.01)
    assert d.in_hand == 3 and not feeder.done()  # the stream waits
    release.set()
    await feeder
    await d.drain()
    assert peak == 3 and d.in_hand == 0


async def test_while_active_starts_stops_and_restarts_with_the_gate() -> None:
    answers = [True, True, False, False, True]
    runs: list[str] = []
    ticks = asyncio.Queue[None]()

    async def gate() -> bool:
        return answers.pop(0) if answers else True

    async def run() -> None:
        runs.append("start")
        try:
            await asyncio.Event().wait()
        finally:
            runs.append("stop")

    async def sleep(_: float) -> None:
        await asyncio.sleep(0)
        ticks.put_nowait(None)
        if not answers:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await while_active(gate, run, 10, sleep=sleep)
    assert runs == ["start", "stop", "start", "stop"]


class PeeringKube:
    """One ClusterKopfPeering whose status (peer id -> record) the test sets."""

    def __init__(self) -> None:
        self.status: dict[str, Any] = {}

    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> JSON:
        return {"metadata": {"name": name}, "status": self.status}


async def test_the_pod_watch_waits_until_kopf_has_registered_this_replica_among_its_peers() -> None:
    """A replica starting beside a higher-priority one must not watch pods before it can see it."""
    kube = PeeringKube()
    gate = PeeringGate(cast(KubeClient, kube), name="sre-agent", identity="me", priority=5)
    now = datetime.now(UTC).isoformat()
    assert await gate.active() and not await gate.active_and_registered()  # nobody listed yet
    kube.status = {"me": {"priority": 5, "lifetime": 60, "lastSeen": now}}
    assert await gate.active_and_registered()
    kube.status["high"] = {"priority": 10, "lifetime": 60, "lastSeen": now}
    assert not await gate.active_and_registered()
    standalone = PeeringGate(None, name="sre-agent", identity="me", priority=5)
    assert await standalone.active_and_registered()
