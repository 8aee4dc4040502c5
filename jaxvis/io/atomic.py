"""Crash-safe writes: every file jaxvis writes goes through a temporary sibling and a rename.

A reader (or a second host sharing the folder) sees either the old file or the complete new one,
never a half-written file: a killed process leaves at most a hidden ``.<name>.<pid>-<hex>.tmp``
behind, and never touches what was already there. This is the one home of that mechanism; results,
pictures, reports, CSV tables, budget caches and the weights store all use it.

The module depends on nothing else in jaxvis, so any layer may import it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Callable, Iterable

__all__ = ["tmp_name", "fsync_dir", "write_bytes", "write_text", "write_with", "write_all",
           "check_writable"]


def tmp_name(final: Path) -> Path:
    """A unique hidden temporary name next to ``final`` (several hosts may share the folder)."""
    final = Path(final)
    return final.with_name(f".{final.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (not every platform or filesystem allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_writable(folder: Path, what: str) -> None:
    """Raise a one-line error now, before any work, if nothing can be created in ``folder``."""
    from jaxvis.errors import JaxvisError

    folder = Path(folder)
    if not folder.is_dir():
        raise JaxvisError(f"cannot write {what}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise JaxvisError(f"cannot write {what}: folder {folder} is not writable "
                          "(choose another output location or fix its permissions)")


def write_with(final: Path, write: Callable[[Path], None], *, replace: Callable[[Path, Path], Path] | None = None) -> Path:
    """Fill a temporary sibling of ``final`` with ``write(tmp_path)``, then rename it to ``final``.

    ``replace(tmp, final)`` does the rename and returns the name used (default :func:`os.replace`,
    which overwrites ``final``); the temporary file is removed whatever happens.
    """
    final = Path(final)
    tmp = tmp_name(final)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if replace is None:
            os.replace(tmp, final)
            target = final
        else:
            target = replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(final.parent)
    return target


def write_bytes(final: Path, data: bytes) -> Path:
    return write_with(final, lambda tmp: tmp.write_bytes(data))


def write_text(final: Path, text: str) -> Path:
    return write_with(final, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_all(files: Iterable[tuple[Path, Callable[[Path], None]]]) -> list[Path]:
    """Several files, all or nothing: every ``write(tmp)`` completes before the first rename.

    An error while writing (disk full, no permission, a bug in one page) leaves every ``final``
    as it was. Only the renames themselves, each atomic, follow the last write.
    """
    done: list[tuple[Path, Path]] = []
    try:
        for final, write in files:
            final = Path(final)
            tmp = tmp_name(final)
            done.append((tmp, final))
            write(tmp)
        for tmp, final in done:
            os.replace(tmp, final)
    finally:
        for tmp, _ in done:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    for folder in {final.parent for _, final in done}:
        fsync_dir(folder)
    return [final for _, final in done]
