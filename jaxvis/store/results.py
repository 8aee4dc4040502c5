"""Sweep results: crash-safe while a sweep runs, one HDF5 file when it is done.

A sweep optimises, for every selected unit of a layer, N diverse images and one single-image
maximum, and hands its results over in *chunks* of units: a dict of numpy arrays whose leading
dimension is the chunk's units (``unit`` ``[U]``, ``images`` ``[U, N, H, W, 3]``, ...). The set of
keys is not fixed here; every array only needs the common leading dimension and a numeric dtype.

Why parts and then one file: a sweep over a deep layer runs for hours, and a Ctrl-C, ``kill -9`` or
a lost machine must cost at most the chunk in flight. So while it runs, every finished chunk is
written atomically (:mod:`jaxvis.io.atomic`) into the sibling folder ``<out>.parts/``::

    <out>.parts/config.json                   the sweep config, written first
    <out>.parts/layers.json                   per layer metadata (``write_layer_meta``/``finalize``)
    <out>.parts/<layer>__<first>-<last>.npz   one chunk; the units and layer are stored inside

A killed sweep leaves only complete part files (a half-written temporary is ignored). Restarting
with the same config resumes: ``done_units`` lists what is on disk and the sweep skips it; results
are deterministic, so the final file equals an uninterrupted run's. ``finalize`` (or, later,
``merge_parts`` for parts written by several hosts) assembles ``<out>``
(:mod:`jaxvis.store.resultfile`) only when every selected unit is present, then removes the parts
folder. Nothing already written is ever overwritten: a chunk overlapping units already on disk is
refused, and if parts written elsewhere overlap anyway (two hosts did the same units), the first
part in file-name order wins; the results are deterministic, so the copies agree.

**A finished file grows**: a sweep with the same method (:func:`~jaxvis.store.config.method_of`)
but more units or layers *extends* it: the stored units count as done, only the new ones are
computed, and the new file (rows of the old one plus the new parts) replaces the old one when
complete. A real difference of method is refused, naming the first differing key, unless
``overwrite=True``. Layers that gain units lose their (now partial) metrics; the others keep them.

This module is the results API: the reading side lives in :mod:`jaxvis.store.resultfile` and is
re-exported here.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxvis.store.config import SELECTION, canonical, first_difference, method_of as _method
from jaxvis.errors import JaxvisError
from jaxvis.io.atomic import check_writable, make_folder, write_text, write_with
from jaxvis.store.resultfile import (FORMAT, FORMAT_VERSION, METRICS, FileRows, Results, assemble,
                                  check_writable_results, file_stem, file_stems, json_attr, list_units,
                                  open_results, read_results, read_rows, result_keys, stored_config,
                                  unknown_layer, write_metrics)

__all__ = ["FORMAT", "FORMAT_VERSION", "METRICS", "Results", "ResultWriter", "check_writable_results",
           "file_stem", "file_stems", "merge_parts", "open_results", "parts_dir", "read_results", "read_rows",
           "result_keys", "stored_config", "unknown_layer", "write_metrics"]

PARTS_FORMAT = "jaxvis.sweep.parts"
CONFIG_JSON = "config.json"
LAYERS_JSON = "layers.json"
LAYER_KEY = "__layer__"  # the layer name stored inside every part file
_DTYPE_KINDS = "biuf"  # bool, signed and unsigned integers, floats: what HDF5 stores plainly
# the way past results at a sweep's out that are not its own (another sweep's, or no sweep's)
FOREIGN = "use sweep(overwrite) or another sweep(out)"


def parts_dir(out: Path) -> Path:
    """The folder that holds ``out``'s parts while its sweep runs: ``<out>.parts``."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def _grown(stored: dict, now: dict) -> dict:
    """``stored``'s selection plus ``now``'s (layers in order of appearance, units united), with
    ``now``'s versions: the config of an extended file."""
    layers = list(stored["layers"]) + [n for n in now["layers"] if n not in stored["layers"]]
    units = {n: sorted(set(stored["units"].get(n, [])) | set(now["units"].get(n, []))) for n in layers}
    return {**stored, "layers": layers, "units": units, "versions": now.get("versions", {})}


# ----------------------------------------------------------------------------------------------
# parts


