"""A model added the documented way (CONTRIBUTING.md, "A new model"): this module is its network."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

import jaxvis
from jaxvis import LayerSpec, Op


class TinyNet(jaxvis.Network):
    """conv1 3x3 (3 -> width) + ReLU, conv2 3x3 stride 2 (width -> 4) + ReLU; VALID."""

    name = "tiny"

    def __init__(self, width: int = 6, *, rngs: nnx.Rngs):
        self.width = width
        self.conv1 = nnx.Conv(3, width, (3, 3), padding="VALID", rngs=rngs)
        self.conv2 = nnx.Conv(width, 4, (3, 3), strides=(2, 2), padding="VALID", rngs=rngs)

    def specs(self):
        return (LayerSpec("conv1", self.width, (Op(3, 1, "VALID"),)),
                LayerSpec("conv2", 4, (Op(3, 2, "VALID"),)))

    def forward(self, x, record):
        x = record("conv1", self.conv1(x), jax.nn.relu(self.conv1(x)))
        pre = self.conv2(x)
        record("conv2", pre, jax.nn.relu(pre))


def forward_reference(params: dict, x: jnp.ndarray) -> jnp.ndarray:
    """conv2's pre-activation from the torch-layout weights, written out independently."""
    def conv(x, w, b, stride):
        return jax.lax.conv_general_dilated(x, jnp.transpose(w, (2, 3, 1, 0)), (stride, stride), "VALID",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC")) + b
    h = jax.nn.relu(conv(x, params["features.0.weight"], params["features.0.bias"], 1))
    return conv(h, params["features.2.weight"], params["features.2.bias"], 2)
