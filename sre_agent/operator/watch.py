"""The watch of the many objects (pods, Deployments, Jobs), without kopf: list page by page, then
watch, keeping nothing per object.

kopf keeps state and a worker per object and reads the whole initial list at once; at 10,000
pods that alone is most of the operator's memory. This watcher reads the objects `page_size` at
a time (limit/continue), hands each page's objects to the service and drops the page, then watches
from the list's resourceVersion with bookmarks. When the server says that version is gone (410,
after compaction) it lists again; on any other failure it backs off (doubling, capped) and
resumes from the last version it saw. One loop per watched namespace (or one for the cluster).

Events are handed to `on_event(type, object)` through a `Dispatcher`: the events of one object
are handled one at a time and in order, with only the newest waiting (as kopf batches them), and
at most `concurrency` objects are in hand at once; beyond that the stream waits. Nothing is kept
for an object once its event is handled.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from sre_agent.adapters.kube.client import KubeClient, KubeError
from sre_agent.domain import JSON

log = logging.getLogger("sre_agent.watch")

GONE = 410
PAGE_SIZE = 500
WATCH_TIMEOUT_SECONDS = 300
CONCURRENCY = 64  # objects being handled at once; the stream waits beyond it
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0

EventHandler = Callable[[str, JSON], Awaitable[None]]


def object_key(obj: JSON) -> str:
    meta = obj.get("metadata") or {}
    return str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")


class Dispatcher:
    """Hands (type, obj) to `handle`: one object at a time per key, newest event wins, bounded in flight."""

    def __init__(self, handle: EventHandler, concurrency: int = CONCURRENCY, what: str = "object") -> None:
        self.handle = handle
        self.what = what  # for log lines: "pod", "deployment", ...
        self._slots = asyncio.Semaphore(concurrency)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._next: dict[str, tuple[str, JSON]] = {}  # key -> the newest event that came meanwhile

    @property
    def in_hand(self) -> int:
        return len(self._running)

    async def put(self, kind: str, obj: JSON) -> None:
        key = object_key(obj)
        if key not in self._running:
            await self._slots.acquire()
            if key not in self._running:
                self._running[key] = asyncio.get_running_loop().create_task(self._work(key, kind, obj))
                return
            self._slots.release()
        self._next[key] = (kind, obj)

    async def _work(self, key: str, kind: str, obj: JSON) -> None:
        try:
            while True:
                try:
                    await self.handle(kind, obj)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # one object's failure must not stop the watch
                    meta = obj.get("metadata") or {}
                    log.warning(
                        "%s %s/%s: %s event failed: %s: %s",
                        self.what,
                        meta.get("namespace"),
                        meta.get("name"),
                        kind,
                        type(exc).__name__,
                        exc,
                    )
                following = self._next.pop(key, None)
                if following is None:
                    return
                kind, obj = following
        finally:
            self._running.pop(key, None)
            self._slots.release()

    async def drain(self) -> None:
        """Wait until every object in hand is handled (its newest event included)."""
        while self._running:
            await asyncio.gather(*list(self._running.values()), return_exceptions=True)

    async def close(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._next.clear()


@dataclass
class WatchStats:
    """What the watcher did: for logs, tests and the benchmark."""

    lists: int = 0  # full lists (the first one and every re-list)
    pages: int = 0
    relists_after_gone: int = 0
    watches: int = 0  # watch requests (a new one after each server timeout or failure)
    events: int = 0
    failures: int = 0


class Watcher:
    """List then watch one kind (pods unless told) in `namespaces` (all when empty), handing every
    event to `on_event`."""

    def __init__(
        self,
        kube: KubeClient,
        on_event: EventHandler,
        *,
        api_version: str = "v1",
        plural: str = "pods",
        namespaces: Sequence[str] = (),
        page_size: int = PAGE_SIZE,
        watch_timeout_seconds: int = WATCH_TIMEOUT_SECONDS,
        concurrency: int = CONCURRENCY,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.kube = kube
        self.api_version = api_version
        self.plural = plural
        self.namespaces: tuple[str | None, ...] = tuple(namespaces) or (None,)
        self.page_size = page_size
        self.watch_timeout_seconds = watch_timeout_seconds
        self.dispatcher = Dispatcher(on_event, concurrency, what=plural.removesuffix("s"))
        self.sleep = sleep
        self.stats = WatchStats()
        self.synced = asyncio.Event()  # set once every namespace's first list was handed over

    async def run(self) -> None:
        """Until cancelled; never raises otherwise (failures are logged and retried)."""
        pending = set(self.namespaces)

        def listed(namespace: str | None) -> None:
            pending.discard(namespace)
            if not pending:
                self.synced.set()

        try:
            await asyncio.gather(*(self._follow(ns, listed) for ns in self.namespaces))
        finally:
            await self.dispatcher.close()

    async def _follow(self, namespace: str | None, listed: Callable[[str | None], None]) -> None:
        where = f"namespace {namespace}" if namespace else "all namespaces"
        version: str | None = None
        backoff = BACKOFF_FIRST
        while True:
            try:
                if version is None:
                    version = await self._list(namespace)
                    listed(namespace)
                version, heard = await self._watch(namespace, version)
                if heard:
                    backoff = BACKOFF_FIRST
                else:  # closed before a single event or bookmark: do not hammer the server
                    await self.sleep(backoff * random.uniform(0.8, 1.2))
                    backoff = min(backoff * 2, BACKOFF_MAX)
            except KubeError as exc:
                if exc.status == GONE:
                    self.stats.relists_after_gone += 1
                    log.info("Watch of %s (%s): %s; listing again", self.plural, where, exc)
                    version = None
                    continue
                self.stats.failures += 1
                delay = backoff * random.uniform(0.8, 1.2)
                log.warning("Watch of %s (%s) failed: %s; retrying in %.0f s", self.plural, where, exc, delay)
                await self.sleep(delay)
                backoff = min(backoff * 2, BACKOFF_MAX)

    async def _list(self, namespace: str | None) -> str:
        """Every object, a page at a time, each page handed over and dropped; the version to watch from."""
        self.stats.lists += 1
        token: str | None = None
        count = pages = 0
        while True:
            page = await self.kube.list_page(
                self.api_version, self.plural, namespace, limit=self.page_size, continue_token=token
            )
            self.stats.pages += 1
            pages += 1
            meta = page.get("metadata") or {}
            for obj in page.get("items") or []:
                if isinstance(obj, dict):
                    count += 1
                    await self.dispatcher.put("ADDED", obj)
            token = meta.get("continue") or None
            if not token:
                where = f"namespace {namespace}" if namespace else "all namespaces"
                log.info("Watch of %s (%s): listed %d in %d page(s)", self.plural, where, count, pages)
                return str(meta.get("resourceVersion") or "")

    async def _watch(self, namespace: str | None, version: str) -> tuple[str, bool]:
        """Follow one watch request until the server closes it; the newest version seen, and
        whether anything (an event or a bookmark) came at all."""
        self.stats.watches += 1
        heard = False
        events = self.kube.watch(
            self.api_version,
            self.plural,
            namespace,
            resource_version=version,
            timeout_seconds=self.watch_timeout_seconds,
        )
        try:
            async for event in events:
                heard = True
                obj = event["object"]
                newer = (obj.get("metadata") or {}).get("resourceVersion")
                kind = str(event.get("type"))
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self.stats.events += 1
                    await self.dispatcher.put(kind, obj)
                if newer:
                    version = str(newer)
        finally:
            await events.aclose()
        return version, heard


async def while_active(
    gate: Callable[[], Awaitable[bool]],
    run: Callable[[], Coroutine[Any, Any, None]],
    check_seconds: float,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Run `run()` while `gate()` says this replica is the active peer (kopf's rule, operator.peering);
    cancel it when another peer takes over, start it afresh when this one does. Until cancelled."""
    task: asyncio.Task[None] | None = None
    try:
        while True:
            try:
                active = await gate()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("Cannot tell whether this replica is active: %s: %s", type(exc).__name__, exc)
                active = task is not None  # keep doing what we did
            if task is not None and task.done():  # it stopped by itself: say why, start again
                if not task.cancelled() and task.exception() is not None:
                    log.warning("Watch stopped: %r; starting again", task.exception())
                task = None
            if active and task is None:
                task = asyncio.get_running_loop().create_task(run())
            elif not active and task is not None:
                log.info("Watch paused: another peer is active")
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                task = None
            await sleep(check_seconds)
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
