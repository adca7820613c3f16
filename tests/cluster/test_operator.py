"""End to end: the real operator process, the real API server, the real openai client.

`sre-agent run` runs as a subprocess logged in as the deploy/rbac.yaml ServiceAccount; the LLM
is tests/fake_llm.py; kubelet and scheduler are played by kubesim's Autopilot (pods of
Deployments are bound, run, and their graceful deletions completed) and by explicit kubesim
calls that drive pods into crash loops and nodes into NotReady. Every assertion reads the
cluster (AgentDecisions, pods, nodes, deployments) or the operator's /metrics.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sre_agent.adapters.kube.decisions import incident_of
from tests.cluster import kubesim
from tests.cluster.conftest import REPO, Cluster
from tests.cluster.operator_harness import (
    OperatorProcess,
    agent_kubeconfig,
    create_deployment,
    decision,
    decisions,
    free_port,
    metric_value,
    phase_of,
    running_pods,
)
from tests.fake_llm import FakeLLM, answer_for, garbage, reply

pytestmark = pytest.mark.cluster

WAIT = 90  # generous: two cores, other suites running in parallel


@pytest.fixture(scope="module")
def sa_kubeconfig(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return agent_kubeconfig(cluster, tmp_path_factory.mktemp("agent") / "kubeconfig")


@pytest.fixture
def operator_factory(
    sa_kubeconfig: Path, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Any]:
    """Start `sre-agent run -n <namespace> --standalone` with extra env; stopped (and its log
    printed, shown by pytest on failure) after the test."""
    started: list[OperatorProcess] = []

    def start(env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> OperatorProcess:
        peered = "SRE_AGENT_PEERING" in (env or {})
        proc = OperatorProcess(
            sa_kubeconfig,
            tmp_path / f"operator-{len(started)}.log",
            args=(*(() if peered else ("--standalone",)), "-n", namespace, *args),
            env=env,
        )
        started.append(proc)
        return proc.__enter__()

    yield start
    for proc in started:
        proc.stop()
        print(f"----- operator log ({proc.log_path}) -----\n{proc.log()[-20000:]}")


def llm_env(fake: FakeLLM) -> dict[str, str]:
    return {"SRE_AGENT_LLM_BASE_URL": fake.base_url, "SRE_AGENT_LLM_MODEL": "fake-model"}


def one_decision(api: client.ApiClient, namespace: str, want_phase: str | None = None) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        items = decisions(api, namespace)
        if len(items) == 1 and (want_phase is None or phase_of(items[0]) == want_phase):
            return items[0]
        return None

    try:
        result: dict[str, Any] = kubesim.wait_for(
            found, timeout=WAIT, what=f"one AgentDecision in {namespace}"
        )
    except TimeoutError:
        raise AssertionError(
            f"decisions in {namespace}: {[(d['metadata']['name'], phase_of(d)) for d in decisions(api, namespace)]}"
        ) from None
    return result


def wait_phase(api: client.ApiClient, namespace: str, name: str, phase: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        obj = decision(api, namespace, name)
        return obj if phase_of(obj) == phase else None

    try:
        result: dict[str, Any] = kubesim.wait_for(reached, timeout=WAIT, what=f"{name} to be {phase}")
    except TimeoutError:
        obj = decision(api, namespace, name)
        raise AssertionError(f"{name} is {phase_of(obj)}: {obj.get('status')}") from None
    return result


def approve(cluster: Cluster, namespace: str, name: str, value: bool = True) -> None:
    """Approve (or reject) as the test kubeconfig's user, `admin`, naming it as the CRD requires."""
    patch = '{"spec":{"approved":%s,"approvedBy":"admin"}}' % ("true" if value else "false")
    cluster.run_kubectl("patch", "agentdecision", name, "-n", namespace, "--type=merge", "-p", patch)


