"""Phase rotation of an image: every oriented Fourier component turned by the same angle.

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

``n`` is the principal orientation of the power spectrum,
``theta = arg(sum_k P(k) e^{2i a(k)}) / 2`` with ``a(k)`` the direction of frequency ``k`` and ``P``
the power summed over colour. Pure functions: the analysis (:mod:`jaxvis.analysis.phase`) asks a
unit how it answers its own best image turned in phase; the sweep starts floor sets on that circle
(:data:`jaxvis.optimize.step.FLOOR_STARTS`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


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


_rotate_each = jax.vmap(rotate, in_axes=(None, 0, None))


@functools.partial(jax.jit, static_argnums=1)
def phase_circle(images: jax.Array, n: int) -> jax.Array:
    """``[U, H, W, C]`` -> ``[U, n, H, W, C]``: each image turned in phase by ``2 pi i / n``,
    ``i = 0 .. n-1``, about its own dominant orientation (image 0 is the image itself)."""
    phis = jnp.arange(n, dtype=jnp.float32) * (2 * jnp.pi / n)
    return jax.vmap(lambda x: _rotate_each(x, phis, dominant_orientation(x)))(images)
