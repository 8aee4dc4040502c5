"""Sweep layers of a network: for every selected unit, N diverse images and the single maximum.

This is the library entry point behind ``jaxvis sweep``::

    result = jaxvis.sweep("vgg19-normalized", "conv2_1", units="0-7", steps=500)
    result["conv2_1"]["images"]            # [8, 6, 10, 10, 3] RGB grey levels
    result["conv2_1"]["activations"] / result["conv2_1"]["max_activation"][:, None]

Per layer, units run in chunks sized to the device (``units_per_chunk``), two compiled programs
per layer (N images with diversity, and N = 1 without, the reference maximum). Each unit's random
start comes from (seed, layer, unit, N) alone, so its result does not depend on the chunk it ran in.
With ``out=`` every finished chunk is written at once (crash-safe, see :mod:`jaxvis.store.results`)
while the device goes on with the next chunk; running the same sweep again resumes it.

Every chunk is spread over all of this process's devices (a multiple of the device count). In a
multi-process sweep (``jaxvis sweep --distributed``, :mod:`jaxvis.optimize.parallel`) each
process computes its share of every layer's units into the common parts folder, and process 0
assembles the file once all are done. The results do not depend on the device count or the
process layout, so the config records neither: the merged file equals a one-process sweep's, and
a sweep started on a cluster can be resumed under another layout.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import warnings
import zlib
from pathlib import Path
from typing import Callable, Iterable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from jaxvis.store.config import SweepConfig
from jaxvis.errors import JaxvisError
from jaxvis.io.progress import Progress
from jaxvis.store.results import ResultWriter, read_rows
from jaxvis.optimize import parallel
from jaxvis.optimize.keys import unit_key
from jaxvis.optimize.loop import compilation_cache, optimize, units_per_chunk, useful_flops
from jaxvis.optimize.maximum import TIE, maximum, reference, restart_keys
from jaxvis.optimize.parallel import Processes
from jaxvis.optimize.config import FLOOR_ROUNDS
from jaxvis.optimize.step import FLOOR_START_MIX, Problem
from jaxvis.analysis.readout import agreement, threshold
from jaxvis.param.phase import phase_circle
from jaxvis.run.plan import LayerPlan, configure, named_model, plan
from jaxvis.weights import DEFAULT_WEIGHTS, Model, weights_root


def run_units(model: Model, lp: LayerPlan, units: Sequence[int], seed: int, chunk: int,
              mesh: Mesh | None = None, bar: Progress | None = None) -> dict[str, np.ndarray]:
    """Optimise ``units`` of one layer (padded to ``chunk``) on ``mesh``: the single-image maximum
    (best of ``lp.restarts``), the diverse set, and a floor set per alpha; ``bar`` hears of the
    unit-steps after every segment.

    ``max_activation`` is the reference every fraction is relative to: the best restart, or a
    diverse image's activation where one beats it (``max_raised``; its image is then
    ``max_image``). The floor sets are relative to that reference, and run from every start of
    ``lp.floor_starts`` (next to that image, on its phase circle, the lambda set, at random): the
    widest feasible set is kept, and every start's result as its certificate (:func:`floor_set`)."""
    n = len(units)
    padded = list(units) + [units[-1]] * (chunk - n)  # same shapes: no recompilation
    basis = np.eye(lp.info.channels, dtype=np.float32) if lp.directions is None else lp.directions
    directions = basis[padded]
    name = lp.info.name

    def keys(what: str, images: int):
        return jax.numpy.stack([unit_key(seed, what, u, images) for u in padded])

    def tick_for(rows: int, images: int, program: str):
        return _ticker(bar, rows, images * lp.diverse.optimizer.segment, program)

    best = maximum(model.network, lp.maximum, keys(name, 1), directions, lp.radius, lp.restarts, mesh,
                   on_segment=tick_for(n * lp.restarts, lp.maximum.n, "maximum"))
    diverse = optimize(model.network, lp.diverse, keys(name, lp.diverse.n), directions, lp.radius, mesh,
                       on_segment=tick_for(n, lp.diverse.n, "diverse"))
    ref, raised = reference(best["activation"], diverse["activations"])
    top = np.argmax(diverse["activations"], axis=1)
    image = np.where(raised[:, None, None, None], diverse["images"][np.arange(chunk), top], best["image"])
    out = {"unit": np.asarray(units, np.int64), "direction": directions, **diverse,
           "max_image": image, "max_activation": ref.astype(np.float32), "max_raised": raised,
           "max_steps": best["steps"], "max_stop_reason": best["stop_reason"],
           "max_restart": best["restart"], "max_restart_activations": best["restart_activations"]}
    mean = np.asarray(lp.diverse.mean_rgb, np.float32)
    starts, mixes = floor_start_images(lp.floor_starts, image - mean, diverse["images"] - mean)
    sets = [_floor_starts(model, lp, problem, keys(f"floor{problem.objective.floor:g}:{name}", problem.n),
                          directions, ref, starts, mixes, n, mesh, tick_for) for problem in lp.floors]
    if sets:  # [U, alphas, ...] in the order of lp.floors (highest first)
        out.update({f"floor_{key}": np.stack([s[key] for s in sets], axis=1) for key in sets[0]})
    return {k: v[:n] for k, v in out.items()}


