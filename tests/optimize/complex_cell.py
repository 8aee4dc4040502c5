"""A model complex cell (energy model) written as a user's own network through the jaxvis contract:
subclass :class:`jaxvis.Network`, declare ``specs()`` (geometry) and ``forward(x, record)``."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

import jaxvis
from jaxvis.models.geometry import LayerSpec, Op

SIZE = 11


def quadrature_pair(size: int = SIZE, period: float = 5.0, sigma: float = 2.5) -> np.ndarray:
    """``[size, size, 3, 2]`` even and odd Gabor filters (grey: equal in the 3 channels), orthogonal
    and of equal norm."""
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    envelope = np.exp(-(x ** 2 + y ** 2) / (2 * sigma ** 2))
    even = envelope * np.cos(2 * np.pi * x / period)
    odd = envelope * np.sin(2 * np.pi * x / period)
    even -= even.mean()
    odd -= odd.mean()
    odd -= even * (odd * even).sum() / (even * even).sum()
    pair = np.stack([even / np.linalg.norm(even), odd / np.linalg.norm(odd)], -1)  # [s, s, 2]
    return np.repeat(pair[:, :, None, :], 3, axis=2).astype(np.float32) / np.sqrt(3)


class ComplexCell(jaxvis.Network):
    name = "complex-cell"

    def __init__(self):
        self.filters = nnx.Param(jnp.asarray(quadrature_pair()))

    def specs(self):
        return (LayerSpec("simple", 2, (Op(SIZE, 1, "VALID"),)), LayerSpec("energy", 1, (), "block"))

    def forward(self, x, record):
        import jax
        s = jax.lax.conv_general_dilated(x, self.filters[...], (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        record("simple", s)
        record("energy", jnp.sum(jnp.square(s), axis=-1, keepdims=True))


def model() -> jaxvis.Model:
    return jaxvis.Model(ComplexCell(), jaxvis.InputConvention(), {"name": "complex-cell"})
