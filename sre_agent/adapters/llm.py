"""The LLM reasoner: diagnoses Evidence through any OpenAI-compatible chat completions endpoint.

The one module that talks to an LLM. Works by configuration alone with OpenAI, Azure
OpenAI (set SRE_AGENT_LLM_API_VERSION), vLLM, Ollama and llama.cpp servers. Around the
openai client (whose own retries are off) it adds what an operator needs from a remote
dependency: per-attempt timeouts, bounded retries with exponential backoff and jitter that
honour Retry-After, an overall deadline, a circuit breaker and a concurrency limit.
Every failure surfaces as a one-line ReasonerError, so the pipeline falls back to rules.

Built once at start-up from LLMConfig.from_env() by the CLI/operator wiring, and passed to
the core Pipeline as its Reasoner (with `reasoner_id` as the cache key prefix).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal, get_args

import openai
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam, completion_create_params

from sre_agent.core.llm_answer import answer_schema, parse_answer
from sre_agent.core.prompts import Prompts, load_prompts
from sre_agent.core.reasoning import ReasonerError
from sre_agent.domain import Diagnosis, Evidence

log = logging.getLogger(__name__)

ResponseFormat = Literal["json_object", "json_schema", "none"]
MaxTokensField = Literal["max_tokens", "max_completion_tokens"]
# What on_call reports as the outcome of one diagnose() call.
Outcome = Literal[
    "ok",
    "invalid_answer",
    "timeout",
    "rate_limited",
    "server_error",
    "client_error",
    "connection_error",
    "circuit_open",
    "error",
]
OnCall = Callable[[float, int, str], None]

DEFAULT_MODEL = "gpt-4o-mini"
# Keyless local servers (Ollama, llama.cpp, vLLM) ignore the key, but the client insists on one.
PLACEHOLDER_KEY = "sk-no-key-configured"
_MAX_MESSAGE = 200


class LLMConfigError(ValueError):
    """An SRE_AGENT_LLM_* setting is invalid; the message names the variable."""


@dataclass(frozen=True)
class LLMConfig:
    """How to reach the model and how hard to try. Secrets stay out of repr()."""

    base_url: str  # "" means the client's default (api.openai.com)
    model: str = DEFAULT_MODEL
    api_key: str = field(default="", repr=False)
    api_version: str = ""  # set: Azure OpenAI (base_url is then the resource endpoint)
    timeout_seconds: float = 20
    deadline_seconds: float = 60  # the whole diagnose() call, retries and queueing included
    max_retries: int = 2
    backoff_base: float = 0.5
    backoff_max: float = 8
    circuit_failures: int = 5
    circuit_reset_seconds: float = 60
    max_concurrency: int = 4
    temperature: float | None = 0  # None: not sent (models that only accept their default)
    response_format: ResponseFormat = "json_object"
    max_tokens: int = 800
    max_tokens_field: MaxTokensField = "max_tokens"  # newer OpenAI models want max_completion_tokens
    prompts_dir: str = ""  # "": the packaged prompts

    def __post_init__(self) -> None:
        checks: list[tuple[str, object, bool, str]] = [
            ("SRE_AGENT_LLM_MODEL", self.model, bool(self.model.strip()), "must not be empty"),
            ("SRE_AGENT_LLM_TIMEOUT", self.timeout_seconds, self.timeout_seconds > 0, "must be above 0"),
            ("SRE_AGENT_LLM_DEADLINE", self.deadline_seconds, self.deadline_seconds > 0, "must be above 0"),
            ("SRE_AGENT_LLM_MAX_RETRIES", self.max_retries, self.max_retries >= 0, "must be 0 or more"),
            ("SRE_AGENT_LLM_BACKOFF_BASE", self.backoff_base, self.backoff_base >= 0, "must be 0 or more"),
            ("SRE_AGENT_LLM_BACKOFF_MAX", self.backoff_max, self.backoff_max >= 0, "must be 0 or more"),
            (
                "SRE_AGENT_LLM_CIRCUIT_FAILURES",
                self.circuit_failures,
                self.circuit_failures >= 1,
                "must be 1 or more",
            ),
            (
                "SRE_AGENT_LLM_CIRCUIT_RESET",
                self.circuit_reset_seconds,
                self.circuit_reset_seconds >= 0,
                "must be 0 or more",
            ),
            (
                "SRE_AGENT_LLM_MAX_CONCURRENCY",
                self.max_concurrency,
                self.max_concurrency >= 1,
                "must be 1 or more",
            ),
            ("SRE_AGENT_LLM_MAX_TOKENS", self.max_tokens, self.max_tokens >= 1, "must be 1 or more"),
            (
                "SRE_AGENT_LLM_TEMPERATURE",
                self.temperature,
                self.temperature is None or 0 <= self.temperature <= 2,
                "must be between 0 and 2, or none",
            ),
            (
                "SRE_AGENT_LLM_RESPONSE_FORMAT",
                self.response_format,
                self.response_format in get_args(ResponseFormat),
                f"must be one of {', '.join(get_args(ResponseFormat))}",
            ),
            (
                "SRE_AGENT_LLM_MAX_TOKENS_FIELD",
                self.max_tokens_field,
                self.max_tokens_field in get_args(MaxTokensField),
                f"must be one of {', '.join(get_args(MaxTokensField))}",
            ),
            (
                "SRE_AGENT_LLM_BASE_URL",
                self.base_url,
                bool(self.base_url) or not self.api_version,
                "Azure OpenAI (SRE_AGENT_LLM_API_VERSION) needs the resource endpoint",
            ),
        ]
        for name, value, ok, rule in checks:
            if not ok:
                raise LLMConfigError(f"{name}={value!r}: {rule}")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LLMConfig | None:
        """Read SRE_AGENT_LLM_*; None when neither a base URL nor a key is set (rules only)."""
        base_url = env.get("SRE_AGENT_LLM_BASE_URL", "").strip()
        api_key = (env.get("SRE_AGENT_LLM_API_KEY") or env.get("OPENAI_API_KEY") or "").strip()
        if not base_url and not api_key:
            return None
        defaults = cls(base_url=base_url)

        def number(name: str, default: float) -> float:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise LLMConfigError(f"{name}={raw!r}: expected a number") from None
            if not math.isfinite(value):
                raise LLMConfigError(f"{name}={raw!r}: expected a finite number")
            return value

        def integer(name: str, default: int) -> int:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                return int(raw)
            except ValueError:
                raise LLMConfigError(f"{name}={raw!r}: expected an integer") from None

        def choice(name: str, default: str, allowed: tuple[str, ...]) -> Any:
            raw = env.get(name, "").strip().lower() or default
            if raw not in allowed:
                raise LLMConfigError(f"{name}={raw!r}: expected one of {', '.join(allowed)}")
            return raw

        raw_temperature = env.get("SRE_AGENT_LLM_TEMPERATURE", "").strip().lower()
        temperature: float | None = (
            None if raw_temperature in ("none", "default") else number("SRE_AGENT_LLM_TEMPERATURE", 0.0)
        )
        return cls(
            base_url=base_url,
            model=env.get("SRE_AGENT_LLM_MODEL", "").strip() or DEFAULT_MODEL,
            api_key=api_key,
            api_version=env.get("SRE_AGENT_LLM_API_VERSION", "").strip(),
            timeout_seconds=number("SRE_AGENT_LLM_TIMEOUT", defaults.timeout_seconds),
            deadline_seconds=number("SRE_AGENT_LLM_DEADLINE", defaults.deadline_seconds),
            max_retries=integer("SRE_AGENT_LLM_MAX_RETRIES", defaults.max_retries),
            backoff_base=number("SRE_AGENT_LLM_BACKOFF_BASE", defaults.backoff_base),
            backoff_max=number("SRE_AGENT_LLM_BACKOFF_MAX", defaults.backoff_max),
            circuit_failures=integer("SRE_AGENT_LLM_CIRCUIT_FAILURES", defaults.circuit_failures),
            circuit_reset_seconds=number("SRE_AGENT_LLM_CIRCUIT_RESET", defaults.circuit_reset_seconds),
            max_concurrency=integer("SRE_AGENT_LLM_MAX_CONCURRENCY", defaults.max_concurrency),
            temperature=temperature,
            response_format=choice(
                "SRE_AGENT_LLM_RESPONSE_FORMAT", defaults.response_format, get_args(ResponseFormat)
            ),
            max_tokens=integer("SRE_AGENT_LLM_MAX_TOKENS", defaults.max_tokens),
            max_tokens_field=choice(
                "SRE_AGENT_LLM_MAX_TOKENS_FIELD", defaults.max_tokens_field, get_args(MaxTokensField)
            ),
            prompts_dir=env.get("SRE_AGENT_LLM_PROMPTS_DIR", "").strip(),
        )


def make_client(config: LLMConfig) -> openai.AsyncOpenAI:
    """The openai client for the configured endpoint, with its own retries off (we retry)."""
    key = config.api_key or PLACEHOLDER_KEY
    if config.api_version:
        # Azure OpenAI: base_url is the resource endpoint, model is the deployment name,
        # and the key goes into the api-key header.
        return openai.AsyncAzureOpenAI(
            azure_endpoint=config.base_url,
            api_version=config.api_version,
            api_key=key,
            timeout=config.timeout_seconds,
            max_retries=0,
        )
    return openai.AsyncOpenAI(
        base_url=config.base_url or None,
        api_key=key,
        timeout=config.timeout_seconds,
        max_retries=0,
    )


class LLMCallError(ReasonerError):
    """A failed LLM call, with the outcome reported to metrics."""

    def __init__(
        self, message: str, outcome: Outcome, retryable: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.outcome: Outcome = outcome
        self.retryable = retryable
        self.retry_after = retry_after


def _one_line(text: object) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= _MAX_MESSAGE else line[: _MAX_MESSAGE - 3] + "..."


def retry_after_seconds(
    headers: Mapping[str, str], now: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> float | None:
    """The server's requested delay: retry-after-ms, or Retry-After in seconds or as an HTTP date."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms", "").strip()
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = lowered.get("retry-after", "").strip()
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now()).total_seconds())


