"""Fixtures for tests that need a real Kubernetes API server.

``cluster`` (session): starts etcd + kube-apiserver + kube-controller-manager once
per run with ``scripts/cluster up`` in a private state dir, installs every CRD in
``crds/``, and tears it all down at the end. If the control plane cannot be built
or started, the fixture fails loudly; ``SRE_AGENT_SKIP_CLUSTER=1`` skips instead.
``SRE_AGENT_CLUSTER_DIR=<dir>`` uses (and keeps) a cluster in that dir, for fast
iteration: ``SRE_AGENT_CLUSTER_DIR=/tmp/c scripts/cluster up`` once, then rerun pytest.

``namespace`` (function): a fresh namespace per test, deleted afterwards without waiting.
``node`` (function): a Ready fake node, deleted afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from kubernetes.config import kube_config

from tests.cluster import kubesim

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = REPO / "scripts" / "cluster"
CRDS = REPO / "crds"
UP_TIMEOUT = 75 * 60  # a cold build of the binaries takes ~10-20 min on 2 cores


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.cluster)


@dataclass
class Cluster:
    """A running control plane: where its kubeconfig and kubectl are, and a client for it."""

    kubeconfig: Path
    kubectl: Path
    api_client: ApiClient
    state_dir: Path
    env: dict[str, str] = field(default_factory=dict)

    def run_kubectl(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this cluster."""
        return subprocess.run(
            [str(self.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            check=check,
            capture_output=True,
            text=True,
            input=input,
            env=self.env,
            timeout=120,
        )


def _with_no_proxy(env: dict[str, str]) -> dict[str, str]:
    cur = env.get("NO_PROXY") or env.get("no_proxy") or ""
    hosts = [h for h in cur.split(",") if h]
    for h in ("127.0.0.1", "localhost"):
        if h not in hosts:
            hosts.append(h)
    env["NO_PROXY"] = env["no_proxy"] = ",".join(hosts)
    return env


def _script(cmd: str, env: dict[str, str], log: Path, timeout: float) -> str:
    with log.open("a") as err:
        proc = subprocess.run(
            ["bash", str(CLUSTER_SCRIPT), cmd],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            timeout=timeout,
            check=False,
        )
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-60:])
        raise RuntimeError(f"scripts/cluster {cmd} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if os.environ.get("SRE_AGENT_SKIP_CLUSTER") == "1":
        pytest.skip("SRE_AGENT_SKIP_CLUSTER=1: cluster tests skipped")
    env = _with_no_proxy(dict(os.environ))
    # kubesim plays kubelet and scheduler here: a real node would schedule its pods too.
    # tests/node/ has the cluster with a real node.
    env["SRE_AGENT_NODE"] = "0"
    own_dir = "SRE_AGENT_CLUSTER_DIR" not in env
    state_dir = (
        tmp_path_factory.mktemp("cluster") if own_dir else Path(env["SRE_AGENT_CLUSTER_DIR"]).resolve()
    )
    env["SRE_AGENT_CLUSTER_DIR"] = str(state_dir)
    log = tmp_path_factory.getbasetemp() / "cluster-up.log"
    was_running = False
    if not own_dir:
        was_running = (
            subprocess.run(
                ["bash", str(CLUSTER_SCRIPT), "status"], env=env, capture_output=True, check=False
            ).returncode
            == 0
        )
    # A watchdog tears down what we start if this process dies without teardown.
    env_up = env if was_running else {**env, "SRE_AGENT_WATCH_PID": str(os.getpid())}
    error = None
    try:
        _script("up", env_up, log, UP_TIMEOUT)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        error = str(exc)
    if error:
        pytest.fail(
            "could not start the test control plane (set SRE_AGENT_SKIP_CLUSTER=1 to "
            f"skip cluster tests): {error}",
            pytrace=False,
        )

    kubeconfig = state_dir / "kubeconfig"
    saved = {k: os.environ.get(k) for k in ("NO_PROXY", "no_proxy", "KUBECONFIG")}
    saved_default = kube_config.KUBE_CONFIG_DEFAULT_LOCATION
    os.environ.update({"NO_PROXY": env["NO_PROXY"], "no_proxy": env["no_proxy"]})
    use_kubeconfig(kubeconfig)
    c = connect(state_dir, env)
    try:
        yield c
    finally:
        c.api_client.close()
        kube_config.KUBE_CONFIG_DEFAULT_LOCATION = saved_default
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if not was_running:
            _script("down", env, log, 120)


def connect(state_dir: Path, env: dict[str, str]) -> Cluster:
    """A client for the cluster `scripts/cluster up` started in `state_dir`, with crds/ installed."""
    kubeconfig = state_dir / "kubeconfig"
    env["KUBECONFIG"] = str(kubeconfig)
    api = config.new_client_from_config(config_file=str(kubeconfig))
    c = Cluster(
        kubeconfig=kubeconfig,
        kubectl=(state_dir / "kubectl").resolve(),
        api_client=api,
        state_dir=state_dir,
        env=env,
    )
    error = _install_crds(c)
    if error:
        api.close()
        pytest.fail(f"installing crds/ failed: {error}", pytrace=False)
    return c


def use_kubeconfig(path: Path, monkeypatch: pytest.MonkeyPatch | None = None) -> None:
    """Make ``kubernetes.config.load_kube_config()`` (and so kopf's login, KopfRunner) use ``path``.

    Setting $KUBECONFIG is not enough: the kubernetes client reads it once, at import time,
    into ``kube_config.KUBE_CONFIG_DEFAULT_LOCATION``. With ``monkeypatch``, undone after the test.
    """
    if monkeypatch is None:
        os.environ["KUBECONFIG"] = str(path)
        kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(path)
    else:
        monkeypatch.setenv("KUBECONFIG", str(path))
        monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))


