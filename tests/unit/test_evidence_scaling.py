"""Evidence extraction costs O(n) in the number of events: counted operations, no timings.

A pod with 16,000 distinct warning events once took minutes, because every new signal and
excerpt was compared with every earlier one. These tests count the comparisons and the
redactions instead of measuring time (bench/evidence_bench.py reports the time ratio).
"""

from __future__ import annotations

from typing import Any

import pytest

from sre_agent.core.evidence import MAX_EXCERPTS, MAX_SIGNALS_PER_KIND, extract
from sre_agent.core.redaction import Redactor
from sre_agent.domain import IncidentContext, Signal, Symptom
from tests.unit.podfactory import event, pod, terminated, waiting

MESSAGES = (
    ("Unhealthy", "Readiness probe failed: Get \"http://10.0.0.{i}:8080/ready\": connection refused"),
    ("FailedScheduling", "0/{i} nodes are available: {i} Insufficient cpu."),
    ("FailedMount", "MountVolume.SetUp failed for volume \"data-{i}\" : timed out waiting for the condition"),
    ("BackOff", "Back-off restarting failed container app-{i}"),
)


def events(n: int) -> tuple[dict[str, Any], ...]:
    out = []
    for i in range(n):
        reason, message = MESSAGES[i % len(MESSAGES)]
        out.append(event(reason, message.format(i=i)))
    return tuple(out)


class CountingRedactor(Redactor):
    def __init__(self) -> None:
        super().__init__(["hunter2-canary"])
        self.calls = 0

    def text(self, text: str) -> str:
        self.calls += 1
        return super().text(text)


def run(n: int, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int, int, int]:
    """(redactions, Signal comparisons, signals, excerpts) for n distinct events."""
    comparisons = 0
    original = Signal.__eq__

    def counting_eq(self: Signal, other: object) -> bool:
        nonlocal comparisons
        comparisons += 1
        return original(self, other)

    monkeypatch.setattr(Signal, "__eq__", counting_eq)
    redactor = CountingRedactor()
    ctx = IncidentContext(
        pod=pod(statuses=[waiting("CrashLoopBackOff", "back-off", 6, terminated())]), events=events(n)
    )
    evidence = extract(ctx, Symptom.CRASH_LOOP, redactor)
    monkeypatch.setattr(Signal, "__eq__", original)
    return redactor.calls, comparisons, len(evidence.signals), len(evidence.excerpts)


def test_work_per_event_does_not_grow_with_the_number_of_events(monkeypatch: pytest.MonkeyPatch) -> None:
    small = run(2_000, monkeypatch)
    large = run(16_000, monkeypatch)
    # Redaction and deduplication stop once the caps are reached: the same work for 8x the events.
    assert large[0] == small[0]
    # Duplicates are found by hashing, so equality is checked only on (rare) hash collisions.
    assert large[1] <= 16_000
    assert large[2] == small[2]
    assert large[3] == small[3] <= MAX_EXCERPTS


def test_signals_are_capped_per_kind_and_keep_the_first_ones() -> None:
    ctx = IncidentContext(pod=pod(), events=events(4 * (MAX_SIGNALS_PER_KIND + 50)))
    evidence = extract(ctx, Symptom.PROBE_FAILURE, Redactor())
    kinds: dict[str, int] = {}
    for s in evidence.signals:
        kinds[s.kind] = kinds.get(s.kind, 0) + 1
    assert kinds["probe_failed"] == MAX_SIGNALS_PER_KIND
    assert kinds["insufficient_resources"] == MAX_SIGNALS_PER_KIND
    assert "0/1 nodes are available:" in evidence.details("insufficient_resources")[0]


def test_duplicates_still_collapse_to_one_signal() -> None:
    same = tuple(event("Unhealthy", "Liveness probe failed: connection refused") for _ in range(500))
    evidence = extract(IncidentContext(pod=pod(), events=same), Symptom.PROBE_FAILURE, Redactor())
    assert evidence.details("probe_failed") == ["Liveness probe failed: connection refused"]
