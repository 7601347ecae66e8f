"""SearchConfig validation: defaults, accepted values, one-line errors naming the argument."""

from __future__ import annotations

import dataclasses

import pytest

from tts_eval.search import SearchConfig, search_keys


def test_defaults_follow_the_published_setup():
    config = SearchConfig()
    tree = SearchConfig(strategy="dvts").options
    assert (tree.beam_width, config.num_iterations, config.agg, config.selection) == (
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
    routed = SearchConfig(strategy="compute_optimal").options
    assert (config.step_delimiter, tree.lookahead, routed.compute_optimal_table) == (
        "\n\n",
        0,
        None,
    )


def test_search_keys_are_the_model_args_keys():
    # the shared settings are SearchConfig's fields; each strategy's own options come from its spec
    assert [f.name for f in dataclasses.fields(SearchConfig)] == [
        "strategy",
        "n",
        "num_iterations",
        "agg",
        "selection",
        "temperature",
        "top_p",
        "max_tokens",
        "seed",
        "step_delimiter",
        "self_score",
        "confidence_window",
        "confidence_topk",
        "options",
    ]
    assert search_keys() == (
        "strategy",
        "n",
        "num_iterations",
        "agg",
        "selection",
        "temperature",
        "top_p",
        "max_tokens",
        "seed",
        "step_delimiter",
        "self_score",
        "confidence_window",
        "confidence_topk",
        "stop",
        "wave",
        "stop_threshold",
        "stop_prior",
        "esc_window",
        "prune_steps",
        "prune_fraction",
        "beam_width",
        "lookahead",
        "max_step_tokens",
        "compute_optimal_table",
        "resampling",
        "pf_temperature",
        "pg_iterations",
        "pg_reference_particles",
        "keep_percent",
        "deepconf_online",
        "online_chunk",
    )


def test_options_of_another_strategy_at_their_default_are_dropped_and_replace_carries_them():
    # one rule for every option: refused at another value (below), dropped at its default
    config = SearchConfig(strategy="majority", n=5, beam_width=4, pf_temperature=1.0)
    assert config.options == SearchConfig(strategy="majority", n=5).options
    dvts = SearchConfig(strategy="dvts", n=8, beam_width=2, lookahead=1)
    routed = dataclasses.replace(dvts, strategy="beam_search")
    assert (routed.options.beam_width, routed.options.lookahead) == (2, 1)
    with pytest.raises(ValueError, match=r"^model_args beam_width=2 is invalid; accepted: only "):
        dataclasses.replace(dvts, strategy="best_of_n")
    assert dataclasses.replace(dvts, max_tokens=9).options == dvts.options


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
        dict(strategy="particle_filtering", n=3, resampling="systematic", pf_temperature=0.1),
        dict(strategy="particle_gibbs", n=8, pg_iterations=4, pg_reference_particles=0),
        dict(strategy="particle_gibbs", n=9, pg_iterations=3, pg_reference_particles=2),
    ],
)
def test_valid_configs(kwargs):
    config = SearchConfig(**kwargs)
    assert config.settings()["strategy"] == kwargs["strategy"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(strategy="mcts"),
            r"^model_args strategy=mcts is invalid; accepted: majority, best_of_n, beam_search, dvts",
        ),
        (dict(n=0), r"^model_args n=0 is invalid; accepted: an integer >= 1$"),
        (dict(n=True), r"^model_args n=True is invalid; accepted: an integer >= 1$"),
        (dict(n=4.0), r"^model_args n=4.0 is invalid; accepted: an integer"),
        (dict(beam_width=0), r"^model_args beam_width=0 is invalid; accepted: an integer >= 1"),
        (
            dict(strategy="beam_search", n=6, beam_width=4),
            r"^model_args n=6 is invalid; accepted: a multiple of beam_width=4 for strategy=beam_search \(e\.g\. n=4 or n=8\)$",
        ),
        (dict(strategy="dvts", n=10, beam_width=4), r"e\.g\. n=8 or n=12"),
        (
            dict(strategy="beam_search", n=2, beam_width=4),
            r"^model_args n=2 is invalid; .*\(e\.g\. n=4\)$",
        ),
        (
            dict(num_iterations=0),
            r"^model_args num_iterations=0 is invalid; accepted: an integer >= 1",
        ),
        (dict(agg="max"), r"^model_args agg=max is invalid; accepted: last, min, prod, mean$"),
        (
            dict(selection="majority"),
            r"^model_args selection=majority is invalid; accepted: naive, weighted",
        ),
        (
            dict(temperature=-0.1),
            r"^model_args temperature=-0.1 is invalid; accepted: a number >= 0",
        ),
        (
            dict(temperature="hot"),
            r"^model_args temperature=hot is invalid; accepted: a number >= 0",
        ),
        (dict(top_p=0), r"^model_args top_p=0 is invalid; accepted: a number in \(0, 1\]"),
        (dict(top_p=1.5), r"^model_args top_p=1.5 is invalid; accepted: a number in \(0, 1\]"),
        (dict(max_tokens=0), r"^model_args max_tokens=0 is invalid; accepted: an integer >= 1"),
        (dict(seed="0"), r"^model_args seed=0 is invalid; accepted: an integer$"),
        (
            dict(step_delimiter=""),
            r"^model_args step_delimiter='' is invalid; accepted: a non-empty string",
        ),
        (dict(lookahead=-1), r"^model_args lookahead=-1 is invalid; accepted: an integer >= 0"),
        (
            dict(strategy="best_of_n", lookahead=1),
            r"^model_args lookahead=1 is invalid; accepted: only with strategy=beam_search, dvts "
            r"or compute_optimal, not strategy=best_of_n$",
        ),
        (
            dict(strategy="majority", beam_width=8),
            r"^model_args beam_width=8 is invalid; accepted: only with strategy=beam_search, dvts "
            r"or compute_optimal, not strategy=majority$",
        ),
        (
            dict(strategy="dvts", compute_optimal_table="t.json"),
            r"^model_args compute_optimal_table=t.json is invalid; accepted: only with strategy=compute_optimal",
        ),
        (
            dict(strategy="compute_optimal", n=12),
            r"^model_args n=12 is invalid; accepted: a budget of compute_optimal_table \(built-in default\): 1, 2, 4,",
        ),
        (
            dict(strategy="compute_optimal", compute_optimal_table="/nonexistent/t.json"),
            r"^model_args compute_optimal_table=/nonexistent/t.json is invalid; accepted: an existing JSON file$",
        ),
        (
            dict(strategy="particle_filtering", pf_temperature=0),
            r"^model_args pf_temperature=0 is invalid; accepted: a number > 0$",
        ),
        (
            dict(strategy="particle_gibbs", pf_temperature=float("inf")),
            r"^model_args pf_temperature=inf is invalid; accepted: a number > 0$",
        ),
        (
            dict(strategy="particle_filtering", resampling="residual"),
            r"^model_args resampling=residual is invalid; accepted: multinomial, systematic$",
        ),
        (
            dict(strategy="particle_gibbs", pg_iterations=0),
            r"^model_args pg_iterations=0 is invalid; accepted: an integer >= 1$",
        ),
        (
            dict(strategy="particle_gibbs", n=6, pg_iterations=4),
            r"^model_args n=6 is invalid; accepted: a multiple of pg_iterations=4 for "
            r"strategy=particle_gibbs .*pg_iterations dividing n=6: 1, 2, 3, 6\)$",
        ),
        (
            dict(strategy="particle_gibbs", n=8, pg_iterations=4, pg_reference_particles=2),
            r"^model_args pg_reference_particles=2 is invalid; accepted: an integer below "
            r"n/pg_iterations=2 ",
        ),
        (
            dict(strategy="beam_search", pf_temperature=0.5),
            r"^model_args pf_temperature=0.5 is invalid; accepted: only with "
            r"strategy=particle_filtering or particle_gibbs, not strategy=beam_search$",
        ),
        (
            dict(strategy="dvts", resampling="systematic"),
            r"^model_args resampling=systematic is invalid; accepted: only with strategy=particle",
        ),
        (
            dict(strategy="particle_filtering", pg_iterations=2),
            r"^model_args pg_iterations=2 is invalid; accepted: only with "
            r"strategy=particle_gibbs, not strategy=particle_filtering$",
        ),
        (
            dict(strategy="particle_filtering", lookahead=1),
            r"^model_args lookahead=1 is invalid; accepted: only with strategy=beam_search, dvts "
            r"or compute_optimal, not strategy=particle_filtering$",
        ),
    ],
)
def test_invalid_configs_raise_one_clear_line(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        SearchConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_particle_keys_are_recorded_only_for_the_strategies_that_read_them():
    assert "pf_temperature" not in SearchConfig(strategy="dvts").settings()
    assert "pg_iterations" not in SearchConfig(strategy="particle_filtering").settings()
    settings = SearchConfig(strategy="particle_gibbs", n=4, pg_iterations=2).settings()
    assert (settings["resampling"], settings["pf_temperature"]) == ("multinomial", 1.0)
    assert (settings["pg_iterations"], settings["pg_reference_particles"]) == (2, 1)


@pytest.mark.parametrize(
    "args, message",
    [
        # given at its default value: only the model_args parser can tell
        (
            "strategy=beam_search,pf_temperature=1.0",
            r"^model_args pf_temperature=1.0 is invalid; accepted: only with "
            r"strategy=particle_filtering or particle_gibbs, not strategy=beam_search$",
        ),
        (
            "strategy=particle_filtering,pg_reference_particles=1",
            r"^model_args pg_reference_particles=1 is invalid; accepted: only with "
            r"strategy=particle_gibbs",
        ),
        (
            "strategy=particle_gibbs,n=4,pg_iterations=3",
            r"^model_args n=4 is invalid; accepted: a multiple of pg_iterations=3",
        ),
    ],
)
def test_particle_keys_in_model_args_fail_before_anything_loads(args, message):
    from tts_eval.model_args import parse_model_args

    with pytest.raises(ValueError, match=message) as info:
        parse_model_args(f"pretrained=org/policy,prm=org/prm,{args}")
    assert "\n" not in str(info.value)
