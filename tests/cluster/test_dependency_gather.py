"""The gatherer traces a dependency on a real API server, as the agent's ServiceAccount.

kube-controller-manager makes the Service's EndpointSlices and the Deployment's ReplicaSets;
the gatherer, under deploy/rbac.yaml's ClusterRole, resolves the host an error names to the
Service (by name form and by ClusterIP), reads its EndpointSlices and the Deployment behind it,
and the evidence then names them.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from kubernetes import client

from sre_agent.adapters.kube.client import KubeClient
from sre_agent.adapters.kube.gatherer import Gatherer
from sre_agent.core.evidence import extract
from sre_agent.core.redaction import Redactor
from sre_agent.core.rules import RuleReasoner
from sre_agent.domain import IncidentContext, Symptom
from tests.cluster import kubesim
from tests.cluster.conftest import Cluster
from tests.cluster.test_executor import Clock, agent_kube  # noqa: F401 - fixture

pytestmark = pytest.mark.cluster


def crashing_pod(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "orders-api-1", "namespace": namespace, "uid": "u1"},
        "spec": {"containers": [{"name": "api", "image": "shop/api:1"}]},
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "api",
                    "restartCount": 6,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 2m40s"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
                }
            ],
        },
    }


@pytest.mark.parametrize("form", ["name", "name.ns.svc.cluster.local", "clusterip"])
async def test_the_gatherer_names_the_service_and_deployment_behind_a_failing_host(
    cluster: Cluster, agent_kube: KubeClient, namespace: str, form: str  # noqa: F811
) -> None:
    api = cluster.api_client
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment(namespace, kubesim.deployment("orders-db", replicas=0))
    svc = core.create_namespaced_service(
        namespace,
        {"metadata": {"name": "orders-db"}, "spec": {"selector": {"app": "orders-db"}, "ports": [{"port": 5432}]}},
    )
    host = {
        "name": "orders-db",
        "name.ns.svc.cluster.local": f"orders-db.{namespace}.svc.cluster.local",
        "clusterip": svc.spec.cluster_ip,
    }[form]
    line = f"dial tcp {host}:5432: connect: connection refused"

    def slices() -> bool:
        resp = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(namespace, _preload_content=False)
        return bool(json.loads(resp.data)["items"])

    kubesim.wait_for(slices, timeout=60, what="the EndpointSlice controller")
    pod = crashing_pod(namespace)
    related = await Gatherer(agent_kube, Clock()).dependencies(pod, [], {"api": {"previous": line}})
    kinds = sorted(o["kind"] for o in related)
    assert kinds == ["Deployment", "EndpointSlice", "Service"], kinds

    ctx = IncidentContext(pod=pod, logs={"api": {"previous": line}}, related=tuple(related))
    evidence = extract(ctx, Symptom.CRASH_LOOP, Redactor.for_context(ctx))
    diagnosis = RuleReasoner().diagnose_now(evidence)
    assert (
        f"Service {namespace}/orders-db has 0 ready endpoints; Deployment orders-db has 0 replicas"
        in diagnosis.summary
    )


async def test_no_failure_line_no_reads(agent_kube: KubeClient, namespace: str) -> None:  # noqa: F811
    pod = crashing_pod(namespace)
    logs = {"api": {"previous": "listening on :8080\nready"}}
    assert await Gatherer(agent_kube, Clock()).dependencies(pod, [], logs) == []


async def test_the_gatherer_reads_a_pending_claim_and_its_provisioning_events(
    cluster: Cluster, agent_kube: KubeClient, namespace: str  # noqa: F811
) -> None:
    core = client.CoreV1Api(cluster.api_client)
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": "data-0"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "gp3-encrypted",
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    pod = {
        "metadata": {"name": "db-0", "namespace": namespace, "uid": "u2"},
        "spec": {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-0"}}]},
        "status": {"phase": "Pending"},
    }
    gatherer = Gatherer(agent_kube, Clock())

    async def read() -> list[dict[str, Any]]:
        return await gatherer.claims(pod)

    found: list[dict[str, Any]] = []
    for _ in range(60):  # the persistentvolume controller reports the missing class within seconds
        found = await read()
        if any(o["kind"] == "Event" and o.get("reason") == "ProvisioningFailed" for o in found):
            break
        await asyncio.sleep(1)
    assert found and found[0]["kind"] == "PersistentVolumeClaim"
    assert any('"gp3-encrypted" not found' in str(o.get("message")) for o in found), found
