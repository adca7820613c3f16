"""Secrets never survive redaction: canary values in every shape they show up in."""

from __future__ import annotations

import json

import pytest

from sre_agent.core.redaction import MASK, RedactingFilter, Redactor, redact_text
from sre_agent.domain import IncidentContext
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
    # flags and command lines as one string
    "starting: server --db-password CANARY-flag-1 --port 8080",
    "exec /app --api-key=CANARY-flag-2",
    "mysql -h db -u root -pCANARYmysql1 shop",
    "mysqldump -u root -p CANARYmysql2 --all-databases",
    "redis-cli -h cache -a CANARYrediscli ping",
    "curl -sf -u deploy:CANARYcurl1 https://api.internal/health",
    "wget --user=deploy:CANARYcurl2 https://x",
    # redis
    "redis> AUTH CANARYredis1",
    "AUTH default CANARYredis2",
    '1700000000.1 [0 10.0.0.7:5000] "AUTH" "default" "CANARYredis3"',
    # cookies and sessions
    "GET /cart Cookie: theme=dark; sessionid=CANARYcookie1",
    "Set-Cookie: session=CANARYcookie2; Path=/; HttpOnly; SameSite=Lax",
    '{"headers": {"cookie": "JSESSIONID=CANARYcookie3"}}',
    "request session=CANARYsess1 user=42",
    "sessionid=CANARYsess2&next=/",
    # SaaS keys and webhooks
    "posting to https://hooks.slack.com/services/T0CANARY/B0CANARY/CANARYslack1 failed: 404",
    "stripe: sk_live_CANARY51Nq8xBvR2kd0Ty",
    "stripe: sk_test_CANARY51Nq8xBvR2kd0Ty",
    "stripe: rk_live_CANARY51Nq8xBvR2kd0Ty",
    "webhook secret whsec_CANARY7d1e0b44c9a2f35e81aa",
    # other headers and config files
    "Authorization: AWS4-HMAC-SHA256 Credential=AKIAX/20260101/s3, Signature=CANARYsig9",
    'headers={"Authorization": "Token CANARYtok9"}',
    '{"auths": {"ghcr.io": {"auth": "Q0FOQVJZOnB3"}}}',
    "DefaultEndpointsProtocol=https;AccountName=shop;AccountKey=CANARYazure==;EndpointSuffix=core.windows.net",
    # a base64 blob under a harmless name
    "SETTINGS=c2VjcmV0CANARY9xK2mP7vQ4wL8zR1tY6nB3hJ5fD0gS loaded",
]


@pytest.mark.parametrize("text", CANARY_TEXTS)
def test_patterns_mask_canaries(text: str) -> None:
    out = redact_text(text)
    assert "CANARY" not in out
    assert MASK in out


@pytest.mark.parametrize(
    "text",
    [
        "GET /healthz 200 12ms; connecting to db.payments.svc:5432; token bucket refilled",
        "dial tcp 10.0.4.2:5432: connect: connection refused",
        "container app OOMKilled exit 137",
        "Back-off pulling image \"registry.example.com/identity/token-service:4.2.0\"",
        'Failed to pull image "ghcr.io/AcmeCorp/PaymentService2Worker:v1.2.3": rpc error: code = NotFound',
        "AUTH failed: WRONGPASS invalid username-password pair",
        "-NOAUTH Authentication required.",
        "psql -h db -p 5432 -U app",
        "session timeout after 30s",
        "pull access denied, repository does not exist or may require authorization: server message: "
        "insufficient_scope: authorization failed",
        "failed to authorize: failed to fetch anonymous token: unexpected status: 401 Unauthorized",
        "return serialization.load_pem_private_key(raw.encode(), password=None)",
        "pod uid 5b1f7c1e-8d2a-4d7e-9a51-0c9d8e7f6a51 sandbox 48a287ab9497e852de30327444b0809e55d46466",
        "at org.springframework.beans.factory.support.AbstractAutowireCapableBeanFactory.doCreateBean",
        "image sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 pulled",
    ],
)
def test_diagnosis_signals_are_left_alone(text: str) -> None:
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
    secret = {"kind": "Secret", "data": {"password": "Q0FOQVJZ"}, "stringData": {"dsn": "pw-CANARY"}}
    assert Redactor().obj(secret)["data"] == {"password": MASK}
    assert Redactor().obj(secret)["stringData"] == {"dsn": MASK}


