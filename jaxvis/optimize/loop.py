"""Many units per device step: ``step`` vmapped over units, looped with ``lax.scan``, jitted once.

One compiled program per (network structure, :class:`Problem`, number of units): the network's
weights and the units' directions are *arguments*, so every chunk of every channel of a layer
reuses it, and XLA never folds the weights in as constants. The host runs fixed-length segments
of ``Optimizer.segment`` steps and stops early once every unit of the chunk has stopped; on a CPU
the units that stopped leave the batch (:class:`Batch`).

The units of a chunk are spread over a 1-D device mesh (:mod:`jaxvis.optimize.parallel`): every
device runs this same program on its slice, with no communication between devices.
"""

from __future__ import annotations

import functools
import math
import os

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxvis.errors import JaxvisError
from jaxvis.models import ops
from jaxvis.data import prior as learned_prior
from jaxvis.models.base import Network
from jaxvis.objectives.naturalness import bound
from jaxvis.optimize import parallel
from jaxvis.optimize import step as unit_step
from jaxvis.optimize.keys import transform_key
from jaxvis.optimize.step import Problem, UnitState

STOP_MAX_STEPS, STOP_CONVERGED = 0, 1


ROWS, SHARED = P(parallel.UNITS), P()  # per-unit arrays split over devices; weights on all


def _init(keys, *, problem: Problem, mesh: Mesh) -> UnitState:
    """The units' start states (:func:`jaxvis.optimize.step.init`): one compiled program per
    :class:`~jaxvis.optimize.step.Start` (shape and settings), not per problem, and the
    transform streams apart."""
    states = _start(keys, start=unit_step.Start.of(problem), mesh=mesh)
    if problem.objective.transforms is None:
        return states
    return states._replace(transforms=_streams(keys, mesh=mesh))


@functools.partial(jax.jit, static_argnames=("param", "mesh"), donate_argnames=("z",))
def _near(z, starts, mixes, colour, *, param: str, mesh: Mesh):
    def near(z, starts, mixes, colour):  # one device, its own units
        return jax.vmap(lambda z, x, m: unit_step.start_near(z, x, param, colour, m))(z, starts, mixes)

    return parallel.per_device(near, mesh, (ROWS, ROWS, ROWS, SHARED), ROWS)(z, starts, mixes, colour)


@functools.partial(jax.jit, static_argnames=("mesh",))
def _streams(keys, *, mesh: Mesh):
    return parallel.per_device(jax.vmap(transform_key), mesh, (ROWS,), ROWS)(keys)


@functools.partial(jax.jit, static_argnames=("start", "mesh"))
def _start(keys, *, start: unit_step.Start, mesh: Mesh) -> UnitState:
    init = jax.vmap(lambda k: unit_step.start(k, start))
    return parallel.per_device(init, mesh, (ROWS,), ROWS)(keys)


@functools.partial(jax.jit, static_argnames=("graphdef", "problem", "mesh"), donate_argnames=("states",))
def _segment(params, states, directions, maxima, radius, *, graphdef, problem: Problem, mesh: Mesh) -> UnitState:
    def run(params, states, directions, maxima, radius):  # one device, its own units
        weights, prior = params
        net = nnx.merge(graphdef, weights)
        batched = jax.vmap(lambda s, d, m: unit_step.step(s, net, problem, d, radius, m))

        def body(states, _):
            return batched(states, directions, maxima), None

        with ops.precision(problem.optimizer.precision), bound(prior):
            states, _ = jax.lax.scan(body, states, None, length=problem.optimizer.segment)
        return states

    return parallel.per_device(run, mesh, (SHARED, ROWS, ROWS, ROWS, SHARED), ROWS)(
        params, states, directions, maxima, radius)


