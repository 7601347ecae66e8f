"""Monte Carlo step labels on scripted policies: hand-computed labels, sources, costs, batching."""

from __future__ import annotations

import pytest
from fakes import EOS, FakeAnswerSpec, RandomEngine, ScriptedEngine, encode

from tts_eval.learn.rollouts import (
    LabelProblem,
    LabelSettings,
    StepLabel,
    combine_labels,
    label_problems,
    rollout_answer,
)
from tts_eval.types import Completion, FinishReason

# Solution 0: "a" then \boxed{4} (right). Solution 1: "b", "c", \boxed{3} (wrong).
SCRIPT = {
    "": ["a\n", "b\n"],
    "a\n": [f"\\boxed{{4}}{EOS}"],
    "b\n": ["c\n", f"\\boxed{{5}}{EOS}"],
    "b\nc\n": [f"\\boxed{{3}}{EOS}", f"\\boxed{{4}}{EOS}", f"\\boxed{{4}}{EOS}"],
}


def _problem(uid: str = "p", gold: str = "4") -> LabelProblem:
    return LabelProblem(uid, f"problem {uid}", encode("P|"), gold)


def _settings(**kw) -> LabelSettings:
    return LabelSettings(**{"samples": 2, "rollouts": 3, "step_delimiter": "\n", **kw})


def test_labels_equal_a_hand_computed_monte_carlo_estimate():
    engine = ScriptedEngine(SCRIPT)
    [result] = label_problems([_problem()], engine, FakeAnswerSpec(), _settings())
    first, second = result.solutions
    assert first.steps == (
        StepLabel("a", True, 1.0, "mc"),  # 3 of 3 rollouts from "a" answer 4
        StepLabel("\\boxed{4}", True, None, "outcome"),
    )
    assert (first.correct, first.answer, first.ended) == (True, "4", "eos")
    # From "b": sample 0 -> c -> 3, sample 1 -> 5, sample 2 -> c -> 4: 1 of 3.
    # From "b c": 3, 4, 4: 2 of 3. The last step is the solution's own (wrong) answer.
    assert second.steps == (
        StepLabel("b", True, pytest.approx(1 / 3), "mc"),
        StepLabel("c", True, pytest.approx(2 / 3), "mc"),
        StepLabel("\\boxed{3}", False, None, "outcome"),
    )
    assert (second.correct, second.answer) == (False, "3")
    # Rollouts are one engine call: one request of 3 samples per non-final step.
    rollout_call = engine.calls[-1]
    assert [r.params.n for r in rollout_call] == [3, 3, 3]
    assert [r.params.stop for r in rollout_call] == [(), (), ()]
    prefixes = [bytes(r.prompt_ids).decode() for r in rollout_call]
    assert prefixes == ["P|a\n", "P|b\n", "P|b\nc\n"]
    cost = result.cost
    assert cost.rollout_tokens == sum(
        len(c.token_ids) for out in engine.outputs[-1] for c in out.completions
    )
    assert cost.rollout_prompt_tokens == sum(len(r.prompt_ids) * 3 for r in rollout_call)
    assert cost.solution_tokens == first.tokens + second.tokens


def test_without_rollouts_every_step_takes_the_outcome_of_one_whole_generation():
    engine = ScriptedEngine(SCRIPT)
    [result] = label_problems([_problem()], engine, FakeAnswerSpec(), _settings(rollouts=0))
    # one request of 2 samples generated to the end (sample 1 takes option 1 at every level)
    assert len(engine.calls) == 1 and engine.calls[0][0].params.n == 2
    assert engine.calls[0][0].params.stop == ()
    first, second = result.solutions
    assert [(s.text, s.label) for s in first.steps] == [("a", True), ("\\boxed{4}", True)]
    assert [(s.text, s.label) for s in second.steps] == [("b", False), ("\\boxed{5}", False)]
    assert {s.source for sol in result.solutions for s in sol.steps} == {"outcome"}


def test_a_whole_generation_ends_at_its_first_final_step():
    script = {"": ["a\n"], "a\n": ["\\boxed{4}\nmore\n\\boxed{5}" + EOS]}
    [result] = label_problems(
        [_problem()], ScriptedEngine(script), FakeAnswerSpec(), _settings(samples=1, rollouts=0)
    )
    [solution] = result.solutions
    assert [s.text for s in solution.steps] == ["a", "\\boxed{4}"]
    assert (solution.answer, solution.correct, solution.ended) == ("4", True, "answer")


def test_the_step_checker_overrides_with_false():
    engine = ScriptedEngine(SCRIPT)
    checker = {"p": lambda step: False if step == "c" else None}
    [result] = label_problems([_problem()], engine, FakeAnswerSpec(), _settings(), checkers=checker)
    assert result.solutions[1].steps[1] == StepLabel("c", False, pytest.approx(2 / 3), "checker")
    assert result.solutions[1].steps[0].source == "mc"


