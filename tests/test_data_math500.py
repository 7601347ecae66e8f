"""The local MATH-500 file (``TTS_EVAL_MATH500``): every bad file is ONE line naming the file, the
line and the field, from the task's loader, from ``check_math500_file`` (what the ``tts`` model
calls before loading anything), from lm-eval's TaskManager and from the ``lm_eval`` command."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from lm_eval_cli import run_lm_eval

from tts_eval.plugin import tasks_dir

# How a plain lm_eval run's traceback ends for a bad data file (tts-eval eval: one line).
DATA_ERROR = "tts_eval.errors.DataError: "

GOOD = {
    "problem": "What is 1+2?",
    "solution": "1+2=3",
    "answer": "3",
    "subject": "Algebra",
    "level": 1,
    "unique_id": "test/algebra/1.json",
}


def hooks():
    """The task's ``utils.py``, loaded by path the way lm-eval loads it (a private name)."""
    path = tasks_dir() / "math500" / "utils.py"
    spec = importlib.util.spec_from_file_location("math500_hooks_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def line(**changes) -> str:
    row = {**GOOD, **changes}
    return json.dumps({k: v for k, v in row.items() if v is not DROP}) + "\n"


DROP = object()

# (id, file content, line named, what the message must say)
BAD_FILES = [
    ("empty", b"", 1, "the file has no rows"),
    ("blank-lines-only", b"\n  \n", 1, "the file has no rows"),
    ("malformed-json", (line() + '{"problem": "x", oops}\n').encode(), 2, "not valid JSON"),
    ("truncated-json", (line() + line())[:-20].encode(), 2, "not valid JSON"),
    ("not-an-object", (line() + "[1, 2]\n").encode(), 2, "expected a JSON object with fields"),
    ("no-answer", (line() + line() + line(answer=DROP)).encode(), 3, "field 'answer' is missing"),
    (
        "two-missing",
        line(answer=DROP, level=DROP).encode(),
        1,
        "fields 'answer', 'level' are missing",
    ),
    ("null-answer", line(answer=None).encode(), 1, "field 'answer' must be a string, got null"),
    ("number-problem", line(problem=5).encode(), 1, "field 'problem' must be a string"),
    ("empty-problem", line(problem="  ").encode(), 1, "field 'problem' is empty"),
    ("float-level", line(level=1.5).encode(), 1, "field 'level' must be an integer"),
    (
        "mixed-levels",
        (line() + line(level="Level 2")).encode(),
        2,
        "field 'level' is a string but an integer on the first row",
    ),
    ("not-utf8", line().encode() + b'{"problem": "\xff"}\n', 2, "not UTF-8"),
]


@pytest.fixture(params=BAD_FILES, ids=[case[0] for case in BAD_FILES])
def bad_file(request, tmp_path, monkeypatch):
    name, content, number, message = request.param
    path = tmp_path / f"{name}.jsonl"
    path.write_bytes(content)
    monkeypatch.setenv("TTS_EVAL_MATH500", str(path))
    return path, number, message


def assert_one_line(error: BaseException, path: Path, number: int, message: str) -> None:
    text = str(error)
    assert "\n" not in text, text
    assert text.startswith(f"TTS_EVAL_MATH500 file {path}, line {number}: "), text
    assert message in text, text


def test_loader_names_file_line_and_field(bad_file):
    path, number, message = bad_file
    module = hooks()
    for call in (
        module.load_math500,
        module.check_math500_file,
        lambda: module.check_math500_file(path),
    ):
        with pytest.raises(ValueError) as info:
            call()
        assert_one_line(info.value, path, number, message)


def _task_manager():
    from tts_eval import plugin

    plugin.register()
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=False)


@pytest.mark.parametrize("case", ["empty", "malformed-json", "no-answer"])
def test_task_manager_load_names_file_line_and_field(case, tmp_path, monkeypatch):
    _, content, number, message = next(c for c in BAD_FILES if c[0] == case)
    path = tmp_path / "math500.jsonl"
    path.write_bytes(content)
    monkeypatch.setenv("TTS_EVAL_MATH500", str(path))
    with pytest.raises(ValueError) as info:
        _task_manager().load(["math500"])
    assert_one_line(info.value, path, number, message)


