"""Converter tables for ResNet-50: torchvision ``.pth`` (v1.5) and Keras HDF5 (v1, MSRA/Caffe).

torchvision keys: ``conv1.weight``, ``bn1.{weight,bias,running_mean,running_var}``,
``layer{L}.{B}.conv{1,2,3}.weight``, ``layer{L}.{B}.bn{1,2,3}.*``, ``layer{L}.0.downsample.0.weight``
(1x1 conv), ``layer{L}.0.downsample.1.*`` (BatchNorm), ``fc.weight`` ``[1000, 2048]``, ``fc.bias``.
The IMAGENET1K_V1 and V2 files share this layout; ``num_batches_tracked`` carries no weights.

Keras layer names (``keras.applications.ResNet50``): ``conv1_conv``, ``conv1_bn``,
``conv{S}_block{B}_{i}_conv`` / ``_{i}_bn`` (i = 1, 2, 3; S = 2..5 is torchvision's layer1..4; B
from 1), the projection shortcut ``conv{S}_block1_0_conv`` / ``_0_bn``, and ``predictions`` (Dense,
kernel ``[2048, 1000]``). Flat keys are ``{layer}/{weight}`` with legacy short names (``kernel``,
``bias``, ``gamma``, ``beta``, ``moving_mean``, ``moving_variance``) or Keras 3 variable indices
(``0``, ``1``, ...; conv: kernel, bias; BatchNorm: gamma, beta, moving_mean, moving_variance).
Keras kernels are already HWIO, as Flax wants them.
"""

from __future__ import annotations

import re
from typing import Mapping

import numpy as np

from jaxvis.convert.mapping import SourceTensors, conv_from_torch
from jaxvis.convert.sources import Source
from jaxvis.models.base import Network
from jaxvis.models.convention import CAFFE, TORCHVISION
from jaxvis.models.registry import ModelConfig
from jaxvis.models.resnet import BLOCKS, EXPANSION, WIDTHS


def _convs():
    """(param prefix, torch prefix of conv, torch prefix of its BN, keras stem, c_in, c_out, k)
    of every convolution of ResNet-50, in forward order."""
    yield "conv1", "conv1", "bn1", "conv1", 3, 64, 7
    c_in = 64
    for stage, (n, width) in enumerate(zip(BLOCKS, WIDTHS), start=1):
        for b in range(n):
            p, t, k = f"layer{stage}/{b}", f"layer{stage}.{b}", f"conv{stage + 1}_block{b + 1}"
            c_out = EXPANSION * width
            yield f"{p}/conv1", f"{t}.conv1", f"{t}.bn1", f"{k}_1", c_in, width, 1
            yield f"{p}/conv2", f"{t}.conv2", f"{t}.bn2", f"{k}_2", width, width, 3
            yield f"{p}/conv3", f"{t}.conv3", f"{t}.bn3", f"{k}_3", width, c_out, 1
            if b == 0:  # every stage's first block projects (layer1: 64 -> 256 channels)
                yield (f"{p}/downsample_conv", f"{t}.downsample.0", f"{t}.downsample.1",
                       f"{k}_0", c_in, c_out, 1)
            c_in = c_out


def _bn_param(path: str) -> str:
    """``layer1/0/conv1`` -> ``layer1/0/bn1``; ``.../downsample_conv`` -> ``.../downsample_bn``."""
    head, _, last = path.rpartition("/")
    last = "downsample_bn" if last == "downsample_conv" else last.replace("conv", "bn")
    return f"{head}/{last}" if head else last


# ---- torchvision ------------------------------------------------------------------------------

def torchvision_table(src: SourceTensors, model: Network) -> dict[str, np.ndarray]:
    params = {}
    for path, conv, bn, _, c_in, c_out, k in _convs():
        params[f"{path}/kernel"] = conv_from_torch(src.take(f"{conv}.weight", (c_out, c_in, k, k)))
        b = _bn_param(path)
        params[f"{b}/scale"] = src.take(f"{bn}.weight", (c_out,))
        params[f"{b}/bias"] = src.take(f"{bn}.bias", (c_out,))
        params[f"{b}/mean"] = src.take(f"{bn}.running_mean", (c_out,))
        params[f"{b}/var"] = src.take(f"{bn}.running_var", (c_out,))
    if model.include_top:
        params["fc/kernel"] = np.ascontiguousarray(src.take("fc.weight", (1000, 2048)).T)
        params["fc/bias"] = src.take("fc.bias", (1000,))
    return params


