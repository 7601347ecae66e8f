"""PRM metrics (hand-computed tables), step data sets (formats, splits), arith's step checker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tts_eval.learn.data import (
    PROCESSBENCH,
    STEPWISE,
    DataFormatError,
    detect_format,
    load_steps,
    save_dataset,
    split_by_problem,
)
from tts_eval.learn.evaluate import metrics_of, processbench_metrics, stepwise_metrics
from tts_eval.learn.metrics import accuracy, auroc, first_error, processbench_f1

PROCESSBENCH_TINY = Path(__file__).parent / "data" / "processbench_tiny.jsonl"


@pytest.mark.parametrize(
    ("scores", "labels", "expected"),
    [
        ([0.9, 0.8, 0.2, 0.1], [True, True, False, False], 1.0),
        ([0.1, 0.2, 0.8, 0.9], [True, True, False, False], 0.0),
        # positives 0.9, 0.3; negatives 0.5, 0.1: pairs won 1 + 1 + 0 + 1 = 3 of 4
        ([0.9, 0.5, 0.3, 0.1], [True, False, True, False], 0.75),
        # a tie between a positive and a negative counts 1/2: (1 + 0.5) / 2
        ([0.5, 0.5, 0.1], [True, False, True], 0.25),
        ([0.5, 0.5], [True, False], 0.5),
        ([0.3, 0.4], [True, True], None),  # one class only
    ],
)
def test_auroc_table(scores, labels, expected):
    assert auroc(scores, labels) == (None if expected is None else pytest.approx(expected))


def test_accuracy_and_first_error():
    assert accuracy([0.9, 0.4, 0.5, 0.1], [True, False, False, True]) == 0.5
    assert accuracy([0.9, 0.4], [True, True], threshold=0.3) == 1.0
    assert first_error([0.9, 0.7, 0.2, 0.9]) == 2
    assert first_error([0.9, 0.7]) == -1
    assert first_error([0.4]) == 0
    assert first_error([0.6, 0.55], threshold=0.6) == 1


def test_processbench_f1_table():
    # erroneous: labels 1, 0, 2 predicted 1, 1, 2 -> 2/3 ; correct: -1, -1 predicted -1, 0 -> 1/2
    result = processbench_f1([1, 1, 2, -1, 0], [1, 0, 2, -1, -1])
    assert result.error_accuracy == pytest.approx(2 / 3)
    assert result.correct_accuracy == pytest.approx(1 / 2)
    assert result.f1 == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))
    assert (result.erroneous, result.correct) == (3, 2)
    none_right = processbench_f1([0, 0], [1, -1])
    assert (none_right.error_accuracy, none_right.correct_accuracy, none_right.f1) == (0, 0, 0)
    assert processbench_f1([-1], [-1]).f1 is None  # no erroneous solution: F1 undefined


def test_stepwise_and_processbench_metrics_from_scores():
    metrics = stepwise_metrics([[0.9, 0.2], [0.6, 0.7, 0.1]], [[True, False], [True, True, False]])
    assert metrics["steps"] == 5 and metrics["rows"] == 2
    assert metrics["step_auroc"] == pytest.approx(1.0)
    assert metrics["step_accuracy"] == pytest.approx(1.0)
    assert metrics["last_step_auroc"] is None  # both last steps are bad
    pb = processbench_metrics([[0.9, 0.3, 0.8], [0.9, 0.9]], [1, -1])
    assert (pb["error_accuracy"], pb["correct_accuracy"], pb["f1"]) == (1.0, 1.0, 1.0)


def test_formats_are_detected_and_others_refused(tmp_path):
    assert detect_format(["prompt", "completions", "labels", "uid"], "x") == STEPWISE
    assert detect_format(["id", "problem", "steps", "label"], "x") == PROCESSBENCH
    with pytest.raises(DataFormatError, match=r"has columns \['question', 'text'\]; accepted"):
        detect_format(["question", "text"], "x")
    data = load_steps(PROCESSBENCH_TINY)
    assert data.format == PROCESSBENCH and len(data.rows) == 6
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"question": "q", "text": "t"}) + "\n")
    with pytest.raises(DataFormatError, match="accepted: TRL stepwise"):
        load_steps(other)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_steps(tmp_path / "missing.parquet")
    with pytest.raises(DataFormatError, match=".csv file"):
        (tmp_path / "x.csv").write_text("a\n")
        load_steps(tmp_path / "x.csv")


def test_metrics_of_a_processbench_file_equal_the_hand_computation():
    data = load_steps(PROCESSBENCH_TINY)
    # scores that call step 1 of rows 1 and 4 wrong, and row 3's step 0 (a correct solution) too
    scores = [
        [0.9, 0.8, 0.9],
        [0.9, 0.2, 0.1],
        [0.3, 0.9],
        [0.4, 0.9, 0.9],
        [0.7, 0.1, 0.2],
        [0.8, 0.9],
    ]
    got = metrics_of(data, scores)
    # erroneous rows 1, 2, 4 (labels 1, 0, 1) predicted 1, 0, 1: 3/3; correct rows 0, 3, 5 -> -1, 0, -1: 2/3
    assert got["error_accuracy"] == 1.0
    assert got["correct_accuracy"] == pytest.approx(2 / 3)
    assert got["f1"] == pytest.approx(0.8)


def test_split_by_problem_keeps_problems_whole(tmp_path):
    rows = [
        {
            "prompt": f"q{i % 10}",
            "completions": ["a", "b"],
            "labels": [True, False],
            "uid": f"u{i % 10}",
        }
        for i in range(60)
    ]
    save_dataset(rows, tmp_path / "d", "{}")
    data = load_steps(tmp_path / "d")
    train, val = split_by_problem(data, 0.3, seed=0)
    assert len(train) + len(val) == 60
    assert set(train["uid"]).isdisjoint(val["uid"])
    assert len(val) > 0 and len(train) > 0
    again_train, _ = split_by_problem(data, 0.3, seed=0)
    assert again_train["uid"] == train["uid"]
    with pytest.raises(ValueError, match="validation fraction 1"):
        split_by_problem(data, 1.0)


def _arith():
    import importlib.util

    from tts_eval.plugin import tasks_dir

    spec = importlib.util.spec_from_file_location(
        "arith_hooks_l", tasks_dir() / "arith" / "utils.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("step", "verdict"),
    [
        ("Ben has 9 - 8 = 2 shells.", False),
        ("So, 9 - 8 = 1 shell is left.", True),
        ("2 + 5 = 7 and 7 - 2 = 5", True),
        ("2 + 5 = 7 and 7 - 2 = 4", False),
        ("9 - 2 + 1 = 2 more coins", False),
        ("3 * 4 = 12.", True),
        ("3 × 4 = 13", False),
        ("The answer is 7.", None),
        ("Ben has 9 coins.", None),
        ("9^8 is big", None),
        ("6 / 0 = 1", None),
    ],
)
def test_arith_step_checker(step, verdict):
    assert _arith().check_step({}, step) is verdict


@pytest.mark.parametrize(
    ("expression", "step", "verdict"),
    [
        ("9 + 2", "9 + 2 = 11", True),
        ("9 + 2", "2 * 9 = 18", False),  # true, but not the question's operation
        ("9 - 2", "9 + 2 = 11", False),
        ("9 - 2 + 1", "9 - 2 = 7", True),
        ("9 - 2 + 1", "2 - 1 = 1 so 9 - 1 = 8", True),  # 9 - (2 - 1)
        ("9 - 2 + 1", "2 + 1 = 3", False),  # 9 - (2 + 1) is not the question
        ("9 - 2 + 1", "7 + 1 = 8", True),
        ("2 + 5 - 2", "5 - 2 = 3", True),
        ("2 + 5 - 2", "2 + 5 = 8", False),  # false arithmetic
        ("2 + 5 - 2", "The answer is 5.", None),
    ],
)
def test_arith_step_checker_knows_the_way_to_the_answer(expression, step, verdict):
    arith = _arith()
    assert arith.check_step({"expression": expression}, step) is verdict
    values = {int(v) for v in arith.path_values(expression)}
    assert eval(expression) in values  # noqa: S307 (digits, +, -)


def test_arith_training_split_is_disjoint_from_the_test_questions():
    arith = _arith()
    train = arith.training_problems(2000, 1)
    assert len(train) == 2000 and train == arith.training_problems(2000, 1)
    reserved = {row["question"] for row in arith.generate_problems(arith.TEST_RESERVE)}
    assert not reserved & {row["question"] for row in train}
    assert arith.generate_problems(500)[:100] == arith.generate_problems(100)
    with pytest.raises(ValueError, match="another seed"):
        arith.training_problems(10, arith.SEED)


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("\\n", "\n"),
        ("\\n\\n", "\n\n"),
        (" ки", " ки"),
        ("\\t", "\t"),
        ("a\\\\b", "a\\b"),
        ("<extra_0>", "<extra_0>"),
    ],
)
def test_separators_typed_on_the_command_line(typed, meant):
    from tts_eval.learn.cli import unescape

    assert unescape(typed) == meant
