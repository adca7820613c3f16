"""The operator as users run it: a pod from the project's image, under deploy/'s ServiceAccount."""

from __future__ import annotations

import json
import urllib.request

from tests.node.conftest import Operator


def _get(port: str, path: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return resp.status, resp.read().decode()


def test_the_operator_pod_runs_its_own_image_unprivileged_under_the_deploy_service_account(
    operator: Operator,
) -> None:
    out = operator.cluster.run_kubectl(
        "-n", "sre-agent", "get", "pods", "-l", "app.kubernetes.io/name=sre-agent", "-o", "json"
    )
    items = json.loads(out.stdout)["items"]
    running = [
        p
        for p in items
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]
    assert len(running) == 1, [p["status"].get("phase") for p in items]
    pod = running[0]
    assert pod["spec"]["serviceAccountName"] == "sre-agent"
    container = pod["spec"]["containers"][0]
    assert container["image"].endswith("sre-agent:dev") and container["imagePullPolicy"] == "Never"
    status = pod["status"]["containerStatuses"][0]
    assert status["ready"] is True and status["imageID"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_operator_pod_serves_health_and_metrics(operator: Operator) -> None:
    code, body = _get(operator.state["OPERATOR_HEALTH_PORT"], "/healthz")
    assert code == 200, body
    code, metrics = _get(operator.state["OPERATOR_METRICS_PORT"], "/metrics")
    assert code == 200
    assert "sre_agent_decisions_pending" in metrics
    assert "sre_agent_incidents_total" in metrics
