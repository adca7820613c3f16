"""Evidence extraction: from a pod, its events, logs, node and metrics, the lines that matter.

Produces Signals (typed facts the rules and the LLM cross-check read) and redacted
excerpts within a size budget (what the LLM sees). Patterns follow the messages that
kubelet, the scheduler, container runtimes and common runtimes really print.
Called by the pipeline once per incident.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sre_agent.core import dependencies, rollout
from sre_agent.core.literals import fold, gate, matching
from sre_agent.core.owners import controller_ref
from sre_agent.core.redaction import Redactor
from sre_agent.core.symptoms import WORKLOAD_SYMPTOMS, node_is_not_ready
from sre_agent.domain import (
    ALERT_EVENT_REASON,
    JSON,
    PENDING_EVENT_REASON,
    Category,
    Evidence,
    IncidentContext,
    ObjectRef,
    Signal,
    Symptom,
)

MAX_EXCERPTS = 40
MAX_EXCERPT_CHARS = 6000
MAX_LINE = 300
MAX_SIGNALS_PER_KIND = 20  # distinct details kept per signal kind
MAX_LOG_LINES = 2000  # per log stream, the newest; the live gatherer fetches 200


def _rx(*parts: str) -> re.Pattern[str]:
    return re.compile("|".join(parts), re.IGNORECASE)


# Patterns over log lines and event messages. Order matters only for readability.
LOG_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "oom_killed",
        _rx(
            r"OutOfMemoryError",
            r"out of memory",
            r"\bMemoryError\b",
            r"JavaScript heap out of memory",
            r"Cannot allocate memory",
            r"memory limit exceeded",
            r"OOM ?Kill",
            r"Killed process \d+",
            r"std::bad_alloc",
            r"memory allocation of \d+ bytes failed",
        ),
    ),
    (
        "connection_error",
        _rx(
            r"connection refused",
            r"ECONNREFUSED",
            r"ECONNRESET",
            r"ENOTFOUND",
            r"EAI_AGAIN",
            r"ETIMEDOUT",
            r"no such host",
            r"Name or service not known",
            r"Temporary failure in name resolution",
            r"could not translate host name",
            r"could not connect to",
            r"can'?t connect to",
            r"unable to connect",
            r"failed to connect",
            r"connection (timed out|reset|closed)",
            r"dial tcp [^ ]+: (i/o timeout|connect)",
            r"\bUNAVAILABLE\b",
            r"upstream connect error",
            r"ServerSelection(Error|TimeoutError)",
            r"AMQPConnectionError",
            r"ConnectionNotEstablished",
            r"(broker|brokers|leader) (is |are )?not available",
            r"kafka.*TimeoutException",
            r"TimeoutException.*(metadata|topic|broker)",
            r"Communications link failure",
            r"Connection to .* (refused|timed out)",
            r"no route to host",
            r"host is unreachable",
            r"503 Service Unavailable.*upstream",
            r"waiting for (the )?(database|db|postgres|mysql|redis|kafka|rabbitmq|mongo)",
            r"is the server running",
            r":\d{2,5} - no response",  # pg_isready
            r"\b(not reachable|unreachable)\b",
            r"waiting for [\w-]+(\.[\w-]+)+(:\d+)?",  # wait-for-it style init containers
            r"nc: .*(timed out|refused)",
            r"bad address '[\w.-]+'",  # busybox nc/wget: the name does not resolve
        ),
    ),
    (
        "auth_failure",
        _rx(
            r"password authentication failed",
            r"Access denied for user",
            r"NOAUTH",
            r"WRONGPASS",
            r"invalid (username|password|credentials)",
            r"authentication failed",
            r"AuthenticationFailed",
            r"SASL authentication",
            r"\b401 Unauthorized\b",
        ),
    ),
    (
        "missing_config",
        _rx(
            r"(secret|configmap)s? \"?[\w.-]+\"? not found",
            r"couldn'?t find key [\w.-]+ in (ConfigMap|Secret)",
            r"KeyError: '?[A-Z][A-Z0-9_]+'?",
            r"environment variable \"?[\w.]+\"? (is )?(not set|missing|required|undefined|empty)",
            r"(env|environment)( var(iable)?)? \"?[A-Z][A-Z0-9_]+\"? (is )?(not set|missing|required|undefined)",
            r"missing (required )?(env|environment|config|configuration|setting|property|variable)",
            r"required (env|environment|config)\w* (var\w* )?\"?[\w.]+\"? (is )?(not set|missing)",
            r"[A-Z][A-Z0-9_]{2,} (must be set|is required|not set|is not set|is undefined)",
            r"no such file or directory.*\.(ya?ml|json|conf|cfg|ini|toml|properties|env)\b",
            r"\.(ya?ml|json|conf|cfg|ini|toml|properties)\b.*(no such file|not found|does not exist)",
            r"Could not resolve placeholder",
            r"ConfigurationError",
            r"ImproperlyConfigured",
            r"(config|configuration) file .* (not found|missing|does not exist)",
            # A named setting that is required and absent, however the program words it.
            r"required (setting|option|property|parameter|field|key|variable|value)s? \"?[\w.-]+\"? "
            r"(is )?(missing|not set|not provided|not defined|absent|undefined)",
            r"(setting|option|property|parameter|config key)s? \"?[\w.-]+\"? (is )?(required|missing|not set)\b",
            r"required key \[?[\w.-]+\]? missing value",  # envconfig
            r"\bField required \[type=missing",  # pydantic v2
            r"\bfield required \(type=value_error\.missing\)",  # pydantic v1
            r"missing required (setting|option|property|parameter|field|key|argument|flag)",
        ),
    ),
    (
        "invalid_config",
        _rx(
            r"yaml: line \d+",
            r"(ya?ml|json|toml)\w*( parse)? error",
            r"error (parsing|reading|loading) (config|configuration|settings)",
            r"invalid (configuration|config|value|setting|option|argument)",
            r"flag provided but not defined",
            r"unknown (flag|option|shorthand flag|argument)",
            r"unrecognized (option|argument|arguments)",
            r"\[emerg\]",
            r"configuration (file )?.*(test failed|is invalid|invalid)",
            r"JSONDecodeError",
            r"json: cannot unmarshal",
            r"Unexpected token .* in JSON",
            r"ScannerError|ParserError",
            r"Failed to bind properties",
            r"IllegalArgumentException.*(config|property|value)",
            r"malformed",
            r"not a valid (port|url|number|integer|duration)",
            # Key and certificate material that does not parse (a Secret with the wrong content).
            r"Could not deserialize key data",
            r"failed to find any PEM data",
            r"x509: failed to parse",
            r"InvalidKeySpecException",
            r"PEM_read_bio\w*\(\) failed",
        ),
    ),
    (
        "app_exception",
        _rx(
            r"^Traceback \(most recent call last\)",
            r"Exception in thread",
            r"^panic: ",
            r"^thread '.*' panicked at",
            r"Unhandled exception",
            r"UnhandledPromiseRejection",
            r"uncaught exception",
            r"^\s*at [\w.$<>]+\(.*\.(java|kt|scala):\d+\)",
            r"^\w+(\.\w+)*(Error|Exception): ",
            r"Segmentation fault|SIGSEGV|SIGABRT|core dumped",
            r"Cannot find module",
            r"ModuleNotFoundError|ImportError",
            r"NoClassDefFoundError|ClassNotFoundException",
            r"nil pointer dereference|index out of range",
            r"\bFATAL\b|\bCRITICAL\b",
            r"\*\* \(\w+Error\)",
            r"exec format error",
            r"exec: .* not found|executable file not found",
            r"Permission denied",
            r"deadlock",
            r"Migration.*failed|failed to (run|apply) migration",
        ),
    ),
    (
        "overload",
        _rx(
            r"too many requests",
            r"\b429\b",
            r"thread pool.*(exhausted|full|saturated)",
            r"(queue|backlog) (is )?full",
            r"RejectedExecutionException",
            r"worker.*(timeout|exhausted|busy|saturated)",
            r"WORKER TIMEOUT",
            r"all workers (are )?busy",
            r"server reached (pm\.)?max_children",
            r"max_children",
            r"connection pool (exhausted|timeout)",
            r"(pool|semaphore) .*(exhausted|timeout waiting)",
            r"request(s)? (timed out|timeout)",
            r"(high|elevated) (latency|load|cpu)",
            r"GC overhead limit",
            r"slow (request|query|response)",
            r"event loop (blocked|lag)",
            r"\blatency\b.*\d+\s?(ms|s)\b",
            r"in-?flight requests",
            r"load shedding",
            r"backpressure",
        ),
    ),
    (
        "prompt_injection",
        _rx(
            r"ignore (all |any )?(the )?(previous|prior|above) (instructions|prompts?)",
            r"you are now",
            r"^\s*(SYSTEM|ASSISTANT)\s*:",
            r"AI (agent|assistant|operator)\s*[:,]",
            r"disregard (your|the) (instructions|policy|rules)",
            r"new instructions",
        ),
    ),
)

IMAGE_NOT_FOUND = _rx(
    r"not found",
    r"manifest unknown",
    r"repository does not exist",
    r"does not exist or no pull access",
    r"name unknown",
    r"NotFound",
)
IMAGE_AUTH = _rx(
    r"pull access denied",
    r"unauthorized",
    r"\b401\b",
    r"\b403\b",
    r"forbidden",
    r"authentication required",
    r"insufficient_scope",
    r"denied",
    r"no basic auth credentials",
)
INVALID_IMAGE = _rx(r"InvalidImageName", r"invalid reference format", r"couldn't parse image")

SCHED_CAPACITY = _rx(
    r"Insufficient [\w./-]+",
    r"Too many pods",
    r"didn't have enough resource",
    r"had insufficient",
    r"exceeded quota",
    r"No preemption victims",
)
SCHED_CONSTRAINT = _rx(
    r"didn't match Pod's node affinity",
    r"didn't match node selector",
    r"node\(s\) didn't match",
    r"had untolerated taint",
    r"had taint .* that the pod didn't tolerate",
    r"didn't match pod (anti-)?affinity",
    r"didn't satisfy existing pods anti-affinity",
    r"didn't match pod topology spread constraints",
    r"topology spread",
    r"volume node affinity conflict",
    r"were unschedulable",
    r"didn't have free ports",
    r"node\(s\) had volume",
)
UNBOUND_PVC = _rx(
    r"unbound (immediate )?PersistentVolumeClaims", r"persistentvolumeclaim \"[\w.-]+\" not found"
)
VOLUME_FAILURE = _rx(
    r"MountVolume\.\w+ failed",
    r"Unable to attach or mount volumes",
    r"AttachVolume\.Attach failed",
    r"Multi-Attach error",
    r"mount failed",
    r"mount\.nfs",
    r"timed out waiting for the condition",
    r"volume .* (not attached|already (attached|used))",
    r"FailedAttachVolume",
    r"rpc error: code = (Internal|DeadlineExceeded|NotFound|Unavailable)",
)
# The kubelet's periodic summary for any volume not ready in time: it accompanies every specific
# mount error (a missing ConfigMap as much as a stuck EBS attach), so on its own it names no cause.
# Older kubelets list every not-yet-mounted volume as "unattached", so that list says nothing either.
VOLUME_SUMMARY = _rx(
    r"^Unable to attach or mount volumes: unmounted volumes=\[[^\]]*\], unattached volumes=\[[^\]]*\]"
    r"(, failed to process volumes=\[[^\]]*\])?: timed out waiting for the condition\s*$"
)
MISSING_VOLUME_SOURCE = _rx(r"(configmap|secret)s? \"[\w.-]+\" not found", r"couldn't find key")
PROBE_REFUSED = _rx(r"connection refused", r"connect: no route", r"EOF")
PROBE_HTTP = re.compile(r"statuscode: (\d{3})", re.IGNORECASE)
PROBE_TIMEOUT = _rx(
    r"context deadline exceeded",
    r"Client\.Timeout",
    r"timeout",
    r"timed out",
    r"i/o timeout",
)
# An exec probe whose command checks a file that is not there (`cat /tmp/ready`, `test -f ...`).
PROBE_MISSING_FILE = _rx(r"no such file or directory", r"can't open", r"cannot open")
EVICTION_RESOURCE = re.compile(r"low on resource: ([\w./-]+)", re.IGNORECASE)
LISTEN_PORT = re.compile(
    r"(listening|started|serving|bound|running)\b[^\n]{0,40}?(port|:)\s*:?(\d{2,5})\b", re.IGNORECASE
)
STARTUP_TIME = re.compile(r"started\b[^\n]{0,60}?\bin (\d+(\.\d+)?) ?(s|sec|seconds)\b", re.IGNORECASE)

# Which signals support each category: the rules read them, and the LLM's answer is
# cross-checked against them (a category with no supporting signal loses confidence).
SUPPORTING_SIGNALS: dict[Category, frozenset[str]] = {
    Category.OOM: frozenset({"oom_killed", "memory_near_limit"}),
    Category.APP_ERROR: frozenset({"app_exception", "exit_code", "init_failure"}),
    Category.BAD_CONFIG: frozenset({"missing_config", "invalid_config", "auth_failure", "config_error"}),
    Category.DEPENDENCY_UNAVAILABLE: frozenset({"connection_error", "dependency_down"}),
    Category.IMAGE_ERROR: frozenset({"image_not_found", "image_auth", "invalid_image", "image_pull"}),
    Category.INSUFFICIENT_CAPACITY: frozenset({"insufficient_resources", "quota_exceeded"}),
    Category.SCHEDULING_CONSTRAINT: frozenset({"scheduling_constraint"}),
    Category.PROBE_MISCONFIGURED: frozenset(
        {
            "probe_refused",
            "probe_http_error",
            "probe_port_mismatch",
            "probe_too_early",
            "probe_failed",
            "probe_missing_file",
        }
    ),
    Category.OVERLOAD: frozenset({"overload", "cpu_saturated", "probe_timeout"}),
    Category.NODE_FAILURE: frozenset({"node_not_ready", "node_pressure", "evicted", "node_lost"}),
    Category.VOLUME_ERROR: frozenset({"volume_error", "volume_pending", "unbound_pvc", "pvc_pending"}),
    Category.UNKNOWN: frozenset(),
}


@dataclass
class _Collector:
    """Signals and excerpts in first-seen order, without duplicates.

    Membership is checked against sets, so collecting n items costs O(n), not O(n^2): an
    incident with 20,000 events must not take minutes.
    """

    redactor: Redactor
    signals: list[Signal] = field(default_factory=list)
    excerpts: list[str] = field(default_factory=list)
    _seen_signals: set[Signal] = field(default_factory=set)
    _seen_excerpts: set[str] = field(default_factory=set)
    _per_kind: dict[str, int] = field(default_factory=dict)
    _seen_raw: set[tuple[str, str, str]] = field(default_factory=set)

    def signal(self, kind: str, detail: str, source: str) -> None:
        if self._per_kind.get(kind, 0) >= MAX_SIGNALS_PER_KIND:
            return  # enough examples of this kind; the rest would only bloat the prompt
        raw = (kind, detail, source)
        if raw in self._seen_raw:
            return  # the same input redacts to the same signal: skip the work
        self._seen_raw.add(raw)
        sig = Signal(kind, self.redactor.text(detail)[:MAX_LINE], source)
        if sig not in self._seen_signals:
            self._seen_signals.add(sig)
            self.signals.append(sig)
            self._per_kind[kind] = self._per_kind.get(kind, 0) + 1

    def excerpt(self, line: str) -> None:
        if len(self.excerpts) >= MAX_EXCERPTS:
            return  # only the first MAX_EXCERPTS are ever used (_within_budget)
        line = self.redactor.text(line.strip())[:MAX_LINE]
        if line and line not in self._seen_excerpts:
            self._seen_excerpts.add(line)
            self.excerpts.append(line)


def _quantity(value: Any) -> float | None:
    """Parse a Kubernetes quantity (cpu or memory) into base units."""
    if value is None:
        return None
    text = str(value).strip()
    suffixes = {
        "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
        "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
    }  # fmt: skip
    for suffix in sorted(suffixes, key=len, reverse=True):
        if text.endswith(suffix):
            try:
                return float(text[: -len(suffix)]) * suffixes[suffix]
            except ValueError:
                return None
    try:
        return float(text)
    except ValueError:
        return None


def _ref(obj: JSON | None, default_kind: str = "") -> ObjectRef | None:
    if not obj:
        return None
    meta = obj.get("metadata") or {}
    return ObjectRef(
        kind=str(obj.get("kind") or default_kind),
        name=str(meta.get("name") or ""),
        namespace=str(meta.get("namespace") or ""),
        uid=str(meta.get("uid") or ""),
        api_version=str(obj.get("apiVersion") or "v1"),
    )


# Command-line flags and option echoes (`-XX:+ExitOnOutOfMemoryError`, `--oom-score-adj=-999`,
# `ExitOnOutOfMemoryError=true`): a program printing its own settings reports no event, so the
# words inside them are not matched (the line itself is still kept and scanned for the rest).
CONFIG_ECHO = re.compile(
    r"(?<![\w-])--?[A-Za-z][\w.:+/-]*(=\S*)?"
    r"|\b[A-Z][A-Za-z0-9]*[A-Z]\w*\s*=\s*(true|false)\b"
)


# Where a CONFIG_ECHO match can start: a '-' not inside a word (then a letter or a second '-'),
# or an '='. Most lines have neither, and this search is far cheaper than CONFIG_ECHO's.
_ECHO_START = re.compile(r"-(?<![\w-]-)-?[A-Za-z]|=")


def scan_text(line: str) -> str:
    """The part of a log line that can report an event: the line without flags and option echoes."""
    return CONFIG_ECHO.sub(" ", line) if _ECHO_START.search(line) else line


# The log patterns, searched through their literal gates (core/literals.matching): a line is
# searched only for the alternatives whose words it holds.
_LOG_KINDS = tuple(kind for kind, _ in LOG_PATTERNS)
_LOG_MATCHING = matching([rx for _, rx in LOG_PATTERNS])
_PORT_GATE, _STARTUP_GATE = gate(LISTEN_PORT), gate(STARTUP_TIME)


def _scan_lines(c: _Collector, lines: Iterable[str], source: str, budget: int) -> None:
    """Signals from every line; excerpts from matching lines plus a little stack-trace context."""
    lines = list(lines)
    taken = 0
    for i, line in enumerate(lines):
        text = scan_text(line) if "-" in line or "=" in line or ":" in line else line
        folded = fold(text)
        hits = [_LOG_KINDS[k] for k in _LOG_MATCHING(text, folded)]
        for kind in hits:
            c.signal(kind, line.strip(), source)
        if hits and taken < budget:
            c.excerpt(line)
            taken += 1
            if "app_exception" in hits and line.lstrip().startswith(("Traceback", "Exception", "panic")):
                for follow in lines[i + 1 : i + 3]:
                    c.excerpt(follow)
        whole = folded if text is line else fold(line)
        port = LISTEN_PORT.search(line) if _PORT_GATE is None or _PORT_GATE(whole) else None
        if port:
            c.signal("listen_port", port.group(3), source)
        started = STARTUP_TIME.search(line) if _STARTUP_GATE is None or _STARTUP_GATE(whole) else None
        if started:
            c.signal("startup_seconds", started.group(1), source)


def _container_facts(c: _Collector, pod: JSON, facts: dict[str, Any]) -> None:
    status = pod.get("status") or {}
    spec = pod.get("spec") or {}
    containers = {x.get("name"): x for x in spec.get("containers") or [] if isinstance(x, dict)}
    restarts = 0
    for cs in status.get("containerStatuses") or []:
        if not isinstance(cs, dict):
            continue
        name = cs.get("name", "")
        restarts = max(restarts, int(cs.get("restartCount") or 0))
        for which in ("state", "lastState"):
            state = cs.get(which) or {}
            term = state.get("terminated") or {}
            if term:
                code, reason = term.get("exitCode"), term.get("reason", "")
                if reason == "OOMKilled" or (code == 137 and reason == "OOMKilled"):
                    c.signal("oom_killed", f"container {name} {which} OOMKilled exit {code}", "status")
                elif code not in (None, 0):
                    c.signal("exit_code", f"container {name} exit {code} ({reason})", "status")
                    facts.setdefault("exit_codes", []).append(code)
                if term.get("message"):
                    c.excerpt(f"{name} terminated: {term['message']}")
            waiting = state.get("waiting") or {}
            if waiting.get("reason") in ("ImagePullBackOff", "ErrImagePull", "InvalidImageName"):
                c.signal("image_pull", f"{name}: {waiting.get('reason')}", "status")
                if INVALID_IMAGE.search(str(waiting.get("reason"))):
                    c.signal("invalid_image", f"{name}: {waiting.get('message', '')}", "status")
            if waiting.get("reason") in ("CreateContainerConfigError", "CreateContainerError"):
                c.signal("config_error", f"{name}: {waiting.get('message', '')}", "status")
                if MISSING_VOLUME_SOURCE.search(str(waiting.get("message", ""))):
                    c.signal("missing_config", str(waiting.get("message")), "status")
            if waiting.get("message"):
                c.excerpt(f"{name} waiting {waiting.get('reason')}: {waiting['message']}")
        spec_c = containers.get(name) or {}
        limits = (spec_c.get("resources") or {}).get("limits") or {}
        if limits:
            facts.setdefault("limits", {})[name] = dict(limits)
        _probe_facts(c, name, spec_c, facts)
    facts["restart_count"] = restarts

    for ics in status.get("initContainerStatuses") or []:
        if not isinstance(ics, dict):
            continue
        name = ics.get("name", "")
        for which in ("state", "lastState"):
            term = (ics.get(which) or {}).get("terminated") or {}
            if term.get("exitCode") not in (None, 0):
                c.signal("init_failure", f"init container {name} exit {term.get('exitCode')}", "status")
        if ((ics.get("state") or {}).get("waiting") or {}).get("reason") == "CrashLoopBackOff":
            c.signal("init_failure", f"init container {name} CrashLoopBackOff", "status")


def _probe_facts(c: _Collector, name: str, container: JSON, facts: dict[str, Any]) -> None:
    declared = {p.get("containerPort") for p in container.get("ports") or [] if isinstance(p, dict)} | {
        p.get("name") for p in container.get("ports") or [] if isinstance(p, dict)
    }
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = container.get(kind)
        if not isinstance(probe, dict):
            continue
        handler = probe.get("httpGet") or probe.get("tcpSocket") or probe.get("grpc") or {}
        port = handler.get("port") if isinstance(handler, dict) else None
        summary = {
            "port": port,
            "path": (probe.get("httpGet") or {}).get("path"),
            "initialDelaySeconds": probe.get("initialDelaySeconds", 0),
            "timeoutSeconds": probe.get("timeoutSeconds", 1),
            "periodSeconds": probe.get("periodSeconds", 10),
            "failureThreshold": probe.get("failureThreshold", 3),
        }
        facts.setdefault("probes", {})[f"{name}.{kind}"] = summary
        if port is not None and declared - {None} and port not in declared:
            c.signal("probe_port_mismatch", f"{name} {kind} port {port} not among declared ports", "spec")


def _event_signals(c: _Collector, events: Iterable[JSON]) -> None:
    for event in sorted(events, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or "")):
        reason = str(event.get("reason") or "")
        if reason in (ALERT_EVENT_REASON, PENDING_EVENT_REASON):
            continue  # the agent's own alert or approval request about this target: not evidence
        message = str(event.get("message") or event.get("note") or "")
        count = event.get("count") or (event.get("series") or {}).get("count") or 1
        if event.get("type") == "Warning" or reason in ("Killing", "Evicted", "NodeNotReady", "Preempting"):
            c.excerpt(f"{reason} (x{count}): {message}")
        involved = event.get("involvedObject") or event.get("regarding") or {}
        if isinstance(involved, dict) and involved.get("kind") == "Node":
            _node_event(c, reason, message, str(involved.get("name") or ""))
            continue  # about the node, not the pod: never the pod's own OOM, probe or pull
        if isinstance(involved, dict) and involved.get("kind") == "PersistentVolumeClaim":
            if event.get("type") == "Warning" or reason in ("WaitForFirstConsumer", "ExternalProvisioning"):
                claim = f"{involved.get('namespace') or ''}/{involved.get('name') or ''}"
                c.signal("pvc_pending", f"PersistentVolumeClaim {claim}: {reason}: {message}", "event")
            continue  # about the claim: its provisioning, not the pod
        if reason == "FailedCreate" and "exceeded quota" in message:
            # A ReplicaSet or Job controller refused a pod by a ResourceQuota: no pod ever exists.
            c.signal("quota_exceeded", message, "event")
        elif reason == "FailedScheduling":
            if SCHED_CAPACITY.search(message):
                c.signal("insufficient_resources", message, "event")
            if SCHED_CONSTRAINT.search(message):
                c.signal("scheduling_constraint", message, "event")
            if UNBOUND_PVC.search(message):
                c.signal("unbound_pvc", message, "event")
        elif reason in ("FailedMount", "FailedAttachVolume") or (
            reason == "Failed" and VOLUME_FAILURE.search(message)
        ):
            if MISSING_VOLUME_SOURCE.search(message) and not re.search(
                r"persistentvolumeclaim", message, re.I
            ):
                c.signal("missing_config", message, "event")
            elif VOLUME_SUMMARY.search(message):
                c.signal("volume_pending", message, "event")
            else:
                c.signal("volume_error", message, "event")
        elif reason == "Failed" and ("pull" in message.lower() or "image" in message.lower()):
            if INVALID_IMAGE.search(message):
                c.signal("invalid_image", message, "event")
            elif IMAGE_AUTH.search(message):
                c.signal("image_auth", message, "event")
            elif IMAGE_NOT_FOUND.search(message):
                c.signal("image_not_found", message, "event")
            else:
                c.signal("image_pull", message, "event")
        elif reason == "InspectFailed" or INVALID_IMAGE.search(message):
            c.signal("invalid_image", message, "event")
        elif reason == "Failed" and MISSING_VOLUME_SOURCE.search(message):
            c.signal("missing_config", message, "event")
        elif reason == "Failed" and re.search(
            r"Error: (container has runAsNonRoot|failed to create)", message
        ):
            c.signal("config_error", message, "event")
        elif reason == "Unhealthy":
            _probe_event(c, message)
        elif reason in ("OOMKilling",) or re.search(r"out of memory|OOMKill", message, re.I):
            c.signal("oom_killed", message, "event")
        elif reason == "Evicted" or re.search(r"low on resource", message):
            c.signal("evicted", message, "event")
        elif reason in ("NodeNotReady", "NodeLost", "TaintManagerEviction"):
            c.signal("node_not_ready", message, "event")
        elif reason == "Killing" and "liveness" in message.lower():
            c.signal("liveness_restart", message, "event")
        # Application-ish text inside warning events (e.g. init container messages).
        skip = ("FailedScheduling", "Unhealthy", "FailedMount", "FailedAttachVolume", "Failed")
        if event.get("type") == "Warning" and reason not in skip:
            for k in _EVENT_MATCHING(message, fold(message)):
                c.signal(_EVENT_KINDS[k], message, "event")


_CONFIG_OR_CONNECTION = frozenset({"connection_error", "missing_config", "invalid_config"})
_EVENT_KINDS = tuple(kind for kind, _ in LOG_PATTERNS if kind in _CONFIG_OR_CONNECTION)
_EVENT_MATCHING = matching([rx for kind, rx in LOG_PATTERNS if kind in _CONFIG_OR_CONNECTION])


def _node_event(c: _Collector, reason: str, message: str, node: str) -> None:
    """An Event about the Node: the kernel's OOM killer acting for the node (SystemOOM), pressure,
    NotReady. It tells about the node the pod runs on, never about the pod's own memory limit."""
    if reason == "SystemOOM" or reason.endswith("Pressure") or reason == "EvictionThresholdMet":
        c.signal("node_pressure", f"node {node} {reason}: {message}", "node")
    elif reason in ("NodeNotReady", "Rebooted", "NodeLost"):
        c.signal("node_not_ready", f"node {node} {reason}: {message}", "node")


