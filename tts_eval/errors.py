"""The errors tts-eval raises on purpose: one line each, naming what to change.

Every class here derives from :class:`TTSEvalError`; the ``tts-eval`` commands print those as one
line (``tts-eval <command>: error: <message>``, exit 2) and anything else with its traceback (a
bug), and ``TTS_EVAL_TRACEBACK=1`` shows the traceback of every error. Each class also derives from
the built-in exception callers would catch for it, so ``except ValueError`` keeps working:

- :class:`SettingError` (``ValueError``): a bad setting, carrying ``key``, ``value`` and
  ``accepted`` (vLLM's ``VLLMValidationError`` is the model); its message is
  ``<scope> KEY=VALUE is invalid; accepted: ...`` unless a whole message is given;
- :class:`DataError` (``ValueError``): a file or record we read is not what it must be (a results
  folder, a trace record, a recipe, a data set), or a command's argument that is not a
  ``model_args`` setting is refused; :class:`MissingFileError` (``FileNotFoundError``): a file
  we were pointed at does not exist;
- :class:`MissingDependencyError` (``ImportError``): an optional dependency is missing; the message
  says what to install;
- :class:`UnsupportedError` (``NotImplementedError``): a request --model tts cannot serve;
- :class:`OutOfMemoryError`, :class:`EngineError`, :class:`OutputError` (``RuntimeError``): a batch
  that did not fit, a backend crash, a result file that could not be written.

What this module does not do: catch anything; the engines and PRMs translate their backends'
errors into these at the edge, with one line that names the argument to change.
"""

from __future__ import annotations

import os
from typing import Any

# Set (to anything) to see the traceback of every error of a tts-eval command, ours included.
TRACEBACK_ENV = "TTS_EVAL_TRACEBACK"


class TTSEvalError(Exception):
    """Base of the errors tts-eval raises on purpose (one line, naming what to change)."""


def show_value(value: Any) -> str:
    """A value as a command line shows it: strings bare, control characters escaped (one line)."""
    if isinstance(value, str):
        text = "".join(repr(c)[1:-1] if c.isspace() and c != " " else c for c in value)
        return text if text else "''"
    return repr(value)


class SettingError(TTSEvalError, ValueError):
    """A setting with a value tts-eval does not accept.

    ``key`` names the setting, ``value`` is what was given, ``accepted`` says what would be
    accepted and ``scope`` where the setting came from (``model_args``, ``lm_eval --gen_kwargs``,
    ``recipe configs/x.yaml``, ...). ``message`` replaces the standard line
    ``<scope> KEY=VALUE is invalid; accepted: <accepted>`` where that reads badly (a required key
    that is missing, say); the fields are kept all the same.
    """

    def __init__(
        self,
        key: str,
        value: Any,
        accepted: str,
        *,
        scope: str = "model_args",
        message: str | None = None,
    ) -> None:
        self.key = key
        self.value = value
        self.accepted = accepted
        self.scope = scope
        text = message or f"{scope} {key}={show_value(value)} is invalid; accepted: {accepted}"
        super().__init__(text)

    def __reduce__(self):  # keep the fields through pickling (Ray workers, subprocesses)
        return (_setting_error, (self.key, self.value, self.accepted, self.scope, str(self)))


def _setting_error(key: str, value: Any, accepted: str, scope: str, message: str) -> SettingError:
    return SettingError(key, value, accepted, scope=scope, message=message)


class DataError(TTSEvalError, ValueError):
    """A file or record tts-eval reads is not what it must be; the message names it and what is
    wrong (results folders, trace records, recipes, routing tables, data sets)."""


class MissingFileError(TTSEvalError, FileNotFoundError):
    """A file or folder tts-eval was pointed at does not exist; the message names it and the
    option or setting that chose it."""


class MissingDependencyError(TTSEvalError, ImportError):
    """An optional dependency is not installed; the message says what to install."""


class UnsupportedError(TTSEvalError, NotImplementedError):
    """A request ``--model tts`` cannot serve (e.g. loglikelihood); the message says what can."""


class OutOfMemoryError(TTSEvalError, RuntimeError):
    """A batch did not fit in device memory; the message names the knob that makes it smaller."""


class EngineError(TTSEvalError, RuntimeError):
    """A policy engine failed while generating (a backend crash, not a bad argument).

    One line naming the engine (backend and model), the request(s) it was running (index in the
    ``generate`` call, prompt length, n and seed) and the backend's own error; the original
    exception is its ``__cause__``.
    """


class OutputError(TTSEvalError, RuntimeError):
    """A result file could not be written (a full disk, a folder that is not writable): one line
    naming the file, the system's reason and the option that chooses another place. Nothing
    truncated is left under the file's name (see :mod:`tts_eval.files`)."""


def in_context(exc: ValueError, prefix: str) -> TTSEvalError:
    """``exc`` as one of our errors whose line starts with ``prefix`` (a recipe, a run): a
    :class:`SettingError` keeps its fields, anything else becomes a :class:`DataError`."""
    text = f"{prefix}: {exc}"
    if isinstance(exc, SettingError):
        return SettingError(exc.key, exc.value, exc.accepted, scope=exc.scope, message=text)
    return DataError(text)


def one_line(exc: BaseException) -> str:
    """The first line of an error's message (its type name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def reported_in_one_line(exc: BaseException) -> bool:
    """Whether a ``tts-eval`` command reports ``exc`` as one line (no traceback): one of our
    errors (:class:`TTSEvalError`), unless :data:`TRACEBACK_ENV` asks for tracebacks."""
    return isinstance(exc, TTSEvalError) and not os.environ.get(TRACEBACK_ENV)
