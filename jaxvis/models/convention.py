"""The input convention a set of weights expects: it travels with the weights, nothing guesses it.

Everywhere in jaxvis an image is ``[..., H, W, 3]`` float RGB in grey levels 0..255 (the unit the
paper's norm budgets are in). A convention turns that into what a network was trained on:
``(x[..., order] * scale - mean) / std``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclasses.dataclass(frozen=True)
class InputConvention:
    """What a network's first layer expects, as an affine map of RGB grey levels 0..255:

        network_input = (x[..., order] * scale - mean) / std

    - ``channel_order``: ``"RGB"`` or ``"BGR"`` (Caffe/Keras VGG weights are BGR), applied first;
    - ``scale``: multiplies the grey levels (``1/255`` for networks trained on 0..1 inputs);
    - ``mean``, ``std``: per channel, in the network's channel order and *after* ``scale``.

    Examples: Caffe VGG ``InputConvention("BGR", 1.0, (103.939, 116.779, 123.68))``; torchvision
    ``InputConvention("RGB", 1/255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))``.
    :attr:`mean_rgb255` is the colour the network sees as zero: the sweep's images deviate from
    it, and the natural contrast budget is measured around it. The default (identity, mean 0) is
    right only for a network that takes raw grey levels; for your own network give the mean colour
    it was trained around (e.g. ``mean=(124, 116, 104)`` with ``scale=1``), or images are centred
    on black.
    """

    channel_order: str = "RGB"                     # "RGB" or "BGR": the network's first-layer order
    scale: float = 1.0                             # multiplies grey levels 0..255 (1/255 for 0..1 nets)
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # in the network's channel order, after scale
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self):
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', not {self.channel_order!r}")

    def __call__(self, rgb255):
        """``[..., H, W, 3]`` RGB 0..255 -> the network's input (works on numpy and jax arrays)."""
        x = rgb255[..., ::-1] if self.channel_order == "BGR" else rgb255
        return (x * self.scale - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)

    @property
    def mean_rgb255(self) -> tuple[float, float, float]:
        """The network's mean colour as RGB grey levels: what a zero input means to it."""
        mean = tuple(float(m / self.scale) for m in self.mean)
        return mean[::-1] if self.channel_order == "BGR" else mean

    def to_json(self) -> dict:
        return {"channel_order": self.channel_order, "scale": self.scale,
                "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_json(cls, d: dict) -> "InputConvention":
        return cls(d["channel_order"], float(d["scale"]), tuple(d["mean"]), tuple(d["std"]))


CAFFE = InputConvention("BGR", 1.0, CAFFE_MEAN_BGR)
TORCHVISION = InputConvention(
    "RGB", 1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
EFFICIENTNET_LITE = InputConvention("RGB", 1.0, (127.0, 127.0, 127.0), (128.0, 128.0, 128.0))
