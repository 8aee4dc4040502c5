"""A unit's single-image maximum ``a*`` that the diverse sets can be measured against.

Activation fractions and the floor (``Objective.floor``) are relative to ``a*``, so it must not
land in a worse optimum than the diverse images do. One N = 1 run sometimes does (fractions up to
1.2 at conv2_1 of normalised VGG-19): :func:`maximum` takes the best of ``K`` restarts, all units
x restarts in one batched :func:`jaxvis.optimize.loop.optimize` call, and :func:`reference`
replaces ``a*`` by a diverse image's activation where one still beats it, and says so.

Keys: restart 0 of a unit uses the unit's own key (``unit_key(seed, layer, unit, 1)``, so with
``restarts=1`` the maximum is exactly a single run); restart ``k > 0`` uses ``fold_in(that key, k)``. Every row's key
depends on (seed, layer, unit, k) alone, so the result does not depend on the chunk.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh

from jaxvis.errors import JaxvisError
from jaxvis.models.base import Network
from jaxvis.optimize.loop import optimize
from jaxvis.optimize.step import Problem

# Measured on all 128 conv2_1 units of normalised VGG-19 (docs/floor.md, "How many restarts"):
# see there for how often a restart beyond the first wins and by how much.
RESTARTS = 4
# a restart or a diverse image counts as higher only by more than this share of the value: batch
# layouts move activations by up to ~1.4e-3 relative (tests/helpers.py), so exact comparisons
# would let the winner, and with it the stored image, depend on the layout
TIE = 2e-3


def restart_keys(keys: jax.Array, restarts: int) -> jax.Array:
    """``[U]`` unit keys -> ``[U * K]``, unit-major: row ``u * K + k`` is restart ``k`` of unit ``u``."""
    rows = []
    for key in keys:
        rows.extend([key] + [jax.random.fold_in(key, k) for k in range(1, restarts)])
    return jax.numpy.stack(rows)


def maximum(network: Network, problem: Problem, keys: jax.Array, directions: np.ndarray,
            radius: float, restarts: int = RESTARTS, mesh: Mesh | None = None,
            on_segment=None) -> dict[str, np.ndarray]:
    """The best of ``restarts`` single-image runs per unit. ``problem`` has N = 1 and no diversity
    (the sweep's ``LayerPlan.maximum``); ``keys`` ``[U]`` (``unit_key(seed, layer, unit, 1)``),
    ``directions`` ``[U, C]``; ``on_segment`` as :func:`~jaxvis.optimize.loop.optimize`'s (over
    the ``U * K`` rows, unit-major).

    Returns, leading dimension U: ``image`` ``[U, H, W, 3]`` (RGB grey levels), ``activation``
    ``[U]`` (``a*``), ``steps`` and ``stop_reason`` of the winning run, ``restart`` (its index),
    ``restart_activations`` ``[U, K]`` (every run's activation).
    """
    o = problem.objective
    if o.images != 1 or o.floor is not None:
        raise JaxvisError(f"a single-image maximum needs images=1 and no floor, not images={o.images}, "
                          f"floor={o.floor}")
    if restarts < 1:
        raise JaxvisError(f"restarts must be at least 1, not {restarts}")
    count = len(directions)
    rows = np.repeat(np.asarray(directions, np.float32), restarts, axis=0)
    out = optimize(network, problem, restart_keys(keys, restarts), rows, radius, mesh, on_segment=on_segment)
    acts = out["activations"][:, 0].reshape(count, restarts)
    best = winners(acts)
    pick = np.arange(count) * restarts + best
    return {"image": out["images"][pick, 0], "activation": acts[np.arange(count), best],
            "steps": out["steps"][pick], "stop_reason": out["stop_reason"][pick],
            "restart": best.astype(np.int32), "restart_activations": acts}


def _beats(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a`` is higher than ``b`` by more than :data:`TIE` of ``|b|``: not a float-rounding tie."""
    return a - b > TIE * np.abs(b)


def winners(acts: np.ndarray) -> np.ndarray:
    """``[U, K]`` restart activations -> ``[U]`` the winning restart: the lowest index unless a
    later restart beats it by more than :data:`TIE`, so near-ties (which batch layouts can flip by
    rounding) keep the lower restart and K = 1 is the single run."""
    best = np.zeros(len(acts), np.int64)
    for k in range(1, acts.shape[1]):
        better = _beats(acts[:, k], acts[np.arange(len(acts)), best])
        best = np.where(better, k, best)
    return best.astype(np.int32)


def reference(maximum: np.ndarray, activations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(``[U]`` reference, ``[U]`` bool raised): ``max(maximum, best diverse activation)`` from
    ``maximum`` ``[U]`` and the diverse sets' ``activations`` ``[U, N]``, and where a diverse
    image beat the single-image maximum (the reference is then that image's activation)."""
    maximum = np.asarray(maximum)
    best = np.max(np.asarray(activations), axis=1)
    raised = _beats(best, maximum)  # ties to rounding (diverse images at the maximum) are not raises
    return np.where(raised, best, maximum), raised
