"""Phase rotation of a unit's own best image: the phase question asked with its preferred stimulus.

The rotation itself (:func:`jaxvis.param.phase.rotate`) turns every oriented Fourier component of
the image by ``phi`` about its dominant orientation, keeping its power spectrum and norm.

- Read-out: the unit's pre-activation over ``phi`` (``steps`` equally spaced angles of
  ``[0, 2 pi)``, ``pi`` among them). A linear unit's response is ``c + d cos(phi)`` when ``x`` is its
  maximum (the rotated part of its drive reverses at ``phi = pi``); a complex unit's stays near
  its maximum.

Measures per unit, on the pre-activation above the unit's baseline ``R(phi) - b``, ``b = max(blank,
0)`` the rectified response to the mean colour alone (as the grating battery's phase measures,
:mod:`jaxvis.analysis.gratings`; a positive bias would otherwise lift every ratio towards 1), so a
reversal shows as a negative value: ``rotation_min_max`` = min / max of ``R - b`` over ``phi``;
``rotation_at_pi`` = ``R(pi) - b`` / that maximum (NaN where the maximum is not positive).

Every unit's rotated images are one set, pushed through the network in equal chunks, each split
over the devices of the unit mesh (:func:`jaxvis.analysis.gratings.responses`, data parallel). The
rotations themselves (one FFT per image, a jitted vmap) run on the default device, chunk by chunk
as the forward pass asks for them: a small share of the stage's time next to the forward passes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxvis.analysis.gratings import ratio, responses, target, unit_directions
from jaxvis.errors import JaxvisError
from jaxvis.param.phase import dominant_orientation, rotate

DEFINITIONS = {
    "rotation_curve": "the unit's response to its single-image maximum rotated in phase by each phi (phases(steps))",
    "rotation_min_max": "min / max over phi of the response to the phase-rotated maximum above the baseline max(blank, 0)",
    "rotation_at_pi": "response above the baseline at phi = pi / its maximum over phi (negative: reversed)",
    "rotation_orientation": "dominant orientation of the maximum's power spectrum (radians)",
}


_orientations = jax.jit(jax.vmap(dominant_orientation))
_rotate_many = jax.jit(jax.vmap(rotate))


def phases(steps: int) -> np.ndarray:
    """``[steps]`` rotation angles, equally spaced over ``[0, 2 pi)`` from 0."""
    return (np.arange(steps) * 2 * np.pi / steps).astype(np.float32)


def phase_rotation(model, layer: str, images: np.ndarray, directions, *, steps: int = 12,
                   mesh=None) -> dict[str, np.ndarray]:
    """The rotation read-out for ``U`` units of ``layer``: ``images`` ``[U, H, W, 3]`` their
    single-image maxima in RGB grey levels (the sweep's ``max_image``), ``directions`` channel
    indices ``[U]`` or directions ``[U, C]``; ``steps`` (even, >= 4) angles. Forward passes only.
    Returns the arrays of :data:`DEFINITIONS`, units first (``rotation_curve`` ``[U, steps]`` at
    the angles :func:`phases` ``(steps)``). ``mesh``: the devices the forward passes are split over
    (:func:`jaxvis.analysis.gratings.responses`; default all of this process's)."""
    info = target(model, layer)
    basis = unit_directions(directions, info.channels)
    images = np.asarray(images, np.float32)
    if images.shape[1:] != (info.canvas, info.canvas, 3) or len(images) != len(basis):
        raise JaxvisError(f"images must be [units={len(basis)}, {info.canvas}, {info.canvas}, 3] for "
                          f"{layer}, not {list(images.shape)}")
    if steps < 4 or steps % 2:
        raise JaxvisError(f"steps must be an even number >= 4 (phi = pi is one of them), not {steps}")
    mean = np.asarray(model.convention.mean_rgb255, np.float32)
    phis = phases(steps)
    x = jnp.asarray(images - mean)
    theta = _orientations(x)

    count = len(basis) * steps

    def rotated(index):  # image u * steps + f: unit u's maximum turned by phis[f]; then the blank
        u, f = np.divmod(np.minimum(index, count - 1), steps)
        turned = np.asarray(_rotate_many(x[u], jnp.asarray(phis[f]), theta[u]))
        return np.where((index < count)[:, None, None, None], turned, 0.0) + mean

    acts = responses(model, info, count + 1, rotated, mesh)
    curve = np.einsum("ufc,uc->uf", acts[:-1].reshape(len(basis), steps, -1), basis)  # [U, F]
    above = curve - np.maximum(acts[-1] @ basis.T, 0.0)[:, None]
    top = above.max(1)
    return {"rotation_curve": curve.astype(np.float32),
            "rotation_min_max": ratio(above.min(1), top),
            "rotation_at_pi": ratio(above[:, steps // 2], top),
            "rotation_orientation": np.asarray(theta, np.float32)}


def phase_spread(best, sets, mean_rgb) -> np.ndarray:
    """How far a set of images spreads in phase around the unit's best image: ``best`` ``[U, H, W,
    3]`` and ``sets`` ``[U, A, N, H, W, 3]`` in RGB grey levels (``max_image``, ``floor_images``),
    ``mean_rgb`` the mean colour they deviate from -> ``[U, A]`` degrees.

    Each image's phase angle is ``atan2(x . e2, x . e1)`` with ``e1`` the best image's deviation
    and ``e2`` its rotation by 90 degrees (:func:`jaxvis.param.phase.rotate`, orthogonalised to
    ``e1``), both of unit length; the spread is 360 minus the largest gap between the sorted
    angles. A simple (linear) unit's set stays around angle 0; an energy-model complex cell's set
    covers the circle (N equally spaced phases: ``360 (N - 1) / N``)."""
    mean = np.asarray(mean_rgb, np.float32)
    x = np.asarray(best, np.float32) - mean
    sets = np.asarray(sets, np.float32) - mean
    quarter = np.asarray(_rotate_many(jnp.asarray(x), jnp.full(len(x), np.pi / 2, jnp.float32),
                                      _orientations(jnp.asarray(x))))
    u, a = sets.shape[:2]
    e1 = x.reshape(u, -1).astype(np.float64)
    e1 /= np.maximum(np.linalg.norm(e1, axis=1, keepdims=True), 1e-12)
    e2 = quarter.reshape(u, -1).astype(np.float64)
    e2 -= np.sum(e2 * e1, axis=1, keepdims=True) * e1
    e2 /= np.maximum(np.linalg.norm(e2, axis=1, keepdims=True), 1e-12)
    flat = sets.reshape(u, a, sets.shape[2], -1).astype(np.float64)
    angles = np.sort(np.arctan2(np.einsum("uand,ud->uan", flat, e2), np.einsum("uand,ud->uan", flat, e1)), -1)
    gaps = np.diff(np.concatenate([angles, angles[..., :1] + 2 * np.pi], -1), axis=-1)
    return (360.0 - np.degrees(gaps.max(-1))).astype(np.float32)
