"""Adding a PRM format from outside the package: ``tts_eval.prm.register_prm_format`` (this
process) and the ``tts_eval.prm_formats`` entry-point group (an installed package, every process).

The plugin is a package written to a temporary folder with its own ``*.dist-info`` (what ``pip
install`` leaves), so it is found the way an installed one is: through package metadata. A fresh
Python process with it on its path accepts ``prm_type=plain_steps`` in ``--model_args``, detects it
from the checkpoint's ``architectures``, scores steps with the plugin's format (the scores equal
P("+") read by hand at the plugin's positions) and runs a search with it. Its mistakes (an import
error, a wrong object, a clash with a built-in name) are one line each.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tts_eval.prm import PRMTypeSpec, register_prm_format
from tts_eval.prm.formats import FORMATS
from tts_eval.settings import PRMConfig

ROOT = Path(__file__).resolve().parents[1]
PROBLEM = "What is $2+3$?"
STEPS = ("We add $2+3=5$.", "The final answer is $\\boxed{5}$.")

PLUGIN = '''
"""A PRM format that lives outside tts-eval: problem, then one line per step; the score of a step
is P("+") read at the step's last token."""

from dataclasses import dataclass
from typing import Any, ClassVar

from tts_eval.prm import PRMTypeSpec
from tts_eval.prm.formats import FormattedInput, single_token_id
from tts_eval.prm.steps import clean_step


@dataclass(frozen=True)
class PlainStepsFormat:
    prm_type: ClassVar[str] = "plain_steps"
    tokenizer: Any
    good_id: int
    bad_id: int

    @classmethod
    def from_tokenizer(cls, tokenizer):
        fix = "use a tokenizer with single-token '+' and '-'"
        good = single_token_id(tokenizer, "+", prm_type=cls.prm_type, fix=fix)
        bad = single_token_id(tokenizer, "-", prm_type=cls.prm_type, fix=fix)
        return cls(tokenizer, good, bad)

    def format(self, problem, steps):
        ids = list(self.tokenizer(problem, add_special_tokens=False)["input_ids"])
        positions, text = [], problem
        for step in steps:
            piece = "\\n" + clean_step(step)
            ids += self.tokenizer(piece, add_special_tokens=False)["input_ids"]
            positions.append(len(ids) - 1)
            text += piece
        return FormattedInput(tuple(ids), tuple(positions), text)


