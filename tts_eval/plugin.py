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

What this module does not do: import torch, transformers or the model wrapper itself (the model is
registered as a lazy ``"module:Class"`` placeholder).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from types import ModuleType

logger = logging.getLogger(__name__)

MODEL_NAME = "tts"
MODEL_TARGET = "tts_eval.lm_model:TTSLM"
_PATCHED = "_tts_eval_include_path"


def tasks_dir() -> Path:
    """Folder holding the task YAML: ``tts_eval/tasks`` in a wheel, ``<repo>/tasks`` when editable."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "tasks", here.parent / "tasks"):
        if (candidate / "math500").is_dir():
            return candidate
    raise FileNotFoundError(
        f"tts-eval task folder not found next to {here}; reinstall tts-eval (pip install tts-eval)"
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


def on_lm_eval_module_loaded(name: str, module: ModuleType) -> None:
    """Callback of the post-import hook."""
    if name == "lm_eval.api.registry":
        register_model(module)
    elif name == "lm_eval.tasks.manager":
        patch_task_manager(module)


def register() -> None:
    """Explicit registration (what the ``tts-eval`` CLI and tests call)."""
    register_model()
    patch_task_manager()
