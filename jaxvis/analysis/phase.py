"""Phase rotation of a unit's own best image: the phase question asked with its preferred stimulus.

For an image ``x`` (deviation from the mean colour, ``[H, W, 3]``) and an angle ``phi``, every
Fourier component is turned by ``phi``: the components on the positive side of the image's
dominant orientation ``n`` are multiplied by ``e^{i phi}``, their conjugates (the negative side) by
``e^{-i phi}``. This is ``Re(e^{i phi} x_a)`` for the analytic signal ``x_a`` of ``x`` along ``n``
(a 2-D Hilbert transform), except that no component is lost: a component on the line
perpendicular to ``n`` is assigned by the sign along the perpendicular direction instead of being
halved. Only the self-conjugate components (the mean colour and, for even sizes, the Nyquist
corners) cannot turn and stay as they are. So the rotated image is real, has exactly the power
spectrum of ``x`` and hence its norm (the unit's contrast budget), and ``phi = pi`` reverses the
contrast of every oriented component. A grating ``cos(k . p + f)`` with ``k . n > 0`` becomes
``cos(k . p + f + phi)``.

- ``n``: the principal orientation of the power spectrum, ``theta = arg(sum_k P(k) e^{2i a(k)}) / 2``
  with ``a(k)`` the direction of frequency ``k`` and ``P`` the power summed over colour.
- Read-out: the unit's pre-activation over ``phi`` (``steps`` equally spaced angles of
  ``[0, 2 pi)``, ``pi`` among them). A linear unit's response is ``c + d cos(phi)`` when ``x`` is its
  maximum (the rotated part of its drive reverses at ``phi = pi``); a complex unit's stays near
  its maximum.

Measures per unit, on the pre-activation above the unit's baseline ``R(phi) - b``, ``b = max(blank,
0)`` the rectified response to the mean colour alone (as the grating battery's phase measures,
:mod:`jaxvis.analysis.gratings`; a positive bias would otherwise lift every ratio towards 1), so a
reversal shows as a negative value: ``rotation_min_max`` = min / max of ``R - b`` over ``phi``;
``rotation_at_pi`` = ``R(pi) - b`` / that maximum (NaN where the maximum is not positive).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxvis.analysis.gratings import ratio, responses, target, unit_directions
from jaxvis.errors import JaxvisError

DEFINITIONS = {
    "rotation_curve": "the unit's response to its single-image maximum rotated in phase by each phi (phases(steps))",
    "rotation_min_max": "min / max over phi of the response to the phase-rotated maximum above the baseline max(blank, 0)",
    "rotation_at_pi": "response above the baseline at phi = pi / its maximum over phi (negative: reversed)",
    "rotation_orientation": "dominant orientation of the maximum's power spectrum (radians)",
}


def _signed(n: int) -> np.ndarray:
    """FFT frequencies of an ``n``-point axis as signed integers (Nyquist as +n/2)."""
    k = np.arange(n)
    return np.where(k <= n // 2, k, k - n).astype(np.float32)


def _antisymmetric(n: int) -> np.ndarray:
    """Signed frequencies with the Nyquist one (its own negative, of undefined sign) as 0: the
    entry for ``-k`` (mod ``n``) is exactly minus the entry for ``k``."""
    f = _signed(n)
    return np.where(2 * np.arange(n) == n, 0, f).astype(np.float32)


@jax.jit
def dominant_orientation(x: jax.Array) -> jax.Array:
    """``[H, W, C]`` -> the principal orientation of its power spectrum, radians in ``[0, pi)``
    (the direction of modulation, ``x`` = columns, ``y`` = rows)."""
    h, w = x.shape[0], x.shape[1]
    power = jnp.sum(jnp.abs(jnp.fft.fft2(x, axes=(0, 1))) ** 2, axis=-1).at[0, 0].set(0.0)
    fy, fx = _signed(h)[:, None], _signed(w)[None, :]
    doubled = jnp.sum(power * jnp.exp(2j * jnp.arctan2(fy, fx)))
    return jnp.mod(jnp.angle(doubled) / 2, jnp.pi)


@functools.partial(jax.jit, static_argnums=(0, 1))
def half_plane(h: int, w: int, theta: jax.Array) -> jax.Array:
    """``[h, w]`` side of every FFT component about orientation ``theta``: +1, -1, or 0 for the
    self-conjugate ones. Exactly antisymmetric, ``s(-k) = -s(k)``, so the rotation keeps images
    real: the side is the sign of ``g . n`` with ``g`` the frequency whose Nyquist coordinates (their
    own negatives) count as 0, so ``g(-k) = -g(k)`` exactly and the sign flips exactly (a difference
    ``d(k) - d(-k)`` would not: XLA may round the two terms differently inside one fusion)."""
    gy, gx = jnp.asarray(_antisymmetric(h))[:, None], jnp.asarray(_antisymmetric(w))[None, :]
    along = gx * jnp.cos(theta) + gy * jnp.sin(theta)
    across = gy * jnp.cos(theta) - gx * jnp.sin(theta)
    return jnp.where(along != 0, jnp.sign(along), jnp.sign(across))


@jax.jit
def rotate(x: jax.Array, phi: jax.Array, theta: jax.Array | None = None) -> jax.Array:
    """``[H, W, C]`` image turned in phase by ``phi`` about ``theta`` (default its dominant
    orientation); same power spectrum, same norm."""
    theta = dominant_orientation(x) if theta is None else theta
    s = half_plane(x.shape[0], x.shape[1], theta)[:, :, None]
    spectrum = jnp.fft.fft2(x, axes=(0, 1)) * jnp.exp(1j * phi * s)
    return jnp.real(jnp.fft.ifft2(spectrum, axes=(0, 1))).astype(x.dtype)


_orientations = jax.jit(jax.vmap(dominant_orientation))
_rotate_many = jax.jit(jax.vmap(rotate))


def phases(steps: int) -> np.ndarray:
    """``[steps]`` rotation angles, equally spaced over ``[0, 2 pi)`` from 0."""
    return (np.arange(steps) * 2 * np.pi / steps).astype(np.float32)


def phase_rotation(model, layer: str, images: np.ndarray, directions, *, steps: int = 12) -> dict[str, np.ndarray]:
    """The rotation read-out for ``U`` units of ``layer``: ``images`` ``[U, H, W, 3]`` their
    single-image maxima in RGB grey levels (the sweep's ``max_image``), ``directions`` channel
    indices ``[U]`` or directions ``[U, C]``; ``steps`` (even, >= 4) angles. Forward passes only.
    Returns the arrays of :data:`DEFINITIONS`, units first (``rotation_curve`` ``[U, steps]`` at
    the angles :func:`phases` ``(steps)``)."""
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

    acts = responses(model, info, count + 1, rotated)
    curve = np.einsum("ufc,uc->uf", acts[:-1].reshape(len(basis), steps, -1), basis)  # [U, F]
    above = curve - np.maximum(acts[-1] @ basis.T, 0.0)[:, None]
    top = above.max(1)
    return {"rotation_curve": curve.astype(np.float32),
            "rotation_min_max": ratio(above.min(1), top),
            "rotation_at_pi": ratio(above[:, steps // 2], top),
            "rotation_orientation": np.asarray(theta, np.float32)}
