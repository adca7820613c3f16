"""DecisionStore on a real API server: schema validation, status subresource, guarded transitions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sre_agent.adapters.kube.client import KubeClient
from sre_agent.adapters.kube.decisions import (
    API_VERSION,
    LABEL_FINGERPRINT,
    PLURAL,
    DecisionFormatError,
    DecisionStore,
    Phase,
    RecordedDecision,
    incident_of,
    manifest_for,
)
from sre_agent.domain import ObjectRef
from tests.cluster.conftest import Cluster
from tests.unit.test_decision_manifest import make_decision

pytestmark = pytest.mark.cluster


class Clock:
    def __init__(self) -> None:
        self.at = datetime.now(UTC).replace(microsecond=0)

    def now(self) -> datetime:
        return self.at


@pytest.fixture
async def kube(cluster: Cluster) -> AsyncIterator[KubeClient]:
    k = KubeClient.from_kubeconfig(str(cluster.kubeconfig))
    yield k
    k.close()


def decision_in(namespace: str, clock: Clock, **kw: Any) -> Any:
    d = make_decision(at=clock.now(), **kw)
    ev = d.evidence
    pod = replace(ev.pod, namespace=namespace)
    owner = replace(ev.owner, namespace=namespace) if ev.owner else None
    params = dict(d.diagnosis.action.parameters)
    if "namespace" in params:
        params["namespace"] = namespace
    action = replace(d.diagnosis.action, parameters=params)
    return replace(
        d,
        evidence=replace(ev, pod=pod, owner=owner),
        diagnosis=replace(d.diagnosis, action=action),
    )


INCIDENT = {
    "id": "shop-web",
    "pod": {"metadata": {"name": "web-7d4b9c-abcde", "namespace": "shop"}, "spec": {}, "status": {}},
    "events": [{"reason": "BackOff", "message": "Back-off restarting failed container"}],
    "logs": {"app": {"current": "Error: unknown flag --foo\n"}},
}


async def test_record_creates_a_valid_cr_and_sets_status_through_the_subresource(
    kube: KubeClient, namespace: str
) -> None:
    clock = Clock()
    store = DecisionStore(kube, clock)
    long_lines = tuple(f"{i}: " + "x" * 3000 for i in range(70))
    d = decision_in(namespace, clock, excerpts=long_lines)
    rec, created = await store.record(
        d,
        phase=Phase.PENDING_APPROVAL,
        message="restart_pod needs approval\nsecond line",
        expires_at=clock.now() + timedelta(hours=1),
        incident=INCIDENT,
    )
    assert created
    assert rec.phase == Phase.PENDING_APPROVAL and rec.namespace == namespace
    obj = await kube.get(API_VERSION, PLURAL, namespace, rec.name)
    assert obj is not None
    spec, status = obj["spec"], obj["status"]
    assert len(spec["evidence"]["excerpts"]) == 50
    assert all(len(e) <= 1024 for e in spec["evidence"]["excerpts"])
    assert incident_of(obj) == INCIDENT and "incident" not in spec  # zipped, preserved, not pruned
    assert spec["currentReplicas"] == 3 and spec["model"] == "gpt-test"
    assert spec["owner"]["name"] == "web" and spec["node"] == "node-a"
    assert status["phase"] == "PendingApproval"
    assert status["message"] == "restart_pod needs approval second line"
    assert status["decidedAt"] == clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
    assert status["attempts"] == 0
    [ready] = status["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "Unknown", "PendingApproval")
    # The status was written through /status (the main resource ignores .status).
    managers = {(m.get("operation"), m.get("subresource", "")) for m in obj["metadata"]["managedFields"]}
    assert ("Update", "status") in managers
    assert rec == RecordedDecision.from_object(obj)
    assert rec.target == d.evidence.pod and rec.owner == d.evidence.owner
    assert rec.action == d.action and rec.fingerprint == d.fingerprint


async def test_record_is_idempotent_while_the_decision_is_open(kube: KubeClient, namespace: str) -> None:
    clock = Clock()
    store = DecisionStore(kube, clock)
    d = decision_in(namespace, clock)
    first, created = await store.record(
        d, phase=Phase.PENDING_APPROVAL, message="m", expires_at=clock.now() + timedelta(hours=1)
    )
    assert created
    # Another pod of the same Deployment, same evidence, a minute later: same group and fingerprint.
    clock.at += timedelta(minutes=1)
    again = replace(
        decision_in(namespace, clock), evidence=replace(d.evidence, pod=ObjectRef("Pod", "web-x", namespace))
    )
    second, created = await store.record(
        again, phase=Phase.PENDING_APPROVAL, message="m", expires_at=clock.now() + timedelta(hours=1)
    )
    assert not created and second.name == first.name
    objs = await store.list_objects(namespace)
    assert [o["metadata"]["name"] for o in objs] == [first.name]

    # A different fingerprint is a different decision.
    other, created = await store.record(
        decision_in(namespace, clock, fingerprint="fedcba9876543210"),
        phase=Phase.PENDING_APPROVAL,
        message="m",
        expires_at=clock.now() + timedelta(hours=1),
    )
    assert created and other.name != first.name

    # Once closed, the same incident opens a new decision.
    done = await store.transition(
        first, Phase.REJECTED, "rejected by a human", expect={Phase.PENDING_APPROVAL}
    )
    assert done is not None and done.phase == Phase.REJECTED
    clock.at += timedelta(minutes=1)
    third, created = await store.record(
        decision_in(namespace, clock), phase=Phase.PENDING_APPROVAL, message="m", expires_at=clock.now()
    )
    assert created and third.name not in (first.name, other.name)
    selector = f"{LABEL_FINGERPRINT}={d.fingerprint}"
    assert len(await kube.list_objects(API_VERSION, PLURAL, namespace, label_selector=selector)) == 2


async def test_concurrent_transitions_exactly_one_wins(kube: KubeClient, namespace: str) -> None:
    clock = Clock()
    store = DecisionStore(kube, clock)
    for round_ in range(4):
        clock.at += timedelta(minutes=1)
        rec, _ = await store.record(
            decision_in(namespace, clock, fingerprint=f"{round_:016x}"),
            phase=Phase.PENDING_APPROVAL,
            message="m",
            expires_at=clock.now() + timedelta(hours=1),
        )
        results = await asyncio.gather(
            *(
                store.transition(
                    rec, Phase.EXECUTING, f"replica {i}", expect={Phase.PENDING_APPROVAL}, executed_by=f"r{i}"
                )
                for i in range(3)
            )
        )
        winners = [r for r in results if r is not None]
        assert len(winners) == 1, results
        final = await store.get(namespace, rec.name)
        assert final is not None and final.phase == Phase.EXECUTING and final.attempts == 1
        obj = await store.get_object(namespace, rec.name)
        assert obj is not None
        assert obj["status"]["executedBy"] == f"r{results.index(winners[0])}"
        assert obj["status"]["executedAt"]


async def test_transition_sets_timestamps_and_conditions_and_refuses_unexpected_phases(
    kube: KubeClient, namespace: str
) -> None:
    clock = Clock()
    store = DecisionStore(kube, clock)
    rec, _ = await store.record(
        decision_in(namespace, clock),
        phase=Phase.PENDING_APPROVAL,
        message="needs approval",
        expires_at=clock.now() + timedelta(hours=1),
    )
    # Not approved yet: moving from Approved is refused.
    assert await store.transition(rec, Phase.EXECUTING, "x", expect={Phase.APPROVED}) is None

    clock.at += timedelta(seconds=30)
    approved = await store.transition(rec, Phase.APPROVED, "approved", expect={Phase.PENDING_APPROVAL})
    assert approved is not None
    executing = await store.transition(approved, Phase.EXECUTING, "running", expect={Phase.APPROVED})
    assert executing is not None
    clock.at += timedelta(seconds=5)
    done = await store.transition(executing, Phase.EXECUTED, "deleted pod", expect={Phase.EXECUTING})
    assert done is not None and done.phase == Phase.EXECUTED and not done.is_open
    obj = await store.get_object(namespace, rec.name)
    assert obj is not None
    status = obj["status"]
    assert status["approvedAt"] < status["finishedAt"]
    assert status["attempts"] == 1
    [ready] = status["conditions"]
    assert (ready["status"], ready["reason"], ready["message"]) == ("True", "Executed", "deleted pod")
    # A stale view (an old resourceVersion, an earlier phase) can never move it again.
    assert await store.transition(rec, Phase.EXECUTING, "again", expect={Phase.PENDING_APPROVAL}) is None


async def test_transition_refuses_when_approval_changed_since_read(kube: KubeClient, namespace: str) -> None:
    clock = Clock()
    store = DecisionStore(kube, clock)
    rec, _ = await store.record(
        decision_in(namespace, clock), phase=Phase.PENDING_APPROVAL, message="m", expires_at=clock.now()
    )
    # A human rejects it after the operator read it.
    await kube.patch(
        API_VERSION, PLURAL, namespace, rec.name, {"spec": {"approved": False, "approvedBy": "admin"}}
    )
    assert await store.transition(rec, Phase.APPROVED, "approve", expect={Phase.PENDING_APPROVAL}) is None
    fresh = await store.get(namespace, rec.name)
    assert fresh is not None and fresh.approved is False and fresh.phase == Phase.PENDING_APPROVAL
    rejected = await store.transition(fresh, Phase.REJECTED, "rejected", expect={Phase.PENDING_APPROVAL})
    assert rejected is not None and rejected.phase == Phase.REJECTED


async def test_malformed_cr_gives_a_format_error_naming_the_field(kube: KubeClient, namespace: str) -> None:
    clock = Clock()
    store = DecisionStore(kube, clock)
    body = manifest_for(decision_in(namespace, clock), expires_at=clock.now())
    body["metadata"]["name"] = "odd-owner"
    body["spec"]["owner"] = {"kind": "Deployment"}  # the CRD accepts it; the agent cannot use it
    await kube.create(API_VERSION, PLURAL, namespace, body)
    with pytest.raises(
        DecisionFormatError, match=rf"AgentDecision {namespace}/odd-owner: invalid field spec.owner.name"
    ):
        await store.get(namespace, "odd-owner")
    assert await store.list(namespace) == []  # skipped, not fatal


async def test_get_missing_and_delete_are_quiet(kube: KubeClient, namespace: str) -> None:
    store = DecisionStore(kube, Clock())
    assert await store.get(namespace, "nope") is None
    await store.delete(namespace, "nope")  # 404 is fine
    clock = Clock()
    rec, _ = await store.record(
        decision_in(namespace, clock), phase=Phase.BLOCKED, message="blocked", expires_at=clock.now()
    )
    obj = await store.get_object(namespace, rec.name)
    assert obj is not None and obj["status"]["finishedAt"]
    assert obj["status"]["conditions"][0]["status"] == "False"
    await store.delete(namespace, rec.name)
    assert await store.get(namespace, rec.name) is None


class RacingKube(KubeClient):
    """A real client that lets another writer move the decision right after each read of it:
    the interleaving that only the resourceVersion guard can catch."""

    def __init__(self, inner: KubeClient, other: KubeClient) -> None:
        super().__init__(inner._api)
        self.other = other
        self.raced = 0

    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> Any:
        obj = await super().get(api_version, plural, namespace, name)
        if plural == PLURAL and obj is not None and not self.raced:
            self.raced += 1
            await self.other.patch(
                API_VERSION, PLURAL, namespace, name, {"status": {"phase": "Executing"}}, subresource="status"
            )
        return obj


async def test_a_write_between_read_and_write_makes_the_transition_lose(
    cluster: Cluster, kube: KubeClient, namespace: str
) -> None:
    clock = Clock()
    rec, _ = await DecisionStore(kube, clock).record(
        decision_in(namespace, clock), phase=Phase.APPROVED, message="m", expires_at=clock.now()
    )
    other = KubeClient.from_kubeconfig(str(cluster.kubeconfig))
    try:
        racing = DecisionStore(RacingKube(kube, other), clock)
        # The re-read still says Approved, but the other writer moved it before our write: 409.
        assert await racing.transition(rec, Phase.EXECUTING, "mine", expect={Phase.APPROVED}) is None
    finally:
        other.close()
    obj = await kube.get(API_VERSION, PLURAL, namespace, rec.name)
    assert obj is not None
    assert obj["status"]["phase"] == "Executing" and "executedBy" not in obj["status"]
    assert obj["status"]["attempts"] == 0  # our write (attempts 1) never landed
