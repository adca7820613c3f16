"""Diagnosis past the pod (issue 10): rollout history and rollback_deployment, dependency tracing.

Pure: the objects are shaped as the API server returns them (ReplicaSets with the revision
annotation, EndpointSlices with per-endpoint conditions, Services with ClusterIPs).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from sre_agent.core import dependencies, rollout
from sre_agent.core.evidence import extract
from sre_agent.core.pipeline import Pipeline
from sre_agent.core.policy import (
    ACTION_PARAMETERS,
    ActionLedger,
    ActionRequest,
    default_policy,
    evaluate,
    load_policy,
    parse_policy,
)
from sre_agent.core.redaction import Redactor
from sre_agent.core.rules import RuleReasoner
from sre_agent.core.symptoms import detect
from sre_agent.domain import (
    BUILTIN_ACTIONS,
    ROLLBACK_DEPLOYMENT,
    Category,
    Evidence,
    IncidentContext,
    ObjectRef,
    ProposedAction,
    Symptom,
)
from tests.unit.podfactory import event, pod, terminated, waiting

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


class FixedClock:
    def now(self) -> datetime:
        return NOW


def template(image: str, env: dict[str, str] | None = None, hash_: str = "") -> dict[str, Any]:
    labels = {"app": "checkout-api"} | ({"pod-template-hash": hash_} if hash_ else {})
    container: dict[str, Any] = {"name": "app", "image": image}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return {"metadata": {"labels": labels}, "spec": {"containers": [container]}}


def deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "checkout-api", "namespace": "shop", "uid": "dep-uid",
                     "annotations": {"deployment.kubernetes.io/revision": "2"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "checkout-api"}},
                 "template": template("registry.example.com/shop/checkout:1.5.0", {"MODE": "fast"})},
    }  # fmt: skip


def replicaset(name: str, revision: int, tpl: dict[str, Any], replicas: int, ready: int, cause: str = "") -> dict[str, Any]:
    annotations = {"deployment.kubernetes.io/revision": str(revision)}
    if cause:
        annotations["kubernetes.io/change-cause"] = cause
    return {
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": "shop", "uid": f"{name}-uid", "annotations": annotations,
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout-api",
                                          "uid": "dep-uid", "controller": True}]},
        "spec": {"replicas": replicas, "template": tpl},
        "status": {"replicas": replicas, "readyReplicas": ready},
    }  # fmt: skip


OLD = replicaset("checkout-api-6b8c5d7f9", 1, template("registry.example.com/shop/checkout:1.4.2", {"MODE": "safe"}, "6b8c5d7f9"), 2, 2)
NEW = replicaset("checkout-api-7d9f8b6c4", 2, template("registry.example.com/shop/checkout:1.5.0", {"MODE": "fast"}, "7d9f8b6c4"), 1, 0, "deploy 1.5.0")  # fmt: skip


def failing_pod() -> dict[str, Any]:
    # podfactory names the pod's ReplicaSet after the pod name: checkout-api-7d9f8b6c4 (revision 2).
    return pod(statuses=[waiting("CrashLoopBackOff", "back-off", 5, terminated())])


def evidence_of(ctx: IncidentContext) -> Evidence:
    return extract(ctx, detect(ctx.pod, ctx.events, ctx.node, NOW), Redactor.for_context(ctx))


def rollout_ctx(*related: dict[str, Any], log: str = "panic: runtime error: index out of range") -> IncidentContext:
    return IncidentContext(
        pod=failing_pod(),
        owner=deployment(),
        logs={"app": {"previous": log}},
        related=related,
    )


# -- rollout history -------------------------------------------------------------------------------


def test_the_rollout_names_revisions_changes_and_the_regression() -> None:
    found = rollout.analyse(failing_pod(), deployment(), [OLD, NEW])
    assert found is not None
    assert (found.current.number, found.previous and found.previous.number) == (2, 1)
    assert found.diff == (
        "container app image registry.example.com/shop/checkout:1.4.2 -> registry.example.com/shop/checkout:1.5.0",
        "container app env MODE: safe -> fast",
    )
    assert found.regression
    assert found.regression_line().startswith("failures began right after rollout 2; revision 1 was healthy")
    assert "change-cause: deploy 1.5.0" in found.summary()


@pytest.mark.parametrize(
    ("related", "regression"),
    [
        ((NEW,), False),  # no previous revision
        ((replicaset("checkout-api-6b8c5d7f9", 1, OLD["spec"]["template"], 0, 0), NEW), False),  # not seen healthy
        ((OLD, replicaset("checkout-api-7d9f8b6c4", 2, NEW["spec"]["template"], 1, 0)), True),
        # A ReplicaSet another Deployment owns is not this one's history.
        ((OLD | {"metadata": {**OLD["metadata"], "ownerReferences": [{"kind": "Deployment", "uid": "other", "controller": True}]}}, NEW), False),
        # A revision that is not a number is left out.
        ((OLD | {"metadata": {**OLD["metadata"], "annotations": {"deployment.kubernetes.io/revision": "one"}}}, NEW), False),
    ],
)  # fmt: skip
def test_a_regression_needs_a_healthy_previous_revision_of_this_deployment(
    related: tuple[dict[str, Any], ...], regression: bool
) -> None:
    found = rollout.analyse(failing_pod(), deployment(), related)
    assert found is not None and found.regression is regression


def test_a_pod_of_an_older_revision_is_not_blamed_on_the_rollout() -> None:
    p = failing_pod()
    p["metadata"]["ownerReferences"][0]["name"] = "checkout-api-6b8c5d7f9"
    found = rollout.analyse(p, deployment(), [OLD, NEW])
    assert found is not None and not found.regression


def test_secret_env_values_never_show_in_the_diff() -> None:
    old = replicaset("a-1", 1, template("img:1", {"DB_PASSWORD": "hunter2-old-CANARY"}), 1, 1)
    new = replicaset("checkout-api-7d9f8b6c4", 2, template("img:1", {"DB_PASSWORD": "hunter2-new-CANARY"}), 1, 0)
    ev = evidence_of(rollout_ctx(old, new))
    assert "CANARY" not in json.dumps([s.detail for s in ev.signals] + list(ev.excerpts))
    assert any("env DB_PASSWORD" in s.detail for s in ev.signals if s.kind == "rollout_change")


def test_without_hash_drops_only_the_controllers_label() -> None:
    assert rollout.without_hash(OLD["spec"]["template"])["metadata"]["labels"] == {"app": "checkout-api"}
    assert OLD["spec"]["template"]["metadata"]["labels"]["pod-template-hash"] == "6b8c5d7f9"  # not mutated


# -- rollback_deployment: rules, policy, pipeline --------------------------------------------------


def test_rules_propose_rollback_only_when_the_policy_enables_it() -> None:
    ev = evidence_of(rollout_ctx(OLD, NEW))
    assert ev.has("rollout_regression")
    assert ev.facts["rollout"]["previous_replicaset"] == "checkout-api-6b8c5d7f9"
    enabled = RuleReasoner(allowed=frozenset(BUILTIN_ACTIONS)).diagnose_now(ev)
    assert enabled.action.name == ROLLBACK_DEPLOYMENT
    assert "failures began right after rollout 2" in enabled.summary
    disabled = RuleReasoner(allowed=frozenset({"create_alert", "none"})).diagnose_now(ev)
    assert disabled.action.name == "create_alert"


def test_no_rollback_when_the_cause_is_outside_the_workload() -> None:
    ev = evidence_of(rollout_ctx(OLD, NEW, log="dial tcp 10.96.0.20:5432: connect: connection refused"))
    d = RuleReasoner().diagnose_now(ev)
    assert d.category == Category.DEPENDENCY_UNAVAILABLE and d.action.name == "create_alert"


AUTOPILOT = load_policy(ROOT / "policies" / "autopilot.yaml")


async def test_the_pipeline_binds_the_previous_revision_and_autopilot_asks_a_human() -> None:
    decision = await Pipeline(policy=AUTOPILOT, clock=FixedClock()).decide(rollout_ctx(OLD, NEW))
    assert decision is not None
    assert decision.action.name == ROLLBACK_DEPLOYMENT
    assert dict(decision.action.parameters) == {
        "namespace": "shop", "name": "checkout-api", "replicaset": "checkout-api-6b8c5d7f9", "revision": "1",
    }  # fmt: skip
    assert decision.verdict.outcome == "needs_approval"


async def test_the_default_policy_never_proposes_a_rollback() -> None:
    default = load_policy(ROOT / "policies" / "default.yaml")
    assert not default.actions[ROLLBACK_DEPLOYMENT].enabled
    assert not default_policy().actions[ROLLBACK_DEPLOYMENT].enabled
    decision = await Pipeline(policy=default, clock=FixedClock()).decide(rollout_ctx(OLD, NEW))
    assert decision is not None and decision.action.name == "create_alert"


def rollback_request(params: dict[str, Any], previous: tuple[str, int] | None = None, owner_kind: str = "Deployment") -> ActionRequest:
    return ActionRequest(
        action=ProposedAction(ROLLBACK_DEPLOYMENT, params),
        pod=ObjectRef("Pod", "checkout-api-7d9f8b6c4-x2kqz", "shop"),
        owner=ObjectRef(owner_kind, "checkout-api", "shop"),
        node="node-a",
        confidence=0.9,
        previous_revision=previous,
    )  # fmt: skip


ENABLED = parse_policy({"kind": "Policy", "name": "t", "autoApproveAboveConfidence": 0.5,
                        "actions": {ROLLBACK_DEPLOYMENT: {"enabled": True}}})  # fmt: skip


@pytest.mark.parametrize(
    ("params", "previous", "kind", "reason"),
    [
        ({}, None, "Deployment", "needs the previous revision"),
        ({"replicaset": "checkout-api-1", "revision": "x"}, None, "Deployment", "must be a number"),
        ({"replicaset": "other-rs", "revision": "1"}, ("checkout-api-6b8c5d7f9", 1), "Deployment", "previous revision is checkout-api-6b8c5d7f9"),
        ({"replicaset": "checkout-api-1", "revision": "1"}, None, "StatefulSet", "needs a Deployment"),
        ({"replicaset": "a", "revision": "1", "name": "payments"}, None, "Deployment", "targets 'payments'"),
        ({"replicaset": "a", "revision": "1", "image": "evil:latest"}, None, "Deployment", "does not take parameter"),
    ],
)  # fmt: skip
def test_the_policy_blocks_a_rollback_it_cannot_bind(
    params: dict[str, Any], previous: tuple[str, int] | None, kind: str, reason: str
) -> None:
    verdict = evaluate(ENABLED, rollback_request(params, previous, kind), ActionLedger(), NOW)
    assert verdict.outcome == "blocked" and reason in verdict.reason


def test_the_policy_allows_the_rollback_to_the_previous_revision() -> None:
    params = {"replicaset": "checkout-api-6b8c5d7f9", "revision": "1"}
    verdict = evaluate(ENABLED, rollback_request(params, ("checkout-api-6b8c5d7f9", 1)), ActionLedger(), NOW)
    assert verdict.outcome == "allowed"
    off = parse_policy({"kind": "Policy", "name": "off"})
    assert evaluate(off, rollback_request(params), ActionLedger(), NOW).outcome == "blocked"


def test_every_action_is_named_alike_in_crd_prompt_docs_and_policy() -> None:
    """BUILTIN_ACTIONS is the one list: the policy's parameters, the CRD, the prompt, the docs follow it."""
    assert set(ACTION_PARAMETERS) == set(BUILTIN_ACTIONS)
    crd = yaml.safe_load((ROOT / "crds" / "agentdecisions.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    action = spec["action"]
    for name in BUILTIN_ACTIONS:
        assert re.fullmatch(action["pattern"], name) and len(name) <= action["maxLength"]
        assert name in action["description"], name
    system = (ROOT / "prompts" / "system.md").read_text().split("## Answer format")[0]
    params = system.split("Their parameters:")[1]
    for name in BUILTIN_ACTIONS:
        assert re.search(rf"^- {name}: ", params, re.MULTILINE), name
    docs = (ROOT / "docs" / "incident-format.md").read_text()
    for name in BUILTIN_ACTIONS:
        assert f"| `{name}` |" in docs, name
    answer = json.loads((ROOT / "sre_agent" / "schemas" / "llm_answer.schema.json").read_text())
    pattern = answer["properties"]["action"]["properties"]["name"]["pattern"]
    assert all(re.fullmatch(pattern, name) for name in BUILTIN_ACTIONS)


# -- dependency tracing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "hosts"),
    [
        ('{"level":"fatal","msg":"dial tcp 10.96.12.4:5432: connect: connection refused"}', ["10.96.12.4"]),
        ("dial tcp: lookup orders-db.shop.svc.cluster.local on 10.96.0.10:53: no such host", ["orders-db.shop.svc.cluster.local", "10.96.0.10"]),
        ("Error: getaddrinfo ENOTFOUND redis-master\n", ["redis-master"]),
        ("MongoServerSelectionError: connect ECONNREFUSED 10.0.3.4:27017", ["10.0.3.4"]),
        ('psycopg2.OperationalError: could not translate host name "orders-db" to address: Name or service not known', ["orders-db"]),
        ("nc: orders-db:5432 (10.96.1.2:5432): Connection refused", ["orders-db", "10.96.1.2"]),
        ("wget: bad address 'inventory.shop'", ["inventory.shop"]),
        ("curl: (7) Failed to connect to payments port 8080 after 3 ms: Couldn't connect to server", ["payments"]),
        ("2026-11-20 09:58:01 INFO started in 3.2s on port 8080", []),  # no failure: no host
    ],
)  # fmt: skip
def test_hosts_are_read_from_failure_lines_as_programs_print_them(line: str, hosts: list[str]) -> None:
    assert dependencies.hosts_in(line.splitlines()) == hosts


def service(name: str, ns: str = "shop", ip: str = "10.96.1.2", selector: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "clusterIPs": [ip], "selector": selector or {"app": name}}}  # fmt: skip


