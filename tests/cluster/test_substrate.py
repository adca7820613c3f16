"""The test cluster is a real Kubernetes control plane, not a mock.

Each test shows one behaviour only a real API server (or kube-controller-manager)
has: schema validation, the status subresource, optimistic concurrency, RBAC,
garbage collection; plus the kubesim helpers writing what kubelet would.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from tests.cluster import kubesim
from tests.cluster.conftest import REPO, Cluster, agent_api_client, use_kubeconfig
from tests.cluster.operator_harness import GROUP, PLURAL, VERSION, custom
from tests.cluster.operator_harness import decision as get_decision

pytestmark = pytest.mark.cluster

MERGE = "application/merge-patch+json"


def decision(name: str, namespace: str, **spec_overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "target": {
            "kind": "Pod",
            "namespace": namespace,
            "name": "web-7d4b9c-abcde",
            "uid": "0b6d3f0e-0000-4000-8000-000000000001",
        },
        "owner": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
        "node": "node-a",
        "incidentId": "inc-1",
        "fingerprint": "f" * 16,
        "symptom": "CrashLoopBackOff",
        "category": "app_error",
        "diagnosis": "The app exits 1 on start: missing flag.",
        "reasoning": "Logs show usage text, exit code 1, restarts climbing.",
        "action": "restart_pod",
        "parameters": {"namespace": namespace, "name": "web-7d4b9c-abcde"},
        "confidence": 0.8,
        "source": "rules",
        "policy": {"outcome": "needs_approval", "reason": "restart_pod needs approval"},
        "evidence": {"signals": ["crash_loop"], "excerpts": ["Error: unknown flag --foo"]},
        "notes": [],
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentDecision",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def create_decision(api: ApiClient, body: dict[str, Any]) -> dict[str, Any]:
    resp = custom(api).create_namespaced_custom_object(
        GROUP, VERSION, body["metadata"]["namespace"], PLURAL, body, _preload_content=False
    )
    out: dict[str, Any] = json.loads(resp.data)
    return out


# ---------------------------------------------------------------- (a) schema validation


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"symptom": "Bogus"}, "spec.symptom"),
        ({"confidence": 7}, "spec.confidence"),
        ({"action": "Restart-Pod!"}, "spec.action"),
        ({"source": "oracle"}, "spec.source"),
        ({"evidence": {"excerpts": ["x" * 1025]}}, "spec.evidence.excerpts[0]"),
    ],
)
def test_invalid_decision_is_rejected_by_the_api_server(
    cluster: Cluster, namespace: str, override: dict[str, Any], field: str
) -> None:
    with pytest.raises(ApiException) as info:
        create_decision(cluster.api_client, decision("bad", namespace, **override))
    assert info.value.status == 422
    body = json.loads(info.value.body)
    assert body["kind"] == "Status" and body["reason"] == "Invalid"
    assert body["details"]["kind"] == "AgentDecision"
    assert any(c["field"] == field for c in body["details"]["causes"]), body


def test_missing_required_spec_fields_are_rejected(cluster: Cluster, namespace: str) -> None:
    body = decision("incomplete", namespace)
    del body["spec"]["category"]
    del body["spec"]["target"]["name"]
    with pytest.raises(ApiException) as info:
        create_decision(cluster.api_client, body)
    assert info.value.status == 422
    fields = {c["field"] for c in json.loads(info.value.body)["details"]["causes"]}
    assert {"spec.category", "spec.target.name"} <= fields


def test_valid_decision_round_trips_and_prints_columns(cluster: Cluster, namespace: str) -> None:
    created = create_decision(cluster.api_client, decision("ok", namespace))
    assert created["spec"]["confidence"] == 0.8
    assert "approved" not in created["spec"]  # no default: unset until a human decides
    out = cluster.run_kubectl("get", "agd", "-n", namespace).stdout
    header = out.splitlines()[0].split()
    assert header == [
        "NAME",
        "TARGET",
        "SYMPTOM",
        "CATEGORY",
        "ACTION",
        "CONFIDENCE",
        "SOURCE",
        "PHASE",
        "AGE",
        "DIAGNOSIS",
    ]
    assert "web-7d4b9c-abcde" in out and "CrashLoopBackOff" in out


# ---------------------------------------------------------------- (b) status subresource


def test_status_only_changes_through_the_status_subresource(cluster: Cluster, namespace: str) -> None:
    api = custom(cluster.api_client)
    create_decision(cluster.api_client, decision("st", namespace))

    # Through the main resource, .status is ignored (the spec change applies).
    api.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "st",
        {"spec": {"approved": True, "approvedBy": "admin"}, "status": {"phase": "Executed"}},
        _content_type=MERGE,
        _preload_content=False,
    )
    obj = get_decision(cluster.api_client, namespace, "st")
    assert obj["spec"]["approved"] is True
    assert "phase" not in obj.get("status", {})

    # Through /status, .status applies and spec changes are ignored.
    api.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "st",
        {
            "spec": {"action": "cordon_node"},
            "status": {
                "phase": "PendingApproval",
                "attempts": 0,
                "conditions": [
                    {
                        "type": "Decided",
                        "status": "True",
                        "reason": "PolicyChecked",
                        "message": "needs approval",
                        "lastTransitionTime": "2026-11-23T10:00:00Z",
                    }
                ],
            },
        },
        _content_type=MERGE,
        _preload_content=False,
    )
    obj = get_decision(cluster.api_client, namespace, "st")
    assert obj["status"]["phase"] == "PendingApproval"
    assert obj["status"]["conditions"][0]["reason"] == "PolicyChecked"
    assert obj["spec"]["action"] == "restart_pod"

    # The status schema is enforced too.
    with pytest.raises(ApiException) as info:
        api.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            "st",
            {"status": {"phase": "Done"}},
            _content_type=MERGE,
            _preload_content=False,
        )
    assert info.value.status == 422


# ---------------------------------------------------------------- (c) optimistic concurrency


def test_update_with_stale_resource_version_conflicts(cluster: Cluster, namespace: str) -> None:
    api = custom(cluster.api_client)
    stale = create_decision(cluster.api_client, decision("cc", namespace))
    fresh = copy.deepcopy(stale)
    fresh["spec"].update(approved=True, approvedBy="admin")
    api.replace_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "cc", fresh, _preload_content=False
    )
    stale["spec"].update(approved=False, approvedBy="admin")
    with pytest.raises(ApiException) as info:
        api.replace_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "cc", stale, _preload_content=False
        )
    assert info.value.status == 409
    assert json.loads(info.value.body)["reason"] == "Conflict"
    assert get_decision(cluster.api_client, namespace, "cc")["spec"]["approved"] is True


# ---------------------------------------------------------------- (d) RBAC


@pytest.fixture(scope="module")
def agent_api(cluster: Cluster, agent_token: str) -> Iterator[ApiClient]:
    """A client authenticated as the sre-agent ServiceAccount bound by deploy/rbac.yaml."""
    api = agent_api_client(cluster, agent_token)
    yield api
    api.close()


def _status_of(call: Any) -> int:
    try:
        call()
    except ApiException as exc:
        return int(exc.status)
    return 200


def test_rbac_forbids_what_the_agent_must_never_do(agent_api: ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(agent_api)
    rbac = client.RbacAuthorizationV1Api(agent_api)
    forbidden = {
        "delete namespace": lambda: core.delete_namespace(namespace, _preload_content=False),
        "create namespace": lambda: core.create_namespace(
            {"metadata": {"name": "x"}}, _preload_content=False
        ),
        "delete persistentvolume": lambda: core.delete_persistent_volume("any-pv", _preload_content=False),
        "delete pvc": lambda: core.delete_namespaced_persistent_volume_claim(
            "any", namespace, _preload_content=False
        ),
        "read secret": lambda: core.read_namespaced_secret("any", namespace, _preload_content=False),
        "list secrets": lambda: core.list_secret_for_all_namespaces(_preload_content=False),
        "create clusterrolebinding": lambda: rbac.create_cluster_role_binding(
            {
                "metadata": {"name": "x"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "cluster-admin",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "sre-agent", "namespace": "sre-agent"}],
            },
            _preload_content=False,
        ),
        # It may patch a Deployment's template back (rollback_deployment), never delete one.
        "delete deployment": lambda: client.AppsV1Api(agent_api).delete_namespaced_deployment(
            "any", namespace, _preload_content=False
        ),
        "patch statefulset": lambda: client.AppsV1Api(agent_api).patch_namespaced_stateful_set(
            "any", namespace, {"spec": {"replicas": 1}}, _preload_content=False
        ),
    }
    got = {what: _status_of(call) for what, call in forbidden.items()}
    assert got == dict.fromkeys(forbidden, 403)


def test_rbac_allows_what_the_agent_needs(
    agent_api: ApiClient, cluster: Cluster, namespace: str, node: str
) -> None:
    core = client.CoreV1Api(agent_api)
    assert _status_of(lambda: core.list_pod_for_all_namespaces(_preload_content=False)) == 200
    assert _status_of(lambda: core.list_namespaced_event(namespace, _preload_content=False)) == 200
    assert (
        _status_of(lambda: core.patch_node(node, {"spec": {"unschedulable": True}}, _preload_content=False))
        == 200
    )
    assert _status_of(lambda: create_decision(agent_api, decision("by-agent", namespace))) == 200
    assert (
        _status_of(
            lambda: custom(agent_api).patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                "by-agent",
                {"status": {"phase": "Executing"}},
                _content_type=MERGE,
                _preload_content=False,
            )
        )
        == 200
    )
    assert _status_of(lambda: core.delete_namespaced_pod("absent", namespace, _preload_content=False)) == 404
    # Workload-level symptoms: Deployments and Jobs are listed and watched in every namespace.
    apps, batch = client.AppsV1Api(agent_api), client.BatchV1Api(agent_api)
    for lister in (apps.list_deployment_for_all_namespaces, batch.list_job_for_all_namespaces):
        for watch in (False, True):
            assert _status_of(lambda: lister(watch=watch, timeout_seconds=1, _preload_content=False)) == 200  # noqa: B023


OPERATOR = """
import kopf

