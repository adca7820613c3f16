"""The decision lifecycle and the decision memory, with fake time and no cluster."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from sre_agent.core.lifecycle import (
    LABEL_CAUSE,
    LABEL_WORKLOAD,
    TRANSITIONS,
    Cause,
    DecisionMemory,
    MemoryKey,
    Observed,
    Phase,
    Recall,
    Remembered,
    SweepStep,
    can_move,
    cause_of,
    decision_name,
    initial_phase,
    lookups_for,
    stale_reason,
    sweep_step,
)
from sre_agent.core.policy import Suppression
from sre_agent.core.symptoms import Thresholds
from sre_agent.domain import ObjectRef, PolicyVerdict, Symptom
from tests.unit.podfactory import pod, running, waiting

NOW = datetime.fromisoformat("2026-11-20T10:00:00+00:00")
SUPPRESSION = Suppression(
    after_rejected_seconds=6 * 3600,
    after_expired_seconds=3600,
    after_executed_seconds=1800,
    after_blocked_seconds=7200,
)
KEY = MemoryKey.of("shop", "Deployment/shop/checkout-api", Cause.CRASH)


def closed(name: str, phase: Phase, at: datetime) -> Remembered:
    return Remembered(name, phase, at - timedelta(minutes=5), at)


# ----------------------------------------------------------------------------- phases


def test_only_the_documented_moves_exist() -> None:
    assert can_move(Phase.PENDING_APPROVAL, Phase.APPROVED)
    assert can_move(Phase.APPROVED, Phase.EXECUTING)
    assert can_move(Phase.EXECUTING, Phase.EXECUTED)
    assert not can_move(Phase.PENDING_APPROVAL, Phase.EXECUTING)  # never skip the approval step
    assert not can_move(Phase.REJECTED, Phase.APPROVED)
    assert not can_move(Phase.EXECUTED, Phase.EXECUTING)  # never twice
    for terminal in (Phase.EXECUTED, Phase.REJECTED, Phase.BLOCKED, Phase.FAILED, Phase.EXPIRED):
        assert TRANSITIONS[terminal] == frozenset()
    assert can_move(None, Phase.PENDING_APPROVAL) and not can_move(None, Phase.EXECUTED)


@pytest.mark.parametrize(
    ("verdict", "phase"),
    [
        (PolicyVerdict("blocked", "namespace kube-system is protected"), Phase.BLOCKED),
        (PolicyVerdict("allowed", "ok", dry_run=True), Phase.BLOCKED),
        (PolicyVerdict("allowed", "restart_pod allowed"), Phase.APPROVED),
        (PolicyVerdict("needs_approval", "confidence 0.40 below 0.80"), Phase.PENDING_APPROVAL),
    ],
)
def test_the_first_phase_follows_the_verdict(verdict: PolicyVerdict, phase: Phase) -> None:
    got, message = initial_phase(verdict)
    assert got == phase
    assert verdict.reason in message


# ----------------------------------------------------------------------------- sweep


def test_sweep_expires_pending_decisions_only_after_their_deadline() -> None:
    def step(phase: Phase, expires: datetime) -> SweepStep:
        return sweep_step(
            phase,
            created_at=NOW - timedelta(hours=1),
            expires_at=expires,
            now=NOW,
            retention=timedelta(days=7),
            ours_in_flight=False,
            executing_last_sweep=False,
        )

    assert step(Phase.PENDING_APPROVAL, NOW + timedelta(seconds=1)) == SweepStep.KEEP
    assert step(Phase.PENDING_APPROVAL, NOW) == SweepStep.EXPIRE
    assert step(Phase.REJECTED, NOW - timedelta(hours=1)) == SweepStep.KEEP


def test_sweep_fails_a_decision_left_executing_only_on_the_second_look_and_never_ours() -> None:
    def step(ours: bool, seen: bool) -> SweepStep:
        return sweep_step(
            Phase.EXECUTING,
            created_at=NOW,
            expires_at=None,
            now=NOW,
            retention=None,
            ours_in_flight=ours,
            executing_last_sweep=seen,
        )

    assert step(ours=False, seen=False) == SweepStep.WATCH_EXECUTING
    assert step(ours=False, seen=True) == SweepStep.FAIL_INTERRUPTED
    assert step(ours=True, seen=True) == SweepStep.KEEP


def test_sweep_deletes_old_decisions_but_never_one_that_may_be_acting() -> None:
    def step(phase: Phase) -> SweepStep:
        return sweep_step(
            phase,
            created_at=NOW - timedelta(days=8),
            expires_at=None,
            now=NOW,
            retention=timedelta(days=7),
            ours_in_flight=False,
            executing_last_sweep=False,
        )

    assert step(Phase.EXECUTED) == SweepStep.DELETE
    assert step(Phase.APPROVED) == SweepStep.KEEP
    assert step(Phase.EXECUTING) == SweepStep.WATCH_EXECUTING


# ----------------------------------------------------------------------------- staleness

POD_REF = ObjectRef("Pod", "checkout-api-7d9f8b6c4-x2kqz", "shop", uid="5b1f7c1e-8d2a-4d7e-9a51-0c9d8e7f6a51")
OWNER = ObjectRef("Deployment", "checkout-api", "shop", api_version="apps/v1")


def stale(action: str, observed: Observed, problems: tuple[str, ...] = ()) -> str:
    return stale_reason(
        action=action,
        target=POD_REF,
        node_name="node-a",
        owner=OWNER,
        observed=observed,
        node_problems=problems,
        now=NOW,
        thresholds=Thresholds(),
    )


def test_an_approved_restart_of_a_crash_loop_between_back_offs_still_applies() -> None:
    """A real kubelet shows `terminated` for most of a back-off: not 'healthy now'."""
    between = {"name": "app", "ready": False, "restartCount": 5,
               "state": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": "2026-11-20T09:59:40Z"}}}  # fmt: skip
    assert stale("restart_pod", Observed(pod=pod(statuses=[between]))) == ""
    assert stale("restart_pod", Observed(pod=pod(statuses=[waiting("CrashLoopBackOff", "", 5)]))) == ""


def test_an_approved_decision_about_a_recovered_or_replaced_pod_is_stale() -> None:
    assert "healthy now" in stale("restart_pod", Observed(pod=pod(statuses=[running()])))
    assert "no longer exists" in stale("restart_pod", Observed(pod=None))
    other = pod(statuses=[waiting("CrashLoopBackOff", "", 5)])
    other["metadata"]["uid"] = "another-uid"
    assert "no longer exists" in stale("restart_pod", Observed(pod=other))
    assert stale("scale_deployment", Observed(pod=None)) == ""  # its pods come and go
    assert "no longer exists" in stale("scale_deployment", Observed(owner_exists=False))


def test_an_approved_cordon_needs_the_node_still_unwell() -> None:
    assert stale("cordon_node", Observed(node={"metadata": {"name": "node-a"}}), ("NotReady",)) == ""
    assert "healthy again" in stale("cordon_node", Observed(node={"metadata": {"name": "node-a"}}))
    assert "no longer exists" in stale("cordon_node", Observed(node=None))


def test_lookups_read_only_what_the_action_needs() -> None:
    assert lookups_for("cordon_node", POD_REF).node and not lookups_for("cordon_node", POD_REF).pod
    assert lookups_for("scale_deployment", POD_REF).owner
    assert lookups_for("restart_pod", POD_REF).pod and not lookups_for("restart_pod", POD_REF).owner


# ----------------------------------------------------------------------------- root cause


def test_a_crash_loop_and_its_restarts_and_ooms_are_one_root_cause() -> None:
    assert cause_of(Symptom.CRASH_LOOP) == cause_of(Symptom.HIGH_RESTARTS) == cause_of(Symptom.OOM_KILLED)
    others = [
        s
        for s in Symptom
        if s not in (Symptom.CRASH_LOOP, Symptom.HIGH_RESTARTS, Symptom.OOM_KILLED, Symptom.HEALTHY)
    ]
    assert len({cause_of(s) for s in others}) == len(others)  # every other symptom is its own cause
    with pytest.raises(ValueError):
        cause_of(Symptom.HEALTHY)


def test_memory_keys_travel_as_labels_and_garbage_labels_give_none() -> None:
    assert MemoryKey.from_labels("shop", KEY.labels()) == KEY
    assert MemoryKey.from_labels("shop", {LABEL_WORKLOAD: "zz", LABEL_CAUSE: "crash"}) is None
    assert MemoryKey.from_labels("shop", {LABEL_WORKLOAD: KEY.workload, LABEL_CAUSE: "world"}) is None
    assert MemoryKey.from_labels("shop", {}) is None


def test_decision_names_are_deterministic_dns_names() -> None:
    name = decision_name("Checkout_API" + "x" * 80, KEY, 12)
    assert name == decision_name("Checkout_API" + "x" * 80, KEY, 12)
    assert len(name) <= 63 and name.endswith("-12") and name == name.lower()
    assert decision_name("web", KEY, 1) != decision_name(
        "web", MemoryKey.of("shop", "Deployment/shop/web", Cause.CRASH), 1
    )


# ----------------------------------------------------------------------------- memory


def test_one_open_decision_per_workload_and_cause() -> None:
    memory = DecisionMemory(SUPPRESSION)
    assert memory.recall(KEY, NOW).recall == Recall.NEW
    memory.observe(KEY, Remembered("checkout-api-1", Phase.PENDING_APPROVAL, NOW))
    answer = memory.recall(KEY, NOW + timedelta(hours=5))
    assert (answer.recall, answer.decision) == (Recall.OPEN, "checkout-api-1")
    other_cause = MemoryKey(KEY.namespace, KEY.workload, Cause.PROBE)
    assert memory.recall(other_cause, NOW).recall == Recall.NEW
    assert memory.pending_count() == 1


@pytest.mark.parametrize(
    ("phase", "seconds"),
    [
        (Phase.REJECTED, 6 * 3600),
        (Phase.EXPIRED, 3600),
        (Phase.EXECUTED, 1800),
        (Phase.FAILED, 1800),
        (Phase.BLOCKED, 7200),
    ],
)
def test_a_closed_decision_suppresses_a_new_one_for_the_policy_time(phase: Phase, seconds: int) -> None:
    memory = DecisionMemory(SUPPRESSION)
    memory.observe(KEY, closed("checkout-api-x-1", phase, NOW))
    just_before = memory.recall(KEY, NOW + timedelta(seconds=seconds - 1))
    assert just_before.recall == Recall.SUPPRESSED
    assert just_before.until == NOW + timedelta(seconds=seconds)
    after = memory.recall(KEY, NOW + timedelta(seconds=seconds))
    assert after.recall == Recall.NEW
    assert after.sequence == 2  # the next deterministic name does not reuse the closed one's


def test_rejected_suppresses_longer_than_expired_by_default() -> None:
    default = Suppression()
    assert default.after_rejected_seconds > default.after_expired_seconds


def test_a_decision_whose_status_was_never_written_blocks_only_for_a_grace_period() -> None:
    memory = DecisionMemory(SUPPRESSION)
    memory.observe(KEY, Remembered("checkout-api-x-1", None, NOW))
    assert memory.recall(KEY, NOW + timedelta(minutes=1)).recall == Recall.OPEN
    assert memory.recall(KEY, NOW + timedelta(minutes=10)).recall == Recall.NEW


def test_the_latest_state_of_a_decision_wins_and_deleted_ones_are_forgotten() -> None:
    memory = DecisionMemory(SUPPRESSION)
    memory.observe(KEY, Remembered("checkout-api-x-1", Phase.PENDING_APPROVAL, NOW))
    memory.observe(KEY, closed("checkout-api-x-1", Phase.REJECTED, NOW + timedelta(minutes=1)))
    assert memory.recall(KEY, NOW + timedelta(minutes=2)).recall == Recall.SUPPRESSED
    memory.forget(KEY, "checkout-api-x-1")
    assert memory.recall(KEY, NOW + timedelta(minutes=2)).recall == Recall.NEW
    assert len(memory) == 0


def test_a_rebuilt_memory_remembers_what_the_decisions_say() -> None:
    """What an operator restart or a peering hand-over does: the list of decisions is the memory."""
    memory = DecisionMemory(SUPPRESSION)
    memory.observe(KEY, Remembered("stale-entry", Phase.PENDING_APPROVAL, NOW))
    count = memory.replace_all([(KEY, closed("checkout-api-x-3", Phase.REJECTED, NOW))])
    assert count == 1
    answer = memory.recall(KEY, NOW + timedelta(hours=1))
    assert (answer.recall, answer.decision) == (Recall.SUPPRESSED, "checkout-api-x-3")
    assert memory.recall(KEY, NOW + timedelta(hours=7)).sequence == 4


# ----------------------------------------------------------------------------- from AgentDecision objects


def decision_object(symptom: str, labels: dict[str, str], phase: str = "Rejected") -> dict[str, object]:
    return {
        "metadata": {"name": "web-1a2b3c4d-1", "namespace": "shop", "labels": labels,
                     "creationTimestamp": "2026-11-20T09:00:00Z"},
        "spec": {"symptom": symptom},
        "status": {"phase": phase, "finishedAt": "2026-11-20T09:30:00Z"},
    }  # fmt: skip


def test_the_memory_reads_a_decision_from_its_labels_and_refuses_a_relabelled_cause() -> None:
    from sre_agent.operator.service import remembered

    found = remembered(decision_object("HighRestarts", KEY.labels()))
    assert found is not None
    key, decision = found
    assert key == MemoryKey(KEY.namespace, KEY.workload, Cause.CRASH)
    assert decision.phase == Phase.REJECTED and decision.closed_at == NOW - timedelta(minutes=30)
    # spec.symptom cannot change (CRD rules), labels can: a cause that does not match it is ignored.
    assert remembered(decision_object("ProbeFailure", KEY.labels())) is None
    assert remembered(decision_object("CrashLoopBackOff", {})) is None
    assert remembered(decision_object("CrashLoopBackOff", KEY.labels(), phase="Bogus")) is None
    assert remembered({"metadata": "nope"}) is None
