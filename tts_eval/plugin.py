"""Registration of the ``tts`` model and the tts-eval tasks with lm-evaluation-harness.

lm-eval releases after 0.4.13 discover the model through the ``lm_eval.models`` entry point declared
in ``pyproject.toml``. lm-eval 0.4.13 has no plugin mechanism for models or tasks, so this module
provides a registration that is

* lazy: it runs from a post-import hook (``tts_eval._lm_eval_hook``) only when lm_eval's registry or
  task manager is imported, or when :func:`register` is called explicitly;
* idempotent: running it twice changes nothing;
* harmless to built-ins: lm-eval loads its own model table only while its registry is empty, so the
  built-in table is imported *before* ``tts`` is added (``--model hf`` keeps resolving), and the
  task manager keeps its default task folders and simply gets ours appended to ``include_path``.

Two more small wrappers let ``--model tts`` honour lm-eval's own flags instead of ignoring them
(see :data:`tts_eval.settings.LM_EVAL_FLAGS`): ``simple_evaluate`` records, for the duration of
the call, the flags lm-eval never hands to a model (``--gen_kwargs`` as typed, ``--seed``,
``--cache_requests``, ``--apply_chat_template``), and the ``--model_args`` parser notes keys given
twice (lm-eval's parser keeps the last one with a warning), and the run command's config notes
whether ``--device`` was given (lm-eval fills in ``cuda:0`` when it was not, so the model cannot
tell ``--device cuda:0`` from no flag). For every other model they change nothing.

For ``--model tts`` runs, the ``simple_evaluate`` wrapper also, before the model is built,
refuses ``--num_fewshot`` on our zero-shot tasks (:func:`check_num_fewshot`; lm-eval would only
log that it ignores it) and checks the output folder and makes the result files atomic
(:func:`tts_eval.outputs.prepare_tracker`); afterwards it records in the results' ``config``
the device the policy ran on (``device``; lm-eval records the flag, ``cuda:0`` by default).

What this module does not do: import torch, transformers or the model wrapper itself (the model is
registered as a lazy ``"module:Class"`` placeholder).
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from tts_eval.errors import DataError, MissingFileError, SettingError
from tts_eval.model_args import LM_EVAL_FLAGS, POLICY_DEVICE_KEY

logger = logging.getLogger(__name__)

MODEL_NAME = "tts"
MODEL_TARGET = "tts_eval.lm_model:TTSLM"
_PATCHED = "_tts_eval_include_path"
_FLAGS_PATCHED = "_tts_eval_flags"
_DEVICE_PATCHED = "_tts_eval_device"
# Keys given twice in --model_args, noted by the patched parser until simple_evaluate takes them.
_repeated_model_args: list[str] = []
# The --device the run command was given (None: not given), noted by the patched EvaluatorConfig
# until simple_evaluate takes it; empty when simple_evaluate is called from Python.
_cli_device: list[str | None] = []


def tasks_dir() -> Path:
    """Folder holding the task YAML: ``tts_eval/tasks`` in a wheel, ``<repo>/tasks`` when editable."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "tasks", here.parent / "tasks"):
        if (candidate / "math500").is_dir():
            return candidate
    raise MissingFileError(
        f"tts-eval task folder not found next to {here}; reinstall tts-scaling-eval"
    )


def _lm_eval_has_entry_points() -> bool:
    """True for lm-eval releases that load ``lm_eval.models`` entry points themselves (> 0.4.13)."""
    from importlib.metadata import version

    try:
        parts = tuple(int(p) for p in version("lm_eval").split(".")[:3] if p.isdigit())
    except Exception:  # noqa: BLE001 - unknown/odd version string: register ourselves
        return False
    return parts > (0, 4, 13)


def register_model(registry: ModuleType | None = None) -> None:
    """Add ``tts`` to lm-eval's model registry (after its built-ins), once."""
    if registry is None:
        import lm_eval.api.registry as registry
    model_registry = registry.model_registry
    if MODEL_NAME in model_registry or _lm_eval_has_entry_points():
        return
    # get_model() imports lm_eval.models (the built-in table) only while the registry is empty:
    # populate it first, or adding "tts" would hide every built-in model.
    import lm_eval.models  # noqa: F401

    if MODEL_NAME not in model_registry:
        model_registry.register(MODEL_NAME, target=MODEL_TARGET)


def patch_task_manager(manager_module: ModuleType | None = None) -> None:
    """Make every ``TaskManager`` also index our task folder, once."""
    if manager_module is None:
        import lm_eval.tasks.manager as manager_module
    cls = manager_module.TaskManager
    if getattr(cls.__init__, _PATCHED, False):
        return
    original = cls.__init__

    @functools.wraps(original)
    def __init__(self, *args, include_path=None, **kwargs):
        ours = str(tasks_dir())
        if include_path is None:
            include_path = [ours]
        else:
            paths = (
                list(include_path) if isinstance(include_path, (list, tuple)) else [include_path]
            )
            if ours not in {str(p) for p in paths}:
                paths.append(ours)
            include_path = paths
        original(self, *args, include_path=include_path, **kwargs)

    setattr(__init__, _PATCHED, True)
    cls.__init__ = __init__


