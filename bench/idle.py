"""Idle watching: the operator's RSS and CPU with N healthy pods, beside a bare kopf handler.

    python bench/idle.py [--pods 10000] [--nodes 10] [--seconds 120] [--periodic-seconds 15]
                         [--churn 2000] [--no-baseline]

Starts the project's control plane with kwok nodes (bench/kwokbench.py, no real kubelet),
creates --pods healthy pods and waits until kwok reports them Running, then runs
`sre-agent run` from this workstation against the kubeconfig (with peering, as deployed; no
LLM needed: healthy pods never reach it) for --seconds, with its sweep and pod re-check every
--periodic-seconds, so several periodic passes fall into the window. Its RSS is read from /proc
every 0.2 s from the moment it starts. 15 s after it has listed the pods, --churn of them are
deleted and replaced by new ones (a few events each), so the figures show whether memory comes
back to where it was. Then the same, without churn, for a bare kopf per-event pod handler (the
first design sketch's watch), for comparison.

Prints one JSON document: per process the peak RSS (start-up and periodic work included), the
settled RSS (median of the last 10 s), when it settled (CPU below 5 % for 3 s once its pod watch
has listed the pods), and CPU seconds for start-up, after settling (periodic work) and in all. The control plane runs on the same machine, so CPU figures are
pessimistic.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.kwokbench import KwokCluster  # noqa: E402
from bench.suite import machine  # noqa: E402

SAMPLE_SECONDS = 0.2
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

BARE_KOPF = """
import kopf

@kopf.on.event("v1", "pods")
async def pod_event(event, **_):
    pass
"""


def _rss_and_cpu(pid: int) -> tuple[int, float] | None:
    """RSS in bytes and CPU seconds (user + system) of a running process, from /proc."""
    try:
        statm = Path(f"/proc/{pid}/statm").read_text().split()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(statm[1]) * PAGE, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Sampler(threading.Thread):
    """(seconds since start, RSS bytes, CPU seconds) every SAMPLE_SECONDS until the process ends;
    and when `marker` first shows up in the process's log (its work has begun)."""

    def __init__(self, pid: int, log_path: Path, marker: str | None) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.log_path = log_path
        self.marker = marker
        self.marker_index: int | None = None if marker else 0
        self.samples: list[tuple[float, int, float]] = []
        self.stop = threading.Event()
        self.started = time.monotonic()

    def run(self) -> None:
        while not self.stop.is_set():
            sample = _rss_and_cpu(self.pid)
            if sample is None:
                return
            self.samples.append((time.monotonic() - self.started, *sample))
            if self.marker_index is None and self.marker in self.log_path.read_text(errors="replace"):
                self.marker_index = len(self.samples) - 1
            self.stop.wait(SAMPLE_SECONDS)


def summarise(samples: list[tuple[float, int, float]], begun: int = 0) -> dict[str, Any]:
    """Peak and settled RSS, when the process settled (the first quiet 3 s after its work began,
    sample `begun`), CPU seconds until then and in all."""
    mb = 1024 * 1024
    settled_at = None
    window = int(3 / SAMPLE_SECONDS)
    for i in range(begun, len(samples) - window):
        t0, _, cpu0 = samples[i]
        t1, _, cpu1 = samples[i + window]
        if (cpu1 - cpu0) / max(t1 - t0, 1e-9) < 0.05:
            settled_at = i
            break
    last = [rss for t, rss, _ in samples if t >= samples[-1][0] - 10]
    return {
        "peak_rss_mb": round(max(rss for _, rss, _ in samples) / mb, 1),
        "settled_rss_mb": round(statistics.median(last) / mb, 1),
        "seconds_to_settle": round(samples[settled_at][0], 1) if settled_at is not None else None,
        "startup_cpu_seconds": round(samples[settled_at][2], 2) if settled_at is not None else None,
        "cpu_seconds": round(samples[-1][2], 2),
        "cpu_seconds_after_settling": round(samples[-1][2] - samples[settled_at][2], 2)
        if settled_at is not None
        else None,
        "seconds_observed": round(samples[-1][0], 1),
        "samples": len(samples),
    }