def _claim_signals(c: _Collector, related: Iterable[JSON]) -> None:
    """PersistentVolumeClaims the pod mounts that are not Bound (the gatherer reads them for a pending pod)."""
    for obj in related:
        if not isinstance(obj, dict) or obj.get("kind") != "PersistentVolumeClaim":
            continue
        phase = (obj.get("status") or {}).get("phase") if isinstance(obj.get("status"), dict) else None
        if phase in (None, "Bound"):
            continue
        meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        assert isinstance(meta, dict) and isinstance(spec, dict)
        storage_class = spec.get("storageClassName")
        detail = f"PersistentVolumeClaim {meta.get('namespace', '')}/{meta.get('name', '')} is {phase}"
        detail += f" (storageClassName {storage_class})" if storage_class else " (no storageClassName)"
        c.signal("pvc_pending", detail, "related")
        c.excerpt(detail)


def _probe_event(c: _Collector, message: str) -> None:
    c.signal("probe_failed", message, "event")
    http = PROBE_HTTP.search(message)
    if http:
        c.signal("probe_http_error", f"HTTP {http.group(1)}: {message}", "event")
    elif PROBE_TIMEOUT.search(message):
        c.signal("probe_timeout", message, "event")
    elif PROBE_REFUSED.search(message):
        c.signal("probe_refused", message, "event")
    elif PROBE_MISSING_FILE.search(message):
        c.signal("probe_missing_file", message, "event")


