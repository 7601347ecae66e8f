"""``tts-eval compare``: one leaderboard of systems at matched compute, from any mix of results.

A RESULT is a sweep folder (``sweep.json``), a JSONL trace file, or an lm-eval output folder
(``results_*.json`` with the ``samples_<task>_*.jsonl`` that ``--log_samples`` writes beside it) of
any model (``--model hf``/``vllm`` chain-of-thought runs; a ``--model tts`` run's logged traces are
read as a trace file). :func:`load_systems` turns each into *systems*:

- a sweep folder or trace file gives one system per settings group and curve (strategy and
  selection; ``majority`` read off a ``best_of_n`` run is its own system, ``pass@n`` is left out),
  with a point per budget n (``tts_eval.workflow.estimate``);
- an lm-eval output gives one system per results file: one point (n = 1), each problem's
  ``exact_match`` as logged.

Each point carries per problem: accuracy in [0, 1], generated policy tokens, prompt tokens the
policy processed (not served from the prefix cache) and PRM tokens. Tokens at n < N are the run's
scaled by n/N, as in ``tts-eval report``; the prompt of one-request sampling runs (``best_of_n``,
``majority``: one prompt per problem whatever n) is charged whole. Trace costs are read with
:func:`tts_eval.traces.result_from_record`. Tokens of plain lm-eval runs are counted with the
model's tokenizer (local files only): the logged response (``resps``) and the logged prompt text
(``arguments``, the chat already rendered; every prompt token counts as processed); without a local
tokenizer they are unknown, and so is the system's compute.

:func:`build_leaderboard` (pure) adds compute: FLOPs per problem = 2 x parameters x tokens
processed, for the policy (generated + uncached prompt tokens) and the PRM (the tokens it
processed), with parameter counts from :mod:`tts_eval.params`; accuracy with a 95%
percentile-bootstrap interval over problems; and, with a baseline, the matched comparison:

- *within the baseline's compute*: the best accuracy a system reaches at FLOPs per problem <= the
  baseline's, and its difference to the baseline on the problems both answered (paired bootstrap
  95% interval; two-sided p-value of a paired sign-flip test, exact up to 16 differing problems,
  the exact McNemar test for 0/1 accuracies; problems only one of them answered are left out and
  counted);
- *compute to match*: the FLOPs at which the system's curve (points ordered by FLOPs) first reaches
  the baseline's accuracy, interpolated linearly in log FLOPs between the two points around the
  crossing; ``extrapolated`` past its last two points when it never gets there (and still rises);
  ``at most`` its cheapest point when that already matches; ``not reached`` otherwise.

Results of different tasks, two systems with no problem in common, or a problem with different
gold answers in two systems are refused with one line. Systems on overlapping problem sets (e.g. one
run with ``--limit``) are compared: each row says on how many problems it stands, each system how
many it covers (``problems``; a note, and the figures' legends, when fewer than the leaderboard
holds), and paired differences use the shared problems only.

:func:`to_markdown` / :func:`to_html` render the leaderboard; figures are drawn by
:func:`tts_eval.workflow.plot.plot_comparison`.

The package is split by job: ``load`` (RESULTs as systems, the comparability checks, parameter
counts), ``stats`` (the leaderboard and its statistics, pure) and ``render`` (markdown, HTML);
each dependency points from ``stats`` to ``load`` only. The names below are theirs.

What this package does not do: run models, load weights, or draw figures.
"""

from tts_eval.workflow.compare.load import (
    ORACLE_CURVES,
    Problem,
    System,
    SystemPoint,
    check_comparable,
    lm_eval_systems,
    load_systems,
    models_of,
    resolve_params,
    trace_systems,
    unique_labels,
    uses_prm,
)
from tts_eval.workflow.compare.render import to_html, to_markdown
from tts_eval.workflow.compare.stats import (
    EXACT_SIGN_FLIPS,
    FLOPS_METHOD,
    LEADERBOARD_FORMAT,
    LEADERBOARD_VERSION,
    build_leaderboard,
    coverage_note,
    flops_to_match,
    paired_bootstrap,
    sign_flip_p,
)

__all__ = [
    "EXACT_SIGN_FLIPS",
    "FLOPS_METHOD",
    "LEADERBOARD_FORMAT",
    "LEADERBOARD_VERSION",
    "ORACLE_CURVES",
    "Problem",
    "System",
    "SystemPoint",
    "build_leaderboard",
    "check_comparable",
    "coverage_note",
    "flops_to_match",
    "lm_eval_systems",
    "load_systems",
    "models_of",
    "paired_bootstrap",
    "resolve_params",
    "sign_flip_p",
    "to_html",
    "to_markdown",
    "trace_systems",
    "unique_labels",
    "uses_prm",
]
