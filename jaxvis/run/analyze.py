"""`jaxvis analyze`: invariance metrics, natural-image calibration and the shift test for every unit
of a finished sweep, stored in the sweep's own HDF5 file and exported as CSV.

The metrics land in ``/layers/<layer>/metrics`` (definitions and the analysis settings in the
group's attributes), added in place as soon as each layer is computed
(:func:`jaxvis.store.resultfile.write_metrics`: nothing else in the file is touched, the images are not
copied, and an error while writing leaves the old metrics as they were). So an interrupted analysis
keeps its finished layers, and the next one resumes: a layer whose metrics were written with the
same settings is not computed again (``redo=True`` computes it anyway). Writability is checked
before any work, so a read-only folder costs nothing.

Every stage is batched across a layer's units and spread over this process's devices (the unit
mesh, :func:`jaxvis.optimize.parallel.unit_mesh`): the forward passes of the natural references,
the calibration, the grating battery and the phase rotation are data parallel
(:meth:`jaxvis.Model.layer_output` with a mesh), the shift test runs its units' chunks with
``shard_map`` as the sweep does; the metric table is numpy on the host. Each stage is timed
(:mod:`jaxvis.run.stages`): the seconds are stored with the metrics, returned in
:attr:`Analysis.seconds` and printed at the end.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import resource
import sys
import time
from pathlib import Path
from typing import Callable

import jax
import numpy as np

from jaxvis.analysis import metrics as metric_table
from jaxvis.analysis.gratings import Battery, gratings
from jaxvis.analysis.phase import phase_rotation
from jaxvis.analysis.readout import floor_bound
from jaxvis.analysis.natural import calibrate, reference_distances
from jaxvis.analysis.shift import ShiftProblem, linear_reference, shift_test, tiled_start, units_per_chunk
from jaxvis.store.config import SweepConfig, canonical, short
from jaxvis.errors import JaxvisError, unknown
from jaxvis.io.atomic import check_writable
from jaxvis.io.progress import Progress
from jaxvis.store.results import (analysis_config, check_writable_results, open_results, read_results,
                                  stage_seconds, write_metrics)
from jaxvis.objectives.response import RESPONSES
from jaxvis.optimize.config import Optimizer
from jaxvis.optimize.keys import unit_key
from jaxvis.optimize.parallel import unit_mesh
from jaxvis.run import stages
from jaxvis.run.table import csv_path, export_csv
from jaxvis.weights import Model, default_photos, load, weights_root

SHIFT_STEPS = 600  # the shift test's most steps by default (ShiftSettings)
SHIFT_STARTS = ("maximum", "noise")
ROTATION_STEPS = 12  # angles of the phase rotation (docs/invariance.md)


PROVENANCE = ("source", "source_sha256", "normalized")  # what identifies weights (their checksums)


def model_for(config: SweepConfig, path: Path | None = None) -> Model:
    """The network a results file was swept on, rebuilt from its config: the cached weights
    entry it names (a name, never a path the file gives), refused unless its provenance
    (``PROVENANCE``: source, checksum, normalisation) is the one the file recorded."""
    where = path or "this results file"
    # a network the registry did not build has no model configuration (its weights name is the
    # user's own label, which may even be that of a cached entry of another network)
    if config.custom_model or config.model is None:
        raise JaxvisError(f"{where} was swept on a custom network ({config.weights or 'unnamed'}), which the "
                          "file cannot rebuild; analyse it in Python with jaxvis.analyze(path, model=your_model)")
    name = config.weights
    if Path(name).name != name or name in (".", ".."):
        raise JaxvisError(f"{where} names its weights by a path ({name!r}); analyze loads cached weights by "
                          "name only (analyse it in Python with jaxvis.analyze(path, model=...))")
    entry = weights_root() / name
    model = load(str(entry) if entry.is_dir() else name, **(config.model or {}).get("options", {}))
    stored = config.weights_meta
    for key in PROVENANCE:
        if key in stored and canonical(model.meta.get(key), key) != canonical(stored[key], key):
            raise JaxvisError(f"weights {name!r} are not those {where} was swept with: their {key} differs "
                              f"({short(model.meta.get(key))} now, {short(stored[key])} there); restore those "
                              "weights under that name, or sweep again")
    return model


@dataclasses.dataclass(frozen=True)
class ShiftSettings:
    """How the shift test runs (:mod:`jaxvis.analysis.shift`): offsets every ``stride``, the
    optimiser (steps, learning rate, early stopping), ``learn_mask``, the keys' ``seed``, the
    share ``weight_min`` of the worst offset in the loss, ``batch`` offsets drawn per step (0:
    all), the learning rate's cosine decay to ``final_lr`` of it, and the ``start`` texture
    (``maximum``: the unit's best image tiled over it; ``noise``: white noise).

    The test, its masks, offsets and loss are the paper's code's (every offset measured,
    weight_min 0); the optimiser is cheaper (docs/method.md section 5): each step's gradient from
    32 offsets drawn at random (of 529 at conv3_1), Adam at a constant learning rate 0.3 (the
    drawn gradient's noise shrinks Adam's steps), at most 600 steps from the tiled best image,
    the responses measured on every offset at the end."""

    stride: int = 1
    optimizer: Optimizer = Optimizer(steps=SHIFT_STEPS, learning_rate=0.3)
    learn_mask: bool = False
    seed: int = 0
    weight_min: float = 0.0
    batch: int = 32
    final_lr: float = 1.0
    start: str = "maximum"
    sampling: str = "random"

    def __post_init__(self):
        if self.start not in SHIFT_STARTS:
            raise JaxvisError(f"unknown shift test start {self.start!r}; choose from {', '.join(SHIFT_STARTS)}")


SHIFT_DEFAULTS = _S = ShiftSettings()  # what AnalysisConfig and so analyze() and the CLI default to


def _whole(low: int):
    return lambda v: float(v).is_integer() and v >= low


# AnalysisConfig's numbers: field -> (check of a finite number, what a valid value is); the CLI
# names the flag (cli.FIELD_FLAGS)
SETTING_CHECKS = {
    "shift_steps": (_whole(1), "a positive number of steps"),
    "shift_stride": (_whole(1), "a positive integer"),
    "shift_lr": (lambda v: v > 0, "a finite number > 0"),
    "shift_weight_min": (lambda v: 0 <= v <= 1, "a number from 0 to 1"),
    "shift_batch": (_whole(0), "0 (all offsets) or a positive integer"),
    "shift_final_lr": (lambda v: 0 <= v <= 1, "a number from 0 to 1"),
    "top": (_whole(1), "a positive number of patches"),
}


@dataclasses.dataclass(frozen=True)
class AnalysisConfig:
    """How :func:`analyze` measures a sweep; what a results file stores with its metrics
    (:meth:`stored`), so an analysis with other settings computes a layer again.

    ``shift``: run the shift test, with ``shift_steps`` optimiser steps at learning rate
    ``shift_lr`` and the other ``shift_*`` settings of :class:`ShiftSettings` (``learn_mask``
    learns each unit's mask radius); ``top`` natural patches kept per unit; ``seed`` of the natural
    references and the shift test's keys; ``photos`` (None: the bundled CC0 photos); ``battery``
    the grating battery and phase rotation (None skips both)."""

    shift: bool = True
    shift_steps: int = _S.optimizer.steps
    shift_stride: int = _S.stride
    shift_lr: float = _S.optimizer.learning_rate
    shift_weight_min: float = _S.weight_min
    shift_batch: int = _S.batch
    shift_final_lr: float = _S.final_lr
    shift_start: str = _S.start
    learn_mask: bool = False
    top: int = 8
    seed: int = 0
    photos: tuple[Path, ...] | None = None
    battery: Battery | None = Battery()

    def __post_init__(self):
        for name, (valid, what) in SETTING_CHECKS.items():
            value = getattr(self, name)
            if not (isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)
                    and valid(value)):
                raise JaxvisError(f"AnalysisConfig.{name} must be {what}, not {value}")
        if self.shift_start not in SHIFT_STARTS:
            raise JaxvisError(f"AnalysisConfig.shift_start must be one of {', '.join(SHIFT_STARTS)}, "
                              f"not {self.shift_start!r}")
        if self.photos is not None:
            object.__setattr__(self, "photos", tuple(Path(p) for p in self.photos))

    def shift_settings(self) -> ShiftSettings | None:
        """The shift test's settings, None without the test."""
        if not self.shift:
            return None
        return ShiftSettings(self.shift_stride, Optimizer(steps=self.shift_steps, learning_rate=self.shift_lr),
                             self.learn_mask, self.seed, self.shift_weight_min, self.shift_batch,
                             self.shift_final_lr, self.shift_start)

    def stored(self, photos: list[Path]) -> dict:
        """The settings as the results file keeps them (JSON: tuples are lists there), ``photos``
        those the analysis reads."""
        names = [f.name for f in dataclasses.fields(self) if f.name not in ("photos", "battery")]
        stored = {**{name: getattr(self, name) for name in names}, "photos": [p.name for p in photos],
                  "gratings": None if self.battery is None else dataclasses.asdict(self.battery),
                  "rotation_steps": None if self.battery is None else ROTATION_STEPS}
        return json.loads(json.dumps(stored))


def analyze_layer(model: Model, layer: str, arrays: dict, meta: dict, directions: np.ndarray,
                  photos: list[Path], *, shift: ShiftSettings | None, seed: int,
                  top: int, battery: Battery | None = Battery(),
                  rotation_steps: int = ROTATION_STEPS, bar: Progress | None = None,
                  seconds: dict[str, float] | None = None, mesh=None) -> dict[str, np.ndarray]:
    """Every metric of the table (:mod:`jaxvis.analysis.metrics`) for one layer's units: what the
    network measures here (natural references, calibration, the shift test) joins the sweep's
    arrays as inputs, and the table computes the rest. The forward passes are split over the
    devices of ``mesh`` (default :func:`~jaxvis.optimize.parallel.unit_mesh`); ``seconds`` (a
    dict) receives each stage's wall seconds (:data:`jaxvis.run.stages.STAGES`)."""
    info = model.network.layer(layer)
    units, n = arrays["images"].shape[:2]
    mesh = unit_mesh() if mesh is None else mesh
    seconds = {} if seconds is None else seconds
    inputs = {**arrays, "mean_rgb": np.asarray(model.convention.mean_rgb255, np.float32)}
    timed = lambda stage, compute: inputs.update(stages.timed(seconds, stage, compute))  # noqa: E731
    timed("reference", lambda: reference_distances(model, info, meta, units, n, photos, seed, mesh))
    timed("calibrate", lambda: calibrate(model, info, directions, photos, top, mesh=mesh))
    if battery is not None and info.kind != "global":  # gratings need a spatial canvas
        timed("gratings", lambda: gratings(model, layer, radius=meta["radius"], directions=directions,
                                           maximum=arrays["max_activation"], battery=battery, mesh=mesh))
        timed("phase_rotation", lambda: phase_rotation(model, layer, arrays["max_image"], directions,
                                                       steps=rotation_steps, mesh=mesh))
    if shift is not None:
        timed("shift", lambda: shift_metrics(model, info, arrays, directions, meta, shift, bar))
    return stages.timed(seconds, "metrics", lambda: _table(inputs, meta, arrays))


def _table(inputs: dict, meta: dict, arrays: dict) -> dict[str, np.ndarray]:
    """The metric table on ``inputs``, with the read-out's floor bound where the sweep has floors."""
    if meta.get("floors") and "floor_images" in arrays:  # the read-out's diversity class
        inputs["floors"] = np.asarray(meta["floors"], np.float64)
        inputs["floor_linear_bound"] = floor_bound(meta["radius"], arrays["floor_images"].shape, inputs["floors"],
                                                   arrays["max_activation"], inputs.get("grating_blank"))
    return metric_table.evaluate(inputs)


def shift_metrics(model: Model, info, arrays: dict, directions: np.ndarray, meta: dict,
                  settings: ShiftSettings, bar: Progress | None = None) -> dict[str, np.ndarray]:
    """The shift test of every unit of a layer: texture, responses, steps (and the learnt sigma),
    the inputs of the table's ``shift_*`` metrics. Units run in chunks sized to the device
    (:func:`jaxvis.analysis.shift.units_per_chunk`, as the sweep's), spread over all devices;
    ``bar`` hears of the unit-steps after every segment."""
    layer, units = info.name, len(arrays["unit"])
    problem = ShiftProblem(layer, info.centre, info.canvas, info.rf, model.convention,
                           model.convention.mean_rgb255, stride=settings.stride,
                           weight_min=settings.weight_min, optimizer=settings.optimizer,
                           learn_mask=settings.learn_mask, batch=settings.batch, final_lr=settings.final_lr,
                           sampling=settings.sampling)
    keys = jax.numpy.stack([unit_key(settings.seed, f"shift:{layer}", int(u), 1) for u in arrays["unit"]])
    starts = tiled_start(arrays["max_image"], model.convention.mean_rgb255, problem.texture) \
        if settings.start == "maximum" else None
    mesh = unit_mesh()
    chunk = units_per_chunk(model.network, problem, mesh.devices.flat[0], mesh.size)
    bar = bar or Progress(enabled=False)
    o = settings.optimizer  # work: unit-steps, one texture per unit, every row computes every step
    sizes = [min(chunk, units - i) for i in range(0, units, chunk)]  # each size compiles once
    bar.start(f"{layer} shift test", units, 0, work=-(-o.steps // o.segment) * o.segment, programs=len(set(sizes)))
    tests = []
    for i, rows in zip(range(0, units, chunk), sizes):
        seen = [0]
        bar.begin(rows)

        def on_segment(steps, seen=seen, rows=rows):
            bar.advance(0, int(steps.sum()) - seen[0], rows * o.segment)
            seen[0] = int(steps.sum())

        tests.append(shift_test(model.network, problem, keys[i:i + chunk], directions[i:i + chunk],
                                meta["radius"], mesh=mesh, on_segment=on_segment,
                                starts=None if starts is None else starts[i:i + chunk]))
        bar.advance(len(tests[-1]["steps"]), 0)
    test = {k: np.concatenate([t[k] for t in tests]) for k in tests[0]}
    out = {"shift_texture": test["texture"], "shift_responses": test["responses"],
           "shift_steps": test["steps"].astype(np.int32)}
    if settings.learn_mask:
        out["shift_sigma"] = test["sigma"].astype(np.float32)
    # the read-out's linear reference: the affine unit whose best image is the unit's, same test
    out["shift_linear"] = linear_reference(arrays["max_image"] - np.asarray(model.convention.mean_rgb255, np.float32),
                                           problem, test["sigma"] if settings.learn_mask else None).astype(np.float32)
    return out


def peak_resident_gb() -> float:
    """This process's peak resident size so far, in GB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 30) if sys.platform == "darwin" else peak / (1 << 20)


def _check_centre(config: SweepConfig, model: Model, layer: str, path: Path) -> None:
    """The metrics measure the unit at the centre of the layer's own canvas; refuse other units."""
    own = model.network.layer(layer).canvas
    response, canvas = config.objective.response, config.objective.canvas or own
    if not RESPONSES[response].centre or canvas != own:
        raise JaxvisError(f"{path.name} was swept with response {response!r} on a {canvas} px canvas; analysis "
                          f"measures the centre unit on {layer}'s own {own} px canvas only (render or report "
                          "the file instead)")


@dataclasses.dataclass(frozen=True)
class Analysis:
    """What :func:`analyze` computed: ``metrics[layer][name]`` (arrays over the layer's units, as
    stored in the file), the ``csv`` table, the settings ``config`` stored with them, and
    ``seconds[layer][stage]`` the wall seconds of each stage (:data:`jaxvis.run.stages.STAGES`;
    a layer kept from an earlier run: the times stored with it, none from files written before
    they were stored)."""

    metrics: dict[str, dict[str, np.ndarray]]
    csv: Path
    config: dict
    seconds: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)


def analyze(path: str | Path, config: AnalysisConfig | None = None, *, model: Model | None = None,
            layers: list[str] | None = None, log=None, progress: bool | Progress | Callable = False,
            redo: bool = False, **keywords) -> Analysis:
    """Analyse a finished sweep as ``config`` says (an :class:`AnalysisConfig`; or its fields as
    ``keywords``, e.g. ``shift=False, top=2``): metrics of every unit, added to the file in place
    layer by layer and exported as ``<file>.csv``; returns them. Layers whose metrics the file
    holds with these settings are kept, not computed again, unless ``redo`` (see the module
    docstring). ``battery=None`` skips the grating battery and the phase rotation (forward passes
    only, seconds per layer).

    Quiet by default: ``progress=True`` prints what ``jaxvis analyze`` shows (a line per layer,
    the shift test's bar with its ETA; stderr), a callable hears every
    :class:`~jaxvis.io.progress.Status`, or pass a :class:`~jaxvis.io.progress.Progress`.
    ``log``: a callable for the per-layer lines instead (default: where the bar is shown)."""
    if config is not None and keywords:
        raise JaxvisError(f"analyze(path, config) takes its settings from the config, not from "
                          f"{', '.join(sorted(keywords))}; change the config instead")
    config = config or _config(keywords)
    path = Path(path)
    results = read_results(path, layers=layers)  # checks the file first
    table = csv_path(path)
    check_writable_results(path)  # before any work: permissions, another process holding it
    check_writable(path.parent, f"the metrics table {table.name}")
    sweep = results.sweep_config  # refuses a response that is not registered, naming it
    model = _checked_model(path, results, sweep, model)
    photos = list(config.photos or default_photos())
    bar = Progress.of(progress)
    log = log or bar.note
    stored = config.stored(photos)
    done = {} if redo else finished_layers(path, results, stored)
    with open_results(path) as f:
        seconds = {layer: stage_seconds(f["layers"][layer]) for layer in done}
    analysed, timed = {}, {}
    for layer, arrays in results.layers.items():
        if layer in done:
            log(f"{layer}: metrics with these settings already in {path.name}, kept "
                "(recompute them with analyze(redo))")
            analysed[layer] = done[layer]
            continue
        info = model.network.layer(layer)
        directions = arrays["direction"] if "direction" in arrays else sweep.basis(info.channels)[arrays["unit"]]
        log(f"{layer}: {len(arrays['unit'])} units" + (" (with the shift test)" if config.shift else ""))
        if config.battery is not None and info.kind == "global":
            log(f"{layer}: after global pooling, no grating battery or phase rotation (no canvas)")
        t0, seconds[layer] = time.perf_counter(), {}
        analysed[layer] = analyze_layer(model, layer, arrays, results.layer_meta[layer], directions, photos,
                                        shift=config.shift_settings(), seed=config.seed, top=config.top,
                                        battery=config.battery, bar=bar, seconds=seconds[layer])
        write_metrics(path, {layer: analysed[layer]}, metric_table.definitions(set(analysed[layer])), stored,
                      {layer: seconds[layer]})
        timed[layer] = len(arrays["unit"])
        log(f"{layer}: analysed in {time.perf_counter() - t0:.1f} s, metrics written")
    if timed:
        for line in stages.table({layer: seconds[layer] for layer in timed}, timed):
            log(line)
    log(f"peak resident size {peak_resident_gb():.2f} GB")
    csv = export_csv(path, results.layers, analysed, results.layer_meta)
    return Analysis(analysed, csv, stored, {layer: seconds[layer] for layer in analysed})


def _config(keywords: dict) -> AnalysisConfig:
    """The thin keyword path: :class:`AnalysisConfig` from its fields, unknown names refused."""
    fields = [f.name for f in dataclasses.fields(AnalysisConfig)]
    strays = sorted(set(keywords) - set(fields))
    if strays:
        raise unknown("analysis setting(s)", strays, fields)
    return AnalysisConfig(**keywords)


def _checked_model(path: Path, results, sweep: SweepConfig, model: Model | None) -> Model:
    """The model to analyse ``results`` with (the file's unless given), once every layer has the
    radius the analysis measures at and its centre unit is what the sweep optimised."""
    for layer, meta in results.layer_meta.items():
        if "radius" not in meta:
            raise JaxvisError(f"{path} is a damaged jaxvis results file: layer {layer}'s metadata has no "
                              "radius (the contrast budget the analysis measures at)")
    model = model or model_for(sweep, path)
    for layer in results.layers:
        _check_centre(sweep, model, layer, path)
    return model


def finished_layers(path: Path, results, settings: dict) -> dict[str, dict[str, np.ndarray]]:
    """The layers of ``results`` whose stored metrics an analysis with ``settings`` (as stored)
    wrote: their metrics. A metrics group is swapped in whole (:func:`write_metrics`), so one that
    is there is complete."""
    with open_results(path) as f:
        same = {layer for layer in results.metrics if analysis_config(f["layers"][layer]) == settings}
    return {layer: results.metrics[layer] for layer in same}