@dataclass(frozen=True)
class Part:
    """One part file: a chunk of one layer's units."""

    path: Path
    layer: str
    units: np.ndarray  # [U] int64

    @property
    def name(self) -> str:
        return f"part {self.path.name}"

    def arrays(self) -> dict[str, np.ndarray]:
        with np.load(self.path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files if k != LAYER_KEY}


def read_part(path: Path) -> Part:
    try:
        with np.load(path, allow_pickle=False) as npz:
            layer = str(npz[LAYER_KEY][()])
            units = np.asarray(npz["unit"], dtype=np.int64)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise JaxvisError(f"part file {path} is unreadable ({err}); delete it to recompute "
                          "its units") from None
    return Part(path, layer, units)


def part_files(folder: Path) -> list[Path]:
    """The complete part files, in name order (hidden temporary files are skipped)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.suffix == ".npz" and not p.name.startswith(".") and p.is_file())


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise JaxvisError(f"cannot read {what} {path}: {err}") from None


def _parts_header(folder: Path, hint: str = "") -> dict | None:
    """The header stored in a parts folder (``config``, ``extends``); None while it is empty.
    ``hint`` follows the refusal of a folder that is not a parts folder."""
    path = folder / CONFIG_JSON
    if not path.exists():
        leftovers = [p for p in folder.iterdir() if not p.name.endswith(".tmp")]
        if leftovers:
            raise JaxvisError(f"{folder} is not a jaxvis parts folder (no {CONFIG_JSON}){hint}")
        return None
    stored = _read_json(path, "parts config")
    if not isinstance(stored, dict) or stored.get("format") != PARTS_FORMAT:
        raise JaxvisError(f"{path} is not a jaxvis parts config{hint}")
    if stored.get("format_version") != FORMAT_VERSION:
        raise JaxvisError(f"{folder} holds parts of format version {stored.get('format_version')}; "
                          f"this jaxvis reads version {FORMAT_VERSION}")
    return stored


def _check_chunk(layer: str, arrays: dict) -> dict[str, np.ndarray]:
    if not isinstance(layer, str) or not layer:
        raise JaxvisError(f"layer name must be a non-empty string, not {layer!r}")
    if not isinstance(arrays, dict) or "unit" not in arrays:
        raise JaxvisError(f"a chunk of layer {layer} must be a dict of arrays with a 'unit' key")
    checked, rows = {}, None
    for key, value in arrays.items():
        if not isinstance(key, str) or not key or "/" in key or key.startswith("__") or key == "." \
                or key == METRICS:
            raise JaxvisError(f"chunk key {key!r} of layer {layer} is not a valid dataset name "
                              f"(non-empty, no '/', not starting with '__', not {METRICS!r})")
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
                          f"channel indices, not {list_units(units)}")
    return checked


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
# the writer


class ResultWriter:
    """Writes one sweep's results to ``out``, crash-safely; see the module docstring.

    Construction checks, before anything is computed, that ``out`` can be written and that what
    is already there belongs to this sweep (same ``config``: resume; finished file with the same
    method: all done, or extend it). ``config`` is the sweep config JSON
    (``SweepConfig.to_json()``); it is compared after a JSON round trip, stored configs first
    brought to today's form by ``upgrade`` (``SweepConfig.upgrade``: fields added since). After construction
    ``self.config`` is the config the file will hold (for an extension: the old selection plus
    the new one) and ``self.extends`` says whether an older finished file is being grown.

    Layer metadata for ``finalize``/``merge_parts`` is stored in ``<out>.parts/layers.json``:
    either call ``write_layer_meta(layer, meta)`` up front (needed when several hosts write parts
    and a later ``merge_parts`` assembles them), or pass all of it to ``finalize(layers)``.
    """

    def __init__(self, out: Path, config: dict, *, overwrite: bool = False, upgrade=None):
        self.upgrade = upgrade or (lambda stored: stored)  # stored config -> today's form
        self.out = Path(out)
        self.parts = parts_dir(self.out)
        self.config = canonical(config, "sweep config")
        if not isinstance(self.config, dict):
            raise JaxvisError(f"sweep config must be a dict, not {type(config).__name__}")
        self._check_writable()
        self.finished = False
        self.extends = False
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
        check_writable(self.out.parent, f"results to {self.out}")
        if self.out.is_dir():
            raise JaxvisError(f"cannot write results to {self.out}: it is a folder")
        if self.out.suffix.lower() == ".csv":  # the analysis writes <results>.csv beside the file
            raise JaxvisError(f"cannot write results to {self.out}: a name ending in .csv is that of a "
                              f"metrics table; name the results file e.g. {self.out.with_suffix('.h5').name}")

    def _check_existing(self, overwrite: bool) -> list[Path]:
        """What to remove (``overwrite``); raises for foreign or different results otherwise."""
        if overwrite:
            return [p for p in (self.out, self.parts) if p.exists()]
        if self.out.exists():
            stored = canonical(self.upgrade(stored_config(self.out, hint=f"; {FOREIGN}")),
                               "stored config")
            selections = all(isinstance(c.get(k), (list, dict)) for c in (stored, self.config) for k in SELECTION)
            difference = first_difference(*((_method(stored), _method(self.config)) if selections
                                            else (stored, self.config)))
            if difference:
                hint = (" (a finished file can only be extended with more units or layers of the "
                        "same method)") if selections else ""
                raise JaxvisError(f"{self.out} holds results of a different sweep ({difference}); "
                                  f"{FOREIGN}{hint}")
            grown = _grown(stored, self.config) if selections else stored
            if first_difference(grown, stored) is None:
                self.finished, self.config = True, stored  # nothing new: all done
            else:
                self.extends, self.config = True, grown
        if self.parts.exists():
            if not self.parts.is_dir():
                raise JaxvisError(f"{self.parts} is in the way of this sweep's parts folder and is "
                                  f"not one; {FOREIGN}")
            header = _parts_header(self.parts, f"; {FOREIGN}")
            if header is not None:
                difference = first_difference(canonical(self.upgrade(header["config"]), "parts config"),
                                              self.config)
                if difference:
                    raise JaxvisError(f"{self.parts} holds results of a different sweep "
                                      f"({difference}); {FOREIGN}")
        return []

    def _start_parts(self) -> None:
        make_folder(self.parts, f"results to {self.out}")
        try:
            if not (self.parts / CONFIG_JSON).exists():
                write_text(self.parts / CONFIG_JSON, json.dumps(
                    {"format": PARTS_FORMAT, "format_version": FORMAT_VERSION,
                     "config": self.config, "extends": self.extends}, indent=2, sort_keys=True))
        except OSError as err:
            raise JaxvisError(f"cannot write results to {self.out}: {err}") from None

    # -- progress

    def _scan(self) -> dict[str, set[int]]:
        if self._done is None:
            done: dict[str, set[int]] = {}
            if self.finished or self.extends:
                with open_results(self.out) as f:
                    for layer, group in f["layers"].items():
                        if "unit" in group:
                            done[layer] = set(int(u) for u in group["unit"][()])
            if not self.finished:
                for path in part_files(self.parts):
                    part = read_part(path)
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
            raise JaxvisError(f"units {list_units(again)} of layer {layer} are already written "
                              f"in {self.parts}; skip the units done_units() lists")
        payload = {**arrays, LAYER_KEY: np.array(layer)}
        final = self.parts / f"{file_stem(layer)}__{int(units.min())}-{int(units.max())}.npz"
        try:
            path = write_with(final, lambda tmp: _save_npz(tmp, payload), replace=_link_free_name)
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
        stored[layer] = canonical(meta, f"metadata of layer {layer}")
        self._write_layers_json(stored)

    def _write_layers_json(self, layers: dict) -> None:
        try:
            write_text(self.parts / LAYERS_JSON, json.dumps(layers, indent=2, sort_keys=True))
        except OSError as err:
            raise JaxvisError(f"cannot write results to {self.out}: {err}") from None

    def finalize(self, layers: dict[str, dict] | None = None) -> Path:
        """Assemble ``out`` from the parts (and, when extending, the old file) and remove the
        parts; returns ``out``.

        ``layers``: per layer metadata, each with ``units`` (all selected units) and anything else
        JSON-able (``canvas``, ``rf``, ``radius``, ``feature_layer``, ...); None uses what
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
            canonical_layers = {}
            for layer, meta in layers.items():
                _check_meta(layer, meta)
                canonical_layers[layer] = canonical(meta, f"metadata of layer {layer}")
            self._write_layers_json(canonical_layers)
        out = _finalize(self.out, self.parts, self.config, _stored_layers(self.parts), self.extends)
        self.finished, self.extends = True, False
        self._done = None
        return out


