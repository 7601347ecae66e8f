"""``tts-eval compare``: systems from sweep folders, trace files and lm-eval output folders in one
leaderboard at matched compute; checked against numbers computed by hand in this file (accuracies
from the hand-computed fixture of test_workflow.py, tokens, FLOPs, matched-compute interpolation,
paired bootstrap), parameter counts from hand-written safetensors headers and config.json, the
one-line errors of bad inputs, the figures (also the fixed ``tts-eval plot`` ones), and one end to
end run on tiny models: a two-strategy sweep and a ``--model hf`` CoT run in one table and figure.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest
from fakes import FakeAnswerSpec
from test_workflow import DOC_A, DOC_B, fixture_runs, is_correct, write_results

from tts_eval.cli import main as cli_main
from tts_eval.params import (
    ParamCount,
    count_safetensors,
    estimate_from_config,
    parameter_count,
    parse_params,
)
from tts_eval.workflow.compare import (
    build_leaderboard,
    flops_to_match,
    load_systems,
    paired_bootstrap,
    resolve_params,
    to_html,
    to_markdown,
    unique_labels,
)

SPEC = FakeAnswerSpec()
GRADING = {"spec": SPEC, "is_correct": is_correct}
P_POLICY, P_PRM = 1e9, 8e9
STAMP = "2026-01-01T00-00-00.000000"


def cost(record: dict, prompt: int, cached: int) -> dict:
    return {
        **record,
        "cost": {**record["cost"], "prompt_tokens": prompt, "cached_prompt_tokens": cached},
    }


def sweep_folder(folder: Path) -> Path:
    """test_workflow's hand-computed best_of_n and dvts runs, with prompt tokens: best_of_n
    100 (40 cached) and 80 (none cached) for documents A and B, dvts 200 (100 cached) each."""
    runs = fixture_runs()
    bon, dvts = runs["best_of_n-n4-x"], runs["dvts-n4-x"]
    runs = {
        "best_of_n-n4-x": [cost(bon[0], 100, 40), cost(bon[1], 80, 0)],
        "dvts-n4-x": [cost(r, 200, 100) for r in dvts],
    }
    return write_results(folder, runs, n=4)


def lm_eval_folder(
    folder: Path,
    model: str,
    *,
    task: str = "math500",
    docs=(DOC_A, DOC_B),
    correct=(1.0, 0.0),
    responses=("The answer is \\boxed{3}.", "So \\boxed{2}."),
    prompts=("What is 1+2?", "Half of one?"),
    samples: bool = True,
    recorded: float | None = None,
) -> Path:
    """What lm-eval 0.4.13 writes with --output_path --log_samples (the fields compare reads)."""
    sub = folder / "model__name"
    sub.mkdir(parents=True)
    config = {"model": "hf", "model_args": {"pretrained": model, "dtype": "float32"}}
    if recorded:
        config["model_num_parameters"] = recorded
    results = {
        "results": {task: {"exact_match,none": sum(correct) / len(correct)}},
        "config": config,
        "model_name": model,
    }
    (sub / f"results_{STAMP}.json").write_text(json.dumps(results))
    if samples:
        rows = [
            {
                "doc_id": i,
                "doc": {"problem": p, **doc},
                "target": doc["answer"],
                "arguments": {"gen_args_0": {"arg_0": p, "arg_1": {"max_gen_toks": 16}}},
                "resps": [[r]],
                "filtered_resps": [r],
                "exact_match": c,
            }
            for i, (doc, c, r, p) in enumerate(zip(docs, correct, responses, prompts, strict=True))
        ]
        (sub / f"samples_{task}_{STAMP}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows)
        )
    return folder


def by_label(systems):
    return {s.label: s for s in systems}


def rows_of(board, label):
    return {r["n"]: r for r in board["rows"] if r["system"] == label}


# --------------------------------------------------------------------------- systems and FLOPs


def test_sweep_systems_tokens_and_flops_by_hand(tmp_path):
    systems = load_systems(sweep_folder(tmp_path / "sweep"), **GRADING)
    labels = [s.label for s in systems]
    assert labels == [
        "policy: majority",
        "policy + prm: best_of_n (weighted)",
        "policy + prm: dvts (weighted)",
    ]  # one system per strategy/selection; pass@n (coverage) is no system
    params = {
        "org/policy": ParamCount("org/policy", P_POLICY, "given"),
        "org/prm": ParamCount("org/prm", P_PRM, "given"),
    }
    board = build_leaderboard(systems, params, bootstrap_iters=200)
    # (accuracy, generated, uncached prompt, PRM tokens) per problem, by hand: generated tokens are
    # the N=4 run's (400 + 200) / 2 = 300 scaled by n/4; the best_of_n run's prompt (one request
    # per problem) is charged whole at every n: (100 - 40 + 80 - 0) / 2 = 70; dvts's prompt
    # (200 - 100 = 100) scales with n/4 like its other tokens; majority uses no PRM.
    expected = {
        "policy: majority": {1: (0.375, 75, 70, 0), 2: (0.5, 150, 70, 0), 4: (0.5, 300, 70, 0)},
        "policy + prm: best_of_n (weighted)": {
            1: (0.375, 75, 70, 150),
            2: (0.5, 150, 70, 300),
            4: (0.5, 300, 70, 600),
        },
        "policy + prm: dvts (weighted)": {2: (0.5, 250, 50, 500), 4: (0.0, 500, 100, 1000)},
    }
    for label, points in expected.items():
        rows = rows_of(board, label)
        assert sorted(rows) == sorted(points)
        for n, (acc, gen, prompt, prm) in points.items():
            row = rows[n]
            assert row["accuracy"] == pytest.approx(acc), (label, n)
            assert (row["policy_tokens"], row["prompt_tokens"], row["prm_tokens"]) == (
                pytest.approx(gen),
                pytest.approx(prompt),
                pytest.approx(prm),
            ), (label, n)
            flops = 2 * P_POLICY * (gen + prompt) + 2 * P_PRM * prm
            assert row["flops"] == pytest.approx(flops), (label, n)
            assert row["ci_low"] - 1e-12 <= row["accuracy"] <= row["ci_high"] + 1e-12
    assert rows_of(board, "policy + prm: best_of_n (weighted)")[2]["flops"] == pytest.approx(
        5.24e12
    )
    # by level at every budget (test_workflow's EXPECTED): best_of_n n=2 is 5/6 and 1/6
    levels = rows_of(board, "policy + prm: best_of_n (weighted)")[2]["by_level"]
    assert (levels["1"]["accuracy"], levels["2"]["accuracy"]) == (
        pytest.approx(5 / 6),
        pytest.approx(1 / 6),
    )
    assert {m["model"]: m["method"] for m in board["models"]} == {
        "org/policy": "given",
        "org/prm": "given",
    }
    text = to_markdown(board)
    assert "| policy + prm: best_of_n (weighted) | 2 | 50.0 | [" in text
    assert "| 150 | 70 | 300 | 5.24e+12 |" in text
    assert "2 x parameters x tokens processed" in text
    page = to_html(board)
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert "policy + prm: dvts (weighted)" in page


def test_lm_eval_cot_run_is_one_system_with_tokens_counted_by_its_tokenizer(tmp_path, tiny_llama):
    from transformers import AutoTokenizer

    folder = lm_eval_folder(tmp_path / "cot", str(tiny_llama))
    (system,) = load_systems(folder, **GRADING)
    assert system.label == f"{tiny_llama.name}: CoT (hf)" and system.task == "math500"
    assert system.prm is None and [p.n for p in system.points] == [1]
    tok = AutoTokenizer.from_pretrained(str(tiny_llama))

    def count(text):
        return len(tok(text, add_special_tokens=False)["input_ids"])

    gen = (count("The answer is \\boxed{3}.") + count("So \\boxed{2}.")) / 2
    prompt = (count("What is 1+2?") + count("Half of one?")) / 2
    params = resolve_params([system])
    assert params[str(tiny_llama)].method == "safetensors headers"
    assert params[str(tiny_llama)].params == 460160  # LlamaConfig of tiny_models.build_llama
    board = build_leaderboard([system], params, bootstrap_iters=100)
    (row,) = board["rows"]
    assert row["accuracy"] == 0.5 and row["problems"] == 2  # exact_match as lm-eval logged it
    assert (row["policy_tokens"], row["prompt_tokens"], row["prm_tokens"]) == (gen, prompt, 0)
    assert row["flops"] == pytest.approx(2 * 460160 * (gen + prompt))
    assert "lm-eval logs no prefix-cache hits" in to_markdown(board)  # said, not silently assumed


def test_tokens_without_a_local_tokenizer_are_unknown_never_guessed(tmp_path):
    folder = lm_eval_folder(tmp_path / "cot", "org/not-on-disk", recorded=3e9)
    (system,) = load_systems(folder)
    params = resolve_params([system])
    assert params["org/not-on-disk"] == ParamCount(
        "org/not-on-disk", 3e9, "recorded by lm-eval (model_num_parameters)"
    )
    board = build_leaderboard([system], params, bootstrap_iters=10)
    (row,) = board["rows"]
    assert row["policy_tokens"] is None and row["flops"] is None and row["accuracy"] == 0.5
    text = to_markdown(board)
    assert "| unknown | unknown | 0 | unknown |" in text
    assert "tokens unknown: no local tokenizer of org/not-on-disk" in text
    with pytest.raises(ValueError, match="has unknown compute"):
        build_leaderboard([system], params, baseline=system.label)
    # against a known baseline its row says compute unknown, not "none within budget"
    systems = load_systems(sweep_folder(tmp_path / "sweep"), **GRADING) + [system]
    params = resolve_params(systems, {"policy": P_POLICY, "prm": P_PRM})
    board = build_leaderboard(systems, params, baseline="policy: majority", bootstrap_iters=10)
    (matched,) = [m for m in board["matched"] if m["system"] == system.label]
    assert matched["match"] == "compute unknown" and matched["flops_to_match"] is None
    text = to_markdown(board)
    assert f"| {system.label} | - | compute unknown |" in text


def test_every_strategy_compute_optimal_unknown_ones_and_ray_records(tmp_path):
    """compute_optimal records (routed settings + requested_settings), a strategy this registry
    does not know (e.g. particle filtering from a newer tts-eval) and records of Ray workers are
    systems like any other: one point at their budget, PRM charged."""
    from test_workflow import cand, record

    def traced(strategy, doc_id, doc, answer, **settings):
        r = record(f"{strategy}-n4", strategy, 4, doc_id, doc, [cand(answer, 0.5)], 0, 100)
        r.pop("run_key")
        r["settings"] = {**r["settings"], **settings, "worker": {"rank": doc_id, "node": "n0"}}
        return r

    routed = {"strategy": "compute_optimal", "n": 4, "beam_width": 2, "selection": "naive"}
    records = [
        traced("compute_optimal", 0, DOC_A, "3", requested_settings=routed, routed_strategy="dvts"),
        traced("compute_optimal", 1, DOC_B, "7", requested_settings=routed, routed_strategy="bon"),
        traced("particle_filtering", 0, DOC_A, "3"),
        traced("particle_filtering", 1, DOC_B, "1/2"),
    ]
    path = tmp_path / "traces.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    systems = load_systems(path, policy="org/policy", prm="org/prm", **GRADING)
    # two settings groups (the runs' selections differ), labelled as tts-eval report does
    assert [s.label for s in systems] == [
        'policy + prm: compute_optimal (naive) [selection="naive"]',
        'policy + prm: particle_filtering (weighted) [selection="weighted"]',
    ]
    params = resolve_params(systems, {"policy": P_POLICY, "prm": P_PRM})
    board = build_leaderboard(systems, params, bootstrap_iters=10)
    assert [(r["n"], r["accuracy"]) for r in board["rows"]] == [(4, 0.5), (4, 1.0)]
    for row in board["rows"]:  # 100 policy and 200 PRM tokens per problem
        assert row["flops"] == pytest.approx(2 * P_POLICY * 100 + 2 * P_PRM * 200)


def test_particle_runs_named_by_their_own_settings(tmp_path):
    """particle_gibbs with pg_iterations=4 (not its default) names its curve after it: one
    system, PRM-guided, labelled with settings and selection in one parenthesis."""
    from test_workflow import cand, record

    records = []
    for doc_id, doc, answer in ((0, DOC_A, "3"), (1, DOC_B, "7")):
        r = record("pg-n4", "particle_gibbs", 4, doc_id, doc, [cand(answer, 0.5)], 0, 100)
        r.pop("run_key")
        r["settings"] = {**r["settings"], "pg_iterations": 4}
        records.append(r)
    path = tmp_path / "traces.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    (system,) = load_systems(path, policy="org/policy", prm="org/prm", **GRADING)
    assert system.label == "policy + prm: particle_gibbs (pg_iterations=4, weighted)"
    assert system.prm == "org/prm" and system.selection == "weighted"
    params = resolve_params([system], {"policy": P_POLICY, "prm": P_PRM})
    (row,) = build_leaderboard([system], params, bootstrap_iters=10)["rows"]
    assert (row["n"], row["accuracy"]) == (4, 0.5)
    assert row["flops"] == pytest.approx(2 * P_POLICY * 100 + 2 * P_PRM * 200)


def test_a_budget_no_problem_can_serve_is_no_point(tmp_path):
    """dvts n=8, beam width 4, whose record holds one subtree instead of two: n=4 cannot be read
    off it (no problem has a subtree to spare). That budget is left out (as tts-eval report
    does); before, its empty point divided by zero in the leaderboard."""
    from test_workflow import cand, record

    r = record("dvts-n8-x", "dvts", 8, 0, DOC_A, [cand("3", 0.9)] * 4, 0, 100, width=4)
    path = tmp_path / "traces.jsonl"
    path.write_text(json.dumps(r) + "\n")
    (system,) = load_systems(path, policy="org/policy", prm="org/prm", **GRADING)
    assert [p.n for p in system.points] == [8]
    params = resolve_params([system], {"policy": P_POLICY, "prm": P_PRM})
    (row,) = build_leaderboard([system], params, bootstrap_iters=10)["rows"]
    assert (row["n"], row["accuracy"]) == (8, 1.0)


def test_a_tts_run_logged_by_lm_eval_reads_as_its_traces(tmp_path):
    sub = tmp_path / "tts" / "org__policy"
    sub.mkdir(parents=True)
    config = {"model": "tts", "model_args": "pretrained=org/policy,prm=org/prm,strategy=best_of_n"}
    (sub / f"results_{STAMP}.json").write_text(
        json.dumps({"results": {"math500": {}}, "config": config})
    )
    rows = []
    for r in fixture_runs()["best_of_n-n4-x"]:
        trace = {k: v for k, v in r.items() if k not in ("doc", "task", "run_key", "doc_id")}
        rows.append({"doc_id": r["doc_id"], "doc": r["doc"], "tts_trace": trace, "exact_match": 0})
    (sub / f"samples_math500_{STAMP}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    systems = load_systems(tmp_path / "tts", **GRADING)
    assert [s.label for s in systems] == ["policy: majority", "policy + prm: best_of_n (weighted)"]
    assert {s.kind for s in systems} == {"lm-eval tts"}
    params = resolve_params(systems, {"policy": P_POLICY, "prm": P_PRM})
    board = build_leaderboard(systems, params, bootstrap_iters=10)
    bon = rows_of(board, "policy + prm: best_of_n (weighted)")
    assert {n: r["accuracy"] for n, r in bon.items()} == {1: 0.375, 2: 0.5, 4: 0.5}


# --------------------------------------------------------------------------- matched compute


@pytest.mark.parametrize(
    ("curve", "target", "expected"),
    [
        ([(1e10, 0.2), (1e12, 0.6)], 0.4, (1e11, "interpolated")),  # halfway in log FLOPs
        ([(1e12, 0.6), (1e10, 0.2), (1e14, 0.7)], 0.6, (1e12, "interpolated")),
        ([(1e10, 0.2), (1e11, 0.3)], 0.5, (1e13, "extrapolated")),  # +0.1 per decade
        ([(1e10, 0.5), (1e11, 0.7)], 0.4, (1e10, "at most")),
        ([(1e10, 0.3), (1e11, 0.2)], 0.5, (None, "not reached")),
        ([(1e10, 0.3)], 0.5, (None, "not reached")),
    ],
)
def test_flops_to_match_interpolates_in_log_flops(curve, target, expected):
    value, how = flops_to_match(curve, target)
    assert how == expected[1]
    assert value == (None if expected[0] is None else pytest.approx(expected[0]))


def test_paired_bootstrap_known_answers():
    ones = {str(i): 1.0 for i in range(50)}
    zeros = {str(i): 0.0 for i in range(50)}
    diff = paired_bootstrap(ones, zeros, iters=999)
    assert (diff["mean"], diff["ci_low"], diff["ci_high"]) == (1.0, 1.0, 1.0)
    assert diff["p_value"] == pytest.approx(1 / 1000)  # no resample is as extreme under H0
    same = paired_bootstrap(ones, ones, iters=999)
    assert (same["mean"], same["ci_low"], same["ci_high"], same["p_value"]) == (0, 0, 0, 1.0)
    # +1 on 10 problems, -1 on 5, 0 on 85: mean 0.05, sd 0.3841 -> se 0.03841. Normal theory:
    # 95% interval 0.05 +- 0.0753. The p-value flips the signs of the 15 differing problems (all
    # 2**15 flips): the exact McNemar test, P(|2B - 15| >= 5) for B ~ Bin(15, 1/2)
    # = 2 x (1 + 15 + 105 + 455 + 1365 + 3003) / 2**15 = 9888 / 32768
    a = {str(i): 1.0 if i < 10 else 0.0 for i in range(100)}
    b = {str(i): 1.0 if 10 <= i < 15 else 0.0 for i in range(100)}
    a["extra"] = 1.0  # answered by one system only: left out, counted
    diff = paired_bootstrap(a, b, iters=20000, seed=3)
    assert diff["mean"] == pytest.approx(0.05)
    assert (diff["problems"], diff["only_first"], diff["only_second"]) == (100, 1, 0)
    assert diff["ci_low"] == pytest.approx(0.05 - 0.0753, abs=0.012)
    assert diff["ci_high"] == pytest.approx(0.05 + 0.0753, abs=0.012)
    assert diff["p_value"] == 9888 / 32768
    # same counts on 300 problems (30 and 15 differ: random flips): normal approximation of the
    # McNemar test, P(|Z| >= (15 - 1) / sqrt(45)) = 0.0369
    a = {str(i): 1.0 if i < 30 else 0.0 for i in range(300)}
    b = {str(i): 1.0 if 30 <= i < 45 else 0.0 for i in range(300)}
    assert paired_bootstrap(a, b, iters=20000)["p_value"] == pytest.approx(0.0369, abs=0.01)


def test_two_problems_are_never_significant():
    """Two problems that both favour one system: all four sign flips are equally likely under no
    difference and two are as extreme, so p = 0.5 (the bootstrap distribution, which never crosses
    0 here, would say 1 / (1 + iters))."""
    diff = paired_bootstrap({"a": 0.5, "b": 1 / 6}, {"a": 0.0, "b": 0.0}, iters=200)
    assert diff["mean"] == pytest.approx(1 / 3) and diff["ci_low"] > 0
    assert diff["p_value"] == 0.5


def test_matched_compute_against_a_cot_baseline_by_hand(tmp_path, tiny_llama):
    systems = load_systems(sweep_folder(tmp_path / "sweep"), **GRADING)
    cot = load_systems(lm_eval_folder(tmp_path / "cot", str(tiny_llama)), label="big CoT")
    systems = unique_labels(systems + cot)
    plain = resolve_params(systems, {"org/policy": P_POLICY, "org/prm": P_PRM})
    (row,) = build_leaderboard(cot, plain, bootstrap_iters=0)["rows"]
    tokens = row["policy_tokens"] + row["prompt_tokens"]
    # give the CoT model the parameter count that puts its FLOPs at exactly 3e12 per problem
    params = resolve_params(
        systems, {"org/policy": P_POLICY, "org/prm": P_PRM, str(tiny_llama): 3e12 / (2 * tokens)}
    )
    board = build_leaderboard(systems, params, baseline="big CoT", bootstrap_iters=4000)
    assert board["baseline"]["accuracy"] == 0.5
    assert board["baseline"]["flops"] == pytest.approx(3e12)
    matched = {m["system"]: m for m in board["matched"]}
    assert set(matched) == {s.label for s in systems} - {"big CoT"}
    # majority: every budget is within 3e12 (2.9e11, 4.4e11, 7.4e11); 50% first at n=2 (the
    # cheaper of the tied best); per problem A 0.5, B 0.5 vs the baseline's 1, 0: mean 0,
    # resampled means in {-0.5, 0, 0.5}; reaching 50% takes exactly its n=2 point
    major = matched["policy: majority"]
    assert major["within_budget"] == {"n": 2, "accuracy": 0.5, "flops": pytest.approx(4.4e11)}
    diff = major["difference"]
    assert (diff["mean"], diff["ci_low"], diff["ci_high"], diff["p_value"]) == (0, -0.5, 0.5, 1)
    assert diff["problems"] == 2 and diff["only_first"] == diff["only_second"] == 0
    assert (major["flops_to_match"], major["match"]) == (pytest.approx(4.4e11), "interpolated")
    assert major["ratio"] == pytest.approx(4.4e11 / 3e12)
    # best_of_n: only n=1 (2.69e12) fits; A 0.5, B 0.25 vs 1, 0: mean -0.125; 50% at n=2
    bon = matched["policy + prm: best_of_n (weighted)"]
    assert bon["within_budget"] == {"n": 1, "accuracy": 0.375, "flops": pytest.approx(2.69e12)}
    assert bon["difference"]["mean"] == pytest.approx(-0.125)
    assert bon["difference"]["ci_low"] == pytest.approx(-0.5)
    assert bon["difference"]["ci_high"] == pytest.approx(0.25)
    assert (bon["flops_to_match"], bon["match"]) == (pytest.approx(5.24e12), "interpolated")
    # dvts: its cheapest point (8.6e12) is over budget and already at 50%
    dvts = matched["policy + prm: dvts (weighted)"]
    assert dvts["within_budget"] is None and dvts["difference"] is None
    assert (dvts["flops_to_match"], dvts["match"]) == (pytest.approx(8.6e12), "at most")
    text = to_markdown(board)
    assert "## Matched compute against big CoT (n=1)" in text
    assert "| policy: majority | 2 | 50.0 | +0.0 | [-50.0, +50.0] | 1 | 2 (0) | 4.4e+11 |" in text
    assert "| policy + prm: dvts (weighted) | - | none within budget |" in text


def test_overlapping_problem_sets_pair_on_shared_problems_and_count_the_rest(tmp_path, tiny_llama):
    doc_c = {"unique_id": "c", "answer": "9", "level": 3, "subject": "Algebra"}
    cot = lm_eval_folder(tmp_path / "cot", str(tiny_llama), docs=(DOC_A, doc_c), correct=(0.0, 1.0))
    systems = unique_labels(
        load_systems(sweep_folder(tmp_path / "sweep"), **GRADING) + load_systems(cot, label="CoT")
    )
    params = resolve_params(systems, {"policy": P_POLICY, "prm": P_PRM, str(tiny_llama): 1e12})
    board = build_leaderboard(systems, params, baseline="CoT", bootstrap_iters=100)
    assert board["problems"] == 3 and rows_of(board, "CoT")[1]["problems"] == 2
    major = {m["system"]: m for m in board["matched"]}["policy: majority"]
    diff = major["difference"]
    # only document A is shared: majority's best n within budget (n=2: A 0.5) minus CoT's 0.0
    assert (diff["problems"], diff["only_first"], diff["only_second"]) == (1, 1, 1)
    assert diff["mean"] == pytest.approx(0.5)
    assert "| 1 (2) |" in to_markdown(board)


def test_two_lm_eval_runs_in_one_folder_get_distinct_labels(tmp_path):
    """A re-run of lm-eval into the same --output_path: two results files of one model. Their
    labels (and --label, a prefix for both) were equal and the comparison had no way out."""
    folder = lm_eval_folder(tmp_path / "cot", "org/big")
    sub = folder / "model__name"
    later = "2026-01-02T00-00-00.000000"
    for name in (f"results_{STAMP}.json", f"samples_math500_{STAMP}.jsonl"):
        (sub / name.replace(STAMP, later)).write_text((sub / name).read_text())
    for label, first in ((None, "big: CoT (hf)"), ("mine", "mine: CoT (hf)")):
        systems = unique_labels(load_systems(folder, label=label))
        assert [s.label for s in systems] == [
            f"{first} [samples_math500_{STAMP}]",
            f"{first} [samples_math500_{later}]",
        ]


def test_baseline_at_a_budget_and_unknown_baselines(tmp_path):
    systems = load_systems(sweep_folder(tmp_path / "sweep"), **GRADING)
    params = resolve_params(systems, {"policy": P_POLICY, "prm": P_PRM})  # short names work
    board = build_leaderboard(systems, params, baseline="policy: majority@2", bootstrap_iters=10)
    assert (board["baseline"]["n"], board["baseline"]["flops"]) == (2, pytest.approx(4.4e11))
    with pytest.raises(ValueError, match=r"--baseline 'nope' names no system; accepted: policy"):
        build_leaderboard(systems, params, baseline="nope")
    with pytest.raises(ValueError, match="has no budget n=8"):
        build_leaderboard(systems, params, baseline="policy: majority@8")


# --------------------------------------------------------------------------- parameter counts


def write_safetensors(path: Path, shapes: dict[str, list[int]]) -> None:
    header = {
        name: {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}
        for name, shape in shapes.items()
    }
    header["__metadata__"] = {"format": "pt"}
    data = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(data)) + data)


def test_parameter_counts_from_headers_config_and_overrides(tmp_path):
    single = tmp_path / "single"
    single.mkdir()
    write_safetensors(single / "model.safetensors", {"a": [3, 4], "b": [5]})
    write_safetensors(single / "consolidated.safetensors", {"a": [1000]})  # not the model's file
    assert count_safetensors(single) == 17
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    write_safetensors(sharded / "model-1.safetensors", {"a": [2, 3]})
    write_safetensors(sharded / "model-2.safetensors", {"b": [7], "c": [1, 1, 1]})
    (sharded / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}})
    )
    assert parameter_count(str(sharded)) == ParamCount(str(sharded), 14, "safetensors headers")
    config = {
        "vocab_size": 10,
        "hidden_size": 4,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 2,
        "intermediate_size": 8,
    }
    # per layer: q, o 4x4 (2 heads of 2) + k, v 4x2 = 48, MLP 3 x 4 x 8 = 96, 2 norms of 4 -> 152;
    # embeddings and untied head 2 x 10 x 4 = 80; final norm 4: 80 + 2 x 152 + 4 = 388
    assert estimate_from_config(config) == 388
    assert estimate_from_config({**config, "tie_word_embeddings": True}) == 348
    only_config = tmp_path / "only-config"
    only_config.mkdir()
    (only_config / "config.json").write_text(json.dumps(config))
    found = parameter_count(str(only_config))
    assert (found.params, found.method) == (388, "estimated from config.json")
    assert parameter_count(str(only_config), recorded=5e8).params == 5e8  # exact beats estimate
    assert parameter_count(str(single), {"single": 2e9}).method == "given with --params"
    assert parameter_count("org/nowhere") is None
    assert parse_params("Llama-3.1-8B-Instruct=8.03e9") == ("Llama-3.1-8B-Instruct", 8.03e9)
    for bad in ("8e9", "x=", "x=abc", "x=-1", "x=nan"):
        with pytest.raises(ValueError, match="--params"):
            parse_params(bad)


# --------------------------------------------------------------------------- bad inputs


def _one_line_error(argv, capsys) -> str:
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and err.startswith("tts-eval compare: error:")
    return err


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    sweep = str(sweep_folder(tmp_path / "sweep"))
    out = ["--out", str(tmp_path / "cmp"), "--no-figures", "--bootstrap", "10"]
    params = ["--params", "policy=1e9", "--params", "prm=8e9"]
    gsm = lm_eval_folder(tmp_path / "gsm", "org/big", task="gsm8k")
    err = _one_line_error(
        ["compare", sweep, str(gsm), *params, "--params", "big=8e9", *out], capsys
    )
    assert "cannot compare results of different tasks" in err and "(gsm8k)" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    assert "unknown folder layout" in _one_line_error(["compare", str(empty), *out], capsys)
    nosamples = lm_eval_folder(tmp_path / "nosamples", "org/big", samples=False)
    err = _one_line_error(["compare", str(nosamples), *out], capsys)
    assert "no logged samples for task math500" in err and "--log_samples" in err
    err = _one_line_error(["compare", sweep, *out], capsys)
    assert "no parameter count for model org/policy" in err and "--params policy=COUNT" in err
    other = lm_eval_folder(
        tmp_path / "other",
        "org/big",
        docs=({**DOC_A, "unique_id": "z"}, {**DOC_B, "unique_id": "y"}),
    )
    err = _one_line_error(["compare", sweep, str(other), *params, *out], capsys)
    assert "share no problem" in err
    wrong_gold = lm_eval_folder(
        tmp_path / "gold", "org/big", docs=({**DOC_A, "answer": "4"}, DOC_B)
    )
    err = _one_line_error(["compare", sweep, str(wrong_gold), *params, *out], capsys)
    assert "different problem sets: problem a has gold answer" in err
    err = _one_line_error(["compare", sweep, *params, "--params", "Policy-1B=1e9", *out], capsys)
    assert "--params Policy-1B=... names no model of these results; accepted: policy, prm" in err
    taken = tmp_path / "taken.md"
    taken.write_text("x")
    argv = ["compare", sweep, *params, "--out", str(taken), "--no-figures", "--bootstrap", "10"]
    assert f"--out {taken} is a file" in _one_line_error(argv, capsys)
    err = _one_line_error(["compare", sweep, "--params", "policy", *out], capsys)
    assert "--params 'policy' is invalid" in err
    err = _one_line_error(["compare", sweep, "--label", "elsewhere=X", *params, *out], capsys)
    assert "elsewhere is none of the RESULTs" in err
    err = _one_line_error(["compare", sweep, *params, "--baseline", "big", *out], capsys)
    assert "--baseline 'big' names no system" in err
    broken = lm_eval_folder(tmp_path / "broken", "org/big")
    (samples,) = broken.rglob("samples_*.jsonl")
    good = samples.read_text()
    for line, why in (
        ('{"doc_id": 0, "doc": "x", "exact_match": 1}', "line 1 is not an lm-eval logged sample"),
        (
            '{"doc_id": 0, "doc": {"answer": "1"}, "exact_match": "yes"}',
            "line 1 has exact_match 'yes'",
        ),
    ):
        samples.write_text(line + "\n")
        err = _one_line_error(["compare", str(broken), "--params", "big=1e9", *out], capsys)
        assert f"{samples}: {why}" in err
    samples.write_text(good)
    png = tmp_path / "figure.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00")
    assert f"{png} is not a JSONL trace file" in _one_line_error(
        ["compare", str(png), *out], capsys
    )
    samples_file = next((tmp_path / "other").rglob("samples_*.jsonl"))
    err = _one_line_error(["compare", str(samples_file), *out], capsys)
    assert "is an lm-eval samples file; give its folder" in err
    assert "no such folder or file" in _one_line_error(
        ["compare", str(tmp_path / "x"), *out], capsys
    )


def test_trace_file_needs_its_models_named(tmp_path, capsys):
    path = tmp_path / "traces.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in fixture_runs()["beam_search-n2-x"]))
    out = ["--out", str(tmp_path / "cmp"), "--no-figures", "--bootstrap", "10"]
    err = _one_line_error(["compare", str(path), *out], capsys)
    assert "does not name its policy model; give --policy" in err
    # a PRM-guided run whose PRM is not named: refused, not charged 0 PRM FLOPs
    argv = ["compare", str(path), "--policy", f"{path}=org/policy", "--params", "policy=1e9"]
    err = _one_line_error([*argv, *out], capsys)
    assert f"scored with a PRM but {path} does not name it; give --prm {path}=MODEL" in err
    named = ["--policy", f"{path}=org/policy", "--prm", f"{path}=org/prm"]
    argv = ["compare", str(path), *named, "--params", "policy=1e9", "--params", "prm=8e9"]
    assert cli_main([*argv, "--label", f"{path}=mine", *out]) == 0
    board = json.loads((tmp_path / "cmp" / "leaderboard.json").read_text())
    (system,) = board["systems"]
    assert system["label"] == "mine" and system["prm"] == "org/prm"
    # beam search n=2 on the fixture: 1000 policy + 2000 PRM tokens per problem
    assert board["rows"][0]["flops"] == pytest.approx(2 * 1e9 * 1000 + 2 * 8e9 * 2000)


def _edit_results(folder: Path, edit) -> None:
    (path,) = folder.rglob("results_*.json")
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_lm_eval_run_naming_no_model_takes_policy_from_the_command_line(tmp_path, capsys):
    """The error names the RESULT as given (not lm-eval's model subfolder), and --policy on it
    then works: before, --policy was ignored for lm-eval folders and the hint led nowhere."""
    cot = lm_eval_folder(tmp_path / "cot", "org/big", recorded=None)

    def anonymous(data):
        data["config"]["model_args"] = {"dtype": "float32"}
        data.pop("model_name")

    _edit_results(cot, anonymous)
    out = ["--out", str(tmp_path / "cmp"), "--no-figures", "--bootstrap", "10"]
    err = _one_line_error(["compare", str(cot), *out], capsys)
    assert f"{cot} does not name its policy model; give --policy {cot}=MODEL" in err
    argv = ["compare", str(cot), "--policy", f"{cot}=org/big", "--params", "big=7e9", *out]
    assert cli_main(argv) == 0
    board = json.loads((tmp_path / "cmp" / "leaderboard.json").read_text())
    assert board["systems"][0]["policy"] == "org/big"
    assert board["models"] == [
        {"model": "org/big", "short": "big", "params": 7e9, "method": "given with --params"}
    ]


def test_incomplete_samples_and_a_prm_without_parameter_count_are_one_line_errors(tmp_path, capsys):
    cot = lm_eval_folder(tmp_path / "cot", "org/big")
    _edit_results(cot, lambda d: d.update({"n-samples": {"math500": {"effective": 3}}}))
    out = ["--out", str(tmp_path / "cmp"), "--no-figures", "--bootstrap", "10"]
    err = _one_line_error(["compare", str(cot), "--params", "big=7e9", *out], capsys)
    assert "logs 2 problems but lm-eval scored 3" in err
    # build_leaderboard on its own: a PRM with no count is refused, not charged 0 FLOPs
    systems = load_systems(sweep_folder(tmp_path / "sweep"), **GRADING)
    only_policy = {"org/policy": ParamCount("org/policy", P_POLICY, "given")}
    with pytest.raises(ValueError, match=r"no parameter count for model org/prm of policy \+ prm"):
        build_leaderboard(systems, only_policy, bootstrap_iters=10)


# --------------------------------------------------------------------------- figures


def _series(ax):
    """(colour, marker, line style, x data) of each error-bar series of an axes."""
    out = []
    for container in ax.containers:
        line = container.lines[0]
        if line is not None:
            out.append(
                (line.get_color(), line.get_marker(), line.get_linestyle(), tuple(line.get_xdata()))
            )
    return out


def test_comparison_figures(tmp_path, tiny_llama):
    from tts_eval.workflow.plot import comparison_figures, plot_comparison

    doc_c = {"unique_id": "c", "answer": "9", "level": 3, "subject": "Algebra"}
    cot = lm_eval_folder(tmp_path / "cot", str(tiny_llama), docs=(DOC_A, doc_c), correct=(0.0, 1.0))
    systems = unique_labels(
        load_systems(sweep_folder(tmp_path / "sweep"), **GRADING)
        + load_systems(cot, label="big CoT")
    )
    params = resolve_params(systems, {"policy": P_POLICY, "prm": P_PRM})
    board = build_leaderboard(systems, params, baseline="big CoT", bootstrap_iters=50)
    figures = comparison_figures(board)
    assert list(figures) == [
        "compare_accuracy_vs_flops.png",
        "compare_accuracy_vs_budget.png",
        "compare_accuracy_by_level.png",
    ]
    (ax,) = figures["compare_accuracy_vs_flops.png"].axes
    assert ax.get_xscale() == "log" and ax.get_ylim() == (0, 100)
    # 3 problems in all, each system on 2 of them (the sweep A and B, the CoT run A and C)
    title = ax.get_title()
    assert title.startswith("math500 (3 problems, 2 per system): ") and "FLOPs" in ax.get_xlabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        *(f"{s.label} (2 of 3 problems)" for s in systems),
        "compute of the baseline, big CoT (n=1)",  # the dotted vertical line
    ]
    series = _series(ax)
    assert len(series) == 4 and len({s[:3] for s in series}) == 4
    (baseline,) = [s for s in series if len(s[3]) == 1]
    assert baseline[2] == "None"  # a point with its CI bar, no line
    # true FLOPs on the x axis: the baseline's point sits on its dotted line, curves at their rows
    assert baseline[3] == (board["baseline"]["flops"],)
    dvts = [r["flops"] for r in board["rows"] if r["system"] == "policy + prm: dvts (weighted)"]
    assert tuple(dvts) in [s[3] for s in series]
    legend = ax.get_legend()
    assert legend.get_bbox_to_anchor().y0 < ax.get_window_extent().y0  # under the axes
    (ax,) = figures["compare_accuracy_by_level.png"].axes
    assert ax.get_ylim() == (0, 100) and [t.get_text() for t in ax.get_xticklabels()] == [
        "level 1",
        "level 2",
        "level 3",
    ]
    # each system's bars: the sweep's systems have levels 1 and 2, the CoT run 1 and 3; no
    # 0% bar stands in for a level a system never saw; the values are written on the bars
    bars = [c for c in ax.containers if hasattr(c, "patches")]
    assert [len(c.patches) for c in bars] == [2, 2, 2, 2]
    cot_bars = bars[-1]
    assert [round(p.get_height()) for p in cot_bars.patches] == [0, 100]
    assert [t.get_text() for t in ax.texts[-2:]] == ["0", "100"]
    paths = plot_comparison(board, tmp_path / "fig")
    assert all(
        p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000 for p in paths
    )


def test_each_system_says_how_many_problems_it_covers(tmp_path, tiny_llama):
    """Issue 23: a figure titled "arith (12 problems)" while some systems covered only 4. The
    sweep covers both problems, the CoT run one: the title gives the range per system, the CoT
    run's legend entries and its leaderboard note say 1 of 2, the sweep's say nothing more."""
    from tts_eval.workflow.plot import comparison_figures

    cot = lm_eval_folder(
        tmp_path / "cot",
        str(tiny_llama),
        docs=(DOC_A,),
        correct=(1.0,),
        responses=("So \\boxed{3}.",),
        prompts=("What is 1+2?",),
    )
    systems = unique_labels(
        load_systems(sweep_folder(tmp_path / "sweep"), **GRADING) + load_systems(cot, label="CoT")
    )
    params = resolve_params(systems, {"policy": P_POLICY, "prm": P_PRM, str(tiny_llama): 1e12})
    board = build_leaderboard(systems, params, bootstrap_iters=20)
    covers = {s["label"]: s["problems"] for s in board["systems"]}
    assert board["problems"] == 2 and covers.pop("CoT") == 1 and set(covers.values()) == {2}
    (cot_entry,) = [s for s in board["systems"] if s["label"] == "CoT"]
    assert cot_entry["notes"][0].startswith("covers 1 of the 2 problems")
    assert all(not n.startswith("covers") for s in board["systems"][:-1] for n in s["notes"])
    text = to_markdown(board)
    assert "- CoT: covers 1 of the 2 problems: its accuracy is over those" in text
    assert "2 problems in all; systems cover 1-2 of them" in text
    figures = comparison_figures(board)
    for name, fig in figures.items():
        (ax,) = fig.axes
        assert ax.get_title().startswith("math500 (2 problems, 1-2 per system): "), name
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert [t for t in legend if "problems" in t] == [
            "CoT (1 of 2 problems)" if name.endswith("flops.png") else "CoT (n=1, 1 of 2 problems)"
        ], (name, legend)
    same = build_leaderboard(
        load_systems(sweep_folder(tmp_path / "again"), **GRADING), params, bootstrap_iters=20
    )
    assert (
        "per system"
        not in comparison_figures(same)["compare_accuracy_vs_budget.png"].axes[0].get_title()
    )
    assert "in all" not in to_markdown(same)


@pytest.mark.parametrize(
    ("x", "text"),
    [
        (20, "20"),
        (300, "300"),
        (1500, "1,500"),
        (99_000, "99,000"),
        (200_000, "200k"),
        (1.5e6, "1.5M"),
        (3e12, "3T"),
        (0.5, "0.5"),
        (2.5, "2.5"),
    ],
)
def test_plain_numbers_for_log_axes(x, text):
    from tts_eval.workflow.plot import plain_number

    assert plain_number(x) == text


def test_log_axes_read_plain_numbers(tmp_path):
    """Issue 23: the tokens axis of accuracy_vs_tokens.png read "2x10^1, 3x10^1" (matplotlib's
    labels of minor ticks on a range shorter than a decade); now plain numbers, on the report's
    tokens axis and the comparison's FLOPs axis."""
    from tts_eval.workflow.plot import comparison_figures, report_figures
    from tts_eval.workflow.report import build_report
    from tts_eval.workflow.results import load_results

    report = build_report(
        load_results(sweep_folder(tmp_path / "r")), SPEC, is_correct, bootstrap_iters=20
    )
    for row in report["rows"]:  # 18-45 tokens per problem: minor ticks get labels
        row["policy_tokens"] = 18 + 3 * row["n"]
    fig = report_figures(report)["accuracy_vs_tokens.png"]
    systems = load_systems(sweep_folder(tmp_path / "s"), **GRADING)
    board = build_leaderboard(
        systems, resolve_params(systems, {"policy": P_POLICY, "prm": P_PRM}), bootstrap_iters=20
    )
    flops = comparison_figures(board)["compare_accuracy_vs_flops.png"]
    for figure in (fig, flops):
        figure.canvas.draw()
        (ax,) = figure.axes
        labels = [t.get_text() for t in ax.xaxis.get_ticklabels(which="both") if t.get_text()]
        assert len(labels) >= 2, labels
        assert all(re.fullmatch(r"[0-9][0-9,.]*[kMGTP]?", t) for t in labels), labels
    labels = [t.get_text() for t in fig.axes[0].xaxis.get_ticklabels(which="both")]
    assert {"20", "30", "40"} <= set(labels), labels


def test_flops_figure_names_systems_of_unknown_compute(tmp_path):
    from tts_eval.workflow.plot import comparison_figures

    cot = load_systems(lm_eval_folder(tmp_path / "cot", "org/not-on-disk", recorded=3e9))
    systems = load_systems(sweep_folder(tmp_path / "sweep"), **GRADING) + cot
    params = resolve_params(systems, {"policy": P_POLICY, "prm": P_PRM})
    board = build_leaderboard(systems, params, bootstrap_iters=10)
    (ax,) = comparison_figures(board)["compare_accuracy_vs_flops.png"].axes
    assert len(_series(ax)) == 3
    assert any(
        "compute unknown (not shown): not-on-disk: CoT (hf)" in t.get_text() for t in ax.texts
    )


def test_report_figures_are_readable(tmp_path):
    """The fixes of tts-eval plot: short names in titles, distinct and separated lines with error
    bars (also vs tokens), and accuracy axes fixed at 0-100% (also when every accuracy is 0)."""
    from test_workflow import _hopeless_results

    from tts_eval.workflow.plot import report_figures
    from tts_eval.workflow.report import build_report
    from tts_eval.workflow.results import load_results

    report = build_report(
        load_results(sweep_folder(tmp_path / "r")), SPEC, is_correct, bootstrap_iters=50
    )
    report["policy"], report["prm"] = "meta-llama/Llama-3.2-1B-Instruct", "RLHFlow/Llama3.1-8B-PRM"
    figures = report_figures(report, [("CoT", 40.0)])
    ax = figures["accuracy_vs_budget.png"].axes[0]
    assert "policy Llama-3.2-1B-Instruct, PRM Llama3.1-8B-PRM" in ax.get_title()
    assert "/" not in ax.get_title().split("\n")[1]
    for name in ("accuracy_vs_budget.png", "accuracy_vs_tokens.png"):
        ax = figures[name].axes[0]
        series = _series(ax)
        assert len(series) == 3, name  # majority, best_of_n, dvts, each with its CI bars
        assert len({s[:3] for s in series}) == 3, name  # colour, marker, line style differ
        assert ax.get_ylim() == (0, 100), name
    # majority and best_of_n are equal at n=4 (50%): shifted apart, not hidden under each other
    ax = figures["accuracy_vs_budget.png"].axes[0]
    xs = [set(s[3]) for s in _series(ax)]
    assert not xs[0] & xs[1]
    hopeless = build_report(load_results(_hopeless_results(tmp_path / "h")), SPEC, is_correct)
    for fig in report_figures(hopeless).values():
        for ax in fig.axes:
            if ax.axison:
                assert ax.get_ylim() == (0, 100)
    zoomed = report_figures(hopeless, zoom=True)["accuracy_by_level.png"].axes[0]
    assert zoomed.get_ylim() != (0, 100)


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_sweep_and_hf_cot_run_compared_end_to_end(tmp_path, monkeypatch, scripted_llama, tiny_prm):
    """A two-strategy sweep (scripted tiny policy + tiny PRM) and a ``--model hf`` CoT run of
    lm-eval on the same problems, in one leaderboard and one figure; parameter counts read from
    the models' files, tokens from the traces and (CoT) counted with the policy's tokenizer."""
    from lm_eval_cli import run_lm_eval

    data = tmp_path / "math500.jsonl"
    docs = [("What is 3-2?", "1", 1, "Algebra"), ("What is 1+1?", "2", 2, "Prealgebra")]
    data.write_text(
        "".join(
            json.dumps(
                {"problem": p, "solution": a, "answer": a, "level": lv, "subject": s}
                | {"unique_id": f"test/{i}.json"}
            )
            + "\n"
            for i, (p, a, lv, s) in enumerate(docs)
        )
    )
    monkeypatch.setenv("TTS_EVAL_MATH500", str(data))
    recipe = tmp_path / "tiny.yaml"
    model_args = {
        "pretrained": str(scripted_llama),
        "prm": str(tiny_prm),
        "prm_type": "rlhflow",
        "beam_width": 2,
        "max_tokens": 24,
        "num_iterations": 3,
        "device": "cpu",
    }
    sweep = {
        "task": "math500",
        "strategies": ["best_of_n", "beam_search"],
        "budgets": [2, 4],
        "output_dir": str(tmp_path / "sweep"),
    }
    recipe.write_text(json.dumps({"model_args": model_args, "sweep": sweep}))
    assert cli_main(["sweep", str(recipe), "--no-progress"]) == 0
    proc = run_lm_eval(
        [
            "--model", "hf", "--model_args", f"pretrained={scripted_llama},dtype=float32",
            "--tasks", "math500", "--apply_chat_template", "--gen_kwargs", "max_gen_toks=24",
            "--output_path", str(tmp_path / "cot"), "--log_samples",
        ],
        {"TTS_EVAL_MATH500": str(data)},
        tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = tmp_path / "cmp"
    argv = ["compare", str(tmp_path / "sweep"), str(tmp_path / "cot"), "--out", str(out)]
    argv += ["--label", f"{tmp_path / 'cot'}=CoT", "--baseline", "CoT", "--bootstrap", "200"]
    assert cli_main(argv) == 0
    board = json.loads((out / "leaderboard.json").read_text())
    short, prm = scripted_llama.name, tiny_prm.name
    assert [s["label"] for s in board["systems"]] == [
        f"{short}: majority",
        f"{short} + {prm}: best_of_n (weighted)",
        f"{short} + {prm}: beam_search (weighted)",
        "CoT",
    ]
    models = {m["model"]: m for m in board["models"]}
    assert {m["method"] for m in models.values()} == {"safetensors headers"}
    for path in (scripted_llama, tiny_prm):  # the headers agree with the architecture
        config = json.loads((path / "config.json").read_text())
        assert models[str(path)]["params"] == estimate_from_config(config)
    p_policy, p_prm = models[str(scripted_llama)]["params"], models[str(tiny_prm)]["params"]
    rows = {(r["system"], r["n"]): r for r in board["rows"]}
    assert set(rows) == {
        (f"{short}: majority", 1),
        (f"{short}: majority", 2),
        (f"{short}: majority", 4),
        (f"{short} + {prm}: best_of_n (weighted)", 1),
        (f"{short} + {prm}: best_of_n (weighted)", 2),
        (f"{short} + {prm}: best_of_n (weighted)", 4),
        (f"{short} + {prm}: beam_search (weighted)", 2),
        (f"{short} + {prm}: beam_search (weighted)", 4),
        ("CoT", 1),
    }
    for row in board["rows"]:
        assert row["problems"] == 2 and row["policy_tokens"] > 0 and row["prompt_tokens"] > 0
        flops = 2 * p_policy * (row["policy_tokens"] + row["prompt_tokens"])
        assert row["flops"] == pytest.approx(flops + 2 * p_prm * row["prm_tokens"])
        uses_prm = "+" in row["system"]
        assert (row["prm_tokens"] > 0) == uses_prm, row["system"]
    assert board["baseline"]["system"] == "CoT" and len(board["matched"]) == 3
    assert all(m["match"] for m in board["matched"])
    text = (out / "leaderboard.md").read_text()
    assert "| CoT | 1 |" in text and "## Matched compute against CoT (n=1)" in text
    assert (out / "leaderboard.html").read_text().startswith("<!DOCTYPE html>")
    png = out / "compare_accuracy_vs_flops.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