def observe(
    command: list[str],
    env: dict[str, str],
    seconds: float,
    log_path: Path,
    marker: str | None = None,
    churn: Callable[[], int] | None = None,
) -> dict[str, Any]:
    """Run `command` for `seconds`, sampling it; with `churn`, call it CHURN_AFTER seconds after the
    marker (it replaces pods, returns how many) and report the RSS before it beside the end's."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    sampler = Sampler(proc.pid, log_path, marker)
    sampler.start()
    churned: dict[str, Any] = {}
    try:
        if churn is not None:
            deadline = sampler.started + seconds / 2
            while sampler.marker_index is None and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(SAMPLE_SECONDS)
            time.sleep(CHURN_AFTER)
            churned["started_at"] = time.monotonic() - sampler.started
            churned["pods_replaced"] = churn()
            churned["seconds"] = round(time.monotonic() - sampler.started - churned["started_at"], 1)
        proc.wait(timeout=max(1.0, seconds - (time.monotonic() - sampler.started)))
        tail = log_path.read_text(errors="replace").splitlines()[-10:]
        raise RuntimeError(f"{log_path.stem} exited with {proc.returncode}:\n" + "\n".join(tail))
    except subprocess.TimeoutExpired:
        pass
    finally:
        sampler.stop.set()
        sampler.join()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    summary = summarise(sampler.samples, sampler.marker_index or 0)
    if churned:
        at = churned.pop("started_at")
        before = [rss for t, rss, _ in sampler.samples if at - 5 <= t <= at]
        summary["churn"] = {
            **churned,
            "rss_before_mb": round(statistics.median(before) / (1024 * 1024), 1) if before else None,
            "rss_after_mb": summary["settled_rss_mb"],
        }
    listed = re.findall(r"listed (\d+) pods", log_path.read_text(errors="replace"))
    if listed:  # the operator says how many pods its watch handed over
        summary["pods_listed"] = sum(int(n) for n in listed)
    return summary


LIMIT_MB = 250  # issue 9: 10,000 idle pods under 250 MB RSS at peak
CHURN_AFTER = 15  # seconds after the operator listed the pods


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=120, help="how long each process is observed")
    parser.add_argument(
        "--periodic-seconds", type=float, default=15, help="the operator's sweep and re-check interval"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the bare kopf handler")
    parser.add_argument(
        "--churn",
        type=int,
        default=2000,
        help="pods deleted and replaced by new ones while the operator runs (0: none): its memory must "
        "come back to where it was",
    )
    return parser


def bench_idle(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"machine": machine(), "pods": args.pods, "kwok_nodes": args.nodes}
    with KwokCluster(nodes=args.nodes) as kc, tempfile.TemporaryDirectory(prefix="sre-agent-idle-") as tmp:
        kc.create_namespace("idle")
        started = time.monotonic()
        kc.create_pods("idle", args.pods)
        kc.wait_running("idle", args.pods, timeout=1800)
        result["seconds_to_create_and_run_pods"] = round(time.monotonic() - started)
        env = {
            **kc.env,
            "SRE_AGENT_METRICS_PORT": "0",
            "SRE_AGENT_HEALTH_PORT": "0",
            "SRE_AGENT_SWEEP_SECONDS": str(args.periodic_seconds),
            "SRE_AGENT_RESYNC_SECONDS": str(args.periodic_seconds),
            "SRE_AGENT_LOG_LEVEL": "info",
        }
        for key in ("SRE_AGENT_LLM_BASE_URL", "SRE_AGENT_LLM_API_KEY", "OPENAI_API_KEY"):
            env.pop(key, None)
        operator = [
            sys.executable,
            "-c",
            "import sys; from sre_agent.cli import main; sys.exit(main())",
            "run",
        ]
        # It settles after its pod watch listed the pods (it starts once kopf has registered it).
        names = [f"idle-{i:05d}" for i in range(args.pods)]
        replaced = iter(range(10**9))

        def churn() -> int:
            """Replace the oldest `--churn` pods by new ones, and wait until kwok runs them."""
            gone, names[: args.churn] = names[: args.churn], []
            kc.delete_pods("idle", gone)
            fresh = kc.create_pods("idle", len(gone), prefix=f"churn{next(replaced)}")
            names.extend(fresh)
            kc.wait_running("idle", args.pods, timeout=600)
            return len(fresh)

        result["operator"] = observe(
            operator, env, args.seconds, Path(tmp) / "operator.log", "listed ", churn if args.churn else None
        )
        result["operator"]["periodic_seconds"] = args.periodic_seconds
        result["operator"][f"under_{LIMIT_MB}_mb_at_peak"] = result["operator"]["peak_rss_mb"] < LIMIT_MB
        if not args.no_baseline:
            script = Path(tmp) / "bare_kopf.py"
            script.write_text(BARE_KOPF)
            bare = [
                sys.executable,
                "-m",
                "kopf",
                "run",
                "--standalone",
                "--all-namespaces",
                "--quiet",
                str(script),
            ]
            result["bare_kopf_handler"] = observe(bare, kc.env, args.seconds, Path(tmp) / "bare.log")
    return result


def main() -> None:
    print(json.dumps(bench_idle(arguments().parse_args()), indent=2))


if __name__ == "__main__":
    main()