def test_last_applied_annotation_is_redacted() -> None:
    p = pod()
    p["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": '{"env":[{"name":"DB_URL","value":"postgres://u:CANARYpw@db/x"}]}'
    }
    assert "CANARY" not in json.dumps(Redactor.for_pod(p).obj(p))


def test_redis_auth_masks_user_and_password_but_keeps_replies() -> None:
    assert redact_text("AUTH s3cret-lower from 10.0.0.1") == f"AUTH {MASK} {MASK} 10.0.0.1"
    assert redact_text("AUTH default HUNTER2\nnext") == f"AUTH {MASK} {MASK}\nnext"  # stops at the line end
    assert redact_text("AUTH s3cret WRONGPASS invalid") == f"AUTH {MASK} WRONGPASS invalid"


def test_split_args_are_masked_and_their_values_tracked() -> None:
    p = pod(containers=[{"name": "app", "image": "x", "command": ["/server"],
                         "args": ["--db-password", "CANARY-split-1", "--token", "CANARY-split-2", "-v",
                                  "--api-key", "CANARY-split-3", "--port", "8080"]}])  # fmt: skip
    p["spec"]["initContainers"] = [
        {"name": "migrate", "image": "mysql:8", "command": ["mysql", "-u", "root", "-p", "CANARY-split-4"]},
        {"name": "dump", "image": "mysql:8", "command": ["/usr/bin/mysqldump", "-pCANARY-split-5", "db"]},
        {"name": "cache", "image": "redis:7", "command": ["redis-cli"], "args": ["-a", "CANARY-split-6", "ping"]},
        {"name": "hook", "image": "curl", "command": ["curl", "-u", "ci:CANARY-split-7", "https://x"]},
        {"name": "db", "image": "postgres", "command": ["psql", "-p", "5432"]},
    ]
    r = Redactor.for_pod(p)
    cleaned = r.obj(p)
    assert "CANARY" not in json.dumps(cleaned)
    assert cleaned["spec"]["containers"][0]["args"] == [
        "--db-password", MASK, "--token", MASK, "-v", "--api-key", MASK, "--port", "8080",
    ]  # fmt: skip
    inits = cleaned["spec"]["initContainers"]
    assert inits[1]["command"] == ["/usr/bin/mysqldump", f"-p{MASK}", "db"]
    assert inits[3]["command"][2] == f"ci:{MASK}"
    assert inits[4]["command"] == ["psql", "-p", "5432"]  # a port, not a password
    # The values are masked wherever they show up again, e.g. echoed by the app.
    for n in range(1, 8):
        assert r.text(f"retrying with CANARY-split-{n}!") == f"retrying with {MASK}!"


def test_secret_named_annotations_are_masked_and_tracked() -> None:
    p = pod()
    p["metadata"]["annotations"] = {
        "example.com/api-token": "CANARY-annotation-1",
        "vault.example.com/db-password": "CANARY-annotation-2",
        "backup.example.com/encryption-key": "CANARY-annotation-3",
        "example.com/client-secret": "CANARY-annotation-4",
        "example.com/team": "payments",
        "deployment.kubernetes.io/revision": "7",
    }
    r = Redactor.for_pod(p)
    annotations = r.obj(p)["metadata"]["annotations"]
    assert "CANARY" not in json.dumps(annotations)
    assert annotations["example.com/team"] == "payments"
    assert annotations["deployment.kubernetes.io/revision"] == "7"
    assert "CANARY" not in r.text("key CANARY-annotation-3 rejected")