def _node_signals(c: _Collector, node: JSON | None, pod: JSON, facts: dict[str, Any]) -> None:
    if node:
        name = (node.get("metadata") or {}).get("name", "")
        for cond in (node.get("status") or {}).get("conditions") or []:
            ctype, status = cond.get("type"), cond.get("status")
            if ctype == "Ready":
                facts["node_ready"] = status == "True"
            if ctype == "Ready" and status in ("False", "Unknown"):
                c.signal("node_not_ready", f"node {name} Ready={status}: {cond.get('message', '')}", "node")
                c.excerpt(f"node {name} Ready={status} ({cond.get('reason', '')}): {cond.get('message', '')}")
            elif ctype in ("MemoryPressure", "DiskPressure", "PIDPressure") and status == "True":
                c.signal("node_pressure", f"node {name} {ctype}: {cond.get('message', '')}", "node")
                c.excerpt(f"node {name} {ctype}=True: {cond.get('message', '')}")
    status = pod.get("status") or {}
    if status.get("reason") == "Evicted":
        message = str(status.get("message") or "")
        c.signal("evicted", message, "status")
        c.excerpt(f"Evicted: {message}")
        resource = EVICTION_RESOURCE.search(message)
        if resource:
            c.signal("node_pressure", f"eviction for low {resource.group(1)}", "status")
    if status.get("reason") == "NodeLost" or status.get("phase") == "Unknown" or node_is_not_ready(node):
        c.signal("node_lost", f"pod phase {status.get('phase')} reason {status.get('reason')}", "status")
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        c.signal("node_lost", "pod stuck terminating", "status")


