"""Errors of every ``tts-eval`` command: one line (exit 2) for tts-eval's own errors
(:class:`~tts_eval.errors.TTSEvalError`) and for a disk that cannot take a file; a traceback for
anything else (a bug, even a plain ``ValueError``); ``TTS_EVAL_TRACEBACK=1`` shows the traceback
of every error, for every command.

Each command is run in-process through :func:`tts_eval.cli.run_command` with an error raised
from the first function of its own path (so the workflow commands' guard is crossed too), and,
where one costs no model or lm-eval start, with real arguments that tts-eval refuses.
"""

from __future__ import annotations

import errno
import importlib
import os
import subprocess
import sys

import pytest

from tts_eval import cli
from tts_eval.errors import (
    DataError,
    MissingDependencyError,
    MissingFileError,
    SettingError,
    TTSEvalError,
    UnsupportedError,
)

# command -> (module, function) raising the injected error, and argv that reaches it
PATHS = {
    "eval": ("tts_eval.plugin", "register", []),
    "sweep": ("tts_eval.workflow.recipe", "load_sweep_recipe", ["recipe.yaml"]),
    "report": ("tts_eval.workflow.results", "load_results", ["results"]),
    "plot": ("tts_eval.workflow.results", "load_results", ["results"]),
    "fit-compute-optimal": ("tts_eval.workflow.results", "load_results", ["results"]),
    "compare": ("tts_eval.workflow.compare", "load_systems", ["results", "--no-figures"]),
    "demo": ("tts_eval.workflow.demo", "run_demo", []),
    "label": (
        "tts_eval.model_args",
        "parse_model_args",
        ["--task", "arith", "--model_args", "pretrained=x", "--output_dir", "labels"],
    ),
    "train-prm": (
        "tts_eval.learn.train",
        "train_prm",
        ["--model", "x", "--data", "labels", "--output_dir", "prm"],
    ),
    "prm-eval": ("tts_eval.learn.evaluate", "evaluate_prm", ["--prm", "prm", "--data", "labels"]),
}

OURS = [
    (
        SettingError("n", 0, "an integer >= 1"),
        "model_args n=0 is invalid; accepted: an integer >= 1",
    ),
    (DataError("results x: line 3 is not a trace record\nmore"), "results x: line 3 is not a"),
    (MissingFileError("recipe y.yaml: no such file"), "recipe y.yaml: no such file"),
    (MissingDependencyError("backend=vllm needs vLLM: pip install x"), "backend=vllm needs vLLM"),
    (UnsupportedError("loglikelihood is not served"), "loglikelihood is not served"),
    (
        OSError(errno.ENOSPC, "No space left on device", "/full/out.json"),
        "cannot write /full/out.json: ",
    ),
]
# Built-in errors that used to be printed as one line: now bugs, with their traceback.
BUGS = [
    ValueError("bug: a value nobody checked"),
    ImportError("bug: an import that is not optional"),
    FileNotFoundError(errno.ENOENT, "No such file or directory", "/internal/file"),
    NotImplementedError("bug: a method left abstract"),
    KeyError("bug"),
]


# Modules that bind an injected function at import (``from ... import name``): imported before
# the function is replaced, so that they keep the real one for the tests after.
PRELOAD = {"label": ("tts_eval.learn.label",)}


