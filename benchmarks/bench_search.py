"""Overhead of the search strategies themselves, measured on the test fakes (no model at all).

Runs every strategy at several budgets on a batch of problems with ``tests/fakes.py``'s seeded
``RandomEngine`` and ``FakePRM``, and reports wall time per problem, engine/PRM calls and
generated tokens; then times answer grouping of 256 answers. The numbers bound the Python-side
cost that a real engine/PRM run adds on top of model time.

Usage: ``python benchmarks/bench_search.py [--problems 50] [--budgets 16,64,256]``

What this script does not do: load or time real models (a real-model benchmark is separate).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fakes import FakeAnswerSpec, FakePRM, RandomEngine, problem  # noqa: E402

from tts_eval.search import AnswerGrouper, SearchConfig, run_search  # noqa: E402

STRATEGIES = [
    ("majority", {}),
    ("best_of_n", {}),
    ("beam_search", {"beam_width": 4}),
    ("dvts", {"beam_width": 4}),
    ("dvts", {"beam_width": 4, "lookahead": 1}),
    ("compute_optimal", {}),
]


def bench_strategies(num_problems: int, budgets: list[int]) -> None:
    problems = [problem(f"p{i}") for i in range(num_problems)]
    header = f"{'strategy':<24}{'n':>5}{'s/problem':>11}{'gen calls':>11}{'prm calls':>11}"
    print(header + f"{'tokens/problem':>16}{'candidates':>12}")
    for budget in budgets:
        for strategy, extra in STRATEGIES:
            engine, prm = RandomEngine(p_final=0.15, max_steps=30), FakePRM()
            config = SearchConfig(strategy=strategy, n=budget, max_tokens=2048, **extra)
            start = time.perf_counter()
            results = run_search(config, problems, engine, prm, FakeAnswerSpec())
            elapsed = time.perf_counter() - start
            tokens = sum(r.cost.policy_tokens for r in results) / num_problems
            candidates = sum(len(r.candidates) for r in results) / num_problems
            name = strategy + ("+la1" if extra.get("lookahead") else "")
            print(
                f"{name:<24}{budget:>5}{elapsed / num_problems:>11.4f}{len(engine.calls):>11}"
                f"{len(prm.calls):>11}{tokens:>16.0f}{candidates:>12.1f}"
            )


def bench_grouping() -> None:
    values = ["1/2", "0.5", "3", "4", "7", "2/4", "x", "y", "\\frac{1}{2}", "10"]
    rng = random.Random(0)
    answers = [rng.choice(values) + " " * rng.randint(0, 2) for _ in range(256)]
    spec = FakeAnswerSpec()
    start = time.perf_counter()
    groups = AnswerGrouper(spec).group(answers)
    elapsed = time.perf_counter() - start
    print(
        f"grouping 256 answers: {elapsed * 1e3:.2f} ms, {len(set(groups))} groups, "
        f"{spec.canonical_calls} canonical and {spec.equivalent_calls} equivalent calls"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=50)
    parser.add_argument("--budgets", default="16,64,256")
    args = parser.parse_args()
    bench_strategies(args.problems, [int(b) for b in args.budgets.split(",")])
    bench_grouping()


if __name__ == "__main__":
    main()
