"""Crash-safe writes: every file jaxvis writes goes through a temporary sibling and a rename.

A reader (or a second host sharing the folder) sees either the old file or the complete new one,
never a half-written file: a killed process leaves at most a hidden ``.<name>.<pid>-<hex>.tmp``
behind, and never touches what was already there. This is the one home of that mechanism; results,
pictures, reports, CSV tables, budget caches and the weights store all use it.

The module depends only on :mod:`jaxvis.errors`, so any layer may import it. It is also the one
home of the checks that go with writing: a folder's writability (:func:`check_writable`) and
folders made or refused in one line (:func:`make_folder`), and checksums (:func:`sha256`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from pathlib import Path
from typing import Callable, Iterable

from jaxvis.errors import JaxvisError

__all__ = ["tmp_name", "fsync_dir", "write_bytes", "write_text", "write_with", "write_all",
           "check_writable", "make_folder", "sha256"]


def sha256(source: bytes | str | os.PathLike) -> str:
    """The hex sha256 of ``bytes``, or of the file at a path (read in blocks)."""
    if isinstance(source, bytes):
        return hashlib.sha256(source).hexdigest()
    digest = hashlib.sha256()
    with open(source, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def check_writable(folder: Path, what: str, *, create: bool = False,
                   hint: str = "choose another output location or fix its permissions") -> None:
    """Raise a one-line error now, before any work, if nothing can be created in ``folder``.

    ``create``: the missing folders will be made by the writer, so the nearest existing one is
    checked. ``hint`` says what to do about an unwritable folder.
    """
    folder = Path(folder)
    while create and not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.exists():
        raise JaxvisError(f"cannot write {what}: folder {folder} does not exist")
    if not folder.is_dir():
        raise JaxvisError(f"cannot write {what}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise JaxvisError(f"cannot write {what}: folder {folder} is not writable ({hint})")


def make_folder(folder: Path, what: str) -> Path:
    """``folder`` and its missing parents made (an existing one is fine), or a one-line error."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise JaxvisError(f"cannot write {what}: {err.strerror or err} ({folder})") from None
    return folder


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


def write_all(files: Iterable[tuple[Path, str | bytes | Callable[[Path], None]]]) -> list[Path]:
    """Several files, all or nothing; returns their paths. A file's content is text (UTF-8),
    bytes, or ``write(tmp)`` filling the temporary file.

    ``files`` may be a generator: each file goes to a temporary sibling as it comes, and the
    renames follow only once the last one is complete, so an error while writing (disk full, no
    permission, a bug while building a page) leaves every file as it was, raised as one line.
    Folders are created as needed and removed again on error if they were new.
    """
    done: list[tuple[Path, Path]] = []
    created: list[Path] = []
    current: list[Path] = []
    ready: set[Path] = set()  # folders known to exist
    try:
        try:
            for final, content in files:
                final = Path(final)
                current[:] = [final]
                if final.exists() and not final.is_file():  # a rename onto it would fail late
                    raise JaxvisError(f"cannot write {final}: something other than a file is in the way")
                if final.parent not in ready:
                    missing = [p for p in (final.parent, *final.parent.parents) if not p.exists()]
                    for folder in reversed(missing):
                        folder.mkdir()
                        created.append(folder)
                    ready.add(final.parent)
                tmp = tmp_name(final)
                done.append((tmp, final))
                if isinstance(content, str):
                    tmp.write_text(content, encoding="utf-8")
                elif isinstance(content, bytes):
                    tmp.write_bytes(content)
                else:
                    content(tmp)
            for tmp, final in done:
                os.replace(tmp, final)
        except OSError as err:
            failed = err.filename or (current[0] if current else "")
            raise JaxvisError(f"cannot write {failed}: {err.strerror or err}") from None
        finally:
            for tmp, _ in done:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
    except BaseException:
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: what was there before stays
        raise
    for folder in {final.parent for _, final in done}:
        fsync_dir(folder)
    return [final for _, final in done]
