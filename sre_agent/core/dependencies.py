"""Dependency tracing (pure): from the hosts an error names to the Service and workload behind them.

`hosts_in` reads the host names and IPs that connection errors print (Go's `dial tcp`, Node's
ENOTFOUND/ECONNREFUSED, libpq, curl, busybox nc and wget, JDBC, ...). `resolve` matches one
against Services in every form cluster DNS answers (`name`, `name.ns`, `name.ns.svc`,
`name.ns.svc.<cluster domain>`) and by ClusterIP. `trace` reads the Service's EndpointSlices
(ready endpoints) and the Deployments/StatefulSets whose pods it selects, and says, e.g.,
"Service shop/orders-db has 0 ready endpoints; Deployment orders-db has 0 replicas".

The live gatherer (adapters.kube.gatherer) calls `hosts_in` to know what to read, and puts what
it read into `IncidentContext.related`; `evidence.extract` calls `trace` on it. Everything here
reads untrusted text and objects: nothing is assumed to be present or well typed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sre_agent.domain import JSON

MAX_HOSTS = 5
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
WORKLOAD_KINDS = ("Deployment", "StatefulSet")

# Lines worth reading for a host: the ways connection failures, DNS failures and 503s are printed.
FAILURE = re.compile(
    r"refused|timed? ?out|timeout|no such host|ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|bad address"
    r"|could not translate host|could not resolve|can'?t connect|cannot connect|could not connect"
    r"|unable to connect|failed to connect|unreachable|no route to host|Name or service not known"
    r"|Temporary failure in name resolution|\b503\b|Service Unavailable|waiting for",
    re.IGNORECASE,
)
_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9-]{1,63})*"
HOST_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p, re.IGNORECASE)
    for p in (
        rf"dial tcp:? (?:lookup )?({_HOST})(?::\d+)?",  # Go: dial tcp host:5432 / dial tcp: lookup host on ...
        rf"\b(?:ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT) ({_HOST})",  # Node
        rf"on host \"({_HOST})\"",  # libpq: Is the server running on host "pg" (10.0.0.1)
        rf"(?:could not )?translate host name \"({_HOST})\"",  # libpq DNS
        rf"bad address '({_HOST})'",  # busybox nc / wget
        rf"\bnc: ({_HOST}):\d+",  # busybox nc: host:5432 (10.0.0.1:5432): Connection refused
        rf"(?:Could not resolve host|resolve host):? ({_HOST})",  # curl
        rf"(?:Failed to connect|connect) to ({_HOST}) port \d+",  # curl / ssh style
        rf"Connection to ({_HOST}):\d+ (?:refused|timed out)",  # JDBC / PSQLException
        rf"connecting to ({_HOST}):\d+",
        rf"(?:https?|redis|amqp|postgres(?:ql)?|mysql|mongodb|grpc|tcp)://(?:[^@/\s]*@)?({_HOST})",
        rf"can'?t connect to remote host \(({_HOST})\)",  # busybox wget
        rf"waiting for ({_HOST})(?::\d+)?",  # wait-for-it style init containers
        rf"\b({_HOST}):\d{{2,5}}\b",  # any host:port on a failure line
    )
)
_NOT_HOSTS = frozenset({"localhost", "0.0.0.0", "127.0.0.1", "host", "server", "remote", "the"})


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _plausible(host: str) -> bool:
    host = host.lower().rstrip(".")
    if host in _NOT_HOSTS or host.startswith("127.") or len(host) > 253:
        return False
    if _is_ip(host):
        return True
    # A Service name is a DNS label; a dotted name is fine. Plain words from prose are not hosts:
    # require a digit, a dash or a dot, or a name the caller's line shows with a port or quotes.
    return bool(re.fullmatch(_HOST, host)) and not host.isdigit()


def hosts_in(lines: Iterable[str]) -> list[str]:
    """Host names and IPs named by failure lines, first seen first, at most MAX_HOSTS."""
    found: dict[str, None] = {}
    for line in lines:
        if not FAILURE.search(line):
            continue
        for rx in HOST_PATTERNS:
            for match in rx.finditer(line):
                host = match.group(1).lower().rstrip(".")
                if _plausible(host) and not re.fullmatch(r"\d+(\.\d+)?", host):
                    found.setdefault(host, None)
        if len(found) >= MAX_HOSTS:
            break
    return list(found)[:MAX_HOSTS]


@dataclass(frozen=True)
class ServiceRef:
    namespace: str
    name: str

    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def service_names(host: str, namespace: str) -> ServiceRef | None:
    """The Service a DNS name means from a pod in `namespace`, by name form alone (no IPs)."""
    if _is_ip(host):
        return None
    parts = host.lower().rstrip(".").split(".")
    if len(parts) == 1:
        return ServiceRef(namespace, parts[0])
    if len(parts) == 2:
        return ServiceRef(parts[1], parts[0])
    if parts[2] == "svc":  # name.ns.svc and name.ns.svc.<cluster domain>
        return ServiceRef(parts[1], parts[0])
    return None  # an outside name (db.example.com): not a Service


# Never traced into: the cluster's own namespaces (their Services are not an application's).
SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})


def namespaces_to_read(hosts: Iterable[str], namespace: str) -> list[str]:
    """The namespaces whose Services may answer these hosts: the pod's own and any named.

    Log lines are written by the workload, so a host may name any namespace: the system ones are
    never read, and in another namespace only the Service and its endpoints are (the gatherer
    reads workloads only in the pod's own namespace), so a decision recorded in the pod's
    namespace tells no more about another namespace than its DNS already does.
    """
    out = {namespace: None}
    for host in hosts:
        ref = service_names(host, namespace)
        if ref is not None and ref.namespace not in SYSTEM_NAMESPACES:
            out.setdefault(ref.namespace, None)
    return list(out)


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def resolve(host: str, namespace: str, services: Iterable[JSON]) -> JSON | None:
    """The Service `host` names from a pod in `namespace`: by DNS name form or by ClusterIP."""
    services = [s for s in services if isinstance(s, dict) and s.get("kind", "Service") == "Service"]
    if _is_ip(host):
        for svc in services:
            ips = [_spec(svc).get("clusterIP"), *(_spec(svc).get("clusterIPs") or [])]
            if host in ips:
                return svc
        return None
    ref = service_names(host, namespace)
    if ref is None:
        return None
    for svc in services:
        meta = _meta(svc)
        if meta.get("name") == ref.name and (meta.get("namespace") or namespace) == ref.namespace:
            return svc
    return None


def _labels(obj: Any) -> Mapping[str, Any]:
    labels = obj.get("labels") if isinstance(obj, dict) else None
    return labels if isinstance(labels, dict) else {}


def selects(selector: Mapping[str, Any], labels: Mapping[str, Any]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Dependency:
    """What stands behind one host an error names."""

    host: str
    service: ServiceRef
    ready_endpoints: int
    endpoints: int
    workload: str  # "Deployment orders-db", "" when no workload was found
    replicas: int | None
    ready_replicas: int | None

    @property
    def down(self) -> bool:
        return self.ready_endpoints == 0

    def describe(self) -> str:
        text = f"Service {self.service.key()} has {self.ready_endpoints} ready endpoints"
        if self.endpoints != self.ready_endpoints:
            text += f" ({self.endpoints - self.ready_endpoints} not ready)"
        if self.workload:
            text += f"; {self.workload} has {self.replicas if self.replicas is not None else '?'} replicas"
            if self.replicas and self.ready_replicas is not None:
                text += f", {self.ready_replicas} ready"
        elif self.ready_endpoints == 0:
            text += "; no Deployment or StatefulSet runs pods it selects"
        return text


def _endpoint_counts(service: ServiceRef, slices: Iterable[JSON]) -> tuple[int, int]:
    total = ready = 0
    for sl in slices:
        if not isinstance(sl, dict) or sl.get("kind", "EndpointSlice") != "EndpointSlice":
            continue
        meta = _meta(sl)
        if (
            _labels(meta).get(SERVICE_NAME_LABEL) != service.name
            or meta.get("namespace") != service.namespace
        ):
            continue
        for ep in sl.get("endpoints") or []:
            if not isinstance(ep, dict):
                continue
            total += 1
            conditions = ep.get("conditions")
            if (
                not isinstance(conditions, dict) or conditions.get("ready") is not False
            ):  # the API: a missing `ready` means ready
                ready += 1
    return total, ready


def _workload(service: JSON, objects: Iterable[JSON]) -> JSON | None:
    selector = _spec(service).get("selector")
    if not isinstance(selector, dict) or not selector:
        return None
    ns = _meta(service).get("namespace")
    for obj in objects:
        if (
            not isinstance(obj, dict)
            or obj.get("kind") not in WORKLOAD_KINDS
            or _meta(obj).get("namespace") != ns
        ):
            continue
        template = _spec(obj).get("template")
        if selects(selector, _labels(_meta(template) if isinstance(template, dict) else {})):
            return obj
    return None


def trace(hosts: Iterable[str], namespace: str, related: Iterable[JSON]) -> list[Dependency]:
    """Each host resolved to a Service, with its ready endpoints and the workload behind it."""
    objects = [o for o in related if isinstance(o, dict)]
    services = [o for o in objects if o.get("kind") == "Service"]
    out: dict[ServiceRef, Dependency] = {}
    for host in hosts:
        svc = resolve(host, namespace, services)
        if svc is None:
            continue
        meta = _meta(svc)
        ref = ServiceRef(str(meta.get("namespace") or namespace), str(meta.get("name") or ""))
        if ref in out:
            continue
        total, ready = _endpoint_counts(ref, objects)
        workload = _workload(svc, objects)
        status = (workload or {}).get("status")
        status = status if isinstance(status, dict) else {}
        out[ref] = Dependency(
            host=host,
            service=ref,
            ready_endpoints=ready,
            endpoints=total,
            workload=f"{workload.get('kind')} {_meta(workload).get('name')}" if workload else "",
            replicas=_int(_spec(workload).get("replicas")) if workload else None,
            ready_replicas=(_int(status.get("readyReplicas")) or 0) if workload else None,
        )
    return list(out.values())
