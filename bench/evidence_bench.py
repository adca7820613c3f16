"""Evidence extraction scaling: time for n and 8n distinct events, and their ratio.

Linear extraction gives a ratio near 8; the quadratic version this replaced gave ~26 (2,000
events in 6.6 s, 16,000 in 170 s). Run on demand: `python bench/evidence_bench.py [--events N]`.
Machines are shared and noisy, so it reports medians of several rounds, never one timing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sre_agent.core.evidence import extract  # noqa: E402
from sre_agent.core.redaction import Redactor  # noqa: E402
from sre_agent.domain import IncidentContext, Symptom  # noqa: E402

MESSAGES = (
    ("Unhealthy", 'Readiness probe failed: Get "http://10.0.0.{i}:8080/ready": connection refused'),
    ("FailedScheduling", "0/{i} nodes are available: {i} Insufficient cpu."),
    ("FailedMount", 'MountVolume.SetUp failed for volume "data-{i}" : timed out waiting for the condition'),
    ("BackOff", "Back-off restarting failed container app-{i} token=abc{i}"),
)


def incident(n: int) -> IncidentContext:
    pod: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "bench-7d9f8b6c4-x2kqz", "namespace": "bench"},
        "spec": {"containers": [{"name": "app", "image": "bench:1", "env": [{"name": "DB_PASSWORD", "value": "s3cret!"}]}]},
        "status": {"phase": "Running"},
    }  # fmt: skip
    events = []
    for i in range(n):
        reason, message = MESSAGES[i % len(MESSAGES)]
        events.append({
            "apiVersion": "v1", "kind": "Event", "type": "Warning", "reason": reason,
            "message": message.format(i=i), "count": 1,
            "lastTimestamp": f"2026-01-01T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z",
        })  # fmt: skip
    return IncidentContext(pod=pod, events=tuple(events), logs={"app": {"current": "line\n" * n}})


def seconds(n: int, rounds: int) -> float:
    ctx = incident(n)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        extract(ctx, Symptom.PROBE_FAILURE, Redactor.for_pod(ctx.pod))
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2000, help="the small size n (the large one is 8n)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    small, large = seconds(args.events, args.rounds), seconds(8 * args.events, args.rounds)
    print(f"evidence extraction: {args.events} events {small:.3f}s, {8 * args.events} events {large:.3f}s "
          f"(medians of {args.rounds})")  # fmt: skip
    print(f"ratio {large / max(small, 1e-9):.1f} for 8x the events (linear: ~8, quadratic: ~64)")


if __name__ == "__main__":
    main()
