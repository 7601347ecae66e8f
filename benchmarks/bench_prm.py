"""PRM tokens processed with and without prefix reuse, scoring a 10-step solution step by step.

Builds each tiny random PRM of ``tests/prm_models.py`` (or only ``--prm-type``), then scores
``[s1]``, ``[s1, s2]``, ..., ``[s1..s10]`` (one call per step, as a search does) twice: with the
prefix KV cache and with ``cache_bytes=0`` (every call re-processes the whole prefix). Prints the
PRM tokens processed by each and the ratio (target >= 4x fewer at 10 steps), and checks that both
give the same scores. The solution is a MATH-500 reference solution padded to 10 steps when the
shared data is present, else a built-in one.

    python benchmarks/bench_prm.py [--prm-type rlhflow] [--block-size 16]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from prm_models import BUILDERS, DIR_NAMES  # noqa: E402
from tiny_models import MATH500  # noqa: E402

from tts_eval.prm import load_prm  # noqa: E402
from tts_eval.types import PRMRequest  # noqa: E402

N_STEPS = 10


def _problem_and_steps() -> tuple[str, tuple[str, ...]]:
    if MATH500.exists():
        with MATH500.open() as f:
            row = json.loads(f.readline())
        sentences = [s.strip() + "." for s in row["solution"].split(". ") if s.strip()]
        steps = [f"## Step {i + 1}: {sentences[i % len(sentences)]}" for i in range(N_STEPS)]
        return row["problem"], tuple(steps)
    steps = [
        f"## Step {i + 1}: We compute the partial sum $S_{i + 1} = S_{i} + {i + 1}^2$, "
        f"which gives $S_{i + 1} = {sum(k * k for k in range(1, i + 2))}$."
        for i in range(N_STEPS)
    ]
    return "Compute $\\sum_{k=1}^{10} k^2$.", tuple(steps)


def run(prm_type: str, root: Path, block_size: int) -> tuple[int, int, float, float]:
    path = BUILDERS[prm_type](root / DIR_NAMES[prm_type])
    problem, steps = _problem_and_steps()
    reuse = load_prm(str(path), device="cpu", block_size=block_size)
    scratch = load_prm(str(path), device="cpu", cache_bytes=0)
    tokens = {"reuse": 0, "scratch": 0}
    seconds = {"reuse": 0.0, "scratch": 0.0}
    for k in range(1, len(steps) + 1):
        outs = {}
        for name, prm in (("reuse", reuse), ("scratch", scratch)):
            start = time.perf_counter()
            [outs[name]] = prm.score([PRMRequest(problem, steps[:k])])
            seconds[name] += time.perf_counter() - start
            tokens[name] += outs[name].tokens_processed
        for a, b in zip(outs["reuse"].step_scores, outs["scratch"].step_scores, strict=True):
            if not math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-5):
                raise SystemExit(f"{prm_type}: scores differ at step {k}: {a} vs {b}")
    return tokens["reuse"], tokens["scratch"], seconds["reuse"], seconds["scratch"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prm-type", choices=sorted(BUILDERS), default=None)
    parser.add_argument("--block-size", type=int, default=16)
    args = parser.parse_args()
    types = [args.prm_type] if args.prm_type else list(BUILDERS)
    print(f"{N_STEPS}-step solution scored step by step; PRM tokens processed (tiny models, CPU)")
    header = ("prm_type", "with reuse", "without", "ratio", "s reuse", "s without")
    print("{:<22}{:>12}{:>10}{:>8}{:>10}{:>11}".format(*header))
    with tempfile.TemporaryDirectory() as tmp:
        for prm_type in types:
            reuse, scratch, s_reuse, s_scratch = run(prm_type, Path(tmp), args.block_size)
            print(
                f"{prm_type:<22}{reuse:>12}{scratch:>10}{scratch / reuse:>7.1f}x"
                f"{s_reuse:>10.2f}{s_scratch:>11.2f}"
            )


if __name__ == "__main__":
    main()