@pytest.fixture
def inject(monkeypatch, tmp_path):
    """``inject(command, error)``: the argv of ``command`` after making its first call raise
    ``error``; runs in ``tmp_path`` with tracebacks off. Afterwards no module may hold on to the
    replacement (a module first imported while it was in place would keep it)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(cli.TRACEBACK_ENV, raising=False)
    fakes = []

    def arm(command: str, error: BaseException) -> list[str]:
        module, name, argv = PATHS[command]
        for other in PRELOAD.get(command, ()):
            importlib.import_module(other)

        def fail(*args, **kwargs):
            raise error.with_traceback(None)

        fakes.append((name, fail))
        monkeypatch.setattr(importlib.import_module(module), name, fail)
        return list(argv)

    yield arm
    monkeypatch.undo()
    for name, fail in fakes:
        ours = [(m, mod) for m, mod in list(sys.modules.items()) if m.startswith("tts_eval")]
        held = [m for m, mod in ours if getattr(mod, name, None) is fail]
        assert not held, f"{held} kept the fake {name}: add them to PRELOAD"


def error_lines(err: str, command: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(f"tts-eval {command}:")]


def test_every_command_is_covered():
    assert set(PATHS) == set(cli.COMMANDS)


@pytest.mark.parametrize("command", sorted(PATHS))
@pytest.mark.parametrize(("error", "line"), OURS, ids=lambda x: type(x).__name__)
def test_our_errors_are_one_line(inject, capsys, command, error, line):
    argv = inject(command, error)
    assert cli.run_command(command, argv) == 2
    err = capsys.readouterr().err
    assert error_lines(err, command) == [err.strip().splitlines()[-1]]
    assert err.strip().splitlines()[-1].startswith(f"tts-eval {command}: error: {line}")
    assert "Traceback" not in err


@pytest.mark.parametrize("command", sorted(PATHS))
@pytest.mark.parametrize("error", BUGS, ids=lambda x: type(x).__name__)
def test_other_errors_keep_their_traceback(inject, capsys, command, error):
    argv = inject(command, error)
    with pytest.raises(type(error)) as info:
        cli.run_command(command, argv)
    assert info.value is error
    assert error_lines(capsys.readouterr().err, command) == []


@pytest.mark.parametrize("command", sorted(PATHS))
@pytest.mark.parametrize(("error", "line"), OURS, ids=lambda x: type(x).__name__)
def test_traceback_env_shows_our_errors_too(inject, monkeypatch, capsys, command, error, line):
    argv = inject(command, error)
    monkeypatch.setenv(cli.TRACEBACK_ENV, "1")
    with pytest.raises(type(error)) as info:
        cli.run_command(command, argv)
    assert info.value is error
    assert error_lines(capsys.readouterr().err, command) == []


# Real arguments each command refuses before any model or lm-eval loads (``eval``'s are in
# test_lm_eval_errors.py: lm-eval starts first), and the class of the error.
REFUSED = {
    "sweep": (["missing.yaml"], DataError, "recipe missing.yaml: no such file"),
    "report": (["missing"], DataError, "results missing: no such folder or file"),
    "plot": (["missing"], DataError, "results missing: no such folder or file"),
    "fit-compute-optimal": (["missing"], DataError, "results missing: no such folder or file"),
    "compare": (["missing", "--no-figures"], DataError, "results missing: no such folder"),
    "demo": (["--backend", "tpu"], SettingError, "tts-eval demo backend=tpu is invalid"),
    "label": (
        ["--task", "arith", "--model_args", "pretrained=x,n=0", "--output_dir", "labels"],
        SettingError,
        "model_args n=0 is invalid; accepted: an integer >= 1",
    ),
    "train-prm": (
        ["--model", "x", "--data", "labels", "--output_dir", "prm", "--max-steps", "0"],
        SettingError,
        "tts-eval train-prm max_steps=0 is invalid; accepted: -1 or an integer >= 1",
    ),
    "prm-eval": (
        ["--prm", "prm", "--data", "missing"],
        MissingFileError,
        "data set missing does not exist",
    ),
}


def test_every_command_but_eval_has_refused_arguments():
    assert set(REFUSED) == set(cli.COMMANDS) - {"eval"}


@pytest.mark.parametrize("command", sorted(REFUSED))
def test_refused_arguments_are_one_line(monkeypatch, tmp_path, capsys, command):
    argv, _, line = REFUSED[command]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(cli.TRACEBACK_ENV, raising=False)
    assert cli.run_command(command, argv) == 2
    err = capsys.readouterr().err
    (only,) = error_lines(err, command)
    assert only.startswith(f"tts-eval {command}: error: {line}")
    assert err.strip().splitlines()[-1] == only and "Traceback" not in err


@pytest.mark.parametrize("command", sorted(REFUSED))
def test_refused_arguments_with_the_traceback_env(monkeypatch, tmp_path, capsys, command):
    argv, kind, line = REFUSED[command]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(cli.TRACEBACK_ENV, "1")
    with pytest.raises(kind, match=f"^{line}") as info:
        cli.run_command(command, argv)
    assert isinstance(info.value, TTSEvalError)
    assert error_lines(capsys.readouterr().err, command) == []


@pytest.mark.parametrize("env", [{}, {cli.TRACEBACK_ENV: "1"}], ids=["plain", "traceback"])
def test_the_installed_command(tmp_path, env):
    """``tts-eval report /nonexistent``: one line and exit 2; with TTS_EVAL_TRACEBACK=1 the
    traceback of the same error (the issue's example printed one line either way)."""
    environ = {k: v for k, v in os.environ.items() if k != cli.TRACEBACK_ENV}
    code = "import sys; from tts_eval.cli import main; sys.exit(main())"
    proc = subprocess.run(
        [sys.executable, "-c", code, "report", str(tmp_path / "nonexistent")],
        capture_output=True,
        text=True,
        env={**environ, **env},
        cwd=tmp_path,
        timeout=120,
    )
    line = f"results {tmp_path / 'nonexistent'}: no such folder or file"
    if env:
        assert proc.returncode == 1
        assert "Traceback (most recent call last)" in proc.stderr
        assert proc.stderr.rstrip().splitlines()[-1] == f"tts_eval.errors.DataError: {line}"
    else:
        assert proc.returncode == 2
        assert proc.stderr.splitlines() == [f"tts-eval report: error: {line}"]