def _status_error(exc: openai.APIStatusError) -> LLMCallError:
    code = exc.status_code
    body = exc.body
    detail: object = exc.message
    error_code = None
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            detail = inner.get("message") or detail
            error_code = inner.get("code")
        elif isinstance(inner, str):
            detail = inner
    hint = {
        401: " (check SRE_AGENT_LLM_API_KEY)",
        403: " (check SRE_AGENT_LLM_API_KEY)",
        404: " (check SRE_AGENT_LLM_BASE_URL and SRE_AGENT_LLM_MODEL)",
    }.get(code, "")
    message = f"LLM endpoint answered HTTP {code}{hint}: {_one_line(detail)}"
    # 429 "insufficient_quota" is a billing problem: waiting does not fix it.
    retryable = (code in (408, 409, 429) or code >= 500) and error_code != "insufficient_quota"
    outcome: Outcome = "rate_limited" if code == 429 else "server_error" if code >= 500 else "client_error"
    return LLMCallError(message, outcome, retryable, retry_after_seconds(exc.response.headers))


class CircuitBreaker:
    """Closed -> open after N consecutive failures -> half-open after reset_seconds (one trial call)."""

    def __init__(
        self, failures: int, reset_seconds: float, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = failures
        self.reset_seconds = reset_seconds
        self._now = monotonic
        self.consecutive_failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> Literal["closed", "open", "half_open"]:
        if self._opened_at is None:
            return "closed"
        if self._now() - self._opened_at >= self.reset_seconds:
            return "half_open"
        return "open"

    def acquire(self) -> None:
        """Let a call through, or raise ReasonerError at once while the circuit is open."""
        state = self.state
        if state == "closed":
            return
        if state == "half_open" and not self._trial_running:
            self._trial_running = True  # exactly one trial call; the others keep failing fast
            return
        assert self._opened_at is not None
        wait = max(0.0, self.reset_seconds - (self._now() - self._opened_at))
        why = "a trial call is in flight" if state == "half_open" else f"next trial in {wait:.0f}s"
        raise LLMCallError(
            f"circuit open after {self.consecutive_failures} consecutive LLM failures ({why})", "circuit_open"
        )

    def success(self) -> None:
        self.consecutive_failures = 0
        self._opened_at = None
        self._trial_running = False

    def failure(self) -> None:
        self.consecutive_failures += 1
        if self._trial_running or self.consecutive_failures >= self.threshold:
            self._opened_at = self._now()
        self._trial_running = False

    def abandon(self) -> None:
        """The call was cancelled (shutdown): neither a success nor a failure."""
        self._trial_running = False


class OpenAIReasoner:
    """A Reasoner backed by an OpenAI-compatible endpoint."""

    name = "llm"

    def __init__(
        self,
        config: LLMConfig,
        *,
        prompts: Prompts | None = None,
        client: openai.AsyncOpenAI | None = None,
        on_call: OnCall | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.prompts = prompts if prompts is not None else load_prompts(config.prompts_dir or None)
        self.client = client if client is not None else make_client(config)
        self.breaker = CircuitBreaker(config.circuit_failures, config.circuit_reset_seconds, monotonic)
        self._on_call = on_call
        self._monotonic = monotonic
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._semaphore = asyncio.Semaphore(config.max_concurrency)
        # A 429's Retry-After holds back every call of this reasoner, not just the one that got
        # it: concurrent calls (replay --concurrency, many incidents at once) wait it out too.
        self._resume_at = 0.0

    @property
    def reasoner_id(self) -> str:
        """Model + prompt version: the cache key prefix, so a new model or prompt never reuses answers."""
        return f"{self.config.model}@{self.prompts.prompt_version}"

    async def aclose(self) -> None:
        await self.client.close()

    async def diagnose(self, evidence: Evidence, allowed_actions: str) -> Diagnosis:
        started = self._monotonic()
        try:
            self.breaker.acquire()
        except LLMCallError as exc:
            self._report(0.0, 0, exc.outcome)
            raise
        try:
            diagnosis = await asyncio.wait_for(
                self._diagnose(evidence, allowed_actions, started), timeout=self.config.deadline_seconds
            )
        except TimeoutError:
            self.breaker.failure()
            self._report(self._monotonic() - started, 0, "timeout")
            raise LLMCallError(
                f"no LLM answer within the {self.config.deadline_seconds:g}s deadline", "timeout"
            ) from None
        except LLMCallError as exc:
            self.breaker.failure()
            self._report(self._monotonic() - started, 0, exc.outcome)
            log.warning("LLM diagnosis failed for %s/%s: %s", evidence.pod.namespace, evidence.pod.name, exc)
            raise
        except asyncio.CancelledError:
            self.breaker.abandon()
            raise
        except Exception as exc:  # anything else the client library may raise
            self.breaker.failure()
            self._report(self._monotonic() - started, 0, "error")
            raise LLMCallError(f"LLM call failed: {type(exc).__name__}: {_one_line(exc)}", "error") from exc
        self.breaker.success()
        self._report(self._monotonic() - started, diagnosis.tokens, "ok")
        return diagnosis

    async def _diagnose(self, evidence: Evidence, allowed_actions: str, started: float) -> Diagnosis:
        async with self._semaphore:
            prompt = self.prompts.render(evidence, allowed_actions)
            messages: list[ChatCompletionMessageParam] = [
                {"role": "system", "content": prompt.system},
                {"role": "user", "content": prompt.user},
            ]
            response = await self._call_with_retries(messages, started)
            return self._to_diagnosis(response)

    async def _call_with_retries(self, messages: list[ChatCompletionMessageParam], started: float) -> object:
        cfg = self.config
        attempt = 0
        sat_out = 0.0  # the shared rate-limit pause this call has already waited for
        while True:
            if self._resume_at > sat_out:
                sat_out = self._resume_at
                wait = self._resume_at - self._monotonic()
                left = cfg.deadline_seconds - (self._monotonic() - started)
                if wait > 0:
                    await self._sleep(min(wait, max(left, 0.0)))
            try:
                return await asyncio.wait_for(self._create(messages), timeout=cfg.timeout_seconds)
            except TimeoutError:
                failure = LLMCallError(f"no LLM answer within {cfg.timeout_seconds:g}s", "timeout", True)
            except openai.APIStatusError as exc:
                failure = _status_error(exc)
            except openai.APITimeoutError:
                failure = LLMCallError(f"no LLM answer within {cfg.timeout_seconds:g}s", "timeout", True)
            except openai.APIConnectionError as exc:
                cause = exc.__cause__ or exc
                failure = LLMCallError(
                    f"cannot reach the LLM endpoint: {_one_line(cause) or type(cause).__name__}",
                    "connection_error",
                    True,
                )
            except openai.APIResponseValidationError as exc:
                failure = LLMCallError(
                    f"LLM endpoint sent a malformed response: {_one_line(exc)}", "invalid_answer"
                )
            except ValueError as exc:  # e.g. a 200 whose body claims JSON but is not
                failure = LLMCallError(
                    f"LLM endpoint sent a body that is not JSON: {_one_line(exc)}", "invalid_answer"
                )
            if not failure.retryable or attempt >= cfg.max_retries:
                if attempt:
                    raise LLMCallError(f"{failure} (after {attempt + 1} attempts)", failure.outcome)
                raise failure
            delay = failure.retry_after if failure.retry_after is not None else self._backoff(attempt)
            delay = min(delay, cfg.backoff_max)
            left = cfg.deadline_seconds - (self._monotonic() - started)
            if delay >= left:
                raise LLMCallError(f"{failure}; no time left to retry within the deadline", failure.outcome)
            attempt += 1
            log.info("LLM call failed (%s), retry %d/%d in %.2fs", failure, attempt, cfg.max_retries, delay)
            if failure.outcome == "rate_limited" and failure.retry_after is not None:
                sat_out = self._monotonic() + delay
                self._resume_at = max(self._resume_at, sat_out)
            await self._sleep(delay)

    def _backoff(self, attempt: int) -> float:
        # Exponential with "equal jitter": at least half the step, so retries still spread out.
        step = min(self.config.backoff_max, self.config.backoff_base * 2.0**attempt)
        return step / 2 + self._rng.uniform(0, step / 2)

    async def _create(self, messages: list[ChatCompletionMessageParam]) -> object:
        cfg = self.config
        response_format: completion_create_params.ResponseFormat | openai.Omit = openai.omit
        if cfg.response_format == "json_object":
            response_format = {"type": "json_object"}
        elif cfg.response_format == "json_schema":
            schema = {k: v for k, v in answer_schema().items() if not k.startswith("$")}
            # strict=False: strict mode forbids free-form objects such as "parameters".
            response_format = {
                "type": "json_schema",
                "json_schema": {"name": "diagnosis", "schema": schema, "strict": False},
            }
        limit = cfg.max_tokens
        response: object = await self.client.chat.completions.create(
            model=cfg.model,
            messages=messages,
            temperature=openai.omit if cfg.temperature is None else cfg.temperature,
            response_format=response_format,
            max_tokens=limit if cfg.max_tokens_field == "max_tokens" else openai.omit,
            max_completion_tokens=limit if cfg.max_tokens_field == "max_completion_tokens" else openai.omit,
        )
        return response

    def _to_diagnosis(self, response: object) -> Diagnosis:
        if not isinstance(response, ChatCompletion):
            preview = _one_line(response)[:80]
            raise LLMCallError(
                f"LLM endpoint sent a body that is not a chat completion: {preview!r}", "invalid_answer"
            )
        try:
            choice = response.choices[0]
            content = choice.message.content
            finish = choice.finish_reason
            refusal = getattr(choice.message, "refusal", None)
            tokens = int(response.usage.total_tokens) if response.usage else 0
            model = str(response.model or self.config.model)
        except (AttributeError, IndexError, TypeError, ValueError) as exc:
            raise LLMCallError(
                f"LLM endpoint sent an incomplete chat completion: {_one_line(exc)}", "invalid_answer"
            ) from None
        if finish == "length":
            raise LLMCallError(
                f"invalid LLM answer: cut off at {self.config.max_tokens} tokens (raise SRE_AGENT_LLM_MAX_TOKENS)",
                "invalid_answer",
            )
        if not content:
            why = f"refused: {_one_line(refusal)}" if refusal else "empty content"
            raise LLMCallError(f"invalid LLM answer: {why}", "invalid_answer")
        try:
            return parse_answer(content, model, tokens)
        except ReasonerError as exc:
            raise LLMCallError(str(exc), "invalid_answer") from None

    def _report(self, seconds: float, tokens: int, outcome: Outcome) -> None:
        if self._on_call is None:
            return
        try:
            self._on_call(seconds, tokens, outcome)
        except Exception:  # a metrics hook must never break a diagnosis
            log.exception("on_call hook failed")
