"""From the optimised variable ``z`` to the image the network sees.

- **Norm sphere.** Each image is ``x = r * z / ||z||`` (norm over all its pixels and channels), so
  every image has the same contrast budget ``r`` in grey levels; ``x`` is the deviation from the
  natural mean colour, and the network sees ``mean + x``.
- **Gradient whitening.** Natural images have a 1/f amplitude spectrum, so a raw pixel gradient is
  dominated by high frequencies. The gradient reaching ``z`` is multiplied, per image and channel,
  in the 2-D Fourier domain by ``g(k) = w(k) / mean(w)`` with ``w(k) = 1 / max(1, |k|^(1/2))`` and
  ``|k|`` the integer frequency radius (``k_x = min(k, n - k)``). The forward pass is the identity
  (a ``jax.custom_vjp``), so the loss is unchanged and only the optimiser's geometry changes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=None)
def frequency_gain(h: int, w: int) -> np.ndarray:
    """``[h, w]`` gain ``g(k)``, mean 1, for a 2-D FFT of an ``h x w`` image."""
    ky = np.minimum(np.arange(h), h - np.arange(h))[:, None]
    kx = np.minimum(np.arange(w), w - np.arange(w))[None, :]
    radius = np.sqrt(ky ** 2 + kx ** 2)
    gain = 1.0 / np.maximum(1.0, np.sqrt(radius))
    return (gain / gain.mean()).astype(np.float32)


def precondition(g: jax.Array) -> jax.Array:
    """Whiten a gradient ``[..., H, W, C]`` over its two spatial axes."""
    h, w = g.shape[-3], g.shape[-2]
    gain = jnp.asarray(frequency_gain(h, w))[:, :, None]
    spectrum = jnp.fft.fft2(g, axes=(-3, -2))
    return jnp.real(jnp.fft.ifft2(spectrum * gain, axes=(-3, -2))).astype(g.dtype)


@jax.custom_vjp
def whiten_gradient(z: jax.Array) -> jax.Array:
    """Identity forward; the backward pass :func:`precondition`s the gradient."""
    return z


whiten_gradient.defvjp(lambda z: (z, None), lambda _, g: (precondition(g),))


def on_sphere(z: jax.Array, radius: jax.Array) -> jax.Array:
    """``[N, H, W, C]`` -> each image rescaled to L2 norm ``radius``."""
    norm = jnp.sqrt(jnp.sum(jnp.square(z), axis=(-3, -2, -1), keepdims=True))
    return radius * z / jnp.maximum(norm, 1e-12)


def images(z: jax.Array, radius: jax.Array) -> jax.Array:
    """The images the objective sees: whitened-gradient ``z`` projected on the sphere."""
    return on_sphere(whiten_gradient(z), radius)