def _install_crds(c: Cluster) -> str | None:
    """Apply every YAML in crds/ and wait until the CRDs are Established; the error, if any."""
    crd_files = sorted(CRDS.glob("*.yaml"))
    if not crd_files:
        return None
    try:
        c.run_kubectl("apply", "--server-side", "--force-conflicts", *[f"-f={f}" for f in crd_files])
        c.run_kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", "customresourcedefinitions", "--all"
        )
    except subprocess.CalledProcessError as exc:
        return str(exc.stderr)
    # Established is not quite ready: the watch cache of a new resource answers 429
    # "storage is (re)initializing" for a moment. Wait until each one lists cleanly.
    names = c.run_kubectl("get", "customresourcedefinitions", "-o", "name").stdout.split()
    for name in names:
        resource = name.split("/", 1)[1]

        def lists(resource: str = resource) -> bool:
            return c.run_kubectl("get", resource, "--all-namespaces", check=False).returncode == 0

        try:
            kubesim.wait_for(lists, timeout=30, what=f"{resource} to be listable")
        except TimeoutError as exc:
            return str(exc)
    return None


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace whose default ServiceAccount exists (pods can be created at once)."""
    base = "".join(ch if ch.isalnum() else "-" for ch in request.node.name.lower())
    name = f"t-{base.strip('-')[:40].rstrip('-')}-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(cluster.api_client)
    core.create_namespace(
        {"metadata": {"name": name, "labels": {"sre-agent.dev/test": "true"}}}, _preload_content=False
    )

    def has_default_sa() -> bool:
        try:
            core.read_namespaced_service_account("default", name, _preload_content=False)
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    kubesim.wait_for(has_default_sa, timeout=30, what=f"serviceaccount {name}/default")
    yield name
    # No kubelet finishes graceful pod deletion, so force it; then drop the namespace.
    try:
        core.delete_collection_namespaced_pod(name, grace_period_seconds=0, _preload_content=False)
        core.delete_namespace(name, propagation_policy="Background", _preload_content=False)
    except ApiException as exc:
        if exc.status != 404:
            raise


@pytest.fixture
def node(cluster: Cluster) -> Iterator[str]:
    """A Ready fake node (no kubelet behind it), deleted after the test."""
    name = f"node-{uuid.uuid4().hex[:8]}"
    kubesim.create_node(cluster.api_client, name)
    yield name
    kubesim.delete_node(cluster.api_client, name)


# ---------------------------------------------------------------- kwok (scripts/kwok)

KWOK_SCRIPT = REPO / "scripts" / "kwok"


def _kwok(cmd: str, cluster: Cluster) -> None:
    env = {
        **cluster.env,
        "SRE_AGENT_CLUSTER_DIR": str(cluster.state_dir),
        "SRE_AGENT_WATCH_PID": str(os.getpid()),
    }
    result = subprocess.run(
        ["bash", str(KWOK_SCRIPT), cmd], env=env, capture_output=True, text=True, timeout=900
    )
    if result.returncode != 0:
        pytest.fail(f"scripts/kwok {cmd} failed: {result.stderr.strip()[-2000:]}", pytrace=False)


@pytest.fixture(scope="session")
def kwok_node(cluster: Cluster) -> Iterator[str]:
    """A node whose kubelet is kwok: Ready, heartbeating, running whatever is bound to it."""
    _kwok("up", cluster)
    name = f"kwok-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(cluster.api_client)
    core.create_node(
        {
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "type": "kwok"},
            },
            "status": {
                "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            },
        },
        _preload_content=False,
    )
    try:
        kubesim.wait_for(
            lambda: any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in kubesim.get_node(cluster.api_client, name).get("status", {}).get("conditions", [])
            ),
            timeout=60,
            what=f"kwok to make node {name} Ready",
        )
        yield name
    finally:
        core.delete_node(name, _preload_content=False)
        _kwok("down", cluster)


# ---------------------------------------------------------------- the agent's own identity


def mint_agent_token(cluster: Cluster, seconds: int = 7200) -> str:
    """Apply deploy/rbac.yaml and mint a token for its ServiceAccount (TokenRequest API)."""
    core = client.CoreV1Api(cluster.api_client)
    try:
        core.create_namespace({"metadata": {"name": "sre-agent"}}, _preload_content=False)
    except ApiException as exc:
        if exc.status != 409:
            raise
    cluster.run_kubectl("apply", "-f", str(REPO / "deploy" / "rbac.yaml"))
    resp = core.create_namespaced_service_account_token(
        "sre-agent", "sre-agent", {"spec": {"expirationSeconds": seconds}}, _preload_content=False
    )
    token: str = json.loads(resp.data)["status"]["token"]
    return token


@pytest.fixture(scope="session")
def agent_token(cluster: Cluster) -> str:
    """A token of the sre-agent ServiceAccount that deploy/rbac.yaml binds to its ClusterRole."""
    return mint_agent_token(cluster)


def agent_api_client(cluster: Cluster, token: str) -> ApiClient:
    """A new client for this cluster authenticated with `token` (close it when done)."""
    admin = cluster.api_client.configuration
    conf = client.Configuration(host=admin.host)
    conf.ssl_ca_cert = admin.ssl_ca_cert
    conf.api_key = {"BearerToken": token}
    conf.api_key_prefix = {"BearerToken": "Bearer"}
    return ApiClient(conf)
