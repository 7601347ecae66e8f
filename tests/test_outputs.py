"""Result files that cannot be written: checked before any model loads, written whole or not at
all, one line and a non-zero exit when the disk gives out (``tts_eval.files``,
``tts_eval.outputs``, the sweep's folder).

Folders are made read-only with ``chmod`` in a subprocess that cannot override file permissions
(as root, it drops ``CAP_DAC_OVERRIDE``); a full disk is a file-size limit (``RLIMIT_FSIZE``) on
the subprocess, so the kernel fails its writes part-way (``EFBIG``), as a disk that fills up does.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import subprocess
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path

import pytest
from test_lm_eval_errors import last_line

from tts_eval.errors import OutputError
from tts_eval.files import atomic_open, check_writable, write_atomic

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2
QUIET = {"PYTHONDONTWRITEBYTECODE": "1"}  # no .pyc writes under a file-size limit


def limited(fsize: int | None = None, read_only: bool = False):
    """``preexec_fn``: a file-size limit, and/or no way around file permissions (as root)."""

    def preexec() -> None:
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        if read_only and os.geteuid() == 0:
            libc = ctypes.CDLL(None, use_errno=True)
            for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
                if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                    raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    return preexec


def run(argv: list[str], cwd: Path, preexec, env: dict[str, str] | None = None):
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **QUIET, **(env or {})},
        preexec_fn=preexec,
        timeout=900,
    )


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def read_only_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


# ---------------------------------------------------------------------------- tts_eval.files


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old, complete")
    with pytest.raises(RuntimeError, match="writer failed"), atomic_open(target) as f:
        f.write("new, half")
        raise RuntimeError("writer failed")
    assert target.read_text() == "old, complete"
    assert files_under(tmp_path) == ["results.json"]
    write_atomic(target, "new, complete")
    assert target.read_text() == "new, complete"
    assert files_under(tmp_path) == ["results.json"]


def test_a_full_disk_is_one_line_and_no_file(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        from tts_eval.errors import OutputError
        from tts_eval.files import write_atomic
        try:
            write_atomic(sys.argv[1], "x" * 100_000, option="--out")
        except OutputError as exc:
            print(exc)
        """
    )
    target = tmp_path / "out" / "results.json"
    proc = run([sys.executable, "-c", code, str(target)], tmp_path, limited(fsize=8192))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"cannot write {target}: File too large (EFBIG); free space there or choose another --out"
    ]
    assert files_under(tmp_path) == []  # the folder was made, nothing truncated is in it


def test_check_writable_leaves_no_trace_and_refuses_a_file(tmp_path):
    check_writable(tmp_path / "a" / "b" / "c", option="--output_path")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "taken").write_text("")
    with pytest.raises(OutputError, match=r"taken: not a folder; choose another --output_path$"):
        check_writable(tmp_path / "taken", option="--output_path")


def test_check_writable_refuses_a_read_only_folder(tmp_path):
    folder = read_only_folder(tmp_path)
    code = (
        "import sys; from tts_eval.files import check_writable\n"
        "check_writable(sys.argv[1], option='--output_path')"
    )
    proc = run([sys.executable, "-c", code, str(folder / "run")], tmp_path, limited(read_only=True))
    assert proc.returncode == 1
    assert last_line(proc.stderr) == (
        f"tts_eval.errors.OutputError: cannot create the folder {folder / 'run'}: "
        "Permission denied (EACCES); choose another --output_path"
    )


# ---------------------------------------------------------------------------- lm-eval's results


def test_results_files_are_the_ones_lm_eval_writes(tmp_path, monkeypatch):
    """Our atomic writer and lm-eval 0.4.13's write the same file names and content."""
    from lm_eval.loggers.evaluation_tracker import EvaluationTracker

    from tts_eval import outputs

    def tracker(folder: Path) -> EvaluationTracker:
        t = EvaluationTracker(output_path=str(folder))
        t.general_config_tracker.log_experiment_args(
            model_source="tts",
            model_args="pretrained=org/policy,n=4",
            system_instruction=None,
            chat_template=None,
            fewshot_as_multiturn=False,
        )
        return t

    def sample() -> dict:
        return {
            "doc_id": 0,
            "arguments": [("prompt", {"until": []})],
            "resps": [["answer"]],
            "filtered_resps": ["answer"],
            "target": 3,
            "doc_hash": "d",
            "prompt_hash": "p",
            "target_hash": "t",
            "tts_trace": {"task": "arith"},
        }

    monkeypatch.setattr("time.perf_counter", lambda: 100.0)  # same timings in both
    written = {}
    for name, fn in (("lm_eval", None), ("ours", outputs)):
        t = tracker(tmp_path / name)
        if fn is not None:
            outputs.prepare_tracker(t, "pretrained=org/policy,n=4")
        results = {"results": {"arith": {"exact_match,none": 0.5}}, "configs": {"arith": {}}}
        t.save_results_aggregated(results=results, samples={"arith": [sample()]})
        t.save_results_samples(task_name="arith", samples=[sample()])
        files = {p.name.split("_20")[0]: p for p in (tmp_path / name).rglob("*") if p.is_file()}
        assert set(files) == {"results", "samples_arith"}
        assert all(p.parent.name == "org__policy" for p in files.values())
        written[name] = {
            "results": {
                k: v for k, v in json.loads(files["results"].read_text()).items() if k != "date"
            },
            "samples": files["samples_arith"].read_text(),
        }
    assert written["ours"] == written["lm_eval"]
    assert asdict(t.general_config_tracker)["model_name"] == "org/policy"


