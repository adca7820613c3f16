"""Prompt templates: loads the versioned system and user templates and renders them from Evidence.

The templates live in the top-level prompts/ directory (sre_agent/_data/prompts in an
installed wheel) and use string.Template `$var` syntax. Their first line is a header such
as `<!-- prompt-version: 2026-11-23.1 -->`, stripped before sending. `prompt_version`
(header version + a short hash of the template text) goes into the reasoner id and so into
the cache key: editing a prompt never reuses answers given to the old one.

Rendering is pure and deterministic (no clock, sorted facts), so the same evidence gives
the same prompt live and in replay. Everything that comes from the cluster is placed inside
one `<<<EVIDENCE` ... `EVIDENCE>>>` block and cannot fake those markers.
Called by the LLM adapter (adapters.llm) for every LLM call.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template

from sre_agent.core.cache import normalise
from sre_agent.core.redaction import MASK, redact_text
from sre_agent.domain import Evidence

SYSTEM_FILE = "system.md"
USER_FILE = "user.md"
SYSTEM_VARS = frozenset({"allowed_actions"})
USER_VARS = frozenset(
    {"symptom", "pod", "owner", "node", "images", "replicas", "facts", "signals", "excerpts"}
)
EVIDENCE_OPEN = "<<<EVIDENCE"
EVIDENCE_CLOSE = "EVIDENCE>>>"
MAX_FACTS_CHARS = 4000
# The evidence budget: signals and excerpts share this many characters of the user message, so
# that with the system prompt every prompt stays under 2,000 tokens (tests/unit/test_prompt_budget.py
# counts them with a real tokenizer over every incident set). The first signal of each kind is
# always shown: the rules decide from signal kinds, and so must the LLM be able to.
MAX_EVIDENCE_CHARS = 2200
MAX_SIGNAL_CHARS = 240

_HEADER = re.compile(r"^<!--\s*prompt-version:\s*([A-Za-z0-9._+-]+)\s*-->\s*$")
# Runs of 3+ angle brackets are what the markers are made of; data never keeps one.
_MARKER_RUN = re.compile(r"(<{3,})|(>{3,})")
# A line that is nothing but a long base64 blob (optionally after a "[container stream]"
# prefix) is most likely the body of a key or certificate split over several log lines,
# which line-by-line redaction cannot recognise: mask it as a last line of defence.
_BLOB_LINE = re.compile(r"^(\[[^\]]{1,80}\]\s*)?(?=\S*\d)(?=\S*[a-z])(?=\S*[A-Z])[A-Za-z0-9+/]{32,}={0,2}$")
# ANSI escapes and C0/C1 control characters (except tab) that logs often carry.
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class PromptError(ValueError):
    """A prompt template is missing or invalid; the message names the file."""


@dataclass(frozen=True)
class RenderedPrompt:
    """The two messages sent to the model."""

    system: str
    user: str


def neutralise(text: str) -> str:
    """Make one piece of untrusted data safe to place inside the evidence block.

    One line per item (a newline could start a fake section), no control characters, no
    marker look-alikes, and a last redaction pass in case anything slipped through.
    """
    text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = text.replace("\n", " \\n ")
    text = _MARKER_RUN.sub(lambda m: "<<" if m.group(1) else ">>", text)
    return redact_text(text)


def _log_item(text: str) -> str:
    """neutralise() for a log or event line, which may also be a piece of a key."""
    return neutralise(_BLOB_LINE.sub(lambda m: (m.group(1) or "") + MASK, text.strip()))


def default_prompts_dir(package_dir: Path | None = None) -> Path:
    """Where the templates are: inside the installed package, else the repository's prompts/."""
    package = package_dir if package_dir is not None else Path(__file__).resolve().parents[1]
    installed = package / "_data" / "prompts"
    if installed.is_dir():
        return installed
    return package.parent / "prompts"


def _split_header(text: str, origin: str) -> tuple[str, str]:
    first, _, body = text.partition("\n")
    match = _HEADER.match(first.strip())
    if match is None:
        raise PromptError(f"{origin}: first line must be <!-- prompt-version: VERSION -->")
    return match.group(1), body


def _template(text: str, origin: str, expected: frozenset[str]) -> Template:
    template = Template(text)
    if not template.is_valid():
        raise PromptError(f"{origin}: invalid placeholder (write $$ for a literal dollar sign)")
    found = set(template.get_identifiers())
    unknown, missing = sorted(found - expected), sorted(expected - found)
    if unknown:
        raise PromptError(f"{origin}: unknown variable(s) {', '.join('$' + v for v in unknown)}")
    if missing:
        raise PromptError(f"{origin}: missing variable(s) {', '.join('$' + v for v in missing)}")
    return template


def _lines(items: list[str]) -> str:
    return "\n".join(items) if items else "(none)"