def _save_npz(path: Path, payload: dict) -> None:
    with open(path, "wb") as f:
        np.savez(f, **payload)


def _finalize(out: Path, parts: Path, config: dict, layers: dict[str, dict], extends: bool) -> Path:
    """Write ``out`` from the part files in ``parts`` (plus, when ``extends``, the rows of the
    finished ``out`` it replaces), then remove ``parts``."""
    headers = [read_part(p) for p in part_files(parts)]
    base_meta: dict[str, dict] = {}
    if extends:
        with open_results(out) as f:
            for name, group in f["layers"].items():
                base_meta[name] = json_attr(group.attrs, "meta", out, f"metadata of layer {name}:")
    for part in headers:
        if part.layer not in layers:
            raise JaxvisError(f"part {part.path.name} holds layer {part.layer!r}, which is not "
                              f"among the layers being finalised ({', '.join(layers)})")
    merged: dict[str, dict] = {}
    names = config.get("layers") if isinstance(config.get("layers"), list) else list(layers)
    for name in dict.fromkeys([*names, *layers, *base_meta]):
        if name in base_meta:
            meta = {**base_meta[name], **layers.get(name, {})}
            meta["units"] = sorted(set(base_meta[name]["units"]) | set(layers.get(name, {}).get("units", [])))
            merged[name] = meta
        elif name in layers:
            merged[name] = layers[name]
        else:
            raise JaxvisError(f"{parts} holds no metadata of layer {name}")
    untouched = tuple(n for n in base_meta if not any(p.layer == n for p in headers))
    sources = {n: ([FileRows(out, n, np.asarray(base_meta[n]["units"], np.int64))] if n in base_meta else [])
               + [p for p in headers if p.layer == n] for n in merged}
    path = assemble(out, config, merged, sources, copy_from=out if extends else None,
                    copy_layers=untouched)
    shutil.rmtree(parts, ignore_errors=True)
    return path


