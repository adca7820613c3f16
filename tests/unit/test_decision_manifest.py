"""AgentDecision manifests (pure): names, labels, CRD limits, and reading a CR back."""

from __future__ import annotations

import copy
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sre_agent.adapters.kube.decisions import (
    LABEL_FINGERPRINT,
    LABEL_GROUP,
    MAX_EXCERPT,
    MAX_EXCERPTS,
    DecisionFormatError,
    Phase,
    RecordedDecision,
    decision_name,
    group_key,
    incident_of,
    manifest_for,
)
from sre_agent.core.policy import ActionLedger, default_policy, evaluate
from sre_agent.domain import (
    Category,
    Decision,
    Diagnosis,
    Evidence,
    ObjectRef,
    PolicyVerdict,
    ProposedAction,
    Signal,
    Symptom,
)

AT = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def make_decision(
    *,
    pod: str = "web-7d4b9c-abcde",
    owner: str | None = "web",
    fingerprint: str = "0123456789abcdef",
    excerpts: tuple[str, ...] = ("Error: unknown flag --foo",),
    action: ProposedAction | None = None,
    at: datetime = AT,
    replicas: int | None = 3,
) -> Decision:
    owner_ref = (
        ObjectRef("Deployment", owner, "shop", uid="u-owner", api_version="apps/v1") if owner else None
    )
    evidence = Evidence(
        symptom=Symptom.CRASH_LOOP,
        pod=ObjectRef("Pod", pod, "shop", uid="u-pod"),
        owner=owner_ref,
        node="node-a",
        images=("registry.example.com/shop/web:1.4.2",),
        signals=(Signal("crash_loop", "container app restarted 4 times", "status"),),
        excerpts=excerpts,
        replicas=replicas,
    )
    diagnosis = Diagnosis(
        category=Category.APP_ERROR,
        summary="The app exits 1 on start: unknown flag.",
        reasoning="Logs show usage text and exit code 1.",
        action=action or ProposedAction("restart_pod", {"namespace": "shop", "name": pod}),
        confidence=0.82,
        source="llm",
        notes=("cross-check: fine",),
        model="gpt-test",
    )
    return Decision(
        incident_id=f"shop-{pod}",
        fingerprint=fingerprint,
        evidence=evidence,
        diagnosis=diagnosis,
        verdict=PolicyVerdict("needs_approval", "restart_pod needs approval"),
        decided_at=at,
    )


def as_stored(manifest: dict[str, Any], phase: str | None = "PendingApproval") -> dict[str, Any]:
    """What the API server hands back: metadata filled in, status set."""
    obj = copy.deepcopy(manifest)
    obj["metadata"].update(
        uid="11111111-2222-4333-8444-555555555555",
        resourceVersion="42",
        generation=1,
        creationTimestamp="2026-11-23T10:00:01Z",
    )
    if phase:
        obj["status"] = {"phase": phase, "attempts": 0}
    return obj


def test_name_is_dns_1123_short_and_stable_per_incident() -> None:
    d = make_decision()
    name = decision_name(d)
    assert DNS_1123.match(name) and len(name) <= 63
    assert name.startswith("web-")
    # Same group and fingerprint: same stem; later time: different suffix.
    later = decision_name(replace(d, decided_at=AT + timedelta(minutes=5)))
    assert later.rsplit("-", 1)[0] == name.rsplit("-", 1)[0] and later != name
    other_fp = decision_name(replace(d, fingerprint="fedcba9876543210"))
    assert other_fp.rsplit("-", 1)[0] != name.rsplit("-", 1)[0]


def test_name_of_a_long_odd_pod_name_stays_valid() -> None:
    d = make_decision(pod="Web.Worker_" + "x" * 250, owner=None)
    name = decision_name(d)
    assert DNS_1123.match(name), name
    assert len(name) <= 63


def test_group_is_the_owner_so_pods_of_one_deployment_share_it() -> None:
    a = make_decision(pod="web-1")
    b = make_decision(pod="web-2")
    bare_a = make_decision(pod="web-1", owner=None)
    bare_b = make_decision(pod="web-2", owner=None)
    assert group_key(a) == group_key(b)
    assert group_key(bare_a) != group_key(bare_b)