@pytest.mark.slow
@pytest.mark.parametrize("command", ["tts-eval", "lm_eval"])
def test_an_unwritable_output_path_is_one_line_before_any_model_loads(tmp_path, command):
    """The model path is a folder without a model: the output folder is refused before it is
    ever read."""
    (tmp_path / "no-model").mkdir()
    out = read_only_folder(tmp_path) / "results"
    args = ["--model", "tts", "--model_args", f"pretrained={tmp_path / 'no-model'}"]
    args += ["--tasks", "arith", "--limit", "2", "--output_path", str(out), "--log_samples"]
    exe = Path(sys.executable).parent
    argv = [str(exe / "tts-eval"), "eval"] if command == "tts-eval" else [str(exe / "lm_eval")]
    proc = run([*argv, *args], tmp_path, limited(read_only=True))
    message = (
        f"cannot create the folder {out}: Permission denied (EACCES); choose another --output_path"
    )
    if command == "tts-eval":
        assert proc.returncode == 2
        assert last_line(proc.stderr) == f"tts-eval eval: error: {message}"
        assert "Traceback" not in proc.stderr
    else:
        assert proc.returncode == 1
        assert last_line(proc.stderr) == f"tts_eval.errors.OutputError: {message}"
    assert "no-model" not in proc.stderr.replace(f"pretrained={tmp_path / 'no-model'}", "")


@pytest.mark.slow
@pytest.mark.parametrize(("command", "code"), [("tts-eval", 2), ("lm_eval", 1)])
def test_a_full_disk_at_the_end_exits_non_zero_and_leaves_no_truncated_file(
    tiny_llama, tmp_path, command, code
):
    """lm-eval alone writes the first 8 KiB of the results, logs the error and exits 0."""
    out = tmp_path / "out"
    args = ["--model", "tts", "--model_args", f"pretrained={tiny_llama},backend=hf,max_tokens=8"]
    args += ["--tasks", "arith", "--limit", "2", "--output_path", str(out), "--log_samples"]
    exe = Path(sys.executable).parent
    argv = [str(exe / "tts-eval"), "eval"] if command == "tts-eval" else [str(exe / "lm_eval")]
    proc = run([*argv, *args], tmp_path, limited(fsize=4096))
    assert proc.returncode == code, proc.stderr[-3000:]
    line = last_line(proc.stderr)
    prefix = "tts-eval eval: error: " if command == "tts-eval" else "tts_eval.errors.OutputError: "
    assert line.startswith(f"{prefix}cannot write {out}/"), proc.stderr[-3000:]
    assert "/results_" in line
    assert line.endswith(
        ": File too large (EFBIG); free space there or choose another --output_path"
    )
    assert files_under(out) == []


# ---------------------------------------------------------------------------- tts-eval sweep

SWEEP = """
import resource, sys
sys.path.insert(0, {tests!r})
from fakes import FakeAnswerSpec, FakePRM, RandomEngine
import tts_eval.runtime
from tts_eval import cli
from tts_eval.runtime.local import LocalSearcher

tts_eval.runtime.open_searcher = lambda config: LocalSearcher(
    RandomEngine(), FakePRM(), FakeAnswerSpec()
)
limit = int(sys.argv[2])
if limit:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.exit(cli.main(["sweep", sys.argv[1], "--no-progress"]))
"""


@pytest.mark.parametrize(("limit", "file"), [(1024, "sweep.json"), (6000, "runs/")])
def test_a_sweep_on_a_full_disk_is_one_line_and_leaves_no_temporary_file(
    tmp_path, monkeypatch, limit, file
):
    """The manifest (written first) or a run's records (appended per chunk) hit the limit."""
    from test_workflow_sweep import write_inputs

    out = tmp_path / "results"
    recipe = write_inputs(tmp_path, out, chunk_size=1, strategies=("best_of_n",), budgets=(4,))
    monkeypatch.setenv("TTS_EVAL_MATH500", str(tmp_path / "math500.jsonl"))
    code = SWEEP.format(tests=str(Path(__file__).parent))
    proc = run([sys.executable, "-c", code, str(recipe), str(limit)], tmp_path, None)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    line = last_line(proc.stderr)
    assert line.startswith(f"tts-eval sweep: error: cannot write {out}/{file}"), proc.stderr
    assert line.endswith(
        ": File too large (EFBIG); free space there or choose another --output_dir"
    )
    assert not [f for f in files_under(out) if f.endswith(".tmp")]
    # The same command, with room on the disk, finishes the sweep.
    again = run([sys.executable, "-c", code, str(recipe), "0"], tmp_path, None)
    assert again.returncode == 0, again.stderr[-3000:]
    records = (out / "runs").glob("*.jsonl")
    assert sum(len(p.read_text().splitlines()) for p in records) == 5
