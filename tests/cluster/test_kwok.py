"""kwok on the real control plane: simulated kubelets for scale, checked against our detector.

kwok (scripts/kwok) runs the nodes annotated ``kwok.x-k8s.io/node=fake`` and the pods bound to
them through the stages in scripts/kwok-stages.yaml. Unlike kubesim, nothing in the test writes
pod status: kwok does it asynchronously, the way a kubelet would, so these tests show that the
symptom detector reads pods it did not shape itself.
"""

from __future__ import annotations

from datetime import UTC, datetime

from kubernetes import client

from sre_agent.core.symptoms import detect
from sre_agent.domain import Symptom
from tests.cluster import kubesim
from tests.cluster.conftest import Cluster


def _symptoms(cluster: Cluster, namespace: str, name: str) -> list[Symptom]:
    now = datetime.now(UTC)
    found = []
    for pod in kubesim.list_pods(cluster.api_client, namespace, f"app={name}"):
        events = kubesim.list_events(cluster.api_client, namespace, pod["metadata"]["name"])
        found.append(detect(pod, events, None, now))
    return found


def test_kwok_runs_a_deployment_and_the_detector_calls_it_healthy(
    cluster: Cluster, namespace: str, kwok_node: str
) -> None:
    apps = client.AppsV1Api(cluster.api_client)
    apps.create_namespaced_deployment(
        namespace, kubesim.kwok_deployment("web", kwok_node, 20, crashloop=False), _preload_content=False
    )

    def all_running() -> bool:
        pods = kubesim.list_pods(cluster.api_client, namespace, "app=web")
        return len(pods) == 20 and all(p.get("status", {}).get("phase") == "Running" for p in pods)

    kubesim.wait_for(all_running, timeout=90, what="kwok to run 20 pods")
    assert set(_symptoms(cluster, namespace, "web")) == {Symptom.HEALTHY}


def test_kwok_crash_loop_is_detected_as_crashloopbackoff(
    cluster: Cluster, namespace: str, kwok_node: str
) -> None:
    apps = client.AppsV1Api(cluster.api_client)
    apps.create_namespaced_deployment(
        namespace, kubesim.kwok_deployment("crasher", kwok_node, 5, crashloop=True), _preload_content=False
    )

    seen: dict[str, Symptom] = {}
    now = datetime.now(UTC)

    def every_pod_seen_in_backoff() -> bool:
        for pod in kubesim.list_pods(cluster.api_client, namespace, "app=crasher"):
            statuses = pod.get("status", {}).get("containerStatuses", [])
            if any(
                (cs.get("state", {}).get("waiting") or {}).get("reason") == "CrashLoopBackOff"
                for cs in statuses
            ):
                events = kubesim.list_events(cluster.api_client, namespace, pod["metadata"]["name"])
                seen[pod["metadata"]["name"]] = detect(pod, events, None, now)
        return len(seen) >= 5

    # kwok restarts the container every few seconds: record each pod while it is in back-off.
    kubesim.wait_for(every_pod_seen_in_backoff, timeout=120, interval=0.5, what="5 pods in CrashLoopBackOff")
    symptoms = list(seen.values())
    assert set(symptoms) == {Symptom.CRASH_LOOP}
    backoffs = [
        e
        for p in kubesim.list_pods(cluster.api_client, namespace, "app=crasher")
        for e in kubesim.list_events(cluster.api_client, namespace, p["metadata"]["name"])
        if e["reason"] == "BackOff" and e["type"] == "Warning"
    ]
    assert backoffs, "kwok should post kubelet-style BackOff events"
