"""The AgentDecision store: records every decision as a custom resource and moves it through its phases.

`manifest_for` turns a core `Decision` into a valid AgentDecision (pure: truncated to the
CRD's limits so the API server's schema validation always accepts it). `DecisionStore`
creates it in the target's namespace, sets `.status` through the status subresource only,
and moves the phase with `transition`, a conditional write that exactly one caller can win:
that is what makes "execute exactly once" hold across operator replicas and retries.
`RecordedDecision.from_object` reads a CR back (from the API or a kopf event body) and
raises `DecisionFormatError` with a one-line message naming the CR and the field.

What was decided is pinned twice: the CRD's CEL rules make `spec` immutable apart from the
human's verdict, and `record` writes `status.actionDigest` (`action_digest` of the decided
request) through the status subresource, which approvers cannot write; the executor compares
it with what it is about to run. A transition out of PendingApproval copies the verdict's
author (`spec.approvedBy`, checked by the admission policy in deploy/) to `status.reviewedBy`.

The redacted incident travels compressed in `spec.zippedIncident` (`zip_incident`; read back,
bounded against gzip bombs, with `incident_of`, which also reads the plain `spec.incident` of
older decisions): listings stay small, and `kubectl describe`, which sorts fields by name,
prints it as one line after diagnosis, reasoning and policy.

Used by the operator (sre_agent.operator) and by `sre-agent export` (adapters.kube.capture).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import json
import logging
import re
import zlib
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from sre_agent.adapters.kube.client import KubeClient, KubeError
from sre_agent.core.lifecycle import OPEN_PHASES as OPEN_PHASES  # re-exported
from sre_agent.core.lifecycle import Phase as Phase  # re-exported: status.phase is defined in the core
from sre_agent.core.policy import ActionRequest
from sre_agent.core.reasoning import Clock
from sre_agent.core.symptoms import parse_time
from sre_agent.domain import JSON, Category, Decision, ObjectRef, ProposedAction, Symptom, api_version_of

E = TypeVar("E", bound=StrEnum)

log = logging.getLogger("sre_agent.decisions")

GROUP = "sre.agentops.dev"
VERSION = "v1alpha1"
PLURAL = "agentdecisions"
KIND = "AgentDecision"
API_VERSION = f"{GROUP}/{VERSION}"

LABEL_FINGERPRINT = "sre.agentops.dev/fingerprint"
LABEL_GROUP = "sre.agentops.dev/group"  # hashed owner key: one workload, one group
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "sre-agent"

# The CRD's limits (crds/agentdecisions.yaml); manifest_for truncates to them.
MAX_DIAGNOSIS = 4096
MAX_REASONING = 8192
MAX_EXCERPTS = 50
MAX_EXCERPT = 1024
MAX_SIGNALS = 100
MAX_SIGNAL = 1024
MAX_NOTES = 50
MAX_NOTE = 1024
MAX_MESSAGE = 1024
MAX_NAME = 63
MAX_PARAMETERS = 16
MAX_PARAMETER = 1024
INT64 = 2**63
# spec.zippedIncident: the incident as gzip + base64 (crds/agentdecisions.yaml's maxLength), and
# the most it may inflate to when read back (a hand-made gzip bomb stops there).
MAX_ZIPPED_INCIDENT = 512 * 1024
MAX_INCIDENT_INFLATED = 8 * 1024 * 1024

CONDITION_READY = "Ready"
# A record() whose status write never happened (the writer died) counts as open this long.
UNSET_PHASE_GRACE = timedelta(minutes=5)


# Which status timestamp a phase sets.
_TIMESTAMP_OF: Mapping[Phase, str] = {
    Phase.APPROVED: "approvedAt",
    Phase.EXECUTING: "executedAt",
    Phase.EXECUTED: "finishedAt",
    Phase.REJECTED: "finishedAt",
    Phase.BLOCKED: "finishedAt",
    Phase.FAILED: "finishedAt",
    Phase.EXPIRED: "finishedAt",
}


class DecisionFormatError(ValueError):
    """An AgentDecision object is malformed; the one-line message names the CR and the field."""


# --------------------------------------------------------------------------------- helpers


def rfc3339(at: datetime) -> str:
    """A time as Kubernetes writes it: UTC, seconds, trailing Z."""
    if at.tzinfo is not None:
        at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _hash(text: str, n: int = 16) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def group_key(decision: Decision) -> str:
    """The hashed owner key: decisions about pods of one workload share it (pod key without owner)."""
    ev = decision.evidence
    return _hash(ev.owner.key() if ev.owner is not None else ev.pod.key())


_NOT_DNS = re.compile(r"[^a-z0-9-]+")


def _slug(text: str, limit: int) -> str:
    slug = _NOT_DNS.sub("-", text.lower()).strip("-")
    return slug[:limit].strip("-") or "decision"


def _base36(value: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    value = abs(value)
    while True:
        value, rem = divmod(value, 36)
        out = digits[rem] + out
        if not value:
            return out


def decision_name(decision: Decision) -> str:
    """`<workload>-<hash of group+fingerprint>-<time>`: DNS-1123, at most 63 characters.

    The same incident of the same workload always gets the same stem; the time suffix (seconds,
    base 36) tells later decisions about it apart. Usable as a label value too.
    """
    ev = decision.evidence
    workload = ev.owner.name if ev.owner is not None else ev.pod.name
    stem = _hash(f"{group_key(decision)}/{decision.fingerprint}", 8)
    suffix = _base36(int(decision.decided_at.timestamp()))
    room = MAX_NAME - len(stem) - len(suffix) - 2
    return f"{_slug(workload, room)}-{stem}-{suffix}"


def _ref_json(ref: ObjectRef, *, with_namespace: bool) -> JSON:
    out: JSON = {"kind": ref.kind, "name": ref.name}
    if with_namespace and ref.namespace:
        out["namespace"] = ref.namespace
    if ref.uid:
        out["uid"] = ref.uid
    if not with_namespace and ref.api_version:
        out["apiVersion"] = ref.api_version
    return out


def _json_safe(value: Any) -> Any:
    """Parameters as plain JSON (an LLM may have produced tuples or odd scalars)."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _parameter(value: Any) -> int | str:
    """One parameter as the CRD stores it: an integer or a string (anything else as compact JSON)."""
    if isinstance(value, int) and not isinstance(value, bool) and -INT64 <= value < INT64:
        return value
    text = value if isinstance(value, str) else json.dumps(_json_safe(value), sort_keys=True)
    return _clip(text, MAX_PARAMETER)


