"""Receptive-field arithmetic: the layer catalogue is computed from the architecture, never typed.

Each model describes its main path as a sequence of spatial ops (kernel, stride, padding) between
named layers. Following a single output unit back through those ops gives, per layer,

- ``rf``:   receptive-field size in input pixels (square),
- ``jump``: the input-pixel distance between neighbouring units (the product of strides),

and, for a given canvas size, the output size and where the centre of each unit's receptive field
falls on the canvas. The *canvas* of a layer is the smallest square input on which one output unit
sees exactly its full receptive field, centred, with no padding inside it:

- with VALID padding everywhere (the paper's VGG canvas) that is ``rf`` itself and the output is 1x1;
- with the network's own padding (ResNet, EfficientNet, VGG in SAME mode) it is the smallest size
  >= ``rf`` whose output has odd size and whose centre unit's receptive field is centred on the
  canvas (the "centre-unit rule"); the unit to optimise is then the centre one.

Layers after a global average pool (``kind="global"``: pooled features, logits) see the whole
input whatever its size; their canvas is the network's standard input (:data:`GLOBAL_CANVAS`, the
224 px ImageNet crop), their rf that whole canvas and their output 1x1.

Residual branches never widen the receptive field beyond the main path (the shortcut is a 1x1 or an
identity on the same grid), so the main path determines the geometry.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence, Union

GLOBAL_CANVAS = 224
Padding = Union[int, str]  # explicit symmetric padding, or "VALID" / "SAME" (TensorFlow's SAME)


@dataclasses.dataclass(frozen=True)
class Op:
    """One spatial operation on the main path: a convolution or a pooling window."""

    kernel: int
    stride: int = 1
    padding: Padding = 0

    def pads(self, size: int) -> tuple[int, int]:
        """(before, after) padding applied to an input of ``size`` pixels."""
        if self.padding == "VALID":
            return 0, 0
        if self.padding == "SAME":  # TF/XLA SAME: the odd pixel of padding goes after
            out = -(-size // self.stride)
            total = max((out - 1) * self.stride + self.kernel - size, 0)
            return total // 2, total - total // 2
        return int(self.padding), int(self.padding)

    def out_size(self, size: int) -> int:
        before, after = self.pads(size)
        return (size + before + after - self.kernel) // self.stride + 1


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """A named layer as a model declares it: its channels and the ops since the previous layer."""

    name: str
    channels: int
    ops: tuple[Op, ...]
    kind: str = "conv"  # conv | pool | block | fc | global: what the name is, for the catalogue


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """One row of a model's layer catalogue."""

    name: str
    kind: str
    channels: int
    rf: int      # receptive-field size in input pixels
    jump: int    # input pixels between neighbouring units (cumulative stride)
    canvas: int  # square input size on which the optimised unit sees its whole RF, centred
    out: int     # output size (per side) at that canvas; the unit is the centre one, out // 2

    @property
    def centre(self) -> int:
        return self.out // 2


def trace(ops: Sequence[Op], canvas: int) -> tuple[int, float, int, int]:
    """Follow ``ops`` on a ``canvas``-pixel input: (out size, centre of unit 0, rf, jump)."""
    size, start, rf, jump = canvas, 0.0, 1, 1
    for op in ops:
        before, _ = op.pads(size)
        size = op.out_size(size)
        if size < 1:
            return 0, start, rf, jump
        start += ((op.kernel - 1) / 2 - before) * jump
        rf += (op.kernel - 1) * jump
        jump *= op.stride
    return size, start, rf, jump


def canvas_for(ops: Sequence[Op]) -> tuple[int, int]:
    """(canvas, output size) by the rule in the module docstring."""
    _, _, rf, jump = trace(ops, 1 << 16)
    # the centre condition is periodic in the canvas size with period 2 * jump, so this is exhaustive
    for canvas in range(rf, rf + 4 * jump + 2):
        out, start, _, _ = trace(ops, canvas)
        if out < 1 or out % 2 == 0:
            continue
        centre = start + (out // 2) * jump
        lo, hi = centre - (rf - 1) / 2, centre + (rf - 1) / 2
        if math.isclose(centre, (canvas - 1) / 2) and lo >= 0 and hi <= canvas - 1:
            return canvas, out
    raise ValueError(f"no centred canvas exists for ops {ops}")  # an architecture bug, not user input


def catalogue(specs: Sequence[LayerSpec]) -> tuple[LayerInfo, ...]:
    """The catalogue rows for a model's declared layers, in forward order."""
    rows, ops = [], []
    for spec in specs:
        if spec.kind == "global" or (rows and rows[-1].kind == "global"):
            jump = rows[-1].jump if rows else 1
            rows.append(LayerInfo(spec.name, "global", spec.channels, GLOBAL_CANVAS, jump, GLOBAL_CANVAS, 1))
            continue
        ops.extend(spec.ops)
        _, _, rf, jump = trace(ops, 1 << 16)
        canvas, out = canvas_for(ops)
        rows.append(LayerInfo(spec.name, spec.kind, spec.channels, rf, jump, canvas, out))
    return tuple(rows)


def at_canvas(specs: Sequence[LayerSpec], name: str, canvas: int) -> tuple[int, bool]:
    """(output size per side of layer ``name`` on a ``canvas``-pixel input, whether the centre
    output unit's receptive field is centred on it and lies wholly inside it). After a global
    pool: (1, True) on any canvas."""
    ops: list[Op] = []
    for spec in specs:
        if spec.kind == "global":
            return 1, True
        ops.extend(spec.ops)
        if spec.name == name:
            break
    out, start, rf, jump = trace(ops, canvas)
    if out < 1:
        return 0, False
    centre = start + (out // 2) * jump
    inside = centre - (rf - 1) / 2 >= 0 and centre + (rf - 1) / 2 <= canvas - 1
    return out, out % 2 == 1 and math.isclose(centre, (canvas - 1) / 2) and inside
