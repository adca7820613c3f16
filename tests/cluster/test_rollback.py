"""rollback_deployment on a real API server and kube-controller-manager, as the agent's ServiceAccount.

The Deployment controller makes the ReplicaSets and revisions; the executor writes the previous
ReplicaSet's template back (like `kubectl rollout undo`), only when that ReplicaSet is still the
previous revision the decision names, and does nothing the second time. The gatherer reads the
same history, so the pipeline proposes the rollback from live objects.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient

from sre_agent.adapters.kube.client import KubeClient
from sre_agent.adapters.kube.executor import ActionRefused, Executor
from sre_agent.adapters.kube.gatherer import Gatherer
from sre_agent.core import rollout
from sre_agent.core.policy import ActionLedger, ActionRequest, parse_policy
from sre_agent.domain import ROLLBACK_DEPLOYMENT, ObjectRef, ProposedAction
from tests.cluster import kubesim
from tests.cluster.conftest import Cluster
from tests.cluster.test_executor import Clock, agent_kube, kube  # noqa: F401 - fixtures

pytestmark = pytest.mark.cluster

POLICY = parse_policy(
    {
        "kind": "Policy",
        "name": "rollback-test",
        "autoApproveAboveConfidence": 0.5,
        "actions": {ROLLBACK_DEPLOYMENT: {"enabled": True, "requireApproval": True}},
    },
    "test",
)


def raw(api: ApiClient, namespace: str, name: str) -> dict[str, Any]:
    resp = client.AppsV1Api(api).read_namespaced_deployment(name, namespace, _preload_content=False)
    out: dict[str, Any] = json.loads(resp.data)
    return out


def history(api: ApiClient, namespace: str, name: str) -> list[rollout.Revision]:
    resp = client.AppsV1Api(api).list_namespaced_replica_set(namespace, _preload_content=False)
    items = [{"kind": "ReplicaSet", **rs} for rs in json.loads(resp.data)["items"]]
    return rollout.revisions(raw(api, namespace, name), items)


def image(api: ApiClient, namespace: str, name: str) -> str:
    return str(raw(api, namespace, name)["spec"]["template"]["spec"]["containers"][0]["image"])


def rollback(namespace: str, replicaset: str, revision: str, uid: str = "") -> ActionRequest:
    return ActionRequest(
        action=ProposedAction(ROLLBACK_DEPLOYMENT, {"replicaset": replicaset, "revision": revision}),
        pod=ObjectRef("Pod", "web-x", namespace),
        owner=ObjectRef("Deployment", "web", namespace, uid=uid, api_version="apps/v1"),
        node="",
        confidence=0.9,
    )


async def test_rollback_returns_to_the_previous_revision_once_and_only_that_one(
    cluster: Cluster, agent_kube: KubeClient, kube: KubeClient, namespace: str  # noqa: F811
) -> None:
    api = cluster.api_client
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(namespace, kubesim.deployment("web", replicas=1, image="shop/web:1.0"))
    kubesim.wait_for(lambda: len(history(api, namespace, "web")) == 1, timeout=60, what="revision 1")
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "shop/web:2.0-broken"}]}}}}
    apps.patch_namespaced_deployment("web", namespace, patch)
    revs = kubesim.wait_for(
        lambda: (h := history(api, namespace, "web")) and len(h) == 2 and h, timeout=60, what="revision 2"
    )
    current, previous = revs[0], revs[1]
    assert (current.number, previous.number) == (2, 1)

    # The gatherer reads the same history from the live API.
    gathered = await Gatherer(kube, Clock()).rollout_history({}, raw(api, namespace, "web"))
    assert [r["metadata"]["name"] for r in gathered] == [current.replicaset, previous.replicaset]

    executor = Executor(agent_kube, POLICY, ActionLedger(), Clock())
    uid = raw(api, namespace, "web")["metadata"]["uid"]

    # A decision naming another ReplicaSet, or a revision that is not the previous one: refused, unchanged.
    for rs, rev in ((current.replicaset, "2"), (previous.replicaset, "7")):
        with pytest.raises(ActionRefused, match=r"previous revision of .* is now"):
            await executor.execute(rollback(namespace, rs, rev, uid), approved=True)
    assert image(api, namespace, "web") == "shop/web:2.0-broken"

    # Not approved: refused (requireApproval), unchanged.
    with pytest.raises(ActionRefused, match="needs approval"):
        await executor.execute(rollback(namespace, previous.replicaset, "1", uid), approved=False)

    result = await executor.execute(rollback(namespace, previous.replicaset, "1", uid), approved=True)
    assert result.changed, result.message
    assert image(api, namespace, "web") == "shop/web:1.0"
    # The controller reuses the previous ReplicaSet for the template it already has: it becomes revision 3.
    back = kubesim.wait_for(
        lambda: (h := history(api, namespace, "web")) and h[0].number == 3 and h, timeout=60, what="revision 3"
    )
    assert back[0].replicaset == previous.replicaset
    assert "pod-template-hash" not in raw(api, namespace, "web")["spec"]["template"]["metadata"]["labels"]

    # Idempotent: the same decision again changes nothing (and is not refused as stale).
    again = await Executor(agent_kube, POLICY, ActionLedger(), Clock()).execute(
        rollback(namespace, previous.replicaset, "1", uid), approved=True
    )
    assert not again.changed and "already runs" in again.message
    assert len(history(api, namespace, "web")) == 2