def _parameters(parameters: Mapping[str, Any]) -> JSON:
    items = sorted(parameters.items(), key=lambda kv: str(kv[0]))[:MAX_PARAMETERS]
    return {str(k): _parameter(v) for k, v in items}


def action_digest(request: ActionRequest) -> str:
    """sha256 of everything the executor acts on: action, parameters, target, owner, node, confidence.

    Pure and canonical (sorted JSON), so the digest of a decision read back from the API server
    equals the one computed from its manifest when nothing in between changed it.
    """

    def ref(r: ObjectRef | None) -> list[str] | None:
        return None if r is None else [r.kind, r.namespace, r.name, r.uid, r.api_version]

    body = {
        "action": request.action.name,
        "parameters": _json_safe(dict(request.action.parameters)),
        "target": ref(request.pod),
        "owner": ref(request.owner),
        "node": request.node,
        "confidence": float(request.confidence),
        "currentReplicas": request.current_replicas,
    }
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def zip_incident(incident: JSON) -> str:
    """The incident as spec.zippedIncident stores it: compact JSON, gzip (no timestamp), base64.

    Deterministic, so the same incident always gives the same string. Compressed, so listing
    and describing decisions does not move (or print) every incident body: a ~256 KiB incident
    becomes one line of typically 20-60 KiB that `kubectl describe` prints last.
    """
    raw = json.dumps(incident, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.b64encode(gzip.compress(raw, compresslevel=9, mtime=0)).decode("ascii")


def without_incident(obj: JSON) -> JSON:
    """The decision object without the incident it carries (a shallow copy when it had one)."""
    spec = obj.get("spec")
    if not isinstance(spec, dict) or not ({"incident", "zippedIncident"} & spec.keys()):
        return obj
    return {**obj, "spec": {k: v for k, v in spec.items() if k not in ("incident", "zippedIncident")}}


def incident_of(obj: JSON) -> JSON | None:
    """The incident an AgentDecision carries (spec.zippedIncident, or the spec.incident object of
    decisions recorded before it existed); None when it has none. DecisionFormatError when broken."""
    spec = obj.get("spec") if isinstance(obj, dict) else None
    if not isinstance(spec, dict):
        return None
    zipped = spec.get("zippedIncident")
    if zipped is None or zipped == "":
        plain = spec.get("incident")
        return plain if isinstance(plain, dict) and plain else None
    field = "spec.zippedIncident"
    if not isinstance(zipped, str) or len(zipped) > MAX_ZIPPED_INCIDENT:
        raise DecisionFormatError(
            f"{_where(obj)}: invalid field {field}: not a string within the CRD's limit"
        )
    try:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip
        raw = inflater.decompress(base64.b64decode(zipped, validate=True), MAX_INCIDENT_INFLATED)
    except (binascii.Error, zlib.error) as exc:
        raise DecisionFormatError(
            f"{_where(obj)}: invalid field {field}: not base64 gzip ({type(exc).__name__})"
        ) from None
    if inflater.unconsumed_tail:
        raise DecisionFormatError(
            f"{_where(obj)}: invalid field {field}: inflates beyond {MAX_INCIDENT_INFLATED // 2**20} MiB"
        )
    try:
        incident = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DecisionFormatError(
            f"{_where(obj)}: invalid field {field}: not JSON ({type(exc).__name__})"
        ) from None
    if not isinstance(incident, dict):
        raise DecisionFormatError(f"{_where(obj)}: invalid field {field}: not an object")
    return incident or None


def manifest_for(
    decision: Decision,
    *,
    expires_at: datetime,
    incident: JSON | None = None,
    name: str | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> JSON:
    """The AgentDecision object for a decision, within every limit the CRD sets. Pure.

    `name`, extra `labels` and `annotations` come from the decision memory (core.lifecycle).
    """
    ev = decision.evidence
    d = decision.diagnosis
    spec: JSON = {
        "target": _ref_json(ev.pod, with_namespace=True),
        "incidentId": decision.incident_id,
        "fingerprint": decision.fingerprint,
        "symptom": ev.symptom.value,
        "category": d.category.value,
        "diagnosis": _clip(d.summary, MAX_DIAGNOSIS),
        "reasoning": _clip(d.reasoning, MAX_REASONING),
        "action": d.action.name,
        "parameters": _parameters(d.action.parameters),
        "confidence": min(1.0, max(0.0, float(d.confidence))),
        "source": d.source,
        "policy": {
            "outcome": decision.verdict.outcome,
            "reason": _clip(decision.verdict.reason, MAX_MESSAGE),
        },
        "evidence": {
            "signals": [_clip(f"{s.kind}: {s.detail}", MAX_SIGNAL) for s in ev.signals[:MAX_SIGNALS]],
            "excerpts": [_clip(line, MAX_EXCERPT) for line in ev.excerpts[:MAX_EXCERPTS]],
        },
        "notes": [_clip(n, MAX_NOTE) for n in d.notes[:MAX_NOTES]],
        "expiresAt": rfc3339(expires_at),
    }
    if ev.owner is not None:
        spec["owner"] = _ref_json(ev.owner, with_namespace=False)
    if ev.node:
        spec["node"] = ev.node
    if ev.replicas is not None:
        spec["currentReplicas"] = ev.replicas
    if d.model:
        spec["model"] = d.model
    if decision.verdict.dry_run:
        spec["policy"]["dryRun"] = True
    if incident is not None:
        zipped = zip_incident(incident)
        if len(zipped) <= MAX_ZIPPED_INCIDENT:  # always, for incidents capture bounded to 256 KiB
            spec["zippedIncident"] = zipped
    metadata: JSON = {
        "name": name or decision_name(decision),
        "namespace": ev.pod.namespace,
        "labels": {
            **(labels or {}),
            LABEL_FINGERPRINT: decision.fingerprint,
            LABEL_GROUP: group_key(decision),
            LABEL_MANAGED_BY: MANAGED_BY,
        },
    }
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}


# --------------------------------------------------------------------------------- reading back


def _where(obj: JSON) -> str:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    ns, name = meta.get("namespace") or "?", meta.get("name") or "?"
    return f"AgentDecision {ns}/{name}"


def _str(obj: JSON, mapping: Any, key: str, field: str, *, required: bool = False, default: str = "") -> str:
    if not isinstance(mapping, dict):
        if required:
            raise DecisionFormatError(f"{_where(obj)}: invalid field {field}: missing")
        return default
    value = mapping.get(key)
    if value is None or value == "":
        if required:
            raise DecisionFormatError(f"{_where(obj)}: invalid field {field}: missing")
        return default
    if not isinstance(value, str):
        raise DecisionFormatError(f"{_where(obj)}: invalid field {field}: expected a string")
    return value


def _enum(obj: JSON, mapping: Any, key: str, kind: type[E], field: str) -> E:
    raw = _str(obj, mapping, key, field, required=True)
    try:
        return kind(raw)
    except ValueError:
        raise DecisionFormatError(
            f"{_where(obj)}: invalid field {field}: unknown {key} {raw!r:.60}"
        ) from None


def _time(obj: JSON, mapping: Any, key: str, field: str) -> datetime | None:
    raw = mapping.get(key) if isinstance(mapping, dict) else None
    if raw is None or raw == "":
        return None
    parsed = parse_time(raw)
    if parsed is None:
        raise DecisionFormatError(f"{_where(obj)}: invalid field {field}: not an RFC 3339 time: {raw!r:.60}")
    return parsed


@dataclass(frozen=True)
class RecordedDecision:
    """An AgentDecision as read back from the cluster: what the operator needs to act on it."""

    name: str
    namespace: str
    uid: str
    resource_version: str
    target: ObjectRef
    owner: ObjectRef | None
    node: str
    symptom: Symptom
    category: Category
    action: ProposedAction
    confidence: float
    source: str
    fingerprint: str
    group: str
    approved: bool | None
    phase: Phase | None
    expires_at: datetime | None
    created_at: datetime | None
    policy_outcome: str
    current_replicas: int | None = None
    incident_id: str = ""
    attempts: int = 0
    approved_by: str = ""
    rejection_reason: str = ""
    recorded_digest: str = ""  # status.actionDigest: what the operator decided, written at creation
    reviewed_by: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def is_open(self) -> bool:
        return self.phase in OPEN_PHASES

    @classmethod
    def from_object(cls, obj: JSON) -> RecordedDecision:
        """Parse an AgentDecision object; DecisionFormatError names the CR and the bad field."""
        if not isinstance(obj, dict):
            raise DecisionFormatError("AgentDecision ?/?: invalid field (top level): expected an object")
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            raise DecisionFormatError(f"{_where(obj)}: invalid field metadata: expected an object")
        name = _str(obj, meta, "name", "metadata.name", required=True)
        namespace = _str(obj, meta, "namespace", "metadata.namespace", required=True)
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            raise DecisionFormatError(f"{_where(obj)}: invalid field spec: missing or not an object")
        target_raw = spec.get("target")
        if not isinstance(target_raw, dict):
            raise DecisionFormatError(f"{_where(obj)}: invalid field spec.target: missing or not an object")
        target_kind = _str(obj, target_raw, "kind", "spec.target.kind", required=True)
        target = ObjectRef(
            kind=target_kind,
            name=_str(obj, target_raw, "name", "spec.target.name", required=True),
            namespace=_str(obj, target_raw, "namespace", "spec.target.namespace", default=namespace),
            uid=_str(obj, target_raw, "uid", "spec.target.uid"),
            api_version=api_version_of(target_kind),  # a Job's alert Event names batch/v1
        )
        owner = None
        owner_raw = spec.get("owner")
        if owner_raw is not None:
            if not isinstance(owner_raw, dict):
                raise DecisionFormatError(f"{_where(obj)}: invalid field spec.owner: expected an object")
            owner = ObjectRef(
                kind=_str(obj, owner_raw, "kind", "spec.owner.kind", required=True),
                name=_str(obj, owner_raw, "name", "spec.owner.name", required=True),
                namespace=target.namespace,
                uid=_str(obj, owner_raw, "uid", "spec.owner.uid"),
                api_version=_str(obj, owner_raw, "apiVersion", "spec.owner.apiVersion", default="apps/v1"),
            )
        symptom = _enum(obj, spec, "symptom", Symptom, "spec.symptom")
        category = _enum(obj, spec, "category", Category, "spec.category")
        action_name = _str(obj, spec, "action", "spec.action", required=True)
        parameters = spec.get("parameters")
        if parameters is None:
            parameters = {}
        if not isinstance(parameters, dict):
            raise DecisionFormatError(f"{_where(obj)}: invalid field spec.parameters: expected an object")
        confidence = spec.get("confidence", 0.0)
        if (
            isinstance(confidence, bool)
            or not isinstance(confidence, int | float)
            or not 0 <= confidence <= 1
        ):
            raise DecisionFormatError(
                f"{_where(obj)}: invalid field spec.confidence: expected a number between 0 and 1"
            )
        source = _str(obj, spec, "source", "spec.source", default="rules")
        approved = spec.get("approved")
        if approved is not None and not isinstance(approved, bool):
            raise DecisionFormatError(f"{_where(obj)}: invalid field spec.approved: expected true or false")
        replicas = spec.get("currentReplicas")
        if replicas is not None and (isinstance(replicas, bool) or not isinstance(replicas, int)):
            raise DecisionFormatError(
                f"{_where(obj)}: invalid field spec.currentReplicas: expected an integer"
            )
        policy = spec.get("policy")
        if policy is not None and not isinstance(policy, dict):
            raise DecisionFormatError(f"{_where(obj)}: invalid field spec.policy: expected an object")
        status = obj.get("status")
        if status is not None and not isinstance(status, dict):
            raise DecisionFormatError(f"{_where(obj)}: invalid field status: expected an object")
        phase = (
            _enum(obj, status, "phase", Phase, "status.phase")
            if _str(obj, status, "phase", "status.phase")
            else None
        )
        attempts = (status or {}).get("attempts", 0)
        labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
        fingerprint = _str(obj, spec, "fingerprint", "spec.fingerprint") or str(
            (labels or {}).get(LABEL_FINGERPRINT) or ""
        )
        return cls(
            name=name,
            namespace=namespace,
            uid=str(meta.get("uid") or ""),
            resource_version=str(meta.get("resourceVersion") or ""),
            target=target,
            owner=owner,
            node=_str(obj, spec, "node", "spec.node"),
            symptom=symptom,
            category=category,
            action=ProposedAction(action_name, dict(parameters)),
            confidence=float(confidence),
            source=source,
            fingerprint=fingerprint,
            group=str((labels or {}).get(LABEL_GROUP) or ""),
            approved=approved,
            phase=phase,
            expires_at=_time(obj, spec, "expiresAt", "spec.expiresAt"),
            created_at=_time(obj, meta, "creationTimestamp", "metadata.creationTimestamp"),
            policy_outcome=_str(obj, policy, "outcome", "spec.policy.outcome"),
            current_replicas=replicas,
            incident_id=_str(obj, spec, "incidentId", "spec.incidentId"),
            attempts=attempts if isinstance(attempts, int) and not isinstance(attempts, bool) else 0,
            approved_by=_str(obj, spec, "approvedBy", "spec.approvedBy"),
            rejection_reason=_str(obj, spec, "rejectionReason", "spec.rejectionReason"),
            recorded_digest=_str(obj, status, "actionDigest", "status.actionDigest"),
            reviewed_by=_str(obj, status, "reviewedBy", "status.reviewedBy"),
        )

    def request(self) -> ActionRequest:
        """The policy question to ask again when this decision is approved (or auto-executed)."""
        return ActionRequest(
            action=self.action,
            pod=self.target,
            owner=self.owner,
            node=self.node,
            confidence=self.confidence,
            current_replicas=self.current_replicas,
        )


# --------------------------------------------------------------------------------- status


def _ready_condition(phase: Phase, message: str, now: datetime, previous: Any) -> JSON:
    """The `Ready` condition: True once executed, False once it ended otherwise, Unknown while open."""
    if phase == Phase.EXECUTED:
        status = "True"
    elif phase in OPEN_PHASES:
        status = "Unknown"
    else:
        status = "False"
    since = rfc3339(now)
    if isinstance(previous, dict) and previous.get("status") == status and previous.get("lastTransitionTime"):
        since = str(previous["lastTransitionTime"])
    return {
        "type": CONDITION_READY,
        "status": status,
        "reason": phase.value,
        "message": _one_line(message, MAX_MESSAGE),
        "lastTransitionTime": since,
    }


def _conditions(current: Any, phase: Phase, message: str, now: datetime) -> list[JSON]:
    existing = [c for c in current or [] if isinstance(c, dict)]
    previous = next((c for c in existing if c.get("type") == CONDITION_READY), None)
    others = [c for c in existing if c.get("type") != CONDITION_READY]
    return [*others, _ready_condition(phase, message, now, previous)]


class DecisionStore:
    """Creates, reads and moves AgentDecisions; every status write goes through /status."""

    def __init__(self, kube: KubeClient, clock: Clock) -> None:
        self.kube = kube
        self.clock = clock

    async def record(
        self,
        decision: Decision,
        *,
        phase: Phase,
        message: str,
        expires_at: datetime,
        incident: JSON | None = None,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> tuple[RecordedDecision, bool]:
        """Create the AgentDecision and set its status; (existing, False) if an open one already exists."""
        manifest = manifest_for(
            decision,
            expires_at=expires_at,
            incident=incident,
            name=name,
            labels=labels,
            annotations=annotations,
        )
        digest = action_digest(RecordedDecision.from_object(manifest).request())
        namespace = manifest["metadata"]["namespace"]
        labels = manifest["metadata"]["labels"]
        existing = await self.find_open(namespace, labels[LABEL_GROUP], labels[LABEL_FINGERPRINT])
        if existing is not None:
            return existing, False
        try:
            created = await self.kube.create(API_VERSION, PLURAL, namespace, manifest)
        except KubeError as exc:
            if exc.status != 409:
                raise
            # Same name: the same incident was recorded within the same second (another replica).
            again = await self.kube.get(API_VERSION, PLURAL, namespace, manifest["metadata"]["name"])
            if again is None:
                raise
            return RecordedDecision.from_object(again), False
        name = created["metadata"]["name"]
        now = self.clock.now()
        status: JSON = {
            "phase": phase.value,
            "message": _one_line(message, MAX_MESSAGE),
            "decidedAt": rfc3339(decision.decided_at),
            "actionDigest": digest,
            "attempts": 0,
            "observedGeneration": int(created["metadata"].get("generation") or 1),
            "conditions": _conditions([], phase, message, now),
        }
        stamp = _TIMESTAMP_OF.get(phase)
        if stamp and phase != Phase.EXECUTING:
            status[stamp] = rfc3339(now)
        updated = await self.kube.patch(
            API_VERSION, PLURAL, namespace, name, {"status": status}, subresource="status"
        )
        log.info("Created AgentDecision %s/%s (%s, %s)", namespace, name, decision.action.name, phase.value)
        return RecordedDecision.from_object(updated), True

    async def find_open(self, namespace: str, group: str, fingerprint: str) -> RecordedDecision | None:
        """An open decision of this group with this fingerprint, if any (the newest)."""
        selector = f"{LABEL_GROUP}={group},{LABEL_FINGERPRINT}={fingerprint}"
        items = await self.kube.list_objects(API_VERSION, PLURAL, namespace, label_selector=selector)
        now = self.clock.now()
        found: list[RecordedDecision] = []
        for item in items:
            try:
                rec = RecordedDecision.from_object(item)
            except DecisionFormatError as exc:
                log.warning("Ignoring malformed decision: %s", exc)
                continue
            if (item.get("metadata") or {}).get("deletionTimestamp"):
                continue
            if rec.is_open:
                found.append(rec)
            elif rec.phase is None and (rec.created_at is None or now - rec.created_at < UNSET_PHASE_GRACE):
                found.append(rec)  # being recorded right now (status not written yet)
        found.sort(key=lambda r: r.created_at.isoformat() if r.created_at else "")
        return found[-1] if found else None

    async def transition(
        self,
        rec: RecordedDecision,
        to: Phase,
        message: str,
        *,
        expect: Collection[Phase],
        executed_by: str | None = None,
    ) -> RecordedDecision | None:
        """Move the phase to `to` if it is still one of `expect`; None when someone else moved it.

        Re-reads the object, checks the phase (and that `spec.approved` is what the caller saw),
        then writes /status with `metadata.resourceVersion` of that read: the API server
        answers 409 if anything changed in between, so of two concurrent callers exactly one wins.
        """
        current = await self.kube.get(API_VERSION, PLURAL, rec.namespace, rec.name)
        if current is None:
            log.info("AgentDecision %s is gone; not moving it to %s", rec.key, to.value)
            return None
        fresh = RecordedDecision.from_object(current)
        if fresh.uid and rec.uid and fresh.uid != rec.uid:
            return None  # deleted and recreated under the same name: not the caller's decision
        if fresh.phase not in set(expect):
            log.info(
                "AgentDecision %s is %s, not %s; not moving it to %s",
                rec.key,
                fresh.phase.value if fresh.phase else "unset",
                "/".join(sorted(p.value for p in expect)),
                to.value,
            )
            return None
        if fresh.approved != rec.approved:
            log.info("AgentDecision %s: approval changed since it was read; not moving it", rec.key)
            return None
        old = current.get("status") if isinstance(current.get("status"), dict) else {}
        assert isinstance(old, dict)
        now = self.clock.now()
        status: JSON = {
            "phase": to.value,
            "message": _one_line(message, MAX_MESSAGE),
            "observedGeneration": int((current.get("metadata") or {}).get("generation") or 1),
            "conditions": _conditions(old.get("conditions"), to, message, now),
        }
        stamp = _TIMESTAMP_OF.get(to)
        if stamp:
            status[stamp] = rfc3339(now)
        if to == Phase.EXECUTING:
            attempts = old.get("attempts")
            status["attempts"] = (attempts if isinstance(attempts, int) else 0) + 1
        if executed_by:
            status["executedBy"] = _one_line(executed_by, 253)
        if fresh.phase == Phase.PENDING_APPROVAL and fresh.approved is not None and fresh.approved_by:
            # The human verdict this move acts on: who gave it (checked by admission) and when.
            status["reviewedBy"] = _one_line(fresh.approved_by, 253)
            status["reviewedAt"] = rfc3339(now)
        body = {"metadata": {"resourceVersion": fresh.resource_version}, "status": status}
        try:
            updated = await self.kube.patch(
                API_VERSION, PLURAL, rec.namespace, rec.name, body, subresource="status"
            )
        except KubeError as exc:
            if exc.status in (404, 409):
                log.info(
                    "AgentDecision %s changed concurrently (%s); not moving it to %s",
                    rec.key,
                    exc.status,
                    to.value,
                )
                return None
            raise
        log.info(
            "AgentDecision %s: %s -> %s", rec.key, fresh.phase.value if fresh.phase else "unset", to.value
        )
        return RecordedDecision.from_object(updated)

    async def get(self, namespace: str, name: str) -> RecordedDecision | None:
        found = await self.kube.get(API_VERSION, PLURAL, namespace, name)
        return RecordedDecision.from_object(found) if found is not None else None

    async def get_object(self, namespace: str, name: str) -> JSON | None:
        return await self.kube.get(API_VERSION, PLURAL, namespace, name)

    async def list_objects(self, namespace: str | None = None) -> list[JSON]:
        return await self.kube.list_objects(API_VERSION, PLURAL, namespace)

    async def list_lean(self, namespace: str | None = None) -> list[JSON]:
        """Every decision without its incident (spec.zippedIncident, spec.incident), page by page:
        what the operator's sweep and rebuild read, without holding every incident at once."""
        return await self.kube.list_paged(API_VERSION, PLURAL, namespace, keep=without_incident)

    async def list_metadata(self, namespace: str | None = None, page_size: int = 500) -> AsyncIterator[JSON]:
        """The metadata of every decision (name, namespace, labels, creationTimestamp), page by page
        as PartialObjectMetadata: no spec, no status, no incident crosses the wire."""
        token: str | None = None
        while True:
            page = await self.kube.list_page(
                API_VERSION, PLURAL, namespace, limit=page_size, continue_token=token, metadata_only=True
            )
            for item in page.get("items") or []:
                if isinstance(item, dict) and isinstance(item.get("metadata"), dict):
                    yield item["metadata"]
            meta = page.get("metadata")
            token = meta.get("continue") if isinstance(meta, dict) else None
            if not token:
                return

    async def list(self, namespace: str | None = None) -> list[RecordedDecision]:
        """Every well-formed decision (malformed ones are logged and skipped)."""
        out = []
        for item in await self.list_objects(namespace):
            try:
                out.append(RecordedDecision.from_object(item))
            except DecisionFormatError as exc:
                log.warning("Ignoring malformed decision: %s", exc)
        return out

    async def delete(self, namespace: str, name: str) -> None:
        await self.kube.delete(API_VERSION, PLURAL, namespace, name)
