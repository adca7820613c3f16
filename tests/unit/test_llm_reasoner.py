"""The LLM reasoner through the real openai client over HTTP, and the answer parser on its own.

Every failure mode of a remote model (bad JSON, schema violations, 429/5xx, hangs, an
endpoint that is down) must end as a one-line ReasonerError, quickly, so the pipeline can
fall back to the rules.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from sre_agent.adapters.llm import (
    PLACEHOLDER_KEY,
    CircuitBreaker,
    LLMConfig,
    LLMConfigError,
    OpenAIReasoner,
    retry_after_seconds,
)
from sre_agent.core.llm_answer import parse_answer, strip_wrappers
from sre_agent.core.policy import default_policy
from sre_agent.core.prompts import load_prompts
from sre_agent.core.reasoning import ReasonerError
from sre_agent.domain import Category, Evidence, ObjectRef, Signal, Symptom
from tests.fake_llm import FakeLLM, answer_for, chat_completion, garbage, hang, reply, status

ACTIONS = default_policy().describe_actions()


def evidence() -> Evidence:
    return Evidence(
        symptom=Symptom.OOM_KILLED,
        pod=ObjectRef("Pod", "checkout-api-7d9f8b6c4-x2kqz", "shop"),
        owner=ObjectRef("Deployment", "checkout-api", "shop", api_version="apps/v1"),
        node="node-a",
        images=("registry.example.com/shop/checkout:1.4.2",),
        signals=(Signal("oom_killed", "container app lastState OOMKilled exit 137", "status"),),
        excerpts=("[app previous] java.lang.OutOfMemoryError: Java heap space",),
        facts={"restart_count": 6},
        replicas=3,
    )


def config(fake: FakeLLM, **overrides: Any) -> LLMConfig:
    settings: dict[str, Any] = {
        "base_url": fake.base_url,
        "model": "test-model",
        "api_key": "test-key",
        "timeout_seconds": 2,
        "deadline_seconds": 10,
        "max_retries": 2,
        "backoff_base": 0.01,
        "backoff_max": 2,
    }
    settings.update(overrides)
    return LLMConfig(**settings)


Make = Callable[..., OpenAIReasoner]


@pytest.fixture
async def reasoners() -> AsyncIterator[Make]:
    """Builds OpenAIReasoners and closes their HTTP clients after the test."""
    made: list[OpenAIReasoner] = []

    def make(cfg: LLMConfig, **kwargs: Any) -> OpenAIReasoner:
        made.append(OpenAIReasoner(cfg, **kwargs))
        return made[-1]

    yield make
    for reasoner in made:
        await reasoner.aclose()


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# -- parse_answer (pure) -------------------------------------------------------------------


def test_parse_a_valid_answer() -> None:
    d = parse_answer(json.dumps(answer_for("oom", confidence=0.9)), "m-1", 123)
    assert d.category is Category.OOM and d.source == "llm"
    assert d.action.name == "create_alert" and d.action.parameters["severity"] == "warning"
    assert (d.confidence, d.model, d.tokens) == (0.9, "m-1", 123)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: f"```json\n{s}\n```",
        lambda s: f"```\n{s}```\n",
        lambda s: f"<think>It could be {{oom}} or not</think>\n{s}",
        lambda s: f"Here is my diagnosis:\n{s}\nLet me know if you need more.",
    ],
)
def test_parse_strips_the_wrappers_models_add(wrap: Any) -> None:
    text = json.dumps(answer_for("bad_config"))
    assert json.loads(strip_wrappers(wrap(text))) == answer_for("bad_config")
    assert parse_answer(wrap(text), "m", 1).category is Category.BAD_CONFIG


def test_parse_accepts_any_action_name_of_the_right_shape() -> None:
    # Whether the action is allowed is the policy's call, not the parser's.
    d = parse_answer(json.dumps(answer_for("unknown", "delete_namespace", {"name": "kube-system"})), "m", 1)
    assert d.action.name == "delete_namespace"
    assert (
        parse_answer(json.dumps({**answer_for("oom"), "action": {"name": "none"}}), "m", 1).action.parameters
        == {}
    )


def bad(**changes: Any) -> str:
    answer = answer_for("oom")
    answer.update(changes)
    return json.dumps({k: v for k, v in answer.items() if v is not ...})


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty reply"),
        ("I think it is OOM.", "not JSON"),
        ('{"category": "oom",', "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        (bad(category="cosmic_rays"), "category"),
        (bad(category=None), "category"),
        (bad(confidence=7), "confidence: 7 is outside 0..1"),
        (bad(confidence=-0.1), "confidence"),
        (bad(confidence="high"), "confidence: expected number"),
        (bad(confidence=True), "confidence: expected number"),
        (bad(confidence=...), "'confidence' is missing"),
        (bad(shell="rm -rf /"), "'shell' was unexpected"),
        (bad(summary="x" * 501), "summary: longer than 500"),
        (bad(summary="   "), "summary"),
        (bad(reasoning="y" * 4001), "reasoning: longer than 4000"),
        (bad(action="restart_pod"), "action: expected object"),
        (bad(action={"name": "Delete NS"}), "action.name"),
        (bad(action={"name": 3}), "action.name"),
        (bad(action={"parameters": {}}), "'name' is missing"),
        (bad(action={"name": "none", "parameters": ["x"]}), "action.parameters: expected object"),
        (bad(action={"name": "none", "run": "kubectl delete ns prod"}), "'run' was unexpected"),
        (json.dumps(answer_for("oom")).replace("0.8", "NaN"), "not JSON"),
        (json.dumps(answer_for("oom")).replace("0.8", "Infinity"), "not JSON"),
    ],
)
def test_parse_refuses_bad_answers_with_one_line_naming_the_field(text: str, fragment: str) -> None:
    with pytest.raises(ReasonerError) as info:
        parse_answer(text, "m", 1)
    message = str(info.value)
    assert message.startswith("invalid LLM answer: ")
    assert fragment in message
    assert "\n" not in message and len(message) < 200


# -- configuration ---------------------------------------------------------------------------


def test_config_from_env() -> None:
    assert LLMConfig.from_env({}) is None
    assert LLMConfig.from_env({"SRE_AGENT_LLM_MODEL": "x"}) is None
    openai_only = LLMConfig.from_env({"OPENAI_API_KEY": "sk-abc"})
    assert openai_only is not None and openai_only.api_key == "sk-abc" and openai_only.base_url == ""
    local = LLMConfig.from_env(
        {
            "SRE_AGENT_LLM_BASE_URL": "http://ollama:11434/v1",
            "SRE_AGENT_LLM_MODEL": "qwen2.5:7b",
            "SRE_AGENT_LLM_TIMEOUT": "45",
            "SRE_AGENT_LLM_RESPONSE_FORMAT": "none",
            "SRE_AGENT_LLM_TEMPERATURE": "none",
            "SRE_AGENT_LLM_MAX_RETRIES": "0",
        }
    )
    assert local is not None
    assert (
        local.model,
        local.timeout_seconds,
        local.response_format,
        local.temperature,
        local.max_retries,
    ) == (
        "qwen2.5:7b",
        45.0,
        "none",
        None,
        0,
    )
    explicit = LLMConfig.from_env({"SRE_AGENT_LLM_API_KEY": "mine", "OPENAI_API_KEY": "theirs"})
    assert explicit is not None and explicit.api_key == "mine"


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"SRE_AGENT_LLM_TIMEOUT": "soon"}, "SRE_AGENT_LLM_TIMEOUT"),
        ({"SRE_AGENT_LLM_TIMEOUT": "0"}, "SRE_AGENT_LLM_TIMEOUT"),
        ({"SRE_AGENT_LLM_MAX_RETRIES": "2.5"}, "SRE_AGENT_LLM_MAX_RETRIES"),
        ({"SRE_AGENT_LLM_RESPONSE_FORMAT": "xml"}, "SRE_AGENT_LLM_RESPONSE_FORMAT"),
        ({"SRE_AGENT_LLM_CIRCUIT_FAILURES": "0"}, "SRE_AGENT_LLM_CIRCUIT_FAILURES"),
    ],
)
def test_bad_config_names_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(LLMConfigError, match=name):
        LLMConfig.from_env({"SRE_AGENT_LLM_BASE_URL": "http://x/v1", **env})


def test_azure_needs_an_endpoint_and_keys_stay_out_of_repr() -> None:
    with pytest.raises(LLMConfigError, match="SRE_AGENT_LLM_BASE_URL"):
        LLMConfig.from_env({"SRE_AGENT_LLM_API_KEY": "k", "SRE_AGENT_LLM_API_VERSION": "2024-10-21"})
    assert "hunter2" not in repr(LLMConfig(base_url="http://x/v1", api_key="hunter2"))


def test_retry_after_forms() -> None:
    now = datetime(2026, 11, 20, 10, 0, 0, tzinfo=UTC)
    assert retry_after_seconds({"Retry-After": "3"}) == 3
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"Retry-After": "Fri, 20 Nov 2026 10:00:05 GMT"}, lambda: now) == 5
    assert retry_after_seconds({"Retry-After": "Fri, 20 Nov 2026 09:00:00 GMT"}, lambda: now) == 0
    assert retry_after_seconds({"Retry-After": "whenever"}) is None
    assert retry_after_seconds({}) is None


# -- over HTTP, through the real openai client ------------------------------------------------


async def test_valid_answer_becomes_an_llm_diagnosis_with_tokens(fake_llm: FakeLLM, reasoners: Make) -> None:
    fake_llm.script(reply(answer_for("oom", confidence=0.9), prompt_tokens=321, completion_tokens=45))
    reasoner = reasoners(config(fake_llm))
    d = await reasoner.diagnose(evidence(), ACTIONS)
    assert d.source == "llm" and d.category is Category.OOM and d.confidence == 0.9
    assert d.tokens == 366 and d.model == "test-model"
    [body] = fake_llm.requests
    assert body["model"] == "test-model" and body["temperature"] == 0 and body["max_tokens"] == 800
    assert body["response_format"] == {"type": "json_object"}
    system, user = body["messages"]
    prompts = load_prompts()
    assert system == {"role": "system", "content": prompts.system(ACTIONS)}
    assert user == {"role": "user", "content": prompts.user(evidence())}
    assert fake_llm.headers[0]["authorization"] == "Bearer test-key"
    assert reasoner.reasoner_id == f"test-model@{prompts.prompt_version}"


async def test_request_options_follow_the_config(fake_llm: FakeLLM, reasoners: Make) -> None:
    fake_llm.default = reply(answer_for("oom"))
    schema_mode = reasoners(
        config(fake_llm, response_format="json_schema", max_tokens_field="max_completion_tokens")
    )
    await schema_mode.diagnose(evidence(), ACTIONS)
    plain = reasoners(config(fake_llm, response_format="none", temperature=None, api_key=""))
    await plain.diagnose(evidence(), ACTIONS)
    first, second = fake_llm.requests
    assert first["response_format"]["type"] == "json_schema"
    assert set(first["response_format"]["json_schema"]["schema"]["properties"]) == {
        "category",
        "summary",
        "reasoning",
        "action",
        "confidence",
    }
    assert first["max_completion_tokens"] == 800 and "max_tokens" not in first
    assert "response_format" not in second and "temperature" not in second
    # A keyless local server (Ollama, llama.cpp) gets a placeholder, never an env-supplied key.
    assert fake_llm.headers[1]["authorization"] == f"Bearer {PLACEHOLDER_KEY}"


async def test_azure_openai_by_config(fake_llm: FakeLLM, reasoners: Make) -> None:
    fake_llm.script(reply(answer_for("oom")))
    reasoner = reasoners(config(fake_llm, api_version="2024-10-21", model="my-deployment"))
    d = await reasoner.diagnose(evidence(), ACTIONS)
    assert d.category is Category.OOM
    assert "/openai/deployments/my-deployment/chat/completions?api-version=2024-10-21" in fake_llm.paths[0]
    assert fake_llm.headers[0]["api-key"] == "test-key"


@pytest.mark.parametrize(
    ("behaviour", "fragment"),
    [
        (reply("The pod is out of memory, restart it."), "invalid LLM answer: not JSON"),
        (reply({**answer_for("oom"), "category": "gremlins"}), "category"),
        (reply({**answer_for("oom"), "confidence": 7}), "confidence: 7 is outside 0..1"),
        (reply({**answer_for("oom"), "kubectl": "delete ns prod"}), "'kubectl' was unexpected"),
        (garbage(b"<html><body>502 Bad Gateway</body></html>"), "not a chat completion"),
        (status(200, {"id": "x", "object": "chat.completion", "choices": []}), "incomplete chat completion"),
        (
            status(200, chat_completion({"role": "assistant", "content": '{"categ'}, "length")),
            "cut off at 800 tokens",
        ),
        (
            status(200, chat_completion({"role": "assistant", "content": None, "refusal": "I cannot help"})),
            "refused: I cannot help",
        ),
    ],
)
async def test_bad_answers_fail_once_without_retrying(
    fake_llm: FakeLLM, behaviour: Any, fragment: str, reasoners: Make
) -> None:
    fake_llm.script(behaviour)
    outcomes: list[str] = []
    reasoner = reasoners(config(fake_llm), on_call=lambda s, t, o: outcomes.append(o))
    with pytest.raises(ReasonerError) as info:
        await reasoner.diagnose(evidence(), ACTIONS)
    assert fragment in str(info.value) and "\n" not in str(info.value)
    assert len(fake_llm.requests) == 1
    assert outcomes == ["invalid_answer"]


async def test_429_retry_after_is_honoured(fake_llm: FakeLLM, reasoners: Make) -> None:
    fake_llm.script(status(429, headers={"Retry-After": "1"}), reply(answer_for("oom")))
    reasoner = reasoners(config(fake_llm, backoff_max=5))
    started = time.monotonic()
    d = await reasoner.diagnose(evidence(), ACTIONS)
    elapsed = time.monotonic() - started
    assert d.category is Category.OOM
    assert len(fake_llm.requests) == 2
    assert 0.95 <= elapsed < 2.5


async def test_retry_after_ms_and_the_backoff_cap(fake_llm: FakeLLM, reasoners: Make) -> None:
    fake_llm.script(
        status(503, headers={"retry-after-ms": "50"}),
        status(429, headers={"Retry-After": "3600"}),  # capped by backoff_max
        reply(answer_for("oom")),
    )
    reasoner = reasoners(config(fake_llm, backoff_max=0.2))
    started = time.monotonic()
    await reasoner.diagnose(evidence(), ACTIONS)
    assert len(fake_llm.requests) == 3
    assert time.monotonic() - started < 1.5


async def test_server_errors_are_retried_then_reported(fake_llm: FakeLLM, reasoners: Make) -> None:
    fake_llm.default = status(500)
    outcomes: list[str] = []
    reasoner = reasoners(config(fake_llm), on_call=lambda s, t, o: outcomes.append(o))
    with pytest.raises(ReasonerError, match=r"HTTP 500.*after 3 attempts"):
        await reasoner.diagnose(evidence(), ACTIONS)
    assert len(fake_llm.requests) == 3
    assert outcomes == ["server_error"]


@pytest.mark.parametrize(
    ("code", "fragment"),
    [(400, "HTTP 400"), (401, "SRE_AGENT_LLM_API_KEY"), (403, "HTTP 403"), (404, "SRE_AGENT_LLM_MODEL")],
)
async def test_client_errors_are_not_retried(
    fake_llm: FakeLLM, code: int, fragment: str, reasoners: Make
) -> None:
    fake_llm.default = status(code)
    with pytest.raises(ReasonerError, match=fragment):
        await reasoners(config(fake_llm)).diagnose(evidence(), ACTIONS)
    assert len(fake_llm.requests) == 1


async def test_quota_exhaustion_is_not_retried(fake_llm: FakeLLM, reasoners: Make) -> None:
    fake_llm.default = status(
        429, {"error": {"message": "You exceeded your quota", "code": "insufficient_quota"}}
    )
    with pytest.raises(ReasonerError, match="exceeded your quota"):
        await reasoners(config(fake_llm)).diagnose(evidence(), ACTIONS)
    assert len(fake_llm.requests) == 1


async def test_a_hanging_server_times_out(fake_llm: FakeLLM, reasoners: Make) -> None:
    fake_llm.script(hang(5))
    reasoner = reasoners(config(fake_llm, timeout_seconds=0.5, max_retries=0))
    started = time.monotonic()
    with pytest.raises(ReasonerError, match=r"no LLM answer within 0.5s"):
        await reasoner.diagnose(evidence(), ACTIONS)
    assert time.monotonic() - started < 1.5


async def test_the_overall_deadline_bounds_retries(fake_llm: FakeLLM, reasoners: Make) -> None:
    fake_llm.default = hang(5)
    reasoner = reasoners(config(fake_llm, timeout_seconds=0.4, max_retries=10, deadline_seconds=1.0))
    started = time.monotonic()
    with pytest.raises(ReasonerError, match="deadline"):
        await reasoner.diagnose(evidence(), ACTIONS)
    assert time.monotonic() - started < 1.6
    assert 2 <= len(fake_llm.requests) <= 3


async def test_an_unreachable_endpoint_fails_cleanly(reasoners: Make) -> None:
    with FakeLLM() as fake:
        url = fake.base_url  # a port that was just free, now closed
    reasoner = reasoners(
        LLMConfig(base_url=url, api_key="k", max_retries=1, backoff_base=0.01, timeout_seconds=1)
    )
    with pytest.raises(ReasonerError, match="cannot reach the LLM endpoint"):
        await reasoner.diagnose(evidence(), ACTIONS)


async def test_circuit_opens_fails_fast_then_half_opens(fake_llm: FakeLLM, reasoners: Make) -> None:
    fake_llm.default = status(500)
    clock = FakeClock()
    outcomes: list[str] = []
    reasoner = reasoners(
        config(fake_llm, max_retries=0, circuit_failures=3, circuit_reset_seconds=60),
        monotonic=clock,
        on_call=lambda s, t, o: outcomes.append(o),
    )
    for _ in range(3):
        with pytest.raises(ReasonerError, match="HTTP 500"):
            await reasoner.diagnose(evidence(), ACTIONS)
    assert len(fake_llm.requests) == 3
    for _ in range(5):
        with pytest.raises(ReasonerError, match="circuit open after 3 consecutive"):
            await reasoner.diagnose(evidence(), ACTIONS)
    assert len(fake_llm.requests) == 3  # failed fast, the server saw nothing
    assert outcomes[-1] == "circuit_open"

    clock.t += 61  # half-open: one trial; it fails, so the circuit opens again
    with pytest.raises(ReasonerError, match="HTTP 500"):
        await reasoner.diagnose(evidence(), ACTIONS)
    with pytest.raises(ReasonerError, match="circuit open"):
        await reasoner.diagnose(evidence(), ACTIONS)
    assert len(fake_llm.requests) == 4

    clock.t += 61  # the next trial succeeds and closes it
    fake_llm.default = reply(answer_for("oom"))
    assert (await reasoner.diagnose(evidence(), ACTIONS)).category is Category.OOM
    assert (await reasoner.diagnose(evidence(), ACTIONS)).category is Category.OOM
    assert reasoner.breaker.state == "closed" and len(fake_llm.requests) == 6


def test_half_open_lets_exactly_one_trial_through() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=1, reset_seconds=10, monotonic=clock)
    breaker.acquire()
    breaker.failure()
    with pytest.raises(ReasonerError):
        breaker.acquire()
    clock.t += 10
    breaker.acquire()  # the trial
    with pytest.raises(ReasonerError, match="trial call is in flight"):
        breaker.acquire()
    breaker.abandon()  # cancelled: the next caller may try
    breaker.acquire()
    breaker.success()
    assert breaker.state == "closed"


async def test_concurrency_is_bounded(fake_llm: FakeLLM, reasoners: Make) -> None:
    fake_llm.default = reply(answer_for("oom"))
    fake_llm.script(*[hang(0.3) for _ in range(4)])
    reasoner = reasoners(config(fake_llm, max_concurrency=2))
    started = time.monotonic()
    results = await asyncio.gather(*[reasoner.diagnose(evidence(), ACTIONS) for _ in range(4)])
    assert all(d.category is Category.OOM for d in results)
    assert time.monotonic() - started >= 0.55  # two waves of two, not one wave of four


async def test_a_failing_metrics_hook_does_not_break_diagnosis(fake_llm: FakeLLM, reasoners: Make) -> None:
    fake_llm.script(reply(answer_for("oom")))
    calls: list[tuple[float, int, str]] = []

    def hook(seconds: float, tokens: int, outcome: str) -> None:
        calls.append((seconds, tokens, outcome))
        raise RuntimeError("metrics backend down")

    d = await reasoners(config(fake_llm), on_call=hook).diagnose(evidence(), ACTIONS)
    assert d.category is Category.OOM
    [(seconds, tokens, outcome)] = calls
    assert seconds >= 0 and tokens == 150 and outcome == "ok"


async def test_a_429_holds_back_the_other_calls_until_its_retry_after(
    fake_llm: FakeLLM, reasoners: Make
) -> None:
    """Concurrent calls (replay --concurrency) wait out a rate limit another call was told about."""
    fake_llm.script(status(429, headers={"Retry-After": "2"}))
    fake_llm.default = reply(answer_for("oom"))
    waits: list[float] = []
    release, entered = asyncio.Event(), asyncio.Event()

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        entered.set()
        await release.wait()

    reasoner = reasoners(config(fake_llm, backoff_max=5), sleep=sleep, monotonic=lambda: 500.0)
    first = asyncio.create_task(reasoner.diagnose(evidence(), ACTIONS))
    await asyncio.wait_for(entered.wait(), 10)  # the first call got its 429 and sits out the Retry-After
    entered.clear()
    second = asyncio.create_task(reasoner.diagnose(evidence(), ACTIONS))
    await asyncio.wait_for(entered.wait(), 10)  # the second waits before sending anything
    assert waits == [2, 2] and len(fake_llm.requests) == 1
    release.set()
    assert (await first).category is Category.OOM and (await second).category is Category.OOM
    assert len(fake_llm.requests) == 3 and waits == [2, 2]
