"""Rules that read the structure of what software prints, not its keywords (issue 10).

Flags and config echoes are not events; missing-setting messages are config; the scheduler's
per-reason node counts decide between capacity and constraints; node-level events belong to
the node. Every message below is worded as the real software prints it.
"""

from __future__ import annotations

from typing import Any

import pytest

from sre_agent.core.evidence import extract, scan_text
from sre_agent.core.redaction import Redactor
from sre_agent.core.rules import RuleReasoner, scheduler_node_counts, scheduler_reasons
from sre_agent.core.symptoms import detect
from sre_agent.domain import Category, IncidentContext, Symptom
from tests.unit.podfactory import event, pod, terminated, waiting
from tests.unit.test_evidence_and_rules import NOW, crashloop


def diagnose(ctx: IncidentContext) -> tuple[Symptom, Category, set[str]]:
    symptom = detect(ctx.pod, ctx.events, ctx.node, NOW)
    evidence = extract(ctx, symptom, Redactor.for_pod(ctx.pod))
    return symptom, RuleReasoner().diagnose_now(evidence).category, {s.kind for s in evidence.signals}


JVM_START = (
    "Picked up JAVA_TOOL_OPTIONS: -XX:+ExitOnOutOfMemoryError -XX:MaxRAMPercentage=75.0 "
    "-XX:+HeapDumpOnOutOfMemoryError -XX:HeapDumpPath=/tmp"
)


def test_a_jvm_line_that_mentions_the_oom_flag_is_not_an_oom() -> None:
    log = (
        f"{JVM_START}\n"
        "Exception in thread \"main\" java.lang.IllegalStateException: ledger checksum mismatch\n"
        "\tat com.acme.Ledger.verify(Ledger.java:88)"
    )
    symptom, category, kinds = diagnose(IncidentContext(**crashloop(log)))
    assert symptom == Symptom.CRASH_LOOP
    assert "oom_killed" not in kinds
    assert category == Category.APP_ERROR


def test_the_flag_alone_is_no_evidence_of_memory_trouble() -> None:
    _, category, kinds = diagnose(IncidentContext(**crashloop(JVM_START)))
    assert "oom_killed" not in kinds and category != Category.OOM


def test_the_oom_the_flag_reports_is_still_an_oom() -> None:
    log = f"{JVM_START}\nTerminating due to java.lang.OutOfMemoryError: Java heap space"
    _, category, kinds = diagnose(IncidentContext(**crashloop(log)))
    assert "oom_killed" in kinds and category == Category.OOM


@pytest.mark.parametrize(
    ("line", "kept"),
    [
        ("VM flags: -XX:+ExitOnOutOfMemoryError", "VM flags:"),
        ("bool ExitOnOutOfMemoryError = true {product} {command line}", "bool {product} {command line}"),
        ("Error: getaddrinfo ENOTFOUND redis-master", "Error: getaddrinfo ENOTFOUND redis-master"),
        ("dial tcp 10.96.12.4:5432: connect: connection refused", "dial tcp 10.96.12.4:5432: connect: connection refused"),
    ],
)
def test_scan_text_drops_flags_and_echoes_only(line: str, kept: str) -> None:
    assert " ".join(scan_text(line).split()) == kept


@pytest.mark.parametrize(
    "log",
    [
        "ERROR: required setting DATABASE_URL is missing",
        "config: required setting \"payments.endpoint\" is not set",
        "Traceback (most recent call last):\n  File \"/app/main.py\", line 12, in <module>\n    settings = Settings()\n"
        "pydantic_core._pydantic_core.ValidationError: 1 validation error for Settings\ndatabase_url\n"
        "  Field required [type=missing, input_value={}, input_type=dict]\n"
        "    For further information visit https://errors.pydantic.dev/2.5/v/missing",
        "pydantic.error_wrappers.ValidationError: 1 validation error for Settings\nredis_url\n"
        "  field required (type=value_error.missing)",
        "2026/11/20 09:58:01 required key ORDERS_DB_DSN missing value",
    ],
)
def test_missing_settings_are_bad_config(log: str) -> None:
    _, category, kinds = diagnose(IncidentContext(**crashloop(log)))
    assert "missing_config" in kinds
    assert category == Category.BAD_CONFIG


