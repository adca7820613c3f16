"""Every prompt over every incident set fits 2,000 tokens, and keeps what decides the category.

Tokens are counted with a real BPE tokenizer (bpe-openai ships OpenAI's o200k and cl100k tables;
tiktoken would download them at run time). The rules decide from signal kinds, so every kind the
evidence holds must still be in the prompt after the budget, with the rules' own verdict unchanged.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from sre_agent.adapters.llm import load_prompts
from sre_agent.adapters.recorded import incident_paths, load_incident
from sre_agent.core.pipeline import Pipeline
from sre_agent.core.policy import load_policy
from sre_agent.core.prompts import MAX_EVIDENCE_CHARS
from sre_agent.core.reasoning import FixedClock
from sre_agent.domain import Evidence, Signal, Symptom
from sre_agent.replay import EPOCH_FALLBACK

ROOT = Path(__file__).resolve().parents[2]
SETS = [
    ROOT / "replay" / "incidents",
    ROOT / "tests" / "replay" / "unseen",
    ROOT / "tests" / "replay" / "holdout",
]
POLICY = load_policy(ROOT / "policies" / "default.yaml")
PROMPTS = load_prompts(None)
MAX_TOKENS = 2000


def rendered() -> list[tuple[str, Evidence, str, str]]:
    out = []
    for path in incident_paths(SETS):
        incident = load_incident(path)
        pipeline = Pipeline(policy=POLICY, clock=FixedClock(incident.context.captured_at or EPOCH_FALLBACK))
        symptom = pipeline.symptom_of(incident.context)
        if symptom == Symptom.HEALTHY:
            continue
        evidence = pipeline.evidence_of(incident.context, symptom)
        prompt = PROMPTS.render(evidence, POLICY.describe_actions())
        out.append((path.name, evidence, prompt.system, prompt.user))
    return out


PROMPTS_OVER_SETS = rendered()


@pytest.mark.parametrize("encoding", ["o200k_base", "cl100k_base"])
def test_every_prompt_fits_two_thousand_tokens(encoding: str) -> None:
    bpe = pytest.importorskip("bpe_openai")
    tokens = bpe.get_encoding(encoding)
    assert len(PROMPTS_OVER_SETS) >= 100
    sizes = {
        name: len(tokens.encode(system)) + len(tokens.encode(user))
        for name, _, system, user in PROMPTS_OVER_SETS
    }
    largest = max(sizes, key=lambda name: sizes[name])
    assert sizes[largest] <= MAX_TOKENS, (largest, sizes[largest])


def test_every_signal_kind_survives_the_budget() -> None:
    for name, evidence, _, user in PROMPTS_OVER_SETS:
        for kind in {s.kind for s in evidence.signals}:
            assert f"- {kind}: " in user, (name, kind)


def test_repeated_signals_become_one_line_and_the_budget_holds_on_a_flood() -> None:
    _, evidence, _, _ = PROMPTS_OVER_SETS[0]
    flood = tuple(
        Signal(
            "connection_error", f"dial tcp 10.0.0.{i}:5432: connection refused attempt {i}", "log:app:current"
        )
        for i in range(200)
    ) + tuple(Signal(f"kind_{i}", "x" * 400, "status") for i in range(3))
    many = replace(
        evidence, signals=flood, excerpts=tuple(f"line {chr(65 + i)} " + "y" * 150 for i in range(40))
    )
    user = PROMPTS.user(many)
    assert user.count("- connection_error: ") == 1 and "(+199 similar)" in user
    assert all(f"- kind_{i}: " in user for i in range(3))  # each kind's first signal always stays
    evidence_block = user.split("signals (kind: detail [source]):", 1)[1]
    assert len(evidence_block) < MAX_EVIDENCE_CHARS + 400
    assert "left out to keep the prompt short" in user
