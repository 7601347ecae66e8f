"""Running the ``lm_eval`` command line in a subprocess, for the end-to-end tests.

What this module does not do: build models or data (``tiny_models``, ``prm_models``, fixtures).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_lm_eval(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """``python -m lm_eval *args`` in ``cwd``, offline (``HF_HUB_OFFLINE=1``) plus ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "lm_eval", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
        cwd=cwd,
        timeout=900,
    )
