"""Prometheus metrics of the live operator, in a registry of their own (no process-global state).

Built once by `operator.app` and passed to the service, which counts incidents, decisions
and actions; the LLM reasoner's `on_call` hook and the pipeline's observer feed the LLM and
cache metrics. `serve()` exposes them on /metrics when SRE_AGENT_METRICS_PORT is not 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

from sre_agent.core.pipeline import PipelineObserver
from sre_agent.domain import Diagnosis

LLM_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120)

# Block reasons are free text naming objects; the label keeps only their kind (bounded cardinality).
_REASON_KINDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("dry_run", re.compile(r"dry.?run", re.I)),
    ("cooldown", re.compile(r"cooldown", re.I)),
    ("rate_limit", re.compile(r"rate limit", re.I)),
    ("protected_namespace", re.compile(r"protected|never touched|forbidden", re.I)),
    ("disabled", re.compile(r"disabled|not in policy", re.I)),
    ("bounds", re.compile(r"replicas|maxStep|bounds", re.I)),
    ("no_controller", re.compile(r"no controller|bare pod|needs a node|needs an owning", re.I)),
    ("wrong_target", re.compile(r"targets|parameter", re.I)),
    ("needs_approval", re.compile(r"approv", re.I)),
)


def reason_kind(reason: str) -> str:
    for kind, pattern in _REASON_KINDS:
        if pattern.search(reason):
            return kind
    return "other"


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.incidents = Counter(
            "sre_agent_incidents", "Unhealthy pods admitted, by symptom", ["symptom"], registry=r
        )
        self.grouped = Counter(
            "sre_agent_incidents_grouped",
            "Unhealthy pods attached to another pod's decision instead of getting their own",
            ["symptom"],
            registry=r,
        )
        self.decisions = Counter(
            "sre_agent_decisions",
            "AgentDecisions recorded, by diagnosis source, action and initial phase",
            ["source", "action", "phase"],
            registry=r,
        )
        self.decision_errors = Counter(
            "sre_agent_decision_errors", "Incidents that could not be decided or recorded", registry=r
        )
        self.llm_latency = Histogram(
            "sre_agent_llm_latency_seconds",
            "Duration of one LLM diagnosis, retries included",
            ["outcome"],
            buckets=LLM_BUCKETS,
            registry=r,
        )
        self.llm_tokens = Counter("sre_agent_llm_tokens", "LLM tokens used", registry=r)
        self.llm_fallbacks = Counter(
            "sre_agent_llm_fallbacks", "Diagnoses the rules made because the LLM failed", registry=r
        )
        self.cache_hits = Counter("sre_agent_cache_hits", "Diagnoses reused from the cache", registry=r)
        self.cache_misses = Counter("sre_agent_cache_misses", "Diagnoses not found in the cache", registry=r)
        self.blocked = Counter(
            "sre_agent_actions_blocked",
            "Actions the policy refused, by kind of reason",
            ["reason"],
            registry=r,
        )
        self.executed = Counter(
            "sre_agent_actions_executed", "Actions executed, by action", ["action"], registry=r
        )
        self.action_failures = Counter(
            "sre_agent_actions_failed", "Actions that failed with an API error", ["action"], registry=r
        )
        self.transitions = Counter(
            "sre_agent_decision_transitions",
            "Decision phase changes made by this replica",
            ["phase"],
            registry=r,
        )
        self.decisions_pending = Gauge(
            "sre_agent_decisions_pending",
            "AgentDecisions waiting for approval now, by namespace (kept right by the sweep)",
            ["namespace"],
            registry=r,
        )
        self.oldest_pending = Gauge(
            "sre_agent_decision_pending_oldest_seconds",
            "Age of the oldest AgentDecision waiting for approval (0 when none)",
            registry=r,
        )
        self.not_decided = Gauge(
            "sre_agent_incidents_not_decided",
            "Incidents not decided again because an open decision covers them or a closed one suppresses them",
            ["reason"],
            registry=r,
        )
        self.notifications = Counter(
            "sre_agent_approval_notifications",
            "Approval requests announced, by channel (event, webhook) and outcome",
            ["channel", "outcome"],
            registry=r,
        )
        self.nodes_unhealthy = Gauge(
            "sre_agent_nodes_unhealthy",
            "Nodes NotReady or under pressure, by condition",
            ["condition"],
            registry=r,
        )

    def on_llm_call(self, seconds: float, tokens: int, outcome: str) -> None:
        """The OpenAIReasoner's on_call hook."""
        if outcome != "circuit_open":
            self.llm_latency.labels(outcome).observe(seconds)
        if tokens:
            self.llm_tokens.inc(tokens)

    def observer(self) -> PipelineObserver:
        def on_cache(hit: bool) -> None:
            (self.cache_hits if hit else self.cache_misses).inc()

        def on_fallback(reason: str) -> None:
            self.llm_fallbacks.inc()

        def on_diagnosis(diagnosis: Diagnosis) -> None:
            pass

        return PipelineObserver(on_diagnosis=on_diagnosis, on_fallback=on_fallback, on_cache=on_cache)

    def set_pending(self, per_namespace: dict[str, int], oldest_seconds: float) -> None:
        """The pending-approval gauges from a full count (namespaces no longer listed drop to 0)."""
        known = {
            tuple(sample.labels.values()) for m in self.decisions_pending.collect() for sample in m.samples
        }
        for (namespace,) in known:
            if namespace not in per_namespace:
                self.decisions_pending.labels(namespace).set(0)
        for namespace, count in per_namespace.items():
            self.decisions_pending.labels(namespace).set(count)
        self.oldest_pending.set(max(0.0, oldest_seconds))

    def block(self, reason: str) -> None:
        self.blocked.labels(reason_kind(reason)).inc()

    def text(self) -> str:
        return generate_latest(self.registry).decode()

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
