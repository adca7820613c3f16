"""End to end: every symptom seen live, one decision per workload and root cause, no re-nagging,
approvers told. The real operator process (rules only, the default policy: everything needs
approval) against the real API server; kubesim writes pod states as a kubelet would.

The intake's own cooldown is cut to one second here, so what stops a second decision is the
decision memory (core.lifecycle), not the intake. "Still one decision" is asserted after the
operator's log shows it handled the later pod update, never after a fixed sleep.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.cluster import kubesim
from tests.cluster.conftest import Cluster
from tests.cluster.operator_harness import (
    OperatorProcess,
    agent_kubeconfig,
    create_deployment,
    decisions,
    free_port,
    metric_value,
    phase_of,
    running_pods,
)
from tests.cluster.test_operator import (
    approve,
    crash_deployment,
    llm_env,
    one_decision,
    restart_answer,
    wait_phase,
)
from tests.fake_llm import FakeLLM

pytestmark = pytest.mark.cluster

WAIT = 90
FAST_INTAKE = {"SRE_AGENT_COOLDOWN_SECONDS": "1", "SRE_AGENT_GROUP_WINDOW_SECONDS": "1"}


@pytest.fixture(scope="module")
def sa_kubeconfig(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return agent_kubeconfig(cluster, tmp_path_factory.mktemp("agent-lifecycle") / "kubeconfig")


@pytest.fixture
def start_operator(
    sa_kubeconfig: Path, namespace: str, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    """`sre-agent run --standalone -n <namespace>`, rules only; stopped and its log printed after."""
    started: list[OperatorProcess] = []

    def start(**env: str) -> OperatorProcess:
        proc = OperatorProcess(
            sa_kubeconfig,
            tmp_path / f"operator-{len(started)}.log",
            args=("--standalone", "-n", namespace),
            env={**FAST_INTAKE, **env},
        )
        started.append(proc)
        return proc.__enter__()

    yield start
    for proc in started:
        proc.stop()
        print(f"----- operator log ({proc.log_path}) -----\n{proc.log()[-20000:]}")


def wait_log(proc: OperatorProcess, text: str, after: int = 0) -> None:
    """Wait until the operator's log shows `text` (past offset `after`)."""
    kubesim.wait_for(lambda: text in proc.log()[after:], timeout=WAIT, what=f"operator log: {text!r}")


def names(api: client.ApiClient, namespace: str) -> list[tuple[str, str, str]]:
    return [(d["metadata"]["name"], d["spec"]["symptom"], phase_of(d)) for d in decisions(api, namespace)]


# ---------------------------------------------------------------- symptoms only Events show


def test_a_failing_readiness_probe_gives_one_probe_failure_decision(
    cluster: Cluster, namespace: str, node: str, start_operator: Callable[..., OperatorProcess]
) -> None:
    """Ready went False a minute ago (the probe flaps), but Unhealthy events go back ten minutes."""
    api = cluster.api_client
    operator = start_operator()
    with kubesim.Autopilot(api, namespace, [node]):
        create_deployment(api, namespace, "web", 1)
        (pod,) = running_pods(api, namespace, "web", 1)
        kubesim.failing_readiness(api, namespace, pod["metadata"]["name"])
        obj = one_decision(api, namespace)
        assert obj["spec"]["symptom"] == "ProbeFailure"
        assert obj["metadata"]["labels"]["sre.agentops.dev/cause"] == "probe"
        mark = len(operator.log())
        kubesim.failing_readiness(api, namespace, pod["metadata"]["name"], failing_for=900)
        wait_log(operator, "joins open AgentDecision", mark)
    assert len(decisions(api, namespace)) == 1, names(api, namespace)


def test_a_pod_stuck_on_a_missing_configmap_volume_gives_one_failed_mount_decision(
    cluster: Cluster, namespace: str, node: str, start_operator: Callable[..., OperatorProcess]
) -> None:
    api = cluster.api_client
    operator = start_operator()
    body = kubesim.deployment("cfg", 1, "registry.example.com/shop/cfg:2.0")
    template = body["spec"]["template"]
    template["metadata"]["annotations"] = {kubesim.Autopilot.MANUAL: "true"}
    template["spec"]["volumes"] = [{"name": "config", "configMap": {"name": "app-config"}}]
    template["spec"]["containers"][0]["volumeMounts"] = [{"name": "config", "mountPath": "/etc/app"}]
    client.AppsV1Api(api).create_namespaced_deployment(namespace, body, _preload_content=False)
    (pod,) = kubesim.wait_for_deployment_pods(api, namespace, "cfg")
    name = pod["metadata"]["name"]
    kubesim.bind_pod(api, namespace, name, node)
    kubesim.failed_mount(api, namespace, name, configmap="app-config")
    obj = one_decision(api, namespace)
    assert obj["spec"]["symptom"] == "FailedMount"
    assert obj["spec"]["category"] == "bad_config"  # the ConfigMap is missing, not the volume plugin
    mark = len(operator.log())
    kubesim.failed_mount(api, namespace, name, configmap="app-config", stuck_for=300)
    wait_log(operator, "joins open AgentDecision", mark)
    assert len(decisions(api, namespace)) == 1, names(api, namespace)


# ---------------------------------------------------------------- crash loops as a kubelet shows them


def crash_like_kubelet(api: client.ApiClient, namespace: str, name: str, restarts: int) -> None:
    """Write the `terminated` moment of a crash loop; repeated until it sticks (the Autopilot may
    still be running the pod from an older event)."""
    for _ in range(10):
        kubesim.crash_loop_terminated(api, namespace, name, restarts=restarts)
        time.sleep(0.3)
        state = kubesim.get_pod(api, namespace, name)["status"]["containerStatuses"][0]["state"]
        if "terminated" in state:
            return
    raise AssertionError(f"pod {namespace}/{name} never stayed terminated")


