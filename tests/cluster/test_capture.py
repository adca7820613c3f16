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
from sre_agent.adapters.kube.decisions import (
    API_VERSION,
    GROUP,
    PLURAL,
    VERSION,
    DecisionStore,
    Phase,
    incident_of,
)
from sre_agent.adapters.kube.gatherer import Gatherer
from sre_agent.adapters.llm import LLMConfig, OpenAIReasoner
from sre_agent.adapters.recorded import load_incident, parse_incident
from sre_agent.core.pipeline import Pipeline
from sre_agent.core.policy import default_policy
from sre_agent.domain import IncidentContext
from sre_agent.replay import ReplayOptions, replay
from tests.cluster import kubesim
from tests.cluster.conftest import REPO, Cluster
from tests.fake_llm import FakeLLM, answer_for, reply

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
    # Only human decisions become labels: approved but not (yet) executed says nothing; rejected
    # makes the proposed action forbidden. The agent's own symptom and category are never copied.
    assert billing.expected is None
    assert ledger.expected is not None and ledger.expected.forbidden_actions
    assert ledger.expected.symptom is None and ledger.expected.category is None and not ledger.expected.actions
    assert "approved by a human" in billing.document["description"]
    assert "phase PendingApproval" in billing.document["description"]
    assert "REJECTED" in ledger.document["description"] and "phase Rejected" in ledger.document["description"]

    # The exported files replay cleanly, and the rejected action is not scored as correct.
    report = asyncio.run(replay([tmp_path / "out"], ReplayOptions(policy=default_policy())))
    summary = report["summary"]
    assert summary["errors"] == 0 and summary["scored"] == 1
    assert summary["unscored"] == {"symptom": 2, "category": 2, "action": 1}
    assert summary["symptom_accuracy"] is None and summary["category_accuracy"] is None
    assert summary["action_accuracy"] == 0.0 and summary["forbidden_actions_proposed"] == 1


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
    assert load_incident(path).expected is None  # pending: no human has judged it, so no label

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


# -- every shape of secret issue 7 found leaking, through every path ---------------------------

BLOB = "c2VjcmV0CANARY9xK2mP7vQ4wL8zR1tY6nB3hJ5fD0gS"  # base64 alphabet, high entropy
OLD_PASSWORD = "CANARY-old-applied-pw-4410"
LOG_LINES = (
    "INFO starting checkout 3.2.0",
    "DEBUG redis AUTH CANARYredisauth77",
    '1700000000.1 [0 10.0.0.7:5000] "AUTH" "default" "CANARYmonitorpw"',
    "DEBUG exec mysql -h db -u app -pCANARYmysqlpw shop",
    "DEBUG curl -u deploy:CANARYcurlpw https://api.internal/v1/health",
    "DEBUG GET /cart Cookie: theme=dark; sessionid=CANARYcookie1",
    "DEBUG Set-Cookie: session=CANARYcookie2; Path=/; HttpOnly",
    f"WARN retrying login with {OLD_PASSWORD}",
    "ERROR dial tcp 10.0.4.2:5432: connect: connection refused",
)


def secret_shapes_pod(cluster: Cluster, namespace: str, node: str, name: str = "vault") -> dict[str, Any]:
    """A crash-looping pod with a CANARY in split args, secret-named annotations, last-applied,
    webhook/Stripe/base64 env values, its termination message (the log tail) and Event messages."""
    api = cluster.api_client
    app = {
        "name": "app",
        "image": "registry.example.com/shop/checkout:3.2.0",
        "args": [
            "--db-password",
            "CANARY-split-db",
            "--token",
            "CANARY-split-tok",
            "--api-key",
            "CANARY-split-key",
        ],
        "env": [
            {
                "name": "NOTIFY_URL",
                "value": "https://hooks.slack.com/services/T0CANARY/B0CANARY/CANARYslackhook",
            },
            {"name": "PAYMENT_CFG", "value": "sk_live_CANARY51Nq8xBvR2kd0Ty"},
            {"name": "SETTINGS", "value": BLOB},
            {"name": "LOG_LEVEL", "value": "info"},
        ],
    }
    migrate = {
        "name": "migrate",
        "image": "mysql:8.0",
        "command": ["mysql", "-h", "db", "-u", "root", "-p", "CANARY-split-mysql"],
    }
    old = json.loads(json.dumps(app))
    old["env"].append({"name": "DB_PASSWORD", "value": OLD_PASSWORD})
    last_applied = json.dumps({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [old]}})
    client.CoreV1Api(api).create_namespaced_pod(
        namespace,
        {
            "metadata": {
                "name": name,
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": last_applied,
                    "example.com/api-token": "CANARY-annotation-token",
                    "vault.example.com/db-password": "CANARY-annotation-pw",
                    "backup.example.com/encryption-key": "CANARY-annotation-key",
                },
            },
            "spec": {"containers": [app, migrate]},
        },
    )
    kubesim.bind_pod(api, namespace, name, node)
    kubesim.run_pod(api, namespace, name)
    pod = kubesim.crash_loop(api, namespace, name, container="app", restarts=4)
    # terminationMessagePolicy FallbackToLogsOnError: the kubelet copies the log tail here.
    status = pod["status"]
    for cs in status["containerStatuses"]:
        if cs["name"] == "app":
            cs["lastState"]["terminated"]["message"] = "\n".join(LOG_LINES)
    client.CoreV1Api(api).patch_namespaced_pod_status(name, namespace, {"status": status})
    for message in (
        "Error: exec: mysql -u root -pCANARYeventmysql failed: exit status 1",
        "alert to https://hooks.slack.com/services/T1/B2/CANARYeventhook failed; redis AUTH CANARYeventauth",
        "upstream GET /cart Cookie: sessionid=CANARYeventcookie returned 502",
    ):
        kubesim.post_event(api, pod, reason="Failed", type="Warning", message=message)
    return pod


