"""The operator, in the cluster from its own image, deciding about real failing pods.

Every scenario is a real workload on the real node: the kubelet crash-loops it, the kernel
OOM-kills it, containerd fails to pull it, probes fail against it, the scheduler refuses it.
All of them start together (module fixture) in their own namespaces, so the whole module
costs about as long as its slowest scenario. The LLM answers for the crash loop (it proposes
restart_pod, which a human then approves with kubectl); every other incident gets a 503 from
it, so the rules decide from what the kubelet really reported.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client

from sre_agent.adapters.kube.decisions import incident_of
from tests.fake_llm import answer_for, reply
from tests.node.conftest import Operator, decisions, deployment, new_namespace, pods, wait_for

DECISION_TIMEOUT = 300
STACK_LINE = "RuntimeError: ledger checksum mismatch in batch 42"


def _crashloop() -> dict[str, Any]:
    script = (
        "echo 'starting checkout v1.2'; echo 'Traceback (most recent call last):'; "
        "echo '  File \"/app/main.py\", line 7, in <module>'; "
        f"echo '{STACK_LINE}' >&2; exit 1"
    )
    return deployment("checkout", [{"name": "app", "command": ["sh", "-c", script]}], replicas=2)


def _oom() -> dict[str, Any]:
    # awk doubles a string until the kernel's memory cgroup kills it
    hog = "awk 'BEGIN { s = \"x\"; while (1) s = s s }'"
    return deployment(
        "resizer",
        [{"name": "app", "command": ["sh", "-c", hog], "resources": {"limits": {"memory": "32Mi"}}}],
    )


def _image() -> dict[str, Any]:
    return deployment(
        "catalog",
        [
            {
                "name": "app",
                "image": "registry.invalid/sre-agent-test/catalog:9.9.9",
                "imagePullPolicy": "IfNotPresent",
            }
        ],
    )


def _probe() -> dict[str, Any]:
    return deployment(
        "storefront",
        [
            {
                "name": "web",
                "command": ["httpd", "-f", "-p", "8080", "-h", "/tmp"],
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {
                    "httpGet": {"path": "/", "port": 8081},
                    "periodSeconds": 2,
                    "failureThreshold": 1,
                },
            }
        ],
    )


def _mount() -> dict[str, Any]:
    return deployment(
        "reports",
        [
            {
                "name": "app",
                "command": ["sleep", "3600"],
                "volumeMounts": [{"name": "settings", "mountPath": "/etc/reports"}],
            }
        ],
        volumes=[{"name": "settings", "configMap": {"name": "reports-settings"}}],
    )


def _init() -> dict[str, Any]:
    return deployment(
        "ledger",
        [{"name": "app", "command": ["sleep", "3600"]}],
        init_containers=[
            {
                "name": "migrate",
                "command": ["sh", "-c", "echo 'migration 0042 failed: duplicate column'; exit 3"],
            }
        ],
    )


def _unschedulable() -> dict[str, Any]:
    return deployment(
        "analytics",
        [{"name": "app", "command": ["sleep", "3600"], "resources": {"requests": {"memory": "4Ti"}}}],
    )


def _liveness() -> dict[str, Any]:
    # The app needs 40 s to start serving; the liveness probe gives it 4.
    return deployment(
        "search",
        [
            {
                "name": "app",
                "command": ["sh", "-c", "echo 'loading index...'; sleep 40; exec httpd -f -p 8080 -h /tmp"],
                "livenessProbe": {
                    "httpGet": {"path": "/", "port": 8080},
                    "initialDelaySeconds": 2,
                    "periodSeconds": 2,
                    "failureThreshold": 1,
                },
            }
        ],
    )


def _near_limit() -> dict[str, Any]:
    # 30 MiB of a 32 MiB limit held in memory, and a readiness check that never passes.
    return deployment(
        "cache",
        [
            {
                "name": "app",
                "command": ["sh", "-c", "dd if=/dev/zero of=/mem/blob bs=1M count=29; sleep 3600"],
                "resources": {"limits": {"memory": "32Mi"}},
                "volumeMounts": [{"name": "mem", "mountPath": "/mem"}],
                "readinessProbe": {"exec": {"command": ["cat", "/tmp/warm"]}, "periodSeconds": 2},
            }
        ],
        volumes=[{"name": "mem", "emptyDir": {"medium": "Memory"}}],
    )


@dataclass(frozen=True)
class Scenario:
    namespace: str
    workload: str
    replicas: int


BUILDERS = {
    "crashloop": _crashloop,
    "oom": _oom,
    "image": _image,
    "probe": _probe,
    "mount": _mount,
    "init": _init,
    "unschedulable": _unschedulable,
    "liveness": _liveness,
    "near_limit": _near_limit,
}


@pytest.fixture(scope="module")
def scenarios(operator: Operator) -> dict[str, Scenario]:
    cluster = operator.cluster
    apps = client.AppsV1Api(cluster.api_client)
    out: dict[str, Scenario] = {}
    for key, build in BUILDERS.items():
        ns = new_namespace(cluster, key.replace("_", "-"))
        body = build()
        if key == "crashloop":
            operator.responder.by_namespace[ns] = reply(
                answer_for("app_error", "restart_pod", {}, confidence=0.85)
            )
        apps.create_namespaced_deployment(ns, body)
        out[key] = Scenario(ns, body["metadata"]["name"], body["spec"]["replicas"])
    return out


def _one_decision(operator: Operator, scenario: Scenario, what: str) -> dict[str, Any]:
    found = wait_for(
        lambda: decisions(operator.cluster, scenario.namespace),
        DECISION_TIMEOUT,
        f"an AgentDecision about {what}",
        every=2,
    )
    return found[0]  # type: ignore[no-any-return]


def _settle_and_count(operator: Operator, scenario: Scenario, seconds: float = 20) -> list[dict[str, Any]]:
    """Give the operator time to (wrongly) decide again, then return every decision there is."""
    time.sleep(seconds)
    return decisions(operator.cluster, scenario.namespace)


def _fail_with_logs(operator: Operator, message: str) -> None:
    pytest.fail(f"{message}\n--- operator log ---\n{operator.logs()}", pytrace=False)


@pytest.mark.parametrize(
    ("key", "symptom", "category"),
    [
        ("oom", "OOMKilled", "oom"),
        ("image", "ImagePullBackOff", "image_error"),
        ("probe", "ProbeFailure", "probe_misconfigured"),
        ("mount", "FailedMount", None),
        ("init", "InitContainerFailure", None),
        ("unschedulable", "Unschedulable", "insufficient_capacity"),
        ("liveness", "CrashLoopBackOff", "probe_misconfigured"),
    ],
)
def test_a_real_failure_gives_one_decision_with_the_right_diagnosis(
    operator: Operator, scenarios: dict[str, Scenario], key: str, symptom: str, category: str | None
) -> None:
    scenario = scenarios[key]
    try:
        decision = _one_decision(operator, scenario, f"{key} ({symptom})")
    except TimeoutError as exc:
        _fail_with_logs(operator, str(exc))
    spec = decision["spec"]
    assert spec["symptom"] == symptom, json.dumps(spec, indent=1)[:3000]
    if category is not None:
        assert spec["category"] == category, json.dumps(spec, indent=1)[:3000]
    assert spec["source"] == "rules"  # the LLM answered 503 for these
    all_decisions = _settle_and_count(operator, scenario)
    assert len(all_decisions) == 1, [d["spec"]["symptom"] for d in all_decisions]


def test_a_real_crash_loop_is_decided_once_quotes_its_log_and_approval_restarts_the_pod(
    operator: Operator, scenarios: dict[str, Scenario]
) -> None:
    scenario = scenarios["crashloop"]
    cluster = operator.cluster
    try:
        decision = _one_decision(operator, scenario, "the crash loop")
    except TimeoutError as exc:
        _fail_with_logs(operator, str(exc))
    spec = decision["spec"]
    assert spec["symptom"] == "CrashLoopBackOff"
    assert (spec["category"], spec["action"], spec["source"]) == ("app_error", "restart_pod", "llm")
    # The evidence quotes the line as the kubelet served it (and the LLM saw it too).
    assert STACK_LINE in json.dumps(incident_of(decision) or {}), "the log line is not in the incident"
    assert STACK_LINE in operator.llm.all_text()
    phase = wait_for(
        lambda: (decisions(cluster, scenario.namespace)[0].get("status") or {}).get("phase"),
        60,
        "a phase",
    )
    assert phase == "PendingApproval"
    # Both replicas keep crashing past the restart threshold: still one decision.
    wait_for(
        lambda: all(
            (p["status"].get("containerStatuses") or [{}])[0].get("restartCount", 0) >= 3
            for p in pods(cluster, scenario.namespace, "app=checkout")
        ),
        DECISION_TIMEOUT,
        "both replicas to restart 3 times",
        every=3,
    )
    assert len(_settle_and_count(operator, scenario, 20)) == 1

    target = spec["target"]["name"]
    before = {
        p["metadata"]["name"]: p["metadata"]["uid"] for p in pods(cluster, scenario.namespace, "app=checkout")
    }
    assert target in before
    name = decision["metadata"]["name"]
    cluster.run_kubectl(
        "-n",
        scenario.namespace,
        "patch",
        "agentdecision",
        name,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"approved": True, "approvedBy": "admin"}}),
    )

    def executed() -> str:
        d = decisions(cluster, scenario.namespace)[0]
        return (
            str((d.get("status") or {}).get("phase") or "") in ("Executed", "Failed", "Expired")
            and d["status"]["phase"]
        )

    try:
        final = wait_for(executed, 120, "the approved decision to run")
    except TimeoutError as exc:
        _fail_with_logs(operator, str(exc))
    assert final == "Executed", decisions(cluster, scenario.namespace)[0].get("status")
    # The pod is really gone and its ReplicaSet made a new one.
    after = wait_for(
        lambda: (
            {p["metadata"]["name"] for p in pods(cluster, scenario.namespace, "app=checkout")}
            if target
            not in {p["metadata"]["name"] for p in pods(cluster, scenario.namespace, "app=checkout")}
            and len(pods(cluster, scenario.namespace, "app=checkout")) == 2
            else None
        ),
        90,
        f"pod {target} to be replaced",
    )
    assert target not in after and len(after - set(before)) >= 1


def test_a_decision_about_a_container_near_its_memory_limit_quotes_its_real_usage(
    operator: Operator, scenarios: dict[str, Scenario]
) -> None:
    scenario = scenarios["near_limit"]
    try:
        decision = _one_decision(operator, scenario, "the pod near its memory limit")
    except TimeoutError as exc:
        _fail_with_logs(operator, str(exc))
    incident = incident_of(decision) or {}
    usage = ((incident.get("pod_metrics") or {}).get("containers") or [{}])[0].get("usage") or {}
    assert usage.get("memory"), f"no real usage in the decision: {json.dumps(incident)[:2000]}"
    text = json.dumps(decision["spec"])
    assert "memory at" in text and "of limit" in text, text[:3000]
