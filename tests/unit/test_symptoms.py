"""Symptom detection follows section 2 of the incident contract, precedence included."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from sre_agent.core.symptoms import (
    PRECEDENCE,
    Thresholds,
    detect,
    matching_symptoms,
    needs_events,
    recheck_at,
)
from sre_agent.domain import Symptom
from tests.unit.podfactory import clone, event, node, pod, running, terminated, waiting

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
    unhealthy[0]["firstTimestamp"] = "2026-11-20T09:50:00Z"  # failing since Ready went False
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


# ---------------------------------------------------------------- a crash loop as a real kubelet shows it


def _sample(state: dict[str, Any], restarts: int, last_run: tuple[str, str] | None = None) -> dict[str, Any]:
    s: dict[str, Any] = {"name": "app", "ready": False, "restartCount": restarts, "state": state}
    if last_run:
        s["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": last_run[0],
                                         "finishedAt": last_run[1]}}  # fmt: skip
    return s


def test_a_real_kubelet_crash_loop_is_a_crash_loop_at_every_moment_of_its_cycle() -> None:
    """Back-off 40 s after restart 3: terminated for most of it, waiting briefly, running a few seconds."""
    died = {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": "2026-11-20T09:59:10Z",
                           "finishedAt": "2026-11-20T09:59:12Z"}}  # fmt: skip
    during_backoff = pod(statuses=[_sample(died, 3, ("2026-11-20T09:58:30Z", "2026-11-20T09:58:32Z"))])
    waiting_briefly = pod(statuses=[_sample({"waiting": {"reason": "CrashLoopBackOff"}}, 3)])
    last_run = ("2026-11-20T09:59:10Z", "2026-11-20T09:59:12Z")
    running_again = pod(statuses=[_sample({"running": {"startedAt": "2026-11-20T09:59:52Z"}}, 4, last_run)])
    for sample in (during_backoff, waiting_briefly, running_again):
        assert detect(sample, now=NOW) == Symptom.CRASH_LOOP


def test_a_container_that_crashed_once_long_ago_or_after_a_long_run_is_not_a_crash_loop() -> None:
    long_ago = pod(statuses=[_sample({"running": {"startedAt": "2026-11-20T09:00:10Z"}}, 1,
                                     ("2026-11-20T09:00:00Z", "2026-11-20T09:00:02Z"))])  # fmt: skip
    long_run = pod(statuses=[_sample({"running": {"startedAt": "2026-11-20T09:59:40Z"}}, 1,
                                     ("2026-11-20T09:20:00Z", "2026-11-20T09:59:30Z"))])  # fmt: skip
    assert detect(long_ago, now=NOW) == Symptom.HEALTHY
    assert detect(long_run, now=NOW) == Symptom.HEALTHY


def test_terminated_containers_of_pods_that_never_restart_are_not_crash_loops() -> None:
    done = {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": "2026-11-20T09:59:00Z"}}
    job = pod(phase="Failed", statuses=[_sample(done, 0)])
    job["spec"]["restartPolicy"] = "Never"
    assert detect(job, now=NOW) == Symptom.HEALTHY
    completed = pod(statuses=[_sample({"terminated": {"exitCode": 0, "reason": "Completed"}}, 0)])
    assert detect(completed, now=NOW) == Symptom.HEALTHY


def test_a_failing_init_container_between_retries_is_an_init_failure() -> None:
    retrying = _sample({"running": {"startedAt": "2026-11-20T09:59:50Z"}}, 2,
                       ("2026-11-20T09:59:20Z", "2026-11-20T09:59:22Z"))  # fmt: skip
    retrying["name"] = "wait-db"
    p = pod(phase="Pending", statuses=[waiting("PodInitializing")], init_statuses=[retrying])
    assert detect(p, now=NOW) == Symptom.INIT_FAILURE


def test_a_flapping_readiness_probe_is_caught_by_its_unhealthy_history() -> None:
    """Ready went False a minute ago (it flaps), but the probe has failed for 20 minutes."""
    flapped = [{"type": "Ready", "status": "False", "lastTransitionTime": "2026-11-20T09:59:00Z"}]
    p = pod(statuses=[running(ready=False)], conditions=flapped)
    history = event("Unhealthy", "Readiness probe failed: context deadline exceeded", count=40)
    history["firstTimestamp"], history["lastTimestamp"] = "2026-11-20T09:40:00Z", "2026-11-20T09:59:50Z"
    assert detect(p, [history], now=NOW) == Symptom.PROBE_FAILURE
    fresh = {**history, "firstTimestamp": "2026-11-20T09:59:00Z"}  # failing for a minute only
    assert detect(p, [fresh], now=NOW) == Symptom.HEALTHY
    stale = {**history, "lastTimestamp": "2026-11-20T09:45:00Z"}  # stopped failing 15 minutes ago
    assert detect(p, [stale], now=NOW) == Symptom.HEALTHY
    series = {**history, "count": None, "firstTimestamp": None, "lastTimestamp": None,
              "eventTime": "2026-11-20T09:40:00.000000Z",
              "series": {"count": 40, "lastObservedTime": "2026-11-20T09:59:50.000000Z"}}  # fmt: skip
    assert detect(p, [series], now=NOW) == Symptom.PROBE_FAILURE


def test_only_pods_that_may_be_probe_failure_or_failed_mount_need_their_events() -> None:
    unready = pod(statuses=[running(ready=False)], conditions=NOT_READY)
    assert needs_events(unready, NOW)
    starting = pod(statuses=[{**running(ready=False), "state": {"running": {"startedAt": "2026-11-20T09:59:55Z"}}}],
                   conditions=NOT_READY)  # fmt: skip
    assert not needs_events(starting, NOW)  # start-up grace
    assert not needs_events(pod(statuses=[running()]), NOW)
    creating = pod(phase="Pending", statuses=[waiting("ContainerCreating")],
                   conditions=[{"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-20T09:58:00Z"}])  # fmt: skip
    assert needs_events(creating, NOW)
    just_scheduled = clone(creating)
    just_scheduled["status"]["conditions"][0]["lastTransitionTime"] = "2026-11-20T09:59:50Z"
    assert not needs_events(just_scheduled, NOW)
    assert not needs_events(pod(statuses=[waiting("CrashLoopBackOff", "", 3)]), NOW)


def test_pods_that_may_turn_into_a_symptom_with_time_alone_are_rechecked_then() -> None:
    just_unready = [{"type": "Ready", "status": "False", "lastTransitionTime": "2026-11-20T09:59:30Z"}]
    p = pod(statuses=[running(ready=False)], conditions=just_unready)
    assert recheck_at(p, NOW) == datetime.fromisoformat("2026-11-20T10:01:30+00:00")  # + probe threshold
    creating = pod(phase="Pending", statuses=[waiting("ContainerCreating")],
                   conditions=[{"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-20T09:59:50Z"}])  # fmt: skip
    assert recheck_at(creating, NOW) == datetime.fromisoformat("2026-11-20T10:00:20+00:00")  # + grace
    assert recheck_at(pod(statuses=[running()]), NOW) is None
    assert recheck_at(pod(statuses=[running(ready=False)], conditions=NOT_READY), NOW) is None  # already due
