"""Stand-ins for kubelet, kube-scheduler and the node lifecycle controller.

The test control plane (scripts/cluster) runs etcd, kube-apiserver and
kube-controller-manager only. Nothing runs containers, so these helpers write
what those components would write, through the same API calls they use:

* nodes: created with a kubelet-like status; made NotReady the way the node
  lifecycle controller does it (conditions Unknown, unreachable taints);
* scheduling: the ``pods/binding`` subresource (sets spec.nodeName and
  PodScheduled=True), or PodScheduled=False/Unschedulable through ``pods/status``;
* pod states: ``pods/status`` patches with the fields a kubelet reports
  (phase, conditions, containerStatuses with state/lastState/restartCount);
* events: core/v1 Events as kubelet and the node controller post them, and
  events.k8s.io/v1 Events as default-scheduler posts them.

Every function takes a ``kubernetes.client.ApiClient`` (sync) and returns the
object as the API server stored it. Used by tests/cluster/* and the operator's
end-to-end tests.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, watch
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

JSON = dict[str, Any]

KUBELET_VERSION = "v1.36.3"
CONTAINER_RUNTIME = "containerd://2.1.4"
SCHEDULER_INSTANCE = "default-scheduler-sre-agent-test"
NOT_READY_MESSAGE = "Kubelet stopped posting node status."
DEFAULT_UNSCHEDULABLE_MESSAGE = (
    "0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available: "
    "3 No preemption victims found for incoming pod."
)
# kubelet's crash-loop back-off: 10s doubling up to 5m, printed as Go durations.
_BACKOFF_SECONDS = (10, 20, 40, 80, 160, 300)
_BACKOFFS = tuple(f"{s // 60}m{s % 60}s" if s >= 60 else f"{s}s" for s in _BACKOFF_SECONDS)


# --------------------------------------------------------------------------- basics


def now() -> str:
    """The current time as the API server writes it (RFC 3339, seconds, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _hex(seed: str, n: int = 64) -> str:
    out = ""
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}/{i}".encode()).hexdigest()
        i += 1
    return out[:n]


def _core(api: ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


def _raw(resp: Any) -> JSON:
    data: JSON = json.loads(resp.data)
    return data


def get_pod(api: ApiClient, namespace: str, name: str) -> JSON:
    """The pod as JSON (camelCase keys, exactly what the API server returns)."""
    return _raw(_core(api).read_namespaced_pod(name, namespace, _preload_content=False))


def get_node(api: ApiClient, name: str) -> JSON:
    """The node as JSON (camelCase keys)."""
    return _raw(_core(api).read_node(name, _preload_content=False))


def normalize_image(image: str) -> str:
    """What the container runtime reports for an image reference (docker.io/library/... form)."""
    name, tag = image, ""
    if "@" not in image:
        last = image.rsplit("/", 1)[-1]
        if ":" not in last:
            tag = ":latest"
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    return name + tag


def image_id(image: str) -> str:
    """A stable, realistic imageID (repo@sha256:digest) for an image reference."""
    ref = normalize_image(image)
    repo = ref.split("@", 1)[0]
    last = repo.rsplit("/", 1)[-1]
    if ":" in last:
        repo = repo[: repo.rfind(":")]
    return f"{repo}@sha256:{_hex('image:' + ref)}"


def _container_id(pod: JSON, container: str, restart: int) -> str:
    uid = pod["metadata"]["uid"]
    return f"containerd://{_hex(f'{uid}/{container}/{restart}')}"


def _pod_ip(pod: JSON) -> str:
    h = int(_hex(pod["metadata"]["uid"], 8), 16)
    return f"10.244.{(h >> 8) % 250 + 1}.{h % 250 + 2}"


def _node_ip(name: str) -> str:
    return f"172.18.0.{int(_hex('node:' + name, 4), 16) % 250 + 2}"


def pod_ref_string(pod: JSON) -> str:
    """kubelet's format.Pod(): name_namespace(uid)."""
    md = pod["metadata"]
    return f"{md['name']}_{md['namespace']}({md['uid']})"


# --------------------------------------------------------------------------- events


def post_event(
    api: ApiClient,
    obj: JSON,
    *,
    reason: str,
    message: str,
    type: str = "Normal",
    component: str = "kubelet",
    host: str | None = None,
    field_path: str | None = None,
    count: int = 1,
    first_timestamp: str | None = None,
) -> JSON:
    """Post a core/v1 Event about ``obj`` as kubelet (or node-controller, ...) records it.

    ``first_timestamp`` back-dates the first occurrence (an event repeated ``count`` times since).
    """
    md = obj["metadata"]
    kind = obj.get("kind") or ("Node" if "namespace" not in md else "Pod")
    namespace = md.get("namespace") or "default"
    involved: JSON = {
        "kind": kind,
        "name": md["name"],
        "uid": md["uid"],
        "apiVersion": obj.get("apiVersion", "v1"),
        "resourceVersion": md.get("resourceVersion", ""),
    }
    if md.get("namespace"):
        involved["namespace"] = md["namespace"]
    if field_path:
        involved["fieldPath"] = field_path
    ts = now()
    source: JSON = {"component": component}
    if host:
        source["host"] = host
    body: JSON = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{md['name']}.{time.time_ns():x}", "namespace": namespace},
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "type": type,
        "source": source,
        "firstTimestamp": first_timestamp or ts,
        "lastTimestamp": ts,
        "count": count,
        "reportingComponent": component,
        "reportingInstance": host or "",
    }
    return _raw(_core(api).create_namespaced_event(namespace, body, _preload_content=False))


