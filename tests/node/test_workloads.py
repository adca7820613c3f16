"""Past the pod, on the real node (issue 10): a failed Job and a stalled rollout each give one decision.

* A Job (busybox, restartPolicy Never, backoffLimit 1) prints an error and exits 3, twice: its pods
  are just Failed (no crash loop, no pod symptom), the Job controller writes Failed=True
  BackoffLimitExceeded, and the operator decides about the Job: JobFailed, app_error, an alert.
* A working Deployment (progressDeadlineSeconds 10) is rolled out to a revision whose readiness
  never passes: its new pod runs unready, no pod symptom yet (ProbeFailure needs the operator's
  20 s), the Deployment controller writes ProgressDeadlineExceeded, and under the autopilot policy
  the decision about the Deployment proposes rollback_deployment to revision 1 (approving a
  rollback is tested in test_past_the_pod). When the pod later turns ProbeFailure, it joins that
  decision instead of opening a second one.

Both are captured with `sre-agent capture job/NAME` and `deployment/NAME`, and the captures
replay to the same symptom. `SRE_AGENT_NODE_CAPTURE_DIR=<dir>` keeps them (that is how
replay/incidents/real-node-job-failed-013.yaml and real-node-rollout-never-ready-014.yaml were made).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from sre_agent.adapters.recorded import parse_incident
from sre_agent.core.symptoms import detect_incident
from tests.node.conftest import (
    BUSYBOX,
    Operator,
    decisions,
    deployment,
    new_namespace,
    one_decision,
    pods,
    policy,
    replicasets,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
JOB_SCRIPT = (
    "echo 'nightly-report 3.2: loading batch 2026-12-01'; "
    "echo 'ERROR: cannot parse row 17 of batch 2026-12-01: unexpected end of input' >&2; exit 3"
)


@dataclass(frozen=True)
class Scenarios:
    job: str  # namespace
    rollout: str
    first_replicaset: str
    rolled_out_at: float


@pytest.fixture(scope="module")
def scenarios(operator: Operator) -> Iterator[Scenarios]:
    cluster = operator.cluster
    apps = client.AppsV1Api(cluster.api_client)
    with policy(operator, (ROOT / "policies" / "autopilot.yaml").read_text()):
        job_ns = new_namespace(cluster, "jobs")
        client.BatchV1Api(cluster.api_client).create_namespaced_job(
            job_ns,
            {
                "metadata": {"name": "nightly-report"},
                "spec": {
                    "backoffLimit": 1,
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "terminationGracePeriodSeconds": 1,
                            "containers": [
                                {
                                    "name": "report",
                                    "image": BUSYBOX,
                                    "imagePullPolicy": "Never",
                                    "command": ["sh", "-c", JOB_SCRIPT],
                                }
                            ],
                        }
                    },
                },
            },
        )

        web_ns = new_namespace(cluster, "stall")
        web = deployment(
            "storefront",
            [
                {
                    "name": "web",
                    "command": ["sh", "-c", "touch /tmp/ready; exec httpd -f -p 8080 -h /tmp"],
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 2},
                }
            ],
        )
        web["spec"]["progressDeadlineSeconds"] = 10
        apps.create_namespaced_deployment(web_ns, web)
        wait_for(
            lambda: (apps.read_namespaced_deployment("storefront", web_ns).status.ready_replicas or 0) >= 1,
            120,
            "revision 1 of storefront to be ready",
        )
        first = replicasets(operator, web_ns)[0]["metadata"]["name"]
        patch = {
            "metadata": {"annotations": {"kubernetes.io/change-cause": "storefront 2.0: warm-up file"}},
            "spec": {"template": {"spec": {"containers": [
                {"name": "web", "command": ["sh", "-c", "echo 'storefront 2.0 warming up'; exec httpd -f -p 8080 -h /tmp"]}
            ]}}},
        }  # fmt: skip
        apps.patch_namespaced_deployment("storefront", web_ns, patch)
        yield Scenarios(job=job_ns, rollout=web_ns, first_replicaset=first, rolled_out_at=time.monotonic())


def _capture(operator: Operator, namespace: str, what: str, out: Path) -> dict[str, Any]:
    """`sre-agent capture -n NS KIND/NAME -o OUT` against the node's cluster; the parsed document."""
    env = {**os.environ, **operator.cluster.env, "KUBECONFIG": str(operator.cluster.kubeconfig)}
    done = subprocess.run(
        [sys.executable, "-m", "sre_agent.cli", "capture", "-n", namespace, what, "-o", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    keep = os.environ.get("SRE_AGENT_NODE_CAPTURE_DIR")
    if keep:
        shutil.copy(out, Path(keep) / out.name)
    document: dict[str, Any] = yaml.safe_load(out.read_text())
    return document


def test_a_failed_job_gets_one_decision_about_the_job(
    operator: Operator, scenarios: Scenarios, tmp_path: Path
) -> None:
    ns = scenarios.job
    decision = one_decision(operator, ns, "a decision about the failed Job")
    spec = decision["spec"]
    text = json.dumps(spec)
    assert spec["target"]["kind"] == "Job" and spec["target"]["name"] == "nightly-report", text[:2000]
    assert (spec["symptom"], spec["category"]) == ("JobFailed", "app_error"), text[:3000]
    assert spec["action"] == "create_alert"
    assert "BackoffLimitExceeded" in spec["reasoning"]
    failed = [
        p for p in pods(operator.cluster, ns, "job-name=nightly-report") if p["status"]["phase"] == "Failed"
    ]
    assert len(failed) == 2  # backoffLimit 1: two runs, both exit 3, neither restarted
    assert all(p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3 for p in failed)

    document = _capture(operator, ns, "job/nightly-report", tmp_path / "real-node-job-failed.yaml")
    assert document["owner"]["kind"] == "Job" and document["expected"] == {"symptom": "JobFailed"}
    assert "unexpected end of input" in json.dumps(document["logs"])
    ctx = parse_incident(document, "capture").context
    assert detect_incident(ctx.pod, ctx.events, ctx.node, ctx.owner, None) == "JobFailed"
    assert len(decisions(operator.cluster, ns)) == 1


def test_a_rollout_that_never_gets_ready_gets_one_decision_proposing_the_rollback(
    operator: Operator, scenarios: Scenarios, tmp_path: Path
) -> None:
    cluster = operator.cluster
    ns = scenarios.rollout
    decision = one_decision(operator, ns, "a decision about the stalled rollout")
    spec = decision["spec"]
    text = json.dumps(spec)
    assert spec["target"]["kind"] == "Deployment" and spec["target"]["name"] == "storefront", text[:2000]
    assert spec["symptom"] == "ProgressDeadlineExceeded", text[:3000]
    assert spec["action"] == "rollback_deployment", text[:3000]
    assert spec["parameters"]["replicaset"] == scenarios.first_replicaset
    assert str(spec["parameters"]["revision"]) == "1"
    assert "failures began right after rollout 2; revision 1 was healthy" in spec["diagnosis"]
    phase = wait_for(lambda: (decisions(cluster, ns)[0].get("status") or {}).get("phase"), 60, "a phase")
    assert phase == "PendingApproval"

    document = _capture(
        operator, ns, "deployment/storefront", tmp_path / "real-node-rollout-never-ready.yaml"
    )
    assert document["owner"]["kind"] == "Deployment"
    assert {o["kind"] for o in document["related"]} == {"ReplicaSet"}
    assert "Readiness probe failed" in json.dumps(document["events"])

    # The new pod stays unready past the operator's ProbeFailure threshold (20 s): it joins the
    # open decision about its rollout instead of opening a second one.
    wait_for(lambda: time.monotonic() - scenarios.rolled_out_at > 45, 60, "the new pod to be ProbeFailure")
    wait_for(
        lambda: any(
            "joins open AgentDecision" in line and ns in line for line in operator.logs(400).splitlines()
        ),
        60,
        "the pod to join the decision",
    )
    assert [d["metadata"]["name"] for d in decisions(cluster, ns)] == [decision["metadata"]["name"]]
