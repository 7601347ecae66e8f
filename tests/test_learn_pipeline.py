"""The learn pipeline end to end on tiny models, through the CLI: label -> train-prm -> prm-eval,
resume after a kill, and the one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tts_eval.cli import run_command

ROOT = Path(__file__).resolve().parents[1]
PROCESSBENCH_TINY = Path(__file__).parent / "data" / "processbench_tiny.jsonl"
TASK_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {docs}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{target}"
generation_kwargs:
  until: []
  max_gen_toks: 24
metric_list:
  - metric: exact_match
"""

pytestmark = pytest.mark.slow


def _task_folder(root: Path, count: int = 6) -> Path:
    """Two tasks over ``count`` questions: ``tinyq`` (gold 1 or 2, what the scripted Llama
    boxes) and ``tinyq_nogold`` (no gold answer)."""
    root.mkdir(parents=True, exist_ok=True)
    docs = root / "docs.jsonl"
    docs.write_text(
        "".join(
            json.dumps({"question": f"What is {i}?", "answer": str(1 + i % 2)}) + "\n"
            for i in range(count)
        )
    )
    (root / "tinyq.yaml").write_text(TASK_YAML.format(name="tinyq", docs=docs, target="{{answer}}"))
    (root / "tinyq_nogold.yaml").write_text(
        TASK_YAML.format(name="tinyq_nogold", docs=docs, target="")
    )
    return root


def _label_args(model: Path, tasks: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--task", "tinyq", "--include_path", str(tasks),
        "--model_args", f"pretrained={model},backend=hf,max_tokens=24,seed=3",
        "--samples", "2", "--rollouts", "2", "--output_dir", str(out), "--no-progress", *extra,
    ]  # fmt: skip


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "tts-eval"
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, scripted_llama):
    """A labels folder from the CLI, on the scripted tiny Llama (6 problems)."""
    root = tmp_path_factory.mktemp("learn")
    tasks = _task_folder(root / "tasks")
    out = root / "labels"
    result = _cli("label", *_label_args(scripted_llama, tasks, out, "--chunk", "4"))
    assert result.returncode == 0, result.stderr[-3000:]
    return {"root": root, "tasks": tasks, "out": out, "stdout": result.stdout}


def test_label_writes_trl_stepwise_data_with_metadata(labelled):
    from datasets import load_from_disk

    out = labelled["out"]
    data = load_from_disk(str(out / "dataset"))
    assert {"prompt", "completions", "labels"} <= set(data.column_names)
    assert {"soft_labels", "label_sources", "uid", "correct"} <= set(data.column_names)
    records = [json.loads(line) for line in (out / "records.jsonl").open()]
    assert sorted(r["doc_id"] for r in records) == list(range(6))
    for row in data:
        assert len(row["completions"]) == len(row["labels"]) == len(row["label_sources"])
        assert all(isinstance(y, bool) for y in row["labels"])
        for label, soft, source in zip(
            row["labels"], row["soft_labels"], row["label_sources"], strict=True
        ):
            if source == "mc":  # hard label = some rollout reached the gold answer
                assert label == (soft > 0)
        assert row["labels"][-1] == row["correct"]  # the last step: the solution's own outcome
    manifest = json.loads((out / "manifest.json").read_text())
    identity = manifest["identity"]
    assert identity["policy"]["pretrained"].endswith(Path(identity["policy"]["pretrained"]).name)
    assert identity["settings"]["seed"] == 3 and identity["settings"]["rollouts"] == 2
    assert identity["task"] == "tinyq"
    described = json.loads(data.info.description)
    assert described["identity"] == identity
    stats = manifest["stats"]
    assert stats["problems"] == 6 and stats["steps"] == sum(len(r) for r in data["labels"])
    assert stats["rollout_prompt_tokens"] > 0
    assert 0 <= stats["rollout_cache_share"] <= 1
    assert "rollout prefix-cache share" in labelled["stdout"]


