"""Session-wide fixtures: tiny local models built once per test session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import MATH500, build_llama  # noqa: E402


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """A random tiny Llama (tokenizer with chat template + weights) saved under a temp dir."""
    return build_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def math500_path() -> Path:
    if not MATH500.exists():
        pytest.skip(f"MATH-500 copy not found at {MATH500} (../shared/data is absent)")
    return MATH500
