"""A decision readable at a glance: `kubectl explain`, `kubectl get` and `kubectl describe` on the
real API server with the real kubectl."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from kubernetes import client

from sre_agent.adapters.kube.decisions import GROUP, PLURAL, VERSION, manifest_for
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
    spec = cluster.run_kubectl("explain", "agentdecision.spec").stdout
    assert "DESCRIPTION:" in spec and "human's verdict" in spec
    assert "diagnosis\t<string>" in spec and "incident\t<Object>" in spec
    for path, words in [
        ("agentdecision.spec.diagnosis", "one-line diagnosis"),
        ("agentdecision.spec.policy.outcome", "needs_approval"),
        ("agentdecision.spec.incident", "sre-agent export"),
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


def test_kubectl_describe_shows_the_diagnosis_before_the_incident(cluster: Cluster, namespace: str) -> None:
    name, summary = _create(cluster, namespace)
    lines = cluster.run_kubectl("describe", "agd", name, "-n", namespace).stdout.splitlines()

    def first(prefix: str) -> int:
        return next(i for i, line in enumerate(lines) if line.strip().startswith(prefix))

    diagnosis = first("Diagnosis:")
    assert summary in lines[diagnosis]
    body = next(i for i, line in enumerate(lines) if "Back-off restarting failed container" in line)
    assert diagnosis < first("Incident:") < body
    assert diagnosis < 30  # near the top, before any bulk
