"""Subcommands of the "learn" half: ``tts-eval label``, ``tts-eval train-prm``, ``tts-eval prm-eval``.

Each handler parses its argv, checks every argument it can before a model loads, delegates, prints
a short summary and returns an exit status. Errors and signals are handled by ``tts_eval.cli``
(one line for our errors, a traceback with ``TTS_EVAL_TRACEBACK=1``; an interrupted job closes its
engine, and re-running the same command resumes it).

What this module does not do: the work (``label``, ``train``, ``evaluate``).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence

logger = logging.getLogger(__name__)


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def unescape(text: str) -> str:
    """``\\n``, ``\\t``, ``\\r`` and ``\\\\`` as typed on a command line, the rest as is (non-ASCII
    separators such as " ки" survive, which a ``unicode_escape`` round trip would garble)."""
    import re

    return re.sub(r"\\([ntr\\])", lambda m: _ESCAPES[m.group(1)], text)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def label_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="tts-eval label",
        description="Label the steps of the policy's own solutions to a task's problems by "
        "Monte Carlo rollouts (Math-Shepherd); writes TRL's stepwise data set (resumable).",
    )
    parser.add_argument("--task", required=True, help="lm-eval task with gold answers")
    parser.add_argument(
        "--model_args",
        "--model-args",
        required=True,
        help="the policy, as for --model tts: pretrained=...,backend=...,answer=...,"
        "step_delimiter=...,max_tokens=...,temperature=...,seed=...",
    )
    parser.add_argument("--output_dir", "--output-dir", required=True, help="labels folder")
    parser.add_argument("--samples", type=int, default=4, help="solutions per problem")
    parser.add_argument(
        "--rollouts", type=int, default=4, help="completions per step prefix (0: outcome labels)"
    )
    parser.add_argument("--limit", type=int, help="label the first N problems of the task")
    parser.add_argument("--chunk", type=int, default=16, help="problems per engine batch")
    parser.add_argument("--include_path", "--include-path", help="folder of extra task YAMLs")
    parser.add_argument(
        "--no-checker", action="store_true", help="ignore the task's exact step checker"
    )
    parser.add_argument(
        "--relabel",
        action="store_true",
        help="label the folder's recorded solutions again with the task's checker as it is now "
        "(it changed since they were labelled); nothing is generated again",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(list(argv))
    _logging()

    from tts_eval.engines import check_engine
    from tts_eval.learn.label import job_from_args, load_task, run_labelling
    from tts_eval.model_args import parse_model_args

    check_engine(parse_model_args(args.model_args).engine)
    task = load_task(args.task, args.include_path)
    generation = task.get_config("generation_kwargs") or {}
    job = job_from_args(
        args.task,
        args.model_args,
        args.output_dir,
        samples=args.samples,
        rollouts=args.rollouts,
        include_path=args.include_path,
        limit=args.limit,
        chunk_size=args.chunk,
        use_checker=not args.no_checker,
        relabel=args.relabel,
        task_max_tokens=generation.get("max_gen_toks"),
    )
    summary = run_labelling(job, task=task, progress=not args.no_progress)
    stats = summary.stats
    print(
        f"{args.task}: {summary.done_before} problems recorded before, {summary.computed} "
        f"labelled, {summary.total} in all"
    )
    print(
        f"solutions {stats['solutions']} (accuracy {_fmt(stats['solution_accuracy'])}), steps "
        f"{stats['steps']} (positive {_fmt(stats['positive_share'])}), rollout tokens "
        f"{stats.get('rollout_tokens', 0)}, rollout prefix-cache share "
        f"{_fmt(stats['rollout_cache_share'])}"
    )
    for source, counts in stats["by_source"].items():
        print(f"  {source}: {counts['steps']} steps, positive {_fmt(counts['positive_share'])}")
    print(f"data set: {summary.output_dir}/dataset")
    return 0


def train_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="tts-eval train-prm",
        description="Fine-tune a causal LM as a token-classification PRM (TRL's format) on "
        "step-labelled data with transformers' Trainer; loads with prm=<output_dir>.",
    )
    parser.add_argument("--model", required=True, help="base model folder or hub id")
    parser.add_argument(
        "--data", required=True, action="append", help="labels folder or data set (repeatable)"
    )
    parser.add_argument("--output_dir", "--output-dir", required=True, help="PRM folder")
    from tts_eval.learn.train import TrainSettings

    defaults = TrainSettings()
    parser.add_argument("--epochs", type=float, default=defaults.epochs)
    parser.add_argument("--max-steps", type=int, default=defaults.max_steps, help="-1: epochs")
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--grad-accum", type=int, default=defaults.grad_accum)
    parser.add_argument("--max-length", type=int, default=defaults.max_length)
    parser.add_argument("--val-fraction", type=float, default=defaults.val_fraction)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--separator", default=defaults.separator, help="step separator (\\n)")
    parser.add_argument("--lora", action="store_true", help="train LoRA adapters (peft), merged")
    parser.add_argument("--lora-r", type=int, default=defaults.lora_r)
    parser.add_argument("--save-steps", type=int, default=defaults.save_steps)
    parser.add_argument("--dtype", default=defaults.dtype, choices=("float32", "bfloat16"))
    parser.add_argument(
        "--layers", type=int, help="keep only the base's first N decoder layers (faster PRM)"
    )
    parser.add_argument(
        "--negatives-per-positive",
        type=float,
        help="at most R rows ending wrong per row ending right (training split)",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(list(argv))
    _logging()

    from tts_eval.learn.train import train_prm

    settings = TrainSettings(
        epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        max_length=args.max_length,
        val_fraction=args.val_fraction,
        seed=args.seed,
        separator=unescape(args.separator),
        lora=args.lora,
        lora_r=args.lora_r,
        save_steps=args.save_steps,
        dtype=args.dtype,
        layers=args.layers,
        negatives_per_positive=args.negatives_per_positive,
    )
    report = train_prm(
        args.model, args.data, args.output_dir, settings, progress=not args.no_progress
    )
    print(json.dumps(report["validation"], indent=2))
    print(
        f"trained in {report['train_seconds']:.0f} s ({report['train_steps']} steps, "
        f"{report['train_tokens']} tokens); PRM: {args.output_dir} (prm_type=token_classification)"
    )
    return 0


def prm_eval_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="tts-eval prm-eval",
        description="Score a PRM on labelled steps without search: step AUROC and accuracy "
        "(stepwise data), ProcessBench's first-error F1 (ProcessBench data).",
    )
    parser.add_argument("--prm", required=True, help="PRM folder or hub id")
    parser.add_argument("--data", required=True, help="labels folder, data set, or hub id")
    parser.add_argument("--split", help="split of a data set with several")
    parser.add_argument("--prm_type", "--prm-type", help="PRM format (auto-detected)")
    parser.add_argument("--prm_step_separator", "--prm-step-separator")
    parser.add_argument("--prm_device", "--prm-device")
    parser.add_argument("--prm_dtype", "--prm-dtype")
    parser.add_argument("--prm_batch_tokens", "--prm-batch-tokens", type=int, default=8192)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--limit", type=int, help="score the first N rows")
    parser.add_argument("--json", help="write the metrics here as JSON")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(list(argv))
    _logging()

    from tts_eval.learn.evaluate import evaluate_prm
    from tts_eval.settings import PRMConfig

    separator = args.prm_step_separator
    if separator is not None:
        separator = unescape(separator)
    config = PRMConfig(
        args.prm,
        args.prm_type,
        args.prm_device,
        args.prm_dtype,
        batch_tokens=args.prm_batch_tokens,
        step_separator=separator,
    )
    metrics = evaluate_prm(
        config,
        args.data,
        split=args.split,
        threshold=args.threshold,
        limit=args.limit,
        progress=not args.no_progress,
    )
    text = json.dumps(metrics, indent=2)
    if args.json:
        from tts_eval.workflow.results import write_json_atomic

        write_json_atomic(args.json, metrics)
    print(text)
    return 0
