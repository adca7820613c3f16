"""Recorded incidents: reads incident files (JSON or YAML) into IncidentContexts for replay.

The replay counterpart of the live context gatherer. The format is described in
docs/incident-format.md and checked by sre_agent/schemas/incident.schema.json: the
incident's own keys are closed (an unknown key is an error that suggests the closest
known one), and every field of the Kubernetes objects that the core reads is typed, so a
file that passes `parse_incident` cannot make the pipeline raise. Every problem with a
file becomes an IncidentFileError whose one-line message names the file and the field.
"""

from __future__ import annotations

import difflib
import json
import numbers
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, cast

import jsonschema
import yaml

from sre_agent.core.symptoms import parse_time
from sre_agent.domain import IncidentContext

SUFFIXES = (".yaml", ".yml", ".json")
_PLAIN_KEY = re.compile(r"[\w./-]{1,100}")
# libyaml's loader is ~10x faster than the pure-Python one; same safe subset of YAML.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class IncidentFileError(ValueError):
    """An incident file is unreadable or invalid."""


@dataclass(frozen=True)
class Expected:
    symptom: str | None
    category: str | None
    actions: tuple[str, ...]
    forbidden_actions: tuple[str, ...]


@dataclass(frozen=True)
class RecordedIncident:
    path: Path
    context: IncidentContext
    expected: Expected | None
    document: dict[str, Any]


_SCHEMA: dict[str, Any] = json.loads(
    resources.files("sre_agent.schemas").joinpath("incident.schema.json").read_text()
)
_VALIDATOR = jsonschema.Draft202012Validator(_SCHEMA, format_checker=jsonschema.FormatChecker())
# One event, validated on its own: incidents may carry tens of thousands of events (see _events_error).
_EVENT_VALIDATOR = jsonschema.Draft202012Validator({"$defs": _SCHEMA["$defs"], "$ref": "#/$defs/event"})
# Keywords that only look at types and keys: two events with the same shape (the same keys and
# the same type at every place) are then valid or invalid together.
_SHAPE_KEYWORDS = frozenset({"$ref", "type", "properties", "items", "additionalProperties", "required",
                             "description", "title"})  # fmt: skip


def _shape_only(schema: Any, seen: frozenset[str] = frozenset()) -> bool:
    """True when `schema` (and everything it refers to) uses only _SHAPE_KEYWORDS."""
    if not isinstance(schema, dict):
        return True  # true/false schemas
    if not set(schema) <= _SHAPE_KEYWORDS:
        return False
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref not in seen:
        target = _SCHEMA["$defs"].get(ref.rsplit("/", 1)[-1])
        if target is None or not _shape_only(target, seen | {ref}):
            return False
    children = [
        *(schema.get("properties") or {}).values(),
        schema.get("items"),
        schema.get("additionalProperties"),
    ]
    return all(_shape_only(child, seen) for child in children)


_EVENTS_BY_SHAPE = _shape_only(_SCHEMA["$defs"]["event"])


# ------------------------------------------------------------------ fast paths (same results)
#
# jsonschema walks a document at tens of microseconds per object; a replay of thousands of
# incidents spent most of its time there. `_Generator` turns the incident schema into plain
# Python checks that answer only "valid or not" with jsonschema's own semantics (its type
# rules, re.search for patterns, the same FormatChecker); a document they reject goes through
# jsonschema as before, for the message. A keyword it does not know disables the fast path.
# (fastjsonschema was tried: it reads drafts up to 7, where keywords beside `$ref` are ignored, so
# it accepts `node: 2.0` that this draft 2020-12 schema refuses; it also fetches `$id` over HTTP.)
_Check = Callable[[Any], bool]
_KNOWN_KEYWORDS = frozenset({
    "$schema", "$id", "$defs", "$ref", "title", "description", "type", "properties",
    "additionalProperties", "required", "items", "allOf", "enum", "format", "pattern",
    "maxLength", "minLength",
})  # fmt: skip
# The Python expression for jsonschema's rule for each type name, on `v`.
_TYPE_EXPRESSIONS = {
    "object": "isinstance(v, dict)",
    "array": "isinstance(v, list)",
    "string": "isinstance(v, str)",
    "boolean": "isinstance(v, bool)",
    "null": "v is None",
    "number": "(isinstance(v, Number) and not isinstance(v, bool))",
    "integer": "((isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()))",
}
# Types whose rule is exactly isinstance (a bool is not an integer for jsonschema, but it is a bool).
_ISINSTANCE: dict[str, type] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}
_PYTHON_TYPES = {"object": "dict", "array": "list", "string": "str"}


class _Unsupported(Exception):
    pass


