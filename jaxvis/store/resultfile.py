"""The finished results file: one HDF5 file per sweep, its format, assembly and reading.

The layout (``FORMAT_VERSION`` 1)::

    /                        attrs format = "jaxvis.sweep", format_version = 1, config = JSON
                             (:class:`jaxvis.store.config.SweepConfig`)
    /layers/<layer>          attrs meta = JSON (the layer's metadata: its selected units, canvas, ...)
    /layers/<layer>/<key>    one dataset per result key, rows sorted by unit
    /layers/<layer>/metrics  what ``jaxvis analyze`` adds (attrs definitions, config)

Datasets with large rows (images) are chunked one unit per HDF5 chunk and gzip-compressed, so
reading one unit or a page of units is cheap. Names starting with ``.`` are temporaries of an
interrupted write: every reader ignores them and the next write removes them.

Every open checks the file against this layout before anything is read (:func:`validate`): each
object a plain member of the file (no soft or external links, virtual datasets or external
storage: nothing outside the file is ever read or written), the metadata's fields, every
dataset's dtype and shape, and declared sizes against what the file can hold. A file that another
process holds (an HDF5 lock) is reported as in use, not as damaged.

The file is written whole through a temporary sibling and a rename (:func:`assemble`), from row
*sources*: part files of a running sweep (:mod:`jaxvis.store.results`) and, when a finished sweep is
extended with more units or layers, the rows of the file it replaces. The only later change is
:func:`write_metrics`, which adds a layer's metrics group in place without touching anything else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import gc
import io
import json
import os
import re
import shutil
import signal
import sys
import traceback
import uuid
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np

from jaxvis.store.config import SweepConfig
from jaxvis.errors import JaxvisError, UnknownNameError
from jaxvis.io.atomic import sha256, write_with
from jaxvis.io.hdf5policy import Budget, child, expansion_budget

FORMAT = "jaxvis.sweep"
FORMAT_VERSION = 1
METRICS = "metrics"  # the per-layer group `jaxvis analyze` adds; not a result key
TEMPORARY = "."  # names starting so are an interrupted write's leftovers: ignored, then removed
COMPRESS_ROW_BYTES = 4096  # datasets with rows at least this large are chunked per unit + gzip
GZIP_LEVEL = 4
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# Declared sizes a file may claim. One unit's row of any dataset: 256 MiB is 16 images of a
# 1024 px canvas (float32 RGB), far beyond the receptive field of any supported layer; a row larger
# than this is a hostile or broken file, and reading it would exhaust memory before anything failed.
MAX_ROW_BYTES = 256 * 2**20
# free disk space write_metrics asks for: twice the metrics' bytes (the old group stays until the
# new one is complete) plus room for HDF5's own metadata
SPACE_FACTOR = 2
SPACE_MARGIN = 4 * 2**20
MAX_UNITS = 2**20  # rows of a layer: far more channels than any layer of any network has
# the typed fields of a layer's metadata (any other field is kept as it is): name -> (check, what)
_INT = (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a non-negative integer")
_NUMBER = (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v),
           "a finite number")
META_FIELDS = {
    "units": (lambda v: isinstance(v, list) and all(_INT[0](u) for u in v),
              "a list of non-negative integers (the selected units)"),
    "rf": _INT, "canvas": _INT, "jump": _INT, "channels": _INT, "restarts": _INT,
    "radius": (lambda v: _NUMBER[0](v) and v > 0, "a positive number (the contrast budget)"),
    "floors": (lambda v: isinstance(v, list) and all(_NUMBER[0](a) for a in v), "a list of numbers"),
    "feature_layer": (lambda v: v is None or isinstance(v, str), "a layer name or null"),
}
# the datasets whose shapes the format fixes: name -> (dimensions, last dimension, what)
SHAPES = {"unit": (1, None, "[units] unit indices"),
          "images": (5, 3, "[units, N, H, W, 3] RGB images"),
          "activations": (2, None, "[units, N] activations"),
          "max_image": (4, 3, "[units, H, W, 3] an RGB image"),
          "max_activation": (1, None, "[units] activations")}
FLOAT_KEYS = ("images", "activations", "max_image", "max_activation")
_NUMERIC_KINDS = "biuf"  # bool, integers, floats: all a results file stores


@dataclass(frozen=True)
class Results:
    """A finished sweep read into memory.

    ``config``: the sweep config JSON (``SweepConfig.from_json(results.config)`` types it);
    ``layers[layer][key]``: arrays with rows sorted by unit (``unit`` ``[U]``, ``images``
    ``[U, N, H, W, 3]``, ...); ``layer_meta[layer]``: the layer's metadata (e.g. ``units``,
    ``canvas``); ``metrics[layer][name]``: what ``jaxvis analyze`` added (empty before that).
    """

    config: dict
    layers: dict[str, dict[str, np.ndarray]]
    layer_meta: dict[str, dict]
    metrics: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)

    @property
    def sweep_config(self) -> SweepConfig:
        """The typed view of ``config`` (the file stores JSON)."""
        return SweepConfig.from_json(self.config)


def file_stem(layer: str) -> str:
    """``layer`` as a file-name prefix (the real name is stored inside files)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", layer) or "_"