def crash_deployment(
    cluster: Cluster, namespace: str, node: str, name: str, replicas: int
) -> list[dict[str, Any]]:
    """A Deployment whose pods all run, then all crash-loop; returns the crashing pods.

    The Autopilot may still be handling an older event of a pod and mark it Running again
    right after the crash; so each crash is repeated until it sticks.
    """
    api = cluster.api_client
    create_deployment(api, namespace, name, replicas)
    pods = running_pods(api, namespace, name, replicas)
    out = []
    for p in pods:
        pod_name = p["metadata"]["name"]
        for _ in range(10):
            crashed = kubesim.crash_loop(api, namespace, pod_name, restarts=4)
            time.sleep(0.3)
            try:
                live = kubesim.get_pod(api, namespace, pod_name)
            except ApiException as exc:
                if exc.status == 404:
                    break  # already acted on (auto-approved restart)
                raise
            state = live["status"]["containerStatuses"][0]["state"]
            if live["metadata"].get("deletionTimestamp") or (state.get("waiting") or {}).get("reason") == (
                "CrashLoopBackOff"
            ):
                break
        out.append(crashed)
    return out


def restart_answer() -> Any:
    """The fake LLM's answer in most tests: an app error, restart the pod, confidence 0.8."""
    return reply(answer_for("app_error", "restart_pod", {}, 0.8))