@pytest.mark.parametrize(
    "host",
    ["orders-db", "orders-db.shop", "orders-db.shop.svc", "orders-db.shop.svc.cluster.local", "orders-db.shop.svc.corp.internal", "10.96.1.2"],
)
def test_every_name_form_and_the_cluster_ip_resolve_to_the_service(host: str) -> None:
    svc = dependencies.resolve(host, "shop", [service("orders-db"), service("orders-db", ns="other", ip="10.96.9.9")])
    assert svc is not None and svc["metadata"]["namespace"] == "shop"


@pytest.mark.parametrize("host", ["orders-db.example.com", "orders", "10.96.7.7", "orders-db.other"])
def test_other_names_do_not_resolve(host: str) -> None:
    assert dependencies.resolve(host, "shop", [service("orders-db")]) is None


def endpointslice(svc: str, ready: list[bool | None]) -> dict[str, Any]:
    eps = [{"addresses": [f"10.244.0.{i}"], **({} if r is None else {"conditions": {"ready": r}})} for i, r in enumerate(ready)]
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{svc}-abcde", "namespace": "shop", "labels": {"kubernetes.io/service-name": svc}},
            "endpoints": eps or None}  # fmt: skip


def workload(name: str, replicas: int, ready: int = 0, kind: str = "Deployment") -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": "shop"},
            "spec": {"replicas": replicas, "template": {"metadata": {"labels": {"app": name, "tier": "db"}}}},
            "status": {"readyReplicas": ready} if ready else {}}  # fmt: skip


