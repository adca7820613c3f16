"""The policy engine: bounds, targets, protected namespaces, cooldowns, rate limits, approval.

The property tests feed arbitrary, hostile action proposals through evaluate() and check
that nothing outside the policy is ever allowed to run.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sre_agent.core.policy import (
    FORBIDDEN_KINDS,
    ActionLedger,
    ActionRequest,
    PolicyError,
    default_policy,
    evaluate,
    load_policy,
    may_execute,
    parse_policy_text,
)
from sre_agent.domain import BUILTIN_ACTIONS, ObjectRef, ProposedAction

NOW = datetime.fromisoformat("2026-11-20T10:00:00+00:00")
POD = ObjectRef("Pod", "checkout-api-7d9f8b6c4-x2kqz", "shop", "uid-1")
OWNER = ObjectRef("Deployment", "checkout-api", "shop", "uid-2", "apps/v1")
AUTO = parse_policy_text("""
kind: Policy
name: auto
autoApproveAboveConfidence: 0.5
actions:
  restart_pod: {}
  scale_deployment: {minReplicas: 2, maxReplicas: 20, maxStep: 5}
  cordon_node: {}
  create_alert: {}
""")


def request(name: str, params: dict[str, Any] | None = None, **kw: Any) -> ActionRequest:
    base = ActionRequest(ProposedAction(name, params or {}), POD, OWNER, "node-a", 0.9, current_replicas=3)
    return replace(base, **kw)


def outcome(req: ActionRequest, policy: Any = AUTO, ledger: ActionLedger | None = None) -> str:
    return evaluate(policy, req, ledger or ActionLedger(), NOW).outcome


def test_default_policy_needs_approval_for_everything_but_none() -> None:
    p = load_policy(Path(__file__).parents[2] / "policies" / "default.yaml")
    for name in ("restart_pod", "create_alert", "cordon_node"):
        assert outcome(request(name), p) == "needs_approval"
    assert outcome(request("scale_deployment", {"replicas": 5}), p) == "needs_approval"
    assert outcome(request("none"), p) == "allowed"


def test_confident_allowed_actions_run_under_auto_policy() -> None:
    assert outcome(request("restart_pod")) == "allowed"
    assert outcome(request("restart_pod", confidence=0.3)) == "needs_approval"


@pytest.mark.parametrize("replicas", [0, 1, 21, 500, -3, "5", 2.5, True, None])
def test_scale_outside_bounds_or_wrong_type_is_blocked(replicas: Any) -> None:
    assert outcome(request("scale_deployment", {"replicas": replicas})) == "blocked"


def test_scale_within_bounds_and_step() -> None:
    assert outcome(request("scale_deployment", {"replicas": 8})) == "allowed"
    assert outcome(request("scale_deployment", {"replicas": 9})) == "blocked"  # step 6 > maxStep 5


def test_scale_needs_a_deployment_owner() -> None:
    sts = ObjectRef("StatefulSet", "ledger", "shop")
    assert outcome(request("scale_deployment", {"replicas": 4}, owner=sts)) == "blocked"
    assert outcome(request("scale_deployment", {"replicas": 4}, owner=None)) == "blocked"


def test_bare_pods_are_never_restarted() -> None:
    verdict = evaluate(AUTO, request("restart_pod", owner=None), ActionLedger(), NOW)
    assert verdict.outcome == "blocked" and "no controller" in verdict.reason


def test_one_target_per_action_bound_to_the_incident() -> None:
    assert outcome(request("restart_pod", {"namespace": "shop", "name": "other-pod"})) == "blocked"
    assert outcome(request("restart_pod", {"namespace": "kube-system", "name": POD.name})) == "blocked"
    assert outcome(request("cordon_node", {"name": "node-b"})) == "blocked"
    assert outcome(request("cordon_node", {"name": "node-a"})) == "allowed"
    assert outcome(request("restart_pod", {"namespace": "shop", "name": POD.name})) == "allowed"


def test_unknown_parameters_and_unknown_actions_are_blocked() -> None:
    assert outcome(request("restart_pod", {"gracePeriodSeconds": 0})) == "blocked"
    assert outcome(request("delete_namespace", {"name": "shop"})) == "blocked"
    assert outcome(request("kubectl", {"args": "delete ns shop"})) == "blocked"


def test_protected_namespaces() -> None:
    pod = ObjectRef("Pod", "coredns-1", "kube-system")
    assert outcome(request("restart_pod", pod=pod)) == "blocked"
    assert outcome(request("create_alert", {"severity": "warning", "summary": "dns"}, pod=pod)) == "allowed"


@pytest.mark.parametrize("kind", sorted(FORBIDDEN_KINDS))
def test_forbidden_kinds_are_never_touched(kind: str) -> None:
    target = ObjectRef(kind, "x", "shop")
    assert outcome(request("restart_pod", pod=target)) == "blocked"


def test_alert_parameters_are_checked() -> None:
    assert outcome(request("create_alert", {"severity": "page-everyone"})) == "blocked"
    assert outcome(request("create_alert", {"summary": "x" * 5000})) == "blocked"


def test_cooldown_and_rate_limits() -> None:
    ledger = ActionLedger()
    ledger.record_action(request("restart_pod"), NOW - timedelta(minutes=5))
    assert outcome(request("restart_pod"), ledger=ledger) == "blocked"
    later = ActionLedger()
    later.record_action(request("restart_pod"), NOW - timedelta(minutes=30))
    assert outcome(request("restart_pod"), ledger=later) == "allowed"
    busy = ActionLedger()
    for i in range(5):
        busy.record("restart_pod", ObjectRef("Pod", f"p{i}", "shop"), NOW - timedelta(minutes=20))
    assert outcome(request("restart_pod"), ledger=busy) == "blocked"  # 5 per namespace per hour
    assert outcome(request("create_alert"), ledger=busy) == "allowed"  # alerts are not rate limited


def test_dry_run_never_executes() -> None:
    dry = replace(AUTO, dry_run=True)
    verdict = evaluate(dry, request("restart_pod"), ActionLedger(), NOW)
    assert verdict.outcome == "allowed" and verdict.dry_run
    assert not may_execute(verdict, approved=True)


def test_may_execute() -> None:
    needs = evaluate(default_policy(), request("restart_pod"), ActionLedger(), NOW)
    assert needs.outcome == "needs_approval"
    assert not may_execute(needs, approved=False)
    assert may_execute(needs, approved=True)
    blocked = evaluate(AUTO, request("delete_namespace"), ActionLedger(), NOW)
    assert not may_execute(blocked, approved=True)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("kind: Policy\nname: x\nactions:\n  scale_deployment: {maxReplicas: 0}\n", "actions.scale_deployment.maxReplicas"),
        ("kind: Policy\nname: x\nautoApproveAboveConfidence: 2\n", "autoApproveAboveConfidence"),
        ("kind: Policy\nname: x\ncooldownSecs: 5\n", "cooldownSecs"),
        ("kind: Policy\n", "'name' is a required property"),
        ("kind: Policy\nname: x\nactions:\n  scale_deployment: {minReplicas: 9, maxReplicas: 3}\n", "minReplicas 9 is above maxReplicas 3"),
        ("kind: Policy\nname: [unclosed\n", "not valid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
    ],
)
def test_bad_policy_files_give_one_line_errors_naming_file_and_field(text: str, fragment: str) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy_text(text, "policies/bad.yaml")
    message = str(err.value)
    assert message.startswith("policies/bad.yaml")
    assert fragment in message
    assert "\n" not in message


def test_missing_policy_file() -> None:
    with pytest.raises(PolicyError, match="cannot read policy"):
        load_policy("/nonexistent/policy.yaml")


NON_FINITE = [".nan", ".NaN", ".inf", "-.inf", "+.Inf"]


@pytest.mark.parametrize("value", NON_FINITE)
@pytest.mark.parametrize(
    ("template", "where"),
    [
        ("autoApproveAboveConfidence: {v}\n", "autoApproveAboveConfidence"),
        ("cooldownSeconds: {v}\n", "cooldownSeconds"),
        ("decisionTTLSeconds: {v}\n", "decisionTTLSeconds"),
        ("rateLimit: {{perHour: {v}}}\n", "rateLimit.perHour"),
        ("suppression: {{afterRejectedSeconds: {v}}}\n", "suppression.afterRejectedSeconds"),
        ("actions:\n  scale_deployment: {{maxReplicas: {v}}}\n", "actions.scale_deployment.maxReplicas"),
        ("description: x\nextra: [1, {v}]\n", "extra.1"),
    ],
)
def test_nan_and_infinities_are_refused_wherever_a_number_is_read(
    template: str, where: str, value: str
) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy_text("kind: Policy\nname: x\n" + template.format(v=value), "p.yaml")
    assert str(err.value).startswith(f"p.yaml: invalid policy at {where}: ")
    assert "not a finite number" in str(err.value)


def test_a_nan_threshold_would_have_approved_everything() -> None:
    # Why it matters: every comparison with NaN is false, so "confidence < threshold" never holds.
    nan_policy = replace(AUTO, auto_approve_above=float("nan"))
    assert outcome(request("restart_pod", confidence=0.0), nan_policy) == "allowed"


@pytest.mark.parametrize("name", ["restart_pods", "delete_namespace", "exec", "Restart_pod", "none_"])
def test_unknown_action_names_are_refused(name: str) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy_text(f"kind: Policy\nname: x\nactions:\n  {name}: {{}}\n", "p.yaml")
    message = str(err.value)
    assert message.startswith(f"p.yaml: invalid policy at actions.{name}")
    assert (
        ", ".join(BUILTIN_ACTIONS) in message
        or "does not match" in message
    )


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("cooldownSeconds: 99999999999999999999999\n", "cooldownSeconds"),  # would overflow timedelta
        ("decisionTTLSeconds: 10000000000\n", "decisionTTLSeconds"),
        ("actions:\n  scale_deployment: {maxReplicas: 10000000}\n", "actions.scale_deployment.maxReplicas"),
        ("suppression: {afterRejectedSeconds: 10000000000}\n", "suppression.afterRejectedSeconds"),
    ],
)
def test_numbers_too_large_to_use_are_refused(text: str, fragment: str) -> None:
    with pytest.raises(PolicyError, match=f"invalid policy at {fragment}: .* greater than the maximum"):
        parse_policy_text("kind: Policy\nname: x\n" + text, "p.yaml")


UNDECODABLE: list[tuple[str, bytes, str]] = [
    ("binary", bytes(range(256)) * 4, "not UTF-8 text"),
    ("bad-utf8", b"kind: Policy\nname: caf\xe9\n", "not UTF-8 text (byte 22)"),
    ("utf16", "kind: Policy\nname: x\n".encode("utf-16"), "not UTF-8 text"),
    ("nul", b"kind: Policy\x00\nname: x\n", "binary content"),
    ("control", b"kind: Policy\nname: x\x07\n", "not valid YAML"),
    ("python-tag", b"kind: Policy\nname: !!python/object:os.system {}\n", "not valid YAML (line 2)"),
    ("list", b"- a\n- b\n", "expected a mapping"),
    ("scalar", b"just text\n", "expected a mapping"),
    ("empty", b"", "expected a mapping"),
    ("deep", b"[" * 20000, "not valid YAML"),
    ("huge", b"# " + b"x" * (2 * 1024 * 1024), "larger than"),
]


@pytest.mark.parametrize(
    ("content", "fragment"), [(c, f) for _, c, f in UNDECODABLE], ids=[i for i, _, _ in UNDECODABLE]
)
def test_a_file_that_cannot_be_decoded_gives_one_line(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_bytes(content)
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    assert fragment in message
    assert "\n" not in message and len(message) < 400


def test_duplicate_keys_are_refused_not_silently_overridden() -> None:
    # A reviewer reads the first threshold; YAML would apply the second.
    text = "kind: Policy\nname: x\nautoApproveAboveConfidence: null\ncooldownSeconds: 900\nautoApproveAboveConfidence: 0.0\n"
    with pytest.raises(PolicyError, match=r"^p.yaml: not valid YAML \(line 5\): duplicate key 'autoApproveAboveConfidence'$"):
        parse_policy_text(text, "p.yaml")
    merged = "kind: Policy\nname: x\nactions:\n  restart_pod: &r {requireApproval: true}\n  cordon_node: {<<: *r, enabled: false}\n"
    policy = parse_policy_text(merged, "p.yaml")  # a YAML merge key may still be overridden
    assert policy.actions["cordon_node"].require_approval and not policy.actions["cordon_node"].enabled


def test_the_shipped_policies_pass() -> None:
    for path in sorted((Path(__file__).parents[2] / "policies").glob("*.yaml")):
        load_policy(path)


# --- properties: hostile proposals never get past the policy -------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=10,
)
action_names = st.sampled_from(
    ["restart_pod", "scale_deployment", "cordon_node", "create_alert", "none", "delete_namespace",
     "delete_pvc", "exec", "drain_node", "", "RESTART_POD", "restart_pod "]
) | st.text(max_size=15)  # fmt: skip
parameters = st.dictionaries(
    st.sampled_from(["namespace", "name", "replicas", "severity", "summary", "force", "kind"]) | st.text(max_size=8),
    json_values,
    max_size=4,
)


@settings(max_examples=400, deadline=None)
@given(name=action_names, params=parameters, confidence=st.floats(0, 1), approved=st.booleans())
def test_no_proposal_runs_outside_policy(name: str, params: dict[str, Any], confidence: float, approved: bool) -> None:
    policy = parse_policy_text("""