def _metric_signals(c: _Collector, ctx: IncidentContext, facts: dict[str, Any]) -> None:
    spec = {x.get("name"): x for x in (ctx.pod.get("spec") or {}).get("containers") or []}
    for cm in (ctx.pod_metrics or {}).get("containers") or []:
        name = cm.get("name")
        usage = cm.get("usage") or {}
        limits = ((spec.get(name) or {}).get("resources") or {}).get("limits") or {}
        for resource, kind in (("cpu", "cpu_saturated"), ("memory", "memory_near_limit")):
            used, limit = _quantity(usage.get(resource)), _quantity(limits.get(resource))
            if used is not None and limit:
                ratio = used / limit
                facts.setdefault("usage_ratio", {})[f"{name}.{resource}"] = round(ratio, 2)
                if ratio >= 0.9:
                    c.signal(kind, f"{name} {resource} at {ratio:.0%} of limit", "metrics")


def _owner_replicas(owner: JSON | None) -> int | None:
    if not owner:
        return None
    replicas = (owner.get("spec") or {}).get("replicas")
    return replicas if isinstance(replicas, int) and not isinstance(replicas, bool) else None


def _log_lines(text: str) -> list[str]:
    """The non-empty lines of a log, at most the last MAX_LOG_LINES (the live path reads fewer)."""
    return [line for line in text.splitlines() if line.strip()][-MAX_LOG_LINES:]