class _Generator:
    """Writes one Python function per schema node (each `$defs` entry once), then compiles them.

    Straight-line code with the checks inlined runs two to three times faster than a tree of
    closures: a property costs one call, not one per keyword and reference.
    """

    def __init__(self, defs: dict[str, Any], checker: jsonschema.FormatChecker) -> None:
        self.defs = defs
        self.namespace: dict[str, Any] = {"Number": numbers.Number, "checker": checker}
        self.lines: list[str] = []
        self.names: dict[int, str] = {}
        self.tables: list[tuple[str, dict[str, str]]] = []  # property dispatch, filled after exec

    def const(self, value: Any) -> str:
        name = f"_c{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def function(self, schema: Any, through: frozenset[int] = frozenset()) -> str:
        if id(schema) in self.names:
            return self.names[id(schema)]
        if isinstance(schema, dict) and "$ref" in schema and set(schema) <= {"$ref", "description", "title"}:
            ref = schema["$ref"]  # a bare reference: the referred schema's own function
            known = isinstance(ref, str) and ref.startswith("#/$defs/") and ref[8:] in self.defs
            if known and id(schema) not in through:
                return self.function(self.defs[ref[8:]], through | {id(schema)})
        name = f"_v{len(self.names)}"
        self.names[id(schema)] = name
        self.namespace.setdefault("_keep", []).append(schema)  # ids stay unique while generating
        body = self.body(schema)
        self.lines += [f"def {name}(v):", *(f"    {line}" for line in body), ""]
        return name

    def body(self, s: Any) -> list[str]:
        if s is True or s is False:
            return [f"return {s}"]
        if not isinstance(s, dict) or not set(s) <= _KNOWN_KEYWORDS:
            raise _Unsupported(str(s)[:80])
        out: list[str] = []
        if "$ref" in s:
            ref = s["$ref"]
            if not (isinstance(ref, str) and ref.startswith("#/$defs/")) or ref[8:] not in self.defs:
                raise _Unsupported(str(ref))
            out.append(f"if not {self.function(self.defs[ref[8:]])}(v): return False")
        if "type" in s:
            names = [s["type"]] if isinstance(s["type"], str) else list(s["type"])
            if names and all(n in _PYTHON_TYPES or n == "null" for n in names):
                types = ", ".join(_PYTHON_TYPES[n] for n in names if n != "null")
                test = f"isinstance(v, ({types},))" if types else "False"
                out.append(f"if not ({'v is None or ' if 'null' in names else ''}{test}): return False")
            else:
                out.append(
                    f"if not ({' or '.join(_TYPE_EXPRESSIONS[n] for n in names) or 'False'}): return False"
                )
        if "enum" in s:
            if not all(isinstance(e, str) for e in s["enum"]):
                raise _Unsupported("enum")
            out.append(
                f"if not (isinstance(v, str) and v in {self.const(frozenset(s['enum']))}): return False"
            )
        if "pattern" in s:
            out.append(
                f"if isinstance(v, str) and {self.const(re.compile(s['pattern']))}.search(v) is None: return False"
            )
        if "maxLength" in s:
            out.append(f"if isinstance(v, str) and len(v) > {self.const(s['maxLength'])}: return False")
        if "minLength" in s:
            out.append(f"if isinstance(v, str) and len(v) < {self.const(s['minLength'])}: return False")
        if "format" in s:
            out.append(f"if not checker.conforms(v, {self.const(s['format'])}): return False")
        if "required" in s:
            out.append(
                f"if isinstance(v, dict) and not all(k in v for k in {self.const(tuple(s['required']))}): return False"
            )
        props = {k: self.simple(v) or self.function(v) for k, v in (s.get("properties") or {}).items()}
        extra = s.get("additionalProperties", True)
        extra_name = None if extra is True else self.simple(extra) or self.function(extra)
        if props or extra_name is not None:
            table = self.const({})
            self.tables.append((table, props))
            out += [
                "if isinstance(v, dict):",
                "    for key, value in v.items():",
                f"        check = {table}.get(key, {extra_name})",
                "        if check is None:",
                "            continue",
                "        if check.__class__ is tuple:",  # a type check alone: no call
                "            if not isinstance(value, check): return False",
                "        elif not check(value): return False",
            ]
        if "items" in s:
            item = self.function(s["items"])
            out += ["if isinstance(v, list):", "    for x in v:", f"        if not {item}(x): return False"]
        for part in s.get("allOf") or ():
            out.append(f"if not {self.function(part)}(v): return False")
        return [*out, "return True"]

    def simple(self, s: Any) -> str | None:
        """The name of a tuple of types when the schema is only a type check `isinstance` can do."""
        while isinstance(s, dict) and "$ref" in s and set(s) <= {"$ref", "description", "title"}:
            ref = s["$ref"]
            if not (isinstance(ref, str) and ref.startswith("#/$defs/")) or ref[8:] not in self.defs:
                return None
            s = self.defs[ref[8:]]
        if not isinstance(s, dict) or "type" not in s or not set(s) <= {"type", "description", "title"}:
            return None
        names = [s["type"]] if isinstance(s["type"], str) else list(s["type"])
        if not names or not all(isinstance(n, str) and n in _ISINSTANCE for n in names):
            return None
        return self.const(tuple(_ISINSTANCE[n] for n in names))

    def compile(self, schema: Any) -> _Check:
        top = self.function(schema)
        exec(compile("\n".join(self.lines), "<incident schema>", "exec"), self.namespace)
        for table, props in self.tables:
            self.namespace[table].update({k: self.namespace[f] for k, f in props.items()})
        return cast(_Check, self.namespace[top])


