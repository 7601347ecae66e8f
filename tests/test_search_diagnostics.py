"""Silent degradations are counted in every result (``settings["diagnostics"]``) and warned about:
a step delimiter that never occurs, no finished candidate (an empty response), and a
compute-optimal table whose bins all route alike (the probe is skipped, not paid for)."""

from __future__ import annotations

import json
import logging

import pytest
from fakes import FakeAnswerSpec, FakePRM, ScriptedEngine, problem

from tts_eval.search import SearchConfig, run_search
from tts_eval.search.diagnostics import diagnose, diagnostics_of
from tts_eval.traces import RECORD_VERSION, result_from_record, result_record

WHOLE = "a [0.9]\n\nb [0.5]\n\n\\boxed{1} [0.8]<eos>"
SCRIPT = {
    "": [WHOLE, "c [0.4]\n\n\\boxed{2} [0.6]<eos>"],
    "a [0.9]\n\n": ["b [0.5]\n\n"],
    "a [0.9]\n\nb [0.5]\n\n": ["\\boxed{1} [0.8]<eos>"],
    "c [0.4]\n\n": ["\\boxed{2} [0.6]<eos>"],
}


def search(strategy, script=SCRIPT, problems=None, **kwargs):
    engine = ScriptedEngine(script)
    config = SearchConfig(strategy=strategy, **{"max_tokens": 200, **kwargs})
    results = run_search(
        config, problems or [problem("P"), problem("Q")], engine, FakePRM(), FakeAnswerSpec()
    )
    return results, engine


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("strategy", ["beam_search", "dvts"])
def test_delimiter_that_never_occurs_is_counted_and_warned(strategy, caplog):
    caplog.set_level(logging.WARNING)
    results, engine = search(strategy, n=4, beam_width=2, step_delimiter="###")
    for result in results:
        assert result.settings["iterations_run"] == 1  # the degradation itself
        assert result.settings["diagnostics"] == {
            "steps_without_delimiter": len(result.candidates),
            "no_finished_candidate": False,
            "empty_response": False,
        }
    (message,) = warnings_of(caplog)
    assert f"search[{strategy}]: step_delimiter='###' never occurs" in message
    assert "2 of 2 problems (P, Q)" in message and "could not branch" in message


@pytest.mark.parametrize("strategy", ["beam_search", "dvts", "best_of_n"])
def test_searches_that_find_their_delimiter_are_not_warned(strategy, caplog):
    caplog.set_level(logging.WARNING)
    tree = {"beam_width": 2} if strategy != "best_of_n" else {}  # best_of_n has no beams
    results, _ = search(strategy, n=4, **tree)
    assert warnings_of(caplog) == []
    for result in results:
        assert result.settings["diagnostics"]["steps_without_delimiter"] == 0


def test_best_of_n_warns_that_the_prm_scored_one_step(caplog):
    caplog.set_level(logging.WARNING)
    search("best_of_n", n=2, step_delimiter="###")
    (message,) = warnings_of(caplog)
    assert "the PRM scored each solution as a single step" in message


def test_majority_counts_but_does_not_warn_about_delimiters(caplog):
    caplog.set_level(logging.WARNING)
    results, _ = search("majority", n=2, step_delimiter="###")
    assert warnings_of(caplog) == []
    assert [r.settings["diagnostics"]["steps_without_delimiter"] for r in results] == [2, 2]


def test_a_few_one_step_answers_are_not_warned(caplog):
    """Below half of the batch: short answers to easy problems are legitimate."""
    caplog.set_level(logging.WARNING)
    script = {
        "E|": ["\\boxed{1} [0.9]<eos>"],
        **{f"H{i}|": ["x [0.5]\n\n\\boxed{2} [0.6]<eos>"] for i in range(2)},
    }
    results, _ = search("best_of_n", script, [problem("E"), problem("H0"), problem("H1")], n=2)
    assert warnings_of(caplog) == []
    assert [r.settings["diagnostics"]["steps_without_delimiter"] for r in results] == [2, 0, 0]


