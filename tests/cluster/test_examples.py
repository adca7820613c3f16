"""examples/: failing workloads for a real cluster. Each parses, says what the agent should
conclude, uses only images a user can pull, and passes a server-side dry run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from sre_agent.domain import Category, Symptom
from tests.cluster.conftest import REPO, Cluster

pytestmark = pytest.mark.cluster

EXAMPLES = REPO / "examples"
WORKLOADS = sorted(
    p for p in EXAMPLES.glob("*.yaml") if p.name not in {"namespace.yaml", "kustomization.yaml"}
)
PULLABLE = {"busybox:1.36"}
TYPO = "busybxo:1.36"  # image-typo.yaml's deliberate mistake


def objects(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_there_are_the_five_failures() -> None:
    assert {p.stem for p in WORKLOADS} == {
        "crash-loop",
        "oom",
        "bad-probe",
        "missing-configmap",
        "image-typo",
    }
    kustomization = yaml.safe_load((EXAMPLES / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {"namespace.yaml"} | {p.name for p in WORKLOADS}


@pytest.mark.parametrize("path", WORKLOADS, ids=lambda p: p.stem)
def test_each_example_says_what_the_agent_should_conclude(path: Path) -> None:
    header = " ".join(line.lstrip("# ") for line in path.read_text().splitlines() if line.startswith("#"))
    found = re.search(r"should conclude: symptom (\w+)\b.*?, category (\w+)\b.*?, action (\w+)", header)
    assert found, header
    Symptom(found[1]), Category(found[2])  # real enum values
    assert found[3] in {"create_alert", "restart_pod", "scale_deployment", "cordon_node", "none"}
    (workload,) = objects(path)
    assert workload["kind"] == "Deployment" and workload["metadata"]["namespace"] == "sre-agent-examples"
    images = {c["image"] for c in workload["spec"]["template"]["spec"]["containers"]}
    assert images <= (PULLABLE | {TYPO} if path.stem == "image-typo" else PULLABLE)


def test_the_examples_pass_a_server_side_dry_run(cluster: Cluster) -> None:
    cluster.run_kubectl("apply", "-f", str(EXAMPLES / "namespace.yaml"))
    result = cluster.run_kubectl("apply", "--dry-run=server", "-k", str(EXAMPLES), check=False)
    assert result.returncode == 0, result.stderr
    for path in WORKLOADS:
        assert f"deployment.apps/{path.stem} created (server dry run)" in result.stdout
