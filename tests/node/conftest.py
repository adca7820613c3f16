"""Fixtures for tests on a real node: a kubelet, containerd and real pods (marker ``node``).

``node_cluster`` (session): ``scripts/cluster up`` with ``SRE_AGENT_NODE=1`` (control plane,
containerd, kube-scheduler, one kubelet, metrics-server) in a private state dir, the CRDs
installed, and the host checked afterwards: ``down`` must leave no process, mount, bridge,
changed sysctl or host path behind (a teardown error says what was left).
``operator`` (session): the operator deployed in the cluster from its own image with
``scripts/cluster deploy`` (the project's Dockerfile, the ServiceAccount and RBAC of
``deploy/``), talking through the real openai client to a scripted local LLM (``llm``).

``SRE_AGENT_SKIP_NODE=1`` (or ``SRE_AGENT_SKIP_CLUSTER=1``) skips these tests on a host that
cannot run a kubelet; ``SRE_AGENT_NODE_CLUSTER_DIR=<dir>`` reuses (and keeps) a cluster started
with ``SRE_AGENT_CLUSTER_DIR=<dir> scripts/cluster up``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.cluster.conftest import (
    Cluster,
    _script,
    _with_no_proxy,
    connect,
)
from tests.fake_llm import Behaviour, FakeLLM, status

UP_TIMEOUT = 75 * 60
GROUP, VERSION, PLURAL = "sre.agentops.dev", "v1alpha1", "agentdecisions"
BUSYBOX = "sre-agent-test/busybox:1"
SYSCTLS = ("vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops", "net.ipv4.ip_forward")
HOST_PATHS = ("/var/lib/kubelet", "/var/lib/cni", "/var/log/containers", "/var/log/pods", "/run/netns")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.node)


def _host_state() -> dict[str, Any]:
    """What a node may change on this machine: sysctls, links, mounts, host paths, processes."""
    sysctls = {}
    for key in SYSCTLS:
        path = Path("/proc/sys") / key.replace(".", "/")
        sysctls[key] = path.read_text().strip() if path.exists() else None
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=False).stdout
    return {
        "sysctls": sysctls,
        "bridge": "sreagent0" in links,
        "paths": {p: Path(p).exists() for p in HOST_PATHS},
        "mounts": sorted(
            line.split()[1]
            for line in Path("/proc/self/mounts").read_text().splitlines()
            if "sre-agent-cluster." in line
        ),
        "processes": sorted(
            line
            for line in subprocess.run(
                ["ps", "-eo", "args"], capture_output=True, text=True, check=False
            ).stdout.splitlines()
            if "sre-agent-cluster." in line
            and ("kubelet" in line or "containerd" in line or "metrics-server" in line)
        ),
    }


@pytest.fixture(scope="session")
def node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if os.environ.get("SRE_AGENT_SKIP_NODE") == "1" or os.environ.get("SRE_AGENT_SKIP_CLUSTER") == "1":
        pytest.skip("SRE_AGENT_SKIP_NODE=1: tests on a real node skipped")
    env = _with_no_proxy(dict(os.environ))
    env["SRE_AGENT_NODE"] = "1"
    reuse = env.get("SRE_AGENT_NODE_CLUSTER_DIR")
    state_dir = Path(reuse).resolve() if reuse else tmp_path_factory.mktemp("node-cluster")
    env["SRE_AGENT_CLUSTER_DIR"] = str(state_dir)
    log = tmp_path_factory.getbasetemp() / "node-cluster-up.log"
    before = None if reuse else _host_state()
    env_up = env if reuse else {**env, "SRE_AGENT_WATCH_PID": str(os.getpid())}
    try:
        _script("up", env_up, log, UP_TIMEOUT)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        pytest.fail(
            f"could not start the cluster with a real node (SRE_AGENT_SKIP_NODE=1 skips): {exc}",
            pytrace=False,
        )
    c = connect(state_dir, env)
    try:
        yield c
    finally:
        c.api_client.close()
        if not reuse:
            _script("down", env, log, 300)
            after = _host_state()
            assert after == before, (
                f"scripts/cluster down left the host changed: before {before}, after {after}"
            )


class Responder:
    """Answers the operator's LLM calls by the namespace the incident is in; others get a 503,
    so the rules decide (and the tests check the rules on what a real kubelet reports)."""

    def __init__(self) -> None:
        self.by_namespace: dict[str, Behaviour] = {}

    def __call__(self, body: dict[str, Any]) -> Behaviour | None:
        text = json.dumps(body.get("messages") or [])
        for namespace, behaviour in self.by_namespace.items():
            if namespace in text:
                return behaviour
        return status(503)


@dataclass
class Operator:
    """The operator running in the cluster, and the scripted LLM it talks to."""

    cluster: Cluster
    llm: FakeLLM
    responder: Responder
    state: dict[str, str]

    def logs(self, tail: int = 200) -> str:
        out = self.cluster.run_kubectl(
            "-n", "sre-agent", "logs", "deployment/sre-agent", f"--tail={tail}", check=False
        )
        return out.stdout + out.stderr


def _state(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


@pytest.fixture(scope="session")
def operator(node_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """`scripts/cluster deploy`: the operator from its own image, under deploy/'s ServiceAccount."""
    llm = FakeLLM().start()
    responder = Responder()
    llm.responder = responder
    settings = {
        "SRE_AGENT_LLM_BASE_URL": llm.base_url,
        "SRE_AGENT_LLM_MODEL": "fake-model",
        "SRE_AGENT_LLM_MAX_RETRIES": "0",
        "SRE_AGENT_LLM_CIRCUIT_FAILURES": "1000",
        "SRE_AGENT_PROBE_FAILURE_SECONDS": "20",
        "SRE_AGENT_HIGH_RESTARTS": "3",
        "SRE_AGENT_RESYNC_SECONDS": "15",
        "SRE_AGENT_SWEEP_SECONDS": "10",
        "SRE_AGENT_LOG_LEVEL": "info",
    }
    env = {
        **node_cluster.env,
        "SRE_AGENT_DEPLOY_ENV": "\n".join(f"{k}={v}" for k, v in settings.items()),
    }
    log = tmp_path_factory.getbasetemp() / "node-deploy.log"
    try:
        _script("deploy", env, log, 30 * 60)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        llm.stop()
        pytest.fail(f"scripts/cluster deploy failed: {exc}", pytrace=False)
    op = Operator(
        cluster=node_cluster, llm=llm, responder=responder, state=_state(node_cluster.state_dir / "state")
    )
    try:
        yield op
    finally:
        llm.stop()


