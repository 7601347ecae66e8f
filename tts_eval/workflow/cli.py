"""Workflow subcommands of ``tts-eval``: ``sweep``, ``report``, ``plot``, ``fit-compute-optimal``,
``compare``.

Each handler takes the remaining argv and returns an exit status; our errors (a bad argument, a
missing or malformed recipe, results of the wrong task, an out-of-memory batch: every
:class:`~tts_eval.errors.TTSEvalError`) are reported as ONE line on stderr (exit 2), anything else
(a bug) with its traceback; ``TTS_EVAL_TRACEBACK=1`` shows the traceback of our errors too. Signals are handled by ``tts_eval.cli`` (a sweep closes its
searcher on the way out, so an interrupted sweep leaves no model processes behind).

What this module does not do: the work itself (``sweep``, ``report``, ``plot``, ``fit``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tts_eval.errors import DataError, SettingError, TTSEvalError, one_line, reported_in_one_line

logger = logging.getLogger(__name__)


def _guard(prog: str, body: Callable[[argparse.Namespace], int], parser, argv) -> int:
    """Run ``body``: our errors (:class:`~tts_eval.errors.TTSEvalError`) print one line and exit 2
    (a traceback with ``TTS_EVAL_TRACEBACK=1``); anything else is a bug and propagates with its
    traceback (``tts_eval.cli`` prints it)."""
    args = parser.parse_args(list(argv))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return body(args)
    except TTSEvalError as exc:
        if not reported_in_one_line(exc):
            raise
        print(f"tts-eval {prog}: error: {one_line(exc)}", file=sys.stderr)
        return 2


def _estimate_args(parser: argparse.ArgumentParser, table: bool = True) -> None:
    parser.add_argument("--task", help="refuse results of any other task (e.g. math500)")
    if table:
        parser.add_argument(
            "--table",
            help="compute-optimal table for the fitted curve "
            "(default: compute_optimal_table.json in the results folder, if any)",
        )
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument(
        "--draws",
        type=int,
        default=64,
        help="random subsets per problem when not all subsets are enumerated",
    )
    parser.add_argument(
        "--max-exact",
        type=int,
        default=256,
        help="enumerate all subsets when there are at most this many",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of subsets and bootstrap")


def _report_of(args: argparse.Namespace) -> dict[str, Any]:
    from tts_eval.workflow.estimate import EstimateSettings
    from tts_eval.workflow.report import build_report
    from tts_eval.workflow.results import load_results

    results = load_results(args.results, task=args.task)
    settings = EstimateSettings(max_exact=args.max_exact, draws=args.draws, seed=args.seed)
    return build_report(
        results, settings=settings, bootstrap_iters=args.bootstrap, table=args.table
    )


def sweep_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="tts-eval sweep",
        description="Run strategies x budgets of a recipe through lm-eval (resumable).",
    )
    parser.add_argument("config", help="sweep recipe (configs/*.yaml)")
    parser.add_argument(
        "--model_args",
        "--model-args",
        default="",
        help="k=v,... overriding the recipe's model_args",
    )
    parser.add_argument("--output_dir", "--output-dir", help="overrides sweep.output_dir")
    parser.add_argument(
        "--strategies", metavar="S1,S2", help="overrides sweep.strategies (e.g. majority,dvts)"
    )
    parser.add_argument("--budgets", metavar="N1,N2", help="overrides sweep.budgets (e.g. 4,16)")
    parser.add_argument(
        "--limit", metavar="N", help="overrides sweep.limit: the first N documents of the task"
    )
    parser.add_argument(
        "--chunk_size", "--chunk-size", metavar="N", help="overrides sweep.chunk_size"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")

    def body(args: argparse.Namespace) -> int:
        from tts_eval.model_args import split_arg_string
        from tts_eval.workflow.recipe import load_sweep_recipe
        from tts_eval.workflow.sweep import run_sweep

        recipe = load_sweep_recipe(
            args.config, split_arg_string(args.model_args), sweep_overrides(args)
        )
        summary = run_sweep(recipe, output_dir=args.output_dir, progress=not args.no_progress)
        for run in summary.runs:
            print(
                f"{run.key}: {run.done_before} recorded before, {run.computed} computed, "
                f"{run.total} documents"
            )
        print(f"results: {summary.output_dir}")
        return 0

    return _guard("sweep", body, parser, argv)


def _integer(option: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        accepted = f"an integer, e.g. {option} 16"
        raise SettingError(
            option, text, accepted, message=f"{option} {text} is invalid; accepted: {accepted}"
        ) from None


def sweep_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The sweep keys given on the command line (``--strategies a,b``, ``--budgets 4,16``,
    ``--limit N``, ``--chunk_size N``), typed; their values are checked with the recipe's."""
    out: dict[str, Any] = {}
    if args.strategies is not None:
        out["strategies"] = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if args.budgets is not None:
        out["budgets"] = [
            _integer("--budgets", b.strip()) for b in args.budgets.split(",") if b.strip()
        ]
    for key in ("limit", "chunk_size"):
        value = getattr(args, key)
        if value is not None:
            out[key] = _integer(f"--{key}", value)
    return out