def test_trace_reads_endpoints_and_the_workload_behind_the_service() -> None:
    related = [service("orders-db"), endpointslice("orders-db", []), workload("orders-db", 0)]
    (dep,) = dependencies.trace(["orders-db"], "shop", related)
    assert dep.down
    assert dep.describe() == "Service shop/orders-db has 0 ready endpoints; Deployment orders-db has 0 replicas"
    up = dependencies.trace(["orders-db"], "shop", [service("orders-db"), endpointslice("orders-db", [True, None, False]), workload("orders-db", 3, 2)])
    assert up[0].ready_endpoints == 2 and not up[0].down
    assert "(1 not ready)" in up[0].describe() and "3 replicas, 2 ready" in up[0].describe()


def test_a_crash_loop_on_a_scaled_down_database_names_its_service_and_deployment() -> None:
    ctx = IncidentContext(
        pod=failing_pod(),
        events=(event("BackOff", "Back-off restarting failed container app"),),
        logs={"app": {"previous": "nc: orders-db:5432 (10.96.1.2:5432): Connection refused\nwaiting for orders-db"}},
        related=(service("orders-db"), endpointslice("orders-db", []), workload("orders-db", 0), workload("web", 2, 2)),
    )  # fmt: skip
    ev = evidence_of(ctx)
    assert ev.symptom == Symptom.CRASH_LOOP
    d = RuleReasoner().diagnose_now(ev)
    assert d.category == Category.DEPENDENCY_UNAVAILABLE
    assert "Service shop/orders-db has 0 ready endpoints; Deployment orders-db has 0 replicas" in d.summary
    assert d.action.name == "create_alert"  # within policy: an alert about the dependency, nothing else
    assert ev.facts["dependencies"][0]["service"] == "shop/orders-db"


