"""The response cache: replicas of one workload share a fingerprint; the model is part of the key."""

from __future__ import annotations

from datetime import datetime

from sre_agent.core.cache import DiagnosisCache, fingerprint
from sre_agent.core.evidence import extract
from sre_agent.core.redaction import Redactor
from sre_agent.core.rules import RuleReasoner
from sre_agent.core.symptoms import detect
from sre_agent.domain import Evidence, IncidentContext
from tests.unit.podfactory import event, pod, terminated, waiting

NOW = datetime.fromisoformat("2026-11-20T10:00:00+00:00")


def crashing(name: str, uid: str, log: str = "dial tcp 10.96.0.12:5432: connect: connection refused") -> Evidence:
    p = pod(name=name, statuses=[waiting("CrashLoopBackOff", "back-off 40s", 3, terminated())])
    p["metadata"]["uid"] = uid
    ev = (event("BackOff", f"Back-off restarting failed container app in pod {name}_shop({uid})"),)
    ctx = IncidentContext(pod=p, events=ev, logs={"app": {"previous": log}})
    return extract(ctx, detect(p, ev, None, NOW), Redactor())


def test_replicas_of_one_workload_share_a_fingerprint() -> None:
    a = crashing("checkout-api-7d9f8b6c4-x2kqz", "11111111-1111-1111-1111-111111111111")
    b = crashing("checkout-api-7d9f8b6c4-p9wvn", "22222222-2222-2222-2222-222222222222",
                 "dial tcp 10.96.0.13:5432: connect: connection refused")  # fmt: skip
    assert fingerprint(a) == fingerprint(b)


def test_different_evidence_gives_a_different_fingerprint() -> None:
    a = crashing("checkout-api-7d9f8b6c4-x2kqz", "u1")
    b = crashing("checkout-api-7d9f8b6c4-x2kqz", "u1", "KeyError: 'STRIPE_KEY'")
    assert fingerprint(a) != fingerprint(b)


def test_cache_is_keyed_by_reasoner_and_expires() -> None:
    clock = [0.0]
    cache = DiagnosisCache(timer=lambda: clock[0], ttl_seconds=60)
    ev = crashing("checkout-api-7d9f8b6c4-x2kqz", "u1")
    diagnosis = RuleReasoner().diagnose_now(ev)
    cache.put("gpt-x|prompt-1", "fp", diagnosis)
    assert cache.get("gpt-x|prompt-1", "fp") == diagnosis
    assert cache.get("gpt-y|prompt-1", "fp") is None  # another model never reuses the answer
    assert cache.get("gpt-x|prompt-2", "fp") is None  # nor another prompt version
    clock[0] = 61
    assert cache.get("gpt-x|prompt-1", "fp") is None
    assert (cache.hits, cache.misses) == (1, 3)