kind: Policy
name: tight
autoApproveAboveConfidence: 0.0
protectedNamespaces: [payments]
actions:
  restart_pod: {}
  scale_deployment: {minReplicas: 2, maxReplicas: 6}
  create_alert: {}
""")
    req = request(name, params, confidence=confidence)
    verdict = evaluate(policy, req, ActionLedger(), NOW)
    if not may_execute(verdict, approved):
        return
    # Whatever ran is an enabled action, on the incident's own objects, within bounds.
    assert name in ("restart_pod", "scale_deployment", "create_alert", "none")
    assert set(params) <= {"namespace", "name", "replicas", "severity", "summary"}
    if name in ("restart_pod", "scale_deployment"):
        target = POD if name == "restart_pod" else OWNER
        assert params.get("name", target.name) == target.name
        assert params.get("namespace", target.namespace) == target.namespace
    if name == "scale_deployment":
        assert type(params["replicas"]) is int and 2 <= params["replicas"] <= 6


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(sorted(FORBIDDEN_KINDS)), name=action_names, params=parameters)
def test_forbidden_kinds_never_run(kind: str, name: str, params: dict[str, Any]) -> None:
    req = request(name, params, pod=ObjectRef(kind, "x", "shop"), owner=ObjectRef(kind, "y", "shop"))
    verdict = evaluate(AUTO, req, ActionLedger(), NOW)
    assert not may_execute(verdict, approved=True) or name in ("none", "cordon_node")