def assert_no_canary(text: str, where: str) -> None:
    assert "CANARY" not in text, (
        f"{where}: {text[max(0, text.find('CANARY') - 80) : text.find('CANARY') + 40]}"
    )
    assert BLOB not in text, where


async def _capture_decide_record(
    cluster: Cluster, namespace: str, fake_llm: FakeLLM
) -> tuple[dict[str, Any], str]:
    """Capture the pod, decide about it with the LLM, record the AgentDecision: (capture, CR name)."""
    fake_llm.default = reply(answer_for("dependency_unavailable"))
    kube = KubeClient.from_kubeconfig(str(cluster.kubeconfig))
    reasoner = OpenAIReasoner(
        LLMConfig(base_url=fake_llm.base_url, model="m", api_key="k", timeout_seconds=5, deadline_seconds=20)
    )
    clock = Clock()
    try:
        captured = await capture_incident(kube, namespace, "vault", clock)
        pod = await kube.get_pod(namespace, "vault")
        assert pod is not None
        ctx = await Gatherer(kube, clock).gather(pod)
        assert "CANARY" in json.dumps(ctx.pod) and "CANARY" in json.dumps(ctx.events)  # they were there
        decision = await Pipeline(policy=default_policy(), clock=clock, reasoner=reasoner).decide(ctx)
        assert decision is not None and decision.diagnosis.source == "llm"
        rec, created = await DecisionStore(kube, clock).record(
            decision,
            phase=Phase.PENDING_APPROVAL,
            message=decision.verdict.reason,
            expires_at=clock.now() + timedelta(hours=1),
            incident=redacted_incident(ctx, ctx.incident_id, None),
        )
        assert created
        return captured, rec.name
    finally:
        await reasoner.aclose()
        kube.close()


def test_secret_shapes_reach_neither_llm_nor_incident_nor_files(
    cluster: Cluster,
    namespace: str,
    node: str,
    tmp_path: Path,
    fake_llm: FakeLLM,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret_shapes_pod(cluster, namespace, node)

    async def kubelet_logs(self: Gatherer, pod: dict[str, Any]) -> dict[str, dict[str, str]]:
        text = "\n".join(LOG_LINES) + "\n"
        return {"app": {"previous": text, "current": text}}

    monkeypatch.setattr(Gatherer, "logs", kubelet_logs)  # no kubelet serves logs on this control plane
    captured, name = asyncio.run(_capture_decide_record(cluster, namespace, fake_llm))

    # The capture document: redacted, yet the diagnosis signals are still there.
    text = json.dumps(captured)
    assert_no_canary(text, "capture")
    assert "connection refused" in text and "registry.example.com/shop/checkout:3.2.0" in text
    # What the LLM received.
    assert len(fake_llm.requests) == 1
    assert_no_canary(json.dumps(fake_llm.requests), "LLM request")
    assert "connection refused" in fake_llm.all_text()
    # The AgentDecision as the API server stores it, spec.incident included.
    stored = client.CustomObjectsApi(cluster.api_client).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    incident = incident_of(stored) or {}  # stored zipped: searched decompressed
    assert incident["pod"]["metadata"]["name"] == "vault"
    assert_no_canary(json.dumps([stored, incident]), "AgentDecision")
    # The files `export` and `capture` write.
    for path in export_to_dir(namespace, tmp_path / "exported"):
        assert_no_canary(path.read_text(), str(path))
    out = tmp_path / "vault.yaml"
    done = run_cli(cluster, "capture", "-n", namespace, "vault", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert_no_canary(out.read_text(), "capture file")
    assert_no_canary(done.stderr, "capture stderr")