def test_a_rollout_ends_at_its_first_final_step_and_a_cut_off_one_reaches_nothing():
    answers = FakeAnswerSpec()
    done = Completion("\\boxed{4}\nmore \\boxed{5}", (1,), FinishReason.EOS)
    assert rollout_answer("x\n", done, answers, "\n") == "4"
    cut = Completion("y\nz", (1,), FinishReason.LENGTH)
    assert rollout_answer("x\n", cut, answers, "\n") is None


def test_combine_labels_table():
    views = ("s1", "s2", "s3")
    got = combine_labels(views, outcome=False, mc={0: 0.0, 1: 0.5}, checker=None)
    assert [(s.label, s.soft, s.source) for s in got] == [
        (False, 0.0, "mc"),
        (True, 0.5, "mc"),
        (False, None, "outcome"),
    ]


def test_a_truncated_solution_ends_false():
    script = {"": ["a\n"], "a\n": ["b" * 50 + EOS]}
    engine = ScriptedEngine(script)
    [result] = label_problems(
        [_problem()], engine, FakeAnswerSpec(), _settings(samples=1, rollouts=2, max_tokens=10)
    )
    [solution] = result.solutions
    assert solution.ended == "length"
    assert solution.steps[-1] == StepLabel("b" * 8, False, None, "outcome")


def test_labels_do_not_depend_on_the_batch():
    settings = LabelSettings(samples=3, rollouts=2, step_delimiter="\n\n", max_tokens=200)
    problems = [_problem(f"u{i}", gold="7") for i in range(3)]
    together = label_problems(problems, RandomEngine(), FakeAnswerSpec(), settings)
    apart = [label_problems([p], RandomEngine(), FakeAnswerSpec(), settings)[0] for p in problems]
    assert together == apart
    assert any(s.source == "mc" for r in together for sol in r.solutions for s in sol.steps)


def test_settings_and_problems_are_checked():
    with pytest.raises(ValueError, match="samples=0 is invalid"):
        LabelSettings(samples=0)
    with pytest.raises(ValueError, match="temperature"):
        LabelSettings(temperature=-1)
    with pytest.raises(ValueError, match="gold"):
        LabelProblem("u", "t", (1,), " ")


def test_a_labels_folder_from_before_a_new_engine_setting_still_resumes(tmp_path):
    import json

    from tts_eval.learn.label import _check_folder, job_from_args

    job = job_from_args(
        "arith_train", "pretrained=/m,backend=hf,answer=number", str(tmp_path),
        samples=2, rollouts=0,
    )  # fmt: skip
    identity = job.identity()
    older = json.loads(json.dumps(identity))
    del older["policy"]["chat_template"]  # a setting the older folder did not know (its default)
    older["policy"]["max_concurrency"] = 7  # a placement key: never part of the identity
    (tmp_path / "manifest.json").write_text(
        json.dumps({"format": "tts-eval/step-labels", "version": 1, "identity": older})
    )
    assert _check_folder(tmp_path, identity)["identity"] == older
    older["policy"]["dtype"] = "float16"  # a setting that changes samples: refused
    (tmp_path / "manifest.json").write_text(
        json.dumps({"format": "tts-eval/step-labels", "version": 1, "identity": older})
    )
    with pytest.raises(ValueError, match="policy.dtype: 'float16' there, 'auto' now"):
        _check_folder(tmp_path, identity)


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        # a step checked right is right, before or after uncheckable ones; the last step is the
        # solution's answer's
        ((None, True, True), [(False, "outcome"), (True, "checker"), (False, "outcome")]),
        # after a step checked wrong, a step checked right is not (its prefix holds an error)
        ((False, True, None), [(False, "checker"), (False, "outcome"), (False, "outcome")]),
        ((True, False, None), [(True, "checker"), (False, "checker"), (False, "outcome")]),
        # a wrong last step is wrong even in a solution whose answer is right
        ((None, None, False), [(False, "outcome"), (False, "outcome"), (False, "checker")]),
    ],
)
def test_combine_labels_with_a_checker_that_also_says_right(verdicts, expected):
    views = ("s1", "s2", "s3")
    verdict = dict(zip(views, verdicts, strict=True))
    got = combine_labels(views, outcome=False, mc={}, checker=verdict.get)
    assert [(s.label, s.source) for s in got] == expected
    right = combine_labels(views, outcome=True, mc={}, checker=verdict.get)
    assert right[-1].label is (verdicts[-1] is not False)


def test_the_checker_digest_names_the_file_that_defines_it(tmp_path):
    """A folder records which checker labelled it (a digest of its file): editing the checker
    changes the digest, so ``tts-eval label`` refuses to resume that folder with it."""
    import importlib.util

    from tts_eval.learn.label import checker_digest

    def load(name: str, body: str):
        path = tmp_path / f"{name}.py"
        path.write_text(f"def check_step(doc, step):\n    return {body}\n")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.check_step

    first, same, edited = load("a", "None"), load("b", "None"), load("c", "False")
    assert checker_digest(None) is None
    assert checker_digest(first) == checker_digest(same)  # same source, same verdicts
    assert checker_digest(first) != checker_digest(edited)
    assert len(checker_digest(first)) == 16