def post_scheduler_event(
    api: ApiClient,
    pod: JSON,
    *,
    reason: str,
    message: str,
    type: str = "Warning",
    action: str = "Scheduling",
) -> JSON:
    """Post an events.k8s.io/v1 Event as default-scheduler does (FailedScheduling, Scheduled)."""
    md = pod["metadata"]
    body: JSON = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": f"{md['name']}.{time.time_ns():x}", "namespace": md["namespace"]},
        "eventTime": _micro_now(),
        "reportingController": "default-scheduler",
        "reportingInstance": SCHEDULER_INSTANCE,
        "action": action,
        "reason": reason,
        "note": message,
        "type": type,
        "regarding": {
            "kind": "Pod",
            "namespace": md["namespace"],
            "name": md["name"],
            "uid": md["uid"],
            "apiVersion": "v1",
            "resourceVersion": md.get("resourceVersion", ""),
        },
    }
    resp = client.EventsV1Api(api).create_namespaced_event(md["namespace"], body, _preload_content=False)
    return _raw(resp)


def list_events(api: ApiClient, namespace: str, name: str) -> list[JSON]:
    """core/v1 Events whose involvedObject is ``name`` (scheduler events included)."""
    resp = _core(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}", _preload_content=False
    )
    items: list[JSON] = _raw(resp)["items"]
    return items


# --------------------------------------------------------------------------- nodes


def _node_conditions(ready: bool, ts: str) -> list[JSON]:
    def cond(type_: str, status: str, reason: str, message: str) -> JSON:
        return {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": ts,
            "lastTransitionTime": ts,
        }

    return [
        cond(
            "MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"
        ),
        cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        cond(
            "Ready",
            "True" if ready else "False",
            "KubeletReady" if ready else "KubeletNotReady",
            "kubelet is posting ready status" if ready else "container runtime network not ready",
        ),
    ]


