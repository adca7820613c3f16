"""Secrets never survive redaction: canary values in every shape they show up in."""

from __future__ import annotations

import json

import pytest

from sre_agent.core.redaction import MASK, Redactor, redact_text
from tests.unit.podfactory import pod

CANARY_TEXTS = [
    "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.CANARYpayload1234.sig-CANARY-x",
    "connecting to postgres://ledger:pw-CANARY-17@db.payments.svc:5432/ledger",
    "amqp://guest:CANARY-rabbit@rabbitmq:5672/",
    "aws_access_key_id=AKIACANARY0123456789",
    "found key AKIACANARY0123456789 in env",
    "password=hunter2-CANARY-7f3a",
    'config: {"api_key": "sk-CANARYabcdefghijklmnop"}',
    "DB_PASSWORD: s3cr3t-CANARY",
    "client_secret = CANARY-oauth-9",
    "token ghp_CANARY0123456789abcdefghijklmnopqrstuv",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowCANARYIBAAKCAQEA\nabc\n-----END RSA PRIVATE KEY-----",
    "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANCANARY (truncated log line",
]


@pytest.mark.parametrize("text", CANARY_TEXTS)
def test_patterns_mask_canaries(text: str) -> None:
    out = redact_text(text)
    assert "CANARY" not in out
    assert MASK in out


def test_ordinary_text_is_left_alone() -> None:
    text = "GET /healthz 200 12ms; connecting to db.payments.svc:5432; token bucket refilled"
    assert redact_text(text) == text


def test_env_values_marked_secret_are_masked_everywhere() -> None:
    p = pod(containers=[{"name": "app", "image": "x", "env": [
        {"name": "DATABASE_PASSWORD", "value": "plainCANARYvalue"},
        {"name": "LOG_LEVEL", "value": "debug"},
        {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "api", "key": "token"}}},
    ]}])  # fmt: skip
    r = Redactor.for_pod(p)
    # The value is masked even where no pattern would catch it, e.g. echoed in a log line.
    assert r.text("startup: using plainCANARYvalue for db") == f"startup: using {MASK} for db"
    cleaned = r.obj(p)
    assert "CANARY" not in json.dumps(cleaned)
    env = cleaned["spec"]["containers"][0]["env"]
    assert env[1]["value"] == "debug"  # not secret, kept
    assert env[2]["valueFrom"]["secretKeyRef"]["name"] == "api"  # references are not secrets
    assert p["spec"]["containers"][0]["env"][0]["value"] == "plainCANARYvalue"  # input untouched


def test_secret_objects_lose_their_data() -> None:
    secret = {"kind": "Secret", "data": {"password": "Q0FOQVJZ"}}
    assert Redactor().obj(secret)["data"] == {"password": MASK}


def test_last_applied_annotation_is_redacted() -> None:
    p = pod()
    p["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": '{"env":[{"name":"DB_URL","value":"postgres://u:CANARYpw@db/x"}]}'
    }
    assert "CANARY" not in json.dumps(Redactor.for_pod(p).obj(p))
