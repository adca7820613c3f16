"""LLM replay runs calls concurrently under a bound, and reports exactly what a sequential run does.

The fake OpenAI-compatible server answers each request after a delay, from the request's own
content (so who asked first cannot change an answer), and counts how many requests it holds at
once: that count, not wall time, proves the concurrency and its bound.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sre_agent.adapters.llm import LLMConfig, OpenAIReasoner
from sre_agent.cli import main
from sre_agent.core.policy import load_policy
from sre_agent.replay import Progress, ReplayOptions, progress_bar, replay
from tests.fake_llm import Behaviour, FakeLLM, answer_for, reply

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "replay" / "incidents"
CATEGORIES = ("app_error", "bad_config", "dependency_unavailable", "oom", "unknown")


class Counting:
    """A responder: answers from a hash of the request after `delay` seconds, counting requests in flight."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> Behaviour:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.delay)
            user = json.dumps(body.get("messages"), sort_keys=True)
            category = CATEGORIES[int(hashlib.sha256(user.encode()).hexdigest(), 16) % len(CATEGORIES)]
            return reply(answer_for(category))
        finally:
            with self.lock:
                self.in_flight -= 1


@pytest.fixture
def history(tmp_path: Path) -> Path:
    """Twelve incidents, three of them again under other names (same fingerprint: cache hits), one bad file."""
    out = tmp_path / "history"
    out.mkdir()
    files = sorted(CORPUS.glob("*.yaml"))[:12]
    for path in files:
        shutil.copy(path, out / path.name)
    for path in files[:3]:
        shutil.copy(path, out / f"zz-again-{path.name}")
    (out / "m-bad.yaml").write_text("id: bad\nevnts: []\n")
    return out


@pytest.fixture(autouse=True)
def quick_llm(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SRE_AGENT_LLM_API_KEY", "OPENAI_API_KEY", "SRE_AGENT_LLM_BASE_URL", "SRE_AGENT_LLM_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SRE_AGENT_LLM_MAX_RETRIES", "0")
    monkeypatch.setenv("SRE_AGENT_LLM_TIMEOUT", "20")


def replay_json(capsys: pytest.CaptureFixture[str], history: Path, *args: str) -> tuple[dict[str, Any], int]:
    with FakeLLM() as fake:
        counting = Counting(delay=0.2)
        fake.responder = counting
        code = main(["replay", str(history), "--reasoner", "llm", "--base-url", fake.base_url,
                     "--format", "json", "--no-progress", *args])  # fmt: skip
        requests = len(fake.requests)
    assert code == 1  # the bad file
    report = json.loads(capsys.readouterr().out)
    report["summary"].pop("seconds")
    report["_max_in_flight"] = counting.max_in_flight
    return report, requests


def test_concurrent_llm_replay_is_bounded_and_reports_what_a_sequential_run_does(
    capsys: pytest.CaptureFixture[str], history: Path
) -> None:
    sequential, sequential_calls = replay_json(capsys, history, "--concurrency", "1")
    concurrent, concurrent_calls = replay_json(capsys, history, "--concurrency", "4")
    default, _ = replay_json(capsys, history)

    assert sequential.pop("_max_in_flight") == 1
    assert 1 < concurrent.pop("_max_in_flight") <= 4  # concurrent, and never more than the bound
    assert 4 < default.pop("_max_in_flight") <= 8  # --concurrency defaults to 8
    assert concurrent == sequential and default == sequential  # same order, same content
    assert concurrent_calls == sequential_calls
    llm = sequential["summary"]["llm"]
    assert llm["from_cache"] >= 3 and llm["fallbacks"] == 0  # the copies were cache hits in both runs
    assert [r["id"] for r in concurrent["results"]] == [r["id"] for r in sequential["results"]]
    assert [r["id"] for r in sequential["results"] if r["error"]] == ["m-bad"]
    assert len({r["category"] for r in sequential["results"]}) > 1  # answers depend on the request


def test_progress_counts_calls_cache_hits_and_fallbacks(history: Path) -> None:
    seen: list[Progress] = []
    with FakeLLM() as fake:
        fake.responder = Counting(delay=0.0)
        config = LLMConfig(base_url=fake.base_url, model="m", api_key="k", max_retries=0, max_concurrency=4)
        reasoner = OpenAIReasoner(config)
        options = ReplayOptions(policy=load_policy(ROOT / "policies" / "default.yaml"), reasoner=reasoner,
                                reasoner_id=reasoner.reasoner_id, concurrency=4)  # fmt: skip
        report = asyncio.run(replay([history], options, progress=lambda p: seen.append(Progress(**vars(p)))))
        requests = len(fake.requests)
    last = seen[-1]
    llm = report["summary"]["llm"]
    assert (last.done, last.total) == (16, 16) and [p.done for p in seen] == list(range(1, 17))
    assert last.calls == requests == llm["asked"] - llm["from_cache"]
    assert last.cache_hits == llm["from_cache"] >= 3 and last.fallbacks == llm["fallbacks"] == 0

    out = io.StringIO()
    progress_bar(out)(last)
    assert out.getvalue().endswith(f"16/16 llm calls {requests}, cache hits {last.cache_hits}, fallbacks 0\n")
