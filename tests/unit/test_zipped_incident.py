"""spec.zippedIncident: the incident stored compressed, read back by export, refused when hostile."""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from datetime import timedelta
from typing import Any

import pytest

from sre_agent.adapters.kube.capture import incident_from_decision
from sre_agent.adapters.kube.decisions import (
    MAX_ZIPPED_INCIDENT,
    DecisionFormatError,
    incident_of,
    manifest_for,
    zip_incident,
)
from tests.unit.test_decision_manifest import AT, make_decision

INCIDENT: dict[str, Any] = {
    "id": "shop-web",
    "pod": {"metadata": {"name": "web-7d4b9c-abcde", "namespace": "shop"}, "spec": {}, "status": {}},
    "events": [
        {"reason": "BackOff", "message": f"Back-off restarting failed container app {i}"} for i in range(300)
    ],
    "logs": {
        "app": {"current": "".join(f"ERROR request {i} failed: connection refused\n" for i in range(2000))}
    },
}


def decision_with(spec_extra: dict[str, Any]) -> dict[str, Any]:
    m = manifest_for(make_decision(), expires_at=AT + timedelta(hours=1))
    m["spec"].update(spec_extra)
    return m


def test_the_manifest_carries_the_incident_compressed_and_it_reads_back() -> None:
    m = manifest_for(make_decision(), expires_at=AT + timedelta(hours=1), incident=INCIDENT)
    assert "incident" not in m["spec"]
    zipped = m["spec"]["zippedIncident"]
    assert len(zipped) * 10 < len(json.dumps(INCIDENT))  # logs and events compress well
    assert incident_of(m) == INCIDENT
    assert zip_incident(INCIDENT) == zipped  # deterministic: the CRD's immutability rule holds
    assert list(m["spec"])[-1] == "zippedIncident"


def test_export_reads_the_zipped_incident_and_the_older_plain_one() -> None:
    zipped = manifest_for(make_decision(), expires_at=AT + timedelta(hours=1), incident=INCIDENT)
    zipped["metadata"]["name"] = "web-a"
    plain = decision_with({"incident": INCIDENT})
    plain["metadata"]["name"] = "web-b"
    for obj in (zipped, plain):
        document = incident_from_decision(obj)
        assert document is not None
        assert document["pod"] == INCIDENT["pod"] and document["events"] == INCIDENT["events"]
    assert incident_from_decision(decision_with({})) is None
    assert incident_of(decision_with({"zippedIncident": ""})) is None


def _gz(data: bytes) -> str:
    return base64.b64encode(gzip.compress(data)).decode()


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("not base64 at all!", "not base64 gzip"),
        (base64.b64encode(b"plain text, not gzip").decode(), "not base64 gzip"),
        (_gz(b"\xff\xfe not utf-8"), "not JSON"),
        (_gz(b"[1, 2, 3]"), "not an object"),
        (_gz(b"{" * 100_000), "not JSON"),
        (_gz(b" " * (9 * 2**20) + b"{}"), "inflates beyond 8 MiB"),  # a gzip bomb stops at 8 MiB
        (12, "not a string"),
        ("A" * (MAX_ZIPPED_INCIDENT + 4), "not a string within"),
    ],
)
def test_a_broken_zipped_incident_is_one_line_naming_the_field(value: Any, words: str) -> None:
    obj = decision_with({"zippedIncident": value})
    with pytest.raises(DecisionFormatError) as err:
        incident_of(obj)
    message = str(err.value)
    assert "spec.zippedIncident" in message and words in message and "\n" not in message
    assert message.startswith("AgentDecision shop/")


def test_a_gzip_bomb_is_not_inflated_beyond_the_limit() -> None:
    bomb = zlib.compress(b"\0" * (64 * 2**20), 9)
    assert len(bomb) < 100_000
    wrapped = base64.b64encode(gzip.compress(b"\0" * (64 * 2**20), 9)).decode()
    with pytest.raises(DecisionFormatError, match="inflates beyond"):
        incident_of(decision_with({"zippedIncident": wrapped}))