def test_good_file_loads_every_row_and_field(tmp_path, monkeypatch):
    path = tmp_path / "math500.jsonl"
    path.write_text(line() + "\n" + line(unique_id="u2", extra="kept", level=3))
    monkeypatch.setenv("TTS_EVAL_MATH500", str(path))
    module = hooks()
    assert module.check_math500_file() == 2
    data = module.load_math500(version=1.0)
    assert list(data) == ["test"] and len(data["test"]) == 2
    assert data["test"][1]["extra"] == "kept" and data["test"][1]["level"] == 3
    task = _task_manager().load(["math500"])["tasks"]["math500"]
    docs = list(task.test_docs())
    assert [d["unique_id"] for d in docs] == [GOOD["unique_id"], "u2"]


def test_check_is_a_no_op_without_a_local_file(monkeypatch):
    monkeypatch.delenv("TTS_EVAL_MATH500", raising=False)
    assert hooks().check_math500_file() is None


def test_missing_file_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TTS_EVAL_MATH500", str(tmp_path / "nope.jsonl"))
    with pytest.raises(FileNotFoundError) as info:
        hooks().check_math500_file()
    assert "\n" not in str(info.value) and "TTS_EVAL_MATH500=" in str(info.value)


@pytest.mark.slow
def test_lm_eval_run_reports_one_line_before_generating(tmp_path):
    """The row without ``answer`` used to surface as a jinja2 UndefinedError deep in lm-eval."""
    _, content, number, message = next(c for c in BAD_FILES if c[0] == "no-answer")
    path = tmp_path / "math500.jsonl"
    path.write_bytes(content)
    proc = run_lm_eval(
        ["--model", "dummy", "--tasks", "math500", "--limit", "1"],
        {"TTS_EVAL_MATH500": str(path)},
        tmp_path,
    )
    assert proc.returncode != 0
    assert "UndefinedError" not in proc.stderr
    errors = [x for x in proc.stderr.splitlines() if x.startswith(DATA_ERROR)]
    assert errors, proc.stderr[-3000:]
    assert errors[-1] == (
        f"{DATA_ERROR}TTS_EVAL_MATH500 file {path}, line {number}: {message} "
        "(required: problem, solution, answer, subject, level, unique_id)"
    )


@pytest.mark.parametrize("command", ["lm_eval", "tts-eval eval"])
def test_a_bad_file_is_reported_before_the_model_is_built(command, tmp_path):
    """``--model tts`` with a policy path that does not exist: the data error comes first, so
    nothing was loaded (the model would have failed on its path)."""
    import subprocess
    import sys

    _, content, number, message = next(c for c in BAD_FILES if c[0] == "malformed-json")
    path = tmp_path / "math500.jsonl"
    path.write_bytes(content)
    args = [
        "--model",
        "tts",
        "--model_args",
        "pretrained=/nonexistent/policy",
        "--tasks",
        "math500",
    ]
    if command == "lm_eval":
        proc = run_lm_eval(args, {"TTS_EVAL_MATH500": str(path)}, tmp_path)
        lines = [x for x in proc.stderr.splitlines() if x.startswith(DATA_ERROR)]
        last = lines[-1] if lines else proc.stderr[-3000:]
        assert last.startswith(f"{DATA_ERROR}TTS_EVAL_MATH500 file {path}, line {number}: ")
    else:
        exe = Path(sys.executable).parent / "tts-eval"
        proc = subprocess.run(
            [str(exe), "eval", *args],
            capture_output=True,
            text=True,
            env={**__import__("os").environ, "TTS_EVAL_MATH500": str(path), "HF_HUB_OFFLINE": "1"},
            cwd=tmp_path,
            timeout=300,
        )
        assert (
            proc.stderr.strip()
            .splitlines()[-1]
            .startswith(f"tts-eval eval: error: TTS_EVAL_MATH500 file {path}, line {number}: ")
        ), proc.stderr[-3000:]
    assert proc.returncode != 0
    assert "pretrained" not in proc.stderr.splitlines()[-1]
    assert message in proc.stderr
