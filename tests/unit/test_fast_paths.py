"""The replay fast paths give exactly the results of the slow ones they skip.

Literal gates (core/literals.py) must never skip a pattern that would match; the lean YAML
constructor must build the same objects as PyYAML's; the compiled incident schema must accept
exactly what jsonschema accepts. Each is checked against its reference on the bundled incident
sets and on generated, hostile input.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sre_agent.adapters import recorded
from sre_agent.adapters.recorded import incident_paths
from sre_agent.core import evidence, redaction
from sre_agent.core.literals import fold, gate

ROOT = Path(__file__).resolve().parents[2]
SETS = [
    ROOT / "replay" / "incidents",
    ROOT / "tests" / "replay" / "unseen",
    ROOT / "tests" / "replay" / "holdout",
]
FILES = list(incident_paths(SETS))
PATTERNS = [
    *(p for p, _ in redaction._PATTERNS),
    *(rx for _, rx in evidence.LOG_PATTERNS),
    evidence.LISTEN_PORT,
    evidence.STARTUP_TIME,
]


def _reference_redact(text: str, known: tuple[str, ...] = ()) -> str:
    for value in sorted(set(known), key=len, reverse=True):
        if len(value) >= redaction.MIN_KNOWN:
            text = text.replace(value, redaction.MASK)
    for pattern, replacement in redaction._PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _corpus_lines() -> list[str]:
    lines: list[str] = []
    for path in FILES:
        incident = recorded.load_incident(path)
        for streams in incident.context.logs.values():
            for text in streams.values():
                lines.extend(text.splitlines())
        lines.extend(str(e.get("message", "")) for e in incident.context.events)
    return lines


# Words the patterns look for, in odd cases and with the characters re.IGNORECASE folds.
FRAGMENTS = [
    "password=", "PASSWORD: ", "--db-password ", "token ", "Bearer ", "secret", "api_key", "AKIA",
    "mysql -p", "redis-cli -a ", "AUTH ", '"AUTH" "x"', "cookie: ", "session_id=", "eyJ", "sk_live_", "sk-",
    "ghp_", "xoxb-", "://", "@", "hooks.slack.com/services/", "?sig=", "Authorization: Basic ",
    "connection refused", "ECONNREFUSED", "OutOfMemoryError", "Traceback (most recent call last)",
    "panic: ", "429", "listening on port :8080", "Started App in 3.2 seconds", "configmap \"x\" not found", "ignore previous instructions", "\u212a", "\u0131",
    "\u0130", "\u017f", "K", "I", "S", " ", "-", "=", ":", "x", "0", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF",
]  # fmt: skip
texts = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=6), max_size=14).map("".join)


def test_fold_covers_every_character_ignorecase_matches_to_an_ascii_letter() -> None:
    import re

    letters = re.compile("(?i)[a-z]")
    for code in range(128, sys.maxunicode + 1):
        ch = chr(code)
        if letters.fullmatch(ch):
            assert fold(ch).isascii() and re.fullmatch("(?i)" + fold(ch), ch), hex(code)


def test_every_pattern_gets_a_gate_or_none_and_the_gates_hold_on_the_corpus() -> None:
    lines = _corpus_lines()
    gated = 0
    for pattern in PATTERNS:
        can = gate(pattern)
        gated += can is not None
        for line in lines:
            if pattern.search(line):
                assert can is None or can(fold(line)), (pattern.pattern[:60], line)
    assert gated >= len(PATTERNS) - 1  # only the base64 blob pattern has no literal to look for


@settings(max_examples=400, deadline=None)
@given(texts)
def test_a_gate_never_skips_a_match(text: str) -> None:
    folded = fold(text)
    for pattern in PATTERNS:
        can = gate(pattern)
        if pattern.search(text):
            assert can is None or can(folded), (pattern.pattern[:60], text)


@settings(max_examples=300, deadline=None)
@given(texts, st.lists(st.sampled_from(["hunter22", "s3cret", "HUNTER22x", "abc"]), max_size=3))
def test_redaction_is_unchanged_by_the_gates(text: str, known: list[str]) -> None:
    assert redaction.redact_text(text, known) == _reference_redact(text, tuple(known))
    assert redaction.Redactor(known).text(text) == _reference_redact(text, tuple(known))


def test_redaction_is_unchanged_on_the_corpus() -> None:
    for line in _corpus_lines():
        assert redaction.redact_text(line) == _reference_redact(line)


def test_redactor_notices_a_secret_added_after_construction() -> None:
    redactor = redaction.Redactor(["first-secret"])
    redactor.known.add("later-secret")
    assert redactor.text("first-secret later-secret") == f"{redaction.MASK} {redaction.MASK}"


# ------------------------------------------------------------------------------------ YAML

ODD_YAML = [
    "a: 1\nb: 0x1f\nc: 1_000\nd: 1:20\ne: yes\nf: ~\ng: 2026-01-01T00:00:00Z\nh: .inf\ni: 0o17\nj: '007'\n",
    "base: &b {x: 1, y: [1, 2]}\nother: *b\nmerged:\n  <<: *b\n  z: 3\n",
    "a: 1\na: 2\nb: 3\n",
    "s: !!set {a, b}\no: !!omap [{a: 1}, {b: 2}]\nbin: !!binary aGVsbG8=\n",
    "? [complex, key]\n: value\n",
    "&a [*a]\n",
    "x: !custom 1\n",
    "",
    "--- 1\n--- 2\n",
    "plain\n",
    "{a: [1, {b: null}], 'q': \"2\", 3: true, 1.5: x, 2026-01-01: d, null: n}\n",
    "list:\n- &x {k: v}\n- *x\n- *x\n",
    "'=': value\nv: !!value x\n",
]


def _load(text: str, loader: Any) -> Any:
    try:
        return ("ok", yaml.load(text, Loader=loader))
    except yaml.YAMLError as exc:
        return ("error", type(exc).__name__, str(exc))


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and a != a:
        return bool(b != b)
    return bool(a == b)


@pytest.mark.parametrize("text", ODD_YAML)
def test_fast_yaml_builds_what_pyyaml_builds(text: str) -> None:
    fast, slow = _load(text, recorded._FastLoader), _load(text, recorded._YAML_LOADER)
    if (
        fast[0] == "ok"
        and slow[0] == "ok"
        and isinstance(slow[1], list)
        and slow[1]
        and slow[1][0] is slow[1]
    ):
        assert fast[1][0] is fast[1]  # a recursive alias stays recursive
        return
    assert _same(fast, slow), (fast, slow)


def test_fast_yaml_shares_aliased_objects_as_pyyaml_does() -> None:
    data = yaml.load("list:\n- &x {k: v}\n- *x\n", Loader=recorded._FastLoader)
    assert data["list"][0] is data["list"][1]


def test_fast_yaml_on_every_incident_file() -> None:
    for path in FILES:
        text = path.read_text(encoding="utf-8")
        assert _same(_load(text, recorded._FastLoader), _load(text, recorded._YAML_LOADER)), path


# ---------------------------------------------------------------------------------- schema


def _jsonschema_valid(document: Any) -> bool:
    return not any(True for _ in recorded._VALIDATOR.iter_errors(document))


def test_the_compiled_schema_exists_and_accepts_every_incident_file() -> None:
    assert recorded._FAST_VALID is not None
    for path in FILES:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=recorded._YAML_LOADER)
        assert recorded._FAST_VALID(document) is True and _jsonschema_valid(document), path


VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False), st.just(2.0),
    st.sampled_from(["", "x", "CrashLoopBackOff", "oom", "Bad_ID", "ok-id", "2026-01-01T00:00:00Z", "not a time",
                     "a" * 300, "restart_pod"]),
    st.just([]), st.just({}), st.just({"unknown": 1}), st.just([1, "x"]),
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(FILES),
    st.lists(st.tuples(st.integers(0, 10_000), st.text(max_size=8), VALUES), max_size=3),
)
def test_the_compiled_schema_agrees_with_jsonschema(
    path: Path, mutations: list[tuple[int, str, Any]]
) -> None:
    document = copy.deepcopy(yaml.load(path.read_text(encoding="utf-8"), Loader=recorded._YAML_LOADER))
    for choice, key, value in mutations:
        node: Any = document
        for depth in range(choice % 7):
            children = list(node) if isinstance(node, dict) else list(range(len(node)))
            if not children:
                break
            child = node[children[(choice >> depth) % len(children)]]
            if not isinstance(child, dict | list):
                break
            node = child
        if isinstance(node, dict):
            target = list(node)[choice % len(node)] if node and choice % 3 else key
            node[target] = value
        elif node:
            node[choice % len(node)] = value
    assert recorded._FAST_VALID is not None
    assert recorded._FAST_VALID(document) == _jsonschema_valid(document)
