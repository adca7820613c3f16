"""The project's control plane with kwok nodes, filled with pods fast: shared by the benchmarks.

    from bench.kwokbench import KwokCluster, deployment, pod

    with KwokCluster(nodes=10) as kc:           # scripts/cluster up (SRE_AGENT_NODE=0) + crds/ + kwok
        kc.kubeconfig, kc.env, kc.api, kc.nodes  # kubeconfig path, env for subprocesses, ApiClient, node names
        kc.create_namespace("bench")
        kc.create_pods("bench", 10_000)          # bare pods bound round-robin to the kwok nodes
        kc.create_objects("bench", [deployment("web-1", kc.nodes[0], 20, crashloop=True)])
        kc.wait_running("bench", 10_000)         # until kwok reports them Running (and Ready)
        kc.delete_pods("bench", names)           # at once, no grace period
        kc.pod_phases("bench")                   # {"Running": 10000}

The cluster lives in a temp dir and is torn down on exit, with a watchdog that tears it down if
this process dies. ``SRE_AGENT_CLUSTER_DIR=DIR`` reuses (and keeps) a cluster there instead.
Pods are created by `threads` parallel requests (the API server, not Python, is the limit).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = REPO / "scripts" / "cluster"
KWOK_SCRIPT = REPO / "scripts" / "kwok"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
CRASHLOOP_LABEL = "sim.sre.agentops.dev/crashloop"  # scripts/kwok-stages.yaml

JSON = dict[str, Any]


def _no_proxy(env: dict[str, str]) -> dict[str, str]:
    hosts = [h for h in (env.get("NO_PROXY") or env.get("no_proxy") or "").split(",") if h]
    hosts += [h for h in ("127.0.0.1", "localhost") if h not in hosts]
    env["NO_PROXY"] = env["no_proxy"] = ",".join(hosts)
    return env


def wait_for(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def pod(name: str, node: str, labels: dict[str, str] | None = None, *, crashloop: bool = False) -> JSON:
    """A bare pod bound to `node` (no scheduler runs); kwok runs it, crash-looping with `crashloop`."""
    all_labels = {"app": name.rsplit("-", 1)[0], **(labels or {})}
    if crashloop:
        all_labels[CRASHLOOP_LABEL] = "true"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": all_labels},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
            "terminationGracePeriodSeconds": 0,
        },
    }


def deployment(name: str, node: str, replicas: int, *, crashloop: bool = False) -> JSON:
    """A Deployment whose pods are bound to `node` through the template (no scheduler runs)."""
    labels = {"app": name}
    pod_labels = {**labels, **({CRASHLOOP_LABEL: "true"} if crashloop else {})}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "nodeName": node,
                    "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
                    "terminationGracePeriodSeconds": 0,
                },
            },
        },
    }


class KwokCluster:
    """Context manager: a control plane (no real node), crds/ installed, kwok running `nodes` nodes."""

    def __init__(
        self, nodes: int = 10, *, node_prefix: str = "kwok", log: Callable[[str], None] | None = None
    ):
        self.node_count = nodes
        self.node_prefix = node_prefix
        self.nodes: list[str] = []
        self._log = log or (lambda msg: print(f"kwokbench: {msg}", file=sys.stderr, flush=True))
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._own = "SRE_AGENT_CLUSTER_DIR" not in os.environ
        self.env = _no_proxy(dict(os.environ))
        self.env["SRE_AGENT_NODE"] = "0"
        if self._own:
            self._tmp = tempfile.TemporaryDirectory(prefix="sre-agent-kwokbench-")
            self.env["SRE_AGENT_CLUSTER_DIR"] = self._tmp.name
        self.state_dir = Path(self.env["SRE_AGENT_CLUSTER_DIR"]).resolve()
        self.kubeconfig = self.state_dir / "kubeconfig"
        self.env["KUBECONFIG"] = str(self.kubeconfig)
        self.api: Any = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> KwokCluster:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def _script(self, script: Path, cmd: str, timeout: float) -> None:
        env = {**self.env, "SRE_AGENT_WATCH_PID": str(os.getpid())} if self._own else self.env
        proc = subprocess.run(
            ["bash", str(script), cmd], env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{script.name} {cmd} failed: {proc.stderr.strip()[-2000:]}")

    def up(self) -> None:
        from kubernetes import client, config

        started = time.monotonic()
        self._script(CLUSTER_SCRIPT, "up", 75 * 60)
        configuration = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=configuration)
        configuration.connection_pool_maxsize = 32  # the pod-creating threads
        self.api = client.ApiClient(configuration)
        self.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            *[f"-f={f}" for f in sorted((REPO / "crds").glob("*.yaml"))],
        )
        self.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", "customresourcedefinitions", "--all"
        )
        self._script(KWOK_SCRIPT, "up", 900)
        self.create_nodes()
        self._log(
            f"control plane, crds/ and {len(self.nodes)} kwok nodes up in {time.monotonic() - started:.0f}s"
        )

    def down(self) -> None:
        if self.api is not None:
            self.api.close()
            self.api = None
        if self._own:
            for script in (KWOK_SCRIPT, CLUSTER_SCRIPT):
                try:
                    self._script(script, "down", 180)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    self._log(str(exc))
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None

    def kubectl(self, *args: str) -> str:
        proc = subprocess.run(
            [str(self.state_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            env=self.env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args[:2])} failed: {proc.stderr.strip()[-1000:]}")
        return proc.stdout

    # ------------------------------------------------------------------ objects

    def create_nodes(self) -> list[str]:
        from kubernetes import client

        core = client.CoreV1Api(self.api)
        for i in range(self.node_count):
            name = f"{self.node_prefix}-{i}"
            body = {
                "metadata": {
                    "name": name,
                    "annotations": {KWOK_ANNOTATION: "fake"},
                    "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "type": "kwok"},
                },
                "status": {
                    "allocatable": {"cpu": "1000", "memory": "4Ti", "pods": "5000"},
                    "capacity": {"cpu": "1000", "memory": "4Ti", "pods": "5000"},
                },
            }
            try:
                core.create_node(body, _preload_content=False)
            except client.ApiException as exc:
                if exc.status != 409:
                    raise
            self.nodes.append(name)

        def all_ready() -> bool:
            items = self._get("/api/v1/nodes")["items"]
            ready = {
                n["metadata"]["name"]
                for n in items
                if any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in n.get("status", {}).get("conditions", [])
                )
            }
            return set(self.nodes) <= ready

        wait_for(all_ready, 120, f"kwok to make {len(self.nodes)} nodes Ready")
        return self.nodes

    def create_namespace(self, name: str) -> None:
        from kubernetes import client

        core = client.CoreV1Api(self.api)
        try:
            core.create_namespace({"metadata": {"name": name}}, _preload_content=False)
        except client.ApiException as exc:
            if exc.status != 409:
                raise

        def has_default_sa() -> bool:
            try:
                core.read_namespaced_service_account("default", name, _preload_content=False)
                return True
            except client.ApiException as exc:
                if exc.status == 404:
                    return False
                raise

        wait_for(has_default_sa, 60, f"serviceaccount {name}/default")

    def create_objects(self, namespace: str, objects: Iterable[JSON], threads: int = 16) -> int:
        """Create pods, Deployments or anything namespaced (by apiVersion/kind), in parallel; returns the count."""
        from kubernetes import dynamic

        client = dynamic.DynamicClient(self.api)
        resources: dict[tuple[str, str], Any] = {}

        def create(obj: JSON) -> None:
            key = (obj["apiVersion"], obj["kind"])
            if key not in resources:
                resources[key] = client.resources.get(api_version=key[0], kind=key[1])
            for attempt in range(5):
                try:
                    resources[key].create(body=obj, namespace=namespace, _preload_content=False)
                    return
                except Exception as exc:  # 409: created by an earlier attempt; 429/5xx: retry
                    status = getattr(exc, "status", None)
                    if status == 409:
                        return
                    if attempt == 4 or status not in (429, 500, 503, 504, None):
                        raise
                    time.sleep(0.5 * (attempt + 1))

        objects = list(objects)
        if objects:
            create(objects[0])  # discovery once, before the threads
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(create, objects[1:]))
        return len(objects)

    def create_pods(
        self, namespace: str, count: int, *, prefix: str = "idle", labels: dict[str, str] | None = None,
        crashloop: bool = False, threads: int = 16,
    ) -> list[str]:  # fmt: skip
        """`count` bare pods named PREFIX-00000..., bound round-robin to the kwok nodes; their names."""
        names = [f"{prefix}-{i:05d}" for i in range(count)]
        pods = (
            pod(n, self.nodes[i % len(self.nodes)], labels, crashloop=crashloop) for i, n in enumerate(names)
        )
        started = time.monotonic()
        self.create_objects(namespace, pods, threads)
        self._log(f"created {count} pods in {time.monotonic() - started:.0f}s")
        return names

    def delete_pods(self, namespace: str, names: Iterable[str], threads: int = 16) -> int:
        """Delete these pods at once (no grace period; a missing one is fine); returns the count."""
        from kubernetes import client

        core = client.CoreV1Api(self.api)

        def delete(name: str) -> None:
            try:
                core.delete_namespaced_pod(name, namespace, grace_period_seconds=0, _preload_content=False)
            except client.ApiException as exc:
                if exc.status != 404:
                    raise

        names = list(names)
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(delete, names))
        return len(names)

    def _get(self, path: str, query: list[tuple[str, Any]] | None = None) -> JSON:
        serialized = self.api.param_serialize(
            method="GET", resource_path=path, query_params=query or [],
            header_params={"Accept": "application/json"}, auth_settings=["BearerToken"],
        )  # fmt: skip
        response = self.api.call_api(*serialized, _request_timeout=120)
        result: JSON = json.loads(response.read())
        return result

    def pods(self, namespace: str | None = None, selector: str | None = None) -> Iterable[JSON]:
        """Every pod (paginated, 500 a page)."""
        path = f"/api/v1/namespaces/{namespace}/pods" if namespace else "/api/v1/pods"
        token = None
        while True:
            query: list[tuple[str, Any]] = [("limit", 500)]
            if token:
                query.append(("continue", token))
            if selector:
                query.append(("labelSelector", selector))
            page = self._get(path, query)
            yield from page["items"]
            token = page["metadata"].get("continue")
            if not token:
                return

    def pod_phases(self, namespace: str | None = None, selector: str | None = None) -> Counter[str]:
        return Counter(p.get("status", {}).get("phase", "?") for p in self.pods(namespace, selector))

    def wait_running(
        self, namespace: str, count: int, timeout: float = 600, selector: str | None = None
    ) -> float:
        """Wait until `count` pods in `namespace` are Running; the seconds it took."""
        started = time.monotonic()
        wait_for(
            lambda: self.pod_phases(namespace, selector)["Running"] >= count,
            timeout, f"{count} pods Running in {namespace}", interval=2,
        )  # fmt: skip
        return time.monotonic() - started
