"""Post-import hook that plugs tts-eval into lm-eval 0.4.13, which has no plugin mechanism.

The wheel installs ``tts_eval_lm_eval_hook.pth``, whose one line imports this module at interpreter
start. All it does then is put a tiny finder on ``sys.meta_path`` (microseconds, no other imports).
Only when a program imports one of the lm_eval modules in ``_WATCHED`` (the model registry, the
task manager, the evaluator, the CLI's argument helpers, the run command's config) does the finder
run the matching :mod:`tts_eval.plugin` function right after that module has executed. So ``lm_eval --model tts``,
``python -m lm_eval`` and ``lm_eval.simple_evaluate`` see the ``tts`` model and the ``math500``
task with no extra flags, and programs that never import lm_eval pay nothing.

Set ``TTS_EVAL_NO_LM_EVAL_HOOK=1`` to switch the hook off (then call ``tts_eval.plugin.register()``
yourself, or use the ``tts-eval eval`` command).
"""

from __future__ import annotations

import importlib.abc
import os
import sys

_WATCHED = (
    "lm_eval.api.registry",
    "lm_eval.tasks.manager",
    "lm_eval.evaluator",
    "lm_eval._cli.utils",
    "lm_eval.config.evaluate_config",
)


class _LoaderWithCallback(importlib.abc.Loader):
    def __init__(self, inner, fullname: str) -> None:
        self._inner = inner
        self._fullname = fullname

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module) -> None:
        self._inner.exec_module(module)
        from tts_eval import plugin

        plugin.on_lm_eval_module_loaded(self._fullname, module)

    def __getattr__(self, name):  # get_source, get_code, is_package, ... for tracebacks
        return getattr(self._inner, name)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the real loader of the watched lm_eval modules."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _WATCHED:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _LoaderWithCallback(spec.loader, fullname)
                return spec
        return None


def install() -> None:
    """Idempotently put the finder first on ``sys.meta_path`` (or patch already-loaded modules)."""
    if os.environ.get("TTS_EVAL_NO_LM_EVAL_HOOK"):
        return
    if not any(isinstance(f, _PostImportFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PostImportFinder())
    loaded = [name for name in _WATCHED if name in sys.modules]
    if loaded:
        from tts_eval import plugin

        for name in loaded:
            plugin.on_lm_eval_module_loaded(name, sys.modules[name])


install()
