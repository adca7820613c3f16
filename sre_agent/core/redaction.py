"""Secret redaction, applied before any text leaves for an LLM, a CR or an incident file.

Two layers: values the pod itself marks as secret (env vars whose names say so, plus any
literal the caller knows came from a Secret) are replaced wherever they appear, and
patterns catch the rest (bearer tokens, JWTs, passwords in URLs, cloud keys, private keys,
key=value credentials). Used by evidence extraction, capture and the decision store.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from sre_agent.domain import JSON

MASK = "[REDACTED]"

SENSITIVE_NAME = re.compile(
    r"(pass(word|wd)?|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credential|"
    r"auth|dsn|database_url|db_url|connection[_-]?string|conn_str|session[_-]?key|signing[_-]?key|"
    r"cookie|salt)",
    re.IGNORECASE,
)

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?(-----END \1PRIVATE KEY-----|\Z)", re.DOTALL),
        f"-----BEGIN PRIVATE KEY----- {MASK} -----END PRIVATE KEY-----",
    ),
    (re.compile(r"(?i)\b(bearer|token|basic)(\s+)[A-Za-z0-9._~+/=-]{8,}"), rf"\1\2{MASK}"),
    # command-line flags: --password X, --db-token=X
    (
        re.compile(r"(?i)(--?[\w-]*(?:password|passwd|secret|token|api-?key)[\w-]*)(\s+|=)(?!-)(\S+)"),
        rf"\1\2{MASK}",
    ),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), MASK),
    (re.compile(r"\b(AKIA|ASIA|AGPA|AIDA|AROA)[A-Z0-9]{12,}\b"), MASK),
    (re.compile(r"\bAIza[0-9A-Za-z_-]{30,}"), MASK),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"), MASK),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), MASK),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), MASK),
    (re.compile(r"\bglpat-[A-Za-z0-9_-]{16,}"), MASK),
    # user:password@host in any URL-ish string
    (re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*):([^\s@/]+)@"), rf"\1:{MASK}@"),
    # password=..., "api_key": "...", secret: ...
    (
        re.compile(
            r"(?i)\b([\w.-]*(?:pass(?:word|wd)?|pwd|secret|token|api[_-]?key|access[_-]?key|"
            r"client[_-]?secret|credentials?)[\w.-]*)(['\"]?\s*[=:]\s*['\"]?)([^\s\"',;&}]{3,})"
        ),
        rf"\1\2{MASK}",
    ),
)


def redact_text(text: str, known: Iterable[str] = ()) -> str:
    """Mask known secret values first (longest first), then the generic patterns."""
    for value in sorted(set(known), key=len, reverse=True):
        if len(value) >= 4:
            text = text.replace(value, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def secret_env_values(pod: JSON) -> set[str]:
    """Literal env values in the pod spec whose variable names say they are secrets."""
    values: set[str] = set()
    spec = pod.get("spec") or {}
    for key in ("containers", "initContainers", "ephemeralContainers"):
        for container in spec.get(key) or []:
            if not isinstance(container, dict):
                continue
            for env in container.get("env") or []:
                if not isinstance(env, dict):
                    continue
                value = env.get("value")
                if isinstance(value, str) and SENSITIVE_NAME.search(str(env.get("name", ""))):
                    values.add(value)
    return values


class Redactor:
    """Redacts text and whole API objects for one incident."""

    def __init__(self, known_secrets: Iterable[str] = ()) -> None:
        self.known = {v for v in known_secrets if isinstance(v, str) and len(v) >= 4}

    @classmethod
    def for_pod(cls, pod: JSON, extra: Iterable[str] = ()) -> Redactor:
        return cls(secret_env_values(pod) | set(extra))

    def text(self, text: str) -> str:
        return redact_text(text, self.known)

    def obj(self, value: Any) -> Any:
        """A deep copy of an API object with secrets masked; env values by name, strings by pattern."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.obj(v) for v in value]
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            sensitive_env = "value" in value and SENSITIVE_NAME.search(str(value.get("name", "")))
            for k, v in value.items():
                if k == "value" and sensitive_env and isinstance(v, str):
                    out[k] = MASK
                elif k == "data" and value.get("kind") == "Secret":
                    out[k] = {dk: MASK for dk in (v or {})}
                else:
                    out[k] = self.obj(v)
            return out
        return value
