"""The reasoner protocol: anything that turns Evidence into a Diagnosis.

Implemented by the rule-based diagnoser (core.rules) and the LLM reasoner
(adapters.llm). The pipeline falls back to the rules whenever a reasoner raises
ReasonerError, so a reasoner reports every failure that way, never by a bad answer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from sre_agent.domain import Diagnosis, Evidence


class ReasonerError(Exception):
    """The reasoner could not give a valid answer (down, slow, malformed, refused)."""


class Reasoner(Protocol):
    name: str

    async def diagnose(self, evidence: Evidence, allowed_actions: str) -> Diagnosis:
        """Diagnose; `allowed_actions` is the policy's action list rendered as text."""
        ...


class Clock(Protocol):
    def now(self) -> datetime: ...


class FixedClock:
    """A clock that always says the same time: replay uses the incident's capture time."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at
