"""Correlated incidents (pure): workloads failing on one dead dependency share one decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sre_agent.core.correlation import (
    AFFECTED_ANNOTATION,
    DEPENDENCY_ANNOTATION,
    MAX_WORKLOADS,
    Correlator,
    annotations_for,
    dependency_key,
)
from sre_agent.domain import Evidence, ObjectRef, Symptom

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def evidence(*deps: dict[str, object]) -> Evidence:
    return Evidence(
        symptom=Symptom.CRASH_LOOP, pod=ObjectRef("Pod", "api-1", "shop"), owner=None, node="node-a",
        images=(), signals=(), excerpts=(), facts={"dependencies": list(deps)} if deps else {},
    )  # fmt: skip


def test_only_a_dependency_with_no_ready_endpoints_correlates() -> None:
    assert dependency_key(evidence({"service": "shop/orders-db", "ready_endpoints": 0})) == "shop/orders-db"
    assert dependency_key(evidence({"service": "shop/orders-db", "ready_endpoints": 2})) == ""
    assert dependency_key(evidence()) == ""
    assert dependency_key(evidence({"service": 3, "ready_endpoints": 0}, "junk")) == ""  # type: ignore[arg-type]


def test_ten_workloads_on_one_database_join_the_first_decision() -> None:
    c = Correlator(window_seconds=600)
    assert c.join("shop", "shop/orders-db", "Deployment/shop/api-0", T0) is None  # nobody decided yet
    c.open("shop", "shop/orders-db", "api-0-abc-1", "Deployment/shop/api-0", T0, "PendingApproval")
    for i in range(1, 10):
        group = c.join("shop", "shop/orders-db", f"Deployment/shop/api-{i}", T0 + timedelta(seconds=i))
        assert group is not None and group.decision == "api-0-abc-1"
    again = c.join("shop", "shop/orders-db", "Deployment/shop/api-3", T0 + timedelta(seconds=30))
    assert again is not None and len(again.workloads) == 10  # a workload is listed once
    assert again.annotation().startswith("Deployment/shop/api-0, Deployment/shop/api-1")


def test_groups_never_span_namespaces_or_outlive_the_window() -> None:
    c = Correlator(window_seconds=600)
    c.open("shop", "shop/orders-db", "d1", "Deployment/shop/api", T0)
    assert c.join("billing", "shop/orders-db", "Deployment/billing/api", T0) is None
    assert c.join("shop", "shop/orders-db", "Deployment/shop/web", T0 + timedelta(seconds=600)) is None
    assert len(c) == 0  # the expired group is gone


def test_groups_and_their_lists_are_bounded() -> None:
    c = Correlator(max_groups=3)
    for i in range(5):
        c.open("shop", f"shop/db-{i}", f"d{i}", "w", T0)
    assert len(c) == 3 and c.join("shop", "shop/db-0", "x", T0) is None
    group = c.open("shop", "shop/db", "d", "w-0", T0)
    for i in range(1, MAX_WORKLOADS + 5):
        group.add(f"w-{i}")
    assert len(group.workloads) == MAX_WORKLOADS and group.annotation().endswith("(+5 more)")


def recorded(name: str, created: datetime, **annotations: str) -> dict[str, object]:
    return {
        "metadata": {"name": name, "namespace": "shop", "creationTimestamp": created.isoformat().replace("+00:00", "Z"),
                     "annotations": annotations},
        "status": {"phase": "PendingApproval"},
    }  # fmt: skip


def test_a_restarted_operator_reopens_the_group_from_the_decision() -> None:
    evidence_ = evidence({"service": "shop/orders-db", "ready_endpoints": 0})
    annotations = annotations_for(evidence_, "Deployment/shop/api-0")
    assert annotations == {DEPENDENCY_ANNOTATION: "shop/orders-db", AFFECTED_ANNOTATION: "Deployment/shop/api-0"}
    annotations[AFFECTED_ANNOTATION] += ", Deployment/shop/api-1, Deployment/other/x, junk"
    c = Correlator(window_seconds=600)
    group = c.restore(recorded("api-0-1", T0, **annotations), T0 + timedelta(seconds=60))
    assert group is not None and group.phase == "PendingApproval"
    assert group.workloads == ["Deployment/shop/api-0", "Deployment/shop/api-1"]  # only its own namespace
    joined = c.join("shop", "shop/orders-db", "Deployment/shop/api-2", T0 + timedelta(seconds=61))
    assert joined is not None and joined.decision == "api-0-1"
    # Too old, malformed, or without the annotation: nothing reopens.
    assert Correlator(600).restore(recorded("old", T0, **annotations), T0 + timedelta(seconds=601)) is None
    assert Correlator(600).restore(recorded("plain", T0), T0) is None
    assert Correlator(600).restore({"metadata": "x"}, T0) is None
    assert Correlator(600).restore(recorded("bad-time", T0, **annotations) | {"metadata": {"name": "x"}}, T0) is None