def _is_torchvision_resnet50(keys: Mapping) -> bool:
    # bottlenecks (conv3), and exactly six blocks in layer3 (ResNet-101/152 have more)
    return ("conv1.weight" in keys and "layer1.0.conv3.weight" in keys
            and "layer4.2.conv3.weight" in keys and "layer3.5.conv1.weight" in keys
            and "layer3.6.conv1.weight" not in keys)


# ---- Keras ------------------------------------------------------------------------------------

_KERAS_INDEX = {"kernel": 0, "bias": 1, "gamma": 0, "beta": 1, "moving_mean": 2, "moving_variance": 3}
_INDEXED = re.compile(r"/\d+$")


def _keras_key(src: SourceTensors, layer: str, short: str) -> str:
    """The flat key of weight ``short`` of Keras layer ``layer``, in the file's naming style:
    ``layer/short`` (legacy ``.h5``) or ``layer/<index>`` (Keras 3 variable order)."""
    named = f"{layer}/{short}"
    if named in src:
        return named
    indexed = f"{layer}/{_KERAS_INDEX[short]}"
    if indexed in src or any(_INDEXED.search(k) for k in src.keys()):
        return indexed
    return named  # absent in either style: the error names the conventional key


def keras_table(src: SourceTensors, model: Network) -> dict[str, np.ndarray]:
    def take(layer, short, shape):
        return src.take(_keras_key(src, layer, short), shape)

    params = {}
    for path, _, _, stem, c_in, c_out, k in _convs():
        params[f"{path}/kernel"] = take(f"{stem}_conv", "kernel", (k, k, c_in, c_out))
        params[f"{path}/bias"] = take(f"{stem}_conv", "bias", (c_out,))
        b = _bn_param(path)
        params[f"{b}/scale"] = take(f"{stem}_bn", "gamma", (c_out,))
        params[f"{b}/bias"] = take(f"{stem}_bn", "beta", (c_out,))
        params[f"{b}/mean"] = take(f"{stem}_bn", "moving_mean", (c_out,))
        params[f"{b}/var"] = take(f"{stem}_bn", "moving_variance", (c_out,))
    if model.include_top:
        params["fc/kernel"] = take("predictions", "kernel", (2048, 1000))
        params["fc/bias"] = take("predictions", "bias", (1000,))
    return params


def _keras_layers(keys: Mapping) -> set[str]:
    return {k.rsplit("/", 1)[0] for k in keys}


def _is_keras_resnet50(keys: Mapping) -> bool:
    layers = _keras_layers(keys)
    # conv1_bn and no post_bn: not ResNet50V2; six conv4 blocks: not ResNet101/152
    return ({"conv1_conv", "conv1_bn", "conv2_block1_0_conv", "conv2_block1_3_conv",
             "conv4_block6_3_conv", "conv5_block3_3_bn"} <= layers
            and "conv4_block7_1_conv" not in layers and "post_bn" not in layers)


def _num_batches_tracked(key: str) -> bool:
    return key.endswith("num_batches_tracked")


SOURCES = [
    Source(
        name="torchvision-resnet50",
        model=ModelConfig.make("resnet50", variant="v1.5", include_top=True),
        convention=TORCHVISION,
        format="torch",
        table=torchvision_table,
        detect=lambda keys: _is_torchvision_resnet50(keys) and "fc.weight" in keys,
        description="torchvision resnet50 (IMAGENET1K_V1 or V2), ResNet-50 v1.5 with classifier",
        ignore=_num_batches_tracked,
    ),
    Source(
        name="torchvision-resnet50-notop",
        model=ModelConfig.make("resnet50", variant="v1.5", include_top=False),
        convention=TORCHVISION,
        format="torch",
        table=torchvision_table,
        detect=lambda keys: _is_torchvision_resnet50(keys) and "fc.weight" not in keys,
        description="torchvision resnet50 layout without fc.* (headless), ResNet-50 v1.5",
        ignore=_num_batches_tracked,
    ),
    Source(
        name="keras-resnet50",
        model=ModelConfig.make("resnet50", variant="v1", include_top=False),
        convention=CAFFE,
        format="keras",
        table=keras_table,
        detect=lambda keys: _is_keras_resnet50(keys) and "predictions" not in _keras_layers(keys),
        description="keras.applications ResNet50 notop (MSRA ResNet-50 v1, Caffe preprocessing)",
    ),
    Source(
        name="keras-resnet50-top",
        model=ModelConfig.make("resnet50", variant="v1", include_top=True),
        convention=CAFFE,
        format="keras",
        table=keras_table,
        detect=lambda keys: _is_keras_resnet50(keys) and "predictions" in _keras_layers(keys),
        description="keras.applications ResNet50 with predictions (MSRA ResNet-50 v1, Caffe "
                    "preprocessing; fc holds the logits before Keras' softmax)",
    ),
]
