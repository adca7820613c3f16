"""Secret redaction, applied before any text leaves for an LLM, a CR, an incident file or a log.

Two layers. First, values the objects themselves mark as secret are collected and then
replaced wherever they appear again (a log line, an Event, an old copy of the spec): env
values whose names say so, the value after a secret-named flag (`--db-password X`,
`mysql -p X`), secret-named annotations, and the same inside the
`kubectl.kubernetes.io/last-applied-configuration` annotation. Second, patterns catch the
rest: bearer/Basic tokens, JWTs, passwords in URLs, cloud and SaaS keys (AWS, GCP, GitHub,
Slack, Stripe, OpenAI...), Slack webhooks, private keys, key=value credentials, `redis AUTH`,
`mysql -pX`, `curl -u user:X`, cookies and session ids, and long high-entropy base64 blobs.

Diagnosis signals survive: exit codes, reasons (OOMKilled), "connection refused", image
names, host names and ports are never masked. `Redactor.for_context` is the one entry point
every path uses: evidence for the LLM and rules, `spec.incident`, capture and export.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from sre_agent.core.literals import fold, may_match
from sre_agent.domain import JSON, IncidentContext

MASK = "[REDACTED]"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

SENSITIVE_NAME = re.compile(
    r"(pass(word|wd)?|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credential|"
    r"auth|dsn|database_url|db_url|connection[_-]?string|conn_str|session[_-]?key|signing[_-]?key|"
    r"cookie|salt)",
    re.IGNORECASE,
)
# Annotation names also count as secret when they say "key" (example.com/encryption-key).
SENSITIVE_ANNOTATION = re.compile(rf"{SENSITIVE_NAME.pattern}|(^|[^a-z])keys?([^a-z]|$)", re.IGNORECASE)
# Names that hold where a secret is, not the secret: DB_PASSWORD_FILE, --token-path, SECRET_NAME.
REFERENCE_NAME = re.compile(r"[_.-](file|path|dir|name|ref|mode|enabled|type)$", re.IGNORECASE)
# Values too common to be replaced wherever they appear, even when a secret-named field holds them.
COMMON_VALUES = frozenset(
    {"true", "false", "yes", "no", "none", "null", "enabled", "disabled", "required", "optional", "changeme"}
)
MIN_KNOWN = 4
MAX_REMEMBERED = 4096  # redacted texts a Redactor keeps, to redact a repeated line once

# Commands whose short flag takes a password: mysql -pX / -p X, sshpass -p X, redis-cli -a X.
PASSWORD_SHORT_FLAGS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(^|/)(mysql\w*|mariadb[\w-]*)$"), "-p"),
    (re.compile(r"(^|/)sshpass$"), "-p"),
    (re.compile(r"(^|/)(redis-cli|valkey-cli|keydb-cli)$"), "-a"),
)
USER_FLAGS = frozenset({"-u", "--user", "--proxy-user"})  # curl -u user:password


def _sub_cookie(match: re.Match[str]) -> str:
    """Mask every value in a Cookie / Set-Cookie header, keep the names and cookie attributes."""
    attributes = {"path", "domain", "expires", "max-age", "samesite", "secure", "httponly", "priority"}

    def one(pair: re.Match[str]) -> str:
        if pair.group(1).lower() in attributes:
            return pair.group(0)
        return f"{pair.group(1)}={MASK}"

    return match.group(1) + re.sub(r"([\w.$!#%&'*+^`|~-]+)=([^;,\s\"']*)", one, match.group(2))


def _sub_redis_auth(match: re.Match[str]) -> str:
    """`AUTH password` or `AUTH user password`: both tokens are masked (which one is the password
    cannot be told apart); a reply such as `AUTH failed: WRONGPASS ...` stays."""
    first, gap, second = match.group(2), match.group(3) or "", match.group(4)
    if first.lower().rstrip(":,") in _REDIS_WORDS:
        return match.group(0)
    if second is None or second.rstrip(":,") in _REDIS_WORDS:
        return f"{match.group(1)}{MASK}{gap}{second or ''}"
    return f"{match.group(1)}{MASK}{gap}{MASK}"


_REDIS_WORDS = frozenset(
    {"failed", "required", "error", "ok", "<password>", "WRONGPASS", "NOAUTH", "ERR", "OK"}
)


def _entropy(text: str) -> float:
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def looks_like_blob(token: str, min_len: int = 32) -> bool:
    """A long base64 (or base64url) token with the character mix and entropy of random bytes."""
    bare = token.rstrip("=")
    if len(bare) < min_len:
        return False
    if not (re.search(r"[a-z]", bare) and re.search(r"[A-Z]", bare) and re.search(r"[0-9]", bare)):
        return False
    segments = bare.split("/")
    if len(segments) > 1 and sum(len(s) for s in segments) / len(segments) < 10:
        return False  # a path (a/b/Class1/...), not a blob
    return _entropy(bare) >= min(math.log2(len(bare)) - 1.0, 4.5)


_BLOB_VALUE = re.compile(r"[A-Za-z0-9+/]+={0,2}|[A-Za-z0-9_-]+")
_BLOB = re.compile(r"(?<![A-Za-z0-9+/_.-])([A-Za-z0-9+/]{32,}={0,2}|[A-Za-z0-9_-]{32,})(?![A-Za-z0-9+/=_-])")


def _sub_blob(match: re.Match[str]) -> str:
    return MASK if looks_like_blob(match.group(1)) else match.group(0)


# Words that follow "token:" or "password=" in messages about a credential, not the credential.
_NOT_A_VALUE = (
    r"(?i:none|null|nil|true|false|unexpected|invalid|expired|missing|required|not|failed|error|is|was|has)"
)
_PASSWORD_COMMAND = r"(?:mysql\w*|mariadb[\w-]*|sshpass)"
_Replacement = str | Callable[[re.Match[str]], str]

_FLAG_VALUE = re.compile(
    r"(?i)(?<![\w-])(--?(?=[\w-]*?(?:password|passwd|secret|token|api-?key|access-?key|credential))[\w-]++)"
    r"([ \t]+|=)(?!-)(\S+)"
)
_SESSION_ID = re.compile(
    r"(?i)((?<![\w.-])(?:[\w.-]*[_.-])?(?:session(?:[_-]?id)?|sessid|jsessionid|phpsessid|connect\.sid|"
    r"csrf[_-]?token|xsrf[_-]?token)['\"]?(?:\s*=\s*|\s*:\s*['\"]))([^\s;,&\"']{3,})"
)
_URL_PASSWORD = re.compile(r"((?<![a-zA-Z0-9+.-])[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*):([^\s@/]+)@")
_KEY_VALUE = re.compile(
    r"(?i)(?<![\w.-])((?=[\w.-]*?(?:pass(?:word|wd)?|pwd|secret|token|api[_-]?key|access[_-]?key|"
    r"client[_-]?secret|credentials?))[\w.-]++)(['\"]?\s*(?:=\s*['\"]?|:\s+['\"]?|:['\"]))"
    rf"(?!{_NOT_A_VALUE}\b)([^\s\"',;&}}]{{3,}})"
)
_PATTERNS: tuple[tuple[re.Pattern[str], _Replacement], ...] = (
    (
        re.compile(r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?(-----END \1PRIVATE KEY-----|\Z)", re.DOTALL),
        f"-----BEGIN PRIVATE KEY----- {MASK} -----END PRIVATE KEY-----",
    ),
    (re.compile(r"(?i)\b(bearer|token|basic)(\s+)[A-Za-z0-9._~+/=-]{8,}"), rf"\1\2{MASK}"),
    # command-line flags: --password X, --db-token=X, --api-key X
    (_FLAG_VALUE, rf"\1\2{MASK}"),
    # mysql -pX, mysql -u root -p X, sshpass -p X, redis-cli -a X (same command, same line)
    (
        re.compile(rf"(?i)(\b{_PASSWORD_COMMAND}\b[^\n;|&]{{0,200}}?\s-p)(?:([ \t]+)(?!-)|(?=[^\s-]))(\S+)"),
        lambda m: f"{m.group(1)}{m.group(2) or ''}{MASK}",
    ),
    (re.compile(r"(?i)(\b(?:redis|valkey|keydb)-cli\b[^\n;|&]{0,200}?\s-a[ \t]+)(?!-)(\S+)"), rf"\1{MASK}"),
    # curl -u user:password, --user=user:password
    (re.compile(r"((?:^|\s)(?:-u|--user|--proxy-user)(?:\s+|=)['\"]?[^\s:'\"]+:)([^\s'\"]+)"), rf"\1{MASK}"),
    # redis AUTH [user] password, also as MONITOR prints it: "AUTH" "user" "password"
    (re.compile(r"\"AUTH\"((?:\s+\"[^\"]*\")+)"), f'"AUTH" "{MASK}"'),
    (re.compile(r"(\bAUTH[ \t]+)(\S+)([ \t]+)?(\S+)?"), _sub_redis_auth),
    # Cookie / Set-Cookie headers, and session ids on their own
    (re.compile(r"(?i)(\b(?:set-)?cookie['\"]?\s*[:=]\s*['\"]?)([^\n\"']*)"), _sub_cookie),
    (_SESSION_ID, rf"\1{MASK}"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), MASK),
    (re.compile(r"\b(AKIA|ASIA|AGPA|AIDA|AROA)[A-Z0-9]{12,}\b"), MASK),
    (re.compile(r"\bAIza[0-9A-Za-z_-]{30,}"), MASK),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"), MASK),
    (re.compile(r"\bxox[abposre]-[A-Za-z0-9-]{10,}"), MASK),
    (re.compile(r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9_]{6,}"), MASK),  # Stripe secret / restricted keys
    (re.compile(r"\bwhsec_[A-Za-z0-9_]{8,}"), MASK),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), MASK),
    (re.compile(r"\bglpat-[A-Za-z0-9_-]{16,}"), MASK),
    # Webhook URLs carry their secret in the path.
    (re.compile(r"(?i)(hooks\.slack\.com/(?:services|workflows|triggers)/)[A-Za-z0-9/_-]+"), rf"\1{MASK}"),
    (re.compile(r"(?i)(discord(?:app)?\.com/api/webhooks/)[\w/-]+"), rf"\1{MASK}"),
    (
        re.compile(r"(?i)([?&](?:sig|signature|x-amz-signature|x-goog-signature|code|key)=)[^&\s\"']+"),
        rf"\1{MASK}",
    ),
    # Authorization headers, whatever the scheme; docker config "auth"; Azure account keys
    (
        re.compile(
            r"(?i)(\b(?:proxy-)?authorization['\"]?\s*[:=]\s*['\"]?(?:bearer|basic|token|digest|negotiate|"
            r"apikey|api-key|key|sharedkey|hmac|aws4-hmac-sha256|gosign)\s+)[^\n'\"]+"
        ),
        rf"\1{MASK}",
    ),
    (re.compile(r"(?i)([\"']auth[\"']\s*:\s*[\"'])[^\"']+"), rf"\1{MASK}"),
    (re.compile(r"(?i)\b((?:account|shared[_-]?access)[_-]?key\s*=\s*)[^\s;\"']+"), rf"\1{MASK}"),
    # user:password@host in any URL-ish string
    (_URL_PASSWORD, rf"\1:{MASK}@"),
    # password=..., "api_key": "...", secret: ... (but not an image tag: token-service:4.2.0)
    (_KEY_VALUE, rf"\1\2{MASK}"),
    (_BLOB, _sub_blob),
)
# Cheap searches in `fold(text)` that find something wherever these patterns match (and so may
# skip them): the part of each match from its first literal on (a flag's dash, a secret word and
# then '=' or ':', '://' up to the '@'), or 32 characters that could make a blob. Folding keeps
# every character's place and class, so the lower-case words stand for any case. The patterns'
# look-behinds and look-aheads run at every position or word of a text, these do not.
_NEEDS = {
    _FLAG_VALUE: re.compile(r"-[\w-]*?(?:password|passwd|secret|token|api-?key|access-?key|credential)"),
    _SESSION_ID: re.compile(
        r"(?:session|sessid|connect\.sid|csrf[_-]?token|xsrf[_-]?token)(?:[_-]?id)?['\"]?\s*[=:]"
    ),
    _URL_PASSWORD: re.compile(r"://[^\s:/@]*:[^\s@/]+@"),
    _KEY_VALUE: re.compile(
        r"(?:pass|pwd|secret|token|api[_-]?key|access[_-]?key|credential)[\w.-]*['\"]?\s*[=:]"
    ),
    _BLOB: re.compile(r"[a-z0-9+/_-]{32}"),
}
_NEEDED = tuple(_NEEDS.get(pattern) for pattern, _ in _PATTERNS)


# The literal gates of all the patterns (core/literals.py): a text holding none of the words a
# pattern needs skips it, which leaves most texts with a handful of the patterns to run.
_MAY_MATCH = may_match([pattern for pattern, _ in _PATTERNS])


def redact_text(text: str, known: Iterable[str] = ()) -> str:
    """Mask known secret values first (longest first), then the generic patterns."""
    return _redact(text, _longest_first(known))


def _longest_first(known: Iterable[str]) -> tuple[str, ...]:
    return tuple(v for v in sorted(set(known), key=len, reverse=True) if len(v) >= MIN_KNOWN)


def _redact(text: str, known: tuple[str, ...]) -> str:
    for value in known:
        if value in text:
            text = text.replace(value, MASK)
    folded = fold(text)
    candidates = _MAY_MATCH(folded)
    while candidates:
        index = candidates.pop(0)
        needed = _NEEDED[index]
        if needed is not None and not needed.search(folded):
            continue
        pattern, replacement = _PATTERNS[index]
        redacted = pattern.sub(replacement, text)
        if redacted != text:  # the gates of the patterns still to run look at the new text
            text, folded = redacted, fold(redacted)
            candidates = [i for i in _MAY_MATCH(folded) if i > index]
    return text


def _trackable(name: str, value: Any) -> bool:
    """Whether a value held under `name` is worth masking wherever else it appears."""
    return (
        isinstance(value, str)
        and len(value) >= MIN_KNOWN
        and not REFERENCE_NAME.search(name)
        and value.lower() not in COMMON_VALUES
        and not value.isdigit()
        and not any(ch.isspace() for ch in value)
    )


def _flag_is_secret(flag: str) -> bool:
    name = flag.lstrip("-")
    return bool(name) and bool(SENSITIVE_NAME.search(name)) and not REFERENCE_NAME.search(name)


def secret_argv_indices(argv: list[str]) -> dict[int, tuple[str, str]]:
    """Which elements of a command line hold a secret: index -> (masked element, the secret).

    `--db-password X` and `--token X` (the value as its own element), `-p X` / `-pX` after
    mysql-like commands, `-a X` after redis-cli, and the password half of `-u user:X`.
    """
    out: dict[int, tuple[str, str]] = {}
    short: str | None = None
    for i, arg in enumerate(argv):
        for command, flag in PASSWORD_SHORT_FLAGS:
            if command.search(arg):
                short = flag
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        secret_flag = arg.startswith("-") and "=" not in arg and _flag_is_secret(arg)
        if nxt is not None and not nxt.startswith("-") and (secret_flag or arg == short):
            out[i + 1] = (MASK, nxt)
        elif short is not None and arg.startswith(short) and len(arg) > len(short) and arg[1] != "-":
            out[i] = (short + MASK, arg[len(short) :])
        elif nxt is not None and arg in USER_FLAGS and ":" in nxt:
            user, password = nxt.split(":", 1)
            out[i + 1] = (f"{user}:{MASK}", password)
    return out


def _argv(obj: JSON) -> list[str] | None:
    """command + args of a container, when both are lists of strings."""
    parts: list[str] = []
    for key in ("command", "args"):
        value = obj.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return None
        parts.extend(value)
    return parts


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _walk_secrets(value: Any, out: set[str]) -> None:
    """Every trackable secret an API object holds, at any depth (a Pod, a Deployment's template)."""
    if isinstance(value, list):
        for item in value:
            if isinstance(item, _CONTAINERS):
                _walk_secrets(item, out)
        return
    if not isinstance(value, dict):
        return
    if _OWN_SECRET_KEYS.isdisjoint(value):  # most objects: nothing of their own to look at
        for item in value.values():
            if isinstance(item, _CONTAINERS):
                _walk_secrets(item, out)
        return
    envs = value.get("env")
    for env in envs if isinstance(envs, list) else ():
        if isinstance(env, dict):
            name = str(env.get("name", ""))
            if SENSITIVE_NAME.search(name) and _trackable(name, env.get("value")):
                out.add(env["value"])
    if "command" in value or "args" in value:
        argv = _argv(value)
        for _, secret in secret_argv_indices(argv or []).values():
            if _trackable("", secret):
                out.add(secret)
    annotations = value.get("annotations")
    if isinstance(annotations, dict):
        for name, text in annotations.items():
            if name == LAST_APPLIED and isinstance(text, str):
                _walk_secrets(_parse_json(text), out)
            elif SENSITIVE_ANNOTATION.search(str(name)) and _trackable(str(name), text):
                out.add(text)
    for key, item in value.items():
        if isinstance(item, _CONTAINERS) and key != "env" and key != "annotations":
            _walk_secrets(item, out)


_CONTAINERS = (list, dict)  # a tuple: isinstance checks it faster than list | dict
_OWN_SECRET_KEYS = frozenset({"env", "command", "args", "annotations"})


def secret_env_values(pod: JSON) -> set[str]:
    """Every value the object marks as secret (env, flags, annotations, last-applied copy)."""
    out: set[str] = set()
    _walk_secrets(pod, out)
    return out


class Redactor:
    """Redacts text and whole API objects for one incident."""

    def __init__(self, known_secrets: Iterable[str] = ()) -> None:
        self.known = {v for v in known_secrets if isinstance(v, str) and len(v) >= MIN_KNOWN}
        self._ordered = (frozenset(self.known), _longest_first(self.known))
        self._done: dict[str, str] = {}  # text -> redacted: a log line is often both a signal and an excerpt

    @classmethod
    def for_pod(cls, pod: JSON, extra: Iterable[str] = ()) -> Redactor:
        return cls(secret_env_values(pod) | set(extra))

    @classmethod
    def for_objects(cls, *objects: Any) -> Redactor:
        """A redactor that knows every secret these API objects mark as such (None and non-objects skipped)."""
        return cls(value for obj in objects if isinstance(obj, dict) for value in secret_env_values(obj))

    @classmethod
    def for_context(cls, ctx: IncidentContext) -> Redactor:
        """The redactor for one incident, used on every path: the secrets of the pod, its owner and
        the related objects (older ReplicaSets may hold values the pod no longer has)."""
        return cls.for_objects(ctx.pod, ctx.owner, *ctx.related)

    def text(self, text: str) -> str:
        if self._ordered[0] != self.known:  # `known` was changed after construction
            self._ordered = (frozenset(self.known), _longest_first(self.known))
            self._done.clear()
        done = self._done.get(text)
        if done is None:
            done = _redact(text, self._ordered[1])
            if len(self._done) >= MAX_REMEMBERED:
                self._done.clear()
            self._done[text] = done
        return done

    def obj(self, value: Any) -> Any:
        """A deep copy of an API object with secrets masked: by name, by position, by pattern."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.obj(v) for v in value]
        if not isinstance(value, dict):
            return value
        out: dict[str, Any] = {}
        sensitive_env = "value" in value and SENSITIVE_NAME.search(str(value.get("name", "")))
        argv = _argv(value)
        masked_argv = {i: masked for i, (masked, _) in secret_argv_indices(argv or []).items()}
        for k, v in value.items():
            if k == "value" and sensitive_env and isinstance(v, str):
                out[k] = MASK
            elif k in ("data", "stringData") and value.get("kind") == "Secret":
                out[k] = {dk: MASK for dk in (v or {})}
            elif k in ("command", "args") and argv is not None and isinstance(v, list):
                start = len(value.get("command") or []) if k == "args" else 0
                out[k] = [self.text(masked_argv.get(start + i, a)) for i, a in enumerate(v)]
            elif k == "annotations" and isinstance(v, dict):
                out[k] = {name: self._annotation(str(name), text) for name, text in v.items()}
            elif isinstance(v, str) and _BLOB_VALUE.fullmatch(v) and looks_like_blob(v, min_len=24):
                out[k] = MASK  # a whole value that is a base64 blob, whatever its name
            else:
                out[k] = self.obj(v)
        return out

    def _annotation(self, name: str, text: Any) -> Any:
        if name == LAST_APPLIED:
            parsed = _parse_json(text) if isinstance(text, str) else None
            if not isinstance(parsed, dict):
                return MASK
            return json.dumps(self.obj(parsed), separators=(",", ":"), sort_keys=True)
        if SENSITIVE_ANNOTATION.search(name) and text not in (None, ""):
            return MASK
        return self.obj(text)


class RedactingFilter(logging.Filter):
    """A logging filter that runs the pattern redaction over every formatted log message.

    Installed on the operator's log handlers, so a log line that quotes evidence (notes, signal
    details, an API error echoing an object) gets the same patterns as the LLM prompt.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True
