"""The project's benchmark suite: prints its figures as one JSON document.

    python bench/suite.py [--only rules,llm,prompts,watching] [--runs 5] [--incidents 1000]
                          [--llm-delay 1.0] [--llm-incidents 1000] [--sequential-sample 40]

- rules: rules replay throughput, end to end (read, parse, validate, decide, score), on the
  bundled corpus and the held-out sets replicated to about --incidents files, as YAML (the
  format `capture` and `export` write) and as JSON; median of --runs runs, as wall-clock rates
  and as rates on the process's CPU time (what one core does, whatever else the machine runs),
  with the read + parse + validate time per file alone; plus the pipeline alone on already
  loaded incidents. YAML goes through libyaml (yaml_loader names the loader's base).
- llm: LLM replay of --llm-incidents incidents (no cache: every incident is one call) against
  the local OpenAI-compatible test server answering after --llm-delay seconds, at the default
  --concurrency and sequentially. The sequential run is timed on --sequential-sample incidents
  and scaled (one call at a time costs the same per call); the reports of both runs on that
  sample are compared for identity.
- prompts: prompt tokens (system + user message) over the corpus and the held-out sets at the
  default evidence budget, counted with a real BPE tokenizer (`pip install -e .[bench]`
  installs bpe-openai, which ships OpenAI's o200k/cl100k tables; tiktoken itself downloads them
  at run time, which this project's machines cannot). Without it: characters / 4, and the
  output says so.
- watching: what the operator's own code keeps per pod and what one resync reads, for --pods
  healthy and --pods not-Ready pods fed through AgentService with a fake API (tracemalloc;
  not the process RSS: `--only idle` measures that on kwok).
- storm (only when named): bench/storm.py at its defaults (1,000 crash-looping pods over 50
  Deployments on kwok for 300 s, the operator and the per-event baseline); see its docstring.
- idle (only when named): bench/idle.py at its defaults (10,000 healthy pods on kwok: the
  operator's peak and settled RSS and CPU through start-up and periodic work, beside a bare kopf
  per-event handler); see its docstring.

Timings come from a shared machine; every figure is a median or a ratio, and the JSON names
the machine and the date.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sre_agent.adapters.recorded import incident_paths, load_incident  # noqa: E402
from sre_agent.core.pipeline import Pipeline  # noqa: E402
from sre_agent.core.policy import Policy, load_policy  # noqa: E402
from sre_agent.core.reasoning import FixedClock  # noqa: E402
from sre_agent.domain import Symptom  # noqa: E402
from sre_agent.replay import EPOCH_FALLBACK, ReplayOptions, replay  # noqa: E402

SETS = {
    "corpus": ROOT / "replay" / "incidents",
    "unseen": ROOT / "tests" / "replay" / "unseen",
    "holdout": ROOT / "tests" / "replay" / "holdout",
}
POLICY = ROOT / "policies" / "default.yaml"
DEFAULT_CONCURRENCY = 8  # the CLI's --concurrency default


def machine() -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def all_files() -> list[Path]:
    return list(incident_paths(SETS.values()))


def replicate(target: Path, count: int, as_json: bool) -> int:
    """Copies of every incident file until there are at least `count`; each copy keeps its content."""
    import yaml

    files = all_files()
    target.mkdir(parents=True, exist_ok=True)
    written = 0
    while written < count:
        for path in files:
            name = f"{written:05d}-{path.stem}"
            if as_json:
                document = yaml.safe_load(path.read_text(encoding="utf-8"))
                (target / f"{name}.json").write_text(json.dumps(document, default=str), encoding="utf-8")
            else:
                shutil.copy(path, target / f"{name}{path.suffix}")
            written += 1
    return written


def _replay_seconds(directory: Path, options: ReplayOptions) -> tuple[float, float, int]:
    """(wall seconds, this process's CPU seconds, incidents) of one replay of the directory."""
    started, cpu = time.perf_counter(), time.process_time()
    report = asyncio.run(replay([directory], options))
    return time.perf_counter() - started, time.process_time() - cpu, int(report["summary"]["incidents"])


def bench_rules(runs: int, count: int, policy: Policy) -> dict[str, Any]:
    """Wall-clock rates, and rates on this process's CPU time: on a shared machine the second says
    what one core does, the first what the machine gave us at the time (see load_average_1m)."""
    from sre_agent.adapters import recorded

    out: dict[str, Any] = {"runs": runs, "yaml_loader": recorded._YAML_LOADER.__name__}
    with tempfile.TemporaryDirectory(prefix="sre-agent-bench-") as tmp:
        for fmt in ("yaml", "json"):
            directory = Path(tmp) / fmt
            n = replicate(directory, count, as_json=fmt == "json")
            rates, cpu_rates, loads = [], [], []
            for _ in range(runs):
                seconds, cpu, incidents = _replay_seconds(directory, ReplayOptions(policy=policy))
                rates.append(incidents / seconds)
                cpu_rates.append(incidents / cpu)
                files = sorted(directory.iterdir())
                started = time.process_time()
                for path in files:  # read, parse and validate alone
                    load_incident(path)
                loads.append((time.process_time() - started) / len(files))
            out[f"end_to_end_{fmt}"] = {
                "incidents": n,
                "incidents_per_second": round(statistics.median(rates)),
                "cpu_incidents_per_second": round(statistics.median(cpu_rates)),
                "load_ms_per_file": round(1000 * statistics.median(loads), 3),
            }
    incidents = [load_incident(p) for p in all_files()]

    async def decide_all() -> None:
        for incident in incidents:
            pipeline = Pipeline(
                policy=policy, clock=FixedClock(incident.context.captured_at or EPOCH_FALLBACK)
            )
            await pipeline.decide(incident.context)

    rates, cpu_rates = [], []
    repeats = max(1, count // len(incidents))
    for _ in range(runs):
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(repeats):
            asyncio.run(decide_all())
        rates.append(repeats * len(incidents) / (time.perf_counter() - started))
        cpu_rates.append(repeats * len(incidents) / (time.process_time() - cpu))
    out["pipeline_only"] = {
        "incidents_per_second": round(statistics.median(rates)),
        "cpu_incidents_per_second": round(statistics.median(cpu_rates)),
    }
    return out


def bench_llm(incidents: int, delay: float, sample: int, policy: Policy) -> dict[str, Any]:
    from sre_agent.adapters.llm import LLMConfig, OpenAIReasoner
    from tests.fake_llm import FakeLLM, answer_for, hang, reply

    def run(directory: Path, concurrency: int) -> tuple[float, dict[str, Any], int]:
        with FakeLLM() as fake:
            fake.default = reply(answer_for("app_error"))
            fake.responder = lambda body: hang(delay)
            config = LLMConfig(base_url=fake.base_url, model="bench", api_key="bench", max_retries=0,
                               timeout_seconds=60, deadline_seconds=120, max_concurrency=concurrency)  # fmt: skip
            reasoner = OpenAIReasoner(config)
            options = ReplayOptions(policy=policy, reasoner=reasoner, reasoner_id=reasoner.reasoner_id,
                                    use_cache=False, concurrency=concurrency)  # fmt: skip
            started = time.perf_counter()
            report = asyncio.run(replay([directory], options))
            seconds = time.perf_counter() - started
            report["summary"].pop("seconds")
            return seconds, report, len(fake.requests)

    with tempfile.TemporaryDirectory(prefix="sre-agent-bench-") as tmp:
        full, small = Path(tmp) / "full", Path(tmp) / "sample"
        replicate(full, incidents, as_json=False)
        for path in sorted(full.iterdir())[:sample]:
            small.mkdir(exist_ok=True)
            shutil.copy(path, small / path.name)
        seconds, report, calls = run(full, DEFAULT_CONCURRENCY)
        sample_concurrent = run(small, DEFAULT_CONCURRENCY)
        sample_sequential = run(small, 1)
    n = report["summary"]["incidents"]
    per_call_sequential = sample_sequential[0] / max(sample_sequential[2], 1)
    sequential_estimate = per_call_sequential * calls
    return {
        "incidents": n,
        "llm_delay_seconds": delay,
        "concurrency": DEFAULT_CONCURRENCY,
        "calls": calls,
        "fallbacks": report["summary"]["llm"]["fallbacks"],
        "wall_seconds": round(seconds, 1),
        "sequential_wall_seconds_estimated": round(sequential_estimate, 1),
        "sequential_sample": {
            "incidents": sample_sequential[1]["summary"]["incidents"],
            "wall_seconds": round(sample_sequential[0], 1),
        },
        "speedup": round(sequential_estimate / seconds, 1),
        "identical_to_sequential_on_sample": sample_concurrent[1] == sample_sequential[1],
    }


def _tokenizer() -> tuple[str, Any]:
    try:
        import bpe_openai

        encoding = bpe_openai.get_encoding("o200k_base")
        return "o200k_base (bpe-openai)", lambda text: len(encoding.encode(text))
    except Exception:  # not installed: a documented approximation
        return "approximation: characters / 4", lambda text: (len(text) + 3) // 4


def bench_prompts(policy: Policy) -> dict[str, Any]:
    from sre_agent.adapters.llm import load_prompts

    prompts = load_prompts(None)
    name, count = _tokenizer()
    actions = policy.describe_actions()
    out: dict[str, Any] = {"tokenizer": name, "prompt_version": prompts.prompt_version, "sets": {}}
    largest: tuple[int, str] = (0, "")
    for label, directory in SETS.items():
        tokens: list[int] = []
        for path in incident_paths([directory]):
            incident = load_incident(path)
            pipeline = Pipeline(
                policy=policy, clock=FixedClock(incident.context.captured_at or EPOCH_FALLBACK)
            )
            symptom = pipeline.symptom_of(incident.context)
            if symptom == Symptom.HEALTHY:
                continue
            rendered = prompts.render(pipeline.evidence_of(incident.context, symptom), actions)
            n = count(rendered.system) + count(rendered.user)
            tokens.append(n)
            largest = max(largest, (n, f"{label}/{path.name}"))
        tokens.sort()
        out["sets"][label] = {
            "prompts": len(tokens),
            "p50": tokens[len(tokens) // 2] if tokens else None,
            "p95": tokens[min(len(tokens) - 1, int(len(tokens) * 0.95))] if tokens else None,
            "max": tokens[-1] if tokens else None,
        }
    out["max"], out["max_incident"] = largest
    return out


def bench_watching(pods: int) -> dict[str, Any]:
    """The operator's own state and periodic reads for N pods, through AgentService with a fake API.

    Not the process RSS (bench/idle.py measures it on kwok): what the service adds per pod, and
    what one resync reads.
    """
    import gc
    import tracemalloc

    from sre_agent.operator.app import build_service
    from sre_agent.operator.metrics import Metrics
    from sre_agent.settings import Settings

    class FakeKube:
        def __init__(self) -> None:
            self.reads = 0

        async def list_objects(self, *args: Any, **kwargs: Any) -> list[Any]:
            self.reads += 1
            return []

        async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
            self.reads += 1
            return None

        async def events_for(self, *args: Any, **kwargs: Any) -> list[Any]:
            return []

    def pod(i: int, ready: bool) -> dict[str, Any]:
        return {
            "metadata": {"name": f"p-{i}", "namespace": "bench", "uid": f"uid-{i}"},
            "spec": {"nodeName": "n", "containers": [{"name": "app", "image": "app:1"}]},
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                "containerStatuses": [{"name": "app", "restartCount": 0, "state": {"running": {}}}],
            },
        }

    async def run(ready: bool) -> dict[str, Any]:
        kube = FakeKube()
        service = build_service(Settings(policy=load_policy(POLICY)), cast(Any, kube), Metrics(), "bench")
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(pods):
            await service.on_pod(pod(i, ready))
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        kube.reads = 0
        await service.resync()
        for task in list(service._rechecks.values()):
            task.cancel()
        return {"bytes_kept_per_pod": round(kept / pods), "resync_api_reads": kube.reads}

    return {
        "pods": pods,
        "healthy": asyncio.run(run(True)),
        "not_ready": asyncio.run(run(False)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only",
        default="rules,llm,prompts,watching",
        help="comma list of rules, llm, prompts, watching, storm, idle (storm, idle: only when named)",
    )
    parser.add_argument(
        "--pods", type=int, default=10_000, help="watching: pods fed through the operator service"
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--incidents", type=int, default=1000, help="rules replay: replicate the sets to this many"
    )
    parser.add_argument(
        "--llm-delay", type=float, default=1.0, help="seconds the local LLM server takes per call"
    )
    parser.add_argument("--llm-incidents", type=int, default=1000)
    parser.add_argument(
        "--sequential-sample", type=int, default=40, help="incidents timed one call at a time"
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    policy = load_policy(POLICY)
    result: dict[str, Any] = {"machine": machine()}
    if "rules" in only:
        result["rules_replay"] = bench_rules(args.runs, args.incidents, policy)
    if "llm" in only:
        result["llm_replay"] = bench_llm(args.llm_incidents, args.llm_delay, args.sequential_sample, policy)
    if "prompts" in only:
        result["prompt_tokens"] = bench_prompts(policy)
    if "watching" in only:
        result["watching"] = bench_watching(args.pods)
    if "storm" in only:  # not in the default: two 300 s storms on kwok, ~13 minutes
        from bench import storm

        result["storm"] = storm.bench_storm(
            storm.arguments().parse_args(["--llm-delay", str(args.llm_delay)])
        )
    if "idle" in only:  # not in the default: 10,000 pods on kwok, the operator and bare kopf, ~5 minutes
        from bench import idle

        result["idle"] = idle.bench_idle(idle.arguments().parse_args([]))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
