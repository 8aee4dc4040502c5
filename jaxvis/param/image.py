"""From the optimised variable ``z`` to the image the network sees.

- **Norm sphere.** Each image is ``x = r * z / ||z||`` (norm over all its pixels and channels), so
  every image has the same contrast budget ``r`` in grey levels; ``x`` is the deviation from the
  natural mean colour, and the network sees ``mean + x``.
- **Gradient whitening.** Natural images have a 1/f amplitude spectrum, so a raw pixel gradient is
  dominated by high frequencies. The gradient reaching ``z`` is multiplied, per image and channel,
  in the 2-D Fourier domain by ``g(k) = w(k) / mean(w)`` with ``w(k) = 1 / max(1, |k|^(1/2))`` and
  ``|k|`` the integer frequency radius (``k_x = min(k, n - k)``). The forward pass is the identity
  (a ``jax.custom_vjp``), so the loss is unchanged and only the optimiser's geometry changes.
- **Parameterisations** (``Objective.param``, :data:`PARAMS`). ``pixel`` (the paper's): ``z`` is
  the image before the sphere, with the gradient whitening above. ``fourier`` and ``lucid``
  (decorrelated colour in a Fourier basis; lucid's ``fft_image`` and ``to_valid_rgb``): ``z`` holds
  coefficients, and the image before the sphere is ``y = H(s * z) C^T``, ``H`` the orthonormal
  2-D Hartley transform (real, self-inverse, the image's own shape), ``s(k)`` a per-frequency
  scale and ``C`` the normalised square root of the natural colour covariance
  (:func:`jaxvis.data.budget.colour_basis`); then ``x = r y / ||y||``, the same sphere. The
  gradient geometry in image space is ``(C C^T) x (H s^2 H)``: ``fourier`` takes
  ``s = g^(1/2)``, so its spatial geometry is exactly today's whitening ``g``; ``lucid`` takes
  lucid's 1/f amplitude scale ``s = 1 / max(f, 1 / max(H, W))`` (``f`` in cycles per pixel),
  normalised to mean ``s^2 = 1`` (docs/method.md section 10). No whitening is applied there.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxvis.errors import JaxvisError


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


PARAMS = ("pixel", "fourier", "lucid")


@functools.lru_cache(maxsize=None)
def spectrum_scale(h: int, w: int, param: str) -> np.ndarray:
    """``[h, w]`` scale ``s(k)`` of the Fourier coefficients of ``param`` (mean ``s^2`` 1)."""
    if param == "fourier":
        return np.sqrt(frequency_gain(h, w))
    fy = np.minimum(np.arange(h), h - np.arange(h))[:, None] / h
    fx = np.minimum(np.arange(w), w - np.arange(w))[None, :] / w
    scale = 1.0 / np.maximum(np.sqrt(fy ** 2 + fx ** 2), 1.0 / max(h, w))
    return (scale / np.sqrt(np.mean(scale ** 2))).astype(np.float32)


def hartley(x: jax.Array) -> jax.Array:
    """Orthonormal 2-D Hartley transform of ``[..., H, W, C]`` over the spatial axes:
    ``Re F - Im F`` of the unitary DFT ``F``; real, and its own inverse."""
    f = jnp.fft.fft2(x, axes=(-3, -2), norm="ortho")
    return (jnp.real(f) - jnp.imag(f)).astype(x.dtype)


def basis(z: jax.Array, param: str, colour=None) -> jax.Array:
    """``z`` ``[..., H, W, 3]`` -> the image before the sphere: ``z`` itself for ``pixel``,
    ``H(s z) C^T`` otherwise (``colour``: ``C`` ``[3, 3]``, needed then)."""
    if param == "pixel":
        return z
    if colour is None:
        raise JaxvisError(f"the {param!r} parameterisation needs the colour basis C")
    s = jnp.asarray(spectrum_scale(z.shape[-3], z.shape[-2], param))[:, :, None]
    return hartley(z * s) @ jnp.asarray(colour, z.dtype).T


def coefficients(x: jax.Array, param: str, colour=None) -> jax.Array:
    """The inverse of :func:`basis`: ``z`` with ``basis(z) = x`` (``[..., H, W, 3]``)."""
    if param == "pixel":
        return x
    s = jnp.asarray(spectrum_scale(x.shape[-3], x.shape[-2], param))[:, :, None]
    return hartley(x @ jnp.linalg.inv(jnp.asarray(colour, x.dtype)).T) / s


def on_sphere(z: jax.Array, radius: jax.Array) -> jax.Array:
    """``[N, H, W, C]`` -> each image rescaled to L2 norm ``radius``."""
    norm = jnp.sqrt(jnp.sum(jnp.square(z), axis=(-3, -2, -1), keepdims=True))
    return radius * z / jnp.maximum(norm, 1e-12)


def images(z: jax.Array, radius: jax.Array, param: str = "pixel", colour=None) -> jax.Array:
    """The images the objective sees: whitened-gradient ``z`` projected on the sphere (``pixel``),
    or ``z``'s coefficients through :func:`basis` projected on it."""
    if param == "pixel":
        return on_sphere(whiten_gradient(z), radius)
    return on_sphere(basis(z, param, colour), radius)


def final_images(z: jax.Array, radius: jax.Array, param: str = "pixel", colour=None) -> jax.Array:
    """:func:`images` as values (the same forward, no custom gradient): what is stored."""
    return on_sphere(basis(z, param, colour), radius)
