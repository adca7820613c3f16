"""The one Kubernetes client adapter: every API call the agent makes goes through `KubeClient`.

It wraps the official `kubernetes` client (auth, TLS, token refresh) but speaks raw JSON:
objects come back exactly as the API server returns them (what `kubectl get -o json`
prints), so the gatherer, the decision store and capture hand real API objects to the
pure core. The blocking client runs in a thread pool (`asyncio.to_thread`) so the
operator's event loop never stalls.

Used by the gatherer, the executor, the decision store and capture (this package), and by
the operator (`sre_agent.operator.app`) which builds it once and passes it in through
kopf's memo. kopf itself logs in with the same credentials (`connection_info()`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from sre_agent.domain import JSON

log = logging.getLogger("sre_agent.kube")

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
DEFAULT_TIMEOUT = 15.0
# A list of PartialObjectMetadata: names, labels, timestamps; never spec or status.
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
WATCH_READ_GRACE = (
    60  # seconds a watch may stay silent beyond its timeoutSeconds (bookmarks come each minute)
)
MAX_WATCH_LINE = 16 * 1024 * 1024  # one event; etcd refuses objects over 1.5 MiB


class KubeError(Exception):
    """An API call failed. `status` is the HTTP status (0 when the server was not reached)."""

    def __init__(self, status: int, reason: str, message: str = "") -> None:
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


@dataclass(frozen=True)
class Credentials:
    """What kopf needs to log in with exactly the credentials this client uses."""

    server: str
    ca_path: str | None = None
    insecure: bool = False
    token: str | None = None
    certificate_path: str | None = None
    private_key_path: str | None = None
    default_namespace: str | None = None


def api_path(api_version: str, plural: str, namespace: str | None = None, name: str | None = None) -> str:
    """The REST path of a collection or an object: `/api/v1/...` or `/apis/<group>/<v>/...`."""
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespace:
        base += f"/namespaces/{quote(namespace, safe='')}"
    base += f"/{plural}"
    if name:
        base += f"/{quote(name, safe='')}"
    return base


# Kinds the agent reads as pod owners, and their REST names.
WORKLOAD_PLURALS: Mapping[str, str] = {
    "ReplicaSet": "replicasets",
    "Deployment": "deployments",
    "StatefulSet": "statefulsets",
    "DaemonSet": "daemonsets",
    "Job": "jobs",
    "CronJob": "cronjobs",
    "ReplicationController": "replicationcontrollers",
}


class KubeClient:
    """Async, JSON-in/JSON-out access to the Kubernetes API. Build one per process."""

    def __init__(self, api_client: k8s.ApiClient, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._api = api_client
        self.timeout = timeout
        self._ssl_context: ssl.SSLContext | None = None

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_kubeconfig(cls, path: str | None = None, context: str | None = None) -> KubeClient:
        """From a kubeconfig file (None: $KUBECONFIG or ~/.kube/config)."""
        configuration = k8s.Configuration()
        k8s_config.load_kube_config(config_file=path, context=context, client_configuration=configuration)
        return cls(k8s.ApiClient(configuration))

    @classmethod
    def in_cluster(cls) -> KubeClient:
        configuration = k8s.Configuration()
        k8s_config.load_incluster_config(client_configuration=configuration)
        return cls(k8s.ApiClient(configuration))

    @classmethod
    def connect(cls, kubeconfig: str | None = None) -> KubeClient:
        """In-cluster when running in a pod without an explicit kubeconfig, else the kubeconfig."""
        if kubeconfig is None:
            try:
                return cls.in_cluster()
            except k8s_config.ConfigException:
                pass
        return cls.from_kubeconfig(kubeconfig)

    def credentials(self) -> Credentials:
        cfg = self._api.configuration
        token = None
        auth = cfg.get_api_key_with_prefix("BearerToken", alias="authorization")
        if auth:
            token = auth.split(" ", 1)[1] if auth.lower().startswith("bearer ") else auth
        return Credentials(
            server=str(cfg.host),
            ca_path=cfg.ssl_ca_cert or None,
            insecure=not cfg.verify_ssl,
            token=token,
            certificate_path=cfg.cert_file or None,
            private_key_path=cfg.key_file or None,
        )

    def close(self) -> None:
        self._api.close()

    # -- the one request primitive ---------------------------------------------------------
    def _request_sync(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None,
        body: Any,
        content_type: str | None,
        timeout: float,
        raw: bool,
        accept: str | None = None,
    ) -> Any:
        headers = {"Accept": accept or ("application/json" if not raw else "*/*")}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        params = [(k, v) for k, v in (query or {}).items() if v is not None]
        try:
            serialized = self._api.param_serialize(
                method=method,
                resource_path=path,
                query_params=params,
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self._api.call_api(*serialized, _request_timeout=timeout)
            data = response.read()
        except k8s.ApiException as exc:
            raise KubeError(int(exc.status or 0), str(exc.reason or "error"), _message(exc.body)) from None
        except Exception as exc:  # network, TLS, timeouts: the server was not reached
            raise KubeError(0, type(exc).__name__, str(exc)[:300]) from None
        status = int(response.status)
        if status >= 400:
            raise KubeError(status, str(response.reason or "error"), _message(data))
        if raw:
            return data.decode("utf-8", errors="replace") if isinstance(data, bytes) else str(data or "")
        if not data:
            return {}
        return json.loads(data)

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str | None = None,
        request_timeout: float | None = None,
        accept: str | None = None,
    ) -> JSON:
        """One API call returning the decoded JSON body; raises KubeError."""
        result = await asyncio.to_thread(
            self._request_sync,
            method,
            path,
            query,
            body,
            content_type,
            request_timeout or self.timeout,
            False,
            accept,
        )
        return result if isinstance(result, dict) else {"items": result}

    async def request_text(
        self, path: str, *, query: Mapping[str, Any] | None = None, request_timeout: float | None = None
    ) -> str:
        result = await asyncio.to_thread(
            self._request_sync, "GET", path, query, None, None, request_timeout or self.timeout, True
        )
        return str(result)

    # -- reads -----------------------------------------------------------------------------
    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> JSON | None:
        """One object, or None when it does not exist."""
        try:
            return await self.request("GET", api_path(api_version, plural, namespace, name))
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    async def list_objects(
        self,
        api_version: str,
        plural: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
    ) -> list[JSON]:
        query = {"labelSelector": label_selector, "fieldSelector": field_selector, "limit": limit}
        result = await self.request("GET", api_path(api_version, plural, namespace), query=query)
        return [i for i in result.get("items") or [] if isinstance(i, dict)]

    async def list_paged(
        self,
        api_version: str,
        plural: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        page_size: int = 250,
        keep: Callable[[JSON], JSON] = lambda obj: obj,
    ) -> list[JSON]:
        """Every object, read `page_size` at a time (limit/continue), each passed through `keep` as
        its page arrives: a caller that keeps less of each object never holds all of them whole."""
        out: list[JSON] = []
        token: str | None = None
        while True:
            query = {"labelSelector": label_selector, "limit": page_size, "continue": token}
            result = await self.request("GET", api_path(api_version, plural, namespace), query=query)
            out.extend(keep(i) for i in result.get("items") or [] if isinstance(i, dict))
            meta = result.get("metadata")
            token = meta.get("continue") if isinstance(meta, dict) else None
            if not token:
                return out

    async def list_page(
        self,
        api_version: str,
        plural: str,
        namespace: str | None = None,
        *,
        limit: int,
        continue_token: str | None = None,
        label_selector: str | None = None,
        metadata_only: bool = False,
    ) -> JSON:
        """One page of a collection as the server sends it: `items`, and in `metadata` the `continue`
        token of the next page (none on the last) and the `resourceVersion` to watch from. With
        `metadata_only`, items are PartialObjectMetadata (apiVersion, kind, metadata: no spec, no
        status), so large bodies never cross the wire. A continue token the server has compacted
        away raises KubeError 410: list again from the start."""
        query = {"labelSelector": label_selector, "limit": limit, "continue": continue_token}
        return await self.request(
            "GET",
            api_path(api_version, plural, namespace),
            query=query,
            accept=METADATA_LIST if metadata_only else None,
        )

    async def watch(
        self,
        api_version: str,
        plural: str,
        namespace: str | None = None,
        *,
        resource_version: str,
        timeout_seconds: int = 300,
    ) -> AsyncGenerator[JSON, None]:
        """The watch events after `resource_version`, one `{"type", "object"}` at a time as they
        arrive (BOOKMARK events included: their object carries only the newest resourceVersion),
        until the server ends the stream after `timeout_seconds`. An ERROR event is raised as
        KubeError with its code (410 Gone: that version is compacted, list again); so is a failed
        connection (status 0). Nothing is buffered beyond the event being read."""
        cfg = self._api.configuration
        query = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        headers = {"Accept": "application/json"}
        bearer = (cfg.auth_settings().get("BearerToken") or {}).get("value")
        if bearer:
            headers["Authorization"] = str(bearer)
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.timeout, sock_read=timeout_seconds + WATCH_READ_GRACE
        )
        extra: dict[str, Any] = {"proxy": cfg.proxy} if cfg.proxy else {}
        if cfg.tls_server_name:
            extra["server_hostname"] = cfg.tls_server_name
        url = str(cfg.host).rstrip("/") + api_path(api_version, plural, namespace)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(url, params=query, headers=headers, ssl=self._ssl(), **extra) as response,
            ):
                if response.status >= 400:
                    body = await response.content.read(4096)
                    raise KubeError(response.status, str(response.reason or "error"), _message(body))
                buffer = bytearray()
                async for chunk in response.content.iter_any():
                    buffer += chunk
                    start = 0
                    while (end := buffer.find(b"\n", start)) >= 0:
                        line = bytes(buffer[start:end])
                        start = end + 1
                        if line.strip():
                            yield _watch_event(line)
                    del buffer[:start]
                    if len(buffer) > MAX_WATCH_LINE:
                        raise KubeError(0, "WatchEventTooLarge", f"over {MAX_WATCH_LINE} bytes")
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as exc:
            raise KubeError(0, type(exc).__name__, str(exc)[:300]) from None

    def _ssl(self) -> ssl.SSLContext:
        """The TLS settings of the kubernetes client (CA, client certificate, verification), for aiohttp."""
        if self._ssl_context is None:
            cfg = self._api.configuration
            context = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
            if cfg.cert_file:
                context.load_cert_chain(cfg.cert_file, cfg.key_file or None)
            if not cfg.verify_ssl:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._ssl_context = context
        return self._ssl_context

    async def get_pod(self, namespace: str, name: str) -> JSON | None:
        return await self.get("v1", "pods", namespace, name)

    async def get_node(self, name: str) -> JSON | None:
        return await self.get("v1", "nodes", None, name)

    async def get_workload(self, api_version: str, kind: str, namespace: str, name: str) -> JSON | None:
        plural = WORKLOAD_PLURALS.get(kind)
        if plural is None:
            return None
        return await self.get(api_version, plural, namespace, name)

    async def events_for(self, namespace: str, uid: str, limit: int = 200) -> list[JSON]:
        """Core v1 Events whose involvedObject is the object with this uid."""
        return await self.list_objects(
            "v1", "events", namespace, field_selector=f"involvedObject.uid={uid}", limit=limit
        )

    async def read_log(
        self,
        namespace: str,
        pod: str,
        container: str,
        *,
        previous: bool,
        tail_lines: int,
        limit_bytes: int,
        request_timeout: float | None = None,
    ) -> str:
        query = {
            "container": container,
            "previous": "true" if previous else None,
            "tailLines": tail_lines,
            "limitBytes": limit_bytes,
        }
        return await self.request_text(
            api_path("v1", "pods", namespace, pod) + "/log", query=query, request_timeout=request_timeout
        )

    # -- writes ----------------------------------------------------------------------------
    async def create(self, api_version: str, plural: str, namespace: str | None, body: JSON) -> JSON:
        return await self.request("POST", api_path(api_version, plural, namespace), body=body)

    async def patch(
        self,
        api_version: str,
        plural: str,
        namespace: str | None,
        name: str,
        body: JSON,
        *,
        subresource: str | None = None,
    ) -> JSON:
        """A JSON merge patch (put `metadata.resourceVersion` in it for a conditional patch)."""
        path = api_path(api_version, plural, namespace, name) + (f"/{subresource}" if subresource else "")
        return await self.request("PATCH", path, body=body, content_type=MERGE_PATCH)

    async def delete(
        self,
        api_version: str,
        plural: str,
        namespace: str | None,
        name: str,
        *,
        uid: str | None = None,
    ) -> bool:
        """Delete an object; False when it was already gone. With `uid`, only that incarnation."""
        body: JSON = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self.request("DELETE", api_path(api_version, plural, namespace, name), body=body)
        except KubeError as exc:
            if exc.not_found:
                return False
            raise
        return True


def _watch_event(line: bytes) -> JSON:
    """One line of a watch stream; an ERROR event (a v1 Status) raised as KubeError with its code."""
    try:
        event = json.loads(line)
    except ValueError:
        raise KubeError(0, "WatchDecodeError", line[:120].decode("utf-8", errors="replace")) from None
    if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
        raise KubeError(0, "WatchDecodeError", "an event without an object")
    if event.get("type") == "ERROR":
        status = event["object"]
        code = status.get("code")
        raise KubeError(
            code if isinstance(code, int) else 0,
            str(status.get("reason") or "error"),
            str(status.get("message") or "")[:300],
        )
    return event


def _message(body: Any) -> str:
    """The `message` of a v1 Status error body, else the body's start."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if not body:
        return ""
    try:
        decoded = json.loads(body)
    except (TypeError, ValueError):
        return str(body)[:300]
    if isinstance(decoded, dict) and decoded.get("message"):
        return str(decoded["message"])[:300]
    return str(body)[:300]
