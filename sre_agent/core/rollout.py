"""Rollout history of a Deployment, read from its ReplicaSets (pure).

The Deployment controller keeps one ReplicaSet per pod template, each annotated with the
rollout revision (`deployment.kubernetes.io/revision`) and, when the user set one, the
change-cause (`kubernetes.io/change-cause`). From those this module answers: which revision
is the failing pod's, which is the one before it, what changed between the two (images and
env), and whether the failures began right after the rollout while the previous revision was
healthy. `evidence.extract` turns the answer into signals; `rules` proposes
`rollback_deployment` on it; the executor re-reads the same facts live before acting.

Every field read here comes from the API or an incident file, so nothing is trusted: a missing
or non-numeric revision simply leaves that ReplicaSet out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sre_agent.core.owners import controller_ref
from sre_agent.core.redaction import MASK, REFERENCE_NAME, SENSITIVE_NAME
from sre_agent.domain import JSON

REVISION = "deployment.kubernetes.io/revision"
CHANGE_CAUSE = "kubernetes.io/change-cause"
TEMPLATE_HASH = "pod-template-hash"
MAX_DIFF_LINES = 12
MAX_VALUE = 120


@dataclass(frozen=True)
class Revision:
    """One ReplicaSet of a Deployment: its revision number, name and state."""

    number: int
    replicaset: str
    uid: str
    change_cause: str
    replicas: int
    ready: int
    template: Mapping[str, Any]
    created: str


@dataclass(frozen=True)
class Rollout:
    """The failing pod's revision, the one before it, and what changed."""

    deployment: str
    current: Revision
    previous: Revision | None
    diff: tuple[str, ...]
    pod_in_current: bool  # the failing pod belongs to the newest revision
    previous_healthy: bool  # the previous revision still serves ready pods

    @property
    def regression(self) -> bool:
        """Failures began right after rollout N, and revision N-1 was healthy."""
        return self.pod_in_current and self.previous is not None and self.previous_healthy

    def summary(self) -> str:
        cur = self.current
        text = f"Deployment {self.deployment} is at revision {cur.number} (ReplicaSet {cur.replicaset})"
        if cur.change_cause:
            text += f", change-cause: {cur.change_cause[:MAX_VALUE]}"
        if self.previous is not None:
            prev = self.previous
            text += (
                f"; previous revision {prev.number} (ReplicaSet {prev.replicaset}) has "
                f"{prev.ready}/{prev.replicas} ready pods"
            )
        return text

    def regression_line(self) -> str:
        assert self.previous is not None
        return (
            f"failures began right after rollout {self.current.number}; revision {self.previous.number} "
            f"was healthy ({self.previous.ready} ready pods in ReplicaSet {self.previous.replicaset})"
        )


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit() and len(value) < 10:
        return int(value)
    return None


def _count(value: Any) -> int:
    n = _int(value)
    return n if n is not None and n >= 0 else 0


def owned_by(obj: JSON, owner_uid: str, owner_name: str) -> bool:
    """Whether `obj`'s controller ownerReference is the given Deployment (uid when known, else name)."""
    ref = controller_ref(obj)
    if ref is None or ref.get("kind") != "Deployment":
        return False
    return ref.get("uid") == owner_uid if owner_uid else ref.get("name") == owner_name


def revisions(deployment: JSON, replicasets: Iterable[JSON]) -> list[Revision]:
    """The Deployment's ReplicaSets as revisions, newest first (ReplicaSets it does not own are left out)."""
    meta = deployment.get("metadata") or {}
    uid, name = str(meta.get("uid") or ""), str(meta.get("name") or "")
    out: list[Revision] = []
    for rs in replicasets:
        if (
            not isinstance(rs, dict)
            or rs.get("kind", "ReplicaSet") != "ReplicaSet"
            or not owned_by(rs, uid, name)
        ):
            continue
        rs_meta = rs.get("metadata") or {}
        annotations = rs_meta.get("annotations") or {}
        number = _int(annotations.get(REVISION)) if isinstance(annotations, dict) else None
        if number is None:
            continue
        spec, status = rs.get("spec") or {}, rs.get("status") or {}
        template = spec.get("template") if isinstance(spec.get("template"), dict) else {}
        out.append(
            Revision(
                number=number,
                replicaset=str(rs_meta.get("name") or ""),
                uid=str(rs_meta.get("uid") or ""),
                change_cause=str(annotations.get(CHANGE_CAUSE) or ""),
                replicas=_count(spec.get("replicas")),
                ready=_count(status.get("readyReplicas")),
                template=template or {},
                created=str(rs_meta.get("creationTimestamp") or ""),
            )
        )
    out.sort(key=lambda r: r.number, reverse=True)
    return out


