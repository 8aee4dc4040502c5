"""Sweep results: crash-safe while a sweep runs, one HDF5 file when it is done.

A sweep optimises, for every selected unit of a layer, N diverse images and one single-image
maximum, and hands its results over in *chunks* of units: a dict of numpy arrays whose leading
dimension is the chunk's units (``unit`` ``[U]``, ``images`` ``[U, N, H, W, 3]``, ...). The set of
keys is not fixed here; every array only needs the common leading dimension and a numeric dtype.

Why parts and then one file: a sweep over a deep layer runs for hours, and a Ctrl-C, ``kill -9`` or
a lost machine must cost at most the chunk in flight. So while it runs, every finished chunk is
written atomically (``*.tmp``, fsync, then an atomic rename) into the sibling folder
``<out>.parts/``::

    <out>.parts/config.json                   the sweep config, written first
    <out>.parts/layers.json                   per layer metadata (``write_layer_meta``/``finalize``)
    <out>.parts/<layer>__<first>-<last>.npz   one chunk; the units and layer are stored inside

A killed sweep leaves only complete part files (a half-written ``*.tmp`` is ignored). Restarting
with the same config resumes: ``done_units`` lists what the parts hold and the sweep skips it;
results are deterministic, so the final file equals an uninterrupted run's. A different config is
refused naming the first differing key, unless ``overwrite=True``. ``finalize`` (or, later,
``merge_parts`` for parts written by several hosts) assembles ``<out>`` (written as ``<out>.tmp``,
then renamed) only when every selected unit is present, then removes the parts folder. Nothing
already written is ever overwritten: a chunk overlapping units already on disk is refused, and if
parts written elsewhere overlap anyway (two hosts did the same units), the first part in file-name
order wins; the results are deterministic, so the copies agree.

The HDF5 layout (``FORMAT_VERSION`` 1)::

    /                   attrs format = "jaxvis.sweep", format_version = 1, config = JSON string
    /layers/<layer>     attrs meta = JSON string (the layer's metadata, e.g. its selected units)
    /layers/<layer>/<key>   one dataset per chunk key, rows sorted by unit

Datasets with large rows (images) are chunked one unit per HDF5 chunk and gzip-compressed, so
reading one unit or a page of units is cheap.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
import zipfile
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from jaxvis.errors import JaxvisError, UnknownNameError

FORMAT = "jaxvis.sweep"
FORMAT_VERSION = 1
PARTS_FORMAT = "jaxvis.sweep.parts"
CONFIG_JSON = "config.json"
LAYERS_JSON = "layers.json"
METRICS = "metrics"  # the per-layer group `jaxvis analyze` adds; not a chunk key
LAYER_KEY = "__layer__"  # the layer name stored inside every part file
COMPRESS_ROW_BYTES = 4096  # datasets with rows at least this large are chunked per unit + gzip
GZIP_LEVEL = 4
_DTYPE_KINDS = "biuf"  # bool, signed and unsigned integers, floats: what HDF5 stores plainly


@dataclass(frozen=True)
class Results:
    """A finished sweep read into memory.

    ``config``: the sweep config; ``layers[layer][key]``: arrays with rows sorted by unit
    (``unit`` ``[U]``, ``images`` ``[U, N, H, W, 3]``, ...); ``layer_meta[layer]``: the metadata
    ``finalize`` was given (e.g. ``units``, ``canvas``); ``metrics[layer][name]``: what
    ``jaxvis analyze`` added under ``/layers/<layer>/metrics`` (empty before that).
    """

    config: dict
    layers: dict[str, dict[str, np.ndarray]]
    layer_meta: dict[str, dict]
    metrics: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# small helpers


def parts_dir(out: Path) -> Path:
    """The folder that holds ``out``'s parts while its sweep runs: ``<out>.parts``."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def _plain(value):
    """numpy scalars and arrays as the Python values JSON knows (``json.dumps`` ``default``)."""
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} {_short(value)} is not JSON-able")