@functools.partial(jax.jit, static_argnames=("graphdef", "problem", "mesh"))
def _evaluate(params, states, directions, maxima, radius, *, graphdef, problem: Problem, mesh: Mesh) -> dict:
    def run(params, states, directions, maxima, radius):
        weights, prior = params
        net = nnx.merge(graphdef, weights)
        with ops.precision("float32"), bound(prior):  # what the images really do, whatever their precision
            return jax.vmap(lambda s, d, m: unit_step.evaluate(s, net, problem, d, radius, m))(
                states, directions, maxima)

    return parallel.per_device(run, mesh, (SHARED, ROWS, ROWS, ROWS, SHARED), ROWS)(
        params, states, directions, maxima, radius)


def place(network: Network, keys: jax.Array, directions: np.ndarray, radius: float, mesh: Mesh,
          prior: dict | None = None):
    """The jitted functions' inputs on ``mesh``: weights (with a learned prior's arrays, ``prior``)
    and radius replicated, keys and directions padded to a multiple of the device count and split
    over the devices."""
    graphdef, params = nnx.split(network)
    params = (params, prior)
    size = parallel.padded_count(len(directions), mesh)
    rows, shared = parallel.unit_sharding(mesh), parallel.replicated(mesh)
    keys = jax.device_put(parallel.pad_rows(keys, size), rows)
    directions = jax.device_put(parallel.pad_rows(np.asarray(directions, np.float32), size), rows)
    params = jax.device_put(params, shared)
    return graphdef, params, keys, directions, jax.device_put(np.float32(radius), shared)