def test_manifest_fields_labels_and_limits() -> None:
    long_lines = tuple(f"line {i}: " + "y" * 5000 for i in range(80))
    d = make_decision(excerpts=long_lines)
    m = manifest_for(d, expires_at=AT + timedelta(hours=1), incident={"id": "x", "pod": {}})
    assert m["apiVersion"] == "sre.agentops.dev/v1alpha1" and m["kind"] == "AgentDecision"
    assert m["metadata"]["namespace"] == "shop"
    labels = m["metadata"]["labels"]
    assert labels[LABEL_FINGERPRINT] == "0123456789abcdef"
    assert labels[LABEL_GROUP] == group_key(d)
    spec = m["spec"]
    assert spec["target"] == {"kind": "Pod", "name": "web-7d4b9c-abcde", "namespace": "shop", "uid": "u-pod"}
    assert spec["owner"] == {"kind": "Deployment", "name": "web", "uid": "u-owner", "apiVersion": "apps/v1"}
    assert spec["expiresAt"] == "2026-11-23T11:00:00Z"
    assert spec["policy"] == {"outcome": "needs_approval", "reason": "restart_pod needs approval"}
    assert spec["currentReplicas"] == 3 and spec["model"] == "gpt-test"
    assert len(spec["evidence"]["excerpts"]) == MAX_EXCERPTS
    assert all(len(e) <= MAX_EXCERPT for e in spec["evidence"]["excerpts"])
    assert spec["evidence"]["signals"] == ["crash_loop: container app restarted 4 times"]
    assert incident_of(m) == {"id": "x", "pod": {}} and "incident" not in spec  # zipped
    assert "approved" not in spec  # unset until a human decides


def test_round_trip_through_from_object() -> None:
    d = make_decision()
    m = manifest_for(d, expires_at=AT + timedelta(hours=1))
    rec = RecordedDecision.from_object(as_stored(m))
    assert rec.name == m["metadata"]["name"] and rec.namespace == "shop"
    assert rec.resource_version == "42" and rec.uid.startswith("1111")
    assert rec.target == d.evidence.pod
    assert rec.owner == d.evidence.owner
    assert rec.node == "node-a"
    assert (rec.symptom, rec.category) == (Symptom.CRASH_LOOP, Category.APP_ERROR)
    assert rec.action == d.action
    assert rec.confidence == 0.82 and rec.source == "llm"
    assert rec.fingerprint == d.fingerprint and rec.group == group_key(d)
    assert rec.approved is None and rec.phase == Phase.PENDING_APPROVAL and rec.is_open
    assert rec.expires_at == AT + timedelta(hours=1)
    assert rec.created_at == datetime(2026, 11, 23, 10, 0, 1, tzinfo=UTC)
    assert rec.policy_outcome == "needs_approval"
    assert rec.current_replicas == 3


def test_request_asks_the_same_policy_question_as_the_decision() -> None:
    from sre_agent.core.pipeline import request_from_decision

    d = make_decision(
        action=ProposedAction("scale_deployment", {"namespace": "shop", "name": "web", "replicas": 5})
    )
    rec = RecordedDecision.from_object(as_stored(manifest_for(d, expires_at=AT)))
    assert rec.request() == request_from_decision(d)
    policy, ledger = default_policy(), ActionLedger()
    assert evaluate(policy, rec.request(), ledger, AT) == evaluate(
        policy, request_from_decision(d), ledger, AT
    )


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda o: o.pop("spec"), "spec"),
        (lambda o: o["spec"].pop("target"), "spec.target"),
        (lambda o: o["spec"]["target"].pop("name"), "spec.target.name"),
        (lambda o: o["spec"].update(symptom="Bogus"), "spec.symptom"),
        (lambda o: o["spec"].update(category=7), "spec.category"),
        (lambda o: o["spec"].update(confidence=1.5), "spec.confidence"),
        (lambda o: o["spec"].update(confidence="high"), "spec.confidence"),
        (lambda o: o["spec"].update(parameters=["x"]), "spec.parameters"),
        (lambda o: o["spec"].update(approved="yes"), "spec.approved"),
        (lambda o: o["spec"].update(expiresAt="tomorrow"), "spec.expiresAt"),
        (lambda o: o["spec"].update(owner={"kind": "Deployment"}), "spec.owner.name"),
        (lambda o: o["status"].update(phase="Done"), "status.phase"),
        (lambda o: o["metadata"].pop("namespace"), "metadata.namespace"),
    ],
)
def test_malformed_decision_names_the_cr_and_the_field(mutate: Any, field: str) -> None:
    obj = as_stored(manifest_for(make_decision(), expires_at=AT))
    mutate(obj)
    with pytest.raises(DecisionFormatError) as info:
        RecordedDecision.from_object(obj)
    message = str(info.value)
    assert "\n" not in message
    assert f"invalid field {field}:" in message
    assert "AgentDecision" in message


def test_error_names_the_cr() -> None:
    obj = as_stored(manifest_for(make_decision(), expires_at=AT))
    obj["spec"]["symptom"] = "Bogus"
    with pytest.raises(DecisionFormatError, match=rf"AgentDecision shop/{obj['metadata']['name']}: "):
        RecordedDecision.from_object(obj)
