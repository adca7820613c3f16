"""Literal gates: skip a regular expression when the text cannot match it.

Python's `re` tries every alternative of a pattern at every position of the text, so a
pattern of thirty alternatives costs tens of microseconds per log line even when nothing
matches, which is almost always. Most patterns here name words (`connection refused`,
`password`): every match contains one of a few literal strings. `gate(pattern)` finds such
a set from the parsed pattern; `in` checks on the case-folded text (`fold`) are then far
cheaper than the search, and the search runs only when one of them is present.

A gate never changes a result: it only says "cannot match" when no match is possible. It is
derived from the pattern itself (no hand-kept word lists), falls back to "always search" for
anything it does not understand, and `fold` maps every character that `re.IGNORECASE` lets
stand for an ASCII letter (the Kelvin sign, dotted and dotless i, long s) to that letter.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

# re's own parser (typeshed has no stub for re._parser; sre_parse warns on import since 3.11).
_parser: Any = importlib.import_module("re._parser")
_constants: Any = importlib.import_module("re._constants")

# The only non-ASCII characters that re.IGNORECASE matches against an ASCII letter (checked over
# every code point by tests/unit/test_literal_gates.py).
_FOLD = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"})

Gate = Callable[[str], bool]  # takes fold(text); False only when the pattern cannot match


def fold(text: str) -> str:
    """The text as gates read it: lower case, with re's extra case equivalences applied."""
    return text.lower() if text.isascii() else text.translate(_FOLD).lower()


def _best(options: list[frozenset[str]]) -> frozenset[str] | None:
    """The most selective of several sets that each must occur: the one with the longest shortest word."""
    if not options:
        return None
    return max(options, key=lambda s: (min(len(w) for w in s), -len(s)))


def _required(items: Any) -> frozenset[str] | None:
    """A set of strings one of which every match of this parsed sequence contains, or None."""
    options: list[frozenset[str]] = []
    run: list[str] = []

    def close() -> None:
        if run:
            options.append(frozenset({"".join(run)}))
            run.clear()

    c = _constants
    for op, av in items:
        if op is c.LITERAL and av < 128:
            run.append(chr(av).lower())
            continue
        close()
        found: frozenset[str] | None = None
        if op is c.SUBPATTERN:
            found = _required(av[3])
        elif op is c.ATOMIC_GROUP:
            found = _required(av)
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT) and av[0] >= 1:
            found = _required(av[2])
        elif op is c.ASSERT and av[0] == 1:  # positive lookahead: must match inside the text too
            found = _required(av[1])
        elif op is c.BRANCH:
            branches = [_required(b) for b in av[1]]
            if all(b is not None for b in branches):
                found = frozenset().union(*(b for b in branches if b is not None))
        if found:
            options.append(found)
    close()
    return _best([o for o in options if all(o)])


def requirement(pattern: re.Pattern[str]) -> tuple[frozenset[str] | None, int]:
    """(words one of which every match contains, or None; the shortest match's length)."""
    if pattern.flags & re.LOCALE or not isinstance(pattern.pattern, str):
        return None, 0
    try:
        parsed = _parser.parse(pattern.pattern, pattern.flags)
        words = _required(parsed.data)
        low, _ = parsed.getwidth()
    except Exception:  # a pattern the parser reads differently: no gate, same results
        return None, 0
    return words, int(low)


def gate(pattern: re.Pattern[str]) -> Gate | None:
    """A cheap test on `fold(text)` that is False only when `pattern` cannot match; None: always search."""
    words, low = requirement(pattern)
    if words is None:
        if low <= 1:
            return None
        return lambda text: len(text) >= low
    needles = tuple(sorted(words, key=len, reverse=True))
    return lambda text: any(map(text.__contains__, needles))
