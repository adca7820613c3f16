"""Incident intake: grouping per workload (or node), per-pod de-duplication, window and cooldown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sre_agent.core.intake import Intake, OwnerKey, Verdict, group_key, owner_key
from sre_agent.domain import Symptom

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.at = T0

    def now(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


def pod(
    name: str,
    *,
    namespace: str = "shop",
    owner: tuple[str, str] | None = ("ReplicaSet", "web-7d4b9c"),
    template_hash: str | None = "7d4b9c",
    node: str = "node-a",
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": f"uid-{name}", "labels": {}}
    if template_hash:
        meta["labels"]["pod-template-hash"] = template_hash
    if owner:
        meta["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1], "uid": "o", "controller": True}
        ]
    return {"metadata": meta, "spec": {"nodeName": node}, "status": {}}


def test_owner_key_from_owner_references() -> None:
    assert owner_key(pod("web-7d4b9c-x1")) == OwnerKey("shop", "Deployment", "web")
    assert owner_key(pod("db-0", owner=("StatefulSet", "db"), template_hash=None)) == OwnerKey(
        "shop", "StatefulSet", "db"
    )
    assert owner_key(pod("agent-x", owner=("DaemonSet", "agent"), template_hash=None)).kind == "DaemonSet"
    assert owner_key(pod("solo", owner=None, template_hash=None)) == OwnerKey("shop", "Pod", "solo")
    # A ReplicaSet not made by a Deployment (no matching pod-template-hash) stays a ReplicaSet.
    assert owner_key(pod("rs-abc", owner=("ReplicaSet", "rs"), template_hash=None)) == OwnerKey(
        "shop", "ReplicaSet", "rs"
    )
    # Jobs of a CronJob group under the CronJob.
    job = pod("report-29000000-abcde", owner=("Job", "report-29000000"), template_hash=None)
    assert owner_key(job) == OwnerKey("shop", "CronJob", "report")
    assert owner_key(pod("once-x", owner=("Job", "once"), template_hash=None)).kind == "Job"


def test_not_ready_pods_group_by_node_across_workloads() -> None:
    a = pod("web-7d4b9c-x1", node="node-z")
    b = pod("db-0", owner=("StatefulSet", "db"), template_hash=None, node="node-z")
    assert group_key(a, Symptom.NODE_NOT_READY) == group_key(b, Symptom.NODE_NOT_READY)
    assert group_key(a, Symptom.CRASH_LOOP) != group_key(b, Symptom.CRASH_LOOP)


def test_twenty_replicas_make_one_decision() -> None:
    intake = Intake(Clock(), cooldown_seconds=300, window_seconds=120)
    verdicts = [intake.offer(pod(f"web-7d4b9c-{i:02d}"), Symptom.CRASH_LOOP).verdict for i in range(20)]
    assert verdicts == [Verdict.DECIDE] + [Verdict.ATTACH] * 19
    group = intake.offer(pod("web-7d4b9c-00"), Symptom.CRASH_LOOP).group
    assert group.size == 20
    assert group.leader == "shop/web-7d4b9c-00"


def test_repeated_events_of_one_pod_are_duplicates() -> None:
    intake = Intake(Clock())
    assert intake.offer(pod("web-7d4b9c-a"), Symptom.CRASH_LOOP).decide
    for _ in range(5):
        assert intake.offer(pod("web-7d4b9c-a"), Symptom.CRASH_LOOP).verdict == Verdict.DUPLICATE


def test_root_cause_and_namespace_are_part_of_the_group() -> None:
    intake = Intake(Clock())
    assert intake.offer(pod("web-7d4b9c-a"), Symptom.CRASH_LOOP).decide
    assert intake.offer(pod("web-7d4b9c-a"), Symptom.PROBE_FAILURE).decide
    assert intake.offer(pod("web-7d4b9c-a", namespace="other"), Symptom.CRASH_LOOP).decide


def test_high_restarts_and_oom_after_a_crash_loop_join_its_group() -> None:
    intake = Intake(Clock())
    first = intake.offer(pod("web-7d4b9c-a"), Symptom.CRASH_LOOP)
    assert first.decide
    assert intake.offer(pod("web-7d4b9c-a"), Symptom.HIGH_RESTARTS).verdict == Verdict.DUPLICATE
    joined = intake.offer(pod("web-7d4b9c-b"), Symptom.OOM_KILLED)
    assert joined.verdict == Verdict.ATTACH and joined.group is first.group


def test_cooldown_then_window() -> None:
    clock = Clock()
    intake = Intake(clock, cooldown_seconds=300, window_seconds=60)
    assert intake.offer(pod("web-7d4b9c-a"), Symptom.CRASH_LOOP).decide
    clock.advance(59)
    assert intake.offer(pod("web-7d4b9c-b"), Symptom.CRASH_LOOP).verdict == Verdict.ATTACH
    clock.advance(2)  # past the window, within the cooldown
    assert intake.offer(pod("web-7d4b9c-c"), Symptom.CRASH_LOOP).verdict == Verdict.COOLDOWN
    clock.advance(300)  # past the cooldown: decided again
    assert intake.offer(pod("web-7d4b9c-c"), Symptom.CRASH_LOOP).decide


def test_forget_reopens_a_group() -> None:
    intake = Intake(Clock())
    first = intake.offer(pod("web-7d4b9c-a"), Symptom.CRASH_LOOP)
    intake.forget(first.group.key)
    assert intake.offer(pod("web-7d4b9c-b"), Symptom.CRASH_LOOP).decide


def test_memory_is_bounded() -> None:
    clock = Clock()
    intake = Intake(clock, cooldown_seconds=10, window_seconds=10, max_groups=50)
    for i in range(200):
        intake.offer(pod(f"p{i}", owner=None, template_hash=None), Symptom.CRASH_LOOP)
    assert len(intake) <= 50
    clock.advance(11)
    intake.offer(pod("late", owner=None, template_hash=None), Symptom.CRASH_LOOP)
    assert len(intake) == 1


def test_healthy_is_refused() -> None:
    with pytest.raises(ValueError):
        Intake(Clock()).offer(pod("x"), Symptom.HEALTHY)
