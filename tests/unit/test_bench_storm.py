"""bench/storm.py's parsing and counting helpers (the storm itself runs on kwok, on demand)."""

from __future__ import annotations

import pytest

from bench import storm


def test_replicas_are_spread_evenly_and_add_up() -> None:
    assert storm.replicas_per_deployment(1000, 50) == [20] * 50
    spread = storm.replicas_per_deployment(103, 5)
    assert spread == [21, 21, 21, 20, 20]
    assert sum(spread) == 103
    with pytest.raises(ValueError):
        storm.replicas_per_deployment(3, 5)
    with pytest.raises(ValueError):
        storm.replicas_per_deployment(10, 0)


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert storm.percentile(values, 50) == 50
    assert storm.percentile(values, 95) == 95
    assert storm.percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert storm.percentile([7.0], 95) == 7.0
    assert storm.percentile([], 50) is None
    assert storm.summary([1.0, 2.0, 3.0, 4.0]) == {"n": 4, "p50": 2.0, "p95": 4.0, "max": 4.0}


def test_llm_calls_are_attributed_by_the_deployment_named_in_the_prompt() -> None:
    name = storm.deployment_name(7)
    assert name == "crash-007"
    body = {
        "messages": [
            {"role": "system", "content": "You are an SRE."},
            {"role": "user", "content": f"Pod storm-operator/{name}-5d8f9c7b6-x2kqz of Deployment {name}"},
        ]
    }
    assert storm.deployments_named(storm.request_text(body)) == {name}
    # Parts as a list, and names that only look alike, are handled.
    listed = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "crash-012 and crash-0123"}]}]
    }
    assert storm.deployments_named(storm.request_text(listed)) == {"crash-012", "crash-0123"}
    assert storm.deployments_named("xcrash-001 crash-01") == set()


def test_a_decision_is_attributed_by_workload_annotation_then_owner_then_target() -> None:
    annotated = {
        "metadata": {"annotations": {storm.WORKLOAD_ANNOTATION: "Deployment/storm-operator/crash-003"}},
        "spec": {"target": {"name": "crash-009-abc-def"}},
    }
    assert storm.decision_deployment(annotated) == "crash-003"
    by_owner = {"metadata": {}, "spec": {"owner": {"kind": "Deployment", "name": "crash-004"}}}
    assert storm.decision_deployment(by_owner) == "crash-004"
    by_target = {"metadata": {}, "spec": {"target": {"name": "crash-005-7d9f8b6c4-x2kqz"}}}
    assert storm.decision_deployment(by_target) == "crash-005"
    assert storm.decision_deployment({"metadata": {}, "spec": {"target": {"name": "other"}}}) is None


def test_crash_state_and_first_finished_time_of_a_pod() -> None:
    running = {"status": {"containerStatuses": [{"restartCount": 0, "state": {"running": {}}}]}}
    assert not storm.crashed(running)
    assert storm.first_finished_at(running) is None
    backoff = {
        "status": {
            "containerStatuses": [
                {
                    "restartCount": 6,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"finishedAt": "2026-12-02T15:00:10Z"}},
                },
                {"restartCount": 1, "state": {"terminated": {"finishedAt": "2026-12-02T15:00:05Z"}}},
            ]
        }
    }
    assert storm.crashed(backoff)
    assert storm.restart_count(backoff) == 6
    assert storm.first_finished_at(backoff) == storm.parse_time("2026-12-02T15:00:05Z")
    assert storm.parse_time("2026-12-02T15:00:05Z") == 1796223605.0
    restarted = {"status": {"containerStatuses": [{"restartCount": 2, "state": {"running": {}}}]}}
    assert storm.crashed(restarted)
    assert storm.parse_time("yesterday") is None
    assert storm.parse_time(None) is None


def test_proc_parsing() -> None:
    status = "Name:\tpython3\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t4\n"
    assert storm.parse_proc_status(status) == (100 * 2**20, 200 * 2**20)
    # The command may hold spaces and parentheses; utime and stime are fields 14 and 15.
    stat = "1234 (python3 (x) y) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 150 0 0 20 0 4 0 100 0 0"
    assert storm.parse_proc_cpu(stat, ticks=100) == 4.0
    assert storm.machine_cpu_seconds("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3\n", ticks=100) == (
        2.0,
        10.0,
    )
    state = "WORK=/tmp/x\nETCD_PID=11\nAPISERVER_PID=12\nKCM_PID=13\nWATCH_PID=14\n"
    assert storm.parse_pids(state) == {"etcd": 11, "apiserver": 12, "kcm": 13, "watch": 14}