def _floor_starts(model: Model, lp: LayerPlan, problem: Problem, keys, directions, ref, starts, mixes, n: int,
                  mesh, tick_for) -> dict[str, np.ndarray]:
    """One floor's set for a chunk's units (``n`` real): its K starts per unit (K calls of a chunk's
    rows, the chunk's memory), then, for the units whose starts disagree, the K starts again from
    fresh draws (restart keys K..2K-1, :data:`FLOOR_ROUNDS`); :func:`floor_set` of all of them."""
    k, chunk, rounds = len(lp.floor_starts), len(directions), FLOOR_ROUNDS if len(lp.floor_starts) > 1 else 1
    label = f"floor {problem.objective.floor:g}"
    per_unit = lambda v: np.repeat(v.reshape(chunk, 1, k, *v.shape[1:]), rounds, axis=1).reshape(-1, *v.shape[1:])
    rows = dict(keys=restart_keys(keys, k * rounds), directions=np.repeat(directions, k * rounds, axis=0),
                maxima=np.repeat(ref, k * rounds), starts=per_unit(starts), mixes=per_unit(mixes))
    index = np.arange(chunk * k * rounds).reshape(chunk, rounds, k)
    first = index[:, 0].reshape(-1)
    done = _floor_rows(model, problem, rows, first, chunk, lp.radius, mesh,
                       lambda real: tick_for(real, problem.n, label), n * k)
    if rounds == 1:
        return floor_set(done, k, ref)
    agreed = agreement(done["diversity"].reshape(chunk, 1, k), done["feasible"].reshape(chunk, 1, k))[:, 0]
    unsettled = ~(agreed >= threshold("floor_agreement")) & (np.arange(chunk) < n)
    again = index[unsettled, 1:].reshape(-1)
    more = _floor_rows(model, problem, rows, again, chunk, lp.radius, mesh,
                       lambda real: tick_for(real, problem.n, label), len(again))
    return floor_set(_placed(chunk * k * rounds, (first, done), (again, more)), k * rounds, ref)


