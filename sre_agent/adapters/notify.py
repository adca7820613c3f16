"""Notifiers: hand a decision to humans outside the cluster (create_alert, and needs-approval pings).

`WebhookNotifier` speaks Alertmanager's v2 API (`POST /api/v2/alerts` with a JSON list of
alerts), which Alertmanager itself and most on-call tools accept. A notifier never raises:
a failed delivery is logged in one line and the agent goes on (the Kubernetes Event posted
by the executor is the record that always exists).

Called by the executor (adapters.kube.executor) and built by the operator from settings.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import aiohttp

log = logging.getLogger("sre_agent.notify")

ALERTNAME = "SREAgentDecision"
ALERTS_PATH = "/api/v2/alerts"
SEVERITIES = ("info", "warning", "critical")
MAX_ANNOTATION = 4096
DEFAULT_ALERT_HOURS = 1  # endsAt: Alertmanager resolves the alert unless it is sent again


class Notifier(Protocol):
    async def notify(self, decision_summary: Mapping[str, Any]) -> None:
        """Deliver one decision summary; must not raise."""
        ...


def _label(value: Any) -> str:
    return "" if value is None else " ".join(str(value).split())[:256]


def _text(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= MAX_ANNOTATION else text[: MAX_ANNOTATION - 3] + "..."


def alert_payload(summary: Mapping[str, Any], now: datetime | None = None) -> list[dict[str, Any]]:
    """The Alertmanager v2 body for one decision summary.

    Keys read from the summary: namespace, pod, symptom, category, severity, summary,
    description, action, decision (the AgentDecision name), node, url. Unknown keys are ignored.
    """
    severity = str(summary.get("severity") or "warning")
    if severity not in SEVERITIES:
        severity = "warning"
    labels = {
        "alertname": ALERTNAME,
        "namespace": _label(summary.get("namespace")),
        "pod": _label(summary.get("pod")),
        "symptom": _label(summary.get("symptom")),
        "category": _label(summary.get("category")),
        "severity": severity,
    }
    for extra in ("action", "decision", "node"):
        if summary.get(extra):
            labels[extra] = _label(summary[extra])
    labels = {k: v for k, v in labels.items() if v}
    title = summary.get("summary") or (
        f"{summary.get('symptom') or 'incident'} on pod {summary.get('namespace')}/{summary.get('pod')}"
    )
    description = summary.get("description") or summary.get("diagnosis") or title
    alert: dict[str, Any] = {
        "labels": labels,
        "annotations": {"summary": _text(title), "description": _text(description)},
    }
    if now is not None:
        alert["startsAt"] = now.astimezone(UTC).isoformat().replace("+00:00", "Z")
        alert["endsAt"] = (
            (now + timedelta(hours=DEFAULT_ALERT_HOURS)).astimezone(UTC).isoformat().replace("+00:00", "Z")
        )
    if summary.get("url"):
        alert["generatorURL"] = str(summary["url"])
    return [alert]


class WebhookNotifier:
    """POSTs Alertmanager v2 alerts to `<url>/api/v2/alerts` (or to `url` if it already ends so)."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        base = url.rstrip("/")
        self.url = base if base.endswith(ALERTS_PATH) else base + ALERTS_PATH
        self.timeout = timeout
        self.sent = 0
        self.failed = 0

    async def notify(self, decision_summary: Mapping[str, Any]) -> None:
        body = json.dumps(alert_payload(decision_summary, datetime.now(UTC)))
        where = f"{decision_summary.get('namespace')}/{decision_summary.get('pod')}"
        problem = await post_json(self.url, body, self.timeout)
        if problem:
            self.failed += 1
            log.warning("Alert for %s not delivered to %s: %s", where, self.url, problem)
            return
        self.sent += 1
        log.info("Alert for %s delivered to %s", where, self.url)


