"""Telling approvers and keeping cooldowns: approval webhooks (Slack, Alertmanager), their settings,
the peering take-over hook, Events read for detection at a bounded rate, suppression in policy
files, and restart_pod's cooldown kept per workload."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sre_agent.adapters.kube.gatherer import Gatherer, GatherLimits
from sre_agent.adapters.notify import ApprovalWebhook, approval_alert_payload, slack_payload
from sre_agent.core.policy import (
    ActionLedger,
    ActionRequest,
    Suppression,
    default_policy,
    evaluate,
    parse_policy_text,
)
from sre_agent.domain import ObjectRef, ProposedAction
from sre_agent.operator.peering import PeeringGate
from sre_agent.settings import Settings, SettingsError
from tests.unit.test_notify import Receiver

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
REQUEST = {
    "decision": "checkout-api-3f9c2a1b-1",
    "namespace": "shop",
    "kind": "Pod",
    "target": "checkout-api-7d9f8b6c4-x2kqz",
    "symptom": "CrashLoopBackOff",
    "category": "app_error",
    "action": "restart_pod",
    "confidence": 0.82,
    "diagnosis": "NullPointerException at start <!channel> <https://evil.example|click>",
    "expiresAt": "2026-11-20T11:00:00Z",
}
COMMAND = "sre-agent approve checkout-api-3f9c2a1b-1 -n shop"


def test_the_slack_payload_carries_the_approve_command_and_escapes_llm_text() -> None:
    body = slack_payload(REQUEST)
    assert COMMAND in body["text"]
    rendered = str(body["blocks"])
    assert f"`{COMMAND}`" in rendered
    assert "<!channel>" not in rendered and "&lt;!channel&gt;" in rendered  # no @channel from an LLM


def test_the_alertmanager_payload_is_one_alert_resolved_when_the_decision_expires() -> None:
    (alert,) = approval_alert_payload(REQUEST, NOW)
    assert alert["labels"]["alertname"] == "SREAgentDecisionPending"
    assert alert["labels"]["decision"] == "checkout-api-3f9c2a1b-1"
    assert alert["annotations"]["approve_command"] == COMMAND
    assert alert["endsAt"] == "2026-11-20T11:00:00Z"


@pytest.mark.parametrize(("fmt", "path"), [("slack", "/hooks/T000/B000"), ("alertmanager", "/api/v2/alerts")])
async def test_the_approval_webhook_posts_to_a_real_receiver(fmt: str, path: str) -> None:
    with Receiver() as receiver:
        base = receiver.url + ("/hooks/T000/B000" if fmt == "slack" else "")
        assert await ApprovalWebhook(base, fmt).announce(REQUEST)
    (got_path, content_type, body) = receiver.requests[0]
    assert got_path == path and content_type == "application/json"
    assert COMMAND in str(body)


async def test_an_unreachable_webhook_is_a_logged_failure_not_an_exception() -> None:
    with Receiver(status=500) as receiver:
        assert not await ApprovalWebhook(receiver.url, "slack").announce(REQUEST)


def test_approval_webhook_settings() -> None:
    env = {"SRE_AGENT_APPROVAL_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/x"}
    settings = Settings.from_env(env)
    assert settings.approval_webhook_url.endswith("/x") and settings.approval_webhook_format == "slack"
    fmt = Settings.from_env({**env, "SRE_AGENT_APPROVAL_WEBHOOK_FORMAT": "Alertmanager"})
    assert fmt.approval_webhook_format == "alertmanager"
    with pytest.raises(SettingsError, match="SRE_AGENT_APPROVAL_WEBHOOK_FORMAT"):
        Settings.from_env({**env, "SRE_AGENT_APPROVAL_WEBHOOK_FORMAT": "teams"})
    with pytest.raises(SettingsError) as bad:
        Settings.from_env({"SRE_AGENT_APPROVAL_WEBHOOK_URL": "hooks.slack.com/services/T/B/SECRETTOKEN"})
    assert "SECRETTOKEN" not in str(bad.value)  # the URL holds a token: never echoed


# --------------------------------------------------------------------------- peering take-over


class PeeringKube:
    """Serves one ClusterKopfPeering object whose peers the test changes."""

    def __init__(self) -> None:
        self.status: dict[str, Any] = {}

    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> dict[str, Any]:
        return {"metadata": {"name": name}, "status": self.status}


def peer(priority: int, seen: datetime) -> dict[str, Any]:
    return {"priority": priority, "lifetime": 60, "lastSeen": seen.isoformat()}


async def test_the_gate_rebuilds_when_this_replica_takes_over_and_only_then() -> None:
    kube = PeeringKube()
    rebuilds: list[int] = []

    async def rebuild() -> None:
        rebuilds.append(1)

    pauses: list[int] = []
    gate = PeeringGate(
        kube,  # type: ignore[arg-type]
        name="sre-agent",
        identity="me",
        priority=0,
        on_activate=rebuild,
        on_pause=lambda: pauses.append(1),
    )
    assert await gate.active() and rebuilds == []  # started active: start() already rebuilt
    kube.status = {"other": peer(10, datetime.now(UTC))}
    assert not await gate.active()
    assert not await gate.active()
    assert pauses == [1]
    kube.status = {"other": peer(10, datetime.now(UTC) - timedelta(minutes=5))}  # the other peer died
    assert await gate.active() and rebuilds == [1]
    assert await gate.active() and rebuilds == [1]
    assert gate.activations == 1


# --------------------------------------------------------------------------- events at a bounded rate


class Clock:
    def __init__(self) -> None:
        self.at = NOW

    def now(self) -> datetime:
        return self.at


class EventsKube:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def events_for(self, namespace: str, uid: str, limit: int = 200) -> list[dict[str, Any]]:
        self.calls.append(uid)
        return [{"reason": "Unhealthy", "lastTimestamp": "2026-11-20T09:59:00Z"}]


async def test_events_for_detection_are_read_at_most_once_per_pod_per_interval() -> None:
    kube, clock = EventsKube(), Clock()
    gatherer = Gatherer(kube, clock, GatherLimits(detection_events_interval_seconds=30))  # type: ignore[arg-type]
    a = {"metadata": {"namespace": "shop", "name": "a", "uid": "uid-a"}}
    b = {"metadata": {"namespace": "shop", "name": "b", "uid": "uid-b"}}
    for _ in range(50):  # a pod that changes all the time
        assert (await gatherer.events_for_detection(a))[0]["reason"] == "Unhealthy"
    await gatherer.events_for_detection(b)
    assert kube.calls == ["uid-a", "uid-b"]
    clock.at += timedelta(seconds=30)
    await gatherer.events_for_detection(a)
    assert kube.calls == ["uid-a", "uid-b", "uid-a"]
    assert await gatherer.events_for_detection({"metadata": {"name": "no-uid"}}) == []


# --------------------------------------------------------------------------- policy


def test_a_policy_sets_the_suppression_times_and_unknown_keys_are_refused() -> None:
    policy = parse_policy_text(
        "kind: Policy\nname: p\nsuppression: {afterRejectedSeconds: 7200, afterExpiredSeconds: 60}\n"
    )
    assert policy.suppression == Suppression(
        after_rejected_seconds=7200,
        after_expired_seconds=60,
        after_executed_seconds=Suppression().after_executed_seconds,
        after_blocked_seconds=Suppression().after_blocked_seconds,
    )
    assert parse_policy_text("kind: Policy\nname: p\n").suppression == Suppression()
    for bad in ("{afterRejectedSeconds: -1}", "{afterRejected: 10}", "{afterExpiredSeconds: 1.5}"):
        with pytest.raises(ValueError, match="suppression"):
            parse_policy_text(f"kind: Policy\nname: p\nsuppression: {bad}\n")


def test_restart_pod_cooldown_follows_the_workload_not_the_pod_name() -> None:
    owner = ObjectRef("Deployment", "web", "shop", api_version="apps/v1")
    policy = default_policy()
    ledger = ActionLedger()

    def restart(pod: str) -> ActionRequest:
        return ActionRequest(
            ProposedAction("restart_pod"), ObjectRef("Pod", pod, "shop"), owner, "node-a", 0.9
        )

    ledger.record_action(restart("web-7d4b9c-aaaaa"), NOW - timedelta(minutes=1))
    verdict = evaluate(policy, restart("web-7d4b9c-bbbbb"), ledger, NOW)  # the replacement pod
    assert (
        verdict.outcome == "blocked"
        and "cooldown" in verdict.reason
        and "Deployment/shop/web" in verdict.reason
    )
    other = ObjectRef("Deployment", "api", "shop", api_version="apps/v1")
    unrelated = ActionRequest(
        ProposedAction("restart_pod"), ObjectRef("Pod", "api-1", "shop"), other, "n", 0.9
    )
    assert "cooldown" not in evaluate(policy, unrelated, ledger, NOW).reason