ISSUE_MESSAGE = (
    "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, "
    "2 Insufficient cpu. preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, "
    "2 No preemption victims found for incoming pod."
)


def test_scheduler_reasons_keep_braces_and_skip_preemption() -> None:
    assert scheduler_reasons(ISSUE_MESSAGE) == [
        (1, "node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"),
        (2, "Insufficient cpu"),
    ]
    assert scheduler_reasons("0/4 nodes are available: 4 Insufficient nvidia.com/gpu.") == [
        (4, "Insufficient nvidia.com/gpu")
    ]
    assert scheduler_reasons("pod has unbound immediate PersistentVolumeClaims") == []


@pytest.mark.parametrize(
    ("message", "counts", "category"),
    [
        (ISSUE_MESSAGE, (2, 0), Category.INSUFFICIENT_CAPACITY),
        # The pod selects GPU nodes: those pass its selector and lack only GPUs.
        ("0/9 nodes are available: 3 Insufficient nvidia.com/gpu, 6 node(s) didn't match Pod's node affinity/selector. "
         "preemption: 0/9 nodes are available: 3 No preemption victims found for incoming pod, 6 Preemption is not "
         "helpful for scheduling.", (3, 6), Category.INSUFFICIENT_CAPACITY),
        ("0/4 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, "
         "3 node(s) had untolerated taint {dedicated: analytics}. preemption: 0/4 nodes are available: 4 Preemption "
         "is not helpful for scheduling.", (0, 3), Category.SCHEDULING_CONSTRAINT),
        ("0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. preemption: 0/3 nodes are "
         "available: 3 No preemption victims found for incoming pod.", (0, 3), Category.SCHEDULING_CONSTRAINT),
    ],
)  # fmt: skip
def test_node_counts_decide_capacity_or_constraint(
    message: str, counts: tuple[int, int], category: Category
) -> None:
    assert scheduler_node_counts(message) == counts
    conds = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}]
    p = pod(phase="Pending", node=None, conditions=conds)
    ev = (event("FailedScheduling", message, component="default-scheduler"),)
    assert diagnose(IncidentContext(pod=p, events=ev))[:2] == (Symptom.UNSCHEDULABLE, category)


def node_event(reason: str, message: str) -> dict[str, Any]:
    e = event(reason, message)
    e["involvedObject"] = {"kind": "Node", "name": "node-a", "uid": "node-a"}
    return e


SYSTEM_OOM = node_event("SystemOOM", "System OOM encountered, victim process: java, pid: 4242")


def oom_pod(memory_limit: str | None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "app", "image": "registry.example.com/shop/checkout:1.4.2"}
    if memory_limit:
        container["resources"] = {"limits": {"memory": memory_limit}}
    return pod(containers=[container], statuses=[waiting("CrashLoopBackOff", "", 3, terminated("OOMKilled", 137))])


def test_a_node_oom_belongs_to_the_node_when_the_container_has_no_limit() -> None:
    symptom, category, kinds = diagnose(IncidentContext(pod=oom_pod(None), events=(SYSTEM_OOM,)))
    assert symptom == Symptom.OOM_KILLED
    assert "node_pressure" in kinds
    assert category == Category.NODE_FAILURE


def test_a_container_over_its_own_limit_is_still_an_oom_on_a_node_that_also_ran_out() -> None:
    _, category, _ = diagnose(IncidentContext(pod=oom_pod("512Mi"), events=(SYSTEM_OOM,)))
    assert category == Category.OOM


def test_a_node_event_is_never_read_as_the_pods_own() -> None:
    ctx = IncidentContext(**{**crashloop("Error: something failed"), "events": (SYSTEM_OOM,)})
    _, category, kinds = diagnose(ctx)
    assert "oom_killed" not in kinds
    assert category != Category.OOM