def test_a_killed_label_job_resumes_without_losing_or_repeating(labelled, scripted_llama):
    root = labelled["root"]
    out = root / "killed"
    exe = Path(sys.executable).parent / "tts-eval"
    args = _label_args(scripted_llama, labelled["tasks"], out, "--chunk", "1")
    proc = subprocess.Popen(
        [str(exe), "label", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
        start_new_session=True,
    )  # fmt: skip
    records = out / "records.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if records.is_file() and records.read_text().count("\n") >= 2:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    before = records.read_text().count("\n")
    assert 1 <= before < 6, "the job was not cut half-way"
    with open(records, "a") as f:  # a torn last line, as a kill during a write leaves
        f.write('{"doc_id": 5, "uid": "tin')
    result = _cli("label", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{before} problems recorded before, {6 - before} labelled" in result.stdout
    resumed = [json.loads(line) for line in records.open()]
    assert sorted(r["doc_id"] for r in resumed) == list(range(6))  # nothing lost or repeated
    whole = {r["doc_id"]: r for r in map(json.loads, (labelled["out"] / "records.jsonl").open())}
    for record in resumed:  # seeds per problem: chunking and resuming change nothing
        assert record["solutions"] == whole[record["doc_id"]]["solutions"]


def test_relabelling_with_other_settings_is_refused(labelled, scripted_llama, capsys):
    args = _label_args(scripted_llama, labelled["tasks"], labelled["out"])
    args[args.index("--rollouts") + 1] = "3"
    assert run_command("label", args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"tts-eval label: error: --output_dir {labelled['out']} was labelled with other settings "
        "(settings.rollouts: 2 there, 3 now); accepted: the same settings to resume, or another "
        "--output_dir"
    ]


@pytest.fixture(scope="module")
def trained(labelled, tiny_llama):
    out = labelled["root"] / "prm"
    result = _cli(
        "train-prm", "--model", str(tiny_llama), "--data", str(labelled["out"]),
        "--output_dir", str(out), "--max-steps", "2", "--batch-size", "2",
        "--val-fraction", "0.4", "--save-steps", "1", "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return {"out": out, "stdout": result.stdout}


def test_the_trained_folder_loads_as_a_prm_and_scores(trained, labelled):
    from tts_eval.prm import load_prm
    from tts_eval.types import PRMRequest

    out = trained["out"]
    report = json.loads((out / "tts_eval_prm.json").read_text())
    assert report["prm_type"] == "token_classification" and report["train_steps"] == 2
    assert report["validation_rows"] > 0 and report["train_tokens"] > 0
    assert "step_auroc" in report["validation"]
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForTokenClassification"]
    prm = load_prm(str(out))  # prm_type detected from the architecture
    try:
        [scored] = prm.score([PRMRequest("What is 2?", ("first step", "\\boxed{1}"))])
    finally:
        prm.close()
    assert len(scored.step_scores) == 2 and all(0 <= s <= 1 for s in scored.step_scores)
    assert (out / "checkpoints").is_dir()


def test_training_resumes_from_its_last_checkpoint(trained, labelled, tiny_llama, tmp_path):
    import shutil

    out = tmp_path / "prm"
    shutil.copytree(trained["out"], out)
    finished = json.loads((out / "tts_eval_prm.json").read_text())
    # as a kill after step 1 leaves it: checkpoint-1 only, no final report
    shutil.rmtree(out / "checkpoints" / "checkpoint-2")
    (out / "tts_eval_prm.json").unlink()
    args = [
        "train-prm", "--model", str(tiny_llama), "--data", str(labelled["out"]),
        "--output_dir", str(out), "--max-steps", "2", "--batch-size", "2",
        "--val-fraction", "0.4", "--save-steps", "1", "--no-progress",
    ]  # fmt: skip
    result = _cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "tts_eval_prm.json").read_text())
    assert report["resumed_from"].endswith("checkpoint-1")
    assert report["train_steps"] == 2 == finished["train_steps"]
    again = _cli(*args)  # finished: a re-run does nothing
    assert again.returncode == 0 and "nothing to do" in again.stderr
    assert json.loads((out / "tts_eval_prm.json").read_text()) == report


def test_balancing_and_truncated_layers(labelled, tiny_llama, tmp_path):
    from datasets import load_from_disk

    from tts_eval.learn.train import balance_rows

    rows = load_from_disk(str(labelled["out"] / "dataset"))
    ends = [r[-1] for r in rows["labels"]]
    assert 0 < sum(ends) < len(ends)
    kept = balance_rows(rows, 1.0, seed=0)
    kept_ends = [r[-1] for r in kept["labels"]]
    assert sum(kept_ends) == sum(ends)  # every row ending right is kept
    assert len(kept_ends) - sum(kept_ends) == min(sum(ends), len(ends) - sum(ends))
    assert balance_rows(rows, None, seed=0) is rows
    result = _cli(
        "train-prm", "--model", str(tiny_llama), "--data", str(labelled["out"]),
        "--output_dir", str(tmp_path / "small"), "--max-steps", "1", "--batch-size", "2",
        "--val-fraction", "0", "--layers", "1", "--negatives-per-positive", "1", "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((tmp_path / "small" / "config.json").read_text())
    assert config["num_hidden_layers"] == 1
    report = json.loads((tmp_path / "small" / "tts_eval_prm.json").read_text())
    assert report["train_rows"] == len(kept_ends)


def test_lora_adapters_are_merged_into_a_plain_prm(labelled, tiny_llama, tmp_path):
    from tts_eval.prm import load_prm
    from tts_eval.types import PRMRequest

    out = tmp_path / "lora"
    result = _cli(
        "train-prm", "--model", str(tiny_llama), "--data", str(labelled["out"]),
        "--output_dir", str(out), "--max-steps", "1", "--batch-size", "2", "--val-fraction", "0",
        "--lora", "--lora-r", "2", "--learning-rate", "1e-3", "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert not list(out.glob("adapter_*")), "adapters must be merged, not saved beside"
    assert json.loads((out / "tts_eval_prm.json").read_text())["settings"]["lora"] is True
    prm = load_prm(str(out))
    try:
        [scored] = prm.score([PRMRequest("What is 1?", ("a step", "\\boxed{1}"))])
    finally:
        prm.close()
    assert len(scored.step_scores) == 2


def test_prm_eval_equals_the_scores_it_reads(trained, labelled):
    from tts_eval.learn.data import load_steps
    from tts_eval.learn.evaluate import metrics_of, requests_of
    from tts_eval.prm import load_prm

    result = _cli("prm-eval", "--prm", str(trained["out"]), "--data", str(labelled["out"]),
                  "--no-progress")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout)
    data = load_steps(labelled["out"])
    prm = load_prm(str(trained["out"]))
    try:
        scores = [o.step_scores for o in prm.score(requests_of(data))]
    finally:
        prm.close()
    expected = metrics_of(data, scores)
    for key in ("steps", "step_auroc", "step_accuracy", "last_step_auroc"):
        assert (
            printed[key] == pytest.approx(expected[key])
            if expected[key] is not None
            else (printed[key] is None)
        )
    pb = _cli("prm-eval", "--prm", str(trained["out"]), "--data", str(PROCESSBENCH_TINY),
              "--no-progress")  # fmt: skip
    assert pb.returncode == 0, pb.stderr[-3000:]
    metrics = json.loads(pb.stdout)
    assert metrics["format"] == "processbench" and (metrics["erroneous"], metrics["correct"]) == (
        3,
        3,
    )


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("processbench_data", "is in processbench format (problem, steps, label); accepted for "
                              "training: TRL stepwise supervision"),
        ("no_tokenizer", "has no tokenizer transformers can load"),
        ("single_class", "the training labels are all bad"),
        ("empty_validation", "the validation split is empty"),
    ],
)  # fmt: skip
def test_train_prm_errors_are_one_line(case, message, labelled, tiny_llama, tmp_path, capsys):
    from tts_eval.learn.data import save_dataset

    model, data = str(tiny_llama), str(labelled["out"])
    extra: list[str] = []
    if case == "processbench_data":
        data = str(PROCESSBENCH_TINY)
    elif case == "no_tokenizer":
        bare = tmp_path / "bare"
        bare.mkdir()
        (bare / "config.json").write_text((tiny_llama / "config.json").read_text())
        model = str(bare)
    elif case == "single_class":
        rows = [{"prompt": f"q{i}", "completions": ["a"], "labels": [False]} for i in range(9)]
        save_dataset(rows, tmp_path / "bad", "{}")
        data, extra = str(tmp_path / "bad"), ["--val-fraction", "0"]
    else:
        rows = [{"prompt": "q", "completions": ["a", "b"], "labels": [True, False]}]
        save_dataset(rows, tmp_path / "one", "{}")
        data, extra = str(tmp_path / "one"), ["--val-fraction", "0.01"]
    argv = ["--model", model, "--data", data, "--output_dir", str(tmp_path / "o"), *extra]
    assert run_command("train-prm", argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tts-eval")]
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "o" / "config.json").exists()


