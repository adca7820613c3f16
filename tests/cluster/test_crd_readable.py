"""A decision readable at a glance: `kubectl explain`, `kubectl get` and `kubectl describe` on the
real API server with the real kubectl."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sre_agent.adapters.kube.decisions import GROUP, PLURAL, VERSION, manifest_for, zip_incident
from tests.cluster import kubesim
from tests.cluster.conftest import REPO, Cluster
from tests.cluster.test_decisions import Clock, decision_in

pytestmark = pytest.mark.cluster

CRD = REPO / "crds" / "agentdecisions.yaml"


def _fields(schema: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    out = [(path, schema)]
    for key, sub in (schema.get("properties") or {}).items():
        out += _fields(sub, f"{path}.{key}")
    items = schema.get("items")
    if isinstance(items, dict) and items.get("type") == "object":
        out += _fields(items, f"{path}[]")
    return out


def test_every_field_of_the_crd_has_a_description() -> None:
    (version,) = yaml.safe_load(CRD.read_text())["spec"]["versions"]
    fields = _fields(version["schema"]["openAPIV3Schema"], "agentdecision")
    assert len(fields) > 60
    # metadata is the API server's own ObjectMeta: a CRD may not describe it.
    missing = [
        path
        for path, schema in fields
        if path != "agentdecision.metadata" and not str(schema.get("description") or "").strip()
    ]
    assert missing == []


def test_kubectl_explain_describes_spec_status_and_nested_fields(cluster: Cluster) -> None:
    # The API server publishes a new CRD's schema to OpenAPI (what explain reads) shortly after.
    spec = kubesim.wait_for(
        lambda: cluster.run_kubectl("explain", "agentdecision.spec", check=False).stdout,
        what="the AgentDecision schema in OpenAPI",
    )
    assert "DESCRIPTION:" in spec and "human's verdict" in spec
    assert "diagnosis\t<string>" in spec and "zippedIncident\t<string>" in spec
    for path, words in [
        ("agentdecision.spec.diagnosis", "one-line diagnosis"),
        ("agentdecision.spec.policy.outcome", "needs_approval"),
        ("agentdecision.spec.zippedIncident", "sre-agent export"),
        ("agentdecision.spec.incident", "before zippedIncident existed"),
        ("agentdecision.spec.owner.apiVersion", "apps/v1"),
        ("agentdecision.status.phase", "PendingApproval waits for a human"),
        ("agentdecision.status.conditions.reason", "CamelCase"),
    ]:
        out = cluster.run_kubectl("explain", path).stdout
        assert words in " ".join(out.split()), (path, out)


def _create(cluster: Cluster, namespace: str) -> tuple[str, str]:
    clock = Clock()
    d = decision_in(namespace, clock)
    incident = {
        "id": "big",
        "pod": {"metadata": {"name": "web-7d4b9c-abcde", "namespace": namespace}},
        "events": [
            {"reason": "BackOff", "message": f"Back-off restarting failed container {i}"} for i in range(200)
        ],
    }
    manifest = manifest_for(d, expires_at=datetime.now(UTC) + timedelta(hours=1), incident=incident)
    client.CustomObjectsApi(cluster.api_client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, manifest
    )
    return str(manifest["metadata"]["name"]), d.diagnosis.summary


def test_kubectl_get_shows_the_one_line_diagnosis(cluster: Cluster, namespace: str) -> None:
    name, summary = _create(cluster, namespace)
    out = cluster.run_kubectl("get", "agd", "-n", namespace).stdout
    header, row = out.splitlines()
    assert header.split()[-1] == "DIAGNOSIS"
    assert row.startswith(name) and row.rstrip().endswith(summary)


def test_kubectl_describe_shows_diagnosis_reasoning_and_policy_before_any_bulk(
    cluster: Cluster, namespace: str
) -> None:
    name, summary = _create(cluster, namespace)
    out = cluster.run_kubectl("describe", "agd", name, "-n", namespace).stdout
    lines = out.splitlines()

    def first(prefix: str) -> int:
        return next(i for i, line in enumerate(lines) if line.strip().startswith(prefix))

    # describe prints fields sorted by name: the incident, zipped, is one line after all of spec
    diagnosis, reasoning, policy = first("Diagnosis:"), first("Reasoning:"), first("Policy:")
    assert summary in lines[diagnosis]
    assert "Logs show usage text" in lines[reasoning]
    assert "needs_approval" in lines[first("Outcome:")]
    zipped = first("Zipped Incident:")
    assert max(diagnosis, reasoning, policy) < zipped < first("Events:")
    assert "Back-off restarting failed container" not in out  # 200 events, not one printed
    assert len(lines) < 80, out


def test_the_zipped_incident_cannot_be_changed_or_removed(cluster: Cluster, namespace: str) -> None:
    name, _ = _create(cluster, namespace)
    api = client.CustomObjectsApi(cluster.api_client)
    for patch in (
        {"spec": {"zippedIncident": zip_incident({"id": "forged"})}},
        {"spec": {"zippedIncident": None}},
    ):
        with pytest.raises(ApiException) as err:
            api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch)
        assert err.value.status == 422 and "zippedIncident cannot change" in str(err.value.body)
