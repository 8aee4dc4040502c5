"""The finished results file: one HDF5 file per sweep, its format, assembly and reading.

The layout (``FORMAT_VERSION`` 1)::

    /                        attrs format = "jaxvis.sweep", format_version = 1, config = JSON
                             (:class:`jaxvis.config.SweepConfig`)
    /layers/<layer>          attrs meta = JSON (the layer's metadata: its selected units, canvas, ...)
    /layers/<layer>/<key>    one dataset per result key, rows sorted by unit
    /layers/<layer>/metrics  what ``jaxvis analyze`` adds (attrs definitions, config)

Datasets with large rows (images) are chunked one unit per HDF5 chunk and gzip-compressed, so
reading one unit or a page of units is cheap.

The file is written whole through a temporary sibling and a rename (:func:`assemble`), from row
*sources*: part files of a running sweep (:mod:`jaxvis.io.results`) and, when a finished sweep is
extended with more units or layers, the rows of the file it replaces. The only later change is
:func:`write_metrics`, which adds a layer's metrics group in place without touching anything else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np

from jaxvis.config import SweepConfig
from jaxvis.errors import JaxvisError, UnknownNameError
from jaxvis.io.atomic import write_with

FORMAT = "jaxvis.sweep"
FORMAT_VERSION = 1
METRICS = "metrics"  # the per-layer group `jaxvis analyze` adds; not a result key
COMPRESS_ROW_BYTES = 4096  # datasets with rows at least this large are chunked per unit + gzip
GZIP_LEVEL = 4
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


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


def list_units(units, limit: int = 8) -> str:
    units = sorted(int(u) for u in units)
    shown = ", ".join(map(str, units[:limit]))
    return shown + (f", ... ({len(units)} in all)" if len(units) > limit else "")


# ----------------------------------------------------------------------------------------------
# reading


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
                   if parts.is_dir() else "rerun its sweep with --overwrite to recompute it")
        return JaxvisError(f"{path} is a damaged or truncated results file (an HDF5 file that cannot "
                           f"be read, e.g. cut short by a full disk or an interrupted copy); {recover}")
    return JaxvisError(f"{path} {'exists and is' if existing else 'is'} not a jaxvis results file "
                       f"(not HDF5){hint}")


@contextlib.contextmanager
def open_results(path: Path, mode: str = "r", hint: str = "", existing: bool = False) -> Iterator:
    """The h5py ``File`` of a jaxvis results file, checked (format and version)."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise JaxvisError(f"results file {path} does not exist")
    if path.is_dir():
        raise JaxvisError(f"results file {path} is a folder")
    try:
        f = h5py.File(path, mode)
    except OSError:
        raise _damaged(path, hint, existing) from None
    try:
        check_format(f, path, hint)
        yield f
    finally:
        f.close()


def check_format(f, path: Path, hint: str = "") -> None:
    fmt = f.attrs.get("format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode(errors="replace")
    if not isinstance(fmt, str) or fmt != FORMAT or "layers" not in f:
        raise JaxvisError(f"{path} is not a jaxvis results file (format {fmt!r}){hint}")
    version = f.attrs.get("format_version")
    if not isinstance(version, (int, np.integer)) or int(version) != FORMAT_VERSION:
        raise JaxvisError(f"{path} is a jaxvis results file of format version {version}; "
                          f"this jaxvis reads version {FORMAT_VERSION}{hint}")


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


def read_group(group, path: Path, name: str) -> tuple[dict, dict, dict]:
    """(result arrays, metadata, metrics) of one layer group."""
    meta = json_attr(group.attrs, "meta", path, f"metadata of layer {name}:")
    data = {key: group[key][()] for key in group if key != METRICS}
    metrics = {}
    if METRICS in group:
        metrics = {key: value[()] for key, value in group[METRICS].items()}
    return data, meta, metrics


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
        return {key: group[key][rows] if len(units) else group[key][:0]
                for key in group if key != METRICS}


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
            return {key: group[key][()] for key in group if key != METRICS}


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
                  config: dict) -> None:
    """Add (or replace) ``/layers/<layer>/metrics`` for each layer of ``analysed``, in place.

    Nothing else in the file is touched (no copy of the images). Each layer's new group is
    written and flushed under a temporary name, then swapped in by two link operations, so an
    error while writing leaves the old metrics as they were and the results readable.
    """
    path = Path(path)
    with open_results(path, mode="r+") as f:
        for layer in analysed:
            if layer not in f["layers"]:
                raise unknown_layer(path, layer, list(f["layers"]))
        for layer, values in analysed.items():
            group = f["layers"][layer]
            tmp = f".{METRICS}.tmp"
            if tmp in group:  # left by an interrupted analysis
                del group[tmp]
            g = group.create_group(tmp)
            try:
                g.attrs["definitions"] = json.dumps({k: definitions.get(k, "") for k in values})
                g.attrs["config"] = json.dumps(config, sort_keys=True)
                for name, value in values.items():
                    value = np.asarray(value)
                    g.create_dataset(name, data=value, compression="gzip" if value.ndim > 2 else None)
                f.flush()
            except BaseException:
                del group[tmp]
                raise
            if METRICS in group:
                del group[METRICS]
            group.move(tmp, METRICS)
            f.flush()