@kopf.on.create("sre.agentops.dev", "v1alpha1", "agentdecisions", labels={"test": "NAMESPACE"})
def decided(body, patch, **_):
    patch.status["phase"] = "PendingApproval"
    kopf.info(body, reason="Decided", message="needs approval")

@kopf.on.event("", "v1", "pods")
def pod_seen(**_):
    pass
"""


def test_kopf_runs_under_the_least_privilege_role(
    cluster: Cluster, agent_token: str, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kopf itself (peering, CRD scan, watches, status patches, events) needs nothing more."""
    admin_cfg = yaml.safe_load(cluster.kubeconfig.read_text())
    sa_cfg = copy.deepcopy(admin_cfg)
    sa_cfg["users"] = [{"name": "admin", "user": {"token": agent_token}}]
    sa_kubeconfig = tmp_path / "sa-kubeconfig"
    sa_kubeconfig.write_text(yaml.safe_dump(sa_cfg))
    use_kubeconfig(sa_kubeconfig, monkeypatch)
    operator = tmp_path / "operator.py"
    # Cluster-wide, like the agent, but only for this test's objects.
    operator.write_text(OPERATOR.replace("NAMESPACE", namespace))
    peering = f"sre-agent-{namespace[-6:]}"
    custom(cluster.api_client).create_cluster_custom_object(
        "kopf.dev",
        "v1",
        "clusterkopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": peering}},
        _preload_content=False,
    )

    from kopf.testing import KopfRunner

    args = ["run", "-A", f"--peering={peering}", "--verbose", str(operator)]
    with KopfRunner(args, timeout=60) as runner:
        body = decision("via-kopf", namespace)
        body["metadata"]["labels"] = {"test": namespace}
        create_decision(cluster.api_client, body)
        kubesim.wait_for(
            lambda: get_decision(cluster.api_client, namespace, "via-kopf").get("status", {}).get("phase"),
            timeout=30,
            what="kopf to set the phase",
        )

        def kopf_event() -> bool:
            events = kubesim.list_events(cluster.api_client, namespace, "via-kopf")
            return any(e["reason"] == "Decided" and e["source"].get("component") == "kopf" for e in events)

        kubesim.wait_for(kopf_event, timeout=30, what="kopf to post an event")
    assert runner.exception is None
    assert runner.exit_code == 0
    # Any 403 (or other trouble) would show as an ERROR/WARNING line in kopf's log.
    problems = [
        line
        for line in runner.output.splitlines()
        if ("[ERROR" in line or "[WARNING" in line) and "OS signals are ignored" not in line
    ]
    assert not problems, "\n".join(problems)
    peering_obj = custom(cluster.api_client).get_cluster_custom_object(
        "kopf.dev", "v1", "clusterkopfpeerings", peering
    )
    assert peering_obj.get("status") is not None


