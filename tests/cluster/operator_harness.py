"""Run the real operator (`python -m sre_agent.cli run`) as a subprocess against the test cluster.

The operator logs in as the deploy/rbac.yaml ServiceAccount (a kubeconfig with a token minted
through the TokenRequest API), talks to tests/fake_llm.py through the real openai client, and
writes its log to a file that `OperatorProcess.log()` returns (printed when a test fails).
Used by tests/cluster/test_operator.py.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client import ApiClient

from tests.cluster import kubesim
from tests.cluster.conftest import REPO, Cluster, mint_agent_token

GROUP, VERSION, PLURAL = "sre.agentops.dev", "v1alpha1", "agentdecisions"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def token_kubeconfig(cluster: Cluster, token: str, path: Path) -> Path:
    """Write a kubeconfig for this cluster that authenticates with `token` instead of admin's cert."""
    cfg = copy.deepcopy(yaml.safe_load(cluster.kubeconfig.read_text()))
    cfg["users"] = [{"name": u["name"], "user": {"token": token}} for u in cfg["users"]]
    path.write_text(yaml.safe_dump(cfg))
    return path


def agent_kubeconfig(cluster: Cluster, path: Path) -> Path:
    """Apply deploy/rbac.yaml and write a kubeconfig that authenticates as its ServiceAccount."""
    return token_kubeconfig(cluster, mint_agent_token(cluster), path)


class OperatorProcess:
    """`sre-agent run` in a subprocess; a context manager that stops it (SIGINT) on exit."""

    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        *,
        args: tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.metrics_port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SRE_AGENT_")},
            "SRE_AGENT_KUBECONFIG": str(kubeconfig),
            "KUBECONFIG": str(kubeconfig),
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "SRE_AGENT_METRICS_PORT": str(self.metrics_port),
            "SRE_AGENT_HEALTH_PORT": "0",
            "SRE_AGENT_SWEEP_SECONDS": "1",
            "SRE_AGENT_RESYNC_SECONDS": "0",
            "SRE_AGENT_LLM_MAX_RETRIES": "0",
            "SRE_AGENT_LLM_TIMEOUT": "10",
            "SRE_AGENT_LOG_LEVEL": "info",
            **(env or {}),
        }
        self.args = ("run", *args)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> OperatorProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sre_agent.cli", *self.args],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        kubesim.wait_for(
            lambda: "Initial authentication has finished" in self.log() or self.proc_exited(),
            timeout=60,
            what="the operator to start",
        )
        if self.proc_exited():
            raise RuntimeError(f"operator exited at start:\n{self.log()}")
        return self

    def proc_exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as resp:
            text: str = resp.read().decode()
            return text


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, raw_labels = head.partition("{")
        if metric != name:
            continue
        found = dict(part.split("=", 1) for part in raw_labels.rstrip("}").split(",") if "=" in part)
        found = {k: v.strip('"') for k, v in found.items()}
        if all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return 0.0


def custom(api: ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def decisions(api: ApiClient, namespace: str) -> list[dict[str, Any]]:
    resp = custom(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, _preload_content=False
    )
    items: list[dict[str, Any]] = json.loads(resp.data)["items"]
    return items


def decision(api: ApiClient, namespace: str, name: str) -> dict[str, Any]:
    resp = custom(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, _preload_content=False
    )
    out: dict[str, Any] = json.loads(resp.data)
    return out


def phase_of(obj: Mapping[str, Any]) -> str:
    return str((obj.get("status") or {}).get("phase") or "")


def create_deployment(
    api: ApiClient,
    namespace: str,
    name: str,
    replicas: int,
    image: str = "registry.example.com/shop/web:1.4.2",
) -> None:
    body = kubesim.deployment(name, replicas, image)
    pod_spec = body["spec"]["template"]["spec"]
    pod_spec["terminationGracePeriodSeconds"] = 5
    pod_spec["containers"][0]["ports"] = [{"containerPort": 8080}]
    client.AppsV1Api(api).create_namespaced_deployment(namespace, body, _preload_content=False)


def running_pods(
    api: ApiClient, namespace: str, app: str, count: int, timeout: float = 90
) -> list[dict[str, Any]]:
    """Wait until `count` pods of the app are Running (the Autopilot runs them)."""

    def ready() -> list[dict[str, Any]] | None:
        pods = [
            p
            for p in kubesim.list_pods(api, namespace, f"app={app}")
            if not p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") == "Running"
        ]
        return pods if len(pods) >= count else None

    found: list[dict[str, Any]] = kubesim.wait_for(
        ready, timeout=timeout, what=f"{count} running pods of {app}"
    )
    return found