def test_dependency_tracing_needs_the_objects_and_survives_junk() -> None:
    junk: tuple[Any, ...] = ({"kind": "Service"}, {"kind": "Service", "metadata": None, "spec": "x"}, {"kind": "EndpointSlice", "endpoints": [1, None]})
    ctx = IncidentContext(pod=failing_pod(), logs={"app": {"previous": "ECONNREFUSED orders-db"}}, related=junk)  # fmt: skip
    d = RuleReasoner().diagnose_now(evidence_of(ctx))
    assert d.category == Category.DEPENDENCY_UNAVAILABLE
    assert "ready endpoints" not in d.summary


def test_the_agents_own_alert_event_is_never_read_back_as_evidence() -> None:
    alert = event("SREAgentAlert", "[warning] CrashLoopBackOff on shop/x: a service it depends on is unreachable: connection refused")
    ctx = IncidentContext(pod=failing_pod(), events=(alert,), logs={"app": {"previous": "panic: boom"}})
    ev = evidence_of(ctx)
    assert not ev.has("connection_error")
    assert all("SREAgentAlert" not in line for line in ev.excerpts)
    assert RuleReasoner().diagnose_now(ev).category == Category.APP_ERROR


def test_a_log_line_cannot_send_the_tracer_into_system_namespaces() -> None:
    hosts = ["kube-dns.kube-system.svc.cluster.local", "orders-db.data", "cache"]
    assert dependencies.namespaces_to_read(hosts, "shop") == ["shop", "data"]