# ---------------------------------------------------------------- (e) garbage collection


def test_deleting_a_deployment_garbage_collects_replicasets_and_pods(
    cluster: Cluster, namespace: str, node: str
) -> None:
    api = cluster.api_client
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(namespace, kubesim.deployment("web"), _preload_content=False)
    pods = kubesim.run_deployment(api, namespace, "web", [node])
    assert len(pods) == 2
    assert all(p["status"]["phase"] == "Running" for p in pods)
    owners = {p["metadata"]["ownerReferences"][0]["kind"] for p in pods}
    assert owners == {"ReplicaSet"}
    assert apps.list_namespaced_replica_set(namespace).items

    apps.delete_namespaced_deployment("web", namespace, _preload_content=False)

    kubesim.wait_for(
        lambda: not apps.list_namespaced_replica_set(namespace).items,
        what="the ReplicaSet to be garbage-collected",
    )

    # The pods are bound, so GC's delete is graceful: they wait for "kubelet".
    def all_terminating() -> bool:
        return all(p["metadata"].get("deletionTimestamp") for p in kubesim.list_pods(api, namespace))

    kubesim.wait_for(all_terminating, what="the pods to be deleted by GC")
    for p in kubesim.list_pods(api, namespace):
        kubesim.finish_deletion(api, namespace, p["metadata"]["name"])
    kubesim.wait_for(lambda: not kubesim.list_pods(api, namespace), what="pods to disappear")