async def post_json(url: str, body: str, seconds: float) -> str:
    """POST a JSON body; "" when the receiver accepted it, else why not (one line). Never raises."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as session,
            session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp,
        ):
            if resp.status >= 300:
                return f"HTTP {resp.status} {(await resp.text())[:200]}"
    except Exception as exc:  # network, DNS, timeout: reported, never raised
        return f"{type(exc).__name__}: {exc}"
    return ""


# --------------------------------------------------------------------------- approval requests

APPROVAL_ALERTNAME = "SREAgentDecisionPending"
APPROVAL_FORMATS = ("slack", "alertmanager")


def approve_command(name: str, namespace: str) -> str:
    return f"sre-agent approve {name} -n {namespace}"


def reject_command(name: str, namespace: str) -> str:
    return f"sre-agent reject {name} -n {namespace}"


def approval_text(request: Mapping[str, Any]) -> str:
    """One line announcing a pending decision, with the command that approves it.

    Keys read: decision, namespace, kind, target, symptom, category, action, confidence, expiresAt.
    """
    name, namespace = _label(request.get("decision")), _label(request.get("namespace"))
    confidence = request.get("confidence")
    conf = f", confidence {confidence:.2f}" if isinstance(confidence, int | float) else ""
    expires = f"; expires {_label(request.get('expiresAt'))}" if request.get("expiresAt") else ""
    return (
        f"AgentDecision {namespace}/{name} waits for approval: {_label(request.get('action'))} on "
        f"{_label(request.get('kind') or 'Pod')} {namespace}/{_label(request.get('target'))} "
        f"({_label(request.get('symptom'))}, {_label(request.get('category'))}{conf}){expires}. "
        f"Approve: {approve_command(name, namespace)}  Reject: {reject_command(name, namespace)}"
    )


def _slack_escape(text: str) -> str:
    """Slack's three control characters, escaped: LLM-written text cannot ping @channel or hide links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(request: Mapping[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook body (also accepted by Mattermost and Rocket.Chat)."""
    name, namespace = _label(request.get("decision")), _label(request.get("namespace"))
    diagnosis = _slack_escape(" ".join(_text(request.get("diagnosis") or "").split())[:2900])
    text = _slack_escape(approval_text(request))
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": text.split(". Approve:")[0] + "."}},
    ]
    if diagnosis:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"> {diagnosis}"}})
    blocks.append(
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": f"Approve: `{approve_command(name, namespace)}`\nReject: `{reject_command(name, namespace)}`",
            },
        }
    )
    return {"text": text, "blocks": blocks}


def approval_alert_payload(request: Mapping[str, Any], now: datetime) -> list[dict[str, Any]]:
    """An Alertmanager v2 body: one alert per pending decision, resolved when it expires."""
    name, namespace = _label(request.get("decision")), _label(request.get("namespace"))
    labels = {
        "alertname": APPROVAL_ALERTNAME,
        "namespace": namespace,
        "decision": name,
        "pod": _label(request.get("target")),
        "symptom": _label(request.get("symptom")),
        "category": _label(request.get("category")),
        "action": _label(request.get("action")),
        "severity": "warning",
    }
    ends = request.get("expiresAt")
    alert: dict[str, Any] = {
        "labels": {k: v for k, v in labels.items() if v},
        "annotations": {
            "summary": _text(approval_text(request)),
            "description": _text(request.get("diagnosis") or ""),
            "approve_command": approve_command(name, namespace),
            "reject_command": reject_command(name, namespace),
        },
        "startsAt": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }
    alert["endsAt"] = (
        str(ends)
        if isinstance(ends, str) and ends
        else (now + timedelta(hours=DEFAULT_ALERT_HOURS)).astimezone(UTC).isoformat().replace("+00:00", "Z")
    )
    return [alert]


class ApprovalWebhook:
    """Announces decisions that wait for approval to a Slack-compatible or Alertmanager webhook.

    `slack` POSTs to the URL as given; `alertmanager` to `<url>/api/v2/alerts`. Never raises.
    """

    def __init__(self, url: str, fmt: str = "slack", timeout: float = 5.0) -> None:
        if fmt not in APPROVAL_FORMATS:
            raise ValueError(f"approval webhook format must be one of {', '.join(APPROVAL_FORMATS)}")
        base = url.rstrip("/") if fmt == "alertmanager" else url
        self.url = base + ALERTS_PATH if fmt == "alertmanager" and not base.endswith(ALERTS_PATH) else base
        self.format = fmt
        self.timeout = timeout

    def payload(self, request: Mapping[str, Any]) -> Any:
        if self.format == "slack":
            return slack_payload(request)
        return approval_alert_payload(request, datetime.now(UTC))

    async def announce(self, request: Mapping[str, Any]) -> bool:
        """POST the announcement; True when the receiver accepted it."""
        body = json.dumps(self.payload(request))
        what = f"{request.get('namespace')}/{request.get('decision')}"
        problem = await post_json(self.url, body, self.timeout)
        if problem:
            log.warning("Approval request for %s not delivered: %s", what, problem)
            return False
        log.info("Approval request for %s delivered (%s webhook)", what, self.format)
        return True
