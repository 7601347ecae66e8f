"""The package's layering and acyclicity, as checked by import-linter (contracts in pyproject.toml).

``lint-imports`` must keep every contract: layers (entry points > workflow > lm-eval model >
runtime > grader | search | engines | prm | traces > settings > types), no import cycles in any
package of tts_eval (module level or inside functions), and a search package free of model
libraries and lm-eval.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("lint-imports is missing: pip install -e '.[dev]' installs import-linter")
    return subprocess.run(
        [exe, "--no-cache", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_import_contracts_are_kept():
    proc = lint_imports()
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "3 kept, 0 broken" in proc.stdout


def test_a_cycle_inside_a_function_breaks_the_contract(tmp_path):
    """The check sees function-level imports: a copy of the package with one added cycle fails."""
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "tts_eval", copy / "tts_eval")
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    voting = copy / "tts_eval" / "search" / "voting.py"
    voting.write_text(
        voting.read_text() + "\n\ndef _cycle():\n    from tts_eval.search import run\n"
    )
    types = copy / "tts_eval" / "types.py"
    types.write_text(types.read_text() + "\n\ndef _up():\n    import tts_eval.runtime\n")
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    proc = subprocess.run(
        [exe, "--no-cache"],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(copy), "PATH": str(Path(sys.executable).parent)},
    )
    assert proc.returncode == 1, proc.stdout[-3000:]
    out = proc.stdout
    assert "tts_eval.types is not allowed to import tts_eval.runtime" in out  # layers
    assert "- .voting -> .run (1 import)" in out  # the cycle inside search
    assert "no import cycles between the modules of any package of tts_eval BROKEN" in out