def test_autopilot_replaces_a_restarted_pod(cluster: Cluster, namespace: str, node: str) -> None:
    api = cluster.api_client
    client.AppsV1Api(api).create_namespaced_deployment(
        namespace, kubesim.deployment("api", replicas=1), _preload_content=False
    )
    with kubesim.Autopilot(api, namespace, [node]) as pilot:

        def running() -> list[dict[str, Any]]:
            return [
                p
                for p in kubesim.list_pods(api, namespace)
                if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
            ]

        first = kubesim.wait_for(running, what="pod running")[0]["metadata"]["name"]
        client.CoreV1Api(api).delete_namespaced_pod(first, namespace, _preload_content=False)

        def replaced() -> bool:
            names = [p["metadata"]["name"] for p in kubesim.list_pods(api, namespace)]
            return first not in names and len(running()) == 1

        kubesim.wait_for(replaced, what="the deleted pod to be replaced and running")
    assert not pilot.errors


# ---------------------------------------------------------------- (f) the built kubectl


def test_built_kubectl_talks_to_a_v1_36_3_server(cluster: Cluster) -> None:
    out = cluster.run_kubectl("get", "--raw", "/version").stdout
    assert json.loads(out)["gitVersion"] == "v1.36.3"
    client_version = json.loads(cluster.run_kubectl("version", "--client", "-o", "json").stdout)
    assert client_version["clientVersion"]["gitVersion"] == "v1.36.3"


# ---------------------------------------------------------------- (g) kubesim


def bare_pod(name: str, image: str = "registry.example.com/shop/web:1.4.2") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "containers": [{"name": "app", "image": image, "resources": {"limits": {"memory": "256Mi"}}}]
        },
    }


def new_pod(
    api: ApiClient,
    namespace: str,
    name: str,
    node: str | None,
    image: str = "registry.example.com/shop/web:1.4.2",
) -> None:
    client.CoreV1Api(api).create_namespaced_pod(namespace, bare_pod(name, image), _preload_content=False)
    if node:
        kubesim.bind_pod(api, namespace, name, node)


def test_kubesim_crash_loop_reads_back(cluster: Cluster, namespace: str, node: str) -> None:
    api = cluster.api_client
    new_pod(api, namespace, "web", node)
    kubesim.run_pod(api, namespace, "web")
    kubesim.crash_loop(api, namespace, "web", restarts=4)

    pod = client.CoreV1Api(api).read_namespaced_pod("web", namespace)
    assert pod.spec.node_name == node
    assert pod.status.phase == "Running"
    cs = pod.status.container_statuses[0]
    assert cs.state.waiting.reason == "CrashLoopBackOff"
    assert cs.state.waiting.message.startswith("back-off 1m20s restarting failed container=app pod=web_")
    assert cs.restart_count == 4
    assert cs.ready is False
    assert cs.last_state.terminated.exit_code == 1
    assert cs.last_state.terminated.reason == "Error"
    assert cs.image == "registry.example.com/shop/web:1.4.2"
    assert cs.image_id.startswith("registry.example.com/shop/web@sha256:")
    assert cs.container_id.startswith("containerd://")
    conds = {c.type: c for c in pod.status.conditions}
    assert conds["PodScheduled"].status == "True"
    assert conds["Ready"].status == "False" and conds["Ready"].reason == "ContainersNotReady"

    events = kubesim.list_events(api, namespace, "web")
    backoff = [e for e in events if e["reason"] == "BackOff"]
    assert backoff and backoff[0]["type"] == "Warning"
    assert backoff[0]["message"] == (
        f"Back-off restarting failed container app in pod web_{namespace}({pod.metadata.uid})"
    )
    assert backoff[0]["source"] == {"component": "kubelet", "host": node}
    assert backoff[0]["involvedObject"]["fieldPath"] == "spec.containers{app}"
    scheduled = [e for e in events if e["reason"] == "Scheduled"]
    assert scheduled and scheduled[0]["reportingComponent"] == "default-scheduler"


