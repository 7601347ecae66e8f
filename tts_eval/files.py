"""Result files written whole or not at all, and output folders checked before any work.

- :func:`atomic_open` / :func:`write_atomic`: write to a temporary file beside the target (a hidden
  ``.<name>.<pid>.<random>.tmp``), ``fsync`` it and ``os.replace`` it over the target. A failure
  (a full disk, a read-only folder, a file-size limit, an exception of the writer) removes the
  temporary file and raises :class:`~tts_eval.errors.OutputError`, one line naming the file, the
  system's reason and what to do (:func:`what_to_do`: free space, or choose another ``option``,
  the option that chose the place); the target keeps what it held before (nothing, or the
  previous complete version), never a truncated file.
- :func:`check_writable`: create the folder (and its parents) and a probe file in it, then remove
  what the check created: a folder that cannot be written is an ``OutputError`` before anything
  loads, and a run that can write leaves no trace of the check.
- :func:`os_error_line`: the one line of an ``OSError`` that says what happened where.

What this module does not do: decide where results go or what they hold; it only writes bytes.
It imports only the standard library.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from tts_eval.errors import OutputError


def os_error_line(exc: OSError) -> str:
    """``<strerror> (<ERRNO>)``: what the system said, in one line."""
    name = errno.errorcode.get(exc.errno or 0, "")
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{reason} ({name})" if name else reason


# Errors of a disk that cannot take more: freeing space helps.
FULL_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def what_to_do(exc: OSError | None, option: str) -> str:
    """``; free space there or choose another OPTION`` (a full disk), ``; choose another
    OPTION`` (anything else), or nothing without an option."""
    if not option:
        return ""
    if exc is not None and exc.errno in FULL_DISK_ERRNOS:
        return f"; free space there or choose another {option}"
    return f"; choose another {option}"


def output_error(
    action: str, path: str | os.PathLike, exc: OSError, option: str = ""
) -> OutputError:
    """``cannot <action> <path>: <reason> (<ERRNO>); <what to do>``."""
    return OutputError(
        f"cannot {action} {os.fspath(path)}: {os_error_line(exc)}{what_to_do(exc, option)}"
    )


def _temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", *, option: str = "") -> Iterator[IO]:
    """A file object (``mode`` ``"w"`` text UTF-8 or ``"wb"``) whose content replaces ``path``
    only when the ``with`` block ends without an error (see the module docstring)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode={mode!r} is invalid; accepted: w, wb")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error("create the folder of", path, exc, option) from exc
    tmp = _temporary_name(path)
    done = False
    try:
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except OSError as exc:
            raise output_error("write", path, exc, option) from exc
        try:
            with open(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            done = True
        except OSError as exc:
            raise output_error("write", path, exc, option) from exc
    finally:
        if not done:
            with contextlib.suppress(OSError):
                tmp.unlink()


def write_atomic(path: str | os.PathLike, data: str | bytes, *, option: str = "") -> None:
    """Replace ``path`` with ``data`` (text as UTF-8), whole or not at all."""
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w", option=option) as f:
        f.write(data)


def check_writable(folder: str | os.PathLike, *, option: str = "") -> None:
    """Raise ``OutputError`` unless files can be created in ``folder`` (see the module docstring)."""
    folder = Path(folder)
    created: list[Path] = []
    try:
        missing = [p for p in (folder, *folder.parents) if not p.exists()]
        for p in reversed(missing):
            try:
                p.mkdir()
            except FileExistsError:
                continue
            except OSError as exc:
                raise output_error("create the folder", p, exc, option) from exc
            created.append(p)
        if not folder.is_dir():
            raise OutputError(
                f"cannot write to {os.fspath(folder)}: not a folder{what_to_do(None, option)}"
            )
        probe = _temporary_name(folder / "write-check")
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except OSError as exc:
            raise output_error("write to", folder, exc, option) from exc
        os.close(fd)
        probe.unlink()
    finally:
        for p in reversed(created):
            with contextlib.suppress(OSError):
                p.rmdir()
