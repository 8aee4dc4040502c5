"""VGG-16 / VGG-19 (Simonyan & Zisserman 2015) as an NNX module.

Layers are named as in the paper and Gatys et al.: ``conv{block}_{i}`` (pre-ReLU in ``pre``, post-ReLU
in ``post``), ``pool{block}``, and with ``include_top`` the classifier as ``fc6`` (a 7x7 convolution
over pool5, i.e. the fully connected layer on a 224 px input), ``fc7``, ``fc8`` (logits).

``padding="VALID"`` is the paper's receptive-field canvas: on a layer's RF-sized canvas the output is
1x1. ``padding="SAME"`` is the standard network (pad 1 on every 3x3 convolution).
"""

from __future__ import annotations

import jax
from flax import nnx

from jaxvis.models.base import Network, Recorder
from jaxvis.models.geometry import LayerSpec, Op
from jaxvis.models.ops import conv2d, pool2x2

BLOCKS = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
WIDTHS = (64, 128, 256, 512, 512)


class VGG(Network):
    def __init__(self, depth: int = 19, *, padding: str = "VALID", pooling: str = "max",
                 include_top: bool = False, rngs: nnx.Rngs):
        if depth not in BLOCKS:
            raise ValueError(f"VGG depth must be one of {sorted(BLOCKS)}, not {depth}")
        if padding not in ("VALID", "SAME"):
            raise ValueError(f"padding must be 'VALID' or 'SAME', not {padding!r}")
        if pooling not in ("max", "avg"):
            raise ValueError(f"pooling must be 'max' or 'avg', not {pooling!r}")
        self.name = f"vgg{depth}"
        self.depth, self.padding, self.pooling, self.include_top = depth, padding, pooling, include_top
        convs, c_in = {}, 3
        for name, c_out in self.conv_names():
            convs[name] = nnx.Conv(c_in, c_out, (3, 3), padding=1 if padding == "SAME" else "VALID",
                                   rngs=rngs)
            c_in = c_out
        if include_top:
            convs["fc6"] = nnx.Conv(512, 4096, (7, 7), padding="VALID", rngs=rngs)
            convs["fc7"] = nnx.Conv(4096, 4096, (1, 1), rngs=rngs)
            convs["fc8"] = nnx.Conv(4096, 1000, (1, 1), rngs=rngs)
        self.convs = nnx.Dict(convs)

    def conv_names(self):
        """(name, channels) of every 3x3 convolution, in forward order."""
        for block, (n, width) in enumerate(zip(BLOCKS[self.depth], WIDTHS), start=1):
            for i in range(1, n + 1):
                yield f"conv{block}_{i}", width

    def specs(self) -> tuple[LayerSpec, ...]:
        conv = Op(3, 1, 1 if self.padding == "SAME" else "VALID")
        specs = []
        for block, (n, width) in enumerate(zip(BLOCKS[self.depth], WIDTHS), start=1):
            specs += [LayerSpec(f"conv{block}_{i}", width, (conv,)) for i in range(1, n + 1)]
            specs.append(LayerSpec(f"pool{block}", width, (Op(2, 2, "VALID"),), "pool"))
        if self.include_top:
            specs += [LayerSpec("fc6", 4096, (Op(7, 1, "VALID"),), "fc"),
                      LayerSpec("fc7", 4096, (Op(1),), "fc"), LayerSpec("fc8", 1000, (Op(1),), "fc")]
        return tuple(specs)

    def reads_out(self, layer: str) -> bool:
        return layer in self.convs  # every conv and fc layer: pre . v = conv(x, K v) + b . v

    def _conv(self, name: str, x: jax.Array, readout: jax.Array | None = None) -> jax.Array:
        # the nnx.Conv modules hold the parameters; the op is jaxvis's (cheap input gradients)
        conv = self.convs[name]
        padding = 1 if self.padding == "SAME" and conv.kernel_size == (3, 3) else "VALID"
        kernel, bias = conv.kernel[...], conv.bias[...]
        if readout is not None:  # only the direction asked for: one output channel
            kernel, bias = kernel @ readout[:, None], (bias @ readout)[None]
        return conv2d(x, kernel, bias, padding)

    def forward(self, x: jax.Array, record: Recorder) -> None:
        for block, n in enumerate(BLOCKS[self.depth], start=1):
            for i in range(1, n + 1):
                name = f"conv{block}_{i}"
                pre = self._conv(name, x, record.readout(name))
                x = record(name, pre, nnx.relu(pre))
            x = record(f"pool{block}", pool2x2(x, self.pooling))
        if self.include_top:
            for name in ("fc6", "fc7"):
                pre = self._conv(name, x, record.readout(name))
                x = record(name, pre, nnx.relu(pre))
            record("fc8", self._conv("fc8", x, record.readout("fc8")))