def extract(ctx: IncidentContext, symptom: Symptom, redactor: Redactor) -> Evidence:
    """Build the Evidence for one incident. Every string in it is redacted."""
    c = _Collector(redactor)
    facts: dict[str, Any] = {}
    pod = ctx.pod
    _container_facts(c, pod, facts)
    _event_signals(
        c, (*ctx.events, *(o for o in ctx.related if isinstance(o, dict) and o.get("kind") == "Event"))
    )
    _claim_signals(c, ctx.related)
    _node_signals(c, ctx.node, pod, facts)
    _metric_signals(c, ctx, facts)
    for container, streams in sorted(ctx.logs.items()):
        for stream in ("previous", "current"):
            text = streams.get(stream) if isinstance(streams, dict) else None
            if isinstance(text, str) and text:
                # Redact the whole text first: secrets such as private keys span several lines.
                lines = _log_lines(redactor.text(text))
                _scan_lines(c, lines, f"log:{container}:{stream}", budget=8)
                # The last lines before a crash are usually the most telling.
                for line in lines[-3:]:
                    c.excerpt(f"[{container} {stream}] {line}")
    # Signals derived from several sources.
    ports = {s.detail for s in c.signals if s.kind == "listen_port"}
    probe_ports = {
        str(p.get("port")) for p in (facts.get("probes") or {}).values() if isinstance(p.get("port"), int)
    }
    if ports and probe_ports and not (ports & probe_ports):
        c.signal(
            "probe_port_mismatch", f"app listens on {sorted(ports)}, probes use {sorted(probe_ports)}", "log"
        )
    starts = [float(s.detail) for s in c.signals if s.kind == "startup_seconds"]
    delays = [
        int(p.get("initialDelaySeconds") or 0)
        + int(p.get("periodSeconds") or 10) * int(p.get("failureThreshold") or 3)
        for p in (facts.get("probes") or {}).values()
    ]
    if starts and delays and max(starts) > min(delays):
        c.signal(
            "probe_too_early",
            f"startup takes {max(starts):.0f}s, probes give up after {min(delays)}s",
            "spec",
        )

    _rollout_signals(c, ctx, facts)
    _workload_signals(c, ctx.owner)
    _dependency_signals(c, ctx, facts)

    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    if not pod and isinstance(ctx.owner, dict):  # a workload incident without a pod: its template's
        spec = ((ctx.owner.get("spec") or {}).get("template") or {}).get("spec") or {}
    images = tuple(
        str(x.get("image", "")) for x in (spec.get("containers") or []) + (spec.get("initContainers") or [])
    )
    owner_ref = _ref(ctx.owner)
    if owner_ref is None:
        o = controller_ref(pod)
        if o is not None:
            owner_ref = ObjectRef(
                kind=str(o.get("kind", "")), name=str(o.get("name", "")), namespace=str(meta.get("namespace", "")),
                uid=str(o.get("uid", "")), api_version=str(o.get("apiVersion", "")),
            )  # fmt: skip
    excerpts = _within_budget(c.excerpts)
    target = ObjectRef(
        "Pod", str(meta.get("name", "")), str(meta.get("namespace", "")), str(meta.get("uid", ""))
    )
    if symptom in WORKLOAD_SYMPTOMS and owner_ref is not None:
        target = owner_ref  # the workload is what the decision is about, never one of its pods
    return Evidence(
        symptom=symptom,
        pod=target,
        owner=owner_ref,
        node=str(spec.get("nodeName") or ((ctx.node or {}).get("metadata") or {}).get("name") or ""),
        images=images,
        signals=tuple(c.signals),
        excerpts=excerpts,
        facts=facts,
        replicas=_owner_replicas(ctx.owner),
    )


