"""``tts-eval sweep`` shrinks a recipe from the command line (``--limit``, ``--budgets``,
``--strategies``, ``--chunk_size``) and records what it overrode in the results folder's manifest.
"""

from __future__ import annotations

import json

import pytest
from fakes import FakeAnswerSpec, FakePRM, RandomEngine
from test_workflow_sweep import write_inputs

import tts_eval.runtime
from tts_eval.runtime.local import LocalSearcher
from tts_eval.workflow import cli
from tts_eval.workflow.recipe import load_sweep_recipe


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("TTS_EVAL_MATH500", str(tmp_path / "math500.jsonl"))
    monkeypatch.setattr(
        tts_eval.runtime,
        "open_searcher",
        lambda config: LocalSearcher(RandomEngine(), FakePRM(), FakeAnswerSpec()),
    )
    return tmp_path


def test_the_command_line_shrinks_the_sweep_and_the_manifest_says_so(env, capsys):
    out = env / "results"
    recipe = write_inputs(env, out, chunk_size=5)  # 4 strategies x budgets 2, 4; 5 documents
    argv = [str(recipe), "--no-progress", "--limit", "2", "--budgets", "2"]
    argv += ["--strategies", "best_of_n,dvts", "--chunk_size", "1"]
    assert cli.sweep_main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[1].strip() for line in printed[:-1]] == [
        "0 recorded before, 2 computed, 2 documents"
    ] * 2
    runs = sorted(p.name for p in (out / "runs").glob("*.jsonl"))
    assert [r.split("-n")[0] for r in runs] == ["best_of_n", "dvts"]
    assert all(len((out / "runs" / r).read_text().splitlines()) == 2 for r in runs)
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["overrides"] == {
        "sweep": {"limit": 2, "budgets": [2], "strategies": ["best_of_n", "dvts"], "chunk_size": 1}
    }
    sweep = manifest["sweep"]
    assert (sweep["limit"], sweep["budgets"], sweep["strategies"], sweep["chunk_size"]) == (
        2,
        [2],
        ["best_of_n", "dvts"],
        1,
    )
    assert manifest["limit"] == 2 and len(manifest["runs"]) == 2
    # The recipe alone sweeps everything: the overrides are not remembered by the folder.
    assert cli.sweep_main([str(recipe), "--no-progress", "--limit", "1"]) == 0
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["overrides"] == {"sweep": {"limit": 1}}
    assert len(manifest["runs"]) == 6  # 2 before + best_of_n (majority), dvts at 4, beam at 2, 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--budgets", "4,x"], "--budgets x is invalid; accepted: an integer, e.g. --budgets 16"),
        (
            ["--budgets", "3"],
            "(with --budgets from the command line): sweep.budgets has 3; accepted: powers of two",
        ),
        (["--strategies", "best_of_m"], "sweep.strategies has unknown strategy 'best_of_m'"),
        (["--limit", "0"], "(with --limit from the command line): sweep.limit must be an integer"),
    ],
)
def test_a_bad_override_is_one_line(env, capsys, argv, message):
    recipe = write_inputs(env, env / "results")
    assert cli.sweep_main([str(recipe), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tts-eval sweep: error: ")
    assert message in err[0]
    assert not (env / "results").exists()  # refused before anything ran


def test_strategies_left_out_take_their_settings_with_them(env):
    recipe = write_inputs(env, env / "results", strategies=("best_of_n", "particle_filtering"))
    data = json.loads(recipe.read_text())
    data["model_args"]["pf_temperature"] = 0.5  # read by particle_filtering only
    recipe.write_text(json.dumps(data))
    assert load_sweep_recipe(recipe).model_args["pf_temperature"] == 0.5
    shrunk = load_sweep_recipe(recipe, sweep_overrides={"strategies": ["best_of_n"]})
    assert "pf_temperature" not in shrunk.model_args
    assert shrunk.sweep.strategies == ("best_of_n",)
    with pytest.raises(ValueError, match="accepted: strategies, budgets, limit, chunk_size"):
        load_sweep_recipe(recipe, sweep_overrides={"task": "arith"})
