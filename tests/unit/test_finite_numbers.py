"""NaN and infinities are refused wherever the operator reads a number from its environment.

`now + timedelta(seconds=inf)` raises at decision time, and NaN compares false with everything,
so both must stop the operator at start with one line naming the variable (as the policy does).
"""

from __future__ import annotations

import pytest

from sre_agent.adapters.llm import LLMConfig, LLMConfigError
from sre_agent.settings import Settings, SettingsError

NON_FINITE = ["nan", "NaN", "inf", "-inf", "Infinity", "1e400"]


@pytest.mark.parametrize("value", NON_FINITE)
@pytest.mark.parametrize(
    "name", ["SRE_AGENT_COOLDOWN_SECONDS", "SRE_AGENT_DECISION_TTL_SECONDS", "SRE_AGENT_CACHE_TTL_SECONDS"]
)
def test_operator_durations_must_be_finite(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({name: value})
    assert str(err.value).startswith(f"{name}={value!r}: must be ")
    assert "\n" not in str(err.value)


def test_durations_too_long_for_a_timestamp_are_refused() -> None:
    with pytest.raises(SettingsError, match="up to 315360000"):
        Settings.from_env({"SRE_AGENT_DECISION_TTL_SECONDS": "1e300"})
    assert Settings.from_env({"SRE_AGENT_DECISION_TTL_SECONDS": "86400"}).decision_ttl_seconds == 86400


@pytest.mark.parametrize("value", NON_FINITE)
@pytest.mark.parametrize(
    "name", ["SRE_AGENT_LLM_TIMEOUT", "SRE_AGENT_LLM_DEADLINE", "SRE_AGENT_LLM_BACKOFF_MAX"]
)
def test_llm_timings_must_be_finite(name: str, value: str) -> None:
    with pytest.raises(LLMConfigError) as err:
        LLMConfig.from_env({"SRE_AGENT_LLM_BASE_URL": "http://llm:8000/v1", name: value})
    assert str(err.value).startswith(f"{name}={value!r}: ")