def report_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="tts-eval report",
        description="Accuracy@n per strategy with 95% CIs, by level/subject, tokens.",
    )
    parser.add_argument("results", help="results folder of a sweep, or a JSONL trace file")
    parser.add_argument(
        "--json", help="write the JSON report here (default: <results>/report.json for a folder)"
    )
    parser.add_argument(
        "--markdown",
        help="write the markdown report here (default: <results>/report.md for a folder)",
    )
    _estimate_args(parser)

    def body(args: argparse.Namespace) -> int:
        from tts_eval.files import write_atomic
        from tts_eval.workflow.report import to_markdown
        from tts_eval.workflow.results import write_json_atomic

        report = _report_of(args)
        folder = Path(args.results) if Path(args.results).is_dir() else None
        json_path = args.json or (folder / "report.json" if folder else None)
        md_path = args.markdown or (folder / "report.md" if folder else None)
        text = to_markdown(report)
        if json_path:
            write_json_atomic(json_path, report, option="--json")
        if md_path:
            write_atomic(md_path, text + "\n", option="--markdown")
        print(text)
        return 0

    return _guard("report", body, parser, argv)


def plot_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="tts-eval plot",
        description="PNG figures: accuracy vs budget, vs tokens, by difficulty level.",
    )
    parser.add_argument("results", help="results folder, JSONL trace file, or a report .json")
    parser.add_argument("--out", help="folder for the PNGs (default: <results>/figures)")
    parser.add_argument(
        "--ref", action="append", default=[], help='reference line "LABEL=ACCURACY%%", repeatable'
    )
    parser.add_argument("--oracle", action="store_true", help="also draw pass@n (coverage)")
    parser.add_argument(
        "--zoom", action="store_true", help="fit accuracy axes to the data instead of 0-100%%"
    )
    _estimate_args(parser)

    def body(args: argparse.Namespace) -> int:
        from tts_eval.workflow.plot import parse_ref, plot_report
        from tts_eval.workflow.report import REPORT_FORMAT

        refs = [parse_ref(r) for r in args.ref]
        source = Path(args.results)
        if source.is_file() and source.suffix == ".json":
            try:
                report = json.loads(source.read_text())
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise DataError(f"{source} is not a tts-eval report (not JSON)") from None
            if not isinstance(report, dict) or report.get("format") != REPORT_FORMAT:
                raise DataError(f"{source} is not a tts-eval report (tts-eval report --json)")
            if args.task and report.get("task") != args.task:
                raise DataError(
                    f"report {source} is for task {report.get('task')!r}, not {args.task!r}"
                )
        else:
            report = _report_of(args)
        out = (
            Path(args.out)
            if args.out
            else ((source if source.is_dir() else source.parent) / "figures")
        )
        for path in plot_report(report, out, refs, oracle=args.oracle, zoom=args.zoom):
            print(path)
        return 0

    return _guard("plot", body, parser, argv)


