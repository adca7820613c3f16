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
        try:
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(self.url, data=body, headers={"Content-Type": "application/json"}) as resp,
            ):
                if resp.status >= 300:
                    text = (await resp.text())[:200]
                    self.failed += 1
                    log.warning(
                        "Alert for %s not delivered to %s: HTTP %s %s", where, self.url, resp.status, text
                    )
                    return
        except Exception as exc:  # network, DNS, timeout: log, never raise
            self.failed += 1
            log.warning("Alert for %s not delivered to %s: %s: %s", where, self.url, type(exc).__name__, exc)
            return
        self.sent += 1
        log.info("Alert for %s delivered to %s", where, self.url)