RESERVED_STEMS = ("index",)  # the report's own index.html


def file_stems(layers) -> dict[str, str]:
    """Each of ``layers`` -> a file-name prefix unique among them, ignoring case (pictures and
    pages of two layers never share a name): the layer's own name where :func:`file_stem` keeps
    it and it is neither reserved nor another's name, else its stem plus ``-`` and 8 hex digits
    of its SHA-256 (``a b`` -> ``a_b-<hash>`` beside a layer ``a_b``; ``index`` -> ``index-<hash>``)."""
    own = Counter(name.lower() for name in layers if file_stem(name) == name)
    stems = {}
    for name in layers:
        stem = file_stem(name)
        if stem != name or own[name.lower()] > 1 or stem.lower() in RESERVED_STEMS:
            stem += "-" + sha256(name.encode("utf-8", "surrogateescape"))[:8]
        stems[name] = stem
    clash = Counter(s.lower() for s in stems.values())
    same = [name for name, stem in stems.items() if clash[stem.lower()] > 1]
    if same:  # only names made to match another's hashed stem get here
        raise JaxvisError(f"layers {', '.join(map(repr, same))} would share file names; rename one")
    return stems


def list_units(units, limit: int = 8) -> str:
    units = sorted(int(u) for u in units)
    shown = ", ".join(map(str, units[:limit]))
    return shown + (f", ... ({len(units)} in all)" if len(units) > limit else "")


# ----------------------------------------------------------------------------------------------
# reading


def _locked(err: OSError) -> bool:
    """Whether h5py could not open a file because another process holds its HDF5 lock."""
    return err.errno in (errno.EAGAIN, errno.EWOULDBLOCK) or "unable to lock file" in str(err)


def _damaged(path: Path, hint: str, existing: bool = False) -> JaxvisError:
    """Why an existing file cannot be opened as HDF5: damaged/truncated, or something else."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(HDF5_SIGNATURE))
    except OSError as err:
        return JaxvisError(f"cannot read {path}: {err}")
    if head == HDF5_SIGNATURE:
        parts = path.with_name(path.name + ".parts")
        recover = (f"`jaxvis merge {path}` reassembles it from {parts}/, or rerun the sweep"
                   if parts.is_dir() else "rerun its sweep with sweep(overwrite) to recompute it")
        return JaxvisError(f"{path} is a damaged or truncated results file (an HDF5 file that cannot "
                           f"be read, e.g. cut short by a full disk or an interrupted copy); {recover}")
    return JaxvisError(f"{path} {'exists and is' if existing else 'is'} not a jaxvis results file "
                       f"(not HDF5){hint}")


@contextlib.contextmanager
def open_results(path: Path, mode: str = "r", hint: str = "", existing: bool = False) -> Iterator:
    """The h5py ``File`` of a jaxvis results file, checked against the format (:func:`validate`)."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise JaxvisError(f"results file {path} does not exist")
    if path.is_dir():
        raise JaxvisError(f"results file {path} is a folder")
    try:
        f = h5py.File(path, mode)
    except OSError as err:
        if _locked(err):
            raise JaxvisError(f"{path} is in use by another process (it holds the file open, e.g. a "
                              "notebook's h5py.File); close it there and run again") from None
        raise _damaged(path, hint, existing) from None
    try:
        validate(f, path, hint)
        yield f
    finally:
        f.close()