@dataclass(frozen=True)
class Prompts:
    """A loaded pair of templates. Build with load_prompts()."""

    system_template: Template
    user_template: Template
    version: str  # from the headers
    digest: str  # short hash of both templates' text

    @property
    def prompt_version(self) -> str:
        return f"{self.version}+{self.digest}"

    def system(self, allowed_actions: str) -> str:
        # The policy text is trusted (it comes from our own policy file), so not neutralised.
        actions = allowed_actions.strip() or "- none"
        return self.system_template.substitute(allowed_actions=actions).strip() + "\n"

    def user(self, evidence: Evidence) -> str:
        owner = evidence.owner
        facts = json.dumps(dict(evidence.facts), sort_keys=True, ensure_ascii=False, default=str)
        if len(facts) > MAX_FACTS_CHARS:
            facts = facts[:MAX_FACTS_CHARS] + " ...(truncated)"
        scalars = {
            "symptom": evidence.symptom.value,
            "pod": f"{evidence.pod.namespace}/{evidence.pod.name}",
            "owner": f"{owner.kind} {owner.namespace}/{owner.name}" if owner else "(none)",
            "node": evidence.node or "(not scheduled)",
            "images": ", ".join(evidence.images) or "(none)",
            "replicas": "unknown" if evidence.replicas is None else str(evidence.replicas),
            "facts": facts,
        }
        # Every value is data from the cluster (pod names too): neutralise each item, and
        # keep one item per line in the multi-line sections.
        safe = {key: neutralise(value) for key, value in scalars.items()}
        signals, excerpts = _within_budget(evidence, MAX_EVIDENCE_CHARS)
        safe["signals"] = _lines(signals)
        safe["excerpts"] = _lines(excerpts)
        return self.user_template.substitute(safe).strip() + "\n"

    def render(self, evidence: Evidence, allowed_actions: str) -> RenderedPrompt:
        return RenderedPrompt(system=self.system(allowed_actions), user=self.user(evidence))


def _within_budget(evidence: Evidence, budget: int) -> tuple[list[str], list[str]]:
    """Signal and excerpt lines for the prompt, within `budget` characters.

    Signals that differ only in numbers (timestamps, attempts, addresses) are one line with a
    count; excerpts that repeat a signal or an earlier excerpt are left out. The first signal of
    each kind always stays; further signals, then excerpts, fill the budget in order.
    """
    groups: dict[tuple[str, str], list[int]] = {}  # (kind, normalised detail) -> [index, similar]
    order: list[tuple[str, str, str]] = []
    for s in evidence.signals:
        key = (s.kind, normalise(s.detail))
        if key in groups:
            groups[key][1] += 1
            continue
        groups[key] = [len(order), 0]
        order.append((s.kind, s.detail, s.source))
    lines: list[tuple[str, bool]] = []  # (line, must stay)
    kinds: set[str] = set()
    for (kind, detail, source), (_, similar) in zip(order, groups.values(), strict=True):
        shown = detail if len(detail) <= MAX_SIGNAL_CHARS else detail[: MAX_SIGNAL_CHARS - 3] + "..."
        more = f" (+{similar} similar)" if similar else ""
        line = f"- {neutralise(kind)}: {neutralise(shown)} [{neutralise(source)}]{more}"
        lines.append((line, kind not in kinds))
        kinds.add(kind)
    used = sum(len(line) + 1 for line, must in lines if must)
    signals: list[str] = []
    left_out = 0
    for line, must in lines:
        if must or used + len(line) + 1 <= budget:
            signals.append(line)
            used += 0 if must else len(line) + 1
        else:
            left_out += 1
    seen = {normalise(detail)[:120] for _, detail, _ in order}
    excerpts: list[str] = []
    for raw in evidence.excerpts:
        short = normalise(raw.strip())[:120]
        if short in seen:
            continue
        seen.add(short)
        item = _log_item(raw)
        if used + len(item) + 1 <= budget:
            excerpts.append(item)
            used += len(item) + 1
        else:
            left_out += 1
    if left_out:
        excerpts.append(f"({left_out} more signal or excerpt line(s) left out to keep the prompt short)")
    return signals, excerpts


def load_prompts(directory: str | Path | None = None) -> Prompts:
    """Load and check the templates from `directory` (default: default_prompts_dir())."""
    root = Path(directory) if directory is not None else default_prompts_dir()
    texts: dict[str, str] = {}
    for name in (SYSTEM_FILE, USER_FILE):
        path = root / name
        try:
            texts[name] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PromptError(f"{path}: cannot read prompt template: {exc}") from None
    system_version, system_body = _split_header(texts[SYSTEM_FILE], str(root / SYSTEM_FILE))
    user_version, user_body = _split_header(texts[USER_FILE], str(root / USER_FILE))
    version = system_version if system_version == user_version else f"{system_version}/{user_version}"
    digest = hashlib.sha256(f"{system_body}\0{user_body}".encode()).hexdigest()[:8]
    return Prompts(
        system_template=_template(system_body, str(root / SYSTEM_FILE), SYSTEM_VARS),
        user_template=_template(user_body, str(root / USER_FILE), USER_VARS),
        version=version,
        digest=digest,
    )