def _floor_rows(model: Model, problem: Problem, rows: dict, which: np.ndarray, chunk: int, radius, mesh,
                tick_for, real: int) -> dict[str, np.ndarray]:
    """Run the floor starts ``rows[...][which]`` in calls of at most ``chunk`` rows; a last, short
    call is padded to a power of two of the device count (few distinct compiled shapes). ``real``:
    how many of ``which`` are real units' rows (the bar counts those)."""
    devices = 1 if mesh is None else mesh.devices.size
    parts = []
    for lo in range(0, len(which), chunk):
        part = which[lo:lo + chunk]
        size = chunk if len(part) == chunk else min(chunk, devices * 2 ** int(np.ceil(np.log2(-(-len(part) // devices)))))
        part = np.concatenate([part, np.repeat(part[-1:], size - len(part))])
        take = {key: v[part] for key, v in rows.items()}
        out = optimize(model.network, problem, take["keys"], take["directions"], radius, mesh, maxima=take["maxima"],
                       on_segment=tick_for(max(0, min(size, real - lo))), starts=take["starts"], mixes=take["mixes"])
        parts.append({key: v[:min(chunk, len(which) - lo)] for key, v in out.items()})
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]} if parts else {}


def _placed(total: int, *pieces) -> dict[str, np.ndarray]:
    """``[total]`` rows from (``rows``, ``values``) pieces; rows no piece ran hold a start that never
    ran: not feasible, NaN diversity and distances, activations -inf (ranked last), 0 steps."""
    first = next(v for _, v in pieces if v)
    out = {}
    for key, v in first.items():  # floats NaN (activations -inf), flags False, counts 0
        fill = -np.inf if key == "activations" else np.nan if np.issubdtype(v.dtype, np.floating) else 0
        out[key] = np.full((total, *v.shape[1:]), fill, v.dtype)
    for rows, values in pieces:
        if values:
            for key, v in values.items():
                out[key][rows] = v
    return out


def _ticker(bar: Progress | None, rows: int, image_steps: int, program: str):
    """The ``on_segment`` of a call on ``rows`` real rows of ``image_steps`` image-steps per segment
    each: the bar hears the units' new steps and the segment's image-steps (:func:`unit_work`).
    ``program`` names what the call runs (the maximum, the diverse set, a floor's set: each compiled
    once per layer, the ``2 + floors`` programs the bar is started with)."""
    seen = [0]
    if bar is not None:
        bar.begin(program)

    def tick(steps):
        total = int(np.asarray(steps)[:rows].sum())
        if bar is not None:
            bar.advance(0, total - seen[0], rows * image_steps)
        seen[0] = total
    return tick


def floor_start_images(names: Sequence[str], best: np.ndarray, diverse: np.ndarray):
    """(``[U * K, N, H, W, 3]`` start images, ``[U * K]`` random shares), unit-major (row
    ``u * K + k`` is start ``names[k]`` of unit ``u``), from the units' best images ``best``
    ``[U, H, W, 3]`` and lambda sets ``diverse`` ``[U, N, H, W, 3]`` (deviations from the mean colour);
    see :data:`jaxvis.optimize.step.FLOOR_STARTS`."""
    n = diverse.shape[1]
    images = {"maximum": lambda: np.repeat(best[:, None], n, axis=1),
              "phase": lambda: np.asarray(phase_circle(best, n)),
              "diverse": lambda: diverse,
              "random": lambda: np.zeros_like(diverse)}
    starts = np.stack([images[name]() for name in names], axis=1)
    mixes = np.array([1.0 if name == "random" else FLOOR_START_MIX for name in names], np.float32)
    return starts.reshape(-1, *diverse.shape[1:]), np.tile(mixes, len(best))


def floor_set(rows: dict[str, np.ndarray], k: int, maxima: np.ndarray) -> dict[str, np.ndarray]:
    """The ``[U * K]`` unit-major rows of one floor's K starts -> per unit the widest feasible set
    (``images``, ``activations``, distances, ``steps``, ``stop_reason``, ``feasible``,
    ``diversity``) and the certificate: ``start`` (which start won), ``start_diversity``,
    ``start_pixel_min``, ``start_feasible``, ``start_fraction_min``, ``start_steps`` ``[U, K]``.
    Ranking: feasible sets first, by the diversity term's exact value; sets that never kept their
    floor by their smallest activation fraction. Near-ties (:data:`~jaxvis.optimize.maximum.TIE`)
    keep the earlier start, so the winner does not depend on rounding."""
    count = len(rows["feasible"]) // k
    per = {key: v.reshape(count, k, *v.shape[1:]) for key, v in rows.items()}
    i, j = np.triu_indices(rows["pixel_distances"].shape[-1], 1)
    pixel_min = per["pixel_distances"][..., i, j].min(-1)
    feasible = per["feasible"].astype(bool)
    fraction = per["activations"].min(-1) / np.maximum(np.abs(maxima), 1e-12)[:, None]
    score = np.where(feasible, per["diversity"], fraction)
    best = np.zeros(count, np.int64)
    units = np.arange(count)
    for s in range(1, k):
        ahead = feasible[:, s] & ~feasible[units, best]
        level = feasible[:, s] == feasible[units, best]
        beats = score[:, s] - score[units, best] > TIE * np.abs(score[units, best])
        best = np.where(ahead | (level & beats), s, best)
    out = {key: per[key][units, best] for key in ("images", "activations", "pixel_distances",
                                                    "feature_distances", "steps", "stop_reason", "diversity")}
    out["feasible"] = feasible[units, best]
    return {**out, "start": best.astype(np.int8), "start_diversity": per["diversity"].astype(np.float32),
            "start_pixel_min": pixel_min.astype(np.float32), "start_feasible": feasible,
            "start_fraction_min": fraction.astype(np.float32),
            "start_steps": per["steps"].astype(np.int32)}


def sweep(model: Model | str = DEFAULT_WEIGHTS, config: SweepConfig | str | Sequence[str] = "conv3_1",
          units: str | Iterable[int] = "all", *, out: str | Path | None = None, mesh: Mesh | None = None,
          overwrite: bool = False, chunk: int | None = None, progress: bool | Progress | Callable = False,
          photos: list[Path] | None = None, radius: float | None = None,
          processes: Processes | None = None, compile_cache: bool | Path = True,
          **keywords) -> dict[str, dict[str, np.ndarray]]:
    """Sweep ``model`` (weights name or :class:`Model`) as ``config`` says; returns per layer a dict
    of arrays over the selected units (see :func:`jaxvis.optimize.loop.optimize` for the keys, plus
    ``unit``, ``max_image``, ``max_activation``, ``max_steps``, ``max_stop_reason``).

    ``config``: a :class:`SweepConfig` (from :func:`configure`, or a results file's), or the layers
    to sweep (also as ``layers=``), with ``units`` and ``keywords`` passed on to :func:`configure`, e.g.
    ``sweep("vgg19-normalized", "conv2_1", "0-7", floors=0.9, steps=1000)``.
    ``photos`` (natural images for the contrast budget; default the bundled CC0 photos) or
    ``radius`` (the budget itself, in grey levels of L2 norm) set the norm sphere.

    ``mesh``: the devices each chunk is spread over (default all of this process's devices);
    ``chunk`` is rounded up to a multiple of their count. ``processes``: this process's place in
    a multi-process sweep (default what ``jax.distributed`` says); each process computes
    ``parallel.share`` of every layer's units, needs ``out``, and only process 0 returns results
    (after assembling the file), the others ``{}``. ``compile_cache``: keep compiled programs in
    ``cache_folder()`` (True), a folder of your choice, or not at all (False).

    ``progress``: quiet by default; True prints the bar ``jaxvis sweep`` shows (stderr, ETA from
    the measured rate), a callable is called with every :class:`~jaxvis.io.progress.Status`, or
    pass a :class:`~jaxvis.io.progress.Progress`.
    """
    weights, model = named_model(model)
    if not isinstance(config, SweepConfig):
        config = configure(model, keywords.pop("layers", config), units, **keywords)
        config = dataclasses.replace(config, weights=weights)
    elif keywords or units != "all":
        raise JaxvisError(f"sweep(model, config) takes its settings from the config, not from units= or "
                          f"{', '.join(sorted(keywords)) or 'keywords'}; change the config instead")
    if compile_cache:
        compilation_cache(cache_folder() if compile_cache is True else Path(compile_cache))
    if mesh is None:
        mesh = parallel.unit_mesh()
        _warn_single_cpu(mesh)
    processes = _processes(processes, out, overwrite)
    plans = plan(model, config, photos, radius)
    writer = None
    if out is not None:
        writer = ResultWriter(Path(out), config.to_json(), overwrite=overwrite, upgrade=SweepConfig.upgrade)
        # up front, so a later `merge` of partial results knows every layer; by one process only
        # (its read-modify-write of layers.json is not safe against concurrent writers)
        if processes.index == 0:
            for lp in plans:
                writer.write_layer_meta(lp.info.name, lp.meta())
    computed = _compute(model, plans, config.seed, writer, processes, mesh, chunk, Progress.of(progress))
    if writer:
        # everyone's parts are on disk once all processes passed this point
        parallel.barrier(f"jaxvis-sweep-done-{_sweep_id(config.to_json())}")
        if processes.index != 0:
            return {}
        path = writer.finalize({lp.info.name: lp.meta() for lp in plans})
    return {lp.info.name: _selected(lp, computed[lp.info.name], path if writer else None)
            for lp in plans}


def _processes(processes: Processes | None, out, overwrite: bool) -> Processes:
    """This process's place (default what ``jax.distributed`` says), once the options suit it."""
    processes = parallel.current() if processes is None else processes
    if processes.count > 1 and out is None:
        raise JaxvisError("a multi-process sweep needs sweep(out): the results file whose parts folder "
                          "all processes share")
    if processes.count > 1 and overwrite:
        raise JaxvisError("sweep(overwrite) cannot be used with several processes (each would delete "
                          "the others' parts); remove the old results first or use another sweep(out)")
    return processes


def _compute(model: Model, plans: list[LayerPlan], seed: int, writer: ResultWriter | None,
             processes: Processes, mesh: Mesh, chunk: int | None, bar: Progress) -> dict[str, list[dict]]:
    """Per layer the chunks this process computed (its share of the units the file lacks), each
    written as soon as it is done while the device goes on with the next."""
    computed: dict[str, list[dict]] = {lp.info.name: [] for lp in plans}
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as io:  # host writes overlap compute
        pending: list[concurrent.futures.Future] = []
        for lp in largest_first(model, plans):
            done = writer.done_units(lp.info.name) if writer else set()
            mine = parallel.share(lp.units, processes)
            todo = [u for u in mine if u not in done]
            size = chunk_size(chunk or units_per_chunk(model.network, lp.diverse, mesh.devices.flat[0],
                                                       mesh.size), len(mine), mesh.size)
            bar.start(lp.info.name, len(mine), len(mine) - len(todo), unit_work(lp), 2 + len(lp.floors))
            for start in range(0, len(todo), size):
                part = run_units(model, lp, todo[start:start + size], seed, size, mesh, bar)
                if writer:
                    _raise_failed(pending)
                    pending.append(io.submit(writer.write_chunk, lp.info.name, part))
                computed[lp.info.name].append(part)
                bar.advance(len(part["unit"]), 0)  # its unit-steps were counted segment by segment
        concurrent.futures.wait(pending)
        _raise_failed(pending)
    return computed


def unit_work(lp: LayerPlan) -> int:
    """The most image-steps one unit of ``lp`` takes, the work :func:`run_units` reports to the
    progress bar: every call running all its segments (each ``segment`` steps of every row, stopped
    rows included), the maximum's restarts of one image, the diverse set and every floor's starts
    of N images each (the first round: the second, for units whose starts disagree, runs past the
    bound, so that the ETA is not doubled for the settled majority)."""
    o = lp.diverse.optimizer
    starts = len(lp.floor_starts)
    images = lp.restarts * lp.maximum.n + lp.diverse.n + sum(p.n for p in lp.floors) * starts
    return -(-o.steps // o.segment) * o.segment * images


def _selected(lp: LayerPlan, parts: list[dict], path: Path | None) -> dict[str, np.ndarray]:
    """The layer's results for its selected units, rows sorted by unit: what this run computed,
    plus (read row by row from the finished file) what earlier runs or other processes did."""
    have = {int(u) for part in parts for u in part["unit"]}
    missing = [u for u in lp.units if u not in have]
    if missing and path is not None:
        parts = parts + [read_rows(path, lp.info.name, missing)]
    if not parts:
        return {}
    rows = {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
    order = np.argsort(rows["unit"], kind="stable")
    return {k: v[order] for k, v in rows.items()}


def _cpu_count_chosen() -> bool:
    """Whether someone chose the CPU device count (``cpu_devices``, ``XLA_FLAGS``)."""
    return jax.config.jax_num_cpu_devices != -1 or "device_count" in os.environ.get("XLA_FLAGS", "")


class SingleCpuWarning(UserWarning):
    """A library sweep on one CPU device of a multi-core machine (the CLI chooses for itself)."""


def _warn_single_cpu(mesh: Mesh) -> None:
    """A library sweep on a multi-core CPU with one jax device leaves cores idle; say how to use
    them (the CLI does it itself: one device per core)."""
    cores = os.cpu_count() or 1
    if mesh.size == 1 and mesh.devices.flat[0].platform == "cpu" and cores > 1 and not _cpu_count_chosen() \
            and not getattr(_warn_single_cpu, "said", False):
        _warn_single_cpu.said = True
        warnings.warn(f"sweeping on one CPU device of {cores} cores; call jaxvis.cpu_devices() before "
                      "the first jax computation to spread units over one device per core "
                      "(as `jaxvis sweep` does)", SingleCpuWarning, stacklevel=3)


def largest_first(model: Model, plans: list[LayerPlan]) -> list[LayerPlan]:
    """The layers in the order they are computed: most work first (units x useful FLOPs of a
    unit-step, diverse set plus maximum), so a whole-network sweep reaches its deepest, costliest
    layers, and any memory trouble, at the start instead of hours in, and the time of the first
    layer bounds every later one's. Ties keep the network's order; results keep it always."""
    if len(plans) < 2:
        return list(plans)
    cost = {}
    for lp in plans:  # FLOPs grow with the images: the N = 1 maximum costs 1/N of the diverse set
        per_image = useful_flops(model.network, lp.diverse) / lp.diverse.n
        images = lp.diverse.n * (1 + len(lp.floors) * len(lp.floor_starts)) + lp.maximum.n * lp.restarts
        cost[lp.info.name] = len(lp.units) * per_image * images
    return sorted(plans, key=lambda lp: -cost[lp.info.name])


def chunk_size(wanted: int, units: int, devices: int) -> int:
    """Units per call: ``wanted``, but no more than there are units, and a multiple of the
    device count so every device gets as many (the last chunk is padded)."""
    size = max(1, min(wanted, units))
    return -(-size // devices) * devices


def cache_folder() -> Path:
    """Where compiled programs are kept: ``$JAXVIS_CACHE``, else ``cache/`` in the weights root."""
    return Path(os.environ.get("JAXVIS_CACHE") or weights_root() / "cache")


def _sweep_id(config: dict) -> str:
    """A short name for this sweep, the same in every process (barrier names must match)."""
    return f"{zlib.crc32(json.dumps(config, sort_keys=True, default=str).encode()):08x}"


def _raise_failed(futures) -> None:
    for f in futures:
        if f.done() and f.exception() is not None:
            raise f.exception()
