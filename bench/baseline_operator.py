"""The naive per-event baseline of bench/storm.py: the operator as a first design sketch would write it.

One kopf event handler on pods; every event of an unhealthy pod (a container waiting, terminated,
not ready, or restarted) sends that pod's status to the LLM through the openai client and logs the
answer. No grouping per workload, no de-duplication, no cache, no cooldown. It is not part of the
product; it exists only so the storm benchmark has something to compare the operator's LLM calls with.

    BASELINE_LLM_BASE_URL=http://127.0.0.1:PORT/v1 KUBECONFIG=... \
        python bench/baseline_operator.py NAMESPACE

Environment: BASELINE_LLM_BASE_URL, BASELINE_LLM_MODEL ("baseline"), BASELINE_LLM_API_KEY ("baseline").
kopf logs in from $KUBECONFIG with the kubernetes client, as the sketch did.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from typing import Any, cast

import kopf
from openai import AsyncOpenAI

log = logging.getLogger("baseline")
llm = AsyncOpenAI(
    base_url=os.environ.get("BASELINE_LLM_BASE_URL"),
    api_key=os.environ.get("BASELINE_LLM_API_KEY", "baseline"),
    max_retries=0,
    timeout=60,
)
MODEL = os.environ.get("BASELINE_LLM_MODEL", "baseline")
SYSTEM = (
    "You are an SRE. Diagnose this Kubernetes pod and answer with JSON: "
    '{"category": ..., "summary": ..., "action": {"name": ..., "parameters": {}}}'
)


def unhealthy(pod: dict[str, Any]) -> bool:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for cs in statuses:
        state = cs.get("state") or {}
        if "waiting" in state or "terminated" in state or not cs.get("ready") or cs.get("restartCount"):
            return True
    return False


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.enabled = False  # no k8s Event per log line: the sketch only calls the LLM


@kopf.on.event("v1", "pods")
async def on_pod_event(event: kopf.RawEvent, **_: Any) -> None:
    pod = cast(dict[str, Any], event["object"])
    if event["type"] == "DELETED" or not unhealthy(pod):
        return
    meta = pod.get("metadata") or {}
    evidence = {"pod": f"{meta.get('namespace')}/{meta.get('name')}", "status": pod.get("status")}
    answer = await llm.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": json.dumps(evidence, default=str)},
        ],
    )
    log.debug("%s: %s", evidence["pod"], answer.choices[0].message.content)


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python bench/baseline_operator.py NAMESPACE")
    logging.basicConfig(level=logging.INFO)
    asyncio.run(kopf.operator(standalone=True, namespaces=[sys.argv[1]]))


if __name__ == "__main__":
    main()
