"""Workload-level symptoms (issue 10): a failed Job and a stalled rollout are incidents of their own.

Pure. The objects are shaped as the Job and Deployment controllers write them (Kubernetes 1.31+:
a failed Job has FailureTarget and Failed conditions; a stalled Deployment keeps Available=True
and sets Progressing=False/ProgressDeadlineExceeded; a ResourceQuota refusal is a FailedCreate
Event on the ReplicaSet).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from sre_agent.adapters.recorded import IncidentFileError, parse_incident
from sre_agent.core.evidence import extract
from sre_agent.core.intake import Intake, OwnerKey, Verdict, owner_key, workload_key
from sre_agent.core.lifecycle import (
    CAUSE_OF,
    WORKLOAD_CAUSES,
    Cause,
    DecisionMemory,
    MemoryKey,
    Phase,
    Recall,
    Remembered,
)
from sre_agent.core.pipeline import Pipeline
from sre_agent.core.policy import (
    ActionLedger,
    ActionRequest,
    Suppression,
    default_policy,
    evaluate,
    load_policy,
)
from sre_agent.core.redaction import Redactor
from sre_agent.core.rules import RuleReasoner
from sre_agent.core.symptoms import PRECEDENCE, WORKLOAD_PRECEDENCE, detect_incident, workload_symptom
from sre_agent.domain import (
    CREATE_ALERT,
    PENDING_EVENT_REASON,
    RESTART_POD,
    ROLLBACK_DEPLOYMENT,
    Category,
    IncidentContext,
    ObjectRef,
    ProposedAction,
    Symptom,
)
from tests.unit.podfactory import pod, running, terminated, waiting

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
AUTOPILOT = load_policy(ROOT / "policies" / "autopilot.yaml")


class FixedClock:
    def __init__(self, now: datetime = NOW) -> None:
        self.at = now

    def now(self) -> datetime:
        return self.at


def condition(ctype: str, status: str, reason: str, message: str, at: str = "2026-11-20T09:59:00Z") -> dict[str, Any]:
    return {"type": ctype, "status": status, "reason": reason, "message": message,
            "lastProbeTime": at, "lastTransitionTime": at}  # fmt: skip


def failed_job(reason: str = "BackoffLimitExceeded", at: str = "2026-11-20T09:59:00Z", name: str = "nightly-report") -> dict[str, Any]:
    message = {"BackoffLimitExceeded": "Job has reached the specified backoff limit",
               "DeadlineExceeded": "Job was active longer than specified deadline"}.get(reason, "failed")  # fmt: skip
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": "shop", "uid": "job-uid"},
        "spec": {"backoffLimit": 1, "template": {"spec": {"restartPolicy": "Never",
                 "containers": [{"name": "report", "image": "registry.example.com/shop/report:2.0"}]}}},
        "status": {"failed": 2, "startTime": "2026-11-20T09:58:00Z", "conditions": [
            condition("FailureTarget", "True", reason, message, at), condition("Failed", "True", reason, message, at)]},
    }  # fmt: skip


def job_pod(code: int = 3) -> dict[str, Any]:
    """A pod of the Job as the kubelet leaves it with restartPolicy Never: Failed, exit code, no restart."""
    p = pod(name="nightly-report-x7k2q", phase="Failed", statuses=[{
        "name": "app", "ready": False, "restartCount": 0, "image": "registry.example.com/shop/report:2.0",
        "state": {"terminated": {"exitCode": code, "reason": "Error", "startedAt": "2026-11-20T09:58:30Z",
                                 "finishedAt": "2026-11-20T09:58:31Z"}}}])  # fmt: skip
    p["spec"]["restartPolicy"] = "Never"
    p["metadata"]["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": "nightly-report",
                                         "uid": "job-uid", "controller": True}]  # fmt: skip
    return p


def stalled_deployment(paused: bool = False) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "checkout-api", "namespace": "shop", "uid": "dep-uid", "generation": 2,
                     "annotations": {"deployment.kubernetes.io/revision": "2"}},
        "spec": {"replicas": 2, "paused": paused, "progressDeadlineSeconds": 15,
                 "selector": {"matchLabels": {"app": "checkout-api"}},
                 "template": {"metadata": {"labels": {"app": "checkout-api"}},
                              "spec": {"containers": [{"name": "app", "image": "registry.example.com/shop/checkout:1.5.0"}]}}},
        "status": {"observedGeneration": 2, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 0, "conditions": [
            condition("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."),
            condition("Progressing", "False", "ProgressDeadlineExceeded",
                      'ReplicaSet "checkout-api-7d9f8b6c4" has timed out progressing.')]},
    }  # fmt: skip


def replicaset(name: str, revision: int, image: str, replicas: int, ready: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": "shop", "uid": f"{name}-uid",
                     "annotations": {"deployment.kubernetes.io/revision": str(revision)},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout-api",
                                          "uid": "dep-uid", "controller": True}]},
        "spec": {"replicas": replicas, "template": {"metadata": {"labels": {"app": "checkout-api"}},
                 "spec": {"containers": [{"name": "app", "image": image}]}}},
        "status": {"replicas": replicas, "readyReplicas": ready},
    }  # fmt: skip


OLD = replicaset("checkout-api-6b8c5d7f9", 1, "registry.example.com/shop/checkout:1.4.2", 2, 2)
NEW = replicaset("checkout-api-7d9f8b6c4", 2, "registry.example.com/shop/checkout:1.5.0", 1, 0)
QUOTA_EVENT = {
    "type": "Warning", "reason": "FailedCreate", "count": 4,
    "message": 'Error creating: pods "checkout-api-7d9f8b6c4-vxq2l" is forbidden: exceeded quota: pods, '
               "requested: pods=1, used: pods=2, limited: pods=2",
    "involvedObject": {"kind": "ReplicaSet", "namespace": "shop", "name": "checkout-api-7d9f8b6c4"},
    "lastTimestamp": "2026-11-20T09:59:30Z",
}  # fmt: skip


# -- detection -------------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["BackoffLimitExceeded", "DeadlineExceeded", "PodFailurePolicy", "MaxFailedIndexesExceeded"])
def test_a_failed_job_is_job_failed_whatever_the_reason(reason: str) -> None:
    assert workload_symptom(failed_job(reason), NOW) == Symptom.JOB_FAILED


def test_a_job_that_failed_long_ago_is_history_not_an_incident() -> None:
    old = failed_job(at="2026-11-19T09:30:00Z")
    assert workload_symptom(old, NOW) == Symptom.HEALTHY
    assert workload_symptom(old, NOW - timedelta(days=1)) == Symptom.JOB_FAILED


def test_running_suspended_and_complete_jobs_are_healthy() -> None:
    job = failed_job()
    job["status"] = {"active": 1}
    assert workload_symptom(job, NOW) == Symptom.HEALTHY
    job["status"] = {"conditions": [condition("Suspended", "True", "JobSuspended", "Job suspended")]}
    assert workload_symptom(job, NOW) == Symptom.HEALTHY
    job["status"] = {"succeeded": 1, "conditions": [condition("Complete", "True", "", "")]}
    assert workload_symptom(job, NOW) == Symptom.HEALTHY
    job["status"] = {"conditions": [condition("Failed", "False", "", "")]}
    assert workload_symptom(job, NOW) == Symptom.HEALTHY


def test_a_deployment_past_its_progress_deadline_is_progress_deadline_exceeded() -> None:
    assert workload_symptom(stalled_deployment(), NOW) == Symptom.PROGRESS_DEADLINE
    assert workload_symptom(stalled_deployment(paused=True), NOW) == Symptom.HEALTHY  # no deadline when paused
    progressing = stalled_deployment()
    progressing["status"]["conditions"][1] = condition(
        "Progressing", "True", "ReplicaSetUpdated", 'ReplicaSet "checkout-api-7d9f8b6c4" is progressing.'
    )
    assert workload_symptom(progressing, NOW) == Symptom.HEALTHY
    done = stalled_deployment()
    done["status"]["conditions"][1] = condition("Progressing", "True", "NewReplicaSetAvailable", "done")
    assert workload_symptom(done, NOW) == Symptom.HEALTHY


@pytest.mark.parametrize("junk", [None, {}, {"kind": "StatefulSet", "status": {"conditions": [
    condition("Progressing", "False", "ProgressDeadlineExceeded", "")]}}, {"kind": "Job", "status": {"conditions": "x"}},
    {"kind": "Deployment", "spec": "x", "status": {"conditions": [None, 3]}}])  # fmt: skip
def test_other_kinds_and_junk_are_healthy(junk: Any) -> None:
    assert workload_symptom(junk, NOW) == Symptom.HEALTHY


def test_pod_level_symptoms_take_precedence_over_the_workload() -> None:
    crashing = pod(name="checkout-api-7d9f8b6c4-x2kqz", statuses=[waiting("CrashLoopBackOff", "back-off", 5, terminated())])
    assert detect_incident(crashing, owner=stalled_deployment(), now=NOW) == Symptom.CRASH_LOOP
    # restartPolicy Never: the Job's pods are just Failed, no pod symptom; the Job's own speaks.
    assert detect_incident(job_pod(), owner=failed_job(), now=NOW) == Symptom.JOB_FAILED
    assert detect_incident({}, owner=stalled_deployment(), now=NOW) == Symptom.PROGRESS_DEADLINE
    unready = pod(name="checkout-api-7d9f8b6c4-x2kqz", statuses=[running(ready=False)])
    assert detect_incident(unready, owner=stalled_deployment(), now=NOW) == Symptom.PROGRESS_DEADLINE
    assert detect_incident(job_pod(), owner=None, now=NOW) == Symptom.HEALTHY
    assert not set(WORKLOAD_PRECEDENCE) & set(PRECEDENCE)


# -- decisions ---------------------------------------------------------------------------------------


async def test_a_failed_job_is_decided_about_the_job_as_an_app_error_never_a_restart() -> None:
    ctx = IncidentContext(
        pod=job_pod(), owner=failed_job(),
        logs={"app": {"current": "loading batch 42\nERROR: cannot parse row 17: unexpected EOF\n"}},
    )  # fmt: skip
    decision = await Pipeline(policy=default_policy(), clock=FixedClock()).decide(ctx)
    assert decision is not None
    ev = decision.evidence
    assert ev.symptom == Symptom.JOB_FAILED
    assert ev.pod == ObjectRef("Job", "nightly-report", "shop", "job-uid", "batch/v1")
    assert decision.diagnosis.category == Category.APP_ERROR
    assert decision.action.name == CREATE_ALERT
    assert "Job shop/nightly-report BackoffLimitExceeded" in decision.diagnosis.reasoning
    # An LLM proposing to restart something for it is blocked: the target is the Job, not a pod.
    request = ActionRequest(ProposedAction(RESTART_POD), ev.pod, ev.owner, ev.node, 0.99)
    verdict = evaluate(AUTOPILOT, request, ActionLedger(), NOW)
    assert verdict.outcome == "blocked" and "restart_pod needs a Pod" in verdict.reason


async def test_a_rollout_refused_by_a_quota_is_insufficient_capacity_about_the_deployment() -> None:
    ctx = IncidentContext(pod={}, owner=stalled_deployment(), events=(QUOTA_EVENT,), related=(OLD, NEW))
    decision = await Pipeline(policy=AUTOPILOT, clock=FixedClock()).decide(ctx)
    assert decision is not None
    assert decision.evidence.symptom == Symptom.PROGRESS_DEADLINE
    assert decision.evidence.pod.kind == "Deployment" and decision.evidence.pod.name == "checkout-api"
    assert decision.evidence.images == ("registry.example.com/shop/checkout:1.5.0",)
    assert decision.diagnosis.category == Category.INSUFFICIENT_CAPACITY
    assert "exceeded quota" in decision.diagnosis.reasoning
    assert decision.action.name == CREATE_ALERT  # more quota is a human's call; a rollback fixes nothing
    assert decision.incident_id == "shop-checkout-api"


async def test_new_pods_never_ready_after_a_rollout_propose_the_rollback_when_the_policy_enables_it() -> None:
    unready = pod(name="checkout-api-7d9f8b6c4-x2kqz", statuses=[running(ready=False)])
    unhealthy = {"type": "Warning", "reason": "Unhealthy", "count": 3,
                 "message": "Readiness probe failed: cat: can't open '/tmp/ready': No such file or directory",
                 "involvedObject": {"kind": "Pod", "name": "checkout-api-7d9f8b6c4-x2kqz", "namespace": "shop"}}  # fmt: skip
    ctx = IncidentContext(pod=unready, owner=stalled_deployment(), events=(unhealthy,), related=(OLD, NEW))
    decision = await Pipeline(policy=AUTOPILOT, clock=FixedClock()).decide(ctx)
    assert decision is not None and decision.evidence.symptom == Symptom.PROGRESS_DEADLINE
    assert decision.action.name == ROLLBACK_DEPLOYMENT
    assert dict(decision.action.parameters) == {
        "namespace": "shop", "name": "checkout-api", "replicaset": "checkout-api-6b8c5d7f9", "revision": "1",
    }  # fmt: skip
    assert decision.verdict.outcome == "needs_approval"
    default = await Pipeline(policy=default_policy(), clock=FixedClock()).decide(ctx)
    assert default is not None and default.action.name == CREATE_ALERT


# -- intake and memory -------------------------------------------------------------------------------


def test_a_workload_is_keyed_as_its_pods_are_and_a_cronjobs_job_by_its_cronjob() -> None:
    assert workload_key(stalled_deployment()) == OwnerKey("shop", "Deployment", "checkout-api")
    assert workload_key(failed_job()) == owner_key(job_pod()) == OwnerKey("shop", "Job", "nightly-report")
    cron = failed_job(name="nightly-report-29371500")
    assert workload_key(cron) == OwnerKey("shop", "CronJob", "nightly-report")


def test_intake_groups_a_workload_by_its_own_cause_with_a_cooldown() -> None:
    clock = FixedClock()
    intake = Intake(clock, cooldown_seconds=300, window_seconds=120)
    first = intake.offer_workload(stalled_deployment(), Symptom.PROGRESS_DEADLINE)
    assert first.decide and first.group.key.cause == Cause.ROLLOUT
    assert intake.offer_workload(stalled_deployment(), Symptom.PROGRESS_DEADLINE).verdict == Verdict.DUPLICATE
    assert intake.offer_workload(failed_job(), Symptom.JOB_FAILED).decide
    clock.at = NOW + timedelta(seconds=301)
    assert intake.offer_workload(stalled_deployment(), Symptom.PROGRESS_DEADLINE).decide
    with pytest.raises(ValueError):
        intake.offer_workload(stalled_deployment(), Symptom.HEALTHY)


def _memory_with(cause: Cause, phase: Phase | None) -> tuple[DecisionMemory, str]:
    memory = DecisionMemory(Suppression())
    workload = "Deployment/shop/checkout-api"
    memory.observe(MemoryKey.of("shop", workload, cause), Remembered("checkout-api-1234abcd-1", phase, NOW))
    return memory, workload


@pytest.mark.parametrize("pod_cause", [Cause.CRASH, Cause.IMAGE, Cause.PROBE, Cause.SCHEDULING])
def test_a_workload_incident_joins_an_open_pod_level_decision_of_the_same_workload(pod_cause: Cause) -> None:
    memory, workload = _memory_with(pod_cause, Phase.PENDING_APPROVAL)
    answer = memory.recall(MemoryKey.of("shop", workload, Cause.ROLLOUT), NOW)
    assert (answer.recall, answer.decision) == (Recall.OPEN, "checkout-api-1234abcd-1")
    # ... and the other way round: the pods of a stalled rollout join its open decision.
    memory, workload = _memory_with(Cause.ROLLOUT, Phase.APPROVED)
    assert memory.recall(MemoryKey.of("shop", workload, pod_cause), NOW).recall == Recall.OPEN


def test_only_open_decisions_of_the_same_workload_on_the_other_level_join() -> None:
    memory, workload = _memory_with(Cause.CRASH, Phase.REJECTED)  # closed: suppresses only its own cause
    assert memory.recall(MemoryKey.of("shop", workload, Cause.ROLLOUT), NOW).recall == Recall.NEW
    memory, workload = _memory_with(Cause.CRASH, Phase.PENDING_APPROVAL)
    assert memory.recall(MemoryKey.of("shop", "Deployment/shop/other", Cause.ROLLOUT), NOW).recall == Recall.NEW
    assert memory.recall(MemoryKey.of("prod", workload, Cause.ROLLOUT), NOW).recall == Recall.NEW
    # Two pod-level causes stay independent, as before.
    assert memory.recall(MemoryKey.of("shop", workload, Cause.IMAGE), NOW).recall == Recall.NEW
    memory, workload = _memory_with(Cause.JOB, Phase.PENDING_APPROVAL)
    assert memory.recall(MemoryKey.of("shop", workload, Cause.ROLLOUT), NOW).recall == Recall.NEW


def test_being_recorded_counts_as_open_across_levels() -> None:
    memory, workload = _memory_with(Cause.CRASH, None)
    assert memory.recall(MemoryKey.of("shop", workload, Cause.ROLLOUT), NOW).recall == Recall.OPEN
    later = NOW + timedelta(minutes=6)
    assert memory.recall(MemoryKey.of("shop", workload, Cause.ROLLOUT), later).recall == Recall.NEW


# -- format ------------------------------------------------------------------------------------------


def test_an_incident_file_may_carry_a_workload_without_a_pod() -> None:
    rec = parse_incident({"id": "rollout-quota", "owner": stalled_deployment(), "events": [QUOTA_EVENT]}, "x.yaml")
    assert rec.context.pod == {} and rec.context.namespace == "shop"
    with pytest.raises(IncidentFileError, match=r"^x\.yaml: missing field pod: an incident needs a pod, or an owner"):
        parse_incident({"id": "nothing"}, "x.yaml")


def test_every_symptom_is_named_alike_in_crd_schema_docs_and_prompt() -> None:
    """Symptom is the one list: the CRD's enum, the incident schema, the docs and the prompt follow it."""
    names = [s.value for s in Symptom]
    crd = yaml.safe_load((ROOT / "crds" / "agentdecisions.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["symptom"]["enum"] == [n for n in names if n != Symptom.HEALTHY]
    schema = json.loads((ROOT / "sre_agent" / "schemas" / "incident.schema.json").read_text())
    assert schema["$defs"]["symptom"]["enum"] == names
    docs = (ROOT / "docs" / "incident-format.md").read_text()
    symptom_list = docs.split("`expected.symptom` is one of")[1].split("(no incident)")[0]
    assert re.findall(r"`(\w+)`", symptom_list) == names
    system = (ROOT / "prompts" / "system.md").read_text()
    for symptom in (Symptom.PROGRESS_DEADLINE, Symptom.JOB_FAILED):
        assert symptom.value in system and symptom.value in spec["symptom"]["description"]
    assert set(CAUSE_OF) == set(Symptom) - {Symptom.HEALTHY}
    assert {CAUSE_OF[s] for s in WORKLOAD_PRECEDENCE} == WORKLOAD_CAUSES


def test_the_agents_own_approval_request_is_never_read_back_as_evidence() -> None:
    pending = {"type": "Warning", "reason": PENDING_EVENT_REASON, "count": 1,
               "message": "AgentDecision shop/x-1 waits for approval: rollback_deployment on Deployment shop/checkout-api "
                          "(ProgressDeadlineExceeded, app_error, confidence 0.95): connection refused, OOMKilled",
               "involvedObject": {"kind": "Deployment", "namespace": "shop", "name": "checkout-api"}}  # fmt: skip
    ctx = IncidentContext(pod={}, owner=stalled_deployment(), events=(pending,))
    ev = extract(ctx, Symptom.PROGRESS_DEADLINE, Redactor.for_context(ctx))
    assert not any("waits for approval" in x for x in ev.excerpts)
    assert {s.kind for s in ev.signals} == {"rollout_stalled"}


def test_an_exec_probe_checking_a_file_that_is_not_there_is_a_probe_question() -> None:
    unready = pod(name="checkout-api-7d9f8b6c4-x2kqz", statuses=[running(ready=False)])
    message = "Readiness probe failed: cat: can't open '/tmp/ready': No such file or directory"
    unhealthy = {"type": "Warning", "reason": "Unhealthy", "count": 3, "message": message,
                 "involvedObject": {"kind": "Pod", "name": "checkout-api-7d9f8b6c4-x2kqz", "namespace": "shop"}}  # fmt: skip
    ctx = IncidentContext(pod=unready, owner=stalled_deployment(), events=(unhealthy,))
    ev = extract(ctx, Symptom.PROGRESS_DEADLINE, Redactor.for_context(ctx))
    assert ev.details("probe_missing_file") == [message]
    assert RuleReasoner().diagnose_now(ev).category == Category.PROBE_MISCONFIGURED


def test_a_job_stopped_at_its_deadline_is_not_blamed_on_its_exit_code() -> None:
    killed = job_pod(code=143)  # the Job controller stops its pods at activeDeadlineSeconds
    ctx = IncidentContext(pod=killed, owner=failed_job("DeadlineExceeded"))
    ev = extract(ctx, Symptom.JOB_FAILED, Redactor.for_context(ctx))
    assert ev.has("exit_code")
    found = RuleReasoner().diagnose_now(ev)
    assert found.category == Category.UNKNOWN and "DeadlineExceeded" in found.reasoning
    assert found.action.name == CREATE_ALERT
    # ... while a program that failed by itself, however it died, is the app's error.
    ctx = IncidentContext(pod=job_pod(code=3), owner=failed_job("BackoffLimitExceeded"))
    assert RuleReasoner().diagnose_now(extract(ctx, Symptom.JOB_FAILED, Redactor.for_context(ctx))).category == (
        Category.APP_ERROR
    )
