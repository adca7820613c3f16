"""Builders for realistic Pod, Event and Node objects used by the pure unit tests."""

from __future__ import annotations

import copy
from typing import Any

NOW = "2026-11-20T10:00:00Z"
UID = "5b1f7c1e-8d2a-4d7e-9a51-0c9d8e7f6a51"


def pod(
    name: str = "checkout-api-7d9f8b6c4-x2kqz",
    namespace: str = "shop",
    phase: str = "Running",
    containers: list[dict[str, Any]] | None = None,
    statuses: list[dict[str, Any]] | None = None,
    init_statuses: list[dict[str, Any]] | None = None,
    conditions: list[dict[str, Any]] | None = None,
    node: str | None = "node-a",
    owner: bool = True,
    **status_extra: Any,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": UID}
    if owner:
        meta["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name.rsplit("-", 1)[0], "uid": "rs-uid",
             "controller": True, "blockOwnerDeletion": True}
        ]  # fmt: skip
    spec: dict[str, Any] = {
        "containers": containers
        or [{"name": "app", "image": "registry.example.com/shop/checkout:1.4.2", "ports": [{"containerPort": 8080}]}]
    }
    if node:
        spec["nodeName"] = node
    status: dict[str, Any] = {"phase": phase, **status_extra}
    if statuses is not None:
        status["containerStatuses"] = statuses
    if init_statuses is not None:
        status["initContainerStatuses"] = init_statuses
    if conditions is not None:
        status["conditions"] = conditions
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def waiting(reason: str, message: str = "", restarts: int = 0, last: dict[str, Any] | None = None) -> dict[str, Any]:
    s: dict[str, Any] = {"name": "app", "ready": False, "restartCount": restarts,
                         "state": {"waiting": {"reason": reason, "message": message}}}  # fmt: skip
    if last:
        s["lastState"] = {"terminated": last}
    return s


def running(ready: bool = True, restarts: int = 0, last: dict[str, Any] | None = None) -> dict[str, Any]:
    s: dict[str, Any] = {"name": "app", "ready": ready, "restartCount": restarts,
                         "state": {"running": {"startedAt": "2026-11-20T09:00:00Z"}}}  # fmt: skip
    if last:
        s["lastState"] = {"terminated": last}
    return s


def terminated(reason: str = "Error", code: int = 1, finished: str = "2026-11-20T09:58:00Z") -> dict[str, Any]:
    return {"exitCode": code, "reason": reason, "startedAt": "2026-11-20T09:57:00Z", "finishedAt": finished}


def event(reason: str, message: str, kind: str = "Warning", component: str = "kubelet", count: int = 3) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": f"x.{reason.lower()}", "namespace": "shop"},
        "involvedObject": {"kind": "Pod", "name": "checkout-api-7d9f8b6c4-x2kqz", "namespace": "shop", "uid": UID},
        "reason": reason, "message": message, "type": kind, "source": {"component": component},
        "count": count, "firstTimestamp": "2026-11-20T09:40:00Z", "lastTimestamp": "2026-11-20T09:59:00Z",
    }  # fmt: skip


def node(name: str = "node-a", ready: str = "True", **pressure: str) -> dict[str, Any]:
    conds = [{"type": "Ready", "status": ready, "reason": "KubeletReady" if ready == "True" else "NodeStatusUnknown",
              "message": "kubelet is posting ready status" if ready == "True" else "Kubelet stopped posting node status."}]  # fmt: skip
    for ctype, status in pressure.items():
        conds.append({"type": ctype, "status": status, "reason": f"Kubelet{ctype}", "message": f"kubelet has {ctype}"})
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "status": {"conditions": conds}}


def deployment(name: str = "checkout-api", replicas: int = 3) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "shop", "uid": "dep-uid"},
            "spec": {"replicas": replicas}, "status": {"replicas": replicas}}  # fmt: skip


def clone(obj: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(obj)
