"""Many units per device step: ``step`` vmapped over units, looped with ``lax.scan``, jitted once.

One compiled program per (network structure, :class:`Problem`, number of units): the network's
weights and the units' directions are *arguments*, so every chunk of every channel of a layer
reuses it, and XLA never folds the weights in as constants. The host runs fixed-length segments
of ``Optimizer.segment`` steps and stops early once every unit of the chunk has stopped.
"""

from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvis.models.base import Network
from jaxvis.optimize import step as one
from jaxvis.optimize.step import Problem, UnitState

STOP_MAX_STEPS, STOP_CONVERGED = 0, 1


@functools.partial(jax.jit, static_argnames=("problem",))
def _init(keys, *, problem: Problem) -> UnitState:
    return jax.vmap(lambda k: one.init(k, problem))(keys)


@functools.partial(jax.jit, static_argnames=("graphdef", "problem"), donate_argnames=("states",))
def _segment(params, states, directions, radius, *, graphdef, problem: Problem) -> UnitState:
    net = nnx.merge(graphdef, params)
    batched = jax.vmap(lambda s, d: one.step(s, net, problem, d, radius))

    def body(states, _):
        return batched(states, directions), None

    states, _ = jax.lax.scan(body, states, None, length=problem.optimizer.segment)
    return states


@functools.partial(jax.jit, static_argnames=("graphdef", "problem"))
def _evaluate(params, states, directions, radius, *, graphdef, problem: Problem) -> dict:
    net = nnx.merge(graphdef, params)
    return jax.vmap(lambda s, d: one.evaluate(s, net, problem, d, radius))(states, directions)


def optimise(network: Network, problem: Problem, keys: jax.Array, directions: np.ndarray,
             radius: float) -> dict[str, np.ndarray]:
    """Optimise ``U`` units at once. ``keys`` ``[U]``, ``directions`` ``[U, C]``.

    Returns numpy arrays with leading dimension U: ``images`` ``[U, N, H, W, 3]`` (RGB grey levels),
    ``activations`` ``[U, N]``, ``pixel_distances``/``feature_distances`` ``[U, N, N]``, ``loss``,
    ``loss_curve`` ``[U, segments]`` (EMA of the loss after each segment, NaN once stopped),
    ``steps``, ``stop_reason`` (0 max steps, 1 converged).
    """
    graphdef, params = nnx.split(network)
    directions = jnp.asarray(directions, jnp.float32)
    radius = jnp.float32(radius)
    states = _init(keys, problem=problem)
    segments = math.ceil(problem.optimizer.steps / problem.optimizer.segment)
    curve = np.full((len(directions), segments), np.nan, np.float32)
    stopped = np.zeros(len(directions), bool)
    for s in range(segments):
        states = _segment(params, states, directions, radius, graphdef=graphdef, problem=problem)
        ema, done, steps = jax.device_get((states.ema, states.done, states.steps))
        curve[:, s] = np.where(stopped, np.nan, ema)  # NaN for segments a unit spent stopped
        stopped = done | (steps >= problem.optimizer.steps)
        if stopped.all():
            break
    out = jax.device_get(_evaluate(params, states, directions, radius, graphdef=graphdef, problem=problem))
    out = {k: np.asarray(v) for k, v in out.items()}
    out.pop("similarity", None)
    out["loss_curve"] = curve
    out["steps"] = np.asarray(states.steps, np.int32)
    out["stop_reason"] = np.where(np.asarray(states.done), STOP_CONVERGED, STOP_MAX_STEPS).astype(np.int8)
    return out


def unit_bytes(network: Network, problem: Problem) -> int:
    """Rough device memory one unit needs: every activation up to the target for N images, kept
    for the backward pass (pre, post and gradient), plus z and Adam's two moments."""
    x = jax.ShapeDtypeStruct((problem.n, problem.canvas, problem.canvas, 3), jnp.float32)
    acts = jax.eval_shape(lambda x: one.forward(network, problem, x), x)
    activations = sum(math.prod(a.shape) for a in jax.tree.leaves(acts))
    return 4 * (3 * activations + 4 * math.prod(x.shape))


CPU_CHUNK_BYTES = 128 << 20


def device_budget(device: jax.Device | None = None) -> tuple[int, int]:
    """(bytes a chunk may use, most units worth batching) on ``device``."""
    device = device or jax.devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:  # accelerators: half of what XLA may allocate
        return stats["bytes_limit"] // 2, 4096
    # CPU: the cores are busy with one unit's N images already; bigger chunks only help while
    # they stay small (2-core EPYC, VGG-19, N=6: conv2_1 ~1 MB/unit, 64 units 2040 unit-steps/s vs
    # 1590 one at a time; conv3_1 ~11 MB/unit, 8 units 177/s, 64 units 162/s).
    return min(CPU_CHUNK_BYTES, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4), 64


def units_per_chunk(network: Network, problem: Problem, device: jax.Device | None = None) -> int:
    budget, cap = device_budget(device)
    return max(1, min(cap, budget // max(unit_bytes(network, problem), 1)))
