"""Approving and rejecting AgentDecisions as the calling user: `sre-agent approve|reject NAME`.

`whoami` asks the API server itself who the caller is (a SelfSubjectReview,
authentication.k8s.io/v1), so the name written to `spec.approvedBy` is exactly the one the
admission policy in deploy/approval-policy.yaml compares it with: whatever credentials the
kubeconfig holds (certificate, token, OIDC, impersonation), the verdict names the real user.
`give_verdict` reads the decision, refuses one that is already decided or not waiting for
approval, then patches `spec.approved`, `spec.approvedBy` (and `spec.rejectionReason`)
conditionally on the resourceVersion it read, so of an approve and a reject racing exactly one
wins and the other is told who got there first.

`approve_or_reject` is the synchronous entry point for the CLI; every failure a user can cause
is an `ApprovalError` with a one-line message (not found, forbidden, refused by admission,
already decided, unreachable API server).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sre_agent.adapters.kube.client import KubeClient, KubeError
from sre_agent.adapters.kube.decisions import (
    API_VERSION,
    PLURAL,
    DecisionFormatError,
    Phase,
    RecordedDecision,
)

SELF_SUBJECT_REVIEWS = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
MAX_REASON = 1024


class ApprovalError(Exception):
    """Approving or rejecting failed for a reason the user can act on; the message is one line."""


@dataclass(frozen=True)
class Verdict:
    """A verdict that was recorded: which decision, approved or rejected, and by whom."""

    namespace: str
    name: str
    approved: bool
    user: str

    def describe(self) -> str:
        word = "approved" if self.approved else "rejected"
        return f"agentdecision {self.namespace}/{self.name} {word} by {self.user}"


def _flat(text: object, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


async def whoami(kube: KubeClient) -> str:
    """The caller's user name, as the API server authenticates it (SelfSubjectReview)."""
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    try:
        review = await kube.request("POST", SELF_SUBJECT_REVIEWS, body=body)
    except KubeError as exc:
        raise ApprovalError(
            f"cannot ask the API server who you are (SelfSubjectReview): {_error(exc)}"
        ) from None
    user = ((review.get("status") or {}).get("userInfo") or {}).get("username")
    if not isinstance(user, str) or not user:
        raise ApprovalError("the API server's SelfSubjectReview names no user; cannot record who approves")
    return user


def _already(rec: RecordedDecision) -> str:
    word = "approved" if rec.approved else "rejected"
    return f"agentdecision {rec.key} is already {word} by {rec.approved_by or 'an unrecorded user'}"


async def give_verdict(
    kube: KubeClient, namespace: str, name: str, *, approve: bool, reason: str | None = None
) -> Verdict:
    """Approve (or reject, with an optional reason) one pending decision as the calling user."""
    user = await whoami(kube)
    rec = await _read(kube, namespace, name)
    if rec.approved is not None:
        raise ApprovalError(_already(rec))
    if rec.phase != Phase.PENDING_APPROVAL:
        state = rec.phase.value if rec.phase else "not yet recorded"
        raise ApprovalError(f"agentdecision {rec.key} is {state}, not waiting for approval")
    spec: dict[str, object] = {"approved": approve, "approvedBy": user}
    if reason and not approve:
        spec["rejectionReason"] = _flat(reason, MAX_REASON)
    patch = {"metadata": {"resourceVersion": rec.resource_version}, "spec": spec}
    try:
        await kube.patch(API_VERSION, PLURAL, namespace, name, patch)
    except KubeError as exc:
        if exc.conflict:  # changed since we read it: most likely someone else decided first
            again = await _read(kube, namespace, name)
            if again.approved is not None:
                raise ApprovalError(_already(again)) from None
            raise ApprovalError(f"agentdecision {rec.key} changed while you decided; try again") from None
        raise ApprovalError(f"agentdecision {namespace}/{name}: {_error(exc)}") from None
    return Verdict(namespace, name, approve, user)


async def _read(kube: KubeClient, namespace: str, name: str) -> RecordedDecision:
    try:
        obj = await kube.get(API_VERSION, PLURAL, namespace, name)
    except KubeError as exc:
        raise ApprovalError(f"agentdecision {namespace}/{name}: {_error(exc)}") from None
    if obj is None:
        raise ApprovalError(f"agentdecision {namespace}/{name} not found")
    try:
        return RecordedDecision.from_object(obj)
    except DecisionFormatError as exc:
        raise ApprovalError(str(exc)) from None


def _error(exc: KubeError) -> str:
    if exc.status == 0:
        return f"cannot reach the API server ({_flat(exc.reason)}: {_flat(exc.message, 200)})"
    if exc.status == 403:
        return f"forbidden: {_flat(exc.message)}"
    if exc.status == 401:
        return "unauthorized: the API server did not accept your credentials"
    if exc.status == 422:
        return f"refused: {_flat(exc.message)}"
    return _flat(str(exc))


def current_namespace(kubeconfig: str | None = None) -> str:
    """The namespace of the kubeconfig's current context (`kubectl`'s default), else `default`."""
    from kubernetes import config as k8s_config

    try:
        _, active = k8s_config.list_kube_config_contexts(config_file=kubeconfig)
    except Exception:  # no kubeconfig (in-cluster) or an invalid one: connect() reports it
        return "default"
    namespace = ((active or {}).get("context") or {}).get("namespace")
    return namespace if isinstance(namespace, str) and namespace else "default"


def approve_or_reject(
    namespace: str | None, name: str, *, approve: bool, reason: str | None = None
) -> Verdict:
    """The CLI entry point: connect with the current credentials and give the verdict."""
    try:
        kube = KubeClient.connect()
    except Exception as exc:  # kubeconfig missing or invalid: the kubernetes client's many types
        raise ApprovalError(f"cannot load Kubernetes credentials: {_flat(exc, 200)}") from None
    try:
        return asyncio.run(
            give_verdict(kube, namespace or current_namespace(), name, approve=approve, reason=reason)
        )
    finally:
        kube.close()
