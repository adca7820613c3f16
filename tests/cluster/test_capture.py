"""Capture and export against a real API server: redacted, valid, replayable incident files."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from sre_agent.adapters.kube.capture import (
    MAX_INCIDENT_BYTES,
    capture_incident,
    export_to_dir,
    redacted_incident,
)
from sre_agent.adapters.kube.client import KubeClient
from sre_agent.adapters.kube.decisions import API_VERSION, PLURAL, DecisionStore, Phase
from sre_agent.adapters.kube.gatherer import Gatherer
from sre_agent.adapters.recorded import load_incident, parse_incident
from sre_agent.core.pipeline import Pipeline
from sre_agent.core.policy import default_policy
from sre_agent.domain import IncidentContext
from sre_agent.replay import ReplayOptions, replay
from tests.cluster import kubesim
from tests.cluster.conftest import REPO, Cluster

pytestmark = pytest.mark.cluster

SECRET_CANARY = "canary-secret-value-7x1q"
LITERAL_CANARY = "canary-literal-pw-93kz"
TOKEN_CANARY = "canaryTok3nValue99zz"
CANARIES = (SECRET_CANARY, LITERAL_CANARY, TOKEN_CANARY)


class Clock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def leaky_pod(cluster: Cluster, namespace: str, node: str, name: str = "billing") -> dict[str, Any]:
    """A crash-looping pod with a Secret-backed env, a literal password env and secrets in Events."""
    api = cluster.api_client
    core = client.CoreV1Api(api)
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "db-creds"}, "stringData": {"password": SECRET_CANARY}}
    )
    container = {
        "name": "app",
        "image": "registry.example.com/shop/billing:2.0.1",
        "env": [
            {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db-creds", "key": "password"}}},
            {"name": "ADMIN_PASSWORD", "value": LITERAL_CANARY},
            {"name": "LOG_LEVEL", "value": "info"},
        ],
    }
    last_applied = json.dumps({"spec": {"containers": [container]}})
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {
                "name": name,
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": last_applied},
            },
            "spec": {"containers": [container]},
        },
    )
    kubesim.bind_pod(api, namespace, name, node)
    kubesim.run_pod(api, namespace, name)
    pod = kubesim.crash_loop(api, namespace, name, restarts=4)
    kubesim.post_event(
        api, pod, reason="Unhealthy", type="Warning", message=f"auth failed: token {TOKEN_CANARY} rejected"
    )
    kubesim.post_event(
        api,
        pod,
        reason="Started",
        message=f"connecting to postgres://billing:{SECRET_CANARY}@db:5432/billing",
    )
    return pod


async def test_capture_incident_is_valid_redacted_and_labelled(
    cluster: Cluster, namespace: str, node: str
) -> None:
    leaky_pod(cluster, namespace, node)
    kube = KubeClient.from_kubeconfig(str(cluster.kubeconfig))
    try:
        document = await capture_incident(kube, namespace, "billing", Clock())
    finally:
        kube.close()
    text = json.dumps(document)
    for canary in CANARIES:
        assert canary not in text, canary
    recorded = parse_incident(json.loads(text), "captured")
    assert recorded.context.incident_id == f"{namespace}-billing"
    assert recorded.expected is not None and recorded.expected.symptom == "CrashLoopBackOff"
    assert document["pod"]["metadata"]["name"] == "billing"
    assert "managedFields" not in document["pod"]["metadata"]
    env = {e["name"]: e for e in document["pod"]["spec"]["containers"][0]["env"]}
    assert env["ADMIN_PASSWORD"]["value"] == "[REDACTED]"
    assert env["LOG_LEVEL"]["value"] == "info"
    assert env["DB_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "db-creds"
    reasons = {e["reason"] for e in document["events"]}
    assert {"BackOff", "Unhealthy", "Started"} <= reasons
    assert document["node"]["metadata"]["name"] == node
    assert document["captured_at"].endswith("Z")


def test_incident_is_bounded_logs_dropped_first() -> None:
    pod = {"metadata": {"name": "big", "namespace": "ns"}, "spec": {}, "status": {}}
    events = tuple({"reason": "BackOff", "message": f"event {i}"} for i in range(20))
    huge = "".join(f"line {i} " + "z" * 200 + "\n" for i in range(5000))
    ctx = IncidentContext(pod=pod, events=events, logs={"app": {"current": huge, "previous": huge}})
    doc = redacted_incident(ctx, "ns-big", {"symptom": "CrashLoopBackOff"})
    size = len(json.dumps(doc, separators=(",", ":")).encode())
    assert size <= MAX_INCIDENT_BYTES
    assert len(doc["events"]) == 20  # events kept: the logs gave way
    current = doc["logs"]["app"]["current"]
    assert current.endswith(huge[-1000:]) and current.startswith("line ")  # a tail, cut at a line
    parse_incident(doc, "bounded")

    tiny = redacted_incident(ctx, "ns-big", None, max_bytes=2000)
    assert "logs" not in tiny and tiny["events"]
    assert len(json.dumps(tiny, separators=(",", ":")).encode()) <= 2000


async def _record_decisions(cluster: Cluster, namespace: str) -> dict[str, str]:
    """Decide about three pods with the real pipeline and record them; returns pod -> CR name."""
    kube = KubeClient.from_kubeconfig(str(cluster.kubeconfig))
    store, clock = DecisionStore(kube, Clock()), Clock()
    pipeline = Pipeline(policy=default_policy(), clock=clock)
    names: dict[str, str] = {}
    try:
        for pod_name in ("billing", "ledger", "plain"):
            pod = await kube.get_pod(namespace, pod_name)
            assert pod is not None
            ctx = await Gatherer(kube, clock).gather(pod)
            decision = await pipeline.decide(ctx)
            assert decision is not None
            incident = None
            if pod_name != "plain":
                incident = redacted_incident(ctx, ctx.incident_id, None)
            rec, created = await store.record(
                decision,
                phase=Phase.PENDING_APPROVAL,
                message=decision.verdict.reason,
                expires_at=clock.now() + timedelta(hours=1),
                incident=incident,
            )
            assert created
            names[pod_name] = rec.name
        # A human approves one and rejects another.
        # (as the test kubeconfig's user, admin, who must name itself in approvedBy)
        for name, approved in ((names["billing"], True), (names["ledger"], False)):
            await kube.patch(
                API_VERSION, PLURAL, namespace, name, {"spec": {"approved": approved, "approvedBy": "admin"}}
            )
        rejected = await store.get(namespace, names["ledger"])
        assert rejected is not None
        assert await store.transition(rejected, Phase.REJECTED, "rejected", expect={Phase.PENDING_APPROVAL})
    finally:
        kube.close()
    return names


def test_export_turns_decisions_into_replayable_incidents(
    cluster: Cluster, namespace: str, node: str, tmp_path: Path
) -> None:
    leaky_pod(cluster, namespace, node, "billing")
    leaky_pod_other(cluster, namespace, node, "ledger")
    leaky_pod_other(cluster, namespace, node, "plain")
    names = asyncio.run(_record_decisions(cluster, namespace))

    written = export_to_dir(namespace, tmp_path / "out")
    assert sorted(p.name for p in written) == sorted(f"{names[p]}.yaml" for p in ("billing", "ledger"))
    by_pod = {}
    for path in written:
        text = path.read_text()
        for canary in CANARIES:
            assert canary not in text
        incident = load_incident(path)
        by_pod[incident.context.pod_name] = incident
    billing, ledger = by_pod["billing"], by_pod["ledger"]
    assert billing.expected is not None and ledger.expected is not None
    assert billing.expected.symptom == "CrashLoopBackOff"
    assert billing.expected.category and billing.expected.actions
    assert ledger.expected.symptom == "OOMKilled" and ledger.expected.category == "oom"
    assert "approved by a human" in billing.document["description"]
    assert "phase PendingApproval" in billing.document["description"]
    assert "REJECTED" in ledger.document["description"] and "phase Rejected" in ledger.document["description"]

    # The exported files replay cleanly and the pipeline agrees with what was recorded.
    report = asyncio.run(replay([tmp_path / "out"], ReplayOptions(policy=default_policy())))
    assert report["summary"]["errors"] == 0 and report["summary"]["scored"] == 2
    assert report["summary"]["symptom_accuracy"] == 1.0
    assert report["summary"]["category_accuracy"] == 1.0
    assert report["summary"]["action_accuracy"] == 1.0


def leaky_pod_other(cluster: Cluster, namespace: str, node: str, name: str) -> dict[str, Any]:
    api = cluster.api_client
    client.CoreV1Api(api).create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": name},
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "registry.example.com/shop/ledger:3.1.0",
                        "env": [{"name": "API_TOKEN", "value": TOKEN_CANARY}],
                        "resources": {"limits": {"memory": "256Mi"}},
                    }
                ]
            },
        },
    )
    kubesim.bind_pod(api, namespace, name, node)
    return kubesim.oom_kill(api, namespace, name, restarts=3)


def run_cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sre_agent.cli", *args],
        env=cluster.env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_capture_and_export(cluster: Cluster, namespace: str, node: str, tmp_path: Path) -> None:
    leaky_pod(cluster, namespace, node, "billing")
    out = tmp_path / "billing.yaml"
    done = run_cli(cluster, "capture", "-n", namespace, "billing", "-o", str(out))
    assert done.returncode == 0, done.stderr
    incident = load_incident(out)
    assert incident.expected is not None and incident.expected.symptom == "CrashLoopBackOff"
    assert not any(c in out.read_text() for c in CANARIES)

    to_stdout = run_cli(cluster, "capture", "-n", namespace, "billing")
    assert to_stdout.returncode == 0, to_stdout.stderr
    assert f"id: {namespace}-billing" in to_stdout.stdout

    missing = run_cli(cluster, "capture", "-n", namespace, "nope")
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"sre-agent: pod {namespace}/nope not found"

    asyncio.run(_record_one(cluster, namespace))
    export_dir = tmp_path / "exported"
    exported = run_cli(cluster, "export", "-n", namespace, "-o", str(export_dir))
    assert exported.returncode == 0, exported.stderr
    assert "exported 1 incident(s)" in exported.stderr
    [path] = sorted(export_dir.iterdir())
    assert load_incident(path).expected is not None

    bad_env = {**cluster.env, "KUBECONFIG": str(tmp_path / "absent")}
    broken = subprocess.run(
        [sys.executable, "-m", "sre_agent.cli", "export", "-o", str(export_dir)],
        env=bad_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert broken.returncode == 1
    assert len(broken.stderr.strip().splitlines()) == 1
    assert broken.stderr.startswith("sre-agent: cannot load Kubernetes credentials")


async def _record_one(cluster: Cluster, namespace: str) -> None:
    kube = KubeClient.from_kubeconfig(str(cluster.kubeconfig))
    try:
        clock = Clock()
        pod = await kube.get_pod(namespace, "billing")
        assert pod is not None
        ctx = await Gatherer(kube, clock).gather(pod)
        decision = await Pipeline(policy=default_policy(), clock=clock).decide(ctx)
        assert decision is not None
        await DecisionStore(kube, clock).record(
            decision,
            phase=Phase.PENDING_APPROVAL,
            message="m",
            expires_at=clock.now() + timedelta(hours=1),
            incident=redacted_incident(ctx, ctx.incident_id, None),
        )
    finally:
        kube.close()
