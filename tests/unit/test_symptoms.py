"""Symptom detection follows section 2 of the incident contract, precedence included."""

from __future__ import annotations

from datetime import datetime

import pytest

from sre_agent.core.symptoms import PRECEDENCE, Thresholds, detect, matching_symptoms
from sre_agent.domain import Symptom
from tests.unit.podfactory import event, node, pod, running, terminated, waiting

NOW = datetime.fromisoformat("2026-11-20T10:00:00+00:00")
NOT_READY = [{"type": "Ready", "status": "False", "lastTransitionTime": "2026-11-20T09:50:00Z"}]


def test_healthy_running_pod_opens_no_incident() -> None:
    assert detect(pod(statuses=[running()]), now=NOW) == Symptom.HEALTHY


def test_crash_loop() -> None:
    p = pod(statuses=[waiting("CrashLoopBackOff", "back-off 5m0s", 7, terminated())])
    assert detect(p, now=NOW) == Symptom.CRASH_LOOP


def test_oom_outranks_crash_loop() -> None:
    p = pod(statuses=[waiting("CrashLoopBackOff", "", 7, terminated("OOMKilled", 137))])
    assert matching_symptoms(p, now=NOW) >= {Symptom.OOM_KILLED, Symptom.CRASH_LOOP}
    assert detect(p, now=NOW) == Symptom.OOM_KILLED


@pytest.mark.parametrize("reason", ["ImagePullBackOff", "ErrImagePull", "InvalidImageName"])
def test_image_pull(reason: str) -> None:
    assert detect(pod(phase="Pending", statuses=[waiting(reason)]), now=NOW) == Symptom.IMAGE_PULL


@pytest.mark.parametrize("reason", ["CreateContainerConfigError", "CreateContainerError"])
def test_config_error(reason: str) -> None:
    p = pod(phase="Pending", statuses=[waiting(reason, 'secret "db" not found')])
    assert detect(p, now=NOW) == Symptom.CONFIG_ERROR


def test_init_container_failure_by_exit_code_and_by_crash_loop() -> None:
    failed = {"name": "migrate", "ready": False, "restartCount": 0, "state": {"terminated": terminated("Error", 2)}}
    looping = {"name": "wait-db", "ready": False, "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
    main = [waiting("PodInitializing")]
    assert detect(pod(phase="Pending", statuses=main, init_statuses=[failed]), now=NOW) == Symptom.INIT_FAILURE
    assert detect(pod(phase="Pending", statuses=main, init_statuses=[looping]), now=NOW) == Symptom.INIT_FAILURE


def test_init_container_that_succeeded_is_not_a_failure() -> None:
    done = {"name": "migrate", "ready": True, "restartCount": 0, "state": {"terminated": terminated("Completed", 0)}}
    assert detect(pod(statuses=[running()], init_statuses=[done]), now=NOW) == Symptom.HEALTHY


def test_unschedulable() -> None:
    conds = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes..."}]
    assert detect(pod(phase="Pending", node=None, conditions=conds), now=NOW) == Symptom.UNSCHEDULABLE


def test_failed_mount_needs_the_mount_events() -> None:
    p = pod(phase="Pending", statuses=[waiting("ContainerCreating")])
    assert detect(p, now=NOW) == Symptom.HEALTHY
    events = [event("FailedMount", "MountVolume.SetUp failed for volume \"data\" : ...")]
    assert detect(p, events, now=NOW) == Symptom.FAILED_MOUNT


def test_evicted() -> None:
    p = pod(phase="Failed", statuses=[], reason="Evicted", message="The node was low on resource: memory.")
    assert detect(p, now=NOW) == Symptom.EVICTED


def test_node_not_ready_from_node_or_terminating_pod() -> None:
    p = pod(statuses=[running()])
    assert detect(p, node=node(ready="Unknown"), now=NOW) == Symptom.NODE_NOT_READY
    stuck = pod(statuses=[running()])
    stuck["metadata"]["deletionTimestamp"] = "2026-11-20T09:30:00Z"
    assert detect(stuck, now=NOW) == Symptom.NODE_NOT_READY


def test_probe_failure_needs_time_and_unhealthy_events() -> None:
    p = pod(statuses=[running(ready=False)], conditions=NOT_READY)
    unhealthy = [event("Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 503")]
    assert detect(p, now=NOW) == Symptom.HEALTHY  # no Unhealthy events
    assert detect(p, unhealthy, now=NOW) == Symptom.PROBE_FAILURE
    early = datetime.fromisoformat("2026-11-20T09:51:00+00:00")  # only 60 s not ready
    assert detect(p, unhealthy, now=early) == Symptom.HEALTHY
    assert detect(p, unhealthy, now=early, thresholds=Thresholds(probe_failure_seconds=30)) == Symptom.PROBE_FAILURE


def test_high_restarts_counts_only_recent_restarts() -> None:
    recent = pod(statuses=[running(restarts=9, last=terminated("Error", 2, "2026-11-20T09:30:00Z"))])
    old = pod(statuses=[running(restarts=9, last=terminated("Error", 2, "2026-11-19T09:30:00Z"))])
    few = pod(statuses=[running(restarts=2, last=terminated("Error", 2))])
    assert detect(recent, now=NOW) == Symptom.HIGH_RESTARTS
    assert detect(old, now=NOW) == Symptom.HEALTHY
    assert detect(few, now=NOW) == Symptom.HEALTHY
    assert detect(few, now=NOW, thresholds=Thresholds(high_restarts=2)) == Symptom.HIGH_RESTARTS


def test_precedence_order_is_the_contracts() -> None:
    assert [s.value for s in PRECEDENCE] == [
        "OOMKilled", "ImagePullBackOff", "CreateContainerConfigError", "InitContainerFailure", "Unschedulable",
        "FailedMount", "Evicted", "NodeNotReady", "ProbeFailure", "CrashLoopBackOff", "HighRestarts",
    ]  # fmt: skip


def test_garbage_pod_does_not_crash_detection() -> None:
    weird = {"metadata": {}, "status": {"containerStatuses": [None, "x", {"state": "nope"}]}}
    assert detect(weird, now=NOW) == Symptom.HEALTHY