def _containers(template: Mapping[str, Any]) -> dict[str, JSON]:
    spec = template.get("spec") or {}
    found: dict[str, JSON] = {}
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or [] if isinstance(spec, dict) else []:
            if isinstance(c, dict) and c.get("name"):
                found[str(c["name"])] = c
    return found


def _env(container: JSON) -> dict[str, tuple[str, str]]:
    """Env by name: (the value to compare, the value to show). Secret-named values show masked;
    values from a ConfigMap or Secret show where they come from, never a value."""
    out: dict[str, tuple[str, str]] = {}
    for e in container.get("env") or []:
        if not isinstance(e, dict) or not e.get("name"):
            continue
        name = str(e["name"])
        if "value" in e:
            value = str(e.get("value"))
            secret = SENSITIVE_NAME.search(name) and not REFERENCE_NAME.search(name)
            out[name] = (value, MASK if secret else value[:MAX_VALUE])
        else:
            source = e.get("valueFrom") or {}
            kind = next(iter(source), "valueFrom") if isinstance(source, dict) else "valueFrom"
            ref = source.get(kind) if isinstance(source, dict) else None
            where = f" {ref.get('name', '')}/{ref.get('key', '')}" if isinstance(ref, dict) else ""
            shown = f"<{kind}{where}>"
            out[name] = (shown, shown)
    return out


def template_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[str, ...]:
    """What changed from `old` to `new` in images, commands and env, one short line each.

    Env values are shown as they are in the pod template; the caller redacts them.
    """
    lines: list[str] = []
    before, after = _containers(old), _containers(new)
    for name in sorted(set(before) | set(after)):
        b, a = before.get(name), after.get(name)
        if b is None or a is None:
            lines.append(f"container {name} {'added' if b is None else 'removed'}")
            continue
        if b.get("image") != a.get("image"):
            lines.append(f"container {name} image {b.get('image')} -> {a.get('image')}")
        for field in ("command", "args"):
            if b.get(field) != a.get(field):
                lines.append(f"container {name} {field} changed")
        env_b, env_a = _env(b), _env(a)
        for key in sorted(set(env_b) | set(env_a)):
            if key not in env_a:
                lines.append(f"container {name} env {key} removed")
            elif key not in env_b:
                lines.append(f"container {name} env {key} added: {env_a[key][1]}")
            elif env_b[key][0] != env_a[key][0]:
                lines.append(f"container {name} env {key}: {env_b[key][1]} -> {env_a[key][1]}")
        if b.get("envFrom") != a.get("envFrom"):
            lines.append(f"container {name} envFrom changed")
    return tuple(line[:300] for line in lines[:MAX_DIFF_LINES])


def without_hash(template: Mapping[str, Any]) -> JSON:
    """A pod template without the `pod-template-hash` label the controller adds to a ReplicaSet's copy,
    as `kubectl rollout undo` writes it back to the Deployment."""
    out: JSON = dict(template)
    meta = out.get("metadata")
    if isinstance(meta, dict):
        meta = dict(meta)
        labels = meta.get("labels")
        if isinstance(labels, dict) and TEMPLATE_HASH in labels:
            meta["labels"] = {k: v for k, v in labels.items() if k != TEMPLATE_HASH}
        out["metadata"] = meta
    return out


def pod_replicaset(pod: JSON) -> str:
    ref = controller_ref(pod)
    return str(ref.get("name") or "") if ref is not None and ref.get("kind") == "ReplicaSet" else ""


def analyse(pod: JSON, owner: JSON | None, related: Iterable[JSON]) -> Rollout | None:
    """The rollout around a failing pod of a Deployment, or None when there is no history to read."""
    if not owner or owner.get("kind") != "Deployment":
        return None
    history = revisions(owner, related)
    if not history:
        return None
    current, rest = history[0], history[1:]
    previous = rest[0] if rest else None
    rs = pod_replicaset(pod)
    return Rollout(
        deployment=f"{(owner.get('metadata') or {}).get('namespace', '')}/{(owner.get('metadata') or {}).get('name', '')}",
        current=current,
        previous=previous,
        diff=template_diff(previous.template, current.template) if previous is not None else (),
        pod_in_current=bool(rs) and rs == current.replicaset,
        previous_healthy=previous is not None and previous.ready > 0,
    )