SPEC = PRMTypeSpec(
    "plain_steps",
    "label_softmax",
    "test PRMs that read P('+') after each line",
    PlainStepsFormat,
    architectures=("PlainStepsLM",),
)
NOT_A_SPEC = object()
'''

ENTRY_POINTS = """
[tts_eval.prm_formats]
plain_steps = plain_prm_plugin:SPEC
broken_steps = plain_prm_plugin_missing:SPEC
wrong_steps = plain_prm_plugin:NOT_A_SPEC
"""

# Run in a fresh process with the plugin installed (on its path, metadata included).
SCRIPT = """
import json, sys
from tts_eval.prm import load_prm
from tts_eval.prm.registry import detect_prm_type, read_model_config
from tts_eval.runtime.local import LocalSearcher
from tts_eval.model_args import parse_model_args
from tts_eval.types import PRMRequest, Problem

policy, prm, detectable, problem, steps = sys.argv[1:6]
out = {}
try:
    parse_model_args(f"pretrained={policy},prm={prm},prm_type=nope")
except ValueError as exc:
    out["unknown"] = str(exc)
for name in ("broken_steps", "wrong_steps"):
    try:
        parse_model_args(f"pretrained={policy},prm={prm},prm_type={name}")  # accepted by name
        load_prm(prm, name)
    except ValueError as exc:
        out[name] = str(exc)
out["detected"] = detect_prm_type(detectable, read_model_config(detectable))
adapter = load_prm(prm, "plain_steps")
out["format"] = type(adapter.format).__name__
(scored,) = adapter.score([PRMRequest(problem, tuple(steps.split("|")))])
out["scores"] = list(scored.step_scores)
config = parse_model_args(
    f"pretrained={policy},backend=hf,prm={detectable},strategy=best_of_n,n=2,max_tokens=200"
)
with LocalSearcher.from_config(config) as searcher:
    ids = tuple(searcher.render_prompt([{"role": "user", "content": problem}]))
    (result,) = searcher.search([Problem(uid="p0", text=problem, prompt_ids=ids)], config.search)
out["searched"] = [len(result.candidates), result.cost.prm_tokens]
print(json.dumps(out))
"""


def install_plugin(site: Path) -> Path:
    """Write the plugin package and its dist-info (as pip would) under ``site``."""
    (site / "plain_prm_plugin").mkdir(parents=True)
    (site / "plain_prm_plugin" / "__init__.py").write_text(PLUGIN)
    info = site / "plain_prm_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plain-prm-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return site


def hand_scores(prm: Path, problem: str, steps: tuple[str, ...]) -> list[float]:
    """P("+") of the plugin's format, read with transformers directly."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(prm)
    model = AutoModelForCausalLM.from_pretrained(prm, dtype=torch.float32).eval()
    ids = list(tok(problem, add_special_tokens=False)["input_ids"])
    positions = []
    for step in steps:
        ids += tok("\n" + step, add_special_tokens=False)["input_ids"]
        positions.append(len(ids) - 1)
    good, bad = tok.convert_tokens_to_ids("+"), tok.convert_tokens_to_ids("-")
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    pair = logits[positions][:, [good, bad]].softmax(-1)
    return pair[:, 0].tolist()


@pytest.mark.slow
def test_an_installed_plugin_adds_a_prm_format(scripted_llama, tiny_prm, tmp_path):
    site = install_plugin(tmp_path / "site")
    detectable = tmp_path / "plain-prm"  # the tiny PRM under an architecture only the plugin knows
    shutil.copytree(tiny_prm, detectable)
    config = json.loads((detectable / "config.json").read_text())
    config.update(architectures=["PlainStepsLM"], _name_or_path="")
    (detectable / "config.json").write_text(json.dumps(config))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
    }
    args = [str(scripted_llama), str(tiny_prm), str(detectable), PROBLEM, "|".join(STEPS)]
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["unknown"].startswith(
        "model_args prm_type=nope is invalid; accepted: rlhflow, math_shepherd, qwen_prm, "
        "skywork, token_classification, plain_steps, broken_steps, wrong_steps"
    ), out["unknown"]
    assert out["broken_steps"] == (
        "prm_type=broken_steps: entry point 'plain_prm_plugin_missing:SPEC' of "
        "tts_eval.prm_formats does not load: ModuleNotFoundError: No module named "
        "'plain_prm_plugin_missing'"
    )
    assert out["wrong_steps"] == (
        "prm_type=wrong_steps: entry point 'plain_prm_plugin:NOT_A_SPEC' of tts_eval.prm_formats "
        "is a object, not a tts_eval.prm.PRMTypeSpec"
    )
    assert out["detected"] == "plain_steps" and out["format"] == "PlainStepsFormat"
    assert out["scores"] == pytest.approx(hand_scores(tiny_prm, PROBLEM, STEPS), abs=1e-5)
    candidates, prm_tokens = out["searched"]  # a search scored by the detected plugin format
    assert candidates == 2 and prm_tokens > 0


class EveryTokenFormat:
    """A second outside format: the problem and steps as one text, scored at every step's end
    with a head of our own (a callable) that reads a fixed value."""

    prm_type = "constant_steps"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    @classmethod
    def from_tokenizer(cls, tokenizer):
        return cls(tokenizer)

    def format(self, problem, steps):
        from tts_eval.prm.formats import FormattedInput

        ids, positions = list(self.tokenizer(problem, add_special_tokens=False)["input_ids"]), []
        for step in steps:
            ids += self.tokenizer(" " + step, add_special_tokens=False)["input_ids"]
            positions.append(len(ids) - 1)
        return FormattedInput(tuple(ids), tuple(positions), problem + " " + " ".join(steps))


def constant_head(path, backbone, fmt):
    import torch

    class Quarter(torch.nn.Module):
        def forward(self, hidden):
            return torch.full(hidden.shape[:-1], 0.25)

    return Quarter()


@pytest.fixture
def fresh_registry(monkeypatch):
    """Formats registered by a test stay in that test."""
    monkeypatch.setattr("tts_eval.prm.registry._ADDED", {})
    monkeypatch.setattr("tts_eval.settings._REGISTERED_PRM_TYPES", {})


def test_register_prm_format_in_process(tiny_prm, fresh_registry):
    spec = PRMTypeSpec("constant_steps", constant_head, "tests", EveryTokenFormat)
    with pytest.raises(ValueError, match="^model_args prm_type=constant_steps is invalid"):
        PRMConfig(str(tiny_prm), "constant_steps")
    assert register_prm_format(spec) is spec
    assert register_prm_format(spec) is spec  # the same spec again: a no-op
    other = PRMTypeSpec("constant_steps", "label_softmax", "tests", EveryTokenFormat)
    with pytest.raises(ValueError, match="^prm_type 'constant_steps' is already registered"):
        register_prm_format(other)
    PRMConfig(str(tiny_prm), "constant_steps")
    with pytest.raises(ValueError, match="^model_args prm_step_separator=x is invalid; accepted: "):
        PRMConfig(str(tiny_prm), "constant_steps", step_separator="x")
    from tts_eval.prm import load_prm
    from tts_eval.types import PRMRequest

    adapter = load_prm(tiny_prm, "constant_steps", device="cpu")
    (out,) = adapter.score([PRMRequest(PROBLEM, STEPS)])
    assert out.step_scores == (0.25, 0.25) and out.tokens_processed > 0


class MineFormat(EveryTokenFormat):
    prm_type = "mine"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: PRMTypeSpec("rlhflow", "label_softmax", "", FORMATS["rlhflow"]),
            "prm_type 'rlhflow' is built in; register the format under another name",
        ),
        (
            lambda: PRMTypeSpec("mine", "softmax", "", MineFormat),
            "PRMTypeSpec 'mine': head='softmax' is invalid; accepted: label_softmax, qwen_reward, "
            "value_sigmoid, token_class, or a function (path, backbone, fmt) -> torch module",
        ),
        (
            lambda: PRMTypeSpec("mine", "label_softmax", "", None),
            "PRMTypeSpec 'mine': format=None has no from_tokenizer(tokenizer); accepted: a format "
            "class like those of tts_eval.prm.formats",
        ),
        (
            lambda: PRMTypeSpec("Mine", "label_softmax", "", MineFormat),
            "PRMTypeSpec 'Mine': prm_type must be a lowercase name ([a-z][a-z0-9_]*), got 'Mine'",
        ),
        (
            lambda: PRMTypeSpec("mine", "label_softmax", "", FORMATS["rlhflow"]),
            "PRMTypeSpec 'mine': its format's prm_type is 'rlhflow'; they must agree",
        ),
    ],
)
def test_bad_specs_are_one_line(make, message, fresh_registry):
    with pytest.raises(ValueError) as info:
        register_prm_format(make())
    assert str(info.value) == message


def test_a_label_softmax_format_needs_its_label_ids(tiny_prm, fresh_registry):
    """head=label_softmax with a format that has no good_id/bad_id: one line before the weights."""
    from transformers import AutoTokenizer

    from tts_eval.prm.registry import build_format

    register_prm_format(PRMTypeSpec("mine", "label_softmax", "", MineFormat))
    with pytest.raises(ValueError) as info:
        build_format("mine", AutoTokenizer.from_pretrained(tiny_prm))
    assert str(info.value) == (
        "prm_type=mine: head=label_softmax reads the logits of the format's good_id and bad_id "
        "tokens, which MineFormat does not have"
    )
