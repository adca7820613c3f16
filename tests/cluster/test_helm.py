"""The Helm chart (charts/sre-agent) renders the same objects as deploy/, passes `helm lint`, and
its output passes a server-side dry run on the real API server. helm is built from the Go module
proxy (scripts/build-helm.sh, cached like the control plane)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.conftest import REPO, Cluster

pytestmark = pytest.mark.cluster

CHART = REPO / "charts" / "sre-agent"
MONITORING = ["--set", "serviceMonitor.enabled=true", "--set", "prometheusRule.enabled=true"]
DASHBOARD = ["--set", "grafanaDashboard.enabled=true"]


@pytest.fixture(scope="module")
def helm() -> Path:
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-helm.sh")],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return Path(out.stdout.strip().splitlines()[-1])


def run(helm: Path, *args: str) -> str:
    out = subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


def template(helm: Path, *args: str, namespace: str = "sre-agent") -> str:
    return run(helm, "template", "sre-agent", str(CHART), "--namespace", namespace, *args)


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def by_key(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def comparable(obj: dict[str, Any]) -> dict[str, Any]:
    """Everything but the labels and annotations of the object itself (helm adds its own)."""
    out = {k: v for k, v in obj.items() if k != "metadata"}
    out["namespace"] = obj["metadata"].get("namespace")
    if obj["kind"] == "ConfigMap" and "sre-agent.json" in obj.get("data", {}):
        out["data"] = {"sre-agent.json": json.loads(obj["data"]["sre-agent.json"])}
    return out


def test_helm_lint_passes(helm: Path) -> None:
    out = run(helm, "lint", "--strict", str(CHART))
    assert "1 chart(s) linted, 0 chart(s) failed" in out
    run(helm, "lint", "--strict", str(CHART), *MONITORING, *DASHBOARD)


def test_the_chart_renders_the_same_objects_as_deploy(helm: Path, cluster: Cluster) -> None:
    kustomized = docs(cluster.run_kubectl("kustomize", str(REPO / "deploy")).stdout)
    kustomized += docs(cluster.run_kubectl("kustomize", str(REPO / "deploy" / "monitoring")).stdout)
    expected = by_key([o for o in kustomized if o["kind"] != "Namespace"])
    rendered = by_key(docs(template(helm, *MONITORING, *DASHBOARD)))
    assert sorted(rendered) == sorted(expected)
    for key, obj in expected.items():
        assert comparable(rendered[key]) == comparable(obj), key
    # the selector labels the Service and ServiceMonitor rely on are there
    assert (
        rendered[("Service", "sre-agent-metrics")]["metadata"]["labels"]["app.kubernetes.io/component"]
        == "metrics"
    )
    dashboard = rendered[("ConfigMap", "sre-agent-grafana-dashboard")]["metadata"]["labels"]
    assert dashboard["grafana_dashboard"] == "1"


def test_the_chart_ships_the_crds_and_dashboard_of_the_repository() -> None:
    # Symlinks into crds/ and deploy/monitoring/ (helm follows them; `helm package` copies them).
    assert (CHART / "crds").resolve() == (REPO / "crds").resolve()
    for crd in (REPO / "crds").glob("*.yaml"):
        assert (CHART / "crds" / crd.name).read_text() == crd.read_text(), f"charts/sre-agent/crds/{crd.name}"
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == sorted(
        p.name for p in (REPO / "crds").glob("*.yaml")
    )
    dashboard = REPO / "deploy" / "monitoring" / "grafana-dashboard.json"
    assert (CHART / "files" / "grafana-dashboard.json").read_text() == dashboard.read_text()


def test_the_chart_passes_a_server_side_dry_run(helm: Path, cluster: Cluster, tmp_path: Path) -> None:
    cluster.run_kubectl("apply", "-f", str(REPO / "deploy" / "namespace.yaml"))
    rendered = tmp_path / "chart.yaml"
    rendered.write_text(template(helm, "--include-crds", *DASHBOARD))
    kinds = {d["kind"] for d in docs(rendered.read_text())}
    assert {
        "CustomResourceDefinition",
        "Deployment",
        "ClusterRole",
        "ValidatingAdmissionPolicy",
        "Service",
    } <= kinds
    result = cluster.run_kubectl("apply", "--dry-run=server", "-f", str(rendered), check=False)
    assert result.returncode == 0, result.stderr
    assert "deployment.apps/sre-agent created (server dry run)" in result.stdout


def test_values_reach_the_objects(helm: Path, cluster: Cluster, tmp_path: Path) -> None:
    cluster.run_kubectl("create", "namespace", "ops", check=False)
    text = template(
        helm,
        "--set", "image.repository=registry.example.com/sre-agent", "--set", "image.tag=1.2.3",
        "--set", "llm.baseUrl=http://vllm.ai.svc:8000/v1", "--set", "args={-n,shop}",
        "--set", "approverRoles.enabled=false", "--set-string", "policy=kind: Policy\nname: mine\n",
        namespace="ops",
    )  # fmt: skip
    objects = by_key(docs(text))
    (container,) = objects[("Deployment", "sre-agent")]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example.com/sre-agent:1.2.3"
    assert container["args"] == ["-n", "shop"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SRE_AGENT_LLM_BASE_URL"] == "http://vllm.ai.svc:8000/v1"
    assert objects[("ConfigMap", "sre-agent-policy")]["data"]["policy.yaml"].startswith(
        "kind: Policy\nname: mine"
    )
    assert ("ClusterRole", "sre-agent-decision-approver") not in objects
    # the agent's own ServiceAccount, in the release namespace, may never approve
    policy = objects[("ValidatingAdmissionPolicy", "sre-agent-decision-approval")]
    assert "'system:serviceaccount:ops:sre-agent'" in json.dumps(policy)
    assert objects[("ClusterRoleBinding", "sre-agent")]["subjects"][0]["namespace"] == "ops"
    rendered = tmp_path / "ops.yaml"
    rendered.write_text(text)
    result = cluster.run_kubectl("apply", "--dry-run=server", "-f", str(rendered), check=False)
    assert result.returncode == 0, result.stderr


def test_the_approval_webhook_comes_from_a_secret_or_a_url(helm: Path) -> None:
    def env_of(*args: str) -> dict[str, object]:
        objects = by_key(docs(template(helm, *args)))
        (container,) = objects[("Deployment", "sre-agent")]["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}

    default = env_of()
    assert "SRE_AGENT_APPROVAL_WEBHOOK_URL" not in default
    assert "SRE_AGENT_APPROVAL_WEBHOOK_FORMAT" not in default
    slack = env_of("--set", "approvalWebhook.secret.name=slack-approvals")
    assert slack["SRE_AGENT_APPROVAL_WEBHOOK_URL"] == {
        "secretKeyRef": {"name": "slack-approvals", "key": "url"}
    }
    assert slack["SRE_AGENT_APPROVAL_WEBHOOK_FORMAT"] == "slack"
    am = env_of(
        "--set", "approvalWebhook.url=http://alertmanager.monitoring.svc:9093",
        "--set", "approvalWebhook.format=alertmanager",
    )  # fmt: skip
    assert am["SRE_AGENT_APPROVAL_WEBHOOK_URL"] == "http://alertmanager.monitoring.svc:9093"
    assert am["SRE_AGENT_APPROVAL_WEBHOOK_FORMAT"] == "alertmanager"
