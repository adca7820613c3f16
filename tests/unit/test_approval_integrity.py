"""Approval integrity without a cluster: the action digest, the executor's decision check, the
approve/reject adapter and CLI, and the reviewer copied into status (fake API server)."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from sre_agent import cli
from sre_agent.adapters.kube import approval
from sre_agent.adapters.kube.approval import ApprovalError, Verdict, give_verdict
from sre_agent.adapters.kube.client import KubeClient, KubeError
from sre_agent.adapters.kube.decisions import (
    DecisionStore,
    Phase,
    RecordedDecision,
    action_digest,
    manifest_for,
)
from sre_agent.adapters.kube.executor import ActionRefused, Executor
from sre_agent.core.policy import ActionLedger, default_policy
from sre_agent.domain import ObjectRef, ProposedAction
from tests.unit.test_decision_manifest import as_stored, make_decision

AT = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


class FixedClock:
    def now(self) -> datetime:
        return AT


def stored(action: ProposedAction | None = None, **status: Any) -> dict[str, Any]:
    """A decision as the API server returns it, with the digest `record` writes at creation."""
    manifest = manifest_for(make_decision(action=action), expires_at=AT)
    digest = action_digest(RecordedDecision.from_object(manifest).request())
    obj = as_stored(manifest)
    obj["status"].update(actionDigest=digest, **status)
    return obj


def scale_obj() -> dict[str, Any]:
    return stored(ProposedAction("scale_deployment", {"replicas": 4}))


# ---------------------------------------------------------------- digest and manifest


def test_digest_survives_the_round_trip_and_changes_with_every_executed_field() -> None:
    obj = scale_obj()
    rec = RecordedDecision.from_object(json.loads(json.dumps(obj)))
    assert rec.recorded_digest.startswith("sha256:")
    assert action_digest(rec.request()) == rec.recorded_digest

    def changed(edit: Any) -> str:
        other = copy.deepcopy(obj)
        edit(other["spec"])
        return action_digest(RecordedDecision.from_object(other).request())

    edits = [
        lambda s: s["target"].update(namespace="other"),
        lambda s: s["target"].update(name="victim-0"),
        lambda s: s["owner"].update(name="victim"),
        lambda s: s.pop("owner"),
        lambda s: s.update(action="restart_pod"),
        lambda s: s["parameters"].update(replicas=12),
        lambda s: s["parameters"].update(namespace="other"),
        lambda s: s.update(node="node-b"),
        lambda s: s.update(confidence=1.0),
        lambda s: s.update(currentReplicas=10),
    ]
    digests = {changed(e) for e in edits}
    assert len(digests) == len(edits) and rec.recorded_digest not in digests
    # Not part of what is executed: the prose may be re-clipped without changing the digest.
    assert changed(lambda s: s.update(diagnosis="reworded")) == rec.recorded_digest


def test_parameters_are_stored_as_integers_or_strings_only() -> None:
    params = {"replicas": 4, "flag": True, "ratio": 1.5, "nested": {"a": [1]}, "big": 10**30, "s": "x" * 5000}
    spec = manifest_for(make_decision(action=ProposedAction("scale_deployment", params)), expires_at=AT)[
        "spec"
    ]
    stored_params = spec["parameters"]
    assert stored_params["replicas"] == 4 and stored_params["s"] == "x" * 1021 + "..."
    assert (stored_params["flag"], stored_params["ratio"]) == ("true", "1.5")
    assert stored_params["nested"] == '{"a": [1]}' and stored_params["big"] == str(10**30)
    assert all(isinstance(v, int | str) and not isinstance(v, bool) for v in stored_params.values())


# ---------------------------------------------------------------- the executor's decision check


def executor() -> Executor:
    # check_decision does no I/O: the kube client is never used.
    return Executor(cast(KubeClient, None), default_policy(), ActionLedger(), FixedClock())


def test_executor_accepts_the_decision_as_made() -> None:
    rec = RecordedDecision.from_object(scale_obj())
    request = executor().check_decision(rec)
    assert request == rec.request() and request.owner is not None and request.owner.name == "web"


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda o: o["spec"]["target"].update(namespace="payments"), "is not the decision's namespace"),
        (lambda o: o["spec"]["owner"].update(name="victim"), "changed after it was made"),
        (lambda o: o["spec"]["parameters"].update(replicas=12), "changed after it was made"),
        (lambda o: o["spec"].update(action="restart_pod"), "changed after it was made"),
        (lambda o: o["status"].pop("actionDigest"), "no status.actionDigest"),
        (lambda o: o["status"].update(actionDigest="sha256:forged"), "changed after it was made"),
    ],
)
def test_executor_refuses_what_differs_from_the_decision(edit: Any, reason: str) -> None:
    obj = scale_obj()
    edit(obj)
    with pytest.raises(ActionRefused, match=reason):
        executor().check_decision(RecordedDecision.from_object(obj))


def test_executor_refuses_a_target_outside_the_decision_namespace_even_with_a_matching_digest() -> None:
    rec = RecordedDecision.from_object(scale_obj())
    elsewhere = replace(rec, target=replace(rec.target, namespace="payments"))
    elsewhere = replace(elsewhere, recorded_digest=action_digest(elsewhere.request()))
    with pytest.raises(ActionRefused, match="is not the decision's namespace 'shop'"):
        executor().check_decision(elsewhere)
    owner_elsewhere = replace(rec, owner=ObjectRef("Deployment", "victim", "payments", api_version="apps/v1"))
    owner_elsewhere = replace(owner_elsewhere, recorded_digest=action_digest(owner_elsewhere.request()))
    with pytest.raises(ActionRefused, match="Deployment payments/victim is outside"):
        executor().check_decision(owner_elsewhere)


def test_cordon_node_may_target_a_node() -> None:
    rec = RecordedDecision.from_object(stored(ProposedAction("cordon_node", {})))
    assert executor().check_decision(rec).node == "node-a"


# ---------------------------------------------------------------- the reviewer in status


class FakeKube:
    """The few KubeClient calls the store and the approval adapter make, over one object."""

    def __init__(self, obj: dict[str, Any] | None, user: str = "alice") -> None:
        self.obj = obj
        self.user = user
        self.patches: list[tuple[str | None, dict[str, Any]]] = []
        self.patch_error: KubeError | None = None
        self.review_error: KubeError | None = None

    async def request(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        assert (method, path) == ("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews")
        assert kw["body"]["kind"] == "SelfSubjectReview"
        if self.review_error:
            raise self.review_error
        return {"status": {"userInfo": {"username": self.user, "groups": ["system:authenticated"]}}}

    async def get(self, api_version: str, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.obj) if self.obj and self.obj["metadata"]["name"] == name else None

    async def patch(
        self, api_version: str, plural: str, namespace: str, name: str, body: dict[str, Any], **kw: Any
    ) -> dict[str, Any]:
        if self.patch_error:
            raise self.patch_error
        assert self.obj is not None
        self.patches.append((kw.get("subresource"), body))
        for key in ("spec", "status"):
            self.obj.setdefault(key, {}).update(body.get(key) or {})
        return copy.deepcopy(self.obj)


def fake(obj: dict[str, Any] | None, **kw: Any) -> Any:
    return cast(Any, FakeKube(obj, **kw))


@pytest.mark.parametrize(("approved", "to"), [(True, Phase.APPROVED), (False, Phase.REJECTED)])
async def test_leaving_pending_approval_records_who_gave_the_verdict(approved: bool, to: Phase) -> None:
    obj = scale_obj()
    obj["spec"].update(approved=approved, approvedBy="alice")
    kube = fake(obj)
    rec = RecordedDecision.from_object(obj)
    moved = await DecisionStore(kube, FixedClock()).transition(rec, to, "m", expect={Phase.PENDING_APPROVAL})
    assert moved is not None and moved.reviewed_by == "alice"
    assert kube.obj["status"]["reviewedAt"] == "2026-11-23T10:00:00Z"
    # The next step (Approved -> Executing) leaves the record alone.
    kube.obj["status"]["reviewedBy"] = "alice"
    if approved:
        await DecisionStore(kube, FixedClock()).transition(
            moved, Phase.EXECUTING, "x", expect={Phase.APPROVED}
        )
        assert kube.patches[-1][1]["status"].get("reviewedBy") is None


async def test_policy_approved_decisions_name_no_reviewer() -> None:
    kube = fake(scale_obj())
    rec = RecordedDecision.from_object(kube.obj)
    await DecisionStore(kube, FixedClock()).transition(
        rec, Phase.EXPIRED, "m", expect={Phase.PENDING_APPROVAL}
    )
    assert "reviewedBy" not in kube.obj["status"]


# ---------------------------------------------------------------- sre-agent approve / reject


async def test_approve_names_the_user_the_api_server_reports() -> None:
    kube = fake(scale_obj(), user="oidc:alice@example.com")
    name = kube.obj["metadata"]["name"]
    verdict = await give_verdict(kube, "shop", name, approve=True)
    assert verdict == Verdict("shop", name, True, "oidc:alice@example.com")
    assert verdict.describe() == f"agentdecision shop/{name} approved by oidc:alice@example.com"
    ((sub, body),) = kube.patches
    assert sub is None
    assert body == {
        "metadata": {"resourceVersion": "42"},
        "spec": {"approved": True, "approvedBy": "oidc:alice@example.com"},
    }


async def test_reject_keeps_a_one_line_reason() -> None:
    kube = fake(scale_obj())
    name = kube.obj["metadata"]["name"]
    await give_verdict(kube, "shop", name, approve=False, reason="not during\nthe sale")
    assert kube.patches[0][1]["spec"] == {
        "approved": False,
        "approvedBy": "alice",
        "rejectionReason": "not during the sale",
    }


def decided(**spec: Any) -> dict[str, Any]:
    obj = scale_obj()
    obj["spec"].update(spec)
    return obj


@pytest.mark.parametrize(
    ("obj", "patch_error", "review_error", "message"),
    [
        (None, None, None, "agentdecision shop/web-x not found"),
        (decided(approved=True, approvedBy="bob"), None, None, "is already approved by bob"),
        (decided(approved=False, approvedBy="bob"), None, None, "is already rejected by bob"),
        (stored(phase="Executed"), None, None, "is Executed, not waiting for approval"),
        (
            scale_obj(),
            KubeError(403, "Forbidden", 'agentdecisions "x" is forbidden: User "alice" cannot patch'),
            None,
            'forbidden: agentdecisions "x" is forbidden: User "alice" cannot patch',
        ),
        (
            scale_obj(),
            KubeError(422, "Unprocessable Entity", "spec: Forbidden: cannot change"),
            None,
            "refused: spec: Forbidden: cannot change",
        ),
        (
            scale_obj(),
            None,
            KubeError(0, "ConnectionRefusedError", "[Errno 111]"),
            "cannot reach the API server",
        ),
        (
            scale_obj(),
            None,
            KubeError(403, "Forbidden", "selfsubjectreviews is forbidden"),
            "SelfSubjectReview",
        ),
    ],
)
async def test_verdict_errors_are_one_line(
    obj: dict[str, Any] | None, patch_error: KubeError | None, review_error: KubeError | None, message: str
) -> None:
    kube = fake(obj)
    kube.patch_error, kube.review_error = patch_error, review_error
    name = obj["metadata"]["name"] if obj else "web-x"
    with pytest.raises(ApprovalError) as info:
        await give_verdict(kube, "shop", name, approve=True)
    assert message in str(info.value) and "\n" not in str(info.value)
    if obj is not None and obj["spec"].get("approved") is not None:
        assert kube.patches == []


async def test_losing_a_race_says_who_won() -> None:
    obj = scale_obj()
    kube = fake(obj)

    async def someone_else_first(*args: Any, **kw: Any) -> dict[str, Any]:
        kube.obj["spec"].update(approved=False, approvedBy="bob")
        raise KubeError(409, "Conflict", "the object has been modified")

    kube.patch = someone_else_first
    with pytest.raises(ApprovalError, match="is already rejected by bob"):
        await give_verdict(kube, "shop", obj["metadata"]["name"], approve=True)


def test_cli_approve_and_reject(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[Any, ...]] = []

    def fake_verdict(
        namespace: str | None, name: str, *, approve: bool, reason: str | None = None
    ) -> Verdict:
        calls.append((namespace, name, approve, reason))
        if name == "gone":
            raise ApprovalError(f"agentdecision {namespace}/{name} not found")
        return Verdict(namespace or "default", name, approve, "alice")

    monkeypatch.setattr(approval, "approve_or_reject", fake_verdict)
    assert cli.main(["approve", "d1", "-n", "shop"]) == 0
    assert cli.main(["reject", "d2", "--reason", "wrong fix"]) == 0
    assert cli.main(["approve", "gone", "-n", "shop"]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "agentdecision shop/d1 approved by alice",
        "agentdecision default/d2 rejected by alice",
    ]
    assert err == "sre-agent: agentdecision shop/gone not found\n"
    assert calls[:2] == [("shop", "d1", True, None), (None, "d2", False, "wrong fix")]
