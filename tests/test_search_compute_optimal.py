"""compute_optimal: table schema validation, the built-in default, probing and routing."""

from __future__ import annotations

import json

import pytest
from fakes import FakeAnswerSpec, FakePRM, ScriptedEngine, decode, problem

from tts_eval.model_args import parse_model_args
from tts_eval.search import SearchConfig, default_table, load_table, parse_table, run_search


def table(**overrides):
    data = {
        "format": "tts-eval/compute-optimal-table",
        "version": 1,
        "probe_n": 2,
        "bin_edges": [0.5],
        "entries": [
            {"bin": 1, "budget": 4, "strategy": "best_of_n", "selection": "naive"},
            {"bin": 2, "budget": 4, "strategy": "beam_search", "beam_width": 2},
        ],
    }
    data.update(overrides)
    return data


def write(tmp_path, data) -> str:
    path = tmp_path / "table.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return str(path)


def test_default_table_follows_the_published_finding():
    t = load_table(None)
    assert t.budgets == tuple(2**k for k in range(11))
    assert t.num_bins == 5
    assert [t.route(b, 16).strategy for b in range(1, 6)] == ["beam_search"] * 5
    assert [t.route(b, 256).strategy for b in range(1, 6)] == ["dvts"] * 3 + ["beam_search"] * 2
    assert dict(t.route(1, 2).overrides) == {"beam_width": 2}
    assert parse_table(default_table()).budgets == t.budgets


@pytest.mark.parametrize(
    "score, expected", [(1.0, 1), (0.8, 1), (0.79, 2), (0.5, 3), (0.2, 4), (0.19, 5), (0.0, 5)]
)
def test_bins(score, expected):
    assert load_table(None).bin_of(score) == expected


@pytest.mark.parametrize(
    "data, message",
    [
        ([], r"top level must be an object with format, version"),
        (table(extra=1), r"top level has unknown keys \['extra'\]"),
        (table(format="x"), r"format must be 'tts-eval/compute-optimal-table'"),
        (table(version=2), r"version must be 1, got 2"),
        (table(probe_n=0), r"probe_n must be an integer >= 1, got 0"),
        (table(bin_edges=[0.6, 0.4]), r"bin_edges must be a strictly increasing list in \[0, 1\]"),
        (table(bin_edges=[1.5]), r"bin_edges must be a strictly increasing list"),
        (table(entries=[]), r"entries must be a non-empty list"),
        (
            table(entries=[{"bin": 1, "budget": 4, "strategy": "dvts", "foo": 1}]),
            r"entries\[0\] has unknown keys \['foo'\]",
        ),
        (
            table(entries=[{"bin": 3, "budget": 4, "strategy": "dvts"}]),
            r"entries\[0\]\.bin must be an integer in 1\.\.2, got 3",
        ),
        (
            table(entries=[{"bin": 1, "budget": 0, "strategy": "dvts"}]),
            r"entries\[0\]\.budget must be an integer >= 1",
        ),
        (
            table(entries=[{"bin": 1, "budget": 4, "strategy": "compute_optimal"}]),
            r"entries\[0\]\.strategy must be one of majority, best_of_n, beam_search, dvts",
        ),
        (
            table(entries=[{"bin": 1, "budget": 4, "strategy": "dvts", "selection": "x"}]),
            r"entries\[0\]\.selection must be one of naive, weighted",
        ),
        (
            table(entries=[{"bin": 1, "budget": 4, "strategy": "dvts", "agg": "x"}]),
            r"entries\[0\]\.agg must be one of last, min, prod, mean",
        ),
        (
            table(entries=[{"bin": 1, "budget": 6, "strategy": "dvts", "beam_width": 4}]),
            r"entries\[0\] is not a valid search at n=6: model_args n=6 is invalid; accepted: a multiple of beam_width=4",
        ),
        (
            table(entries=[{"bin": 1, "budget": 4, "strategy": "dvts"}] * 2),
            r"entries\[1\] duplicates the entry for bin=1, budget=4",
        ),
        (
            table(entries=[{"bin": 1, "budget": 4, "strategy": "dvts"}]),
            r"entries lack bins \[2\] for budget=4",
        ),
        ("{not json", r"not valid JSON"),
    ],
)
def test_table_errors_are_one_line(tmp_path, data, message):
    path = write(tmp_path, data)
    with pytest.raises(ValueError, match=message) as info:
        SearchConfig(strategy="compute_optimal", n=4, compute_optimal_table=path)
    assert str(info.value).startswith(f"compute_optimal_table {path}")
    assert "\n" not in str(info.value)


def test_table_must_cover_the_budget(tmp_path):
    path = write(tmp_path, table())
    assert SearchConfig(strategy="compute_optimal", n=4, compute_optimal_table=path).n == 4
    with pytest.raises(
        ValueError,
        match=r"model_args n=8 is invalid; accepted: a budget of compute_optimal_table \(.*\): 4$",
    ):
        SearchConfig(strategy="compute_optimal", n=8, compute_optimal_table=path)


def fitted_table(**entry) -> dict:
    """A table like those ``tts-eval fit-compute-optimal`` writes: bin 1 routed to best_of_n,
    bin 2 to a tree search."""
    return table(
        entries=[
            {"bin": 1, "budget": 8, "strategy": "best_of_n", "selection": "weighted"},
            {"bin": 2, "budget": 8, **entry},
        ]
    )


