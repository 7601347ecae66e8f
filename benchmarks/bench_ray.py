"""Problems per second of one search with K=1 (in-process, no Ray) and K Ray workers.

Builds a tiny random Llama policy and a tiny RLHFlow-format PRM (``tests/tiny_models.py``,
``tests/prm_models.py``), takes the first ``--problems`` MATH-500 problems (built-in ones when the
shared data is absent) and searches them with ``best_of_n`` (or ``--strategy``): once with the
default in-process searcher (K=1) and once per ``--workers`` value through ``RaySearcher`` on a
local Ray cluster. K=1 runs twice: with torch's default threads, and with one thread, which is what
each Ray worker gets (Ray sets OMP_NUM_THREADS to an actor's num_cpus=1). Prints start-up time
(Ray + loading the models in every worker), search time, problems per second, the per-worker
throughput of the Ray runs, and whether each run selected the same solutions as K=1. A figure to
report, not a timed assertion: on a 2-core machine K=2 can at best double the one-thread figure,
and on a busy machine torch's multi-threaded CPU kernels can be far slower than one thread.

``--ray-data`` also measures what the runtime would cost on Ray Data instead (the figure quoted
in ``tts_eval.runtime.ray``): ``--calls`` searches (lm-eval batches, or runs of a sweep) through
``Dataset.map_batches`` over an actor pool of K actors that load the models in their constructor,
against the same calls on one ``RaySearcher`` whose actors loaded once.

    python benchmarks/bench_ray.py [--problems 24] [--workers 2] [--n 8] [--max-tokens 48]
    python benchmarks/bench_ray.py --problems 6 --workers 2 --ray-data --calls 3
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from prm_models import build_rlhflow  # noqa: E402
from tiny_models import MATH500, SAMPLE_PROBLEMS, build_llama  # noqa: E402

from tts_eval.model_args import parse_model_args  # noqa: E402
from tts_eval.runtime import open_searcher  # noqa: E402
from tts_eval.runtime.throughput import worker_throughput  # noqa: E402
from tts_eval.search import get_spec  # noqa: E402
from tts_eval.types import Problem  # noqa: E402

FALLBACK = SAMPLE_PROBLEMS


def _texts(count: int) -> list[str]:
    if MATH500.exists():
        with MATH500.open() as f:
            rows = [json.loads(line) for line, _ in zip(f, range(count), strict=False)]
        return [row["problem"] for row in rows]
    return [FALLBACK[i % len(FALLBACK)] + f" (variant {i})" for i in range(count)]


def _problems(searcher, texts: list[str]) -> list[Problem]:
    return [
        Problem(f"p{i}", text, tuple(searcher.render_prompt([{"role": "user", "content": text}])))
        for i, text in enumerate(texts)
    ]


def _key(result) -> tuple:
    return (result.uid, result.selected, tuple(c.token_ids for c in result.candidates))


def run(args_string: str, workers: int, texts: list[str], threads: int | None = None) -> dict:
    """One search of ``texts`` with ``workers`` (K=1: in-process, on ``threads`` torch threads)."""
    import torch

    default_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    config = parse_model_args(f"{args_string},data_parallel_size={workers}")
    searcher = open_searcher(config)
    start_s = time.perf_counter() - t0
    try:
        problems = _problems(searcher, texts)
        t0 = time.perf_counter()
        results = searcher.search(problems, config.search)
        search_s = time.perf_counter() - t0
    finally:
        torch.set_num_threads(default_threads)
        searcher.close()
    if workers == 1:
        label = f"K=1 ({threads or default_threads} thr)"
    else:
        label = f"K={workers} (1 thr each)"
    return {
        "label": label,
        "start_s": start_s,
        "search_s": search_s,
        "problems_per_s": len(problems) / search_s,
        "per_worker": worker_throughput(results),
        "keys": [_key(r) for r in results],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=24)
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    parser.add_argument("--strategy", default="best_of_n")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--ray-data", action="store_true", help="also time Ray Data map_batches")
    parser.add_argument("--calls", type=int, default=3, help="searches timed with --ray-data")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        policy = build_llama(Path(tmp) / "policy")
        prm = build_rlhflow(Path(tmp) / "prm")
        model_args = (
            f"pretrained={policy},backend=hf,device=cpu,prm={prm},prm_type=rlhflow,"
            f"strategy={args.strategy},n={args.n},num_iterations=8,"
            f"max_tokens={args.max_tokens},seed=0"
        )
        if "beam_width" in get_spec(args.strategy).option_names:
            model_args += ",beam_width=4"
        texts = _texts(args.problems)
        if args.ray_data:
            compare_ray_data(model_args, args.workers[0], texts, args.calls)
            return
        runs = [run(model_args, 1, texts), run(model_args, 1, texts, threads=1)]
        runs += [run(model_args, k, texts) for k in args.workers]

    one = runs[1]  # K=1 on one thread: what each Ray worker gets (num_cpus=1)
    print(
        f"\n{args.problems} problems, strategy={args.strategy}, n={args.n}, "
        f"max_tokens={args.max_tokens}, tiny models on CPU"
    )
    header = f"{'run':<18} {'start s':>8} {'search s':>9} {'problems/s':>11} {'vs K=1 1thr':>12}"
    print(header + "  same as K=1")
    for r in runs:
        print(
            f"{r['label']:<18} {r['start_s']:>8.1f} {r['search_s']:>9.2f} "
            f"{r['problems_per_s']:>11.2f} {r['problems_per_s'] / one['problems_per_s']:>11.2f}x  "
            f"{r['keys'] == runs[0]['keys']}"
        )
    for r in runs[2:]:
        for row in r["per_worker"]:
            print(
                f"    {r['label']} worker {row['worker']}: {row['problems']} problems, "
                f"{row['policy_tokens']} policy tokens, busy {row['busy_s']:.2f}s, "
                f"{row['problems_per_s']:.2f} problems/s"
            )


class _RayDataSearch:
    """The Ray Data way: an actor-pool UDF that loads the models in its constructor."""

    def __init__(self, config) -> None:
        from tts_eval.runtime.local import LocalSearcher

        self.config = config
        self.searcher = LocalSearcher.from_config(config)

    def __call__(self, batch: dict) -> dict:
        problems = [
            Problem(str(uid), str(text), tuple(int(t) for t in ids))
            for uid, text, ids in zip(batch["uid"], batch["text"], batch["prompt_ids"], strict=True)
        ]
        results = self.searcher.search(problems, self.config.search)
        return {"uid": [r.uid for r in results], "tokens": [r.cost.policy_tokens for r in results]}


def compare_ray_data(args_string: str, workers: int, texts: list[str], calls: int) -> None:
    """``calls`` searches through Ray Data map_batches vs one RaySearcher (see the docstring)."""
    import ray

    config = parse_model_args(f"{args_string},data_parallel_size={workers}")
    ray.init(num_cpus=workers, include_dashboard=False, logging_level=logging.WARNING)
    try:
        t0 = time.perf_counter()
        searcher = open_searcher(config)
        start_s = time.perf_counter() - t0
        problems = _problems(searcher, texts)
        searcher_s, tokens = [], None
        for _ in range(calls):
            t0 = time.perf_counter()
            results = searcher.search(problems, config.search)
            searcher_s.append(time.perf_counter() - t0)
            tokens = sorted((r.uid, r.cost.policy_tokens) for r in results)
        searcher.close()

        data_s = []
        rows = [{"uid": p.uid, "text": p.text, "prompt_ids": list(p.prompt_ids)} for p in problems]
        for _ in range(calls):
            t0 = time.perf_counter()
            out = (
                ray.data.from_items(rows)
                .map_batches(
                    _RayDataSearch,
                    fn_constructor_args=(config,),
                    concurrency=workers,
                    batch_size=max(1, len(rows) // (2 * workers)),
                    num_cpus=1,
                )
                .take_all()
            )
            data_s.append(time.perf_counter() - t0)
            same = sorted((r["uid"], r["tokens"]) for r in out) == tokens
    finally:
        ray.shutdown()
    print(f"\n{len(texts)} problems, K={workers}, {calls} searches (tiny models, CPU)")
    print(f"RaySearcher: start {start_s:.1f}s once, then per search " + _secs(searcher_s))
    print("Ray Data map_batches (actor pool, models load per call): per search " + _secs(data_s))
    print(f"  same tokens as RaySearcher: {same}")
    total_searcher, total_data = start_s + sum(searcher_s), sum(data_s)
    print(
        f"  {calls} searches in all: RaySearcher {total_searcher:.1f}s, Ray Data {total_data:.1f}s"
    )


def _secs(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}s" for v in values)


if __name__ == "__main__":
    main()
