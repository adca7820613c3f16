"""The running operator leaks no secret: not to the LLM, not into the AgentDecision, not into its log.

A real `sre-agent run` (subprocess, the agent's own ServiceAccount) meets a crash-looping pod
that carries a CANARY in every shape of issue 7 (split args, secret-named annotations,
last-applied-configuration, webhook/Stripe/base64 env values, the log tail in its termination
message, Event messages); tests/cluster/test_capture.py builds that pod.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sre_agent.adapters.kube.decisions import incident_of
from tests.cluster import kubesim
from tests.cluster.conftest import Cluster
from tests.cluster.operator_harness import OperatorProcess, agent_kubeconfig, decisions
from tests.cluster.test_capture import BLOB, secret_shapes_pod
from tests.fake_llm import FakeLLM, answer_for, reply

pytestmark = pytest.mark.cluster

WAIT = 90  # generous: two cores, other suites running in parallel


def test_the_operator_leaks_no_secret(
    cluster: Cluster, namespace: str, node: str, fake_llm: FakeLLM, tmp_path: Path
) -> None:
    fake_llm.default = reply(answer_for("dependency_unavailable"))
    kubeconfig = agent_kubeconfig(cluster, tmp_path / "kubeconfig")
    env = {"SRE_AGENT_LLM_BASE_URL": fake_llm.base_url, "SRE_AGENT_LLM_MODEL": "fake-model"}
    operator = OperatorProcess(
        kubeconfig, tmp_path / "operator.log", args=("--standalone", "-n", namespace), env=env
    )
    secret_shapes_pod(cluster, namespace, node)  # all evidence in place before the operator looks
    try:
        with operator:

            def recorded() -> list[dict[str, Any]] | None:
                return decisions(cluster.api_client, namespace) or None

            found = kubesim.wait_for(recorded, timeout=WAIT, what=f"an AgentDecision in {namespace}")
    finally:
        log = operator.log()  # the whole log, written until the operator stopped
        print(log[-5000:])
    incidents = [incident_of(d) for d in found]  # stored zipped: searched decompressed
    assert (incidents[0] or {})["pod"]["metadata"]["name"] == "vault"
    assert fake_llm.requests, "the LLM was asked"
    for where, text in (
        ("LLM request", json.dumps(fake_llm.requests)),
        ("AgentDecision", json.dumps([found, incidents])),
        ("operator log", log),
    ):
        assert "CANARY" not in text, (
            f"{where}: {text[max(0, text.find('CANARY') - 80) : text.find('CANARY') + 40]}"
        )
        assert BLOB not in text, where
    prompt = fake_llm.all_text()
    assert "registry.example.com/shop/checkout:3.2.0" in prompt  # the image survives
    # The LLM did see the places the canaries were in, redacted: Events and the log tail.
    assert "exec: mysql -u root -p[REDACTED] failed" in prompt
    assert "redis AUTH [REDACTED]" in prompt
