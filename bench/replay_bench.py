"""Replay throughput benchmark: median time per incident for the rules path, and, with the
scripted OpenAI-compatible server from the tests, LLM calls and wall time with and without
the response cache. Run on demand: `python bench/replay_bench.py [--rounds N]`.

Machines are shared and noisy, so it reports medians and ratios, never single timings.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sre_agent.core.policy import load_policy  # noqa: E402
from sre_agent.replay import ReplayOptions, replay  # noqa: E402

CORPUS = ROOT / "replay" / "incidents"


def rules_round(policy_path: Path) -> tuple[float, int]:
    options = ReplayOptions(policy=load_policy(policy_path))
    started = time.perf_counter()
    report = asyncio.run(replay([CORPUS], options))
    return time.perf_counter() - started, report["summary"]["incidents"]


def llm_round(use_cache: bool, copies: int) -> tuple[float, int]:
    from sre_agent.adapters.llm import LLMConfig, OpenAIReasoner
    from tests.fake_llm import FakeLLM, answer_for, reply

    with FakeLLM() as fake:
        fake.default = reply(answer_for("app_error"))
        config = LLMConfig(base_url=fake.base_url, model="bench-model", api_key="bench")
        reasoner = OpenAIReasoner(config)
        options = ReplayOptions(policy=load_policy(ROOT / "policies" / "default.yaml"), reasoner=reasoner,
                                reasoner_id=reasoner.reasoner_id, use_cache=use_cache)  # fmt: skip
        started = time.perf_counter()
        asyncio.run(replay([CORPUS] * copies, options, cache_timer=time.monotonic))
        return time.perf_counter() - started, len(fake.requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--copies", type=int, default=3, help="corpus repeats for the cache benchmark")
    args = parser.parse_args()

    times = []
    for _ in range(args.rounds):
        seconds, incidents = rules_round(ROOT / "policies" / "default.yaml")
        times.append(seconds / incidents)
    print(f"rules replay: median {statistics.median(times) * 1000:.2f} ms/incident "
          f"over {args.rounds} rounds of {incidents} incidents")  # fmt: skip

    try:
        cold = [llm_round(False, args.copies) for _ in range(args.rounds)]
        warm = [llm_round(True, args.copies) for _ in range(args.rounds)]
    except ImportError as exc:  # the LLM adapter or the fake server is not installed
        print(f"llm replay: skipped ({exc})")
        return
    cold_t, cold_calls = statistics.median(t for t, _ in cold), statistics.median(c for _, c in cold)
    warm_t, warm_calls = statistics.median(t for t, _ in warm), statistics.median(c for _, c in warm)
    print(f"llm replay, corpus x{args.copies}: without cache {cold_calls:.0f} calls, {cold_t:.2f}s; "
          f"with cache {warm_calls:.0f} calls, {warm_t:.2f}s")  # fmt: skip
    print(f"cache: {cold_calls / max(warm_calls, 1):.1f}x fewer LLM calls, {cold_t / max(warm_t, 1e-9):.1f}x faster")


if __name__ == "__main__":
    main()
