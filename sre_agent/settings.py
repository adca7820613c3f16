"""Operator settings: every knob of `sre-agent run`, read once from the environment at start.

`Settings.from_env(env)` is called by the CLI (`sre_agent.cli._cmd_run`, which first folds
its flags into the environment) and handed to `sre_agent.operator.app.run_operator`.
Nothing else reads `os.environ`. A bad value raises `SettingsError` whose message is one
line naming the variable; the CLI prints it and exits 2. An SRE_AGENT_* name that nobody
reads is not an error but a warning (in `Settings.warnings`, logged at start) naming the
closest known variable. The policy file is loaded here
too, so a bad policy stops the operator before it connects to anything (`PolicyError`).

Variables (all optional):

  SRE_AGENT_NAMESPACES            comma list of namespaces to watch; empty: all
  SRE_AGENT_POLICY                policy YAML (default: the packaged policies/default.yaml)
  SRE_AGENT_LLM_*                 the LLM endpoint (adapters.llm.LLMConfig); none: rules only
  SRE_AGENT_COOLDOWN_SECONDS      do not re-decide the same workload+symptom within this (300)
  SRE_AGENT_GROUP_WINDOW_SECONDS  pods of one workload arriving within this join one decision (120)
  SRE_AGENT_DECISION_TTL_SECONDS  pending decisions expire after this (policy decisionTTLSeconds, 3600)
  SRE_AGENT_RETENTION_SECONDS     decisions older than this are deleted (604800 = 7 days; 0: never)
  SRE_AGENT_SWEEP_SECONDS         how often expiry and retention are checked (30)
  SRE_AGENT_RESYNC_SECONDS        how often not-Ready pods are re-checked for slow symptoms (300; 0: never)
  SRE_AGENT_METRICS_PORT          Prometheus /metrics port (9090; 0: off)
  SRE_AGENT_HEALTH_PORT           liveness/readiness /healthz port (8080; 0: off)
  SRE_AGENT_PEERING               kopf peering name ("sre-agent")
  SRE_AGENT_PEERING_PRIORITY      this replica's peering priority (0)
  SRE_AGENT_STANDALONE            1/true: no peering (single replica, local runs)
  SRE_AGENT_WEBHOOK_URL           Alertmanager-compatible notifier for create_alert ("": none)
  SRE_AGENT_APPROVAL_WEBHOOK_URL  announce decisions waiting for approval here ("": Events only)
  SRE_AGENT_APPROVAL_WEBHOOK_FORMAT  slack | alertmanager (slack)
  SRE_AGENT_PROBE_FAILURE_SECONDS, SRE_AGENT_HIGH_RESTARTS, SRE_AGENT_RESTART_WINDOW_SECONDS
                                  symptom thresholds (core.symptoms.Thresholds)
  SRE_AGENT_CACHE_TTL_SECONDS     how long an LLM diagnosis is reused for the same fingerprint (3600)
  SRE_AGENT_LOG_FORMAT            text | json (text)
  SRE_AGENT_LOG_LEVEL             debug | info | warning | error (info)
  SRE_AGENT_KUBECONFIG            kubeconfig file (default: in-cluster, else $KUBECONFIG)
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from sre_agent.adapters.llm import LLMConfig, LLMConfigError
from sre_agent.adapters.notify import APPROVAL_FORMATS
from sre_agent.core.policy import Policy, default_policy, load_policy
from sre_agent.core.symptoms import Thresholds

T = TypeVar("T")

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


class SettingsError(ValueError):
    """An SRE_AGENT_* variable is invalid; the message is one line naming it."""


# Every SRE_AGENT_* variable the operator reads (tests/unit/test_startup.py keeps this list in step
# with the code). Any other SRE_AGENT_* name in the environment is warned about at start, with
# the closest known name: a misspelt variable must not be silently ignored.
OPERATOR_VARIABLES = (
    "SRE_AGENT_NAMESPACES", "SRE_AGENT_POLICY", "SRE_AGENT_COOLDOWN_SECONDS",
    "SRE_AGENT_GROUP_WINDOW_SECONDS", "SRE_AGENT_DECISION_TTL_SECONDS", "SRE_AGENT_RETENTION_SECONDS",
    "SRE_AGENT_SWEEP_SECONDS", "SRE_AGENT_RESYNC_SECONDS", "SRE_AGENT_METRICS_PORT", "SRE_AGENT_HEALTH_PORT",
    "SRE_AGENT_PEERING", "SRE_AGENT_PEERING_PRIORITY", "SRE_AGENT_STANDALONE", "SRE_AGENT_WEBHOOK_URL",
    "SRE_AGENT_APPROVAL_WEBHOOK_URL", "SRE_AGENT_APPROVAL_WEBHOOK_FORMAT", "SRE_AGENT_PROBE_FAILURE_SECONDS",
    "SRE_AGENT_HIGH_RESTARTS", "SRE_AGENT_RESTART_WINDOW_SECONDS", "SRE_AGENT_CACHE_TTL_SECONDS",
    "SRE_AGENT_LOG_FORMAT", "SRE_AGENT_LOG_LEVEL", "SRE_AGENT_KUBECONFIG",
)  # fmt: skip
LLM_VARIABLES = (
    "SRE_AGENT_LLM_BASE_URL", "SRE_AGENT_LLM_MODEL", "SRE_AGENT_LLM_API_KEY", "SRE_AGENT_LLM_API_VERSION",
    "SRE_AGENT_LLM_TIMEOUT", "SRE_AGENT_LLM_DEADLINE", "SRE_AGENT_LLM_MAX_RETRIES", "SRE_AGENT_LLM_BACKOFF_BASE",
    "SRE_AGENT_LLM_BACKOFF_MAX", "SRE_AGENT_LLM_CIRCUIT_FAILURES", "SRE_AGENT_LLM_CIRCUIT_RESET",
    "SRE_AGENT_LLM_MAX_CONCURRENCY", "SRE_AGENT_LLM_TEMPERATURE", "SRE_AGENT_LLM_RESPONSE_FORMAT",
    "SRE_AGENT_LLM_MAX_TOKENS", "SRE_AGENT_LLM_MAX_TOKENS_FIELD", "SRE_AGENT_LLM_PROMPTS_DIR",
)  # fmt: skip
# Read by scripts/ and the tests, not by the operator: known, so not warned about.
TOOL_VARIABLES = (
    "SRE_AGENT_CACHE", "SRE_AGENT_CLUSTER_DIR", "SRE_AGENT_SKIP_CLUSTER", "SRE_AGENT_WATCH_PID",
    "SRE_AGENT_NODE", "SRE_AGENT_NODE_IP", "SRE_AGENT_NODE_NAME", "SRE_AGENT_DEPLOY_ENV",
    "SRE_AGENT_BUILDAH_DRIVER", "SRE_AGENT_IMAGE", "SRE_AGENT_NODE_CLUSTER_DIR", "SRE_AGENT_SKIP_NODE",
)  # fmt: skip
KNOWN_VARIABLES = frozenset(OPERATOR_VARIABLES + LLM_VARIABLES + TOOL_VARIABLES)


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """One warning per SRE_AGENT_* name nobody reads, with the closest known name."""
    warnings = []
    for name in sorted(env):
        if not name.startswith("SRE_AGENT_") or name in KNOWN_VARIABLES:
            continue
        # Compare what follows the shared prefix, or every name looks close to every other.
        suffixes = [known.removeprefix("SRE_AGENT_") for known in OPERATOR_VARIABLES + LLM_VARIABLES]
        close = difflib.get_close_matches(name.removeprefix("SRE_AGENT_"), suffixes, n=1, cutoff=0.6)
        hint = f" (did you mean SRE_AGENT_{close[0]}?)" if close else ""
        warnings.append(f"unknown variable {name} is ignored{hint}")
    return warnings


def llm_url_problem(url: str) -> str | None:
    """Why an LLM base URL cannot work, or None: it needs a scheme and a host."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"{url!r}: must be an http:// or https:// URL, e.g. http://vllm:8000/v1"
    return None


