"""WebhookNotifier against a real HTTP server on 127.0.0.1 (Alertmanager v2 API shape)."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sre_agent.adapters.notify import WebhookNotifier, alert_payload


class Receiver:
    """A tiny Alertmanager stand-in: records every request, answers with `status`."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[tuple[str, str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                receiver.requests.append(
                    (self.path, self.headers.get("Content-Type", ""), json.loads(body or b"null"))
                )
                self.send_response(receiver.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


SUMMARY = {
    "namespace": "shop",
    "pod": "web-7d4b9c-abcde",
    "symptom": "OOMKilled",
    "category": "oom",
    "severity": "critical",
    "summary": "web is OOMKilled: limit 256Mi too low",
    "description": "Container app exceeded its 256Mi memory limit 4 times in 10 minutes.",
    "decision": "web-1a2b3c4d-t1",
}


async def test_posts_an_alertmanager_v2_alert(receiver: Receiver) -> None:
    notifier = WebhookNotifier(receiver.url + "/")
    await notifier.notify(SUMMARY)
    assert len(receiver.requests) == 1
    path, content_type, body = receiver.requests[0]
    assert path == "/api/v2/alerts"
    assert content_type == "application/json"
    assert isinstance(body, list) and len(body) == 1
    alert = body[0]
    assert alert["labels"] == {
        "alertname": "SREAgentDecision",
        "namespace": "shop",
        "pod": "web-7d4b9c-abcde",
        "symptom": "OOMKilled",
        "category": "oom",
        "severity": "critical",
        "decision": "web-1a2b3c4d-t1",
    }
    assert alert["annotations"] == {
        "summary": "web is OOMKilled: limit 256Mi too low",
        "description": "Container app exceeded its 256Mi memory limit 4 times in 10 minutes.",
    }
    assert alert["startsAt"].endswith("Z") and alert["endsAt"] > alert["startsAt"]
    assert notifier.sent == 1 and notifier.failed == 0


async def test_url_already_naming_the_api_is_kept(receiver: Receiver) -> None:
    await WebhookNotifier(receiver.url + "/api/v2/alerts").notify(SUMMARY)
    assert [r[0] for r in receiver.requests] == ["/api/v2/alerts"]


def test_payload_defaults_and_label_hygiene() -> None:
    alert = alert_payload({"namespace": "shop", "pod": "p\nq", "severity": "loud"})[0]
    assert alert["labels"]["severity"] == "warning"  # unknown severity falls back
    assert alert["labels"]["pod"] == "p q"  # label values are one line
    assert "symptom" not in alert["labels"]  # empty labels are left out
    assert alert["annotations"]["summary"] == "incident on pod shop/p\nq"
    assert len(alert_payload({"description": "z" * 10000})[0]["annotations"]["description"]) == 4096


async def test_server_error_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    with Receiver(status=500) as failing:
        notifier = WebhookNotifier(failing.url)
        with caplog.at_level(logging.WARNING, logger="sre_agent.notify"):
            await notifier.notify(SUMMARY)
    assert len(failing.requests) == 1
    assert notifier.failed == 1 and notifier.sent == 0
    assert any(
        "HTTP 500" in r.getMessage() and "shop/web-7d4b9c-abcde" in r.getMessage() for r in caplog.records
    )


async def test_unreachable_endpoint_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    notifier = WebhookNotifier(f"http://127.0.0.1:{port}", timeout=2)
    with caplog.at_level(logging.WARNING, logger="sre_agent.notify"):
        await notifier.notify(SUMMARY)
    assert notifier.failed == 1
    assert any("not delivered" in r.getMessage() for r in caplog.records)