@pytest.mark.parametrize(
    ("args", "entry", "message"),
    [
        (  # lookahead reaches every route; best_of_n does not read it
            "n=8,lookahead=1",
            {"strategy": "beam_search", "beam_width": 4},
            r"^model_args lookahead=1 is invalid; accepted: 0 \(its default\) with "
            r"strategy=compute_optimal here: compute_optimal_table \(.*\) routes bin 1 at n=8 "
            r"to strategy=best_of_n, which does not read lookahead$",
        ),
        (  # a route that takes the run's beam width, which does not divide its budget
            "n=8,beam_width=3",
            {"strategy": "dvts"},
            r"^model_args beam_width=3 is invalid; accepted: 4 \(its default\) with "
            r"strategy=compute_optimal here: .* routes bin 1 at n=8 to strategy=best_of_n",
        ),
        (
            "n=8,beam_width=3",
            {"strategy": "dvts", "selection": "naive"},
            r"routes bin 1 at n=8 to strategy=best_of_n",
        ),
    ],
)
def test_every_route_is_checked_against_the_run_before_anything_loads(
    tmp_path, args, entry, message
):
    path = write(tmp_path, fitted_table(**entry))
    with pytest.raises(ValueError, match=message) as info:
        parse_model_args(
            f"pretrained=org/p,prm=org/q,strategy=compute_optimal,{args},"
            f"compute_optimal_table={path}"
        )
    assert "\n" not in str(info.value)


def test_a_route_whose_budget_does_not_split_into_the_run_beam_width_is_refused(tmp_path):
    # every bin routed to dvts without its own beam width: the run's beam_width=3 cannot split n=8
    data = table(entries=[{"bin": b, "budget": 8, "strategy": "dvts"} for b in (1, 2)])
    path = write(tmp_path, data)
    with pytest.raises(
        ValueError,
        match=r"^model_args n=8 is invalid; accepted: a multiple of beam_width=3 for "
        r"strategy=dvts \(e\.g\. n=6 or n=9\) \(compute_optimal_table \(.*\) routes bin 1 at "
        r"n=8 to strategy=dvts\)$",
    ):
        parse_model_args(
            "pretrained=org/p,prm=org/q,strategy=compute_optimal,n=8,beam_width=3,"
            f"compute_optimal_table={path}"
        )
    # the same table with the default beam width runs
    config = parse_model_args(
        f"pretrained=org/p,prm=org/q,strategy=compute_optimal,n=8,compute_optimal_table={path}"
    )
    assert config.search.options.compute_optimal_table == path


ROUTING_SCRIPT = {
    # easy: every probe sample finishes with a high score
    "easy|": ["\\boxed{1} [0.9]<eos>", "\\boxed{1} [0.8]<eos>", "\\boxed{2} [0.85]<eos>"],
    # hard: the probe samples score low
    "hard|": ["x [0.1]\n\n", "y [0.3]\n\n"],
    "hard|x [0.1]\n\n": ["\\boxed{5} [0.2]<eos>"],
    "hard|y [0.3]\n\n": ["\\boxed{6} [0.25]<eos>", "z [0.9]\n\n"],
    "hard|y [0.3]\n\nz [0.9]\n\n": ["\\boxed{6} [0.7]<eos>"],
}


def test_routes_each_problem_by_its_probe(tmp_path):
    path = write(tmp_path, table())
    config = SearchConfig(
        strategy="compute_optimal", n=4, compute_optimal_table=path, num_iterations=3
    )
    engine, prm = ScriptedEngine(ROUTING_SCRIPT), FakePRM()
    easy, hard = run_search(
        config, [problem("easy"), problem("hard")], engine, prm, FakeAnswerSpec()
    )
    assert easy.strategy == hard.strategy == "compute_optimal"
    assert easy.settings["probe_scores"] == [0.9, 0.8]
    assert (easy.settings["difficulty_bin"], easy.settings["routed_strategy"]) == (1, "best_of_n")
    assert easy.settings["probe_score"] == pytest.approx(0.85)
    assert easy.settings["selection"] == "naive"  # the entry's override
    assert [c.answer for c in easy.candidates] == ["1", "1", "2", "1"]
    assert easy.candidates[easy.selected].answer == "1"
    assert hard.settings["probe_scores"] == [0.2, 0.7]  # sample 1 walks y, z, boxed
    assert (hard.settings["difficulty_bin"], hard.settings["routed_strategy"]) == (2, "beam_search")
    assert hard.settings["beam_width"] == 2 and hard.settings["n"] == 4
    assert hard.settings["iterations_run"] >= 2
    assert hard.candidates[hard.selected].answer == "6"
    # both problems share every engine call while both are active
    probe_call = engine.calls[0]
    assert [decode(r.prompt_ids) for r in probe_call] == ["easy|", "hard|"]
    assert [r.params.n for r in probe_call] == [2, 2]
    assert {decode(r.prompt_ids)[:5] for r in engine.calls[1]} == {"easy|", "hard|"}
    # the probe's tokens are part of the cost
    probe_tokens = sum(len(c.token_ids) for c in engine.outputs[0][0].completions)
    assert easy.cost.policy_tokens == probe_tokens + sum(len(c.token_ids) for c in easy.candidates)


def test_unfinished_probe_samples_count_zero(tmp_path):
    path = write(tmp_path, table())
    config = SearchConfig(
        strategy="compute_optimal", n=4, compute_optimal_table=path, max_tokens=17
    )
    engine = ScriptedEngine({"easy|": ["\\boxed{1} [0.9]<eos>", "w" * 30 + "<eos>"]})
    (easy,) = run_search(config, [problem("easy")], engine, FakePRM(), FakeAnswerSpec())
    assert easy.settings["probe_scores"] == [0.9, 0.0]
    assert easy.settings["difficulty_bin"] == 2  # 0.45 < 0.5
