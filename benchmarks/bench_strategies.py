"""Every strategy on tiny real models: tokens and wall time per problem, and the search overhead.

Builds the scripted tiny policy (``tests/tiny_models.build_scripted_llama``: it writes steps, ends
and boxes answers) and a tiny RLHFlow-format PRM, loads them through the real code
(``load_engine``, ``load_prm``), and runs each strategy over a few MATH-500 problems (or
synthetic ones when ``../shared/data`` is absent). The engine and PRM are wrapped in timing
proxies, so the report splits wall time into engine, PRM and everything else (the search itself,
voting, answer grouping through the grader): `outside %` is the fraction of wall time spent
outside the engine and PRM (target: under 10%), then the engine and PRM calls (one each per
iteration, whatever the number of problems).

Usage: ``python benchmarks/bench_strategies.py [--problems 4] [--n 8] [--backend hf|vllm]
[--strategies beam_search,dvts,particle_filtering] [--pg-iterations 2]``

What this script does not do: assert anything (figures are printed; machines here are noisy).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from prm_models import build_rlhflow  # noqa: E402
from tiny_models import MATH500, build_scripted_llama  # noqa: E402

from tts_eval.engines import load_engine  # noqa: E402
from tts_eval.grader import MathAnswerSpec  # noqa: E402
from tts_eval.prm import load_prm  # noqa: E402
from tts_eval.prompts import SYSTEM_PROMPT  # noqa: E402
from tts_eval.search import SearchConfig, get_spec, run_search  # noqa: E402
from tts_eval.types import (  # noqa: E402
    GenerationOutput,
    GenerationRequest,
    PRMOutput,
    PRMRequest,
    Problem,
    SamplingParams,
)

STRATEGIES = (
    "majority",
    "best_of_n",
    "beam_search",
    "dvts",
    "compute_optimal",
    "particle_filtering",
    "particle_gibbs",
)


class Timed:
    """Proxy that accumulates the wall time spent in ``generate`` / ``score`` of what it wraps."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.calls = 0

    def render_prompt(self, messages):
        return self.inner.render_prompt(messages)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        start = time.perf_counter()
        try:
            return self.inner.generate(requests)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1

    def score(self, requests: Sequence[PRMRequest]) -> list[PRMOutput]:
        start = time.perf_counter()
        try:
            return self.inner.score(requests)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1


def problem_texts(count: int) -> list[str]:
    if MATH500.exists():
        with MATH500.open() as f:
            return [json.loads(line)["problem"] for _, line in zip(range(count), f, strict=False)]
    return [f"What is {i} + {i}?" for i in range(count)]


def math500_problems(engine, count: int, prefix: str) -> list[Problem]:
    """The first ``count`` MATH-500 problems (or stand-ins), rendered with the task's system prompt."""
    return [
        Problem(
            uid=f"{prefix}/{i}",
            text=text,
            prompt_ids=tuple(
                engine.render_prompt(
                    [
                        {"role": "system", "content": SYSTEM_PROMPT},
                        {"role": "user", "content": text},
                    ]
                )
            ),
        )
        for i, text in enumerate(problem_texts(count))
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=4)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--beam-width", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--backend", default="hf", choices=("hf", "vllm"))
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--pg-iterations", type=int, default=2)
    args = parser.parse_args()
    strategies = [s for s in args.strategies.split(",") if s]

    tmp = Path(tempfile.mkdtemp(prefix="bench-strategies-"))
    policy = build_scripted_llama(tmp / "policy")
    prm_path = build_rlhflow(tmp / "prm")
    engine = Timed(load_engine(args.backend, str(policy), dtype="float32"))
    prm = Timed(load_prm(str(prm_path), "rlhflow"))
    answers = MathAnswerSpec()
    problems = math500_problems(engine, args.problems, "bench")
    # Warm-up outside the timings (first-call allocations, kernel selection, grader helpers).
    engine.generate([GenerationRequest(problems[0].prompt_ids, SamplingParams(max_tokens=4))])
    answers.equivalent("1/2", "0.5")
    print(
        f"backend={args.backend} problems={len(problems)} n={args.n} "
        f"beam_width={args.beam_width} max_tokens={args.max_tokens}"
    )
    print(
        f"{'strategy':<20}{'s/problem':>10}{'policy tok':>12}{'prm tok':>10}"
        f"{'engine s':>10}{'prm s':>8}{'other s':>9}{'outside %':>11}{'calls g/p':>11}"
    )
    for strategy in strategies:
        extra = {"pg_iterations": args.pg_iterations} if strategy == "particle_gibbs" else {}
        config = SearchConfig(
            strategy=strategy,
            n=args.n,
            **(
                {"beam_width": args.beam_width}
                if "beam_width" in get_spec(strategy).option_names
                else {}
            ),
            num_iterations=args.iterations,
            max_tokens=args.max_tokens,
            seed=0,
            **extra,
        )
        engine.seconds = prm.seconds = 0.0
        engine.calls = prm.calls = 0
        start = time.perf_counter()
        results = run_search(
            config, problems, engine, None if strategy == "majority" else prm, answers
        )
        wall = time.perf_counter() - start
        other = wall - engine.seconds - prm.seconds
        policy_tokens = sum(r.cost.policy_tokens for r in results) / len(results)
        prm_tokens = sum(r.cost.prm_tokens for r in results) / len(results)
        print(
            f"{strategy:<20}{wall / len(results):>10.3f}{policy_tokens:>12.0f}{prm_tokens:>10.0f}"
            f"{engine.seconds:>10.2f}{prm.seconds:>8.2f}{other:>9.2f}{100 * other / wall:>10.1f}%"
            f"{f'{engine.calls}/{prm.calls}':>11}"
        )


if __name__ == "__main__":
    main()