def _dependency_signals(c: _Collector, ctx: IncidentContext, facts: dict[str, Any]) -> None:
    """The Services (and workloads) behind the hosts that connection errors name (core.dependencies)."""
    if not any(isinstance(o, dict) and o.get("kind") == "Service" for o in ctx.related):
        return
    hosts = dependencies.hosts_in(s.detail for s in c.signals if s.kind == "connection_error")
    found = dependencies.trace(hosts, ctx.namespace, ctx.related)
    for dep in found:
        line = dep.describe()
        c.signal("dependency_down" if dep.down else "dependency", line, "dependency")
        c.excerpt(f"dependency {dep.host}: {line}")
    if found:
        facts["dependencies"] = [
            {
                "host": d.host,
                "service": d.service.key(),
                "ready_endpoints": d.ready_endpoints,
                "workload": d.workload,
                "replicas": d.replicas,
            }
            for d in found
        ]


# Owner conditions that say the workload as a whole is failing, beyond this pod.
WORKLOAD_FAILURES: dict[tuple[str, str, str], str] = {
    ("Deployment", "Progressing", "ProgressDeadlineExceeded"): "rollout_stalled",
    ("Job", "Failed", "BackoffLimitExceeded"): "job_failed",
    ("Job", "Failed", "DeadlineExceeded"): "job_failed",
    ("Job", "Failed", "PodFailurePolicy"): "job_failed",
}


