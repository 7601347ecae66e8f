"""Registration of the tts model and our tasks with lm-eval (fresh interpreters via subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tts_eval import plugin

ROOT = Path(__file__).resolve().parents[1]


def run_py(code: str, **env: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip()


def test_importing_package_is_cheap():
    out = run_py(
        "import sys, tts_eval, tts_eval.types, tts_eval.plugin\n"
        "heavy = [m for m in ('lm_eval', 'torch', 'transformers', 'vllm') if m in sys.modules]\n"
        "print(heavy)"
    )
    assert out == "[]"


def test_hook_is_installed_at_startup_without_importing_lm_eval():
    out = run_py(
        "import sys\nprint('tts_eval._lm_eval_hook' in sys.modules, 'lm_eval' in sys.modules)"
    )
    assert out == "True False"


def test_tts_and_builtin_models_resolve_after_registry_import():
    out = run_py(
        "from lm_eval.api.registry import get_model\n"
        "print(get_model('tts').__name__, get_model('hf').__name__, get_model('dummy').__name__)"
    )
    assert out == "TTSLM HFLM DummyLM"


def test_builtin_models_resolve_even_when_lm_eval_models_was_never_imported():
    # get_model() loads lm-eval's table only when the registry is empty: registering "tts"
    # first must not hide the built-ins.
    out = run_py(
        "import lm_eval.api.registry as r\n"
        "import sys\n"
        "print('tts' in r.model_registry, 'hf' in r.model_registry)"
    )
    assert out == "True True"


def test_task_manager_sees_math500_and_builtin_tasks():
    out = run_py(
        "from lm_eval.tasks import TaskManager\n"
        "tm = TaskManager()\n"
        "print('math500' in tm.all_tasks, 'gsm8k' in tm.all_tasks)\n"
        "tm2 = TaskManager(include_path='/nonexistent-dir')\n"
        "print('math500' in tm2.all_tasks)"
    )
    assert out.splitlines() == ["True True", "True"]


def test_registration_is_idempotent():
    out = run_py(
        "from tts_eval import plugin\n"
        "import lm_eval.api.registry as r\n"
        "from lm_eval.tasks.manager import TaskManager\n"
        "n = len(r.model_registry)\n"
        "plugin.register(); plugin.register()\n"
        "init = TaskManager.__init__\n"
        "plugin.patch_task_manager()\n"
        "tm = TaskManager()\n"
        "print(len(r.model_registry) == n, TaskManager.__init__ is init,"
        " [str(p) for p in tm.include_path].count(str(plugin.tasks_dir())))"
    )
    assert out == "True True 1"


def test_hook_can_be_switched_off_and_explicit_registration_still_works():
    out = run_py(
        "import lm_eval.api.registry as r\n"
        "before = 'tts' in r.model_registry\n"
        "from tts_eval import plugin; plugin.register()\n"
        "print(before, 'tts' in r.model_registry, 'hf' in r.model_registry)",
        TTS_EVAL_NO_LM_EVAL_HOOK="1",
    )
    assert out == "False True True"


def test_console_script_lists_eval_command():
    exe = Path(sys.executable).parent / "tts-eval"
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "eval" in proc.stdout
    bad = subprocess.run([str(exe), "nope"], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "accepted: eval" in bad.stderr


@pytest.mark.slow
def test_wheel_ships_hook_and_tasks(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = tmp_path.glob("tts_scaling_eval-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    # The distribution's name is not tts-eval (an unrelated package on PyPI); the import name is.
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    assert "\nName: tts-scaling-eval\n" in zipfile.ZipFile(wheel).read(metadata).decode()
    assert "tts_eval/cli.py" in names
    assert "tts_eval_lm_eval_hook.pth" in names
    assert "tts_eval/tasks/math500/math500.yaml" in names
    assert "tts_eval/tasks/math500/utils.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[lm_eval.models]" in text and "tts = tts_eval.lm_model:TTSLM" in text
    assert "tts-eval = tts_eval.cli:main" in text


def test_hook_wraps_simple_evaluate_and_the_model_args_parser():
    out = run_py(
        "import lm_eval.evaluator as e, lm_eval._cli.utils as u\n"
        "from lm_eval import simple_evaluate\n"
        "print(getattr(simple_evaluate, '_tts_eval_flags', False),"
        " getattr(u.MergeDictAction.__call__, '_tts_eval_flags', False))"
    )
    assert out == "True True"


def test_simple_evaluate_publishes_the_flags_lm_eval_never_hands_to_a_model():
    # simple_evaluate with a model object that records LM_EVAL_FLAGS when asked to evaluate
    out = run_py(
        "from lm_eval import simple_evaluate\n"
        "from tts_eval.model_args import LM_EVAL_FLAGS\n"
        "seen = {}\n"
        "class Stop(Exception): pass\n"
        "def spy(*a, **k):\n"
        "    seen.update(LM_EVAL_FLAGS.get()); raise Stop\n"
        "import lm_eval.api.registry as r\n"
        "r.get_model = lambda name: type('M', (), {'create_from_arg_obj': staticmethod(spy),"
        " 'create_from_arg_string': staticmethod(spy)})\n"
        "try:\n"
        "    simple_evaluate(model='tts', model_args='pretrained=x', tasks=['math500'],"
        " gen_kwargs='max_gen_toks=5,temperature=0', random_seed=7)\n"
        "except Stop: pass\n"
        "print(sorted(seen['gen_kwargs'].items()), seen['seed'], seen['cache_requests'],"
        " LM_EVAL_FLAGS.get())"
    )
    assert out == "[('max_gen_toks', 5), ('temperature', 0)] 7 False None"


def test_model_args_parser_notes_keys_given_twice():
    out = run_py(
        "import argparse\n"
        "from lm_eval._cli.utils import MergeDictAction\n"
        "from tts_eval import plugin\n"
        "p = argparse.ArgumentParser()\n"
        "p.add_argument('--model_args', nargs='+', action=MergeDictAction)\n"
        "p.add_argument('--gen_kwargs', nargs='+', action=MergeDictAction)\n"
        "ns = p.parse_args(['--model_args', 'pretrained=x,n=2,n=4', 'seed=1',"
        " '--model_args', 'seed=2', '--gen_kwargs', 'a=1,a=2'])\n"
        "print(ns.model_args['n'], plugin._repeated_model_args)"
    )
    assert out == "4 ['n', 'seed']"


def test_repeated_keys_reads_lm_eval_syntax():
    def split(text: str) -> list[str]:
        return [p for p in text.split(",") if p]

    assert plugin.repeated_keys(["a=1,b=2", "a=3"], [], split) == ["a"]
    assert plugin.repeated_keys(["b=2"], {"b": 1}, split) == ["b"]
    assert plugin.repeated_keys(['{"a": 1, "a": 2}'], [], split) == []