def lm_eval_flags(signature: inspect.Signature, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The flags of one ``simple_evaluate(*args, **kwargs)`` call that concern ``--model tts``."""
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:  # simple_evaluate itself will say what is wrong
        return {}
    bound.apply_defaults()
    values = bound.arguments
    gen_kwargs = values.get("gen_kwargs")
    if isinstance(gen_kwargs, str):
        from lm_eval.utils import simple_parse_args_string

        gen_kwargs = simple_parse_args_string(gen_kwargs)
    repeated = list(_repeated_model_args)
    _repeated_model_args.clear()
    # The device the user chose: the command line's --device (lm-eval's run command fills in
    # cuda:0 when it is absent), else simple_evaluate's own argument (None unless given).
    device = _cli_device.pop() if _cli_device else values.get("device")
    _cli_device.clear()
    return {
        "gen_kwargs": dict(gen_kwargs) if gen_kwargs else None,
        "seed": values.get("random_seed"),
        "cache_requests": bool(values.get("cache_requests")),
        "apply_chat_template": values.get("apply_chat_template") or False,
        "repeated_model_args": tuple(repeated),
        "device_flag": device,
    }


def _task_names(signature: inspect.Signature, args: tuple, kwargs: dict) -> list[str]:
    try:
        tasks = signature.bind_partial(*args, **kwargs).arguments.get("tasks")
    except TypeError:
        return []
    if isinstance(tasks, str):
        tasks = tasks.split(",")
    return [t.strip() for t in tasks or [] if isinstance(t, str)]


def task_hooks(task: str) -> ModuleType:
    """A task folder's hook module (``<tasks_dir>/<task>/utils.py``, standard library only),
    loaded on its own: without lm-eval building the task."""
    spec = importlib.util.spec_from_file_location(
        f"tts_eval_{task}_hooks", tasks_dir() / task / "utils.py"
    )
    if spec is None or spec.loader is None:
        raise MissingFileError(f"task {task!r} has no utils.py under {tasks_dir()}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_task_data(tasks: Sequence[str]) -> None:
    """Check the local data file of our tasks among ``tasks`` (``math500`` with
    ``$TTS_EVAL_MATH500``) before lm-eval builds the model: one line naming file, line and field
    (the hooks raise built-in errors, being standard library only: ours here)."""
    if "math500" not in tasks or not os.environ.get("TTS_EVAL_MATH500"):
        return
    try:
        task_hooks("math500").check_math500_file()
    except FileNotFoundError as exc:
        raise MissingFileError(str(exc)) from None
    except ValueError as exc:
        raise DataError(str(exc)) from None


def is_tts_model(model: Any) -> bool:
    """True for ``--model tts`` (the name, or a model object of this package)."""
    if isinstance(model, str):
        return model == MODEL_NAME
    return type(model).__module__.startswith("tts_eval.")


@functools.cache
def zero_shot_tasks() -> frozenset[str]:
    """Names (and tags) of our tasks whose YAML fixes ``num_fewshot: 0``."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)  # !function hooks
    names: set[str] = set()
    for path in sorted(tasks_dir().glob("*/*.yaml")):
        config = yaml.load(path.read_text(), Loader=Loader)
        if isinstance(config, dict) and config.get("num_fewshot") == 0 and "task" in config:
            tags = config.get("tag") or []
            names.update([config["task"], *([tags] if isinstance(tags, str) else tags)])
    return frozenset(names)


def check_num_fewshot(num_fewshot: Any, tasks: Sequence[str]) -> None:
    """Refuse ``--num_fewshot N`` (N > 0) for our zero-shot tasks: lm-eval would ignore it with
    an INFO line, and ``--model tts`` runs them zero-shot."""
    if num_fewshot in (None, 0):
        return
    fixed = [t for t in tasks if t in zero_shot_tasks()]
    if fixed:
        accepted = (
            "0 or no flag (--model tts runs these tasks zero-shot: the prompt asks for steps and "
            "a boxed answer, and the search needs no examples)"
        )
        raise SettingError(
            "--num_fewshot",
            num_fewshot,
            accepted,
            scope="lm_eval",
            message=f"lm_eval --num_fewshot={num_fewshot} is invalid with --tasks "
            f"{','.join(fixed)}; accepted: {accepted}",
        )


def record_device(results: Any) -> None:
    """Put the device the policy ran on (``TTSLM.get_model_info``) in the results' ``config``
    as ``device``, where lm-eval records its flag (``cuda:0`` when none was given)."""
    config = results.get("config") if isinstance(results, dict) else None
    if isinstance(config, dict) and POLICY_DEVICE_KEY in config:
        config["device"] = config.pop(POLICY_DEVICE_KEY)


def patch_simple_evaluate(evaluator: ModuleType | None = None) -> None:
    """Make ``simple_evaluate`` publish its flags in :data:`~tts_eval.settings.LM_EVAL_FLAGS`,
    and, for ``--model tts``, check its flags and outputs first (module docstring)."""
    if evaluator is None:
        import lm_eval.evaluator as evaluator
    original = evaluator.simple_evaluate
    if getattr(original, _FLAGS_PATCHED, False):
        return
    signature = inspect.signature(original)

    @functools.wraps(original)
    def simple_evaluate(*args, **kwargs):
        tasks = _task_names(signature, args, kwargs)
        check_task_data(tasks)
        try:
            values = signature.bind(*args, **kwargs).arguments
        except TypeError:  # simple_evaluate itself will say what is wrong
            values = {}
        tts = is_tts_model(values.get("model"))
        if tts:
            check_num_fewshot(values.get("num_fewshot"), tasks)
            tracker = values.get("evaluation_tracker")
            if tracker is not None:
                from tts_eval.outputs import prepare_tracker

                prepare_tracker(tracker, values.get("model_args"))
        token = LM_EVAL_FLAGS.set(lm_eval_flags(signature, args, kwargs))
        try:
            results = original(*args, **kwargs)
        finally:
            LM_EVAL_FLAGS.reset(token)
        if tts:
            record_device(results)
        return results

    setattr(simple_evaluate, _FLAGS_PATCHED, True)
    evaluator.simple_evaluate = simple_evaluate


def repeated_keys(
    values: Sequence[Any], seen: Iterable[str], split: Callable[[str], list[str]]
) -> list[str]:
    """Keys that ``--model_args`` parts ``values`` give twice (or that ``seen`` already has)."""
    keys = list(seen)
    repeated: list[str] = []
    for value in values:
        if not isinstance(value, str) or value.lstrip().startswith("{"):
            continue  # a JSON object: one mapping, no repeats to see
        for part in split(value):
            key = part.split("=", 1)[0].strip()
            if key in keys and key not in repeated:
                repeated.append(key)
            keys.append(key)
    return repeated


def patch_model_args_parser(cli_utils: ModuleType | None = None) -> None:
    """Make lm-eval's ``--model_args`` parser note repeated keys (it keeps the last one)."""
    if cli_utils is None:
        import lm_eval._cli.utils as cli_utils
    action = getattr(cli_utils, "MergeDictAction", None)
    split = getattr(cli_utils, "split_top_level", None)
    if action is None or split is None or getattr(action.__call__, _FLAGS_PATCHED, False):
        return
    original = action.__call__

    @functools.wraps(original)
    def __call__(self, parser, namespace, values, option_string=None):
        if self.dest == "model_args" and values:
            parts = [values] if isinstance(values, str) else list(values)
            seen = getattr(namespace, self.dest, None) or {}
            for key in repeated_keys(parts, seen, split):
                if key not in _repeated_model_args:
                    _repeated_model_args.append(key)
        return original(self, parser, namespace, values, option_string)

    setattr(__call__, _FLAGS_PATCHED, True)
    action.__call__ = __call__


def patch_evaluator_config(config_module: ModuleType | None = None) -> None:
    """Make the run command's ``EvaluatorConfig.from_cli`` note the ``--device`` it was given
    (on the command line or in its ``--config`` YAML; None when neither), once."""
    if config_module is None:
        import lm_eval.config.evaluate_config as config_module
    cls = getattr(config_module, "EvaluatorConfig", None)
    from_cli = getattr(cls, "from_cli", None)
    if from_cli is None or getattr(from_cli, _DEVICE_PATCHED, False):
        return
    original = from_cli.__func__

    @functools.wraps(original)
    def patched(klass, namespace):
        instance = original(klass, namespace)
        device = getattr(namespace, "device", None)
        yaml_path = getattr(namespace, "config", None)
        if device is None and yaml_path:
            device = klass.load_yaml_config(yaml_path).get("device")
        _cli_device[:] = [device]
        return instance

    setattr(patched, _DEVICE_PATCHED, True)
    cls.from_cli = classmethod(patched)


def on_lm_eval_module_loaded(name: str, module: ModuleType) -> None:
    """Callback of the post-import hook."""
    if name == "lm_eval.api.registry":
        register_model(module)
    elif name == "lm_eval.tasks.manager":
        patch_task_manager(module)
    elif name == "lm_eval.evaluator":
        patch_simple_evaluate(module)
    elif name == "lm_eval._cli.utils":
        patch_model_args_parser(module)
    elif name == "lm_eval.config.evaluate_config":
        patch_evaluator_config(module)


def register() -> None:
    """Explicit registration (what the ``tts-eval`` CLI and tests call)."""
    register_model()
    patch_task_manager()
    patch_simple_evaluate()
    patch_model_args_parser()
    patch_evaluator_config()