def merge_parts(out: Path) -> Path:
    """Assemble ``out`` from an existing ``<out>.parts`` folder (e.g. written by several hosts).

    Uses the folder's ``config.json`` and ``layers.json`` (see ``ResultWriter.write_layer_meta``).
    Refuses when ``out`` already exists, unless it is this very sweep's finished file (then the
    leftover parts are removed) or the file these parts extend.
    """
    out = Path(out)
    parts = parts_dir(out)
    if not parts.is_dir():
        raise JaxvisError(f"no parts to merge: {parts} does not exist")
    header = _parts_header(parts)
    if header is None:
        raise JaxvisError(f"no parts to merge: {parts} holds no {CONFIG_JSON}")
    config, extends = header["config"], bool(header.get("extends"))
    if out.exists():
        stored = stored_config(out)
        if first_difference(stored, config) is None:
            shutil.rmtree(parts, ignore_errors=True)
            return out
        if not extends or first_difference(_method(stored), _method(config)) is not None:
            raise JaxvisError(f"cannot merge into {out}: it exists and holds a different sweep")
    elif extends:
        raise JaxvisError(f"cannot merge {parts}: its parts extend {out}, which is gone; rerun the "
                          "sweep with sweep(overwrite) to compute every unit")
    return _finalize(out, parts, config, _stored_layers(parts), extends)


def analysis_config(group) -> dict | None:
    """The settings of the analysis that wrote the layer's metrics group (None: not analysed,
    or not recorded)."""
    if METRICS not in group:
        return None
    try:
        config = json.loads(group[METRICS].attrs.get("config", "null"))
    except (TypeError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def stage_seconds(group) -> dict[str, float]:
    """The wall seconds of each stage of the analysis that wrote the layer's metrics group
    (``{stage: seconds}``, in the order they ran; empty where the file has no metrics, or metrics
    written before the times were stored, or a damaged record)."""
    if METRICS not in group:
        return {}
    try:
        seconds = json.loads(group[METRICS].attrs.get("stage_seconds", "{}"))
    except (TypeError, ValueError):
        return {}
    if not isinstance(seconds, dict):
        return {}
    return {str(k): float(v) for k, v in seconds.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
