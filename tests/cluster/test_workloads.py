"""End to end, past the pod: a failed Job and a stalled rollout each get one AgentDecision about the workload.

The real operator process (rules only) against the real API server and the real
kube-controller-manager: the Job controller writes the Job's Failed condition when kubesim fails
its pod (restartPolicy Never, exit 3: no pod symptom at all), and the Deployment controller
writes ProgressDeadlineExceeded when a ResourceQuota lets the ReplicaSet create no pod.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client

from sre_agent.adapters.kube.capture import CaptureError, capture_incident
from sre_agent.adapters.kube.client import KubeClient
from sre_agent.adapters.kube.decisions import incident_of
from sre_agent.adapters.recorded import parse_incident
from sre_agent.domain import ALERT_EVENT_REASON
from tests.cluster import kubesim
from tests.cluster.conftest import Cluster
from tests.cluster.operator_harness import decisions
from tests.cluster.test_operator import approve, operator_factory, sa_kubeconfig  # noqa: F401 (fixtures)

pytestmark = pytest.mark.cluster

WAIT = 120


def one_decision(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        items = decisions(api, namespace)
        return items[0] if items and (items[0].get("status") or {}).get("phase") else None

    result: dict[str, Any] = kubesim.wait_for(found, timeout=WAIT, what=f"an AgentDecision in {namespace}")
    return result


class Clock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def capture(cluster: Cluster, namespace: str, what: str) -> dict[str, Any]:
    """`sre-agent capture -n NAMESPACE WHAT` as a document, checked to load as an incident file."""

    async def go() -> dict[str, Any]:
        kube = KubeClient.from_kubeconfig(str(cluster.kubeconfig))
        try:
            return await capture_incident(kube, namespace, what, Clock())
        finally:
            kube.close()

    document = asyncio.run(go())
    parse_incident(document, what)
    return document


def job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": {kubesim.Autopilot.MANUAL: "true"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "report", "image": "registry.example.com/shop/report:2.0"}],
                },
            },
        },
    }


def test_a_failed_job_gets_one_decision_about_the_job(
    cluster: Cluster,
    namespace: str,
    node: str,
    operator_factory: Any,  # noqa: F811
) -> None:
    api = cluster.api_client
    operator = operator_factory()
    created = client.BatchV1Api(api).create_namespaced_job(
        namespace, job("nightly-report"), _preload_content=False
    )
    uid = kubesim._raw(created)["metadata"]["uid"]
    pods = kubesim.wait_for(
        lambda: kubesim.list_pods(api, namespace, "job-name=nightly-report") or None,
        timeout=WAIT,
        what="the Job's pod",
    )
    name = pods[0]["metadata"]["name"]
    kubesim.bind_pod(api, namespace, name, node)
    kubesim.fail_pod(api, namespace, name, exit_code=3)

    obj = one_decision(api, namespace)
    spec = obj["spec"]
    assert spec["symptom"] == "JobFailed"
    assert spec["target"] == {"kind": "Job", "namespace": namespace, "name": "nightly-report", "uid": uid}
    assert spec["category"] == "app_error" and spec["action"] == "create_alert"
    assert "BackoffLimitExceeded" in spec["reasoning"]
    assert obj["status"]["phase"] == "PendingApproval"
    incident = incident_of(obj) or {}
    assert incident["owner"]["kind"] == "Job" and incident["pod"]["metadata"]["name"] == name
    # The pod itself (Failed, restartPolicy Never) never became a decision of its own; later Job
    # updates join the one decision.
    kubesim.wait_for(
        lambda: "deciding about Job" in operator.log() or None, timeout=WAIT, what="the log line"
    )
    assert len(decisions(api, namespace)) == 1

    # Approved, the alert is a Warning Event on the Job itself (batch/v1), where `kubectl describe
    # job` shows it.
    approve(cluster, namespace, obj["metadata"]["name"])
    done = kubesim.wait_for(
        lambda: ((d := decisions(api, namespace)[0])["status"].get("phase") in ("Executed", "Failed") and d) or None,
        timeout=WAIT, what="the approved alert to run",
    )  # fmt: skip
    assert done["status"]["phase"] == "Executed", done["status"]
    alerts = [
        e for e in kubesim.list_events(api, namespace, "nightly-report")
        if e.get("reason") == ALERT_EVENT_REASON
    ]  # fmt: skip
    assert alerts and alerts[0]["involvedObject"]["kind"] == "Job"
    assert alerts[0]["involvedObject"]["apiVersion"] == "batch/v1"
    assert alerts[0]["involvedObject"]["uid"] == uid

    captured = capture(cluster, namespace, "job/nightly-report")
    assert (
        captured["expected"] == {"symptom": "JobFailed"} and captured["id"] == f"{namespace}-nightly-report"
    )
    assert captured["owner"]["metadata"]["uid"] == uid and captured["pod"]["metadata"]["name"] == name
    with pytest.raises(
        CaptureError,
        match=r"^cannot capture 'statefulset': name a pod \(NAME\), job/NAME or deployment/NAME$",
    ):
        capture(cluster, namespace, "statefulset/nightly-report")
    with pytest.raises(CaptureError, match=r"^job .*/absent not found$"):
        capture(cluster, namespace, "job/absent")


def test_a_rollout_stalled_by_a_quota_gets_one_decision_about_the_deployment(
    cluster: Cluster,
    namespace: str,
    operator_factory: Any,  # noqa: F811
) -> None:
    api = cluster.api_client
    core = client.CoreV1Api(api)
    quota = {"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}}
    core.create_namespaced_resource_quota(namespace, quota, _preload_content=False)
    kubesim.wait_for(
        lambda: (kubesim._raw(core.read_namespaced_resource_quota("no-pods", namespace, _preload_content=False))
                 .get("status") or {}).get("hard") or None,
        timeout=WAIT, what="the quota controller to count the namespace",
    )  # fmt: skip
    operator_factory()
    body = kubesim.deployment("web", 1, "registry.example.com/shop/web:1.4.2")
    body["spec"]["progressDeadlineSeconds"] = 5
    created = client.AppsV1Api(api).create_namespaced_deployment(namespace, body, _preload_content=False)
    uid = kubesim._raw(created)["metadata"]["uid"]

    obj = one_decision(api, namespace)
    spec = obj["spec"]
    assert spec["symptom"] == "ProgressDeadlineExceeded"
    assert spec["target"] == {"kind": "Deployment", "namespace": namespace, "name": "web", "uid": uid}
    assert spec["category"] == "insufficient_capacity" and spec["action"] == "create_alert"
    assert "exceeded quota" in spec["reasoning"]
    incident = incident_of(obj) or {}
    assert "pod" not in incident and incident["owner"]["kind"] == "Deployment"
    assert len(decisions(api, namespace)) == 1

    captured = capture(cluster, namespace, "deployment/web")
    assert captured["expected"] == {"symptom": "ProgressDeadlineExceeded"} and "pod" not in captured
    assert any("exceeded quota" in str(e.get("message")) for e in captured["events"])
