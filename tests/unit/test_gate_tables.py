"""The one-pass literal gates give exactly the answers of the plain searches they replace.

`literals.matching` (which log patterns match a line), `literals.may_match` (which redaction
patterns can match a text), `literals.branches` (a pattern's top-level alternatives), the
cheap searches redaction runs before its two costliest patterns, and `evidence.scan_text`'s
shortcut are each checked against the plain `re` call on the bundled incident sets and on
generated, hostile text (the fragments the patterns look for, in odd cases, with the
characters re.IGNORECASE folds).
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sre_agent.adapters import recorded
from sre_agent.core import evidence, redaction
from sre_agent.core.literals import branches, fold, matching, may_match
from tests.unit.test_fast_paths import FILES, FRAGMENTS, PATTERNS

texts = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=6), max_size=14).map("".join)
LOG_PATTERNS = [rx for _, rx in evidence.LOG_PATTERNS]
EVENT_PATTERNS = [
    evidence.IMAGE_NOT_FOUND, evidence.IMAGE_AUTH, evidence.INVALID_IMAGE, evidence.SCHED_CAPACITY,
    evidence.SCHED_CONSTRAINT, evidence.UNBOUND_PVC, evidence.VOLUME_FAILURE, evidence.VOLUME_SUMMARY,
    evidence.MISSING_VOLUME_SOURCE, evidence.PROBE_REFUSED, evidence.PROBE_TIMEOUT, evidence.CONFIG_ECHO,
]  # fmt: skip
ALL = [*PATTERNS, *EVENT_PATTERNS]
LOG_MATCHING = matching(LOG_PATTERNS)
ALL_MATCHING = matching(ALL)
ALL_MAY_MATCH = may_match(ALL)


def _texts_of_the_corpus() -> list[str]:
    out: list[str] = []
    for path in FILES:
        ctx = recorded.load_incident(path).context
        for streams in ctx.logs.values():
            for text in streams.values():
                out.append(text)
                out.extend(text.splitlines())
        out.extend(str(e.get("message", "")) for e in ctx.events)
    return out


CORPUS = _texts_of_the_corpus()


def _check(text: str) -> None:
    folded = fold(text)
    expected = [i for i, p in enumerate(ALL) if p.search(text)]
    assert ALL_MATCHING(text, folded) == expected, text
    assert LOG_MATCHING(text, folded) == [i for i, p in enumerate(LOG_PATTERNS) if p.search(text)]
    assert set(expected) <= set(ALL_MAY_MATCH(folded)), text
    for pattern, needed in redaction._NEEDS.items():
        if pattern.search(text):
            assert needed.search(fold(text)), (pattern.pattern[:40], text)
    assert evidence.scan_text(text) == evidence.CONFIG_ECHO.sub(" ", text)


def test_on_the_corpus() -> None:
    assert CORPUS
    for text in CORPUS:
        _check(text)


@settings(max_examples=500, deadline=None)
@given(texts)
def test_on_generated_text(text: str) -> None:
    _check(text)


@pytest.mark.parametrize(
    "text",
    [
        "x --db-password hunter2", "-x", "a=-b", "2026-11-20T09:56:18Z -Xmx512m", "ExitOnOutOfMemoryError=true",
        "curl -u admin:pw http://h", "--user=a:b", "-U x", "password = 'abc'", "api-key: abcd",
        "API_KEY=\u212aey1", "a" * 31, "b" * 32, "c/d+e_f-" * 5, "Killed process 12", "caf\u0130 \u017fecret=xyz",
    ],
)  # fmt: skip
def test_on_edge_cases(text: str) -> None:
    _check(text)


def test_branches_split_only_at_the_top_level() -> None:
    split = branches(re.compile(r"a(b|c)|[|x]|\||d(?:e|f)", re.I))
    assert [p.pattern for p in split] == ["a(b|c)", "[|x]", r"\|", "d(?:e|f)"]
    assert all(p.flags & re.I for p in split)
    for source in (r"(a)|\1", "(?x) a | b", "(?#a|b)c", "abc", r"[]|]", r"[^]|]x"):
        pattern = re.compile(source)
        assert len(branches(pattern)) == 1 or "]" in source
    assert [p.pattern for p in branches(re.compile(r"[]|]|q"))] == [r"[]|]", "q"]
    assert [p.pattern for p in branches(re.compile(r"[^]|]|q"))] == [r"[^]|]", "q"]


def test_redaction_keeps_its_results_on_the_corpus() -> None:
    from tests.unit.test_fast_paths import _reference_redact

    for text in CORPUS:
        assert redaction.redact_text(text, ["hunter22"]) == _reference_redact(text, ("hunter22",))