class Answering:
    """A reasoner that answers like an LLM would: a category and an action by name."""

    name = "fake-llm"

    def __init__(self, action: ProposedAction) -> None:
        self.action = action

    async def diagnose(self, evidence: Evidence, allowed_actions: str = "") -> Any:
        from sre_agent.domain import Diagnosis

        assert "- rollback_deployment" in allowed_actions
        return Diagnosis(Category.APP_ERROR, "bad rollout", "r", self.action, 0.9, "llm")


@pytest.mark.parametrize(
    ("params", "outcome"),
    [
        ({}, "needs_approval"),  # the pipeline binds the previous revision from the evidence
        ({"replicaset": "checkout-api-6b8c5d7f9", "revision": "1"}, "needs_approval"),
        ({"replicaset": "checkout-api-7d9f8b6c4", "revision": "2"}, "blocked"),  # not the previous one
    ],
)
async def test_an_llm_rollback_is_bound_to_the_previous_revision_or_blocked(
    params: dict[str, Any], outcome: str
) -> None:
    pipeline = Pipeline(policy=AUTOPILOT, clock=FixedClock(), reasoner=Answering(ProposedAction(ROLLBACK_DEPLOYMENT, params)))
    decision = await pipeline.decide(rollout_ctx(OLD, NEW))
    assert decision is not None and decision.diagnosis.source == "llm"
    assert decision.verdict.outcome == outcome, decision.verdict.reason
    if outcome == "needs_approval":
        assert decision.action.parameters["replicaset"] == "checkout-api-6b8c5d7f9"


