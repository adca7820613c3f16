"""One incident with a CANARY secret in every shape, sent down every path that leaves the agent.

Shapes: a flag and its value as separate args, mysql `-p X` / `-pX`, secret-named annotations,
an old value in kubectl's last-applied-configuration (echoed again in a log), a Slack webhook,
Stripe keys and a base64 blob under harmless env names, and in logs and Event messages
`redis AUTH`, `mysql -pX`, `curl -u user:X`, cookies and session ids.
Paths: the prompt the fake LLM receives, the evidence and decision (what operator log lines
quote), `spec.incident` in the AgentDecision manifest, a `capture` file, and an `export` file made
from an AgentDecision whose spec.incident was stored unredacted (an older version, a hand edit).
Diagnosis signals survive: connection refused, exit codes, OOMKilled, the image name.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sre_agent.adapters.kube.capture import incident_from_decision, redacted_incident
from sre_agent.adapters.kube.decisions import incident_of, manifest_for
from sre_agent.adapters.llm import LLMConfig, OpenAIReasoner
from sre_agent.adapters.recorded import dump_incident, parse_incident
from sre_agent.core.pipeline import Pipeline
from sre_agent.core.policy import default_policy
from sre_agent.core.reasoning import FixedClock
from sre_agent.domain import Decision, IncidentContext
from tests.fake_llm import FakeLLM, answer_for, reply
from tests.unit.podfactory import deployment, event, node, pod, terminated, waiting

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
IMAGE = "registry.example.com/shop/checkout:1.4.2"
BLOB = "c2VjcmV0CANARY9xK2mP7vQ4wL8zR1tY6nB3hJ5fD0gS"  # base64 alphabet, high entropy
OLD_PASSWORD = "CANARY-old-applied-pw"
SPLIT = ("CANARY-split-db", "CANARY-split-tok", "CANARY-split-key", "CANARY-split-mysql")


def leaky_context() -> IncidentContext:
    container = {
        "name": "app",
        "image": IMAGE,
        "command": ["/app/server"],
        "args": ["--db-password", SPLIT[0], "--token", SPLIT[1], "--api-key", SPLIT[2], "--port", "8080"],
        "env": [
            {
                "name": "NOTIFY_URL",
                "value": "https://hooks.slack.com/services/T0CANARY/B0CANARY/CANARYslackhook",
            },
            {"name": "PAYMENT_CFG", "value": "sk_live_CANARY51Nq8xBvR2kd0Ty"},
            {"name": "REFUND_CFG", "value": "rk_live_CANARY77aaBBccDD"},
            {"name": "SETTINGS", "value": BLOB},
            {"name": "LOG_LEVEL", "value": "info"},
        ],
    }
    migrate = {
        "name": "migrate",
        "image": "mysql:8.0",
        "command": ["mysql", "-h", "db", "-u", "root", "-p", SPLIT[3]],
    }
    old = copy.deepcopy(container)
    old["env"].append({"name": "DB_PASSWORD", "value": OLD_PASSWORD})
    old["args"] = ["--token", "CANARY-old-applied-tok"]
    p = pod(
        containers=[container],
        statuses=[waiting("CrashLoopBackOff", "back-off 40s", 5, terminated("OOMKilled", 137))],
    )
    p["spec"]["initContainers"] = [migrate]
    p["metadata"]["annotations"] = {
        "example.com/api-token": "CANARY-annotation-token",
        "vault.example.com/db-password": "CANARY-annotation-pw",
        "backup.example.com/encryption-key": "CANARY-annotation-key",
        "example.com/team": "payments",
        "kubectl.kubernetes.io/last-applied-configuration": json.dumps(
            {"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [old]}}
        ),
    }
    logs = "\n".join(
        [
            "INFO connecting to redis-master:6379",
            "DEBUG redis AUTH CANARYredisauth",
            '1700000000.1 [0 10.0.0.7:5000] "AUTH" "default" "CANARYmonitorpw"',
            "DEBUG exec mysql -h db -u app -pCANARYmysqlpw shop",
            "DEBUG curl -u deploy:CANARYcurlpw https://api.internal/v1/health",
            "DEBUG GET /cart Cookie: theme=dark; sessionid=CANARYcookie1",
            "DEBUG Set-Cookie: session=CANARYcookie2; Path=/; HttpOnly",
            "DEBUG request session=CANARYsess3 user=42",
            f"WARN retrying login with {OLD_PASSWORD}",
            "ERROR dial tcp 10.0.4.2:5432: connect: connection refused",
            "java.lang.OutOfMemoryError: Java heap space",
        ]
    )
    events = (
        event("BackOff", "Back-off restarting failed container app in pod checkout"),
        event("Failed", "Error: exec: mysql -u root -pCANARYeventmysql failed: exit status 1"),
        event(
            "Unhealthy",
            "Readiness probe failed: Get http://10.0.4.9:8080/ready: dial tcp: connection refused",
        ),
        event(
            "Warning", "webhook https://hooks.slack.com/services/T1/B2/CANARYeventhook: AUTH CANARYeventauth"
        ),
    )
    return IncidentContext(
        pod=p,
        events=events,
        logs={"app": {"previous": logs, "current": logs}},
        owner=deployment(),
        node=node(),
        captured_at=NOW,
        incident_id="shop-checkout",
    )


@pytest.fixture
async def llm(fake_llm: FakeLLM) -> AsyncIterator[OpenAIReasoner]:
    fake_llm.default = reply(answer_for("oom"))
    reasoner = OpenAIReasoner(
        LLMConfig(base_url=fake_llm.base_url, model="m", api_key="k", timeout_seconds=2, deadline_seconds=10)
    )
    yield reasoner
    await reasoner.aclose()


async def decide(reasoner: OpenAIReasoner | None = None) -> Decision:
    auto = replace(default_policy(), auto_approve_above=0.0)
    pipeline = Pipeline(policy=auto, clock=FixedClock(NOW), reasoner=reasoner)
    decision = await pipeline.decide(leaky_context())
    assert decision is not None
    return decision


def assert_clean(text: str) -> None:
    assert "CANARY" not in text
    assert BLOB not in text


async def test_the_llm_sees_no_secret_but_every_diagnosis_signal(
    fake_llm: FakeLLM, llm: OpenAIReasoner
) -> None:
    decision = await decide(llm)
    assert decision.diagnosis.source == "llm"
    [request] = fake_llm.requests
    assert_clean(json.dumps(request))
    prompt = fake_llm.all_text()
    for signal in ("connection refused", "OOMKilled", "137", IMAGE, "OutOfMemoryError"):
        assert signal in prompt, signal


async def test_evidence_and_decision_hold_no_secret() -> None:
    # What the rules read, and what the operator's log lines quote (summary, notes, signals).
    decision = await decide()
    assert_clean(repr(decision))
    assert decision.diagnosis.category.value == "oom"


async def test_spec_incident_and_capture_file_hold_no_secret() -> None:
    ctx = leaky_context()
    incident = redacted_incident(ctx, "shop-checkout", {"symptom": "CrashLoopBackOff"})
    manifest = manifest_for(await decide(), expires_at=NOW + timedelta(hours=1), incident=incident)
    stored = incident_of(manifest)  # spec.zippedIncident: checked decompressed
    assert stored == incident
    assert_clean(json.dumps([manifest, stored]))
    text = dump_incident(incident)  # what `sre-agent capture` writes
    assert_clean(text)
    assert IMAGE in text and "connection refused" in text and "OOMKilled" in text
    container = incident["pod"]["spec"]["containers"][0]
    assert container["args"][-2:] == ["--port", "8080"]  # ordinary flags keep their values
    assert {"name": "LOG_LEVEL", "value": "info"} in container["env"]
    assert incident["pod"]["metadata"]["annotations"]["example.com/team"] == "payments"
    parse_incident(incident, "captured")


async def test_export_redacts_an_incident_stored_unredacted() -> None:
    ctx = leaky_context()
    raw: dict[str, Any] = {
        "id": "shop-checkout",
        "pod": ctx.pod,
        "events": list(ctx.events),
        "logs": ctx.logs,
        "owner": ctx.owner,
    }
    manifest = manifest_for(await decide(), expires_at=NOW + timedelta(hours=1), incident=raw)
    manifest["metadata"].update(uid="u", resourceVersion="1", creationTimestamp="2026-11-20T10:00:01Z")
    manifest["status"] = {"phase": "PendingApproval"}
    document = incident_from_decision(manifest)
    assert document is not None
    text = dump_incident(document)
    assert_clean(text)
    assert "connection refused" in text and IMAGE in text
    parse_incident(document, "exported")
