"""The manifests in deploy/ are what users apply: the real API server must accept them."""

from __future__ import annotations

from typing import Any

import yaml

from sre_agent.core.policy import parse_policy_text
from tests.cluster.conftest import REPO, Cluster


def rendered(cluster: Cluster) -> list[dict[str, Any]]:
    out = cluster.run_kubectl("kustomize", str(REPO / "deploy")).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def test_deploy_manifests_pass_server_side_validation(cluster: Cluster) -> None:
    # A real `apply -k` creates the Namespace before the objects in it; a dry run cannot.
    cluster.run_kubectl("apply", "-f", str(REPO / "deploy" / "namespace.yaml"))
    result = cluster.run_kubectl("apply", "--dry-run=server", "-k", str(REPO / "deploy"), check=False)
    assert result.returncode == 0, result.stderr
    kinds = {doc["kind"] for doc in rendered(cluster)}
    assert {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
    } <= kinds


def test_the_shipped_policy_configmap_is_a_valid_policy(cluster: Cluster) -> None:
    (cm,) = [d for d in rendered(cluster) if d["kind"] == "ConfigMap"]
    (text,) = cm["data"].values()
    policy = parse_policy_text(text, "deploy/policy-configmap.yaml")
    assert policy.allowed_actions()


def test_the_operator_runs_unprivileged(cluster: Cluster) -> None:
    (dep,) = [d for d in rendered(cluster) if d["kind"] == "Deployment"]
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "sre-agent"
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"] and container["readinessProbe"] and container["resources"]["limits"]