def test_a_crash_loop_written_as_a_real_kubelet_does_is_decided_and_its_approval_executes(
    cluster: Cluster,
    namespace: str,
    node: str,
    fake_llm: FakeLLM,
    start_operator: Callable[..., OperatorProcess],
) -> None:
    """state.terminated + growing restartCount, no CrashLoopBackOff reason: still a crash loop,
    and the re-check at approval does not call it healthy."""
    api = cluster.api_client
    fake_llm.script(restart_answer())
    start_operator(**llm_env(fake_llm))
    with kubesim.Autopilot(api, namespace, [node]):
        create_deployment(api, namespace, "web", 1)
        (pod,) = running_pods(api, namespace, "web", 1)
        name = pod["metadata"]["name"]
        crash_like_kubelet(api, namespace, name, restarts=3)
        obj = one_decision(api, namespace, "PendingApproval")
        assert obj["spec"]["symptom"] == "CrashLoopBackOff"
        assert obj["spec"]["action"] == "restart_pod", obj["spec"]
        crash_like_kubelet(api, namespace, name, restarts=4)
        approve(cluster, namespace, obj["metadata"]["name"])
        done = wait_phase(api, namespace, obj["metadata"]["name"], "Executed")
    assert "healthy now" not in done["status"]["message"]

    def gone() -> bool:
        try:
            live = kubesim.get_pod(api, namespace, name)
        except ApiException as exc:
            return exc.status == 404
        return bool(live["metadata"].get("deletionTimestamp"))

    kubesim.wait_for(gone, timeout=WAIT, what="the crash-looping pod to be deleted")


def test_a_crash_loop_that_passes_the_restart_threshold_keeps_one_decision(
    cluster: Cluster, namespace: str, node: str, start_operator: Callable[..., OperatorProcess]
) -> None:
    api = cluster.api_client
    operator = start_operator()
    with kubesim.Autopilot(api, namespace, [node]):
        (pod,) = crash_deployment(cluster, namespace, node, "web", 1)
        obj = one_decision(api, namespace, "PendingApproval")
        assert obj["spec"]["symptom"] == "CrashLoopBackOff"
        mark = len(operator.log())
        kubesim.restarted(api, namespace, pod["metadata"]["name"], restarts=9)
        wait_log(operator, "(HighRestarts) joins open AgentDecision", mark)
    assert len(decisions(api, namespace)) == 1, names(api, namespace)


# ---------------------------------------------------------------- no re-nagging


def test_a_rejected_decision_is_not_proposed_again_even_across_an_operator_restart(
    cluster: Cluster, namespace: str, node: str, start_operator: Callable[..., OperatorProcess]
) -> None:
    api = cluster.api_client
    operator = start_operator()
    with kubesim.Autopilot(api, namespace, [node]):
        (pod,) = crash_deployment(cluster, namespace, node, "web", 1)
        pod_name = pod["metadata"]["name"]
        obj = one_decision(api, namespace, "PendingApproval")
        name = obj["metadata"]["name"]
        approve(cluster, namespace, name, False)
        wait_phase(api, namespace, name, "Rejected")
        mark = len(operator.log())
        kubesim.crash_loop(api, namespace, pod_name, restarts=6)
        wait_log(operator, f"suppressed by AgentDecision {namespace}/{name}", mark)
        operator.stop()

        again = start_operator()  # a new process: an empty memory, rebuilt from the decisions
        wait_log(again, "decision memory from 1 decision(s)")
        kubesim.crash_loop(api, namespace, pod_name, restarts=7)
        wait_log(again, f"suppressed by AgentDecision {namespace}/{name}")
    assert names(api, namespace) == [(name, "CrashLoopBackOff", "Rejected")]


# ---------------------------------------------------------------- approvers are told


class Receiver:
    """A local webhook receiver that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[Any] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                bodies.append(json.loads(self.rfile.read(length) or b"null"))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.server = HTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_pending_decision_is_announced_by_events_webhook_and_gauge(
    cluster: Cluster, namespace: str, node: str, start_operator: Callable[..., OperatorProcess]
) -> None:
    api = cluster.api_client
    with Receiver() as receiver, kubesim.Autopilot(api, namespace, [node]):
        operator = start_operator(
            SRE_AGENT_APPROVAL_WEBHOOK_URL=f"http://127.0.0.1:{receiver.port}/hooks/approvals",
            SRE_AGENT_APPROVAL_WEBHOOK_FORMAT="slack",
        )
        (pod,) = crash_deployment(cluster, namespace, node, "web", 1)
        obj = one_decision(api, namespace, "PendingApproval")
        name = obj["metadata"]["name"]
        command = f"sre-agent approve {name} -n {namespace}"
        kubesim.wait_for(lambda: receiver.bodies, timeout=WAIT, what="the approval webhook")
    (body,) = receiver.bodies
    assert command in body["text"]
    assert any(command in json.dumps(block) for block in body["blocks"])

    def announced() -> dict[str, str] | None:
        resp = client.CoreV1Api(api).list_namespaced_event(
            namespace, field_selector="reason=DecisionPendingApproval", _preload_content=False
        )
        found = {e["involvedObject"]["kind"]: e["message"] for e in json.loads(resp.data)["items"]}
        return found if {"Pod", "AgentDecision"} <= set(found) else None

    events = kubesim.wait_for(announced, timeout=WAIT, what="DecisionPendingApproval events")
    assert command in events["Pod"] and command in events["AgentDecision"]
    assert metric_value(operator.metrics(), "sre_agent_decisions_pending", namespace=namespace) == 1
    assert pod["metadata"]["name"] in events["Pod"]
