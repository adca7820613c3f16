"""Settings.from_env: defaults, every variable, and one-line errors for bad values."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sre_agent.core.policy import PolicyError
from sre_agent.settings import Settings, SettingsError

REPO = Path(__file__).resolve().parents[2]


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.policy.name == "default"
    assert s.policy_path.endswith("default.yaml")
    assert s.namespaces == ()
    assert s.llm is None
    assert s.metrics_port == 9090 and s.health_port == 8080
    assert s.peering_name == "sre-agent" and not s.standalone
    assert s.decision_ttl_seconds == 3600
    assert s.retention_seconds == 7 * 24 * 3600
    assert s.log_format == "text"


def test_every_variable() -> None:
    s = Settings.from_env(
        {
            "SRE_AGENT_NAMESPACES": " shop, payments ,shop,",
            "SRE_AGENT_POLICY": str(REPO / "policies" / "autopilot.yaml"),
            "SRE_AGENT_LLM_BASE_URL": "http://127.0.0.1:1/v1",
            "SRE_AGENT_LLM_MAX_CONCURRENCY": "2",
            "SRE_AGENT_COOLDOWN_SECONDS": "60",
            "SRE_AGENT_GROUP_WINDOW_SECONDS": "30",
            "SRE_AGENT_DECISION_TTL_SECONDS": "600",
            "SRE_AGENT_RETENTION_SECONDS": "0",
            "SRE_AGENT_METRICS_PORT": "0",
            "SRE_AGENT_HEALTH_PORT": "8081",
            "SRE_AGENT_PEERING": "agents",
            "SRE_AGENT_PEERING_PRIORITY": "10",
            "SRE_AGENT_STANDALONE": "true",
            "SRE_AGENT_WEBHOOK_URL": "http://alertmanager:9093",
            "SRE_AGENT_HIGH_RESTARTS": "3",
            "SRE_AGENT_LOG_FORMAT": "JSON",
        }
    )
    assert s.namespaces == ("shop", "payments")
    assert s.policy.name == "autopilot"
    assert s.llm is not None and s.llm.base_url == "http://127.0.0.1:1/v1"
    assert s.llm_concurrency == 2
    assert (s.cooldown_seconds, s.group_window_seconds, s.decision_ttl_seconds) == (60, 30, 600)
    assert s.retention_seconds == 0
    assert (s.metrics_port, s.health_port) == (0, 8081)
    assert (s.peering_name, s.peering_priority, s.standalone) == ("agents", 10, True)
    assert s.webhook_url == "http://alertmanager:9093"
    assert s.thresholds.high_restarts == 3
    assert s.log_format == "json"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SRE_AGENT_METRICS_PORT": "abc"}, "SRE_AGENT_METRICS_PORT='abc': must be an integer"),
        ({"SRE_AGENT_HEALTH_PORT": "70000"}, "SRE_AGENT_HEALTH_PORT='70000': must be between 0 and 65535"),
        ({"SRE_AGENT_COOLDOWN_SECONDS": "-1"}, "SRE_AGENT_COOLDOWN_SECONDS='-1': must be 0 or more"),
        ({"SRE_AGENT_DECISION_TTL_SECONDS": "0"}, "SRE_AGENT_DECISION_TTL_SECONDS='0': must be above 0"),
        ({"SRE_AGENT_STANDALONE": "maybe"}, "SRE_AGENT_STANDALONE='maybe': must be true or false"),
        ({"SRE_AGENT_LOG_FORMAT": "xml"}, "SRE_AGENT_LOG_FORMAT='xml': must be one of text, json"),
        ({"SRE_AGENT_NAMESPACES": "Shop"}, "SRE_AGENT_NAMESPACES: 'Shop' is not a valid namespace name"),
        ({"SRE_AGENT_WEBHOOK_URL": "alertmanager:9093"}, "must be an http:// or https:// URL"),
        ({"SRE_AGENT_PEERING": "Bad_Name"}, "SRE_AGENT_PEERING='Bad_Name': must be a DNS-1123 name"),
        ({"SRE_AGENT_METRICS_PORT": "9000", "SRE_AGENT_HEALTH_PORT": "9000"}, "use two ports"),
        ({"SRE_AGENT_LLM_BASE_URL": "http://x", "SRE_AGENT_LLM_TIMEOUT": "0"}, "SRE_AGENT_LLM_TIMEOUT"),
    ],
)
def test_bad_values_are_one_line_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_policy_file(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("kind: Policy\nname: x\nactions: [1]\n")
    with pytest.raises(PolicyError, match="invalid policy at actions"):
        Settings.from_env({"SRE_AGENT_POLICY": str(bad)})


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SRE_AGENT_METRICS_PORT": "x"}, "sre-agent: SRE_AGENT_METRICS_PORT='x': must be an integer"),
        ({"SRE_AGENT_POLICY": "/nonexistent.yaml"}, "sre-agent: /nonexistent.yaml: cannot read policy"),
    ],
)
def test_run_exits_2_with_one_line(env: dict[str, str], expected: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sre_agent.cli", "run", "--standalone"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env},
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(expected)
    assert len(proc.stderr.strip().splitlines()) == 1
