"""The executor on a real API server (+ kube-controller-manager): it acts only within policy.

Every refusal test snapshots what an action could change (pods, replicas, node, events)
and asserts it is unchanged afterwards.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient

from sre_agent.adapters.kube.client import KubeClient
from sre_agent.adapters.kube.executor import ALERT_REASON, ActionRefused, Executor
from sre_agent.adapters.notify import WebhookNotifier
from sre_agent.core.policy import ActionLedger, ActionRequest, Policy, action_target, parse_policy
from sre_agent.domain import ObjectRef, ProposedAction
from tests.cluster import kubesim
from tests.cluster.conftest import Cluster, agent_api_client
from tests.unit.test_notify import Receiver

pytestmark = pytest.mark.cluster


class Clock:
    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def now(self) -> datetime:
        return self.at


def policy(**overrides: Any) -> Policy:
    doc: dict[str, Any] = {
        "kind": "Policy",
        "name": "test",
        "autoApproveAboveConfidence": 0.5,
        "cooldownSeconds": 600,
        "actions": {
            "restart_pod": {"enabled": True},
            "scale_deployment": {"enabled": True, "minReplicas": 2, "maxReplicas": 5},
            "cordon_node": {"enabled": True},
            "create_alert": {"enabled": True},
            "none": {"enabled": True},
        },
    }
    for key, value in overrides.items():
        if key == "actions":
            for name, rule in value.items():
                doc["actions"][name] = {**doc["actions"][name], **rule}
        else:
            doc[key] = value
    return parse_policy(doc, "test-policy")


@pytest.fixture
async def kube(cluster: Cluster) -> AsyncIterator[KubeClient]:
    k = KubeClient.from_kubeconfig(str(cluster.kubeconfig))
    yield k
    k.close()


@pytest.fixture
def agent_kube(cluster: Cluster, agent_token: str) -> Iterator[KubeClient]:
    """A KubeClient authenticated as the deploy/rbac.yaml ServiceAccount."""
    k = KubeClient(agent_api_client(cluster, agent_token))
    yield k
    k.close()


def pod_ref(pod: dict[str, Any]) -> ObjectRef:
    md = pod["metadata"]
    return ObjectRef("Pod", md["name"], md["namespace"], uid=md["uid"])


def request(
    action: str,
    pod: ObjectRef,
    *,
    owner: ObjectRef | None = None,
    node: str = "",
    confidence: float = 0.9,
    current: int | None = None,
    **params: Any,
) -> ActionRequest:
    return ActionRequest(ProposedAction(action, params), pod, owner, node, confidence, current)


def live_pods(api: ApiClient, namespace: str) -> list[dict[str, Any]]:
    return [p for p in kubesim.list_pods(api, namespace) if not p["metadata"].get("deletionTimestamp")]


def agent_events(api: ApiClient, namespace: str) -> list[dict[str, Any]]:
    resp = client.CoreV1Api(api).list_namespaced_event(namespace, _preload_content=False)
    items: list[dict[str, Any]] = json.loads(resp.data)["items"]
    return [e for e in items if (e.get("source") or {}).get("component") == "sre-agent"]


def replicas(api: ApiClient, namespace: str, name: str) -> int:
    dep = client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    return int(dep.spec.replicas)


# ------------------------------------------------------------------------------ restart_pod


async def test_restart_pod_recreates_a_controller_owned_pod_as_the_agent_service_account(
    cluster: Cluster, agent_kube: KubeClient, namespace: str, node: str
) -> None:
    api = cluster.api_client
    client.AppsV1Api(api).create_namespaced_deployment(namespace, kubesim.deployment("web", replicas=1))
    clock, ledger = Clock(), ActionLedger()
    executor = Executor(agent_kube, policy(), ledger, clock)
    with kubesim.Autopilot(api, namespace, [node]) as pilot:
        [old] = kubesim.wait_for(
            lambda: [p for p in live_pods(api, namespace) if p["status"].get("phase") == "Running"],
            timeout=60,
            what="the web pod to run",
        )
        owner = ObjectRef("Deployment", "web", namespace, api_version="apps/v1")
        req = request("restart_pod", pod_ref(old), owner=owner, node=node)
        result = await executor.execute(req, approved=False)
        assert result.changed and result.target == pod_ref(old)

        def replaced() -> list[dict[str, Any]]:
            running = [p for p in live_pods(api, namespace) if p["status"].get("phase") == "Running"]
            return [p for p in running if p["metadata"]["uid"] != old["metadata"]["uid"]]

        [new] = kubesim.wait_for(replaced, timeout=60, what="the ReplicaSet to recreate the pod")
        assert new["metadata"]["uid"] != old["metadata"]["uid"]
        assert new["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
        assert ledger.last_for(owner) == clock.now()  # restart_pod's cooldown follows the workload
        assert ledger.last_for(pod_ref(old)) is None

        # Restarting the same (gone) pod again: cooldown refuses, nothing else is deleted.
        with pytest.raises(ActionRefused, match="cooldown"):
            await executor.execute(req, approved=True)
        # After the cooldown, the old pod is simply gone: nothing to do, nothing touched.
        clock.at += timedelta(hours=1)
        again = await executor.execute(req, approved=False)
        assert not again.changed
        assert [p["metadata"]["uid"] for p in live_pods(api, namespace)] == [new["metadata"]["uid"]]
    assert not pilot.errors


async def test_restart_pod_refuses_a_bare_pod(
    cluster: Cluster, kube: KubeClient, namespace: str, node: str
) -> None:
    api = cluster.api_client
    client.CoreV1Api(api).create_namespaced_pod(
        namespace,
        {"metadata": {"name": "solo"}, "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}},
    )
    kubesim.bind_pod(api, namespace, "solo", node)
    pod = kubesim.run_pod(api, namespace, "solo")
    executor = Executor(kube, policy(), ActionLedger(), Clock())
    # Without an owner the policy already blocks it.
    with pytest.raises(ActionRefused, match="no controller"):
        await executor.execute(request("restart_pod", pod_ref(pod)), approved=True)
    # Even if the caller claims an owner, the live pod has none: refused.
    lie = ObjectRef("Deployment", "web", namespace, api_version="apps/v1")
    with pytest.raises(ActionRefused, match="has no controller"):
        await executor.execute(request("restart_pod", pod_ref(pod), owner=lie), approved=True)
    still = kubesim.get_pod(api, namespace, "solo")
    assert still["metadata"]["uid"] == pod["metadata"]["uid"]
    assert not still["metadata"].get("deletionTimestamp")


# ------------------------------------------------------------------------------ scale_deployment


async def test_scale_deployment_within_bounds_and_idempotent(
    cluster: Cluster, kube: KubeClient, namespace: str
) -> None:
    api = cluster.api_client
    client.AppsV1Api(api).create_namespaced_deployment(namespace, kubesim.deployment("api", replicas=2))
    pod = ObjectRef("Pod", "api-abc", namespace)
    owner = ObjectRef("Deployment", "api", namespace, api_version="apps/v1")
    executor = Executor(kube, policy(), ActionLedger(), Clock())
    result = await executor.execute(request("scale_deployment", pod, owner=owner, replicas=4), approved=False)
    assert result.changed and "from 2 to 4" in result.message
    assert replicas(api, namespace, "api") == 4

    # Out of the policy's bounds (2-5): refused, unchanged.
    fresh = Executor(kube, policy(), ActionLedger(), Clock())
    with pytest.raises(ActionRefused, match="outside the bounds 2-5"):
        await fresh.execute(request("scale_deployment", pod, owner=owner, replicas=9), approved=True)
    with pytest.raises(ActionRefused, match="outside the bounds 2-5"):
        await fresh.execute(request("scale_deployment", pod, owner=owner, replicas=1), approved=True)
    assert replicas(api, namespace, "api") == 4

    # Already there: no write, no ledger entry.
    ledger = ActionLedger()
    same = await Executor(kube, policy(), ledger, Clock()).execute(
        request("scale_deployment", pod, owner=owner, replicas=4), approved=False
    )
    assert not same.changed and not ledger.entries

    # maxStep is judged against the live replica count, whatever the request claims.
    stepped = policy(actions={"scale_deployment": {"maxStep": 1}})
    with pytest.raises(ActionRefused, match="exceeds maxStep 1"):
        await Executor(kube, stepped, ActionLedger(), Clock()).execute(
            request("scale_deployment", pod, owner=owner, replicas=2, current=3), approved=True
        )
    assert replicas(api, namespace, "api") == 4


# ------------------------------------------------------------------------------ cordon_node


async def test_cordon_node_is_idempotent(
    cluster: Cluster, kube: KubeClient, namespace: str, node: str
) -> None:
    api = cluster.api_client
    pod = ObjectRef("Pod", "victim", namespace)
    executor = Executor(kube, policy(), ActionLedger(), Clock())
    result = await executor.execute(request("cordon_node", pod, node=node), approved=False)
    assert result.changed
    assert kubesim.get_node(api, node)["spec"]["unschedulable"] is True
    before = kubesim.get_node(api, node)["metadata"]["resourceVersion"]
    again = await Executor(kube, policy(), ActionLedger(), Clock()).execute(
        request("cordon_node", pod, node=node), approved=False
    )
    assert not again.changed and "already cordoned" in again.message
    assert kubesim.get_node(api, node)["metadata"]["resourceVersion"] == before  # no write at all


# ------------------------------------------------------------------------------ create_alert


async def test_create_alert_posts_a_warning_event_and_notifies(
    cluster: Cluster, kube: KubeClient, namespace: str, node: str
) -> None:
    api = cluster.api_client
    client.CoreV1Api(api).create_namespaced_pod(
        namespace,
        {"metadata": {"name": "oom"}, "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}},
    )
    kubesim.bind_pod(api, namespace, "oom", node)
    pod = kubesim.oom_kill(api, namespace, "oom", restarts=2)
    with Receiver() as receiver:
        executor = Executor(kube, policy(), ActionLedger(), Clock(), notifier=WebhookNotifier(receiver.url))
        req = request("create_alert", pod_ref(pod), severity="critical", summary="oom: memory limit too low")
        context = {"symptom": "OOMKilled", "category": "oom", "decision": "oom-12345678-abc"}
        result = await executor.execute(req, approved=False, summary=context)
        assert result.changed
        [event] = agent_events(api, namespace)
        assert event["type"] == "Warning" and event["reason"] == ALERT_REASON
        assert event["message"] == "[critical] oom: memory limit too low"
        assert event["source"] == {"component": "sre-agent"}
        assert event["involvedObject"]["uid"] == pod["metadata"]["uid"]
        assert event["involvedObject"]["kind"] == "Pod" and event["count"] == 1
        [(path, _, body)] = receiver.requests
        assert path == "/api/v2/alerts"
        labels = body[0]["labels"]
        assert labels["namespace"] == namespace and labels["pod"] == "oom"
        assert (labels["symptom"], labels["category"], labels["severity"]) == ("OOMKilled", "oom", "critical")
        assert body[0]["annotations"]["summary"] == "oom: memory limit too low"

        # The same alert again is aggregated on the same Event, and notified again.
        await executor.execute(req, approved=False, summary=context)
        [event] = agent_events(api, namespace)
        assert event["count"] == 2
        assert len(receiver.requests) == 2


# ------------------------------------------------------------------------------ refusals


@pytest.fixture
def world(cluster: Cluster, namespace: str, node: str) -> dict[str, Any]:
    """A Deployment whose pods exist (kube-controller-manager made them) and a node."""
    api = cluster.api_client
    client.AppsV1Api(api).create_namespaced_deployment(namespace, kubesim.deployment("shop", replicas=2))
    pods = kubesim.wait_for_deployment_pods(api, namespace, "shop")
    return {
        "pod": pod_ref(pods[0]),
        "owner": ObjectRef("Deployment", "shop", namespace, api_version="apps/v1"),
    }


def snapshot(api: ApiClient, namespace: str, node: str) -> dict[str, Any]:
    return {
        "pods": sorted(p["metadata"]["uid"] for p in live_pods(api, namespace)),
        "replicas": replicas(api, namespace, "shop"),
        "node": kubesim.get_node(api, node)["spec"].get("unschedulable", False),
        "events": len(agent_events(api, namespace)),
    }


ACTIONS = ("restart_pod", "scale_deployment", "cordon_node", "create_alert")


def action_request(name: str, world: dict[str, Any], node: str) -> ActionRequest:
    params: dict[str, Any] = {}
    if name == "scale_deployment":
        params["replicas"] = 4
    if name == "create_alert":
        params.update(severity="warning", summary="look at this")
    return request(name, world["pod"], owner=world["owner"], node=node, current=2, **params)


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize(
    ("case", "pol", "approved", "match"),
    [
        ("disabled", {"actions": {a: {"enabled": False} for a in ACTIONS}}, True, "disabled"),
        ("not in policy", {"actions": {}}, True, "not in policy"),
        ("needs approval", {"autoApproveAboveConfidence": None}, False, "not approved"),
        (
            "always needs approval",
            {"actions": {a: {"requireApproval": True} for a in ACTIONS}},
            False,
            "not approved",
        ),
        ("dry-run", {"dryRun": True}, True, "dry-run"),
    ],
)
async def test_refused_by_policy_and_nothing_changes(
    cluster: Cluster,
    kube: KubeClient,
    namespace: str,
    node: str,
    world: dict[str, Any],
    action: str,
    case: str,
    pol: dict[str, Any],
    approved: bool,
    match: str,
) -> None:
    if case == "not in policy":
        p = policy()
        p = Policy(name="narrow", actions={k: v for k, v in p.actions.items() if k != action})
    else:
        p = policy(**pol)
    before = snapshot(cluster.api_client, namespace, node)
    with pytest.raises(ActionRefused, match=match):
        await Executor(kube, p, ActionLedger(), Clock()).execute(
            action_request(action, world, node), approved=approved
        )
    assert snapshot(cluster.api_client, namespace, node) == before


@pytest.mark.parametrize("action", ("restart_pod", "scale_deployment"))
async def test_refused_in_a_protected_namespace(
    cluster: Cluster, kube: KubeClient, namespace: str, node: str, world: dict[str, Any], action: str
) -> None:
    before = snapshot(cluster.api_client, namespace, node)
    executor = Executor(kube, policy(protectedNamespaces=[namespace]), ActionLedger(), Clock())
    with pytest.raises(ActionRefused, match=f"namespace {namespace} is protected"):
        await executor.execute(action_request(action, world, node), approved=True)
    assert snapshot(cluster.api_client, namespace, node) == before


@pytest.mark.parametrize("action", ("restart_pod", "scale_deployment", "cordon_node"))
async def test_refused_during_cooldown(
    cluster: Cluster, kube: KubeClient, namespace: str, node: str, world: dict[str, Any], action: str
) -> None:
    clock, ledger = Clock(), ActionLedger()
    req = action_request(action, world, node)
    assert action_target(req) is not None
    ledger.record_action(req, clock.now() - timedelta(minutes=5))  # cooldown is 10 minutes
    before = snapshot(cluster.api_client, namespace, node)
    with pytest.raises(ActionRefused, match="cooldown 600s"):
        await Executor(kube, policy(), ledger, clock).execute(req, approved=True)
    assert snapshot(cluster.api_client, namespace, node) == before


async def test_an_llm_naming_another_object_is_refused(
    cluster: Cluster, kube: KubeClient, namespace: str, node: str, world: dict[str, Any]
) -> None:
    before = snapshot(cluster.api_client, namespace, node)
    req = request("restart_pod", world["pod"], owner=world["owner"], name="someone-else")
    with pytest.raises(ActionRefused, match="someone-else"):
        await Executor(kube, policy(), ActionLedger(), Clock()).execute(req, approved=True)
    assert snapshot(cluster.api_client, namespace, node) == before


async def test_none_does_nothing(kube: KubeClient, namespace: str) -> None:
    result = await Executor(kube, policy(), ActionLedger(), Clock()).execute(
        request("none", ObjectRef("Pod", "p", namespace)), approved=False
    )
    assert not result.changed and result.action == "none"
