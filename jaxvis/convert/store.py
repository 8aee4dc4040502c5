"""Converted weights on disk: an orbax checkpoint plus a JSON metadata file (the only orbax user).

Layout of one entry, ``<root>/<name>/``::

    params/      orbax checkpoint of {param path segments: array}
    meta.json    model config, input convention, source file and its sha256, jaxvis version, ...

An entry is written into a temporary sibling folder and renamed into place at the end, so an
interrupted save never leaves a half entry that a later load would trust.

An existing entry is never replaced unless the caller says ``overwrite=True`` (the CLI's
``--overwrite``): it may be the user's only copy of converted weights. Replacing is a swap: the new
entry is complete on disk first, the old one is renamed aside (``.<name>.old-<hex>``), the new one
renamed into place, and only then the old one deleted. A process killed between the two renames
leaves the old entry aside; :func:`load` and :func:`save` put it back (:func:`recover`).

A save killed outright leaves its temporary folder (``.<name>.<pid>-<hex>.tmp``, as large as the
entry); :func:`recover` deletes those whose process is gone. A failed write (read-only folder, full
disk) ends in one line naming the entry, with the old entry untouched.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Mapping

import numpy as np

from jaxvis.errors import JaxvisError, WeightFileError
from jaxvis.io.atomic import check_writable, fsync_dir, tmp_name

META = "meta.json"


class EntryExistsError(JaxvisError):
    """A save would replace an existing entry and ``overwrite`` was not given."""


def _nest(flat: Mapping[str, np.ndarray]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = np.asarray(value)
    return tree


def _flatten(tree: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        flat.update(_flatten(value, path + "/") if isinstance(value, Mapping) else {path: np.asarray(value)})
    return flat


def _aside(entry: Path) -> list[Path]:
    """Old entries renamed aside by an overwrite that did not finish, newest first."""
    found = entry.parent.glob(f".{entry.name}.old-*") if entry.parent.is_dir() else []
    return sorted((p for p in found if (p / META).is_file()), key=lambda p: p.stat().st_mtime, reverse=True)


# A temporary whose process is not running on this host is left by a killed save, unless a save
# on another host sharing the folder (whose pid this host cannot see) is still writing it: orbax
# writes steadily while it saves, so a temporary untouched for this long is dead everywhere.
STALE_SECONDS = 60


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _stale_temporaries(entry: Path) -> list[Path]:
    """Temporary folders of ``entry`` (:func:`jaxvis.io.atomic.tmp_name`) left by killed saves."""
    if not entry.parent.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(entry.name)}\.(\d+)-[0-9a-f]+\.tmp")
    quiet_since = time.time() - STALE_SECONDS
    stale = []
    for path in entry.parent.iterdir():
        match = pattern.fullmatch(path.name)
        if not match or int(match.group(1)) == os.getpid() or _alive(int(match.group(1))):
            continue
        newest = max((p.lstat().st_mtime for p in (path, *path.rglob("*"))), default=0.0)
        if newest < quiet_since:
            stale.append(path)
    return stale


def recover(entry: Path) -> None:
    """Put back an entry that an interrupted overwrite left renamed aside, and delete what killed
    saves of it left behind (no-op otherwise)."""
    entry = Path(entry)
    for tmp in _stale_temporaries(entry):
        shutil.rmtree(tmp, ignore_errors=True)
    aside = _aside(entry)
    if aside and not entry.exists():
        aside.pop(0).rename(entry)
    if entry.exists():  # the swap finished (or was just undone): the rest is garbage
        for old in aside:
            shutil.rmtree(old, ignore_errors=True)


def save(entry: Path, params: Mapping[str, np.ndarray], meta: dict, *, overwrite: bool = False) -> Path:
    """Write ``params`` (flat ``{path: array}``) and ``meta`` as entry folder ``entry``.

    Refuses (:class:`EntryExistsError`) to replace an existing entry unless ``overwrite``.
    """
    import orbax.checkpoint as ocp

    entry = Path(entry).absolute()  # orbax wants absolute paths
    check_free(entry, overwrite)  # before the (slow) write, and again at the swap
    tmp = tmp_name(entry)
    absl = logging.getLogger("absl")  # orbax logs a failed write with its traceback: we say it in one line
    level = absl.level
    try:
        absl.setLevel(logging.CRITICAL)
        entry.parent.mkdir(parents=True, exist_ok=True)
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(tmp / "params", _nest(params))
        checkpointer.wait_until_finished()
        (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
        swap_in(tmp, entry, overwrite)
    except (OSError, ValueError) as err:  # orbax reports tensorstore's write errors as ValueError
        raise _write_error(entry, err) from None
    finally:
        absl.setLevel(level)
        shutil.rmtree(tmp, ignore_errors=True)
    fsync_dir(entry.parent)
    return entry


def _write_error(entry: Path, err: OSError | ValueError) -> JaxvisError:
    """One line for a failed write: the OS's reason, which orbax buries in a long status text."""
    text = " ".join(str(err).split())
    code = re.search(r"os_error_code='?(\d+)", text)
    why = (os.strerror(int(code.group(1))) if code else
           err.strerror if isinstance(err, OSError) and err.strerror else text[:300])
    return JaxvisError(f"cannot write weights entry {entry}: {why}; nothing was replaced "
                       "(free some space or choose a writable weights folder)")


def check_free(entry: Path, overwrite: bool = False) -> None:
    """Raise :class:`EntryExistsError` now if saving ``entry`` would replace one, and a one-line
    error if its folder cannot be written (callers that compute for a while check before they
    start)."""
    entry = Path(entry)
    recover(entry)
    if entry.exists() and not overwrite:
        raise _exists(entry)
    # save creates the missing folders in the nearest existing one
    check_writable(entry.parent, f"weights entry {entry}", create=True,
                   hint="choose another weights folder or fix its permissions")


def _exists(entry: Path) -> EntryExistsError:
    return EntryExistsError(f"weights entry {entry.name!r} already exists in {entry.parent}; "
                            "pass save_model(overwrite) to replace it, or choose another name")


def swap_in(tmp: Path, entry: Path, overwrite: bool) -> None:
    """Rename the complete ``tmp`` to ``entry``; an old ``entry`` is kept until the new one is in."""
    if not entry.exists():
        try:
            tmp.rename(entry)
            return
        except OSError:  # another process put an entry there meanwhile
            if not entry.exists():
                raise
    if not overwrite:
        raise _exists(entry)
    old = entry.with_name(f".{entry.name}.old-{uuid.uuid4().hex[:8]}")
    entry.rename(old)
    try:
        tmp.rename(entry)
    except BaseException:
        old.rename(entry)  # the new entry did not go in: the old one stays
        raise
    shutil.rmtree(old, ignore_errors=True)


def read_meta(entry: Path) -> dict:
    path = Path(entry) / META
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise WeightFileError(f"{entry} is not a jaxvis weights folder (no {META})") from None
    except json.JSONDecodeError as err:
        raise WeightFileError(f"{path} is corrupted: {err}") from None


def load(entry: Path) -> tuple[dict[str, np.ndarray], dict]:
    """(flat params, meta) of a saved entry."""
    import orbax.checkpoint as ocp

    entry = Path(entry).absolute()
    recover(entry)
    meta = read_meta(entry)
    try:
        tree = ocp.StandardCheckpointer().restore(entry / "params")
    except Exception as err:  # orbax raises many types; the user needs to know which folder is bad
        raise WeightFileError(f"cannot read the checkpoint in {entry}: {type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}") from None
    return _flatten(tree), meta
