"""Past the pod, on the real node (issue 10): a dead dependency and a bad rollout.

* An API crash-loops because its database Deployment was scaled to 0: the operator traces the
  host in its log to the database Service, reads its EndpointSlices (none ready) and the
  Deployment behind it, and its decision names both.
* Ten Deployments crash-loop on that same kind of dead database: one decision, listing them all.
* A working Deployment is rolled out to an image that cannot be pulled: under the autopilot
  policy the decision proposes rollback_deployment to the previous revision, and approving it
  brings back the previous, healthy ReplicaSet.

The operator reads its policy at start, so the module switches the `sre-agent-policy`
ConfigMap to policies/autopilot.yaml, restarts the operator, and restores the policy after.
The LLM answers 503 for these namespaces, so the rules decide from what the node reported.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client

from sre_agent.core.correlation import AFFECTED_ANNOTATION as AFFECTED
from tests.node.conftest import (
    BUSYBOX,
    DECISION_TIMEOUT,
    Operator,
    decisions,
    deployment,
    new_namespace,
    one_decision,
    pods,
    policy,
    replicasets,
    restart_operator,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
BROKEN_IMAGE = "registry.invalid/sre-agent-test/web:2.0"
API_SCRIPT = (
    "echo 'orders-api 1.4 starting'; echo 'connecting to database orders-db:5432'; "
    'nc -w 3 "$ORDERS_DB_SERVICE_HOST" 5432 </dev/null; '
    "echo 'FATAL: database orders-db:5432 is unreachable, exiting' >&2; exit 1"
)


@dataclass(frozen=True)
class Scenarios:
    dependency: str  # namespace
    rollout: str
    first_replicaset: str


@pytest.fixture(scope="module")
def scenarios(operator: Operator) -> Iterator[Scenarios]:
    cluster = operator.cluster
    core = client.CoreV1Api(cluster.api_client)
    apps = client.AppsV1Api(cluster.api_client)
    with policy(operator, (ROOT / "policies" / "autopilot.yaml").read_text()):
        # A database Deployment scaled to 0 behind its Service, and an API that needs it.
        dep_ns = new_namespace(cluster, "deps")
        db = deployment("orders-db", [{"name": "db", "command": ["httpd", "-f", "-p", "5432", "-h", "/tmp"]}])
        db["spec"]["replicas"] = 0
        apps.create_namespaced_deployment(dep_ns, db)
        core.create_namespaced_service(
            dep_ns,
            {
                "metadata": {"name": "orders-db"},
                "spec": {"selector": {"app": "orders-db"}, "ports": [{"port": 5432, "targetPort": 5432}]},
            },
        )
        apps.create_namespaced_deployment(
            dep_ns, deployment("orders-api", [{"name": "api", "command": ["sh", "-c", API_SCRIPT]}])
        )

        # A healthy Deployment, then a rollout to an image that does not exist.
        web_ns = new_namespace(cluster, "rollout")
        web = deployment(
            "web",
            [
                {
                    "name": "web",
                    "command": ["httpd", "-f", "-p", "8080", "-h", "/tmp"],
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 2},
                }
            ],
        )
        apps.create_namespaced_deployment(web_ns, web)
        wait_for(
            lambda: (apps.read_namespaced_deployment("web", web_ns).status.ready_replicas or 0) >= 1,
            120,
            "revision 1 of web to be ready",
        )
        first = replicasets(operator, web_ns)[0]["metadata"]["name"]
        patch = {"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": BROKEN_IMAGE, "imagePullPolicy": "IfNotPresent"}
        ]}}}}  # fmt: skip
        apps.patch_namespaced_deployment("web", web_ns, patch)
        yield Scenarios(dependency=dep_ns, rollout=web_ns, first_replicaset=first)


def test_a_crash_loop_on_a_scaled_down_database_names_its_service_and_deployment(
    operator: Operator, scenarios: Scenarios
) -> None:
    ns = scenarios.dependency
    decision = one_decision(operator, ns, "a decision about the API")
    spec = decision["spec"]
    text = json.dumps(spec)
    assert spec["target"]["name"].startswith("orders-api-"), text[:2000]
    assert (spec["symptom"], spec["category"]) == ("CrashLoopBackOff", "dependency_unavailable"), text[:3000]
    assert (
        f"Service {ns}/orders-db has 0 ready endpoints; Deployment orders-db has 0 replicas"
        in spec["diagnosis"]
    )
    # Within policy: an alert about the dependency, nothing done to the database or anything else.
    assert spec["action"] == "create_alert"
    assert "orders-db" in str((spec.get("parameters") or {}).get("summary"))
    db = client.AppsV1Api(operator.cluster.api_client).read_namespaced_deployment("orders-db", ns)
    assert db.spec.replicas == 0


def test_a_rollout_to_a_broken_image_is_rolled_back_on_approval(
    operator: Operator, scenarios: Scenarios
) -> None:
    cluster = operator.cluster
    ns = scenarios.rollout
    decision = one_decision(operator, ns, "a decision about the broken rollout")
    spec = decision["spec"]
    text = json.dumps(spec)
    assert (spec["symptom"], spec["category"]) == ("ImagePullBackOff", "image_error"), text[:3000]
    assert spec["action"] == "rollback_deployment", text[:3000]
    assert spec["parameters"]["replicaset"] == scenarios.first_replicaset
    assert str(spec["parameters"]["revision"]) == "1"
    assert "failures began right after rollout 2; revision 1 was healthy" in spec["diagnosis"]
    phase = wait_for(lambda: (decisions(cluster, ns)[0].get("status") or {}).get("phase"), 60, "a phase")
    assert phase == "PendingApproval"  # autopilot: rollbacks always wait for a human

    cluster.run_kubectl(
        "-n", ns, "patch", "agentdecision", decision["metadata"]["name"], "--type=merge",
        "-p", json.dumps({"spec": {"approved": True, "approvedBy": "admin"}}),
    )  # fmt: skip

    def done() -> str:
        status = decisions(cluster, ns)[0].get("status") or {}
        return (
            str(status.get("phase") or "") if status.get("phase") in ("Executed", "Failed", "Expired") else ""
        )

    final = wait_for(done, 120, "the approved rollback to run")
    assert final == "Executed", decisions(cluster, ns)[0].get("status")
    apps = client.AppsV1Api(cluster.api_client)
    dep = apps.read_namespaced_deployment("web", ns)
    assert dep.spec.template.spec.containers[0].image == BUSYBOX
    # The previous ReplicaSet is back, as the newest revision, and the broken one is scaled away.
    newest = wait_for(
        lambda: (
            (rs := replicasets(operator, ns)[-1])["metadata"]["name"] == scenarios.first_replicaset and rs
        ),
        90,
        "the first ReplicaSet to become the newest revision",
    )
    assert newest["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    wait_for(
        lambda: (
            all(
                p["metadata"]["labels"].get("pod-template-hash")
                == newest["metadata"]["labels"]["pod-template-hash"]
                for p in pods(cluster, ns, "app=web")
                if not p["metadata"].get("deletionTimestamp")
            )
            and (apps.read_namespaced_deployment("web", ns).status.ready_replicas or 0) >= 1
        ),
        120,
        "only pods of the previous revision, ready",
    )


FANOUT = 10


@pytest.fixture(scope="module")
def fanout(operator: Operator, scenarios: Scenarios) -> str:
    """Ten API Deployments on one database Deployment scaled to 0 (after the policy switch)."""
    cluster = operator.cluster
    core = client.CoreV1Api(cluster.api_client)
    apps = client.AppsV1Api(cluster.api_client)
    ns = new_namespace(cluster, "fanout")
    db = deployment("orders-db", [{"name": "db", "command": ["httpd", "-f", "-p", "5432", "-h", "/tmp"]}])
    db["spec"]["replicas"] = 0
    apps.create_namespaced_deployment(ns, db)
    core.create_namespaced_service(
        ns,
        {
            "metadata": {"name": "orders-db"},
            "spec": {"selector": {"app": "orders-db"}, "ports": [{"port": 5432, "targetPort": 5432}]},
        },
    )
    for i in range(FANOUT):
        apps.create_namespaced_deployment(
            ns, deployment(f"api-{i}", [{"name": "api", "command": ["sh", "-c", API_SCRIPT]}])
        )
    return ns


def test_ten_deployments_failing_on_one_database_giveone_decision(operator: Operator, fanout: str) -> None:
    cluster = operator.cluster
    one_decision(operator, fanout, "a decision about the dead database")

    def all_listed() -> str:
        found = decisions(cluster, fanout)
        listed = (found[0]["metadata"].get("annotations") or {}).get(AFFECTED) or ""
        return listed if all(f"Deployment/{fanout}/api-{i}" in listed for i in range(FANOUT)) else ""

    try:
        wait_for(all_listed, DECISION_TIMEOUT, "every API Deployment listed on the decision", every=3)
    except TimeoutError as exc:
        pytest.fail(f"{exc}\n--- operator log ---\n{operator.logs(400)}", pytrace=False)
    found = decisions(cluster, fanout)
    assert len(found) == 1, [d["metadata"]["name"] for d in found]
    assert "orders-db has 0 ready endpoints" in found[0]["spec"]["diagnosis"]
    # A restarted operator reopens the group from the decision: still one decision.
    restart_operator(operator)
    time.sleep(45)
    found = decisions(cluster, fanout)
    assert len(found) == 1, [d["metadata"]["name"] for d in found]