def optimize(network: Network, problem: Problem, keys: jax.Array, directions: np.ndarray,
             radius: float, mesh: Mesh | None = None, maxima: np.ndarray | None = None,
             on_segment=None, starts: np.ndarray | None = None,
             mixes: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Optimise ``U`` units at once. ``keys`` ``[U]``, ``directions`` ``[U, C]``.

    ``on_segment(steps)``, if given, is called after every segment with the ``[U]`` optimiser steps
    each unit has taken so far (progress; the host reads them for early stopping anyway).

    ``maxima`` ``[U]``: the units' single-image maxima ``a*``, required by (and only used by) a
    floor objective (``Objective.floor``; :func:`jaxvis.optimize.maximum.maximum` computes them).

    ``starts`` ``[U, H, W, 3]`` (one image per unit, e.g. its maximum) or ``[U, N, H, W, 3]`` (one
    per image): deviations from the mean colour that each unit's images start next to
    (:func:`jaxvis.optimize.step.start_near`, with the random draw's share ``mixes`` ``[U]``,
    default :data:`~jaxvis.optimize.step.FLOOR_START_MIX`; a mix of 1 is the random start); None:
    the random start ``z ~ N(0, 1)``.

    ``mesh``: the devices to spread the units over (``parallel.unit_mesh``; default all of this
    process's devices). ``U`` need not be a multiple of the device count (padded here), but the
    sweep's chunks are, so no device computes padding.

    Returns numpy arrays with leading dimension U: ``images`` ``[U, N, H, W, 3]`` (RGB grey levels),
    ``activations`` ``[U, N]``, ``pixel_distances``/``feature_distances`` ``[U, N, N]``, ``loss``,
    ``loss_curve`` ``[U, segments]`` (EMA of the loss after each segment, NaN once stopped),
    ``steps``, ``stop_reason`` (0 max steps, 1 converged); with a floor ``feasible`` ``[U]`` (the
    images are the widest set at which every image kept its floor; False: none did, the last).
    """
    mesh = parallel.unit_mesh() if mesh is None else mesh
    count = len(directions)
    maxima = _maxima(maxima, count, problem)
    prior = learned_prior.arrays(problem.objective.prior)
    graphdef, params, keys, directions, radius = place(network, keys, directions, radius, mesh, prior)
    maxima = jax.device_put(parallel.pad_rows(maxima, len(directions)), parallel.unit_sharding(mesh))
    jitted = dict(graphdef=graphdef, problem=problem, mesh=mesh)
    states = _init(keys, problem=problem, mesh=mesh)
    if starts is not None:
        states = states._replace(z=_started(states.z, starts, mixes, problem, count, mesh))
    batch = Batch(mesh, states, directions, maxima)
    curve = _segments(batch, params, radius, jitted, count, on_segment)
    states, directions, maxima = batch.whole()
    out = jax.device_get(_evaluate(params, states, directions, maxima, radius, **jitted))
    out = {k: np.asarray(v) for k, v in out.items()}
    out["loss_curve"] = curve
    out["steps"] = np.asarray(states.steps, np.int32)
    out["stop_reason"] = np.where(np.asarray(states.done), STOP_CONVERGED, STOP_MAX_STEPS).astype(np.int8)
    return {k: v[:count] for k, v in out.items()}  # padding rows dropped


# Whether stopped units leave the batch (Batch), per platform. On a CPU a step's cost follows its
# rows: conv3_1, 16 units, default sweep: 1.12x faster, the same results (benchmarks/batch_shrink.py,
# docs/speed.md). On an accelerator a small batch costs about as much as a large one and each
# halved size is one more compilation (24-37 s a program on the H200): off until measured there.
SHRINK = {"cpu": True, "accelerator": False}


class Batch:
    """The rows a chunk's next segment runs: all of them at first, then, each time at most half of
    the running batch is still optimising, only those (halved while they fit; padded with
    stopped rows, which a step leaves frozen), where :data:`SHRINK` says so for the mesh's
    platform. A stopped row's state is final, so the running ones compute what they would have in
    the whole batch, up to the batch size's floating-point layout (as between chunk sizes), and a
    unit stopping at 400 steps no longer costs its chunk's slowest unit's 1000. Each halved size
    is one more compiled program per problem (the persistent cache keeps it).

    ``trees``: pytrees whose leaves all have the rows as leading axis, split over ``mesh`` (the
    optimiser's states, the directions, ...); the loop reads and replaces them. :meth:`whole`
    gives them back with every row, in the original order."""

    def __init__(self, mesh: Mesh, *trees):
        self.mesh, self.trees = mesh, tuple(trees)
        self.size = len(jax.tree.leaves(trees)[0])
        self.rows = np.arange(self.size)
        self.stopped = np.zeros(self.size, bool)  # every row's, as of the last segment
        self.steps = np.zeros(self.size, np.int64)
        self._all = None  # every row's trees, once shrunk
        platform = mesh.devices.flat[0].platform
        self.shrinking = SHRINK["cpu" if platform == "cpu" else "accelerator"]

    def advance(self, trees: tuple, stopped: np.ndarray, steps: np.ndarray) -> bool:
        """A segment's result: the batch's new ``trees`` and, per row of the batch, whether it has
        stopped (converged or at the most steps) and its steps. True once every row has stopped;
        else the stopped rows leave if the rest fit in half the batch."""
        self.trees = tuple(trees)
        self.stopped[self.rows], self.steps[self.rows] = stopped, steps
        if self.stopped.all():
            return True
        self._shrink()
        return False

    def _shrink(self) -> None:
        if not self.shrinking:
            return
        stopped = self.stopped
        running = self.rows[~stopped[self.rows]]
        size = len(self.rows)
        while size // 2 >= len(running) and (size // 2) % self.mesh.size == 0:
            size //= 2
        if size == len(self.rows):
            return
        self._store()
        pad = np.flatnonzero(stopped)[0]  # frozen: the same state comes back
        self._load(np.concatenate([running, np.full(size - len(running), pad)]))

    def whole(self) -> tuple:
        if self._all is not None:
            self._store()
            self._load(np.arange(self.size))
        return self.trees

    def _store(self) -> None:
        """The batch's rows written into the full trees (kept on the devices: PRNG keys too).
        Padding repeats a stopped row, whose state the batch left as it was."""
        if self._all is None:  # the first shrink: every row is in the batch
            self._all = self.trees
        else:
            self._all = jax.tree.map(lambda whole, part: whole.at[self.rows].set(part), self._all, self.trees)

    def _load(self, rows: np.ndarray) -> None:
        taken = jax.tree.map(lambda x: x[rows], self._all)
        self.trees, self.rows = jax.device_put(taken, parallel.unit_sharding(self.mesh)), rows


def _segments(batch: Batch, params, radius, jitted: dict, count: int, on_segment) -> np.ndarray:
    """Segments until every unit has stopped or taken the most steps (the units that stopped
    leaving ``batch``); ``[rows, segments]`` the EMA of the loss after each (NaN once stopped)."""
    problem = jitted["problem"]
    segments = math.ceil(problem.optimizer.steps / problem.optimizer.segment)
    curve = np.full((batch.size, segments), np.nan, np.float32)
    for s in range(segments):
        states, directions, maxima = batch.trees
        states = _segment(params, states, directions, maxima, radius, **jitted)
        ema, done, now = jax.device_get((states.ema, states.done, states.steps))
        curve[batch.rows, s] = np.where(batch.stopped[batch.rows], np.nan, ema)  # NaN once stopped
        finished = batch.advance((states, directions, maxima), done | (now >= problem.optimizer.steps), now)
        if on_segment is not None:
            on_segment(batch.steps[:count].copy())
        if finished:
            break
    return curve


def _maxima(maxima: np.ndarray | None, count: int, problem: Problem) -> np.ndarray:
    """``[count]`` float32 maxima, given exactly when the objective has a floor (ones otherwise)."""
    if (maxima is None) != (problem.objective.floor is None):
        raise JaxvisError("maxima are needed exactly when the objective has a floor "
                          f"(floor={problem.objective.floor}, maxima {'missing' if maxima is None else 'given'})")
    if maxima is not None and np.shape(maxima) != (count,):
        raise JaxvisError(f"maxima must be [units] = [{count}], one per direction; got shape {np.shape(maxima)}")
    return np.ones(count, np.float32) if maxima is None else np.asarray(maxima, np.float32)


def _started(z, starts, mixes, problem: Problem, count: int, mesh: Mesh):
    """The units' start ``z`` moved next to ``starts`` (see :func:`optimize`), shapes checked."""
    starts = np.asarray(starts, np.float32)
    image = (problem.canvas, problem.canvas, 3)
    if starts.shape not in ((count, *image), (count, problem.n, *image)):
        raise JaxvisError(f"starts must be [units, canvas, canvas, 3] = [{count}, {', '.join(map(str, image))}] "
                          f"(one image per direction) or [units, images, canvas, canvas, 3] = [{count}, "
                          f"{problem.n}, {', '.join(map(str, image))}]; got shape {starts.shape}")
    mixes = np.full(count, unit_step.FLOOR_START_MIX, np.float32) if mixes is None else np.asarray(mixes, np.float32)
    if mixes.shape != (count,) or not np.all((mixes >= 0) & (mixes <= 1)):
        raise JaxvisError(f"mixes must be [units] = [{count}] shares in [0, 1]; got {mixes!r}")
    rows, size = parallel.unit_sharding(mesh), len(z)
    starts = jax.device_put(parallel.pad_rows(starts, size), rows)
    mixes = jax.device_put(parallel.pad_rows(mixes, size), rows)
    colour = jax.device_put(np.eye(3, dtype=np.float32) if problem.colour is None
                            else np.asarray(problem.colour, np.float32), parallel.replicated(mesh))
    return _near(z, starts, mixes, colour, param=problem.objective.param, mesh=mesh)


def useful_flops(network: Network, problem: Problem) -> float:
    """Useful FLOPs of one unit-step: 2 x the forward FLOPs of the unit's N canvases up to the
    target (forward plus input gradient; docs/method.md section 7), as XLA counts them (lowered, not
    compiled: milliseconds)."""
    graphdef, params = nnx.split(network)
    x = jax.ShapeDtypeStruct((problem.n, problem.canvas, problem.canvas, 3), jnp.float32)
    lowered = jax.jit(lambda p, x: unit_step.forward(nnx.merge(graphdef, p), problem, x).pre).lower(params, x)
    # jax on CPU counts the lowered program; jax 0.11 on CUDA answers None there and counts only
    # the compiled one (compiling one unit's forward pass: seconds, once per layer)
    flops = cost_flops(lowered)
    if flops is None:
        flops = cost_flops(lowered.compile())
    if flops is None:
        raise RuntimeError(f"XLA gives no FLOP count on {jax.default_backend()} (cost_analysis() is empty)")
    return 2.0 * flops


def cost_flops(program) -> float | None:
    """``flops`` of XLA's cost analysis of a lowered or compiled program (a dict, a list of one
    dict in older jax), None where the backend gives none."""
    try:
        cost = program.cost_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
    return float(cost["flops"]) if isinstance(cost, dict) and "flops" in cost else None


def unit_bytes(network: Network, problem: Problem) -> int:
    """Rough device memory one unit needs: every activation up to the target for N images, kept
    for the backward pass (pre, post and gradient), plus z and Adam's two moments."""
    x = jax.ShapeDtypeStruct((problem.n, problem.canvas, problem.canvas, 3), jnp.float32)
    acts = jax.eval_shape(lambda x: unit_step.forward(network, problem, x), x)
    activations = sum(math.prod(a.shape) for a in jax.tree.leaves(acts))
    return 4 * (3 * activations + 4 * math.prod(x.shape))


CPU_CHUNK_BYTES = 32 << 20
CPU_CHUNK_UNITS = 16
# Accelerators: a chunk may take this share of what XLA may allocate on the device (the rest is
# for the weights, XLA's temporaries beyond unit_bytes' estimate and the next chunk's inputs),
# and at most this many units (past a few thousand units a step is long enough to hide every
# per-step cost; more units only delay the first results). Both are estimates, not measurements:
# benchmarks.device_run times the chunk they give against smaller and larger ones (docs/speed.md).
ACCELERATOR_MEMORY_SHARE = 0.5
ACCELERATOR_CHUNK_UNITS = 4096


def device_budget(device: jax.Device | None = None) -> tuple[int, int]:
    """(bytes a chunk may use, most units worth batching) on ``device``: on accelerators from the
    device's own memory (``memory_stats()["bytes_limit"]``, what XLA's allocator may use: 75% of
    a GPU's memory by default, ``XLA_PYTHON_CLIENT_MEM_FRACTION`` changes it), on CPU from the
    caches."""
    device = device or jax.devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"] * ACCELERATOR_MEMORY_SHARE), ACCELERATOR_CHUNK_UNITS
    # CPU (one device per core, parallel.cpu_devices): a device's units should stay near its
    # caches; batching more only amortises small ops (measured: docs/speed.md, "Chunk size on CPU")
    return min(CPU_CHUNK_BYTES, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4), CPU_CHUNK_UNITS


def units_per_chunk(network: Network, problem: Problem, device: jax.Device | None = None,
                    devices: int = 1) -> int:
    """Units per chunk: what one device's budget holds, times ``devices`` (each gets as many)."""
    budget, cap = device_budget(device)
    return devices * max(1, min(cap, budget // max(unit_bytes(network, problem), 1)))


def compilation_cache(folder: Path | None) -> Path | None:
    """Keep compiled programs in ``folder`` across processes (jax's persistent compilation cache),
    so a re-run, a resumed sweep or another process with the same shapes skips compilation.

    ``None`` leaves jax as it is. A cache folder the user already configured
    (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``) wins. Returns the folder in use.
    """
    configured = jax.config.jax_compilation_cache_dir
    if folder is None or configured:
        return Path(configured) if configured else None
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    # jax caches only programs that took >= 1 s to compile; the small ones (init, evaluate) are
    # still worth a file each on CPU, where a sweep of a small layer compiles for longer than it runs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return folder
