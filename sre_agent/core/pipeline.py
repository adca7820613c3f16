"""The one decision pipeline, shared by the live operator and offline replay.

symptom detection -> redaction + evidence -> reasoner (cache, LLM, or rules) ->
cross-check -> action binding -> policy verdict. Only the source of the IncidentContext
and what happens to the Decision afterwards differ between live and replay.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from sre_agent.core.cache import DiagnosisCache, fingerprint
from sre_agent.core.evidence import SUPPORTING_SIGNALS, extract
from sre_agent.core.policy import (
    ActionLedger,
    ActionRequest,
    Policy,
    bind_parameters,
    evaluate,
)
from sre_agent.core.reasoning import Clock, Reasoner, ReasonerError
from sre_agent.core.redaction import Redactor
from sre_agent.core.rules import RuleReasoner
from sre_agent.core.symptoms import Thresholds, detect_incident
from sre_agent.domain import (
    SCALE_DEPLOYMENT,
    Category,
    Decision,
    Diagnosis,
    Evidence,
    IncidentContext,
    ProposedAction,
    Symptom,
)


@dataclass
class PipelineObserver:
    """Hooks for metrics and logs; the operator wires Prometheus counters in here."""

    on_diagnosis: Callable[[Diagnosis], None] = lambda d: None
    on_fallback: Callable[[str], None] = lambda reason: None
    on_cache: Callable[[bool], None] = lambda hit: None


def cross_check(evidence: Evidence, diagnosis: Diagnosis, rules_view: Diagnosis) -> Diagnosis:
    """Lower the confidence of an answer the evidence does not support, and say why."""
    notes = list(diagnosis.notes)
    confidence = diagnosis.confidence
    support = SUPPORTING_SIGNALS.get(diagnosis.category, frozenset())
    if diagnosis.category != Category.UNKNOWN and not evidence.has(*support):
        confidence *= 0.5
        notes.append(
            f"cross-check: {diagnosis.category.value} named but no evidence shows it "
            f"(expected one of {', '.join(sorted(support))}); confidence halved"
        )
    if rules_view.category not in (diagnosis.category, Category.UNKNOWN) and rules_view.confidence >= 0.8:
        confidence *= 0.8
        notes.append(
            f"cross-check: rules say {rules_view.category.value} "
            f"(confidence {rules_view.confidence:.2f}); confidence lowered"
        )
    if evidence.has("prompt_injection"):
        notes.append("logs contain instruction-like text; it was treated as data")
    return replace(diagnosis, confidence=round(confidence, 2), notes=tuple(notes))


@dataclass
class Pipeline:
    policy: Policy
    clock: Clock
    reasoner: Reasoner | None = None  # None: rules only
    reasoner_id: str = ""  # model + prompt version: part of the cache key
    cache: DiagnosisCache | None = None
    ledger: ActionLedger = field(default_factory=ActionLedger)
    thresholds: Thresholds = field(default_factory=Thresholds)
    observer: PipelineObserver = field(default_factory=PipelineObserver)
    rules: RuleReasoner | None = None  # default: rules within the policy's scale bounds

    def __post_init__(self) -> None:
        if self.reasoner is not None and not self.reasoner_id:
            # The cache key must carry the model and prompt version, or a new model reuses old answers.
            self.reasoner_id = str(getattr(self.reasoner, "reasoner_id", self.reasoner.name))
        if self.rules is None:
            scale = self.policy.actions.get(SCALE_DEPLOYMENT)
            self.rules = RuleReasoner(
                max_replicas=scale.max_replicas if scale else 20,
                allowed=frozenset(self.policy.allowed_actions()),
            )

    @property
    def rule_reasoner(self) -> RuleReasoner:
        assert self.rules is not None  # set in __post_init__
        return self.rules

    def symptom_of(self, ctx: IncidentContext) -> Symptom:
        return detect_incident(ctx.pod, ctx.events, ctx.node, ctx.owner, self.clock.now(), self.thresholds)

    def evidence_of(self, ctx: IncidentContext, symptom: Symptom) -> Evidence:
        return extract(ctx, symptom, Redactor.for_context(ctx))

    async def diagnose(self, evidence: Evidence, fp: str) -> Diagnosis:
        rules_view = self.rule_reasoner.diagnose_now(evidence)
        if self.reasoner is None:
            return rules_view
        if self.cache is not None:
            cached = self.cache.get(self.reasoner_id, fp)
            self.observer.on_cache(cached is not None)
            if cached is not None:
                return replace(cached, source="cache", tokens=0)
        try:
            answer = await self.reasoner.diagnose(evidence, self.policy.describe_actions())
        except ReasonerError as exc:
            reason = str(exc) or type(exc).__name__
            self.observer.on_fallback(reason)
            return replace(rules_view, notes=(*rules_view.notes, f"LLM unavailable, rules decided: {reason}"))
        checked = cross_check(evidence, answer, rules_view)
        if self.cache is not None:
            self.cache.put(self.reasoner_id, fp, checked)
        return checked

    async def decide(self, ctx: IncidentContext) -> Decision | None:
        """Decide about one incident; None when the pod (and its workload) is healthy."""
        symptom = self.symptom_of(ctx)
        if symptom == Symptom.HEALTHY:
            return None
        evidence = self.evidence_of(ctx, symptom)
        fp = fingerprint(evidence)
        diagnosis = await self.diagnose(evidence, fp)
        self.observer.on_diagnosis(diagnosis)
        request = self.request_for(evidence, diagnosis)
        diagnosis = replace(diagnosis, action=request.action)
        verdict = evaluate(self.policy, request, self.ledger, self.clock.now())
        return Decision(
            incident_id=ctx.incident_id or f"{evidence.pod.namespace}-{evidence.pod.name}",
            fingerprint=fp,
            evidence=evidence,
            diagnosis=diagnosis,
            verdict=verdict,
            decided_at=self.clock.now(),
        )

    def request_for(self, evidence: Evidence, diagnosis: Diagnosis) -> ActionRequest:
        request = _request(evidence, diagnosis)
        bound = ProposedAction(diagnosis.action.name, bind_parameters(request))
        return replace(request, action=bound)


def _request(evidence: Evidence, diagnosis: Diagnosis) -> ActionRequest:
    return ActionRequest(
        action=diagnosis.action,
        pod=evidence.pod,
        owner=evidence.owner,
        node=evidence.node,
        confidence=diagnosis.confidence,
        current_replicas=evidence.replicas,
        previous_revision=_previous_revision(evidence),
    )


def _previous_revision(evidence: Evidence) -> tuple[str, int] | None:
    """The previous rollout revision the evidence shows (core.rollout), for rollback_deployment."""
    rollout = evidence.facts.get("rollout")
    if not isinstance(rollout, dict):
        return None
    name, number = rollout.get("previous_replicaset"), rollout.get("previous_revision")
    if isinstance(name, str) and name and isinstance(number, int) and not isinstance(number, bool):
        return name, number
    return None


def request_from_decision(decision: Decision) -> ActionRequest:
    """The policy question a recorded decision asks again when it is approved."""
    return _request(decision.evidence, decision.diagnosis)