async def test_an_llm_rollback_without_rollout_evidence_is_blocked() -> None:
    pipeline = Pipeline(policy=AUTOPILOT, clock=FixedClock(), reasoner=Answering(ProposedAction(ROLLBACK_DEPLOYMENT, {})))
    decision = await pipeline.decide(rollout_ctx())  # no ReplicaSets known
    assert decision is not None and decision.verdict.outcome == "blocked"
    assert "previous revision" in decision.verdict.reason


def test_a_pending_claim_and_its_provisioning_events_name_the_volume_cause() -> None:
    message = "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    conds = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}]
    p = pod(phase="Pending", node=None, conditions=conds)
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data-0", "namespace": "shop", "uid": "c1"},
             "spec": {"storageClassName": "gp3-encrypted"}, "status": {"phase": "Pending"}}
    provisioning = event("ProvisioningFailed", 'storageclass.storage.k8s.io "gp3-encrypted" not found', component="persistentvolume-controller")
    provisioning["involvedObject"] = {"kind": "PersistentVolumeClaim", "name": "data-0", "namespace": "shop", "uid": "c1"}
    ctx = IncidentContext(pod=p, events=(event("FailedScheduling", message, component="default-scheduler"),), related=(claim, provisioning))
    ev = evidence_of(ctx)
    assert sorted(ev.details("pvc_pending")) == [
        "PersistentVolumeClaim shop/data-0 is Pending (storageClassName gp3-encrypted)",
        'PersistentVolumeClaim shop/data-0: ProvisioningFailed: storageclass.storage.k8s.io "gp3-encrypted" not found',
    ]
    d = RuleReasoner().diagnose_now(ev)
    assert d.category == Category.VOLUME_ERROR and "PersistentVolumeClaim shop/data-0" in d.reasoning


@pytest.mark.parametrize(
    ("kind", "condition", "signal"),
    [
        ("Deployment", {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                        "message": 'ReplicaSet "checkout-api-7d9f8b6c4" has timed out progressing.'}, "rollout_stalled"),
        ("Job", {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": "Job has reached the specified backoff limit"}, "job_failed"),
        ("Job", {"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                 "message": "Job was active longer than specified deadline"}, "job_failed"),
    ],
)  # fmt: skip
def test_workload_failures_beyond_the_pod_are_in_the_evidence(kind: str, condition: dict[str, str], signal: str) -> None:
    owner = {"apiVersion": "apps/v1" if kind == "Deployment" else "batch/v1", "kind": kind,
             "metadata": {"name": "checkout-api", "namespace": "shop"}, "status": {"conditions": [condition]}}  # fmt: skip
    ev = evidence_of(IncidentContext(pod=failing_pod(), owner=owner, logs={"app": {"previous": "panic: boom"}}))
    assert ev.details(signal) == [f"{kind} shop/checkout-api {condition['reason']}: {condition['message']}"]
    assert f"Workload: {kind} shop/checkout-api" in RuleReasoner().diagnose_now(ev).reasoning
    healthy = {**condition, "status": "True" if kind == "Deployment" else "False"}
    quiet = evidence_of(IncidentContext(pod=failing_pod(), owner={**owner, "status": {"conditions": [healthy]}}))
    assert not quiet.has(signal)