def _readable(path: str) -> str | None:
    """None when `path` is a readable file, else why not (one line)."""
    try:
        with open(path, "rb"):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


TEN_YEARS = 10 * 365 * 24 * 3600  # a bound on any duration, so `now + duration` cannot overflow


def packaged_policy() -> Path:
    """policies/default.yaml from the wheel (sre_agent/_data) or the source checkout."""
    here = Path(__file__).parent
    installed = here / "_data" / "policies" / "default.yaml"
    return installed if installed.exists() else here.parent / "policies" / "default.yaml"


@dataclass(frozen=True)
class Settings:
    policy: Policy
    policy_path: str = ""
    namespaces: tuple[str, ...] = ()
    llm: LLMConfig | None = None
    cooldown_seconds: float = 300
    group_window_seconds: float = 120
    decision_ttl_seconds: float = 3600
    retention_seconds: float = 7 * 24 * 3600
    sweep_seconds: float = 30
    resync_seconds: float = 300
    llm_concurrency: int = 4
    metrics_port: int = 9090
    health_port: int = 8080
    peering_name: str = "sre-agent"
    peering_priority: int = 0
    standalone: bool = False
    webhook_url: str = ""
    approval_webhook_url: str = ""
    approval_webhook_format: str = "slack"
    thresholds: Thresholds = field(default_factory=Thresholds)
    cache_ttl_seconds: float = 3600
    log_format: str = "text"
    log_level: str = "info"
    kubeconfig: str | None = None
    kubeconfig_env: str = ""  # $KUBECONFIG, named in the error when credentials cannot be loaded
    warnings: tuple[str, ...] = ()  # logged at start (unknown SRE_AGENT_* names)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read and check every variable; raises SettingsError (or PolicyError for the policy file)."""

        def raw(name: str) -> str:
            return env.get(name, "").strip()

        def parsed(name: str, default: T, convert: Callable[[str], T], what: str) -> T:
            value = raw(name)
            if not value:
                return default
            try:
                return convert(value)
            except ValueError:
                raise SettingsError(f"{name}={value!r}: must be {what}") from None

        def seconds(name: str, default: float, *, allow_zero: bool = True) -> float:
            value = parsed(name, default, float, "a number of seconds")
            if not math.isfinite(value) or value > TEN_YEARS:
                raise SettingsError(f"{name}={raw(name)!r}: must be a number of seconds up to {TEN_YEARS}")
            if value < 0 or (value == 0 and not allow_zero):
                rule = "0 or more" if allow_zero else "above 0"
                raise SettingsError(f"{name}={raw(name)!r}: must be {rule}")
            return value

        def integer(name: str, default: int, low: int, high: int | None = None) -> int:
            value = parsed(name, default, int, "an integer")
            if value < low or (high is not None and value > high):
                bound = f"between {low} and {high}" if high is not None else f"{low} or more"
                raise SettingsError(f"{name}={raw(name)!r}: must be {bound}")
            return value

        def flag(name: str) -> bool:
            value = raw(name).lower()
            if value in _TRUE:
                return True
            if value in _FALSE:
                return False
            raise SettingsError(f"{name}={raw(name)!r}: must be true or false")

        def choice(name: str, default: str, options: tuple[str, ...]) -> str:
            value = raw(name).lower() or default
            if value not in options:
                raise SettingsError(f"{name}={raw(name)!r}: must be one of {', '.join(options)}")
            return value

        namespaces = tuple(
            dict.fromkeys(n.strip() for n in raw("SRE_AGENT_NAMESPACES").split(",") if n.strip())
        )
        for ns in namespaces:
            if not _dns_label(ns):
                raise SettingsError(f"SRE_AGENT_NAMESPACES: {ns!r} is not a valid namespace name")

        policy_path = raw("SRE_AGENT_POLICY")
        if policy_path:
            policy = load_policy(policy_path)
        else:
            default = packaged_policy()
            policy, policy_path = (
                (load_policy(default), str(default)) if default.exists() else (default_policy(), "")
            )

        try:
            llm = LLMConfig.from_env(env)
        except LLMConfigError as exc:
            raise SettingsError(str(exc)) from None
        problem = llm_url_problem(llm.base_url) if llm else None
        if problem:
            raise SettingsError(f"SRE_AGENT_LLM_BASE_URL={problem}")
        kubeconfig = raw("SRE_AGENT_KUBECONFIG")
        unreadable = _readable(kubeconfig) if kubeconfig else None
        if unreadable:
            raise SettingsError(f"SRE_AGENT_KUBECONFIG={kubeconfig!r}: cannot read: {unreadable}")

        webhook = raw("SRE_AGENT_WEBHOOK_URL")
        if webhook and not webhook.startswith(("http://", "https://")):
            raise SettingsError(f"SRE_AGENT_WEBHOOK_URL={webhook!r}: must be an http:// or https:// URL")
        approval_webhook = raw("SRE_AGENT_APPROVAL_WEBHOOK_URL")
        if approval_webhook and not approval_webhook.startswith(("http://", "https://")):
            # The URL itself may hold a token (Slack): name the variable, never echo the value.
            raise SettingsError("SRE_AGENT_APPROVAL_WEBHOOK_URL: must be an http:// or https:// URL")
        peering = raw("SRE_AGENT_PEERING") or "sre-agent"
        if not _dns_label(peering):
            raise SettingsError(f"SRE_AGENT_PEERING={peering!r}: must be a DNS-1123 name")
        thresholds = Thresholds(
            probe_failure_seconds=integer(
                "SRE_AGENT_PROBE_FAILURE_SECONDS", Thresholds.probe_failure_seconds, 0
            ),
            high_restarts=integer("SRE_AGENT_HIGH_RESTARTS", Thresholds.high_restarts, 1),
            restart_window_seconds=integer(
                "SRE_AGENT_RESTART_WINDOW_SECONDS", Thresholds.restart_window_seconds, 1
            ),
        )
        metrics_port = integer("SRE_AGENT_METRICS_PORT", 9090, 0, 65535)
        health_port = integer("SRE_AGENT_HEALTH_PORT", 8080, 0, 65535)
        if metrics_port and metrics_port == health_port:
            raise SettingsError(
                f"SRE_AGENT_METRICS_PORT and SRE_AGENT_HEALTH_PORT are both {metrics_port}: use two ports"
            )
        return cls(
            policy=policy,
            policy_path=policy_path,
            namespaces=namespaces,
            llm=llm,
            cooldown_seconds=seconds("SRE_AGENT_COOLDOWN_SECONDS", 300),
            group_window_seconds=seconds("SRE_AGENT_GROUP_WINDOW_SECONDS", 120),
            decision_ttl_seconds=seconds(
                "SRE_AGENT_DECISION_TTL_SECONDS", float(policy.decision_ttl_seconds), allow_zero=False
            ),
            retention_seconds=seconds("SRE_AGENT_RETENTION_SECONDS", 7 * 24 * 3600),
            sweep_seconds=seconds("SRE_AGENT_SWEEP_SECONDS", 30, allow_zero=False),
            resync_seconds=seconds("SRE_AGENT_RESYNC_SECONDS", 300),
            llm_concurrency=llm.max_concurrency if llm else 4,
            metrics_port=metrics_port,
            health_port=health_port,
            peering_name=peering,
            peering_priority=integer("SRE_AGENT_PEERING_PRIORITY", 0, -(2**31), 2**31 - 1),
            standalone=flag("SRE_AGENT_STANDALONE"),
            webhook_url=webhook,
            approval_webhook_url=approval_webhook,
            approval_webhook_format=choice("SRE_AGENT_APPROVAL_WEBHOOK_FORMAT", "slack", APPROVAL_FORMATS),
            thresholds=thresholds,
            cache_ttl_seconds=seconds("SRE_AGENT_CACHE_TTL_SECONDS", 3600),
            log_format=choice("SRE_AGENT_LOG_FORMAT", "text", LOG_FORMATS),
            log_level=choice("SRE_AGENT_LOG_LEVEL", "info", LOG_LEVELS),
            kubeconfig=kubeconfig or None,
            kubeconfig_env=raw("KUBECONFIG"),
            warnings=tuple(unknown_variables(env)),
        )


def _dns_label(name: str) -> bool:
    if not 0 < len(name) <= 63 or name[0] == "-" or name[-1] == "-":
        return False
    return all(ch.isdigit() or ("a" <= ch <= "z") or ch == "-" for ch in name)
