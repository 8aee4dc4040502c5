"""Converted weights on disk: an orbax checkpoint plus a JSON metadata file (the only orbax user).

Layout of one entry, ``<root>/<name>/``::

    params/      orbax checkpoint of {param path segments: array}
    meta.json    model config, input convention, source file and its sha256, jaxvis version, ...

An entry is written into a temporary sibling folder and renamed into place at the end, so an
interrupted save never leaves a half entry that a later load would trust.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Mapping

import numpy as np

from jaxvis.errors import WeightFileError

META = "meta.json"


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


def save(entry: Path, params: Mapping[str, np.ndarray], meta: dict) -> Path:
    """Write ``params`` (flat ``{path: array}``) and ``meta`` as entry folder ``entry``."""
    import orbax.checkpoint as ocp

    entry = Path(entry).absolute()  # orbax wants absolute paths
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = entry.with_name(f".{entry.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(tmp / "params", _nest(params))
        checkpointer.wait_until_finished()
        (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
        if entry.exists():
            shutil.rmtree(entry)
        tmp.rename(entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entry


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
    meta = read_meta(entry)
    try:
        tree = ocp.StandardCheckpointer().restore(entry / "params")
    except Exception as err:  # orbax raises many types; the user needs to know which folder is bad
        raise WeightFileError(f"cannot read the checkpoint in {entry}: {type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}") from None
    return _flatten(tree), meta