def fit_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="tts-eval fit-compute-optimal",
        description="Fit the strategy=compute_optimal routing table from a sweep.",
    )
    parser.add_argument("results", help="results folder of a sweep with a best_of_n run")
    parser.add_argument("--out", help="table path (default: <results>/compute_optimal_table.json)")
    parser.add_argument("--probe-n", type=int, default=4, help="probe samples per problem")
    parser.add_argument("--bins", type=int, default=5, help="difficulty bins (quantiles)")
    parser.add_argument(
        "--settings",
        metavar="DIGEST",
        help="the settings group to fit (a digest or its prefix, as `tts-eval report` lists them); "
        "needed when the folder holds runs of several search settings",
    )
    _estimate_args(parser)

    def body(args: argparse.Namespace) -> int:
        from tts_eval.workflow.estimate import EstimateSettings
        from tts_eval.workflow.fit import fit_table, run_settings_of, write_table
        from tts_eval.workflow.report import TABLE_FILE, estimate_results
        from tts_eval.workflow.results import load_results

        results = load_results(args.results, task=args.task)
        settings = EstimateSettings(max_exact=args.max_exact, draws=args.draws, seed=args.seed)
        estimates = estimate_results(results, settings=settings, group=args.settings)
        table = fit_table(
            estimates, run_settings_of(results), probe_n=args.probe_n, num_bins=args.bins
        )
        source = Path(args.results)
        out = (
            Path(args.out)
            if args.out
            else ((source if source.is_dir() else source.parent) / TABLE_FILE)
        )
        write_table(table, out)
        for entry in table["entries"]:
            print(f"bin {entry['bin']} n={entry['budget']}: {entry['strategy']}")
        print(f"table: {out} (use model_args strategy=compute_optimal,compute_optimal_table={out})")
        return 0

    return _guard("fit-compute-optimal", body, parser, argv)


def _pairs(values: Sequence[str], option: str, accepted: str) -> dict[str, str]:
    out = {}
    for text in values:
        key, sep, value = text.rpartition("=")
        if not sep or not key.strip() or not value.strip():
            raise DataError(f"{option} {text!r} is invalid; accepted: {accepted}")
        out[key.strip()] = value.strip()
    return out


def _by_result(mapping: dict[str, str], results: Sequence[str], option: str) -> dict[str, str]:
    """``mapping`` keyed by the RESULT it names (as given or the same path resolved)."""
    resolved = {str(Path(r).resolve()): r for r in results}
    out = {}
    for key, value in mapping.items():
        result = key if key in results else resolved.get(str(Path(key).resolve()))
        if result is None:
            raise DataError(
                f"{option} {key}={value}: {key} is none of the RESULTs; accepted: "
                + ", ".join(results)
            )
        out[result] = value
    return out


