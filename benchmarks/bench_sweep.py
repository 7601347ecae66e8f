"""Wall time and model loads of one ``tts-eval sweep`` in-process (K=1) and on K Ray workers.

Builds a tiny random Llama policy and a tiny RLHFlow-format PRM (``tests/tiny_models.py``,
``tests/prm_models.py``), writes a recipe over the first ``--limit`` MATH-500 problems (strategies
majority, best_of_n and beam_search at budgets 2 and 4: three runs, best_of_n at n=4 also
serving majority) and runs it with
``data_parallel_size=1`` and ``=K`` (a local Ray cluster of K CPUs). Prints, per K: wall time
(opening the searcher included), how many times models were loaded (K=1: counted in this process;
K>=2: each worker's own count and the processes that searched the records), and whether the K
records equal the K=1 records (tokens, selections). A figure to report, not a timed assertion.

    python benchmarks/bench_sweep.py [--limit 8] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from prm_models import build_rlhflow  # noqa: E402
from tiny_models import MATH500, build_llama  # noqa: E402

from tts_eval.runtime import open_searcher  # noqa: E402
from tts_eval.runtime.local import models_loaded  # noqa: E402
from tts_eval.workflow.recipe import load_sweep_recipe  # noqa: E402
from tts_eval.workflow.sweep import run_sweep  # noqa: E402


def _recipe(folder: Path, policy: Path, prm: Path, workers: int, limit: int) -> Path:
    recipe = folder / f"k{workers}.yaml"
    model_args = {
        "pretrained": str(policy),
        "prm": str(prm),
        "prm_type": "rlhflow",
        "device": "cpu",
        "beam_width": 2,
        "num_iterations": 4,
        "max_tokens": 32,
        "seed": 0,
        "data_parallel_size": workers,
    }
    sweep = {
        "task": "math500",
        "strategies": ["majority", "best_of_n", "beam_search"],
        "budgets": [2, 4],
        "limit": limit,
        "chunk_size": limit,
        "output_dir": str(folder / f"out-k{workers}"),
    }
    recipe.write_text(json.dumps({"model_args": model_args, "sweep": sweep}))
    return recipe


def _records(folder: Path) -> dict[str, list[dict]]:
    return {
        p.name: [json.loads(line) for line in p.read_text().splitlines()]
        for p in sorted((folder / "runs").glob("*.jsonl"))
    }


def _key(record: dict) -> tuple:
    return (
        record["uid"],
        record["selected"],
        record["cost"]["policy_tokens"],
        tuple(tuple(c["token_ids"]) for c in record["candidates"]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not MATH500.exists():
        sys.exit(f"needs the MATH-500 copy at {MATH500}")
    os.environ["TTS_EVAL_MATH500"] = str(MATH500)
    import ray

    ray.init(num_cpus=args.workers, include_dashboard=False, logging_level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        policy, prm = build_llama(folder / "policy"), build_rlhflow(folder / "prm")
        rows = {}
        for k in (1, args.workers):
            opened = []

            def factory(config, opened=opened):
                opened.append(open_searcher(config))
                return opened[-1]

            before = models_loaded()
            recipe = load_sweep_recipe(_recipe(folder, policy, prm, k, args.limit))
            t0 = time.perf_counter()
            summary = run_sweep(recipe, searcher_factory=factory, progress=False)
            wall = time.perf_counter() - t0
            records = _records(folder / f"out-k{k}")
            if k == 1:
                loads = f"{models_loaded() - before} (this process)"
            else:
                per_worker = [info["loads"] for info in opened[0].infos]
                pids = {r["settings"]["worker"]["pid"] for rs in records.values() for r in rs}
                loads = (
                    f"{sum(per_worker)} ({per_worker} per worker; {len(pids)} processes searched)"
                )
            rows[k] = (wall, loads, records, len(summary.runs))
    ray.shutdown()
    one = rows[1][2]
    print(f"\nsweep of {args.limit} problems (best_of_n n=4 with majority, beam_search n=2 and 4)")
    print(f"{'K':>3} {'runs':>5} {'wall s':>8}  model loads{'':<32} same records as K=1")
    for k, (wall, loads, records, runs) in rows.items():
        same = {n: [_key(r) for r in rs] for n, rs in records.items()} == {
            n: [_key(r) for r in rs] for n, rs in one.items()
        }
        print(f"{k:>3} {runs:>5} {wall:>8.1f}  {loads:<43} {same}")


if __name__ == "__main__":
    main()
