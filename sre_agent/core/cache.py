"""Response cache: identical incidents (across replicas and repeats) cost one LLM call.

Keyed by the reasoner's identity (model + prompt version) and an incident fingerprint
built from redacted, normalised evidence, so a new model or prompt never reuses old answers.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable

from cachetools import TTLCache

from sre_agent.domain import Diagnosis, Evidence

_VOLATILE = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"  # uids
    r"|\b\d{1,3}(\.\d{1,3}){3}(:\d+)?\b"  # IPs
    r"|\b[0-9a-f]{7,}\b"  # hashes, container ids
    r"|\d+",
    re.IGNORECASE,
)


def normalise(text: str) -> str:
    return _VOLATILE.sub("#", text)


def _strip_digest(image: str) -> str:
    return image.split("@", 1)[0]


def fingerprint(evidence: Evidence) -> str:
    """Same symptom, same workload, same image and same kind of evidence: same fingerprint."""
    workload = evidence.owner.key() if evidence.owner else evidence.pod.key()
    signature = sorted({(s.kind, normalise(s.detail)) for s in evidence.signals if s.kind != "listen_port"})
    payload = {
        "symptom": evidence.symptom.value,
        "workload": normalise(workload) if not evidence.owner else workload,
        "images": sorted({_strip_digest(i) for i in evidence.images}),
        "signals": signature,
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return digest[:16]


class DiagnosisCache:
    """A TTL cache of LLM diagnoses; the timer is injected so the core never reads the clock."""

    def __init__(self, timer: Callable[[], float], maxsize: int = 1024, ttl_seconds: float = 3600) -> None:
        self._cache: TTLCache[str, Diagnosis] = TTLCache(maxsize=maxsize, ttl=ttl_seconds, timer=timer)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(reasoner_id: str, fp: str) -> str:
        return f"{reasoner_id}|{fp}"

    def get(self, reasoner_id: str, fp: str) -> Diagnosis | None:
        found = self._cache.get(self.key(reasoner_id, fp))
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def put(self, reasoner_id: str, fp: str, diagnosis: Diagnosis) -> None:
        self._cache[self.key(reasoner_id, fp)] = diagnosis

    def __len__(self) -> int:
        return len(self._cache)
