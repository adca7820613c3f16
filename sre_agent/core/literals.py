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
from collections.abc import Callable, Sequence
from typing import Any

import ahocorasick

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
        if op is c.BRANCH and run:  # `-(?:u|-user)`: the text holds "-u" or "--user", not just "-"
            options.append(frozenset("".join(run) + _lead(b) for b in av[1]))
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


def _lead(items: Any) -> str:
    """The literal text every match of this parsed sequence starts with (may be empty)."""
    out = []
    for op, av in items:
        if op is not _constants.LITERAL or av >= 128:
            break
        out.append(chr(av).lower())
    return "".join(out)


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
    needles = _minimal(words)  # a word that contains another is found whenever that one is
    return lambda text: any(map(text.__contains__, needles))


def _minimal(words: frozenset[str]) -> tuple[str, ...]:
    """The words that contain no other word of the set: one of them is in any text holding any word."""
    return tuple(sorted(w for w in words if not any(v != w and v in w for v in words)))


def branches(pattern: re.Pattern[str]) -> tuple[re.Pattern[str], ...]:
    """The top-level alternatives of `pattern` (`a|b|c`), each compiled alone with its flags.

    A text has a match of the pattern exactly when it has a match of one of them (no alternative
    refers to another's groups: patterns with back-references or verbose syntax are not split).
    `(pattern,)` when there is nothing to split.
    """
    source = pattern.pattern
    if not isinstance(source, str) or pattern.flags & re.VERBOSE or _BACKREF.search(source):
        return (pattern,)
    parts, start, depth, i, in_class = [], 0, 0, 0, False
    while i < len(source):
        ch = source[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
            i += 1 + (source[i + 1 : i + 2] == "^")
            i += source[i : i + 1] == "]"  # a ']' right after '[' or '[^' is a literal
            continue
        elif ch == "(":
            if source.startswith("(?#", i):  # a comment may hold anything
                return (pattern,)
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(source[start:i])
            start = i + 1
        i += 1
    parts.append(source[start:])
    if len(parts) < 2:
        return (pattern,)
    try:
        compiled = tuple(re.compile(part, pattern.flags) for part in parts)
    except re.error:
        return (pattern,)
    if sum(p.groups for p in compiled) != pattern.groups:
        return (pattern,)
    return compiled


_BACKREF = re.compile(r"\\[1-9]|\(\?P=|\(\?\(")


def _finder(table: dict[str, frozenset[int]]) -> Callable[[str], set[int]]:
    """For `fold(text)`: the union of the values of the words the text holds, in one pass."""
    if not table:
        return lambda folded: set()
    automaton = ahocorasick.Automaton()
    for word, values in table.items():
        automaton.add_word(word, values)
    automaton.make_automaton()
    scan = automaton.iter
    return lambda folded: set().union(*[values for _, values in scan(folded)])


def _candidates(patterns: Sequence[re.Pattern[str]]) -> Callable[[str], list[int]]:
    """For `fold(text)`: the indices, in order, of the patterns whose `requirement` the text meets
    (one of its words in it, found for all patterns in one Aho-Corasick pass, or just its length)."""
    table: dict[str, set[int]] = {}
    lengths: list[tuple[int, int]] = []
    for index, pattern in enumerate(patterns):
        words, low = requirement(pattern)
        if words is None:
            lengths.append((index, low))
            continue
        for word in words:
            table.setdefault(word, set()).add(index)
    found = _finder({word: frozenset(these) for word, these in table.items()})
    return lambda folded: sorted(found(folded).union(index for index, low in lengths if len(folded) >= low))


def may_match(patterns: Sequence[re.Pattern[str]]) -> Callable[[str], list[int]]:
    """For `fold(text)`: the indices, in order, of the patterns that can match the text.

    The answer of each pattern's `gate`, for all of them at once: one pass over the text finds
    every word any of them needs (an Aho-Corasick automaton), not one `in` per word and pattern.
    """
    return _candidates(patterns)


def matching(patterns: Sequence[re.Pattern[str]]) -> Callable[[str, str], list[int]]:
    """For `(text, fold(text))`: the indices, in order, of the patterns with a match in the text.

    The same as `[i for i, p in enumerate(patterns) if p.search(text)]`. A pattern of forty
    alternatives costs forty tries at every position of the text; here each alternative
    (`branches`) is searched only when the text holds one of the words it needs, and most
    lines hold the words of none.
    """
    alternatives = [
        (index, alternative) for index, pattern in enumerate(patterns) for alternative in branches(pattern)
    ]
    candidates = _candidates([alternative for _, alternative in alternatives])

    def indices(text: str, folded: str) -> list[int]:
        hits: list[int] = []
        for number in candidates(folded):
            index, alternative = alternatives[number]
            if (not hits or hits[-1] != index) and alternative.search(text):
                hits.append(index)
        return hits

    return indices