def pending_restart(
    cluster: Cluster, namespace: str, node: str, fake_llm: FakeLLM, operator_factory: Any
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Start the operator, crash one replica of Deployment `web`; wait for its pending decision.

    Call it inside a kubesim.Autopilot; returns (operator, crashed pod, AgentDecision).
    """
    operator = operator_factory(llm_env(fake_llm))
    (pod,) = crash_deployment(cluster, namespace, node, "web", 1)
    return operator, pod, one_decision(cluster.api_client, namespace, "PendingApproval")


# ---------------------------------------------------------------- 1. one crash loop, one decision


def test_crash_loop_gets_one_pending_decision_from_the_llm(
    cluster: Cluster, namespace: str, node: str, fake_llm: FakeLLM, operator_factory: Any
) -> None:
    api = cluster.api_client
    fake_llm.script(restart_answer())
    with kubesim.Autopilot(api, namespace, [node]):
        _, pod, obj = pending_restart(cluster, namespace, node, fake_llm, operator_factory)
    spec = obj["spec"]
    assert spec["symptom"] == "CrashLoopBackOff"
    assert spec["source"] == "llm"
    assert spec["category"] == "app_error"
    assert spec["action"] == "restart_pod"
    assert spec["target"] == {
        "kind": "Pod",
        "namespace": namespace,
        "name": pod["metadata"]["name"],
        "uid": pod["metadata"]["uid"],
    }
    assert spec["owner"]["kind"] == "Deployment" and spec["owner"]["name"] == "web"
    assert spec["policy"]["outcome"] == "needs_approval"
    assert (incident_of(obj) or {})["pod"]["metadata"]["name"] == pod["metadata"]["name"]
    assert obj["status"]["conditions"][0]["status"] == "Unknown"
    assert len(fake_llm.requests) == 1
    # Nothing was executed: the pod is still there.
    assert (
        kubesim.get_pod(api, namespace, pod["metadata"]["name"])["metadata"]["uid"] == pod["metadata"]["uid"]
    )


# ---------------------------------------------------------------- 2. twenty replicas, one decision


def test_twenty_crashing_replicas_make_one_decision_and_one_llm_call(
    cluster: Cluster, namespace: str, node: str, fake_llm: FakeLLM, operator_factory: Any
) -> None:
    api = cluster.api_client
    fake_llm.script(restart_answer())
    health_port = free_port()
    with kubesim.Autopilot(api, namespace, [node]):
        op = operator_factory({**llm_env(fake_llm), "SRE_AGENT_HEALTH_PORT": str(health_port)})
        with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/healthz", timeout=10) as resp:
            assert resp.status == 200
        crash_deployment(cluster, namespace, node, "fleet", 20)
        one_decision(api, namespace, "PendingApproval")
        kubesim.wait_for(
            lambda: metric_value(op.metrics(), "sre_agent_incidents_total", symptom="CrashLoopBackOff") >= 20,
            timeout=WAIT,
            what="all 20 pods to be admitted",
        )
    metrics = op.metrics()
    assert len(decisions(api, namespace)) == 1
    assert len(fake_llm.requests) == 1
    assert metric_value(metrics, "sre_agent_incidents_grouped_total", symptom="CrashLoopBackOff") == 19
    assert (
        metric_value(
            metrics, "sre_agent_decisions_total", source="llm", action="restart_pod", phase="PendingApproval"
        )
        == 1
    )
    assert metric_value(metrics, "sre_agent_llm_tokens_total") == 150


# ---------------------------------------------------------------- 3. approvals execute, exactly once


def test_approved_restart_runs_exactly_once(
    cluster: Cluster, namespace: str, node: str, fake_llm: FakeLLM, operator_factory: Any
) -> None:
    api = cluster.api_client
    fake_llm.script(restart_answer())
    with kubesim.Autopilot(api, namespace, [node]):
        _, pod, obj = pending_restart(cluster, namespace, node, fake_llm, operator_factory)
        old_uid, name = pod["metadata"]["uid"], obj["metadata"]["name"]

        approve(cluster, namespace, name)
        done = wait_phase(api, namespace, name, "Executed")
        status = done["status"]
        assert status["executedBy"].startswith("sre-agent@")
        assert status["attempts"] == 1
        assert status["approvedAt"] and status["executedAt"] and status["finishedAt"]
        assert status["conditions"][0]["status"] == "True"

        def replaced() -> list[dict[str, Any]] | None:
            pods = [
                p
                for p in kubesim.list_pods(api, namespace, "app=web")
                if not p["metadata"].get("deletionTimestamp")
            ]
            uids = {p["metadata"]["uid"] for p in pods}
            return pods if old_uid not in uids and len(pods) == 1 else None

        (new_pod,) = kubesim.wait_for(replaced, timeout=WAIT, what="the ReplicaSet to replace the pod")
        new_uid = new_pod["metadata"]["uid"]

        # Approving again (a real change to the object, so the operator gets an event) runs nothing.
        cluster.run_kubectl(
            "patch", "agentdecision", name, "-n", namespace, "--type=merge",
            "-p", '{"metadata":{"labels":{"poke":"1"}},"spec":{"approved":true}}',
        )  # fmt: skip
        time.sleep(3)  # grace for a (wrong) second execution to show up
        again = decision(api, namespace, name)
        assert phase_of(again) == "Executed"
        assert again["status"]["attempts"] == 1
        live = [
            p
            for p in kubesim.list_pods(api, namespace, "app=web")
            if not p["metadata"].get("deletionTimestamp")
        ]
        assert [p["metadata"]["uid"] for p in live] == [new_uid]


def test_approved_scale_changes_replicas_within_bounds(
    cluster: Cluster, namespace: str, node: str, fake_llm: FakeLLM, operator_factory: Any
) -> None:
    api = cluster.api_client
    fake_llm.script(reply(answer_for("overload", "scale_deployment", {"replicas": 4}, 0.8)))
    with kubesim.Autopilot(api, namespace, [node]):
        operator_factory(llm_env(fake_llm))
        crash_deployment(cluster, namespace, node, "api", 2)
        obj = one_decision(api, namespace, "PendingApproval")
        assert obj["spec"]["action"] == "scale_deployment"
        assert obj["spec"]["parameters"]["replicas"] == 4
        approve(cluster, namespace, obj["metadata"]["name"])
        wait_phase(api, namespace, obj["metadata"]["name"], "Executed")
    dep = client.AppsV1Api(api).read_namespaced_deployment("api", namespace)
    assert dep.spec.replicas == 4


def test_approved_cordon_marks_the_not_ready_node_unschedulable(
    cluster: Cluster, namespace: str, node: str, fake_llm: FakeLLM, operator_factory: Any
) -> None:
    api = cluster.api_client
    fake_llm.script(reply(answer_for("node_failure", "cordon_node", {}, 0.9)))
    with kubesim.Autopilot(api, namespace, [node]):
        create_deployment(api, namespace, "db", 2)
        running_pods(api, namespace, "db", 2)
    operator_factory(llm_env(fake_llm))
    kubesim.make_node_not_ready(api, node)
    obj = one_decision(api, namespace, "PendingApproval")
    assert obj["spec"]["symptom"] == "NodeNotReady"
    assert obj["spec"]["action"] == "cordon_node"
    assert obj["spec"]["node"] == node
    assert obj["spec"]["policy"]["reason"] == "cordon_node always needs approval in default"
    assert not kubesim.get_node(api, node)["spec"].get("unschedulable")
    approve(cluster, namespace, obj["metadata"]["name"])
    wait_phase(api, namespace, obj["metadata"]["name"], "Executed")
    assert kubesim.get_node(api, node)["spec"]["unschedulable"] is True
    assert len(decisions(api, namespace)) == 1  # two pods on the node: one incident


# ---------------------------------------------------------------- 4. rejection


def test_rejected_decision_changes_nothing(
    cluster: Cluster, namespace: str, node: str, fake_llm: FakeLLM, operator_factory: Any
) -> None:
    api = cluster.api_client
    fake_llm.script(restart_answer())
    with kubesim.Autopilot(api, namespace, [node]):
        _, pod, obj = pending_restart(cluster, namespace, node, fake_llm, operator_factory)
        name = obj["metadata"]["name"]
        approve(cluster, namespace, name, False)
        obj = wait_phase(api, namespace, name, "Rejected")
    assert "attempts" not in obj["status"] or obj["status"]["attempts"] == 0
    assert "executedAt" not in obj["status"]
    live = kubesim.get_pod(api, namespace, pod["metadata"]["name"])
    assert live["metadata"]["uid"] == pod["metadata"]["uid"]
    assert not live["metadata"].get("deletionTimestamp")


# ---------------------------------------------------------------- auto-execution (autopilot policy)


def test_autopilot_policy_executes_a_confident_restart_without_approval(
    cluster: Cluster, namespace: str, node: str, fake_llm: FakeLLM, operator_factory: Any
) -> None:
    api = cluster.api_client
    fake_llm.script(reply(answer_for("app_error", "restart_pod", {}, 0.95)))
    with kubesim.Autopilot(api, namespace, [node]):
        operator_factory(llm_env(fake_llm), args=("--policy", str(REPO / "policies" / "autopilot.yaml")))
        (pod,) = crash_deployment(cluster, namespace, node, "web", 1)
        obj = one_decision(api, namespace, "Executed")
        assert obj["spec"]["policy"]["outcome"] == "allowed"
        assert "approved" not in obj["spec"]
        assert obj["status"]["attempts"] == 1
        kubesim.wait_for(
            lambda: all(
                p["metadata"]["uid"] != pod["metadata"]["uid"]
                for p in kubesim.list_pods(api, namespace, "app=web")
            ),
            timeout=WAIT,
            what="the crashing pod to be deleted",
        )


# ---------------------------------------------------------------- 5. LLM down or talking garbage


@pytest.mark.parametrize("failure", ["down", "garbage"])
def test_llm_failure_falls_back_to_rules_with_a_note(
    cluster: Cluster, namespace: str, node: str, fake_llm: FakeLLM, operator_factory: Any, failure: str
) -> None:
    api = cluster.api_client
    env = llm_env(fake_llm)
    if failure == "down":
        fake_llm.stop()
    else:
        fake_llm.script(garbage(b"<html>502 Bad Gateway</html>"))
    with kubesim.Autopilot(api, namespace, [node]):
        operator_factory(env)
        crash_deployment(cluster, namespace, node, "web", 1)
        obj = one_decision(api, namespace)
    spec = obj["spec"]
    assert spec["source"] == "rules"
    assert spec["symptom"] == "CrashLoopBackOff"
    assert any(note.startswith("LLM unavailable, rules decided:") for note in spec["notes"]), spec["notes"]


# ---------------------------------------------------------------- 6. bad configuration


def test_run_refuses_a_bad_policy_with_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text("kind: Policy\nname: broken\nautoApproveAboveConfidence: 7\n")
    proc = subprocess.run(
        [sys.executable, "-m", "sre_agent.cli", "run", "--standalone", "--policy", str(bad)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"sre-agent: {bad}: invalid policy at autoApproveAboveConfidence")


# ---------------------------------------------------------------- peering: two replicas, one acts


def test_two_peered_replicas_decide_and_execute_once(
    cluster: Cluster, namespace: str, node: str, fake_llm: FakeLLM, operator_factory: Any
) -> None:
    api = cluster.api_client
    fake_llm.script(restart_answer())
    peering = f"sre-agent-{namespace[-6:]}"
    common = {**llm_env(fake_llm), "SRE_AGENT_PEERING": peering}
    # Not standalone: the operator factory's --standalone is replaced by peering here.
    high = operator_factory({**common, "SRE_AGENT_PEERING_PRIORITY": "10", "SRE_AGENT_HEALTH_PORT": "0"})
    low = operator_factory({**common, "SRE_AGENT_PEERING_PRIORITY": "5"})
    peers = client.CustomObjectsApi(api)

    def both_registered() -> bool:
        obj = peers.get_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfpeerings", peering)
        return len(obj.get("status") or {}) == 2 and "Resuming operations" in high.log()

    kubesim.wait_for(both_registered, timeout=WAIT, what="both replicas in the peering, the high one active")
    with kubesim.Autopilot(api, namespace, [node]):
        crash_deployment(cluster, namespace, node, "web", 1)
        name = one_decision(api, namespace, "PendingApproval")["metadata"]["name"]
        approve(cluster, namespace, name)
        done = wait_phase(api, namespace, name, "Executed")
    assert done["status"]["attempts"] == 1
    assert len(fake_llm.requests) == 1
    assert "Decided" in high.log() and "Decided" not in low.log()


# ---------------------------------------------------------------- kwok: a kubelet we do not script


def test_twenty_replicas_crash_looping_under_kwok_make_one_decision(
    cluster: Cluster, namespace: str, kwok_node: str, fake_llm: FakeLLM, operator_factory: Any
) -> None:
    """kwok, not the test, writes every pod status and BackOff event, on its own schedule."""
    api = cluster.api_client
    fake_llm.script(restart_answer())
    op = operator_factory(llm_env(fake_llm))
    client.AppsV1Api(api).create_namespaced_deployment(
        namespace, kubesim.kwok_deployment("fleet", kwok_node, 20, crashloop=True), _preload_content=False
    )
    obj = one_decision(api, namespace, "PendingApproval")
    kubesim.wait_for(
        lambda: metric_value(op.metrics(), "sre_agent_incidents_total", symptom="CrashLoopBackOff") >= 20,
        timeout=WAIT,
        what="all 20 kwok pods to be admitted",
    )
    assert obj["spec"]["symptom"] == "CrashLoopBackOff"
    assert obj["spec"]["owner"]["kind"] == "Deployment" and obj["spec"]["owner"]["name"] == "fleet"
    assert len(decisions(api, namespace)) == 1
    assert len(fake_llm.requests) == 1


# ---------------------------------------------------------------- an operator that died mid-action


def test_a_decision_left_executing_by_a_dead_operator_fails_and_is_not_retried(
    cluster: Cluster, namespace: str, node: str, fake_llm: FakeLLM, operator_factory: Any
) -> None:
    api = cluster.api_client
    fake_llm.script(restart_answer())
    with kubesim.Autopilot(api, namespace, [node]):
        first, pod, obj = pending_restart(cluster, namespace, node, fake_llm, operator_factory)
        name = obj["metadata"]["name"]
        first.stop()
        # What a crash between "Executing" and "Executed" leaves behind.
        cluster.run_kubectl(
            "patch", "agentdecision", name, "-n", namespace, "--subresource=status", "--type=merge",
            "-p", '{"status":{"phase":"Executing","message":"executing restart_pod"}}',
        )  # fmt: skip
        operator_factory(llm_env(fake_llm))
        failed = wait_phase(api, namespace, name, "Failed")
    assert "interrupted" in failed["status"]["message"]
    # Not retried: the pod was never deleted.
    assert (
        kubesim.get_pod(api, namespace, pod["metadata"]["name"])["metadata"]["uid"] == pod["metadata"]["uid"]
    )


# ---------------------------------------------------------------- the sweep, from the watch and metadata


def test_the_sweep_expires_a_pending_decision_then_deletes_it_past_the_retention(
    cluster: Cluster, namespace: str, node: str, fake_llm: FakeLLM, operator_factory: Any
) -> None:
    """Expiry comes from the open decisions the decision watch keeps; deletion from a metadata-only
    list (the decision is read whole only just before it goes)."""
    api = cluster.api_client
    fake_llm.script(restart_answer())
    env = {**llm_env(fake_llm), "SRE_AGENT_DECISION_TTL_SECONDS": "3", "SRE_AGENT_RETENTION_SECONDS": "8"}
    with kubesim.Autopilot(api, namespace, [node]):
        operator_factory(env)
        crash_deployment(cluster, namespace, node, "web", 1)
        first = one_decision(api, namespace)
        name, uid = first["metadata"]["name"], first["metadata"]["uid"]
        expired = wait_phase(api, namespace, name, "Expired")
    assert "nobody approved it" in expired["status"]["message"]
    kubesim.wait_for(
        lambda: all(d["metadata"]["uid"] != uid for d in decisions(api, namespace)),
        timeout=WAIT,
        what=f"{name} to be deleted past the retention",
    )