def check_writable_results(path: Path) -> None:
    """Raise now, before any work, if the results file cannot be opened for writing (no
    permission, or another process holds it)."""
    path = Path(path)
    if not os.access(path, os.W_OK):
        raise JaxvisError(f"cannot add metrics to {path}: the file is not writable (copy it somewhere "
                          "writable, or fix its permissions)")
    with open_results(path, mode="r+"):
        pass


def _fail(path: Path, where: str, what: str) -> JaxvisError:
    return JaxvisError(f"{path} is a damaged jaxvis results file: {where} {what}")


def member(group, name: str, path: Path, kind: str):
    """``group[name]``, a plain member of the file of ``kind`` ("group" or "dataset"): links other
    than hard ones, virtual datasets and external storage are refused, naming them
    (:mod:`jaxvis.io.hdf5policy`)."""
    import h5py

    obj = child(group, name)
    if not isinstance(obj, h5py.Group if kind == "group" else h5py.Dataset):
        raise _fail(path, f"{group.name.rstrip('/')}/{name}", f"is not a {kind}")
    return obj


def validate(f, path: Path, hint: str = "") -> None:
    """Check an open file against the format (module docstring) before anything is read; the
    first deviation raises one line naming the field."""
    fmt = f.attrs.get("format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode(errors="replace")
    if not isinstance(fmt, str) or fmt != FORMAT or "layers" not in f:
        raise JaxvisError(f"{path} is not a jaxvis results file (format {fmt!r}){hint}")
    version = f.attrs.get("format_version")
    if not isinstance(version, (int, np.integer)) or isinstance(version, (bool, np.bool_)):
        raise JaxvisError(f"{path} is a damaged jaxvis results file: format_version is {version!r}, "
                          f"not an integer (this jaxvis reads version {FORMAT_VERSION}){hint}")
    if int(version) != FORMAT_VERSION:
        raise JaxvisError(f"{path} is a jaxvis results file of format version {version}; "
                          f"this jaxvis reads version {FORMAT_VERSION}{hint}")
    if not isinstance(json_attr(f.attrs, "config", path), dict):
        raise _fail(path, "the config", "is not a JSON object")
    layers = member(f, "layers", path, "group")
    budget = expansion_budget(path)
    for name in layers:
        _validate_layer(member(layers, name, path, "group"), name, path, budget)


def _validate_layer(group, name: str, path: Path, budget: Budget) -> None:
    meta = json_attr(group.attrs, "meta", path, f"metadata of layer {name}:")
    where = f"layer {name}'s metadata"
    if not isinstance(meta, dict):
        raise _fail(path, where, f"is {type(meta).__name__}, not a JSON object")
    if "units" not in meta:
        raise _fail(path, where, "has no field units")
    for field, (ok, what) in META_FIELDS.items():
        if field in meta and not ok(meta[field]):
            raise _fail(path, f"{where} field {field}", f"is {meta[field]!r}, not {what}")
    if "unit" not in group:
        raise _fail(path, f"layer {name}", "has no dataset unit")
    sizes = _dataset_sizes(group, name, path, budget, metrics=False)
    units = sizes["unit"][0]
    if units > MAX_UNITS:
        raise _fail(path, f"layer {name}'s unit", f"declares {units} rows (at most {MAX_UNITS})")
    for key, (rows, _) in sizes.items():
        if rows != units:
            raise _fail(path, f"layer {name}'s {key}", f"has {rows} rows, not one per unit ({units})")
    stored = group["unit"][()]
    if sorted(set(stored.tolist())) != stored.tolist() or stored.tolist() != sorted(set(meta["units"])):
        raise _fail(path, f"layer {name}'s unit", "is not its metadata's units in increasing order")
    images = {k: group[k].shape for k in ("images", "max_image", "activations") if k in group}
    if "images" in images and "max_image" in images and images["images"][2:] != images["max_image"][1:]:
        raise _fail(path, f"layer {name}'s max_image", f"is {images['max_image'][1:]} per unit, not the "
                    f"images' {images['images'][2:]}")
    if "images" in images and "activations" in images and images["images"][1] != images["activations"][1]:
        raise _fail(path, f"layer {name}'s activations", f"has {images['activations'][1]} per unit, not "
                    f"one per image ({images['images'][1]})")
    if METRICS in group:
        metrics = member(group, METRICS, path, "group")
        for key, (rows, _) in _dataset_sizes(metrics, name, path, budget, metrics=True).items():
            if rows != units:
                raise _fail(path, f"layer {name}'s metric {key}", f"has {rows} rows, not one per unit ({units})")


def _dataset_sizes(group, layer: str, path: Path, budget: Budget, *,
                   metrics: bool) -> dict[str, tuple[int, int]]:
    """(rows, bytes per row) of every dataset of a layer (or of its ``metrics`` group), each
    checked: a numeric dtype, the format's shape, declared sizes within the budgets (a unit's row
    within ``MAX_ROW_BYTES``, the file's total within ``budget``)."""
    sizes = {}
    for key in group:
        if key.startswith(TEMPORARY) or (key == METRICS and not metrics):
            continue
        label = f"layer {layer}'s {'metric ' if metrics else ''}{key}"
        d = member(group, key, path, "dataset")
        budget.charge(d)  # refuses what numpy cannot hold as numbers before its dtype is read
        if d.dtype.kind not in _NUMERIC_KINDS or (not metrics and key in FLOAT_KEYS and d.dtype.kind != "f"):
            need = "floats" if key in FLOAT_KEYS and not metrics else "numbers"
            raise _fail(path, label, f"holds {d.dtype}, not {need}")
        if key == "unit" and not metrics and d.dtype.kind not in "iu":
            raise _fail(path, label, f"holds {d.dtype}, not integers")
        ndim, last, what = SHAPES.get(key, (None, None, "")) if not metrics else (None, None, "")
        if d.ndim == 0 or (ndim is not None and (d.ndim != ndim or (last and d.shape[-1] != last))):
            raise _fail(path, label, f"has shape {d.shape}, not {what or '[units, ...]'}")
        row = d.dtype.itemsize * int(np.prod(d.shape[1:], dtype=np.int64))
        if row > MAX_ROW_BYTES:
            raise _fail(path, label, f"declares {row / 2**20:.0f} MiB per unit (at most "
                        f"{MAX_ROW_BYTES // 2**20} MiB)")
        sizes[key] = (d.shape[0], row)
    return sizes


def json_attr(attrs, name: str, path: Path, what: str = ""):
    """A JSON attribute of a file or group; a damaged one is named in one line."""
    try:
        return json.loads(attrs[name])
    except (KeyError, TypeError, ValueError) as err:
        raise JaxvisError(f"{path} is a damaged jaxvis results file ({what or 'attribute'} {name}: "
                          f"{err})") from None


def stored_config(path: Path, hint: str = "") -> dict:
    """The config JSON of an existing finished results file; raises if it is something else."""
    with open_results(path, hint=hint, existing=True) as f:
        return json_attr(f.attrs, "config", path)


def unknown_layer(path: Path, name: str, names) -> UnknownNameError:
    return UnknownNameError(f"{path} holds no layer {name!r}; layers there: {', '.join(names)}")


def result_keys(group) -> list[str]:
    """The result datasets of a (validated) layer group: not its metrics, not temporaries."""
    return [key for key in group if key != METRICS and not key.startswith(TEMPORARY)]


def read_group(group, path: Path, name: str) -> tuple[dict, dict, dict]:
    """(result arrays, metadata, metrics) of one layer group."""
    meta = json_attr(group.attrs, "meta", path, f"metadata of layer {name}:")
    data = {key: group[key][()] for key in result_keys(group)}
    metrics = {}
    if METRICS in group:
        metrics = {key: value[()] for key, value in group[METRICS].items() if not key.startswith(TEMPORARY)}
    return data, meta, metrics


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """An HDF5 error while reading a validated file's data (a corrupted chunk) as one line."""
    try:
        yield
    except OSError as err:
        raise JaxvisError(f"cannot read {path}: {err}; the file is damaged") from None


def read_rows(path: Path, layer: str, units) -> dict[str, np.ndarray]:
    """The result arrays of ``units`` (sorted) of one layer, read row by row (not the whole layer)."""
    path = Path(path)
    units = np.unique(np.asarray(list(units), np.int64))
    with open_results(path) as f:
        if layer not in f["layers"]:
            raise unknown_layer(path, layer, list(f["layers"]))
        group = f["layers"][layer]
        stored = group["unit"][()]
        rows = np.searchsorted(stored, units)
        if len(units) and ((rows >= len(stored)).any() or (stored[np.minimum(rows, len(stored) - 1)] != units).any()):
            raise JaxvisError(f"{path} lacks units {list_units(set(units.tolist()) - set(stored.tolist()))} "
                              f"of layer {layer}")
        with _reading(path):
            return {key: group[key][rows] if len(units) else group[key][:0]
                    for key in result_keys(group)}


def read_results(path: Path, *, layers: list[str] | None = None) -> Results:
    """Read a finished sweep (all layers, or only ``layers``) into memory."""
    path = Path(path)
    with open_results(path) as f:
        config = json_attr(f.attrs, "config", path)
        names = list(f["layers"])
        for name in layers or []:
            if name not in f["layers"]:
                raise unknown_layer(path, name, names)
        data, meta, metrics = {}, {}, {}
        with _reading(path):
            for name in (layers if layers is not None else names):
                data[name], meta[name], found = read_group(f["layers"][name], path, name)
                if found:
                    metrics[name] = found
    return Results(config, data, meta, metrics)


# ----------------------------------------------------------------------------------------------
# assembly


class RowSource(Protocol):
    """Rows of one layer: a part file of a running sweep, or a layer of an older finished file."""

    name: str
    units: np.ndarray  # [U] int64, the rows it holds

    def arrays(self) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class FileRows:
    """The rows of ``layer`` in an existing finished file (a sweep being extended)."""

    path: Path
    layer: str
    units: np.ndarray

    @property
    def name(self) -> str:
        return f"{self.path.name}:{self.layer}"

    def arrays(self) -> dict[str, np.ndarray]:
        with open_results(self.path) as f:
            group = f["layers"][self.layer]
            return {key: group[key][()] for key in result_keys(group)}


def assemble(out: Path, config: dict, layers: dict[str, dict], sources: dict[str, list],
             copy_from: Path | None = None, copy_layers: tuple[str, ...] = ()) -> Path:
    """Write ``out`` (atomically) from row sources per layer, each layer's rows sorted by unit.

    ``layers[layer]["units"]`` are every selected unit; ``sources[layer]``: :class:`RowSource`
    objects whose rows together cover them (the first source holding a unit wins). Layers in
    ``copy_layers`` are copied whole, metrics included, from the finished file ``copy_from``.
    Every check happens before ``out`` is replaced.
    """
    import h5py

    problems = []
    plans = {}
    for layer, meta in layers.items():
        if layer in copy_layers:
            continue
        selected = np.unique(np.asarray(meta["units"], dtype=np.int64))
        seen: set[int] = set()
        plan = []
        for source in sources.get(layer, []):
            extra = set(int(u) for u in source.units) - set(selected.tolist())
            if extra:
                raise JaxvisError(f"{source.name} holds units {list_units(extra)} of layer {layer} "
                                  "that are not among its selected units")
            keep = np.array([int(u) not in seen for u in source.units], dtype=bool)
            seen.update(int(u) for u in source.units)
            if keep.any():
                plan.append((source, keep))
        missing = set(selected.tolist()) - seen
        if missing:
            problems.append(f"layer {layer} misses {len(missing)} of {len(selected)} units "
                            f"({list_units(missing)})")
        plans[layer] = (selected, plan)
    if problems:
        raise JaxvisError(f"cannot finalise {out}: {'; '.join(problems)}; run the sweep again to "
                          "compute them")

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["config"] = json.dumps(config, sort_keys=True)
            root = f.create_group("layers")
            old = h5py.File(copy_from, "r") if copy_layers else contextlib.nullcontext()
            with old:
                for layer, meta in layers.items():
                    if layer in copy_layers:
                        old.copy(old["layers"][layer], root, name=layer)
                        root[layer].attrs["meta"] = json.dumps(meta, sort_keys=True)
                        continue
                    group = root.create_group(layer)
                    group.attrs["meta"] = json.dumps(meta, sort_keys=True)
                    _write_layer(group, layer, *plans[layer])

    try:
        return write_with(out, write)
    except OSError as err:
        raise JaxvisError(f"cannot write results to {out}: {err}") from None


def _write_layer(group, layer: str, selected: np.ndarray, plan) -> None:
    """Fill ``group`` with one dataset per key, rows in the order of ``selected`` (sorted)."""
    signature: dict[str, tuple[np.dtype, tuple]] | None = None
    for source, keep in plan:
        arrays = source.arrays()
        mine = {k: (a.dtype, a.shape[1:]) for k, a in arrays.items()}
        if signature is None:
            signature = mine
            for key, (dtype, shape) in signature.items():
                row_bytes = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
                options = {}
                if row_bytes >= COMPRESS_ROW_BYTES:
                    options = dict(chunks=(1, *shape), compression="gzip",
                                   compression_opts=GZIP_LEVEL, shuffle=True)
                group.create_dataset(key, shape=(len(selected), *shape), dtype=dtype, **options)
        elif mine != signature:
            raise JaxvisError(f"{source.name} of layer {layer} does not match the layer's other "
                              f"rows: {_signature_difference(signature, mine)}")
        units = np.asarray(source.units)[keep]
        rows = np.searchsorted(selected, units)
        order = np.argsort(rows)
        rows = rows[order]
        if rows[-1] - rows[0] + 1 == len(rows):  # contiguous (the usual case): one slab write
            rows = slice(int(rows[0]), int(rows[-1]) + 1)
        for key, array in arrays.items():
            group[key][rows] = array[keep][order]


def _signature_difference(first: dict, other: dict) -> str:
    if set(first) != set(other):
        return f"keys {sorted(other)} instead of {sorted(first)}"
    for key in first:
        if first[key] != other[key]:
            (dt0, s0), (dt1, s1) = first[key], other[key]
            return f"{key!r} is {dt1} [*, {', '.join(map(str, s1))}] instead of " \
                   f"{dt0} [*, {', '.join(map(str, s0))}]"
    return "?"


# ----------------------------------------------------------------------------------------------
# metrics, added in place


def write_metrics(path: Path, analysed: dict[str, dict[str, np.ndarray]], definitions: dict[str, str],
                  config: dict, seconds: dict[str, dict[str, float]] | None = None) -> None:
    """Add (or replace) ``/layers/<layer>/metrics`` for each layer of ``analysed``, in place, with
    the ``definitions`` and the analysis settings ``config`` in its attributes, and the wall
    seconds of each stage that computed them, ``seconds[layer]`` (``{stage: seconds}``), as the
    attribute ``stage_seconds`` (not part of the settings: another run's times match as well).

    Nothing else in the file is touched (no copy of the images). Each layer's new group is
    written and flushed under a temporary name of its own, and only then swapped in
    (:func:`_swap_in`): a kill or a failed write at any point leaves the previous metrics
    readable. Temporary groups are ignored by every reader and removed by the next write (one
    that a failed write left unreadable cannot be removed, and stays ignored).

    A failed write (a full disk) leaves HDF5 unable to close the file, and its own cleanup at the
    process's exit then crashes (measured with HDF5 2.0: a segfault after the error was
    reported), so the write runs in a forked child whose HDF5 state dies with it
    (:func:`_in_child`). Free space is checked first; an OS error at any write, or the writer
    being killed, is one line naming the file.
    """
    path = Path(path)
    need = SPACE_FACTOR * sum(np.asarray(v).nbytes for values in analysed.values() for v in values.values())
    free = shutil.disk_usage(path.parent).free
    if free < need + SPACE_MARGIN:
        raise JaxvisError(f"cannot add metrics to {path}: {free / 2**20:.1f} MiB free on its disk, "
                          f"{(need + SPACE_MARGIN) / 2**20:.1f} MiB needed; free some space and run again")
    with open_results(path) as f:  # checked here, so the child's errors are write errors only
        for layer in analysed:
            if layer not in f["layers"]:
                raise unknown_layer(path, layer, list(f["layers"]))
    try:
        _in_child(lambda give_up: _write_in_place(path, analysed, definitions, config, give_up, seconds or {}),
                  f"cannot add metrics to {path}", "its previous metrics are kept")
    except JaxvisError as err:
        try:
            _restore_end(path, need + SPACE_MARGIN)
        except OSError as pad:
            raise JaxvisError(f"{err} only if extending the file to the end HDF5 recorded succeeds, which failed "
                              f"({pad.strerror})") from None
        raise


def _restore_end(path: Path, grown: int) -> None:
    """After a failed write: where HDF5 recorded an end of file it could not write (a flush cut
    short by a full disk), extend the file to it with zeros (sparse: no space needed), so that all
    it flushed before is readable again; the unwritten objects are temporaries, which readers
    ignore. ``grown``: the most the write could have added."""
    with open(path, "rb") as f:
        head = f.read(64)
    version = head[8] if head[:8] == HDF5_SIGNATURE and len(head) > 8 else None
    offsets = head[13] if version in (0, 1) else head[9] if version in (2, 3) else None
    if offsets != 8:  # what h5py writes; anything else is left as it is
        return
    at = {0: 40, 1: 44, 2: 28, 3: 28}[version]  # the end-of-file address in each superblock layout
    end = int.from_bytes(head[at:at + 8], "little")
    size = path.stat().st_size
    if size < end <= size + grown:
        os.truncate(path, end)


def _write_in_place(path: Path, analysed: dict, definitions: dict[str, str], config: dict, give_up,
                    seconds: dict[str, dict[str, float]]) -> None:
    """The metrics write of :func:`write_metrics`. A failed write calls ``give_up(reason)``
    before the file is closed: closing would flush a half-updated state (an end of file HDF5
    could not write, making the whole file unreadable), while giving up in the child leaves the
    last flushed state on disk, as a kill does."""
    tmp = f"{TEMPORARY}{METRICS}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    with _failed_closes_quiet(), open_results(path, mode="r+") as f:
        try:
            for layer, values in analysed.items():
                group = f["layers"][layer]
                _remove_temporaries(group)
                g = group.create_group(tmp)
                g.attrs["definitions"] = json.dumps({k: definitions.get(k, "") for k in values})
                g.attrs["config"] = json.dumps(config, sort_keys=True)
                if layer in seconds:
                    g.attrs["stage_seconds"] = json.dumps({k: float(v) for k, v in seconds[layer].items()})
                for name, value in values.items():
                    value = np.asarray(value)
                    g.create_dataset(name, data=value, compression="gzip" if value.ndim > 2 else None)
                f.flush()
                _swap_in(group, tmp)
                f.flush()
        except (OSError, RuntimeError) as err:  # h5py raises either for a failed write
            said = re.search(r"error message = '([^']+)'", str(err))  # HDF5's text names the OS error
            give_up(said.group(1) if said else os.strerror(err.errno) if getattr(err, "errno", None)
                    else str(err).split(" (")[0])


CHILD_FAILED = 1  # exit status of a child that gave up (its reason on the pipe)


def _in_child(work, failed: str, kept: str) -> None:
    """Run ``work(give_up)`` in a forked child (in this process where there is no fork);
    ``give_up(reason)`` ends the child at once, skipping every exit handler and close, and
    ``"<failed>: <reason>; <kept>"`` is raised here, as is the child's death by a signal."""
    def raise_here(reason: str):
        raise JaxvisError(f"{failed}: {reason}; {kept}")
    if not hasattr(os, "fork"):
        work(raise_here)
        return
    read, write = os.pipe()
    with warnings.catch_warnings():
        # jax (RuntimeWarning) and Python >= 3.12 (DeprecationWarning) warn that a fork of a
        # multithreaded process may deadlock in the child: a lock another thread held at the fork
        # stays held there. The child takes none of those: it runs HDF5 and os calls only (no jax,
        # and h5py is used by this thread alone), then leaves through os._exit.
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: HDF5's state after a failed write dies with it
        os.close(read)

        def give_up(reason: str):
            os.write(write, str(reason).encode("utf-8", "replace"))
            os._exit(CHILD_FAILED)
        status = 0
        try:
            work(give_up)
        except JaxvisError as err:
            give_up(str(err))
        except BaseException:  # noqa: BLE001 - a bug: its traceback, on the inherited stderr
            traceback.print_exc()
            status = CHILD_FAILED + 1
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        said = pipe.read().decode("utf-8", "replace")
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if status == CHILD_FAILED:
        raise_here(said)
    if status < 0:
        raise_here(f"the writing process was killed ({signal.Signals(-status).name})")
    if status:
        raise_here(f"the writing process failed (exit status {status}, its error above)")


def _swap_in(group, tmp: str) -> None:
    """Make the complete group ``tmp`` the layer's metrics: the old group is renamed aside, the new
    one renamed in (the old one back if that fails), then the old one deleted. These are link
    changes in memory until the next flush, so a killed process leaves the last flushed state."""
    aside = f"{tmp}.old"
    if METRICS in group:
        group.move(METRICS, aside)
    try:
        group.move(tmp, METRICS)
    except BaseException:
        if aside in group:
            group.move(aside, METRICS)
        raise
    if aside in group:
        del group[aside]


def _remove_temporaries(group) -> None:
    """Remove what interrupted writes left in a layer group, where HDF5 still can."""
    for name in [k for k in group if k.startswith(TEMPORARY)]:
        with contextlib.suppress(OSError, KeyError, RuntimeError):  # unreadable: stays, ignored
            del group[name]


@contextlib.contextmanager
def _failed_closes_quiet() -> Iterator[None]:
    """After a failed write (a full disk) h5py cannot close the file's objects and prints a
    traceback for each on stderr; those are dropped (the failure is reported in one line), and what
    a successful write printed is passed on."""
    caught = io.StringIO()
    with contextlib.redirect_stderr(caught):
        try:
            yield
        finally:
            gc.collect()  # the objects of this write are released while stderr is caught
    sys.stderr.write(caught.getvalue())
