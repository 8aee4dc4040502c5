"""Gatys-style normalised VGG: every filter rescaled so its mean activation on natural images is 1.

For conv layers l = 1..L in order, with m_l[c] the mean post-ReLU activation of channel c over all
images and positions (standard SAME-padded network), the normalised weights are

    W'_l[:, :, i, o] = W_l[:, :, i, o] * m_{l-1}[i] / m_l[o],    b'_l[o] = b_l[o] / m_l[o]   (m_0 = 1)

ReLU and max/avg pooling commute with positive per-channel scales, so every layer's output becomes
the original divided by its m_l: the network computes the same function up to per-channel scale,
and activations read as "times the natural mean". Because of that, all m_l come from one forward
pass of the original network. A channel that never responds (m = 0) keeps scale 1 and is listed.

It lives in ``convert/`` because it transforms weights. It takes and returns a
:class:`jaxvis.weights.Model` but never imports that module (``weights`` imports this one to build
``vgg19-normalized``): new models are made with ``dataclasses.replace`` on the given one.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxvis.convert.mapping import assign
from jaxvis.io.atomic import sha256
from jaxvis.errors import JaxvisError
from jaxvis.io.images import read_image, resize_shorter
from jaxvis.models.registry import build
from jaxvis.models.vgg import VGG


def channel_means(model, images: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Mean post-ReLU activation per channel of every conv layer, over ``images`` (SAME padding)."""
    network = load_like(model, padding="SAME").network
    names = tuple(n for n, _ in network.conv_names())
    total, count = None, 0
    for image in images:
        means = _means(network, jnp.asarray(image[None]), convention=model.convention, names=names)
        pixels = image.shape[0] * image.shape[1]  # weight each image by its size, like one big batch
        total = {n: (0 if total is None else total[n]) + np.asarray(m, np.float64) * pixels
                 for n, m in means.items()}
        count += pixels
    return {n: t / count for n, t in total.items()}


@functools.partial(jax.jit, static_argnames=("convention", "names"))
def _means(network, rgb255, *, convention, names: tuple[str, ...]) -> dict[str, jax.Array]:
    """``{conv name: [C] mean post-ReLU activation}`` of ``[1, H, W, 3]`` images. Jitted once per
    image shape, with the weights as an argument, so the original and the normalised network (and
    repeated calls) share the compiled program."""
    post = network(convention(rgb255), upto=names[-1]).post
    return {n: jnp.mean(post[n], axis=(0, 1, 2)) for n in names}


def load_like(model, **options):
    """The same weights under other model options (a new ``Model``; ``model`` is left alone)."""
    config = model.config.with_options(**options)
    return dataclasses.replace(model, network=assign(build(config), model.params(), "normalize"),
                               meta={**model.meta, "model": config.to_json()})


def normalize(model, image_paths: list[Path], size: int = 256):
    """The normalised copy of a VGG ``model`` (a :class:`jaxvis.weights.Model`), from photographs
    resized to ``size`` (shorter side)."""
    if not isinstance(model.network, VGG):
        raise JaxvisError(f"normalisation is defined for VGG networks, not {model.network.name}")
    if not image_paths:
        raise JaxvisError("normalisation needs at least one natural image")
    images = [resize_shorter(read_image(p), size) for p in image_paths]
    means = channel_means(model, images)
    params = model.params()
    previous, dead = np.ones(3), {}
    for name, _ in model.network.conv_names():
        m = means[name]
        scale = np.where(m > 0, m, 1.0)
        dead_here = np.flatnonzero(m <= 0)
        if dead_here.size:
            dead[name] = dead_here.tolist()
        kernel = params[f"convs/{name}/kernel"]
        params[f"convs/{name}/kernel"] = (kernel * previous[None, None, :, None] / scale).astype(np.float32)
        params[f"convs/{name}/bias"] = (params[f"convs/{name}/bias"] / scale).astype(np.float32)
        previous = scale
    if model.network.include_top:  # fc6 reads pool5: undo the last layer's scale there
        params["convs/fc6/kernel"] = (params["convs/fc6/kernel"] * previous[None, None, :, None]).astype(np.float32)
    meta = {**model.meta, "normalized": {
        "method": "Gatys et al. 2016: per-filter mean post-ReLU activation on natural images = 1",
        "images": [{"file": Path(p).name, "sha256": sha256(p)} for p in image_paths],
        "resize_shorter_side": size, "dead_channels": dead}}
    return dataclasses.replace(model, network=assign(model.network, params, "normalize"), meta=meta)