def test_no_finished_candidate_is_an_empty_response_counted_and_warned(caplog):
    caplog.set_level(logging.WARNING)
    script = {"P|": ["x [0.5]\n\n" * 10 + "<eos>"], "Q|": ["\\boxed{1}<eos>"]}
    results, _ = search("best_of_n", script, n=2, max_tokens=12)
    p, q = results
    assert p.selected is None and p.selected_text == ""
    assert p.settings["diagnostics"] == {
        "steps_without_delimiter": 0,
        "no_finished_candidate": True,
        "empty_response": True,
    }
    assert q.settings["diagnostics"]["empty_response"] is False
    (message,) = warnings_of(caplog)
    assert "search[best_of_n]: 1 of 2 problems have an empty response (P)" in message
    assert "1 with no finished candidate (cut off at max_tokens=12" in message


def test_finished_candidates_without_an_answer_are_an_empty_response(caplog):
    caplog.set_level(logging.WARNING)
    results, _ = search("majority", {"": ["no answer here<eos>"]}, n=2)
    diag = results[0].settings["diagnostics"]
    assert (diag["no_finished_candidate"], diag["empty_response"]) == (False, True)
    assert "0 with no finished candidate" in warnings_of(caplog)[0]
    assert "2 with no answer in any finished candidate" in warnings_of(caplog)[0]


def _table(tmp_path, edges, strategies):
    entries = [
        {"bin": b, "budget": 4, "strategy": s, "beam_width": 2}
        if s == "beam_search"
        else {"bin": b, "budget": 4, "strategy": s}
        for b, s in enumerate(strategies, start=1)
    ]
    data = {
        "format": "tts-eval/compute-optimal-table",
        "version": 1,
        "probe_n": 2,
        "bin_edges": edges,
        "entries": entries,
    }
    path = tmp_path / "table.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize(
    ("edges", "strategies"),
    [([], ["best_of_n"]), ([0.5], ["best_of_n", "best_of_n"])],
    ids=["one-bin", "bins-routing-alike"],
)
def test_compute_optimal_skips_the_probe_when_routing_cannot_depend_on_it(
    tmp_path, edges, strategies
):
    table = _table(tmp_path, edges, strategies)
    (result,), engine = search(
        "compute_optimal", problems=[problem("P")], n=4, compute_optimal_table=table
    )
    assert [r.params.n for call in engine.calls for r in call] == [4]  # no probe request
    assert result.settings["probe_skipped"] is True
    assert result.settings["difficulty_bin"] is None and result.settings["probe_scores"] == []
    assert result.settings["routed_strategy"] == "best_of_n"
    assert result.cost.policy_tokens == sum(len(c.token_ids) for c in result.candidates)
    requested = result.settings["requested_settings"]
    assert (requested["strategy"], requested["n"]) == ("compute_optimal", 4)
    assert requested["compute_optimal_table"] == table


def test_compute_optimal_still_probes_when_bins_route_differently(tmp_path):
    table = _table(tmp_path, [0.5], ["best_of_n", "beam_search"])
    (result,), engine = search(
        "compute_optimal", problems=[problem("P")], n=4, compute_optimal_table=table
    )
    assert engine.calls[0][0].params.n == 2  # the probe
    assert result.settings["probe_skipped"] is False and result.settings["difficulty_bin"] == 1


def test_trace_records_carry_diagnostics_and_old_versions_still_read():
    (result, _), _ = search("beam_search", n=4, beam_width=2, step_delimiter="###")
    record = json.loads(json.dumps(result_record(result)))
    assert record["version"] == RECORD_VERSION == 3
    assert result_from_record(record) == result
    assert diagnostics_of(result_from_record(record)) == result.settings["diagnostics"]
    old = {**record, "version": 1}
    old["settings"] = {k: v for k, v in record["settings"].items() if k != "diagnostics"}
    assert diagnostics_of(result_from_record(old)) == result.settings["diagnostics"]
    assert diagnose(result_from_record(old)) == result.settings["diagnostics"]
    with pytest.raises(ValueError, match=r"has version 4; this tts-eval reads versions 1, 2, 3"):
        result_from_record({**record, "version": 4})
