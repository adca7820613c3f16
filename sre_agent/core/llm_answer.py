"""Parsing the LLM's answer: raw text -> validated Diagnosis, or ReasonerError.

The model is asked for one JSON object (schemas/llm_answer.schema.json). Real models
sometimes wrap it in markdown fences, prefix a sentence, or emit a <think> block first;
those wrappers are removed, then the object is decoded and validated against the schema.
Anything else is refused with a one-line reason naming the field, so the pipeline falls
back to the rules. The action name is only checked for shape here: whether it is allowed
is the policy engine's call, made later for every decision.
Called by the LLM adapter (adapters.llm) for every answer; pure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from sre_agent.core.reasoning import ReasonerError
from sre_agent.domain import Category, Diagnosis, ProposedAction

SCHEMA_FILE = "llm_answer.schema.json"
_MAX_DETAIL = 160

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"^```[A-Za-z0-9_-]*[ \t]*\n(.*?)\n?```\s*$", re.DOTALL)


@cache
def answer_schema() -> dict[str, Any]:
    """The answer schema (also sent as response_format json_schema by the adapter)."""
    text = resources.files("sre_agent.schemas").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(answer_schema())


def _fail(detail: str) -> ReasonerError:
    one_line = " ".join(detail.split())
    if len(one_line) > _MAX_DETAIL:
        one_line = one_line[: _MAX_DETAIL - 3] + "..."
    return ReasonerError(f"invalid LLM answer: {one_line}")


def strip_wrappers(text: str) -> str:
    """The JSON object inside a model's reply: without think blocks, fences or chatter."""
    text = _THINK.sub("", text).strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    if not text.startswith("{"):
        # "Here is the diagnosis: {...}" -- take the outermost braces; the schema still decides.
        start, end = text.find("{"), text.rfind("}")
        if 0 <= start < end:
            text = text[start : end + 1]
    return text


def _reject_constant(name: str) -> Any:
    # json.loads accepts NaN and Infinity, and NaN slips past "minimum"/"maximum".
    raise ValueError(f"{name} is not a number JSON allows")


def _describe(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    kind = error.validator
    if kind == "required":
        return str(error.message).replace("is a required property", "is missing")
    if kind == "additionalProperties":
        return f"{where}: {error.message}"
    if kind == "enum":
        return f"{where}: {json.dumps(error.instance)[:40]} is not one of the allowed values"
    if kind == "maxLength":
        return f"{where}: longer than {error.validator_value} characters"
    if kind == "minLength":
        return f"{where}: must not be empty"
    if kind in ("minimum", "maximum"):
        return f"{where}: {error.instance!r} is outside 0..1"
    if kind == "type":
        return f"{where}: expected {error.validator_value}, got {type(error.instance).__name__}"
    if kind == "pattern":
        return f"{where}: {json.dumps(error.instance)[:40]} is not a lower_case action name"
    return f"{where}: {error.message}"


def _first_error(data: Any) -> jsonschema.ValidationError | None:
    errors = list(_validator().iter_errors(data))
    if not errors:
        return None
    # Deterministic and most specific: deepest path first, then by path and validator.
    return sorted(
        errors, key=lambda e: (-len(e.absolute_path), [str(p) for p in e.absolute_path], e.validator)
    )[0]


def parse_answer(text: str, model: str, tokens: int) -> Diagnosis:
    """Turn the model's reply into a Diagnosis(source="llm"), or raise ReasonerError."""
    if not isinstance(text, str) or not text.strip():
        raise _fail("empty reply")
    body = strip_wrappers(text)
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except (json.JSONDecodeError, ValueError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise _fail(f"not JSON ({reason})") from None
    if not isinstance(data, dict):
        raise _fail(f"expected a JSON object, got {type(data).__name__}")
    error = _first_error(data)
    if error is not None:
        raise _fail(_describe(error))
    if not data["summary"].strip():
        raise _fail("summary: must not be blank")
    action = data["action"]
    parameters: Mapping[str, Any] = action.get("parameters", {})  # an object, per the schema
    return Diagnosis(
        category=Category(data["category"]),
        summary=data["summary"].strip(),
        reasoning=data["reasoning"].strip(),
        action=ProposedAction(name=action["name"], parameters=dict(parameters)),
        confidence=float(data["confidence"]),
        source="llm",
        model=model,
        tokens=max(0, int(tokens)),
    )
