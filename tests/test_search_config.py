"""SearchConfig validation: defaults, accepted values, one-line errors naming the argument."""

from __future__ import annotations

import dataclasses

import pytest

from tts_eval.search import SearchConfig


def test_defaults_follow_the_published_setup():
    config = SearchConfig()
    assert (config.beam_width, config.num_iterations, config.agg, config.selection) == (
        4,
        40,
        "last",
        "weighted",
    )
    assert (config.temperature, config.top_p, config.max_tokens, config.seed) == (
        0.8,
        1.0,
        2048,
        0,
    )
    assert (config.step_delimiter, config.lookahead, config.compute_optimal_table) == (
        "\n\n",
        0,
        None,
    )


def test_field_names_are_the_model_args_keys():
    assert [f.name for f in dataclasses.fields(SearchConfig)] == [
        "strategy",
        "n",
        "beam_width",
        "num_iterations",
        "agg",
        "selection",
        "temperature",
        "top_p",
        "max_tokens",
        "seed",
        "step_delimiter",
        "lookahead",
        "compute_optimal_table",
    ]


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SearchConfig().n = 8  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(strategy="majority", n=5, beam_width=4),  # beam_width unused by majority
        dict(strategy="best_of_n", n=3, selection="naive", agg="prod"),
        dict(strategy="beam_search", n=16, beam_width=4, lookahead=2),
        dict(strategy="dvts", n=4, beam_width=4, agg="min"),
        dict(strategy="dvts", n=8, beam_width=1),
        dict(strategy="compute_optimal", n=64),
        dict(strategy="best_of_n", temperature=0, top_p=0.5, max_tokens=1, seed=-3),
    ],
)
def test_valid_configs(kwargs):
    config = SearchConfig(**kwargs)
    assert config.settings()["strategy"] == kwargs["strategy"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(strategy="mcts"), r"^strategy must be one of majority, best_of_n, beam_search, dvts"),
        (dict(n=0), r"^n must be an integer >= 1, got 0$"),
        (dict(n=True), r"^n must be an integer >= 1, got True$"),
        (dict(n=4.0), r"^n must be an integer"),
        (dict(beam_width=0), r"^beam_width must be an integer >= 1"),
        (
            dict(strategy="beam_search", n=6, beam_width=4),
            r"n=6 must be a multiple of beam_width=4",
        ),
        (dict(strategy="dvts", n=10, beam_width=4), r"e\.g\. n=8 or n=12"),
        (dict(strategy="beam_search", n=2, beam_width=4), r"^n=2 must be >= beam_width=4"),
        (dict(num_iterations=0), r"^num_iterations must be an integer >= 1"),
        (dict(agg="max"), r"^agg must be one of last, min, prod, mean; got 'max'$"),
        (dict(selection="majority"), r"^selection must be one of naive, weighted"),
        (dict(temperature=-0.1), r"^temperature must be >= 0"),
        (dict(temperature="hot"), r"^temperature must be a finite number"),
        (dict(top_p=0), r"^top_p must be in \(0, 1\]"),
        (dict(top_p=1.5), r"^top_p must be in \(0, 1\]"),
        (dict(max_tokens=0), r"^max_tokens must be an integer >= 1"),
        (dict(seed="0"), r"^seed must be an integer"),
        (dict(step_delimiter=""), r"^step_delimiter must be a non-empty string"),
        (dict(lookahead=-1), r"^lookahead must be an integer >= 0"),
        (dict(strategy="best_of_n", lookahead=1), r"lookahead=1 applies to strategy=beam_search"),
        (
            dict(strategy="dvts", compute_optimal_table="t.json"),
            r"^compute_optimal_table is only used with strategy=compute_optimal",
        ),
        (dict(strategy="compute_optimal", n=12), r"has no entries for n=12; budgets in the table"),
        (
            dict(strategy="compute_optimal", compute_optimal_table="/nonexistent/t.json"),
            r"^compute_optimal_table=/nonexistent/t.json: no such file$",
        ),
    ],
)
def test_invalid_configs_raise_one_clear_line(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        SearchConfig(**kwargs)
    assert "\n" not in str(info.value)