def _decision(deployment: str, symptom: str, created: str) -> dict[str, object]:
    return {
        "metadata": {
            "creationTimestamp": created,
            "annotations": {storm.WORKLOAD_ANNOTATION: f"Deployment/storm-operator/{deployment}"},
        },
        "spec": {"symptom": symptom, "source": "llm"},
        "status": {"phase": "PendingApproval"},
    }


def test_decision_figures_count_per_deployment_and_measure_from_the_first_crash() -> None:
    names = ["crash-000", "crash-001", "crash-002"]
    decisions = {
        "d0": _decision("crash-000", "CrashLoopBackOff", "2026-12-02T15:00:12Z"),
        "d1": _decision("crash-001", "CrashLoopBackOff", "2026-12-02T15:00:13Z"),
        "d1b": _decision("crash-001", "HighRestarts", "2026-12-02T15:01:00Z"),
        "stray": {"metadata": {}, "spec": {"target": {"name": "other"}}},
    }
    seen = {"d0": 101.5, "d1": 102.0, "d1b": 160.0, "stray": 110.0}
    first_crash = {"crash-000": 100.0, "crash-001": 100.0, "crash-002": 100.0}
    finished = {"crash-000": storm.parse_time("2026-12-02T15:00:10Z") or 0.0}
    first_call = {"crash-000": 100.25, "crash-001": 100.75}
    out = storm.decision_figures(names, decisions, seen, first_crash, finished, first_call)
    assert out["decisions"] == 4
    assert out["decisions_per_deployment"] == {0: 1, 1: 1, 2: 1}
    assert out["decisions_unattributed"] == 1
    assert out["deployments_without_decision"] == ["crash-002"]
    assert out["deployments_with_more_than_one_decision"] == {
        "crash-001": ["d1: CrashLoopBackOff, PendingApproval", "d1b: HighRestarts, PendingApproval"]
    }
    # Latency counts from the first crash to the first decision of each Deployment.
    assert out["crash_to_decision_seconds"] == {"n": 2, "p50": 1.5, "p95": 2.0, "max": 2.0}
    assert out["crash_to_llm_request_seconds"] == {"n": 2, "p50": 0.25, "p95": 0.75, "max": 0.75}
    assert out["crash_to_decision_seconds_from_server_timestamps"]["p50"] == 2.0


def test_checks_compare_with_the_deployments_the_llm_delay_and_the_baseline() -> None:
    args = storm.arguments().parse_args(["--deployments", "2", "--pods", "4", "--llm-delay", "1.0"])
    good = {"llm_calls": 2, "decisions_per_deployment": {1: 2}, "crash_to_decision_seconds": {"p50": 1.9}}
    result: dict[str, object] = {"operator": good, "baseline": {"llm_calls": 60}}
    assert storm.checks(result, args) == {
        "llm_calls_equal_deployments": True,
        "one_decision_per_deployment": True,
        "crash_to_decision_p50_within_1s_of_llm": True,
        "ratio_at_least_30x": True,
    }
    assert result["llm_call_ratio_baseline_to_operator"] == 30.0
    bad = {
        "llm_calls": 4,
        "decisions_per_deployment": {1: 1, 3: 1},
        "crash_to_decision_seconds": {"p50": 2.5},
    }
    assert not any(storm.checks({"operator": bad, "baseline": {"llm_calls": 100}}, args).values())


def test_calls_per_deployment_are_a_histogram_or_a_spread() -> None:
    assert storm.spread([1] * 50) == {1: 50}
    assert storm.spread([1, 1, 2, 0]) == {0: 1, 1: 2, 2: 1}
    assert storm.spread([400, 410, 420, 430, 440, 450, 600]) == {"min": 400, "p50": 430, "max": 600}


def test_tenth_medians_compare_early_and_late_memory() -> None:
    samples = [100] * 10 + [50] * 10 + [60] * 75 + [70] * 13  # 108 samples: tenths of 10, last one 18
    assert storm.tenth_median(samples, 0) == 100
    assert storm.tenth_median(samples, 1) == 50
    assert storm.tenth_median(samples, 9) == 70  # the last tenth takes the remainder
