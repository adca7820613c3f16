"""Shared fixtures for every test directory.

``fake_llm`` (function): a started tests.fake_llm.FakeLLM, an OpenAI-compatible server on a
free local port, stopped after the test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fake_llm import FakeLLM


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    with FakeLLM() as fake:
        yield fake
