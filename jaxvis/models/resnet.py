"""ResNet-50 (He et al. 2016) as an NNX module, in its two published layouts.

``variant="v1.5"`` is torchvision's ``resnet50``: the bottleneck's stride sits in its 3x3 convolution,
convolutions have no bias, BatchNorm epsilon is 1e-5, every padding is symmetric (conv1 7x7/2 pad 3,
max pool 3x3/2 pad 1 with -inf, 3x3 convolutions pad 1), and a projection shortcut is a strided 1x1
convolution plus BatchNorm.

``variant="v1"`` is the original MSRA / Keras ``ResNet50``: the stride sits in the bottleneck's *first*
1x1 convolution, every convolution has a bias, BatchNorm epsilon is 1.001e-5, and the stem is
``ZeroPadding2D(3)`` + 7x7/2 VALID convolution, ``ZeroPadding2D(1)`` + 3x3/2 VALID max pool.

Layers are named as in torchvision for both variants:

- ``conv1`` (after bn1; ``pre`` before the ReLU, ``post`` after), ``pool1`` (the max pool);
- per bottleneck ``layer{L}.{B}`` (L = 1..4, B from 0): ``layer{L}.{B}.conv1``, ``.conv2`` (after
  their BatchNorm; pre/post ReLU), ``.conv3`` (after bn3, before the residual sum; no nonlinearity),
  and the block output ``layer{L}.{B}`` (``pre`` = the residual sum, ``post`` = after the ReLU);
- with ``include_top``: ``avgpool`` (global mean, ``[B, 1, 1, 2048]``) and ``fc`` (logits,
  ``[B, 1, 1, 1000]``; the Keras softmax is not applied).

Parameter (NNX state) paths: ``conv1/kernel``, ``bn1/{scale,bias,mean,var}``,
``layer{L}/{B}/conv{1,2,3}/kernel`` (+ ``/bias`` in v1), ``layer{L}/{B}/bn{1,2,3}/...``, the projection
shortcut of each stage's first block ``layer{L}/0/downsample_conv/...`` and
``layer{L}/0/downsample_bn/...``, and ``fc/kernel`` ``[2048, 1000]``, ``fc/bias``.

Geometry (``specs``): the main path only (the shortcut is a 1x1 on the same grid, or the identity,
so it never widens the receptive field). A block output has the geometry of its ``conv3``. The
global average pool and ``fc`` are ``kind="global"`` layers: their catalogue canvas is the standard
224 px input and their activation is always 1x1 (see :mod:`jaxvis.models.geometry`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvis.models.base import Network, Recorder
from jaxvis.models.geometry import LayerSpec, Op
from jaxvis.models.ops import Conv, Linear

BLOCKS = (3, 4, 6, 3)           # bottlenecks per stage (layer1..layer4)
WIDTHS = (64, 128, 256, 512)    # bottleneck width; the block outputs 4x that
EXPANSION = 4
VARIANTS = {"v1.5": 1e-5, "v1": 1.001e-5}  # variant -> BatchNorm epsilon


def _bn(channels: int, eps: float, rngs: nnx.Rngs) -> nnx.BatchNorm:
    return nnx.BatchNorm(channels, use_running_average=True, epsilon=eps, rngs=rngs)


def _pad(n: int):
    return ((n, n), (n, n))


def _strides(variant: str, stride: int) -> tuple[int, int]:
    """(stride of the first 1x1, stride of the 3x3) of a bottleneck."""
    return (stride, 1) if variant == "v1" else (1, stride)


class Bottleneck(nnx.Module):
    """1x1 -> 3x3 -> 1x1 (x4 channels), plus the identity or a projection shortcut."""

    def __init__(self, c_in: int, width: int, stride: int, variant: str, rngs: nnx.Rngs):
        bias, eps = variant == "v1", VARIANTS[variant]
        s1, s2 = _strides(variant, stride)
        c_out = EXPANSION * width
        self.conv1 = Conv(c_in, width, (1, 1), strides=s1, padding="VALID", use_bias=bias, rngs=rngs)
        self.bn1 = _bn(width, eps, rngs)
        # Keras 'same' with stride 1 and torchvision's padding=1 are both a symmetric pad of 1.
        self.conv2 = Conv(width, width, (3, 3), strides=s2, padding=_pad(1), use_bias=bias, rngs=rngs)
        self.bn2 = _bn(width, eps, rngs)
        self.conv3 = Conv(width, c_out, (1, 1), padding="VALID", use_bias=bias, rngs=rngs)
        self.bn3 = _bn(c_out, eps, rngs)
        self.project = stride != 1 or c_in != c_out
        if self.project:
            self.downsample_conv = Conv(c_in, c_out, (1, 1), strides=stride, padding="VALID",
                                        use_bias=bias, rngs=rngs)
            self.downsample_bn = _bn(c_out, eps, rngs)

    def __call__(self, x: jax.Array, record: Recorder, name: str) -> jax.Array:
        pre = self.bn1(self.conv1(x))
        h = record(f"{name}.conv1", pre, nnx.relu(pre))
        pre = self.bn2(self.conv2(h))
        h = record(f"{name}.conv2", pre, nnx.relu(pre))
        h = record(f"{name}.conv3", self.bn3(self.conv3(h)))
        shortcut = self.downsample_bn(self.downsample_conv(x)) if self.project else x
        pre = h + shortcut
        return record(name, pre, nnx.relu(pre))


class ResNet50(Network):
    def __init__(self, *, variant: str = "v1.5", include_top: bool = False, rngs: nnx.Rngs):
        if variant not in VARIANTS:
            raise ValueError(f"ResNet-50 variant must be one of {sorted(VARIANTS)}, not {variant!r}")
        self.name = "resnet50"
        self.variant, self.include_top = variant, include_top
        v1 = variant == "v1"
        # v1 pads explicitly (ZeroPadding2D) and convolves VALID, as Keras does; same numbers.
        self.conv1 = Conv(3, 64, (7, 7), strides=2, padding="VALID" if v1 else _pad(3),
                          use_bias=v1, rngs=rngs)
        self.bn1 = _bn(64, VARIANTS[variant], rngs)
        c_in = 64
        for stage, (n, width) in enumerate(zip(BLOCKS, WIDTHS), start=1):
            blocks = []
            for b in range(n):
                stride = 2 if b == 0 and stage > 1 else 1
                blocks.append(Bottleneck(c_in, width, stride, variant, rngs))
                c_in = EXPANSION * width
            setattr(self, f"layer{stage}", nnx.List(blocks))
        if include_top:
            self.fc = Linear(c_in, 1000, rngs=rngs)

    def block_names(self):
        """(name, stage, index) of every bottleneck, in forward order: ``layer1.0`` ..."""
        for stage, n in enumerate(BLOCKS, start=1):
            for b in range(n):
                yield f"layer{stage}.{b}", stage, b

    def specs(self) -> tuple[LayerSpec, ...]:
        specs = [LayerSpec("conv1", 64, (Op(7, 2, 3),)),
                 LayerSpec("pool1", 64, (Op(3, 2, 1),), "pool")]
        for name, stage, b in self.block_names():
            width = WIDTHS[stage - 1]
            s1, s2 = _strides(self.variant, 2 if b == 0 and stage > 1 else 1)
            specs += [LayerSpec(f"{name}.conv1", width, (Op(1, s1, 0),)),
                      LayerSpec(f"{name}.conv2", width, (Op(3, s2, 1),)),
                      LayerSpec(f"{name}.conv3", EXPANSION * width, (Op(1, 1, 0),)),
                      LayerSpec(name, EXPANSION * width, (), "block")]
        if self.include_top:
            # the global mean, declared as the 7x7 pool it is at 224 px (see module docstring)
            specs += [LayerSpec("avgpool", 2048, (), "global"),
                      LayerSpec("fc", 1000, (), "global")]
        return tuple(specs)

    def forward(self, x: jax.Array, record: Recorder) -> None:
        if self.variant == "v1":
            x = jnp.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0)))  # Keras conv1_pad
        pre = self.bn1(self.conv1(x))
        x = record("conv1", pre, nnx.relu(pre))
        if self.variant == "v1":
            # Keras pool1_pad pads with zeros before a VALID max pool. That equals torchvision's
            # -inf padding only because x is post-ReLU (>= 0): a zero can never beat the window's
            # real maximum unless that maximum is 0 too. Done as Keras does, to stay faithful.
            x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
            x = nnx.max_pool(x, (3, 3), (2, 2), padding="VALID")
        else:
            x = nnx.max_pool(x, (3, 3), (2, 2), padding=_pad(1))  # pads with -inf
        x = record("pool1", x)
        for name, stage, b in self.block_names():
            x = getattr(self, f"layer{stage}")[b](x, record, name)
        if self.include_top:
            x = record("avgpool", jnp.mean(x, axis=(1, 2), keepdims=True))
            record("fc", self.fc(x))