def test_a_task_without_gold_answers_is_one_line_before_loading(
    labelled, scripted_llama, capsys, monkeypatch
):
    import tts_eval.engines

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(tts_eval.engines, "load_engine", no_loading)
    argv = [
        "--task", "tinyq_nogold", "--include_path", str(labelled["tasks"]),
        "--model_args", f"pretrained={scripted_llama},backend=hf",
        "--output_dir", str(labelled["root"] / "x"),
    ]  # fmt: skip
    assert run_command("label", argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "tts-eval label: error: --task 'tinyq_nogold' has no gold answer for doc 0 "
        "(doc_to_target gave ''); accepted: a task whose documents have gold answers"
    ]


def test_the_arith_task_offers_its_step_checker():
    from tts_eval.learn.label import load_task, task_checker

    checker = task_checker(load_task("arith_train"))
    assert checker is not None
    assert checker({}, "9 - 8 = 2") is False and checker({}, "9 - 8 = 1") is True


CHECKED_HOOKS = """
def doc_to_text(doc):
    return doc["question"]


def check_step(doc, step):
    return {verdict}
"""


def test_relabel_gives_what_labelling_anew_with_the_changed_checker_gives(scripted_llama, tmp_path):
    """A task's checker changes after its labels were written: the folder is refused (one line
    naming the checker), ``--relabel`` labels its recorded solutions again without generating,
    and the records equal a new job's with the changed checker."""
    tasks = _task_folder(tmp_path / "tasks")
    yaml = TASK_YAML.format(name="tinyqc", docs=tasks / "docs.jsonl", target="{{answer}}")
    yaml = yaml.replace('doc_to_text: "{{question}}"', "doc_to_text: !function hooks.doc_to_text")
    (tasks / "tinyqc.yaml").write_text(yaml)
    hooks = tasks / "hooks.py"

    def label(out: Path, *extra: str) -> subprocess.CompletedProcess:
        args = _label_args(scripted_llama, tasks, out, *extra)
        args[args.index("--task") + 1] = "tinyqc"
        return _cli("label", *args)

    hooks.write_text(CHECKED_HOOKS.format(verdict="None"))
    first = label(tmp_path / "a")
    assert first.returncode == 0, first.stderr[-3000:]
    before = [json.loads(line) for line in (tmp_path / "a" / "records.jsonl").open()]
    assert {s["source"] for r in before for sol in r["solutions"] for s in sol["steps"]} != {
        "checker"
    }
    # now a verdict for each step before the answer, by problem: right where the gold is 1
    hooks.write_text(
        CHECKED_HOOKS.format(verdict='None if "boxed" in step else doc["answer"] == "1"')
    )
    refused = label(tmp_path / "a")
    assert refused.returncode == 2
    assert "was labelled with other settings (checker_source: " in refused.stderr
    relabelled = label(tmp_path / "a", "--relabel")
    assert relabelled.returncode == 0, relabelled.stderr[-3000:]
    assert "6 problems recorded before, 0 labelled" in relabelled.stdout
    anew = label(tmp_path / "b")
    assert anew.returncode == 0, anew.stderr[-3000:]
    after = {r["doc_id"]: r for r in map(json.loads, (tmp_path / "a" / "records.jsonl").open())}
    fresh = {r["doc_id"]: r for r in map(json.loads, (tmp_path / "b" / "records.jsonl").open())}
    assert after == fresh
    checked = {
        (r["gold"], s["label"])
        for r in after.values()
        for sol in r["solutions"]
        for s in sol["steps"][:-1]  # the last step is the answer's
        if s["source"] == "checker"
    }
    assert checked == {("1", True), ("2", False)}  # the checker saw each problem's own doc
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert (
        manifest["identity"]["checker_source"]
        == json.loads((tmp_path / "b" / "manifest.json").read_text())["identity"]["checker_source"]
    )
    assert manifest["relabelled"][0]["problems"] == 6
    missing = label(tmp_path / "c", "--relabel")  # nothing recorded there: nothing to relabel
    assert missing.returncode == 2 and not (tmp_path / "c").exists()
    assert "--relabel: --output_dir" in missing.stderr and "no recorded labels" in missing.stderr