def test_last_applied_configuration_is_redacted_inside_and_its_old_values_tracked() -> None:
    old = {"name": "app", "image": "x", "args": ["--token", "CANARY-old-2"],
           "env": [{"name": "DB_PASSWORD", "value": "CANARY-old-1"}, {"name": "LOG_LEVEL", "value": "debug"}]}  # fmt: skip
    p = pod()
    p["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": json.dumps({"spec": {"containers": [old]}})
    }
    r = Redactor.for_pod(p)
    kept = json.loads(r.obj(p)["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"])
    assert "CANARY" not in json.dumps(kept)
    assert kept["spec"]["containers"][0]["env"][1] == {"name": "LOG_LEVEL", "value": "debug"}
    # The pod now runs with another password, but the app still logs the old one.
    assert "CANARY" not in r.text("login failed for CANARY-old-1 and CANARY-old-2")
    broken = pod()
    broken["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": "{not json CANARY"}
    assert Redactor.for_pod(broken).obj(broken)["metadata"]["annotations"] == {
        "kubectl.kubernetes.io/last-applied-configuration": MASK
    }


def test_base64_blobs_under_harmless_names_are_masked() -> None:
    blob = "c2VjcmV0LWNvbmZpZy12YWx1ZS0xMjM0NTY3ODk="  # base64 of a secret config value
    p = pod(containers=[{"name": "app", "image": "x", "env": [
        {"name": "SETTINGS", "value": blob},
        {"name": "MODE", "value": "production"},
        {"name": "BUILD", "value": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b"},
    ]}])  # fmt: skip
    env = Redactor.for_pod(p).obj(p)["spec"]["containers"][0]["env"]
    assert [e["value"] for e in env] == [MASK, "production", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b"]
    assert blob not in redact_text(f"decoded settings from {blob}")


def test_common_values_under_secret_names_are_not_masked_everywhere() -> None:
    p = pod(containers=[{"name": "app", "image": "x", "env": [
        {"name": "AUTH_ENABLED", "value": "true"},
        {"name": "DB_PASSWORD_FILE", "value": "/run/secrets/db"},
        {"name": "REDIS_PASSWORD", "value": "r3d1s-CANARY"},
    ]}])  # fmt: skip
    r = Redactor.for_pod(p)
    assert r.text("healthy=true; reading /run/secrets/db") == "healthy=true; reading /run/secrets/db"
    assert r.text("using r3d1s-CANARY") == f"using {MASK}"


def test_the_owner_s_secrets_are_known_too() -> None:
    owner = {"kind": "Deployment", "spec": {"template": {"spec": {"containers": [
        {"name": "app", "env": [{"name": "API_TOKEN", "value": "CANARY-owner-1"}]}]}}}}  # fmt: skip
    ctx = IncidentContext(pod=pod(), owner=owner)
    assert Redactor.for_context(ctx).text("token CANARY-owner-1x") == f"token {MASK}x"


def test_operator_log_lines_quoting_evidence_are_redacted() -> None:
    import io
    import logging

    from sre_agent.operator.app import configure_logging
    from sre_agent.settings import Settings

    root = logging.getLogger()
    saved = (root.handlers[:], root.level, {id(h): h.filters[:] for h in root.handlers})
    try:
        configure_logging(Settings.from_env({}))
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        # Every handler configure_logging left on the root logger carries the filter.
        assert root.handlers and all(
            any(isinstance(f, RedactingFilter) for f in h.filters) for h in root.handlers
        )
        handler.addFilter(RedactingFilter())
        root.addHandler(handler)
        logging.getLogger("sre_agent.operator").warning(
            "Decided %s: notes: %s", "shop/x", "log says redis AUTH CANARYlog1 and Cookie: sid=CANARYlog2"
        )
        logging.getLogger("sre_agent.operator").warning("exit 137 OOMKilled; connection refused")
        out = stream.getvalue()
        assert "CANARY" not in out and "Decided shop/x: notes: log says redis AUTH" in out
        assert "exit 137 OOMKilled; connection refused" in out
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for h in root.handlers:
            h.filters[:] = saved[2].get(id(h), h.filters)