def create_node(
    api: ApiClient,
    name: str,
    *,
    cpu: str = "4",
    memory: str = "16Gi",
    pods: int = 110,
    labels: Mapping[str, str] | None = None,
    taints: Sequence[JSON] = (),
) -> JSON:
    """Register a Ready node the way kubelet does: object first, then its status."""
    node_labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
        **(labels or {}),
    }
    body: JSON = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": node_labels,
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": {"taints": list(taints)} if taints else {},
    }
    core = _core(api)
    core.create_node(body, _preload_content=False)
    ts = now()
    mem_ki = _quantity_ki(memory)
    status: JSON = {
        "capacity": {
            "cpu": cpu,
            "memory": f"{mem_ki}Ki",
            "pods": str(pods),
            "ephemeral-storage": "102400000Ki",
            "hugepages-1Gi": "0",
            "hugepages-2Mi": "0",
        },
        "allocatable": {
            "cpu": cpu,
            "memory": f"{max(mem_ki - 102400, 0)}Ki",
            "pods": str(pods),
            "ephemeral-storage": "94371840Ki",
            "hugepages-1Gi": "0",
            "hugepages-2Mi": "0",
        },
        "conditions": _node_conditions(True, ts),
        "addresses": [
            {"type": "InternalIP", "address": _node_ip(name)},
            {"type": "Hostname", "address": name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": _hex("machine:" + name, 32),
            "systemUUID": _uuid("system:" + name),
            "bootID": _uuid("boot:" + name),
            "kernelVersion": "6.8.0-60-generic",
            "osImage": "Debian GNU/Linux 12 (bookworm)",
            "containerRuntimeVersion": CONTAINER_RUNTIME,
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    }
    return _raw(core.patch_node_status(name, {"status": status}, _preload_content=False))


def _uuid(seed: str) -> str:
    h = _hex(seed, 32)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _quantity_ki(q: str) -> int:
    units = {"Ki": 1, "Mi": 1024, "Gi": 1024**2, "Ti": 1024**3}
    for suffix, mult in units.items():
        if q.endswith(suffix):
            return int(float(q[: -len(suffix)]) * mult)
    return int(q) // 1024


def node_heartbeat(api: ApiClient, name: str) -> JSON:
    """Refresh lastHeartbeatTime of every condition, as kubelet does every 10 s (status unchanged)."""
    node = get_node(api, name)
    ts = now()
    conditions = node["status"].get("conditions") or []
    for c in conditions:
        c["lastHeartbeatTime"] = ts
    return _raw(
        _core(api).patch_node_status(name, {"status": {"conditions": conditions}}, _preload_content=False)
    )


def make_node_not_ready(
    api: ApiClient, name: str, *, taint: bool = True, mark_pods: bool = True, events: bool = True
) -> JSON:
    """What the node lifecycle controller does when kubelet stops posting status.

    Every condition becomes Unknown/NodeStatusUnknown ("Kubelet stopped posting node
    status."), heartbeats stay old; the unreachable taints are added; the pods on the
    node get Ready=False; a NodeNotReady event is posted for the node and its pods.
    """
    core = _core(api)
    node = get_node(api, name)
    ts = now()
    conditions = node["status"].get("conditions") or []
    for c in conditions:
        if c["status"] != "Unknown":
            c["lastTransitionTime"] = ts
        c["status"] = "Unknown"
        c["reason"] = "NodeStatusUnknown"
        c["message"] = NOT_READY_MESSAGE
    node = _raw(core.patch_node_status(name, {"status": {"conditions": conditions}}, _preload_content=False))
    if taint:
        taints = [
            t
            for t in node["spec"].get("taints") or []
            if t.get("key") not in ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")
        ]
        taints += [
            {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule", "timeAdded": ts},
            {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": ts},
        ]
        node = _raw(core.patch_node(name, {"spec": {"taints": taints}}, _preload_content=False))
    if events:
        post_event(
            api,
            {"kind": "Node", "apiVersion": "v1", "metadata": node["metadata"]},
            reason="NodeNotReady",
            message=f"Node {name} status is now: NodeNotReady",
            component="node-controller",
        )
    if mark_pods:
        pods = _raw(
            core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={name}", _preload_content=False)
        )["items"]
        for pod in pods:
            conds = _set_condition(pod["status"].get("conditions") or [], "Ready", "False", ts)
            pod = _patch_status(api, pod, {"conditions": conds})
            if events:
                post_event(
                    api,
                    pod,
                    reason="NodeNotReady",
                    message="Node is not ready",
                    type="Warning",
                    component="node-controller",
                )
    return node


def make_node_ready(api: ApiClient, name: str) -> JSON:
    """kubelet is back: Ready conditions again, unreachable/not-ready taints removed."""
    core = _core(api)
    node = get_node(api, name)
    fresh = _node_conditions(True, now())
    node = _raw(core.patch_node_status(name, {"status": {"conditions": fresh}}, _preload_content=False))
    taints = [
        t
        for t in node["spec"].get("taints") or []
        if t.get("key") not in ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")
    ]
    return _raw(core.patch_node(name, {"spec": {"taints": taints or None}}, _preload_content=False))


def delete_node(api: ApiClient, name: str) -> None:
    try:
        _core(api).delete_node(name, _preload_content=False)
    except ApiException as exc:
        if exc.status != 404:
            raise


# --------------------------------------------------------------------------- pod status plumbing


def _set_condition(
    conditions: list[JSON],
    type_: str,
    status: str,
    ts: str,
    reason: str | None = None,
    message: str | None = None,
) -> list[JSON]:
    out = [dict(c) for c in conditions]
    for c in out:
        if c["type"] == type_:
            if c.get("status") != status:
                c["lastTransitionTime"] = ts
            c["status"] = status
            c.pop("reason", None)
            c.pop("message", None)
            break
    else:
        c = {"type": type_, "status": status, "lastProbeTime": None, "lastTransitionTime": ts}
        out.append(c)
    if reason:
        c["reason"] = reason
    if message:
        c["message"] = message
    return out


def _patch_status(api: ApiClient, pod: JSON, status: JSON) -> JSON:
    md = pod["metadata"]
    resp = _core(api).patch_namespaced_pod_status(
        md["name"], md["namespace"], {"status": status}, _preload_content=False
    )
    return _raw(resp)


def _container_status(
    pod: JSON,
    spec: JSON,
    *,
    state: JSON,
    last_state: JSON | None = None,
    ready: bool,
    started: bool,
    restarts: int,
    pulled: bool = True,
) -> JSON:
    image = spec["image"]
    cs: JSON = {
        "name": spec["name"],
        "state": state,
        "lastState": last_state or {},
        "ready": ready,
        "restartCount": restarts,
        "image": normalize_image(image) if pulled else image,
        "imageID": image_id(image) if pulled else "",
        "started": started,
    }
    if pulled and ("running" in state or "terminated" in state or last_state):
        cs["containerID"] = _container_id(pod, spec["name"], restarts)
    resources = spec.get("resources") or {}
    if resources:
        cs["resources"] = {k: v for k, v in resources.items() if k in ("requests", "limits")}
        if resources.get("requests"):
            cs["allocatedResources"] = resources["requests"]
    mounts = [
        {
            "name": m["name"],
            "mountPath": m["mountPath"],
            **({"readOnly": True, "recursiveReadOnly": "Disabled"} if m.get("readOnly") else {}),
        }
        for m in spec.get("volumeMounts") or []
    ]
    if mounts:
        cs["volumeMounts"] = mounts
    cs["user"] = {"linux": {"uid": 0, "gid": 0, "supplementalGroups": [0]}}
    return cs


def _kubelet_status(
    api: ApiClient,
    pod: JSON,
    statuses: Mapping[str, JSON],
    *,
    phase: str,
    extra_conditions: Iterable[tuple[str, str, str | None, str | None]] = (),
    running_sandbox: bool = True,
) -> JSON:
    """Patch pods/status with a full kubelet-style status built from container statuses."""
    ts = now()
    status = pod.get("status") or {}
    node = pod["spec"].get("nodeName")
    if not node:
        raise ValueError(f"pod {pod['metadata']['name']} is not bound to a node; bind_pod() first")
    unready = sorted(name for name, cs in statuses.items() if not cs["ready"])
    conds = status.get("conditions") or []
    conds = _set_condition(conds, "PodReadyToStartContainers", "True" if running_sandbox else "False", ts)
    conds = _set_condition(conds, "Initialized", "True", ts)
    if phase in ("Failed", "Succeeded"):
        conds = _set_condition(
            conds, "Ready", "False", ts, reason="PodFailed" if phase == "Failed" else "PodCompleted"
        )
        conds = _set_condition(
            conds, "ContainersReady", "False", ts, reason="PodFailed" if phase == "Failed" else "PodCompleted"
        )
    elif unready:
        msg = f"containers with unready status: [{' '.join(unready)}]"
        conds = _set_condition(conds, "Ready", "False", ts, reason="ContainersNotReady", message=msg)
        conds = _set_condition(
            conds, "ContainersReady", "False", ts, reason="ContainersNotReady", message=msg
        )
    else:
        conds = _set_condition(conds, "Ready", "True", ts)
        conds = _set_condition(conds, "ContainersReady", "True", ts)
    conds = _set_condition(conds, "PodScheduled", "True", ts)
    for type_, st, reason, message in extra_conditions:
        conds = _set_condition(conds, type_, st, ts, reason=reason, message=message)
    order = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
    conds.sort(key=lambda c: order.index(c["type"]) if c["type"] in order else len(order))
    generation = pod["metadata"].get("generation", 1)
    for c in conds:
        c["observedGeneration"] = generation
    host_ip = _node_ip(node)
    pod_ip = _pod_ip(pod)
    new: JSON = {
        "phase": phase,
        "conditions": conds,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": status.get("startTime") or ts,
        "containerStatuses": [statuses[k] for k in sorted(statuses)],
        "observedGeneration": generation,
    }
    if running_sandbox:
        new["podIP"] = pod_ip
        new["podIPs"] = [{"ip": pod_ip}]
    return _patch_status(api, pod, new)


def _containers(pod: JSON) -> list[JSON]:
    containers: list[JSON] = pod["spec"]["containers"]
    return containers


def _running(
    pod: JSON,
    spec: JSON,
    restarts: int,
    ready: bool = True,
    last_state: JSON | None = None,
    started_at: str | None = None,
) -> JSON:
    return _container_status(
        pod,
        spec,
        state={"running": {"startedAt": started_at or now()}},
        last_state=last_state,
        ready=ready,
        started=True,
        restarts=restarts,
    )


def _others(pod: JSON, target: JSON) -> dict[str, JSON]:
    """Every container's status but `target`'s, as the pod has it (running when never reported)."""
    current = _current(pod)
    return {
        c["name"]: current.get(c["name"]) or _running(pod, c, 0)
        for c in _containers(pod)
        if c["name"] != target["name"]
    }


def _current(pod: JSON) -> dict[str, JSON]:
    return {cs["name"]: cs for cs in (pod.get("status") or {}).get("containerStatuses") or []}


def _pick(pod: JSON, container: str | None) -> JSON:
    containers = _containers(pod)
    if container is None:
        return containers[0]
    for c in containers:
        if c["name"] == container:
            return c
    raise ValueError(f"pod {pod['metadata']['name']} has no container {container!r}")


# --------------------------------------------------------------------------- scheduler


def bind_pod(api: ApiClient, namespace: str, name: str, node: str, *, event: bool = True) -> JSON:
    """Bind the pod to ``node`` through pods/binding, as kube-scheduler does."""
    body = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name, "namespace": namespace},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    }
    # The response is a Status, which the generated client cannot turn into a V1Binding.
    _core(api).create_namespaced_pod_binding(name, namespace, body, _preload_content=False)
    pod = get_pod(api, namespace, name)
    if event:
        post_scheduler_event(
            api,
            pod,
            reason="Scheduled",
            type="Normal",
            action="Binding",
            message=f"Successfully assigned {namespace}/{name} to {node}",
        )
    return pod


def make_unschedulable(
    api: ApiClient,
    namespace: str,
    name: str,
    *,
    message: str = DEFAULT_UNSCHEDULABLE_MESSAGE,
    event: bool = True,
) -> JSON:
    """PodScheduled=False/Unschedulable and a FailedScheduling event, as kube-scheduler writes them."""
    pod = get_pod(api, namespace, name)
    if pod["spec"].get("nodeName"):
        raise ValueError(f"pod {namespace}/{name} is already bound")
    conds = _set_condition(
        (pod.get("status") or {}).get("conditions") or [],
        "PodScheduled",
        "False",
        now(),
        reason="Unschedulable",
        message=message,
    )
    pod = _patch_status(api, pod, {"phase": "Pending", "conditions": conds})
    if event:
        post_scheduler_event(api, pod, reason="FailedScheduling", message=message)
    return pod


# --------------------------------------------------------------------------- kubelet


def run_pod(api: ApiClient, namespace: str, name: str, *, ready: bool = True, events: bool = True) -> JSON:
    """Start every container: phase Running, containers running (and Ready unless ready=False)."""
    pod = get_pod(api, namespace, name)
    node = pod["spec"].get("nodeName")
    current = _current(pod)
    statuses = {
        c["name"]: _running(pod, c, current.get(c["name"], {}).get("restartCount", 0), ready=ready)
        for c in _containers(pod)
    }
    pod = _kubelet_status(api, pod, statuses, phase="Running")
    if events:
        for c in _containers(pod):
            fp = f"spec.containers{{{c['name']}}}"
            post_event(
                api,
                pod,
                reason="Pulled",
                host=node,
                field_path=fp,
                message=f'Container image "{c["image"]}" already present on machine',
            )
            post_event(
                api,
                pod,
                reason="Created",
                host=node,
                field_path=fp,
                message=f"Created container: {c['name']}",
            )
            post_event(
                api, pod, reason="Started", host=node, field_path=fp, message=f"Started container {c['name']}"
            )
    return pod


def _terminated(
    pod: JSON, spec: JSON, restarts: int, exit_code: int, reason: str, message: str | None = None
) -> JSON:
    t: JSON = {
        "exitCode": exit_code,
        "reason": reason,
        "startedAt": now(),
        "finishedAt": now(),
        "containerID": _container_id(pod, spec["name"], restarts),
    }
    if message:
        t["message"] = message
    return {"terminated": t}


def fail_pod(api: ApiClient, namespace: str, name: str, *, exit_code: int = 1, events: bool = True) -> JSON:
    """A pod with restartPolicy Never whose containers exited non-zero: phase Failed, each container
    terminated with `exit_code` (reason Error), Ready=False/PodFailed, no restart (a Job's pod)."""
    pod = get_pod(api, namespace, name)
    statuses = {
        c["name"]: _container_status(
            pod, c, state=_terminated(pod, c, 0, exit_code, "Error"), ready=False, started=False, restarts=0
        )
        for c in _containers(pod)
    }
    pod = _kubelet_status(api, pod, statuses, phase="Failed", running_sandbox=False)
    if events:
        for c in _containers(pod):
            post_event(
                api,
                pod,
                reason="Started",
                host=pod["spec"]["nodeName"],
                field_path=f"spec.containers{{{c['name']}}}",
                message=f"Started container {c['name']}",
            )
    return pod


def crash_loop(
    api: ApiClient,
    namespace: str,
    name: str,
    *,
    container: str | None = None,
    restarts: int = 3,
    exit_code: int = 1,
    reason: str = "Error",
    events: bool = True,
) -> JSON:
    """The container keeps dying: waiting/CrashLoopBackOff, lastState.terminated, restartCount.

    ``reason="OOMKilled", exit_code=137`` gives the OOM flavour (see :func:`oom_kill`).
    """
    pod = get_pod(api, namespace, name)
    node = pod["spec"]["nodeName"] if pod["spec"].get("nodeName") else None
    target = _pick(pod, container)
    current = _current(pod)
    statuses: dict[str, JSON] = {}
    for c in _containers(pod):
        if c["name"] == target["name"]:
            backoff = _BACKOFFS[min(max(restarts - 1, 0), len(_BACKOFFS) - 1)]
            statuses[c["name"]] = _container_status(
                pod,
                c,
                state={
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": f"back-off {backoff} restarting failed container={c['name']} "
                        f"pod={pod_ref_string(pod)}",
                    }
                },
                last_state=_terminated(pod, c, max(restarts - 1, 0), exit_code, reason),
                ready=False,
                started=False,
                restarts=restarts,
            )
        else:
            prev = current.get(c["name"])
            statuses[c["name"]] = prev or _running(pod, c, 0)
    pod = _kubelet_status(api, pod, statuses, phase="Running")
    if events:
        fp = f"spec.containers{{{target['name']}}}"
        post_event(
            api,
            pod,
            reason="Pulled",
            host=node,
            field_path=fp,
            count=restarts + 1,
            message=f'Container image "{target["image"]}" already present on machine',
        )
        post_event(
            api,
            pod,
            reason="Created",
            host=node,
            field_path=fp,
            count=restarts + 1,
            message=f"Created container: {target['name']}",
        )
        post_event(
            api,
            pod,
            reason="Started",
            host=node,
            field_path=fp,
            count=restarts + 1,
            message=f"Started container {target['name']}",
        )
        post_event(
            api,
            pod,
            reason="BackOff",
            type="Warning",
            host=node,
            field_path=fp,
            count=max(restarts, 1),
            message=f"Back-off restarting failed container {target['name']} in pod {pod_ref_string(pod)}",
        )
    return pod


def oom_kill(
    api: ApiClient,
    namespace: str,
    name: str,
    *,
    container: str | None = None,
    restarts: int = 1,
    crash_looping: bool = True,
    events: bool = True,
) -> JSON:
    """The container was OOM-killed (exit 137): lastState.terminated.reason OOMKilled.

    With ``crash_looping`` the container now waits in CrashLoopBackOff, otherwise it
    runs again after the restart.
    """
    if crash_looping:
        return crash_loop(
            api,
            namespace,
            name,
            container=container,
            restarts=restarts,
            exit_code=137,
            reason="OOMKilled",
            events=events,
        )
    pod = get_pod(api, namespace, name)
    target = _pick(pod, container)
    current = _current(pod)
    statuses = {
        c["name"]: (
            _running(pod, c, restarts, last_state=_terminated(pod, c, restarts - 1, 137, "OOMKilled"))
            if c["name"] == target["name"]
            else current.get(c["name"]) or _running(pod, c, 0)
        )
        for c in _containers(pod)
    }
    pod = _kubelet_status(api, pod, statuses, phase="Running")
    if events:
        fp = f"spec.containers{{{target['name']}}}"
        node = pod["spec"]["nodeName"]
        post_event(
            api,
            pod,
            reason="Started",
            host=node,
            field_path=fp,
            count=restarts + 1,
            message=f"Started container {target['name']}",
        )
    return pod


def image_pull_backoff(
    api: ApiClient,
    namespace: str,
    name: str,
    *,
    container: str | None = None,
    error: str | None = None,
    events: bool = True,
) -> JSON:
    """The image cannot be pulled: phase Pending, waiting/ImagePullBackOff, Failed+BackOff events."""
    pod = get_pod(api, namespace, name)
    node = pod["spec"]["nodeName"] if pod["spec"].get("nodeName") else None
    target = _pick(pod, container)
    image = target["image"]
    ref = normalize_image(image)
    err = error or (
        f'failed to pull and unpack image "{ref}": failed to resolve reference "{ref}": {ref}: not found'
    )
    statuses: dict[str, JSON] = {}
    for c in _containers(pod):
        if c["name"] == target["name"]:
            statuses[c["name"]] = _container_status(
                pod,
                c,
                state={
                    "waiting": {
                        "reason": "ImagePullBackOff",
                        "message": f'Back-off pulling image "{image}": ErrImagePull: {err}',
                    }
                },
                ready=False,
                started=False,
                restarts=0,
                pulled=False,
            )
        else:
            statuses[c["name"]] = _running(pod, c, 0)
    pod = _kubelet_status(api, pod, statuses, phase="Pending")
    if events:
        fp = f"spec.containers{{{target['name']}}}"
        post_event(
            api, pod, reason="Pulling", host=node, field_path=fp, count=3, message=f'Pulling image "{image}"'
        )
        post_event(
            api,
            pod,
            reason="Failed",
            type="Warning",
            host=node,
            field_path=fp,
            count=3,
            message=f'Failed to pull image "{image}": {err}',
        )
        post_event(
            api,
            pod,
            reason="Failed",
            type="Warning",
            host=node,
            field_path=fp,
            count=3,
            message="Error: ErrImagePull",
        )
        post_event(
            api,
            pod,
            reason="BackOff",
            host=node,
            field_path=fp,
            count=4,
            message=f'Back-off pulling image "{image}"',
        )
        post_event(
            api,
            pod,
            reason="Failed",
            type="Warning",
            host=node,
            field_path=fp,
            count=4,
            message="Error: ImagePullBackOff",
        )
    return pod


def probe_failure(
    api: ApiClient,
    namespace: str,
    name: str,
    *,
    container: str | None = None,
    probe: str = "Readiness",
    output: str = "HTTP probe failed with statuscode: 503",
    count: int = 12,
    events: bool = True,
) -> JSON:
    """A running container fails its readiness probe: Ready=False plus Unhealthy events."""
    pod = get_pod(api, namespace, name)
    target = _pick(pod, container)
    current = _current(pod)
    statuses = {}
    for c in _containers(pod):
        prev = current.get(c["name"]) or {}
        started_at = ((prev.get("state") or {}).get("running") or {}).get("startedAt")
        statuses[c["name"]] = _running(
            pod, c, prev.get("restartCount", 0), ready=c["name"] != target["name"], started_at=started_at
        )
    pod = _kubelet_status(api, pod, statuses, phase="Running")
    if events:
        post_event(
            api,
            pod,
            reason="Unhealthy",
            type="Warning",
            host=pod["spec"]["nodeName"],
            field_path=f"spec.containers{{{target['name']}}}",
            count=count,
            message=f"{probe} probe failed: {output}",
        )
    return pod


def ago(seconds: float) -> str:
    """A time `seconds` before now, as the API server writes it."""
    return datetime.fromtimestamp(time.time() - seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def crash_loop_terminated(
    api: ApiClient,
    namespace: str,
    name: str,
    *,
    container: str | None = None,
    restarts: int = 3,
    exit_code: int = 1,
    run_seconds: int = 2,
    events: bool = True,
) -> JSON:
    """A crash loop as a real kubelet shows it for most of each back-off: ``state.terminated``
    (exit ``exit_code``, after a run of ``run_seconds``), ``lastState.terminated`` of the run
    before, ``restartCount`` growing, and no ``waiting`` reason at all."""
    pod = get_pod(api, namespace, name)
    target = _pick(pod, container)
    backoff = _BACKOFF_SECONDS[min(max(restarts - 1, 0), len(_BACKOFF_SECONDS) - 1)]
    statuses = _others(pod, target)
    c = target
    finished = ago(1)
    this_run: JSON = {
        "exitCode": exit_code,
        "reason": "Error",
        "startedAt": ago(1 + run_seconds),
        "finishedAt": finished,
        "containerID": _container_id(pod, c["name"], restarts),
    }
    previous: JSON = {
        "exitCode": exit_code,
        "reason": "Error",
        "startedAt": ago(2 + 2 * run_seconds + backoff),
        "finishedAt": ago(2 + run_seconds + backoff),
        "containerID": _container_id(pod, c["name"], max(restarts - 1, 0)),
    }
    statuses[c["name"]] = _container_status(
        pod,
        c,
        state={"terminated": this_run},
        last_state={"terminated": previous},
        ready=False,
        started=False,
        restarts=restarts,
    )
    if events:
        post_event(
            api,
            pod,
            reason="BackOff",
            type="Warning",
            host=pod["spec"].get("nodeName"),
            field_path=f"spec.containers{{{target['name']}}}",
            count=max(restarts, 1),
            message=f"Back-off restarting failed container {target['name']} in pod {pod_ref_string(pod)}",
        )
    return _kubelet_status(api, pod, statuses, phase="Running")


def restarted(
    api: ApiClient,
    namespace: str,
    name: str,
    *,
    container: str | None = None,
    restarts: int = 7,
    run_seconds: int = 300,
    exit_code: int = 1,
) -> JSON:
    """Running again after its ``restarts``-th restart; the previous run lasted ``run_seconds`` and
    ended a few seconds ago with ``exit_code`` (what HighRestarts looks like)."""
    pod = get_pod(api, namespace, name)
    target = _pick(pod, container)
    statuses = _others(pod, target)
    c = target
    last: JSON = {
        "terminated": {
            "exitCode": exit_code,
            "reason": "Error",
            "startedAt": ago(3 + run_seconds),
            "finishedAt": ago(3),
            "containerID": _container_id(pod, c["name"], restarts - 1),
        }
    }
    statuses[c["name"]] = _running(pod, c, restarts, last_state=last, started_at=ago(2))
    return _kubelet_status(api, pod, statuses, phase="Running")


def failing_readiness(
    api: ApiClient,
    namespace: str,
    name: str,
    *,
    container: str | None = None,
    failing_for: int = 600,
    ready_changed: int = 60,
    output: str = "Get \"http://10.244.0.12:8080/ready\": context deadline exceeded",
) -> JSON:
    """A readiness probe that has failed for ``failing_for`` seconds, flapping: the container has run
    all along, Ready went False ``ready_changed`` seconds ago, and one aggregated Unhealthy event
    (count one per 10 s probe period) says it began long before. The event is posted first, as a
    kubelet's probe worker records it before the status manager syncs the pod."""
    pod = get_pod(api, namespace, name)
    target = _pick(pod, container)
    post_event(
        api,
        pod,
        reason="Unhealthy",
        type="Warning",
        host=pod["spec"]["nodeName"],
        field_path=f"spec.containers{{{target['name']}}}",
        count=max(3, failing_for // 10),
        first_timestamp=ago(failing_for),
        message=f"Readiness probe failed: {output}",
    )
    current = _current(pod)
    statuses = {
        c["name"]: _running(
            pod,
            c,
            (current.get(c["name"]) or {}).get("restartCount", 0),
            ready=c["name"] != target["name"],
            started_at=ago(failing_for + 120),
        )
        for c in _containers(pod)
    }
    pod = _kubelet_status(api, pod, statuses, phase="Running")
    conds = [
        {**c, "lastTransitionTime": ago(ready_changed)} if c["type"] in ("Ready", "ContainersReady") else c
        for c in pod["status"]["conditions"]
    ]
    return _patch_status(api, pod, {"conditions": conds})


def failed_mount(
    api: ApiClient,
    namespace: str,
    name: str,
    *,
    volume: str = "config",
    configmap: str = "app-config",
    stuck_for: int = 120,
) -> JSON:
    """Stuck in ContainerCreating for ``stuck_for`` seconds on a ConfigMap volume that does not
    exist: phase Pending, waiting ContainerCreating, FailedMount events (posted first)."""
    pod = get_pod(api, namespace, name)
    node = pod["spec"].get("nodeName")
    if not node:
        raise ValueError(f"pod {namespace}/{name} is not bound to a node; bind_pod() first")
    post_event(
        api,
        pod,
        reason="FailedMount",
        type="Warning",
        host=node,
        count=max(1, stuck_for // 60),
        first_timestamp=ago(stuck_for),
        message=f'MountVolume.SetUp failed for volume "{volume}" : configmap "{configmap}" not found',
    )
    statuses = {
        c["name"]: _container_status(
            pod,
            c,
            state={"waiting": {"reason": "ContainerCreating"}},
            ready=False,
            started=False,
            restarts=0,
            pulled=False,
        )
        for c in _containers(pod)
    }
    pod = _kubelet_status(api, pod, statuses, phase="Pending", running_sandbox=False)
    conds = [
        {**c, "lastTransitionTime": ago(stuck_for)} if c["type"] == "PodScheduled" else c
        for c in pod["status"]["conditions"]
    ]
    return _patch_status(api, pod, {"conditions": conds, "startTime": ago(stuck_for)})


def evict(
    api: ApiClient,
    namespace: str,
    name: str,
    *,
    resource: str = "memory",
    message: str | None = None,
    events: bool = True,
) -> JSON:
    """The kubelet's eviction manager killed the pod: phase Failed, reason Evicted."""
    pod = get_pod(api, namespace, name)
    target = _containers(pod)[0]
    msg = message or (
        f"The node was low on resource: {resource}. Threshold quantity: 100Mi, available: 51200Ki. "
        f"Container {target['name']} was using 1843200Ki, request is 0, has larger consumption "
        f"of {resource}. "
    )
    current = _current(pod)
    statuses = {
        c["name"]: _container_status(
            pod,
            c,
            state=_terminated(pod, c, current.get(c["name"], {}).get("restartCount", 0), 137, "Error"),
            ready=False,
            started=False,
            restarts=current.get(c["name"], {}).get("restartCount", 0),
        )
        for c in _containers(pod)
    }
    _kubelet_status(
        api,
        pod,
        statuses,
        phase="Failed",
        running_sandbox=False,
        extra_conditions=[
            ("DisruptionTarget", "True", "TerminationByKubelet", msg),
            ("PodReadyToStartContainers", "False", None, None),
        ],
    )
    pod = _patch_status(api, get_pod(api, namespace, name), {"reason": "Evicted", "message": msg})
    if events:
        post_event(api, pod, reason="Evicted", type="Warning", host=pod["spec"]["nodeName"], message=msg)
        post_event(
            api,
            pod,
            reason="Killing",
            host=pod["spec"]["nodeName"],
            field_path=f"spec.containers{{{target['name']}}}",
            message=f"Stopping container {target['name']}",
        )
    return pod


def finish_deletion(api: ApiClient, namespace: str, name: str) -> bool:
    """Complete a graceful delete, as kubelet does once containers stopped (delete, grace 0).

    A bound pod that is deleted only gets a deletionTimestamp; without this it
    stays Terminating forever. Returns False if the pod is already gone.
    """
    try:
        _core(api).delete_namespaced_pod(name, namespace, grace_period_seconds=0, _preload_content=False)
        return True
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise


# --------------------------------------------------------------------------- workloads


def wait_for(
    predicate: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.2, what: str = "condition"
) -> Any:
    """Poll ``predicate`` until it returns something truthy; return it or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def list_pods(api: ApiClient, namespace: str, label_selector: str = "") -> list[JSON]:
    resp = _core(api).list_namespaced_pod(
        namespace, label_selector=label_selector or None, _preload_content=False
    )
    items: list[JSON] = _raw(resp)["items"]
    return items


def selector_string(match_labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(match_labels.items()))


def wait_for_deployment_pods(
    api: ApiClient, namespace: str, name: str, *, timeout: float = 60.0
) -> list[JSON]:
    """Wait until kube-controller-manager has created all ``spec.replicas`` pods of a Deployment."""
    dep = _raw(client.AppsV1Api(api).read_namespaced_deployment(name, namespace, _preload_content=False))
    want = dep["spec"].get("replicas", 1)
    sel = selector_string(dep["spec"]["selector"].get("matchLabels") or {})

    def pods() -> list[JSON] | None:
        live = [p for p in list_pods(api, namespace, sel) if not p["metadata"].get("deletionTimestamp")]
        return live if len(live) >= want else None

    result: list[JSON] = wait_for(pods, timeout=timeout, what=f"{want} pods of deployment {namespace}/{name}")
    return result


def run_deployment(
    api: ApiClient, namespace: str, name: str, nodes: Sequence[str], *, timeout: float = 60.0
) -> list[JSON]:
    """Bind (round-robin over ``nodes``) and run every pod of a Deployment; return them Running."""
    pods = wait_for_deployment_pods(api, namespace, name, timeout=timeout)
    out = []
    for i, pod in enumerate(sorted(pods, key=lambda p: p["metadata"]["name"])):
        pname = pod["metadata"]["name"]
        if not pod["spec"].get("nodeName"):
            bind_pod(api, namespace, pname, nodes[i % len(nodes)])
        out.append(run_pod(api, namespace, pname))
    return out


class Autopilot:
    """A background kubelet+scheduler for one namespace: binds and runs new pods, and
    completes graceful deletions, so controllers (and the operator's restart_pod) see
    pods come and go as on a real cluster.

    Pods annotated ``sim.sre-agent.dev/manual: "true"`` are left alone, so a test can
    drive those by hand with the functions above.

        with Autopilot(api, ns, nodes=["node-a"]):
            ...
    """

    MANUAL = "sim.sre-agent.dev/manual"

    def __init__(self, api: ApiClient, namespace: str, nodes: Sequence[str]) -> None:
        self.api = ApiClient(configuration=api.configuration)
        self.namespace = namespace
        self.nodes = list(nodes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"autopilot-{namespace}", daemon=True)
        self._next = 0
        self.errors: list[BaseException] = []

    def __enter__(self) -> Autopilot:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.api.close()

    def _handle(self, pod: JSON) -> None:
        md = pod["metadata"]
        if (md.get("annotations") or {}).get(self.MANUAL) == "true":
            return
        name = md["name"]
        if md.get("deletionTimestamp"):
            if pod["spec"].get("nodeName"):
                finish_deletion(self.api, self.namespace, name)
            return
        if (pod.get("status") or {}).get("phase") not in (None, "Pending"):
            return
        if not pod["spec"].get("nodeName"):
            node = self.nodes[self._next % len(self.nodes)]
            self._next += 1
            bind_pod(self.api, self.namespace, name, node)
        run_pod(self.api, self.namespace, name)

    def _loop(self) -> None:
        core = _core(self.api)
        while not self._stop.is_set():
            w = watch.Watch()
            try:
                for ev in w.stream(
                    core.list_namespaced_pod, self.namespace, timeout_seconds=2, _preload_content=False
                ):
                    if self._stop.is_set():
                        break
                    obj = ev["raw_object"]
                    if ev["type"] in ("ADDED", "MODIFIED"):
                        try:
                            self._handle(obj)
                        except ApiException as exc:
                            if exc.status not in (404, 409):
                                self.errors.append(exc)
            except Exception as exc:  # keep the loop alive; tests can inspect .errors
                self.errors.append(exc)
                time.sleep(0.5)
            finally:
                w.stop()


# ---------------------------------------------------------------- kwok (scripts/kwok)

KWOK_CRASHLOOP_LABEL = "sim.sre.agentops.dev/crashloop"


def deployment(
    name: str,
    replicas: int = 2,
    image: str = "nginx:1.27",
    *,
    node: str | None = None,
    pod_labels: Mapping[str, str] | None = None,
) -> JSON:
    """A Deployment body (pods labelled app=<name>); `node` binds its pods through the template."""
    labels = {"app": name}
    pod_spec: JSON = {
        "containers": [
            {
                "name": "app",
                "image": image,
                "resources": {
                    "requests": {"cpu": "100m", "memory": "128Mi"},
                    "limits": {"memory": "256Mi"},
                },
            }
        ]
    }
    if node:
        pod_spec["nodeName"] = node
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": {**labels, **(pod_labels or {})}}, "spec": pod_spec},
        },
    }


def kwok_deployment(name: str, node: str, replicas: int, *, crashloop: bool) -> JSON:
    """A Deployment whose pods kwok runs on `node` (and, with `crashloop`, crash-loops: scripts/kwok-stages.yaml)."""
    # No scheduler runs here: bind through the template, kwok takes over from there.
    return deployment(
        name, replicas, node=node, pod_labels={KWOK_CRASHLOOP_LABEL: "true"} if crashloop else None
    )
