"""The real node itself: Ready on containerd, a real crash loop with real logs, real metrics."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client, watch

from tests.cluster.conftest import Cluster
from tests.node.conftest import BUSYBOX, new_namespace, wait_for


def _pod(name: str, command: str, **extra: Any) -> dict[str, Any]:
    container = {
        "name": "app",
        "image": BUSYBOX,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", command],
    }
    container.update(extra)
    return {
        "metadata": {"name": name},
        "spec": {"containers": [container], "terminationGracePeriodSeconds": 1},
    }


def test_the_node_is_ready_on_containerd_and_schedulable(node_cluster: Cluster) -> None:
    nodes = json.loads(node_cluster.run_kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert len(nodes) == 1
    node = nodes[0]
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert ready["Ready"] == "True"
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert not node["spec"].get("unschedulable")
    assert not [t for t in node["spec"].get("taints") or [] if t["effect"] in ("NoSchedule", "NoExecute")]


def test_a_crashing_busybox_pod_loops_with_its_real_output(node_cluster: Cluster) -> None:
    ns = new_namespace(node_cluster, "basics")
    core = client.CoreV1Api(node_cluster.api_client)
    core.create_namespaced_pod(ns, _pod("crasher", "echo 'fatal: the real kubelet ran me'; exit 1"))
    # The kubelet shows `waiting: CrashLoopBackOff` only briefly: watch for it, don't poll.
    reasons: set[str] = set()
    stream = watch.Watch().stream(
        core.list_namespaced_pod, ns, field_selector="metadata.name=crasher", timeout_seconds=180
    )
    for event in stream:
        for status in event["object"].status.container_statuses or []:
            if status.state.waiting is not None:
                reasons.add(status.state.waiting.reason)
            if status.last_state.terminated is not None:
                assert status.last_state.terminated.exit_code == 1
        if "CrashLoopBackOff" in reasons:
            break
    assert "CrashLoopBackOff" in reasons, reasons

    def previous() -> bool:
        out = node_cluster.run_kubectl("-n", ns, "logs", "crasher", "--previous", check=False)
        return "fatal: the real kubelet ran me" in out.stdout

    wait_for(previous, 120, "the line in `kubectl logs --previous`")


def test_metrics_server_answers_kubectl_top_with_real_usage(node_cluster: Cluster) -> None:
    ns = new_namespace(node_cluster, "top")
    core = client.CoreV1Api(node_cluster.api_client)
    # About 20 MiB held in a memory-backed emptyDir: counted in the container's working set.
    core.create_namespaced_pod(
        ns,
        {
            "metadata": {"name": "holder"},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {
                        "name": "app",
                        "image": BUSYBOX,
                        "imagePullPolicy": "Never",
                        "command": ["sh", "-c", "dd if=/dev/zero of=/mem/blob bs=1M count=20; sleep 3600"],
                        "volumeMounts": [{"name": "mem", "mountPath": "/mem"}],
                        "resources": {"limits": {"memory": "64Mi"}},
                    }
                ],
                "volumes": [{"name": "mem", "emptyDir": {"medium": "Memory"}}],
            },
        },
    )

    def top() -> str:
        out = node_cluster.run_kubectl("-n", ns, "top", "pods", "--no-headers", check=False)
        return out.stdout if out.returncode == 0 and "holder" in out.stdout else ""

    line = wait_for(top, 120, "kubectl top pods to list the pod", every=2)
    memory = line.split()[2]
    assert memory.endswith("Mi") and 18 <= int(memory[:-2]) <= 64, line
    nodes = node_cluster.run_kubectl("top", "nodes", "--no-headers").stdout
    assert "sre-agent-node" in nodes
