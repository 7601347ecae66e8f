"""The researcher's workflow on top of the ``tts`` model: recipes, sweeps, reports, plots, fitting.

- ``recipe``: sweep recipes (``configs/*.yaml``: ``model_args`` + ``sweep:``), validated;
- ``plan``: which runs a sweep needs (exchangeable strategies run once at the largest budget) and
  their stable keys;
- ``sweep``: :func:`run_sweep`, strategies x budgets through ``lm_eval.evaluator.evaluate``,
  resumable, with per-document trace records appended atomically;
- ``results``: the results folder layout and :func:`load_results`;
- ``estimate``: accuracy@n per problem (subsets of exchangeable samples), bootstrap intervals;
- ``report``: :func:`build_report` / :func:`to_markdown`;
- ``plot``: :func:`plot_report`, :func:`plot_comparison` (matplotlib, PNG);
- ``compare``: :func:`load_systems`, :func:`build_leaderboard`: sweeps, trace files and lm-eval
  runs in one leaderboard at matched compute (FLOPs from ``params``: parameter counts read from
  local model files);
- ``fit``: :func:`fit_table`, the routing table of ``strategy=compute_optimal``;
- ``cli``: the ``tts-eval sweep | report | plot | fit-compute-optimal | compare`` subcommands.

What this package does not do: search, generate, score or grade (it calls the modules that do).
Nothing heavy is imported at package import time.
"""