def _fast_validator() -> _Check | None:
    try:
        return _Generator(_SCHEMA.get("$defs") or {}, jsonschema.FormatChecker()).compile(_SCHEMA)
    except (_Unsupported, KeyError, TypeError, re.error):
        return None


_FAST_VALID = _fast_validator()


def _shape(value: Any) -> Any:
    """The value with every scalar replaced by its type's name: what a shape-only schema sees."""
    if isinstance(value, dict):
        return {str(k): _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return type(value).__name__


def field_path(parts: Iterable[str | int]) -> str:
    """`pod.status.containerStatuses[0].restartCount` from a JSON path."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:  # a key with spaces, quotes or line breaks: quoted, so the message stays one line
            out += f"[{_one_line(repr(part), 80)}]"
    return out


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _unknown_key(error: jsonschema.ValidationError) -> str | None:
    """'unknown key 'evnts' (did you mean 'events'?)' for a closed mapping, else None."""
    if error.validator != "additionalProperties" or not isinstance(error.instance, dict):
        return None
    known = sorted((error.schema.get("properties") or {}) if isinstance(error.schema, dict) else {})
    unknown = sorted(str(k) for k in error.instance if k not in known)
    if not unknown:
        return None
    key = unknown[0]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(known)})"
    return f"unknown key {_one_line(repr(key), 80)}{hint}"


def _events_errors(events: list[Any]) -> list[jsonschema.ValidationError]:
    """Errors in the events, validating each distinct shape of event once.

    jsonschema costs tens of microseconds per event; 20,000 events of a handful of shapes then
    cost a handful of validations (plus one cheap shape per event), not a second or more.
    """
    valid: set[str] = set()
    for index, event in enumerate(events):
        key = json.dumps(_shape(event), sort_keys=True)
        if key in valid:
            continue
        errors = list(_EVENT_VALIDATOR.iter_errors(event))
        if errors:
            for error in errors:
                error.path.appendleft(index)
                error.path.appendleft("events")
            return errors
        valid.add(key)
    return []


def _schema_error(data: dict[str, Any], origin: str) -> IncidentFileError | None:
    try:
        if _FAST_VALID is not None and _FAST_VALID(data):
            return None
    except Exception:  # too deep or odd: jsonschema below decides and says why
        pass
    try:
        events = data.get("events")
        by_shape = _EVENTS_BY_SHAPE and isinstance(events, list)
        rest = {k: v for k, v in data.items() if k != "events"} if by_shape else data
        errors = sorted(_VALIDATOR.iter_errors(rest), key=lambda e: [str(p) for p in e.absolute_path])
        if not errors and isinstance(events, list) and by_shape:
            errors = _events_errors(events)
    except RecursionError:
        return IncidentFileError(f"{origin}: nested too deeply")
    if not errors:
        return None
    first = errors[0]
    where = field_path(first.absolute_path)
    unknown = _unknown_key(first)
    if unknown:
        return IncidentFileError(f"{origin}: {where + ': ' if where else ''}{unknown}")
    return IncidentFileError(f"{origin}: invalid field {where or '(top level)'}: {_one_line(first.message)}")


def parse_incident(data: Any, origin: str) -> RecordedIncident:
    if not isinstance(data, dict):
        raise IncidentFileError(f"{origin}: expected a mapping at the top level")
    error = _schema_error(data, origin)
    if error is not None:
        raise error
    if not data.get("pod") and not data.get("owner"):
        raise IncidentFileError(
            f"{origin}: missing field pod: an incident needs a pod, or an owner (a workload incident)"
        )
    captured = parse_time(data.get("captured_at"))
    if data.get("captured_at") and captured is None:
        raise IncidentFileError(f"{origin}: invalid field captured_at: not an RFC 3339 time")
    logs = {
        str(name): {k: v for k, v in (streams or {}).items() if isinstance(v, str)}
        for name, streams in (data.get("logs") or {}).items()
    }
    context = IncidentContext(
        pod=data.get("pod") or {},
        events=tuple(data.get("events") or ()),
        logs=logs,
        owner=data.get("owner"),
        node=data.get("node"),
        node_metrics=data.get("node_metrics"),
        pod_metrics=data.get("pod_metrics"),
        related=tuple(data.get("related") or ()),
        captured_at=captured,
        incident_id=data["id"],
    )
    raw = data.get("expected")
    expected = None
    if isinstance(raw, dict):
        expected = Expected(
            symptom=raw.get("symptom"),
            category=raw.get("category"),
            actions=tuple(raw.get("actions") or ()),
            forbidden_actions=tuple(raw.get("forbidden_actions") or ()),
        )
    return RecordedIncident(Path(origin), context, expected, data)


_STR, _SEQ, _MAP = "tag:yaml.org,2002:str", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"
_PLAIN_SCALARS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("null", "bool", "int", "float", "binary", "timestamp")
)
_BUSY = object()


class _Slow(Exception):
    """Something the fast constructor leaves to PyYAML's own (merge keys, tags, recursion)."""


class _FastLoader(_YAML_LOADER):  # type: ignore[misc,valid-type]
    """libyaml's parser with a lean constructor and resolver: the same objects, 2-3x faster.

    PyYAML's constructor spends most of a load in per-node bookkeeping; this one builds plain
    maps, lists and scalars directly, calls SafeConstructor's own functions for typed scalars
    (int, bool, timestamps...), shares aliased nodes as PyYAML does, and hands anything else
    (merge keys, explicit tags, recursive aliases, complex keys) back to PyYAML whole.
    """

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        try:
            return self._build(node, {})
        except _Slow:
            return self.construct_document(node)

    def _build(self, node: Any, memo: dict[int, Any]) -> Any:
        kind, tag = node.__class__, node.tag
        if kind is yaml.ScalarNode:
            if tag == _STR:
                return node.value
            if tag not in _PLAIN_SCALARS:
                raise _Slow
            return self.yaml_constructors[tag](self, node)
        done = memo.get(id(node))
        if done is not None:
            if done is _BUSY:
                raise _Slow
            return done
        memo[id(node)] = _BUSY
        out: Any
        if kind is yaml.SequenceNode and tag == _SEQ:
            out = [self._build(child, memo) for child in node.value]
        elif kind is yaml.MappingNode and tag == _MAP:
            out = {}
            for key_node, value_node in node.value:
                if key_node.__class__ is not yaml.ScalarNode or key_node.tag not in _KEY_TAGS:
                    raise _Slow
                out[self._build(key_node, memo)] = self._build(value_node, memo)
        else:
            raise _Slow
        memo[id(node)] = out
        return out

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and not self.yaml_path_resolvers:
            if implicit[0]:
                table = self.yaml_implicit_resolvers
                if table is _RESOLVERS[0]:  # the usual case: the first character's resolvers, joined once
                    candidates = _RESOLVERS[1].get(value[:1], _RESOLVERS[2])
                else:
                    candidates = table.get(value[0] if value else "", _NONE) + table.get(None, _NONE)
                for tag, regexp in candidates:
                    if regexp.match(value):
                        return tag
            return self.DEFAULT_SCALAR_TAG
        return super().resolve(kind, value, implicit)

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        if self.yaml_path_resolvers:
            super().descend_resolver(current_node, current_index)

    def ascend_resolver(self) -> None:
        if self.yaml_path_resolvers:
            super().ascend_resolver()


_NONE: list[Any] = []
_KEY_TAGS = _PLAIN_SCALARS | {_STR}


def _joined_resolvers() -> tuple[Any, dict[str, list[Any]], list[Any]]:
    table = _FastLoader.yaml_implicit_resolvers
    anywhere = table.get(None, _NONE)
    return table, {k: v + anywhere for k, v in table.items() if k is not None}, anywhere


_RESOLVERS = _joined_resolvers()


def _parse(text: str, suffix: str) -> Any:
    if suffix == ".json":
        return json.loads(text)
    if text.lstrip().startswith("{"):  # JSON is YAML too, and parses ~50x faster as JSON
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass
    return yaml.load(text, Loader=_FastLoader)  # a SafeLoader


def load_incident(path: Path) -> RecordedIncident:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise IncidentFileError(f"{path}: cannot read: {exc}") from None
    try:
        data = _parse(text, path.suffix)
    except RecursionError:
        raise IncidentFileError(f"{path}: nested too deeply") from None
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            detail = f"line {mark.line + 1}: {getattr(exc, 'problem', detail)}"
        raise IncidentFileError(
            f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {detail}"
        ) from None
    return parse_incident(data, str(path))


def incident_paths(paths: Iterable[Path]) -> Iterator[Path]:
    """Files as given, and incident files inside directories (sorted, recursive)."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())
        else:
            yield path


def dump_incident(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=120)