def _canonical(value, what: str):
    """``value`` after a JSON round trip (tuples become lists, numpy values Python ones);
    refuses what JSON cannot hold (objects, NaN)."""
    try:
        return json.loads(json.dumps(value, sort_keys=True, allow_nan=False, default=_plain))
    except (TypeError, ValueError) as err:
        raise JaxvisError(f"{what} is not JSON-able: {err}") from None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _first_difference(there, now, path: str = "") -> str | None:
    """``"key: <there> there, <now> now"`` for the first differing (nested) key, or None."""
    if isinstance(there, dict) and isinstance(now, dict):
        for key in sorted(set(there) | set(now)):
            sub = f"{path}.{key}" if path else str(key)
            if key not in there:
                return f"{sub}: not set there, {_short(now[key])} now"
            if key not in now:
                return f"{sub}: {_short(there[key])} there, not set now"
            found = _first_difference(there[key], now[key], sub)
            if found:
                return found
        return None
    if there == now and type(there) is type(now):
        return None
    return f"{path or 'config'}: {_short(there)} there, {_short(now)} now"


def _list_units(units, limit: int = 8) -> str:
    units = sorted(int(u) for u in units)
    shown = ", ".join(map(str, units[:limit]))
    return shown + (f", ... ({len(units)} in all)" if len(units) > limit else "")


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform/filesystem allows it
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _tmp_name(final: Path) -> Path:
    """A unique hidden temporary name next to ``final`` (several hosts may share the folder)."""
    return final.with_name(f".{final.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def _write_atomic(final: Path, write, *, clobber: bool) -> Path:
    """Write ``final`` through a temporary file; ``write(fileobj)`` fills it.

    With ``clobber=False`` an existing ``final`` is never replaced: the file lands under the
    next free name ``<stem>~2<suffix>``, ... and that name is returned.
    """
    tmp = _tmp_name(final)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if clobber:
            os.replace(tmp, final)
            target = final
        else:
            target = _link_free_name(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(final.parent)
    return target


def _link_free_name(tmp: Path, final: Path) -> Path:
    """Give ``tmp`` the first free name among ``final``, ``final~2``, ...; never replaces a file."""
    for k in range(1, 10_000):
        target = final if k == 1 else final.with_name(f"{final.stem}~{k}{final.suffix}")
        try:
            os.link(tmp, target)  # atomic and fails if target exists
            return target
        except FileExistsError:
            continue
        except OSError:  # no hard links on this filesystem: check, then rename
            if target.exists():
                continue
            os.replace(tmp, target)
            return target
    raise JaxvisError(f"cannot find a free part file name next to {final}")


def file_stem(layer: str) -> str:
    """``layer`` as a file-name prefix (the real name is stored inside the part)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", layer) or "_"


# ----------------------------------------------------------------------------------------------
# parts


@dataclass(frozen=True)
class _Part:
    path: Path
    layer: str
    units: np.ndarray  # [U] int64


def _read_part_header(path: Path) -> _Part:
    try:
        with np.load(path, allow_pickle=False) as npz:
            layer = str(npz[LAYER_KEY][()])
            units = np.asarray(npz["unit"], dtype=np.int64)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise JaxvisError(f"part file {path} is unreadable ({err}); delete it to recompute "
                          "its units") from None
    return _Part(path, layer, units)


def _part_files(folder: Path) -> list[Path]:
    """The complete part files, in name order (hidden ``*.tmp`` files are skipped)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.suffix == ".npz" and not p.name.startswith(".") and p.is_file())


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise JaxvisError(f"cannot read {what} {path}: {err}") from None


def _parts_config(folder: Path) -> dict | None:
    """The config stored in a parts folder; None when the folder holds nothing yet."""
    path = folder / CONFIG_JSON
    if not path.exists():
        leftovers = [p for p in folder.iterdir() if not p.name.endswith(".tmp")]
        if leftovers:
            raise JaxvisError(f"{folder} is not a jaxvis parts folder (no {CONFIG_JSON}); "
                              "use --overwrite or another --out")
        return None
    stored = _read_json(path, "parts config")
    if not isinstance(stored, dict) or stored.get("format") != PARTS_FORMAT:
        raise JaxvisError(f"{path} is not a jaxvis parts config; use --overwrite or another --out")
    if stored.get("format_version") != FORMAT_VERSION:
        raise JaxvisError(f"{folder} holds parts of format version {stored.get('format_version')}; "
                          f"this jaxvis reads version {FORMAT_VERSION}")
    return stored["config"]


def _check_chunk(layer: str, arrays: dict) -> dict[str, np.ndarray]:
    if not isinstance(layer, str) or not layer:
        raise JaxvisError(f"layer name must be a non-empty string, not {layer!r}")
    if not isinstance(arrays, dict) or "unit" not in arrays:
        raise JaxvisError(f"a chunk of layer {layer} must be a dict of arrays with a 'unit' key")
    checked, rows = {}, None
    for key, value in arrays.items():
        if not isinstance(key, str) or not key or "/" in key or key.startswith("__") or key == ".":
            raise JaxvisError(f"chunk key {key!r} of layer {layer} is not a valid dataset name "
                              "(non-empty, no '/', not starting with '__')")
        array = np.asarray(value)
        if array.dtype.kind not in _DTYPE_KINDS:
            raise JaxvisError(f"chunk key {key!r} of layer {layer} has dtype {array.dtype}; "
                              "valid: bool, integer or float arrays")
        if array.ndim == 0:
            raise JaxvisError(f"chunk key {key!r} of layer {layer} is a scalar; every array "
                              "needs the chunk's units as its leading dimension")
        if rows is None:
            rows = array.shape[0]
        if array.shape[0] != rows:
            raise JaxvisError(f"chunk of layer {layer}: {key!r} has {array.shape[0]} rows, "
                              f"other keys {rows}; every array needs one row per unit")
        checked[key] = array
    units = checked["unit"]
    if units.ndim != 1 or units.dtype.kind not in "iu" or len(units) == 0:
        raise JaxvisError(f"chunk of layer {layer}: 'unit' must be a non-empty 1-D integer array, "
                          f"not {units.dtype} {units.shape}")
    if len(np.unique(units)) != len(units) or units.min() < 0:
        raise JaxvisError(f"chunk of layer {layer}: 'unit' must hold distinct non-negative "
                          f"channel indices, not {_list_units(units)}")
    return checked


# ----------------------------------------------------------------------------------------------
# the writer


class ResultWriter:
    """Writes one sweep's results to ``out``, crash-safely; see the module docstring.

    Construction checks, before anything is computed, that ``out`` can be written and that what
    is already there belongs to this sweep (same ``config``: resume; finished file: all done).
    ``config`` is the JSON-able resolved sweep config (plus weights provenance and versions); it
    is compared after a JSON round trip, so tuples and lists are the same.

    Layer metadata for ``finalize``/``merge_parts`` is stored in ``<out>.parts/layers.json``:
    either call ``write_layer_meta(layer, meta)`` up front (needed when several hosts write parts
    and a later ``merge_parts`` assembles them), or pass all of it to ``finalize(layers)``.
    """

    def __init__(self, out: Path, config: dict, *, overwrite: bool = False):
        self.out = Path(out)
        self.parts = parts_dir(self.out)
        self.config = _canonical(config, "sweep config")
        if not isinstance(self.config, dict):
            raise JaxvisError(f"sweep config must be a dict, not {type(config).__name__}")
        self._check_writable()
        self.finished = False
        self._done: dict[str, set[int]] | None = None
        clear = self._check_existing(overwrite)
        for path in clear:  # only after every other check passed
            try:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            except OSError as err:
                raise JaxvisError(f"cannot remove old results {path}: {err}") from None
        if not self.finished:
            self._start_parts()

    # -- construction

    def _check_writable(self) -> None:
        parent = self.out.parent
        if not parent.exists():
            raise JaxvisError(f"cannot write results to {self.out}: folder {parent} does not exist")
        if not parent.is_dir():
            raise JaxvisError(f"cannot write results to {self.out}: {parent} is not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise JaxvisError(f"cannot write results to {self.out}: no permission to write in "
                              f"{parent}")
        if self.out.is_dir():
            raise JaxvisError(f"cannot write results to {self.out}: it is a folder")

    def _check_existing(self, overwrite: bool) -> list[Path]:
        """What to remove (``overwrite``); raises for foreign or different results otherwise."""
        clear = []
        if self.out.exists():
            if overwrite:
                clear.append(self.out)
            else:
                stored = _finished_config(self.out, hint="; use --overwrite or another --out")
                self._refuse_different(self.out, stored)
                self.finished = True
        if self.parts.exists():
            if overwrite:
                clear.append(self.parts)
            elif not self.parts.is_dir():
                raise JaxvisError(f"{self.parts} is in the way of this sweep's parts folder and is "
                                  "not one; use --overwrite or another --out")
            else:
                stored = _parts_config(self.parts)
                if stored is not None:
                    self._refuse_different(self.parts, stored)
        return clear

    def _refuse_different(self, where: Path, stored) -> None:
        difference = _first_difference(stored, self.config)
        if difference:
            raise JaxvisError(f"{where} holds results of a different sweep ({difference}); "
                              "use --overwrite or another --out")

    def _start_parts(self) -> None:
        try:
            self.parts.mkdir(exist_ok=True)
            if not (self.parts / CONFIG_JSON).exists():
                text = json.dumps({"format": PARTS_FORMAT, "format_version": FORMAT_VERSION,
                                   "config": self.config}, indent=2, sort_keys=True)
                _write_atomic(self.parts / CONFIG_JSON, lambda f: f.write(text.encode()),
                              clobber=True)
        except OSError as err:
            raise JaxvisError(f"cannot write results to {self.out}: {err}") from None

    # -- progress

    def _scan(self) -> dict[str, set[int]]:
        if self._done is None:
            done: dict[str, set[int]] = {}
            if self.finished:
                with open_results(self.out) as f:
                    for layer, group in f["layers"].items():
                        if "unit" in group:
                            done[layer] = set(int(u) for u in group["unit"][()])
            else:
                for path in _part_files(self.parts):
                    part = _read_part_header(path)
                    done.setdefault(part.layer, set()).update(int(u) for u in part.units)
            self._done = done
        return self._done

    def done_units(self, layer: str) -> set[int]:
        """The units of ``layer`` whose results are already on disk (parts or the finished file)."""
        return set(self._scan().get(layer, set()))

    def write_chunk(self, layer: str, arrays: dict[str, np.ndarray]) -> Path:
        """Store one chunk (``arrays["unit"]`` names its units) as an atomic part file.

        Refuses a chunk that repeats units already on disk: nothing written is replaced.
        Returns the part file's path.
        """
        if self.finished:
            raise JaxvisError(f"{self.out} is already finished; nothing more can be written")
        arrays = _check_chunk(layer, arrays)
        units = arrays["unit"]
        done = self._scan().setdefault(layer, set())
        again = done.intersection(int(u) for u in units)
        if again:
            raise JaxvisError(f"units {_list_units(again)} of layer {layer} are already written "
                              f"in {self.parts}; skip the units done_units() lists")
        payload = {**arrays, LAYER_KEY: np.array(layer)}
        final = self.parts / f"{file_stem(layer)}__{int(units.min())}-{int(units.max())}.npz"
        try:
            path = _write_atomic(final, lambda f: np.savez(f, **payload), clobber=False)
        except OSError as err:
            raise JaxvisError(f"cannot write results to {self.out}: {err}") from None
        done.update(int(u) for u in units)
        return path

    def write_layer_meta(self, layer: str, meta: dict) -> None:
        """Record ``layer``'s metadata (must hold ``units``, the selected units) for the merge.

        Replaces this layer's earlier entry (metadata is derived from the config, not a result).
        """
        if self.finished:
            return
        _check_meta(layer, meta)
        path = self.parts / LAYERS_JSON
        stored = _read_json(path, "layer metadata") if path.exists() else {}
        stored[layer] = _canonical(meta, f"metadata of layer {layer}")
        self._write_layers_json(stored)

    def _write_layers_json(self, layers: dict) -> None:
        text = json.dumps(layers, indent=2, sort_keys=True)
        try:
            _write_atomic(self.parts / LAYERS_JSON, lambda f: f.write(text.encode()), clobber=True)
        except OSError as err:
            raise JaxvisError(f"cannot write results to {self.out}: {err}") from None

    def finalize(self, layers: dict[str, dict] | None = None) -> Path:
        """Assemble ``out`` from the parts and remove them; returns ``out``.

        ``layers``: per layer metadata, each with ``units`` (all selected units) and anything else
        JSON-able (``canvas``, ``rf``, ``budget``, ``feature_layer``, ...); None uses what
        ``write_layer_meta`` stored. Refuses, writing nothing, while any selected unit has no part.
        Calling it on a finished sweep only removes leftover parts.
        """
        if self.finished:
            if self.parts.is_dir():
                shutil.rmtree(self.parts, ignore_errors=True)
            return self.out
        if layers is not None:
            if not isinstance(layers, dict) or not layers:
                raise JaxvisError("finalize needs the metadata of at least one layer")
            canonical = {}
            for layer, meta in layers.items():
                _check_meta(layer, meta)
                canonical[layer] = _canonical(meta, f"metadata of layer {layer}")
            self._write_layers_json(canonical)
        out = _assemble(self.out, self.parts, self.config, _stored_layers(self.parts))
        self.finished = True
        self._done = None
        return out


def _check_meta(layer: str, meta) -> None:
    if not isinstance(layer, str) or not layer:
        raise JaxvisError(f"layer name must be a non-empty string, not {layer!r}")
    units = meta.get("units") if isinstance(meta, dict) else None
    if not isinstance(units, (list, tuple, np.ndarray)) or not all(
            isinstance(u, (int, np.integer)) and not isinstance(u, bool) for u in units):
        raise JaxvisError(f"metadata of layer {layer} needs 'units', the list of selected units")


def _stored_layers(parts: Path) -> dict[str, dict]:
    path = parts / LAYERS_JSON
    if not path.exists():
        raise JaxvisError(f"{parts} holds no layer metadata ({LAYERS_JSON}); the sweep calls "
                          "write_layer_meta or finalize(layers) to store it")
    layers = _read_json(path, "layer metadata")
    if not isinstance(layers, dict) or not layers:
        raise JaxvisError(f"{path} holds no layer metadata")
    for layer, meta in layers.items():
        _check_meta(layer, meta)
    return layers


# ----------------------------------------------------------------------------------------------
# assembly


def _assemble(out: Path, parts: Path, config: dict, layers: dict[str, dict]) -> Path:
    """Write ``out`` from the part files in ``parts``; all checks happen before ``out`` appears."""
    import h5py

    headers = [_read_part_header(p) for p in _part_files(parts)]
    by_layer: dict[str, list[tuple[_Part, np.ndarray]]] = {layer: [] for layer in layers}
    for part in headers:
        if part.layer not in layers:
            raise JaxvisError(f"part {part.path.name} holds layer {part.layer!r}, which is not "
                              f"among the layers being finalised ({', '.join(layers)})")
    problems = []
    for layer, meta in layers.items():
        selected = np.unique(np.asarray(meta["units"], dtype=np.int64))
        seen: set[int] = set()
        for part in (p for p in headers if p.layer == layer):
            keep = np.array([int(u) not in seen for u in part.units], dtype=bool)
            seen.update(int(u) for u in part.units)  # the first part wins; later copies ignored
            extra = set(int(u) for u in part.units) - set(selected.tolist())
            if extra:
                raise JaxvisError(f"part {part.path.name} holds units {_list_units(extra)} of "
                                  f"layer {layer} that are not among its selected units")
            if keep.any():
                by_layer[layer].append((part, keep))
        missing = set(selected.tolist()) - seen
        if missing:
            problems.append(f"layer {layer} misses {len(missing)} of {len(selected)} units "
                            f"({_list_units(missing)})")
    if problems:
        raise JaxvisError(f"cannot finalise {out}: {'; '.join(problems)}; run the sweep again to "
                          "compute them")

    tmp = out.with_name(out.name + ".tmp")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["config"] = json.dumps(config, sort_keys=True)
            root = f.create_group("layers")
            for layer, meta in layers.items():
                group = root.create_group(layer)
                group.attrs["meta"] = json.dumps(meta, sort_keys=True)
                selected = np.unique(np.asarray(meta["units"], dtype=np.int64))
                _write_layer(group, layer, selected, by_layer[layer])
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, out)
    except OSError as err:
        raise JaxvisError(f"cannot write results to {out}: {err}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(out.parent)
    shutil.rmtree(parts, ignore_errors=True)
    return out


def _write_layer(group, layer: str, selected: np.ndarray, parts) -> None:
    """Fill ``group`` with one dataset per key, rows in the order of ``selected`` (sorted)."""
    signature: dict[str, tuple[np.dtype, tuple]] | None = None
    for part, keep in parts:
        with np.load(part.path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files if k != LAYER_KEY}
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
            raise JaxvisError(f"part {part.path.name} of layer {layer} does not match the layer's "
                              f"other parts: {_signature_difference(signature, mine)}")
        rows = np.searchsorted(selected, part.units[keep])
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


def merge_parts(out: Path) -> Path:
    """Assemble ``out`` from an existing ``<out>.parts`` folder (e.g. written by several hosts).

    Uses the folder's ``config.json`` and ``layers.json`` (see ``ResultWriter.write_layer_meta``).
    Refuses when ``out`` already exists, unless it is this very sweep's finished file (then the
    leftover parts are removed).
    """
    out = Path(out)
    parts = parts_dir(out)
    if not parts.is_dir():
        raise JaxvisError(f"no parts to merge: {parts} does not exist")
    config = _parts_config(parts)
    if config is None:
        raise JaxvisError(f"no parts to merge: {parts} holds no {CONFIG_JSON}")
    if out.exists():
        stored = _finished_config(out, hint="")
        if _first_difference(stored, config) is None:
            shutil.rmtree(parts, ignore_errors=True)
            return out
        raise JaxvisError(f"cannot merge into {out}: it exists and holds a different sweep")
    return _assemble(out, parts, config, _stored_layers(parts))


# ----------------------------------------------------------------------------------------------
# reading


@contextlib.contextmanager
def open_results(path: Path) -> Iterator:
    """The h5py ``File`` of a jaxvis results file, checked (format and version), read-only."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise JaxvisError(f"results file {path} does not exist")
    if path.is_dir():
        raise JaxvisError(f"results file {path} is a folder")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise JaxvisError(f"{path} is not a jaxvis results file (not HDF5)") from None
    try:
        _check_format(f, path)
        yield f
    finally:
        f.close()


def _check_format(f, path: Path, hint: str = "") -> None:
    fmt = f.attrs.get("format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode(errors="replace")
    if not isinstance(fmt, str) or fmt != FORMAT or "layers" not in f:
        raise JaxvisError(f"{path} is not a jaxvis results file (format {fmt!r}){hint}")
    version = f.attrs.get("format_version")
    if not isinstance(version, (int, np.integer)) or int(version) != FORMAT_VERSION:
        raise JaxvisError(f"{path} is a jaxvis results file of format version {version}; "
                          f"this jaxvis reads version {FORMAT_VERSION}{hint}")


def _json_attr(f, name: str, path: Path):
    try:
        return json.loads(f.attrs[name])
    except (KeyError, TypeError, ValueError) as err:
        raise JaxvisError(f"{path} is a damaged jaxvis results file (attribute {name}: "
                          f"{err})") from None


def _finished_config(path: Path, hint: str) -> dict:
    """The config of an existing finished results file; raises if it is something else."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError:
        raise JaxvisError(f"{path} exists and is not a jaxvis results file (not HDF5)"
                          f"{hint}") from None
    with f:
        _check_format(f, path, hint)
        return _json_attr(f, "config", path)


def unknown_layer(path: Path, name: str, names) -> UnknownNameError:
    return UnknownNameError(f"{path} holds no layer {name!r}; layers there: {', '.join(names)}")


def read_results(path: Path, *, layers: list[str] | None = None) -> Results:
    """Read a finished sweep (all layers, or only ``layers``) into memory."""
    path = Path(path)
    with open_results(path) as f:
        config = _json_attr(f, "config", path)
        names = list(f["layers"])
        for name in layers or []:
            if name not in f["layers"]:
                raise unknown_layer(path, name, names)
        data, meta, metrics = {}, {}, {}
        for name in (layers if layers is not None else names):
            group = f["layers"][name]
            data[name] = {key: group[key][()] for key in group if key != METRICS}
            if METRICS in group:
                metrics[name] = {key: value[()] for key, value in group[METRICS].items()}
            try:
                meta[name] = json.loads(group.attrs["meta"])
            except (KeyError, TypeError, ValueError) as err:
                raise JaxvisError(f"{path} is a damaged jaxvis results file (metadata of layer "
                                  f"{name}: {err})") from None
    return Results(config, data, meta, metrics)