# ---------------------------------------------------------------- helpers for real workloads


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 1.0) -> Any:
    """Poll `check` until it returns something truthy; its value. Real pods take real time."""
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def new_namespace(cluster: Cluster, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:5]}"
    core = client.CoreV1Api(cluster.api_client)
    core.create_namespace({"metadata": {"name": name, "labels": {"sre-agent.dev/test": "true"}}})

    def has_sa() -> bool:
        try:
            core.read_namespaced_service_account("default", name)
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    wait_for(has_sa, 30, f"serviceaccount {name}/default", every=0.3)
    return name


def deployment(
    name: str,
    containers: list[dict[str, Any]],
    *,
    replicas: int = 1,
    init_containers: list[dict[str, Any]] | None = None,
    volumes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A Deployment of real containers (local images only: imagePullPolicy Never by default)."""
    for c in containers + (init_containers or []):
        c.setdefault("image", BUSYBOX)
        c.setdefault("imagePullPolicy", "Never")
    spec: dict[str, Any] = {"containers": containers, "terminationGracePeriodSeconds": 1}
    if init_containers:
        spec["initContainers"] = init_containers
    if volumes:
        spec["volumes"] = volumes
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    }


def decisions(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    api = client.CustomObjectsApi(cluster.api_client)
    items: list[dict[str, Any]] = api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)[
        "items"
    ]
    return items


def pods(cluster: Cluster, namespace: str, selector: str = "") -> list[dict[str, Any]]:
    core = client.CoreV1Api(cluster.api_client)
    resp = core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False)
    items: list[dict[str, Any]] = json.loads(resp.data)["items"]
    return items


DECISION_TIMEOUT = 300  # a real crash loop, gathered and decided in the operator's pod


def one_decision(operator: Operator, namespace: str, what: str) -> dict[str, Any]:
    """The first AgentDecision of the namespace, waited for; the operator's log when there is none."""
    try:
        found = wait_for(lambda: decisions(operator.cluster, namespace), DECISION_TIMEOUT, what, every=2)
    except TimeoutError as exc:
        pytest.fail(f"{exc}\n--- operator log ---\n{operator.logs()}", pytrace=False)
    return found[0]  # type: ignore[no-any-return]


def replicasets(operator: Operator, namespace: str) -> list[dict[str, Any]]:
    """The namespace's ReplicaSets, oldest revision first."""
    apps = client.AppsV1Api(operator.cluster.api_client)
    resp = apps.list_namespaced_replica_set(namespace, _preload_content=False)
    items: list[dict[str, Any]] = json.loads(resp.data)["items"]
    return sorted(
        items, key=lambda rs: int(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"])
    )


def restart_operator(operator: Operator) -> None:
    cluster = operator.cluster
    cluster.run_kubectl("-n", "sre-agent", "rollout", "restart", "deployment/sre-agent")
    cluster.run_kubectl("-n", "sre-agent", "rollout", "status", "deployment/sre-agent", "--timeout=180s")


@contextmanager
def policy(operator: Operator, text: str) -> Iterator[None]:
    """The operator runs with this policy (its ConfigMap, then a restart) and gets its own back after."""
    core = client.CoreV1Api(operator.cluster.api_client)

    def use(policy_text: str) -> None:
        core.patch_namespaced_config_map(
            "sre-agent-policy", "sre-agent", {"data": {"policy.yaml": policy_text}}
        )
        restart_operator(operator)

    saved = core.read_namespaced_config_map("sre-agent-policy", "sre-agent").data["policy.yaml"]
    use(text)
    try:
        yield
    finally:
        use(saved)