def test_kubesim_other_symptoms(cluster: Cluster, namespace: str, node: str) -> None:
    api = cluster.api_client
    core = client.CoreV1Api(api)

    new_pod(api, namespace, "oom", node)
    kubesim.oom_kill(api, namespace, "oom", restarts=2)
    cs = core.read_namespaced_pod("oom", namespace).status.container_statuses[0]
    assert (cs.last_state.terminated.reason, cs.last_state.terminated.exit_code) == ("OOMKilled", 137)

    new_pod(api, namespace, "pull", node, image="nginx:does-not-exist")
    kubesim.image_pull_backoff(api, namespace, "pull")
    pod = core.read_namespaced_pod("pull", namespace)
    assert pod.status.phase == "Pending"
    assert pod.status.container_statuses[0].state.waiting.reason == "ImagePullBackOff"
    assert pod.status.container_statuses[0].image_id == ""
    reasons = {(e["reason"], e["message"]) for e in kubesim.list_events(api, namespace, "pull")}
    assert ("Failed", "Error: ImagePullBackOff") in reasons

    new_pod(api, namespace, "pending", None)
    kubesim.make_unschedulable(api, namespace, "pending")
    cond = core.read_namespaced_pod("pending", namespace).status.conditions[0]
    assert (cond.type, cond.status, cond.reason) == ("PodScheduled", "False", "Unschedulable")
    failed = [e for e in kubesim.list_events(api, namespace, "pending") if e["reason"] == "FailedScheduling"]
    assert failed and failed[0]["message"].startswith("0/3 nodes are available: 3 Insufficient memory.")

    new_pod(api, namespace, "evicted", node)
    kubesim.run_pod(api, namespace, "evicted")
    kubesim.evict(api, namespace, "evicted")
    pod = core.read_namespaced_pod("evicted", namespace)
    assert (pod.status.phase, pod.status.reason) == ("Failed", "Evicted")
    assert pod.status.message.startswith("The node was low on resource: memory.")

    new_pod(api, namespace, "probe", node)
    kubesim.run_pod(api, namespace, "probe")
    kubesim.probe_failure(api, namespace, "probe")
    pod = core.read_namespaced_pod("probe", namespace)
    assert pod.status.container_statuses[0].ready is False
    assert pod.status.container_statuses[0].state.running is not None


def test_kubesim_node_not_ready(cluster: Cluster, namespace: str, node: str) -> None:
    api = cluster.api_client
    ready = kubesim.get_node(api, node)
    assert {c["type"]: c["status"] for c in ready["status"]["conditions"]}["Ready"] == "True"
    assert ready["status"]["nodeInfo"]["kubeletVersion"] == "v1.36.3"
    new_pod(api, namespace, "victim", node)
    kubesim.run_pod(api, namespace, "victim")

    down = kubesim.make_node_not_ready(api, node)
    ready_cond = next(c for c in down["status"]["conditions"] if c["type"] == "Ready")
    assert (ready_cond["status"], ready_cond["reason"], ready_cond["message"]) == (
        "Unknown",
        "NodeStatusUnknown",
        "Kubelet stopped posting node status.",
    )
    assert {(t["key"], t["effect"]) for t in down["spec"]["taints"]} == {
        ("node.kubernetes.io/unreachable", "NoSchedule"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
    }
    pod = kubesim.get_pod(api, namespace, "victim")
    assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "False"

    back = kubesim.make_node_ready(api, node)
    assert not back["spec"].get("taints")


def test_crd_files_are_installed(cluster: Cluster) -> None:
    ext = client.ApiextensionsV1Api(cluster.api_client)
    for path in sorted((REPO / "crds").glob("*.yaml")):
        for doc in yaml.safe_load_all(Path(path).read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                crd = ext.read_custom_resource_definition(doc["metadata"]["name"])
                established = {c.type: c.status for c in crd.status.conditions}
                assert established.get("Established") == "True"