def compare_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="tts-eval compare",
        description="One leaderboard of systems at matched compute (accuracy, tokens, FLOPs), "
        "from sweep folders, trace files and lm-eval output folders of the same task.",
    )
    parser.add_argument(
        "results",
        nargs="+",
        metavar="RESULT",
        help="sweep folder, JSONL trace file, or lm-eval output folder (--log_samples)",
    )
    parser.add_argument(
        "--label", action="append", default=[], metavar="PATH=NAME", help="name a RESULT's systems"
    )
    parser.add_argument(
        "--params",
        action="append",
        default=[],
        metavar="MODEL=COUNT",
        help="parameter count of a model that is not on disk (e.g. Llama-3.1-8B-Instruct=8.03e9)",
    )
    parser.add_argument(
        "--policy", action="append", default=[], metavar="PATH=MODEL",
        help="policy model of a RESULT that does not name it (a trace file)",
    )  # fmt: skip
    parser.add_argument(
        "--prm", action="append", default=[], metavar="PATH=MODEL",
        help="PRM of a RESULT that does not name it (a trace file)",
    )  # fmt: skip
    parser.add_argument(
        "--baseline",
        metavar="SYSTEM[@N]",
        help="rank every system against this one at matched compute (a system label)",
    )
    parser.add_argument(
        "--out", default="comparison", help="folder for the leaderboard and figures"
    )
    parser.add_argument("--no-figures", action="store_true", help="write no PNG figures")
    parser.add_argument(
        "--zoom", action="store_true", help="fit accuracy axes to the data instead of 0-100%%"
    )
    _estimate_args(parser, table=False)  # a fitted curve is scored on its own fit: no system

    def body(args: argparse.Namespace) -> int:
        from tts_eval.files import write_atomic
        from tts_eval.params import parse_params
        from tts_eval.workflow.compare import (
            build_leaderboard,
            check_comparable,
            load_systems,
            resolve_params,
            to_html,
            to_markdown,
            unique_labels,
        )
        from tts_eval.workflow.estimate import EstimateSettings
        from tts_eval.workflow.results import write_json_atomic

        labels = _by_result(_pairs(args.label, "--label", "PATH=NAME"), args.results, "--label")
        policies = _by_result(
            _pairs(args.policy, "--policy", "PATH=MODEL"), args.results, "--policy"
        )
        prms = _by_result(_pairs(args.prm, "--prm", "PATH=MODEL"), args.results, "--prm")
        given = dict(parse_params(p) for p in args.params)
        settings = EstimateSettings(max_exact=args.max_exact, draws=args.draws, seed=args.seed)
        systems = []
        for result in args.results:
            systems += load_systems(
                result,
                label=labels.get(result),
                policy=policies.get(result),
                prm=prms.get(result),
                settings=settings,
            )
        systems = unique_labels(systems)
        task = check_comparable(systems)
        if args.task and task is not None and task != args.task:
            raise DataError(f"the results are for task {task!r}, not {args.task!r}")
        board = build_leaderboard(
            systems,
            resolve_params(systems, given),
            baseline=args.baseline,
            bootstrap_iters=args.bootstrap,
            seed=args.seed,
        )
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise DataError(f"--out {out} is a file; give a folder for the leaderboard")
        out.mkdir(parents=True, exist_ok=True)
        text = to_markdown(board)
        write_json_atomic(out / "leaderboard.json", board, option="--out")
        write_atomic(out / "leaderboard.md", text + "\n", option="--out")
        write_atomic(out / "leaderboard.html", to_html(board), option="--out")
        print(text)
        if not args.no_figures:
            from tts_eval.workflow.plot import plot_comparison

            for path in plot_comparison(board, out, zoom=args.zoom):
                print(path)
        print(f"leaderboard: {out / 'leaderboard.md'} (.json, .html)")
        return 0

    return _guard("compare", body, parser, argv)


def demo_main(argv: Sequence[str]) -> int:
    from tts_eval.workflow.demo import DemoSettings

    defaults = DemoSettings()
    parser = argparse.ArgumentParser(
        prog="tts-eval demo",
        description="Test-time scaling on this machine in minutes: SmolLM2-135M-Instruct (built "
        "from its PyPI wheel) on arith problems, majority vs PRM-weighted best-of-N, beam search "
        "and DVTS; prints the table, writes demo.json/.md/.png.",
    )
    parser.add_argument("--problems", type=int, default=defaults.problems)
    parser.add_argument("--n", type=int, default=defaults.n, help="budget")
    parser.add_argument("--backend", default=defaults.backend, help="auto, vllm or hf")
    parser.add_argument("--policy", help="policy folder (default: SmolLM2-135M-Instruct)")
    parser.add_argument(
        "--prm", help="PRM folder (default: the learn benchmark's trained PRM, else the policy)"
    )
    parser.add_argument("--prm_type", "--prm-type")
    parser.add_argument("--max-tokens", type=int, default=defaults.max_tokens)
    parser.add_argument("--iterations", type=int, default=defaults.iterations)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--out", default=defaults.out, help="output folder")
    parser.add_argument("--no-progress", action="store_true")

    def body(args: argparse.Namespace) -> int:
        from tts_eval.workflow.demo import run_demo, to_markdown

        settings = DemoSettings(
            problems=args.problems,
            n=args.n,
            backend=args.backend,
            policy=args.policy,
            prm=args.prm,
            prm_type=args.prm_type,
            max_tokens=args.max_tokens,
            iterations=args.iterations,
            seed=args.seed,
            out=args.out,
        )
        report = run_demo(settings, progress=not args.no_progress)
        print(to_markdown(report))
        print(f"figure: {Path(args.out) / 'demo.png'}")
        return 0

    return _guard("demo", body, parser, argv)