def _workload_signals(c: _Collector, owner: JSON | None) -> None:
    """A Deployment past its progress deadline, a Job over its backoff limit or deadline."""
    if not isinstance(owner, dict):
        return
    kind = str(owner.get("kind") or "")
    meta = owner.get("metadata") if isinstance(owner.get("metadata"), dict) else {}
    status = owner.get("status") if isinstance(owner.get("status"), dict) else {}
    assert isinstance(meta, dict) and isinstance(status, dict)
    for cond in status.get("conditions") or []:
        if not isinstance(cond, dict):
            continue
        signal = WORKLOAD_FAILURES.get((kind, str(cond.get("type")), str(cond.get("reason"))))
        wanted = "False" if kind == "Deployment" else "True"
        if signal and cond.get("status") == wanted:
            detail = f"{kind} {meta.get('namespace', '')}/{meta.get('name', '')} {cond.get('reason')}: {cond.get('message', '')}"
            c.signal(signal, detail, "owner")
            c.excerpt(detail)


def _rollout_signals(c: _Collector, ctx: IncidentContext, facts: dict[str, Any]) -> None:
    """The owner Deployment's rollout: revisions, what changed, and whether it caused the failure."""
    found = rollout.analyse(ctx.pod, ctx.owner, ctx.related)
    if found is None:
        return
    c.signal("rollout", found.summary(), "rollout")
    c.excerpt(found.summary())
    for line in found.diff:
        c.signal("rollout_change", line, "rollout")
        c.excerpt(f"rollout change: {line}")
    fact: dict[str, Any] = {"revision": found.current.number, "replicaset": found.current.replicaset}
    if found.previous is not None:
        fact.update(
            previous_revision=found.previous.number,
            previous_replicaset=found.previous.replicaset,
            previous_ready=found.previous.ready,
        )
    if found.regression:
        c.signal("rollout_regression", found.regression_line(), "rollout")
        c.excerpt(found.regression_line())
        fact["regression"] = True
    facts["rollout"] = fact


def _within_budget(lines: list[str]) -> tuple[str, ...]:
    out: list[str] = []
    used = 0
    for line in lines[:MAX_EXCERPTS]:
        if used + len(line) > MAX_EXCERPT_CHARS:
            break
        out.append(line)
        used += len(line)
    return tuple(out)
