"""Natural-image calibration: how a unit responds to real photographs, on the sweep's terms.

Every position of a layer's output on a whole photograph is the unit applied to one patch (the
network is translation-equivariant up to its stride), so one forward pass per photo scores every
RF-sized patch at a stride of the layer's jump. Positions whose receptive field (and canvas) would
reach past the photo's border are dropped, so each score is the unit on a real patch, exactly as on
the sweep's canvas. Per unit jaxvis keeps the top patches and the 99th percentile of the scores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxvis.io.images import read_image
from jaxvis.models.geometry import LayerInfo, trace
from jaxvis.weights import Model


def _ops_upto(model: Model, layer: str):
    ops = []
    for spec in model.network.specs():
        ops.extend(spec.ops)
        if spec.name == layer:
            return ops
    raise KeyError(layer)


def responses(model: Model, info: LayerInfo, image: np.ndarray):
    """(``[P, C]`` pre-activations at the valid positions, ``[P, 2]`` top-left corners of their
    canvas-sized patches) for one ``[H, W, 3]`` photograph."""
    acts = np.asarray(model.layer_output(image[None], info.name))[0]  # [h, w, C]
    ops = _ops_upto(model, info.name)
    corners, keep = [], []
    for axis, size in enumerate(image.shape[:2]):
        out, start, rf, jump = trace(ops, size)
        centres = start + jump * np.arange(acts.shape[axis])
        corner = np.round(centres - (info.canvas - 1) / 2).astype(int)
        inside = (centres - (rf - 1) / 2 >= 0) & (centres + (rf - 1) / 2 <= size - 1) & \
                 (corner >= 0) & (corner + info.canvas <= size)
        corners.append(corner)
        keep.append(inside)
    rows, cols = np.nonzero(keep[0][:, None] & keep[1][None, :])
    return acts[rows, cols], np.stack([corners[0][rows], corners[1][cols]], axis=1)


def calibrate(model: Model, info: LayerInfo, directions: np.ndarray, photos: list[Path], top: int = 8) -> dict:
    """Per unit (a direction ``[U, C]`` in channel space; one-hot rows for channels):
    ``natural_p99`` ``[U]``, ``natural_top_activations`` ``[U, top]`` and ``natural_top_patches``
    ``[U, top, c, c, 3]`` over all patches of ``photos``."""
    scores, where = [], []
    images = [read_image(p) for p in photos]
    for index, image in enumerate(images):
        if min(image.shape[:2]) < info.canvas:
            continue
        acts, corners = responses(model, info, image)
        scores.append(acts @ directions.T)
        where.append(np.concatenate([np.full((len(corners), 1), index), corners], axis=1))
    if not scores:
        raise ValueError(f"no photograph is larger than the {info.canvas} px canvas of {info.name}")
    scores, where = np.concatenate(scores), np.concatenate(where)
    order = np.argsort(-scores, axis=0)[:top]                      # [top, U]
    c = info.canvas
    patches = np.stack([[images[where[i, 0]][where[i, 1]:where[i, 1] + c, where[i, 2]:where[i, 2] + c]
                         for i in order[:, u]] for u in range(len(directions))])
    return {"natural_p99": np.percentile(scores, 99, axis=0).astype(np.float32),
            "natural_top_activations": np.take_along_axis(scores, order, 0).T.astype(np.float32),
            "natural_top_patches": patches.astype(np.float32), "patch_count": len(scores)}


def random_patches(photos: list[Path], canvas: int, count: int, mean_rgb, radius: float, seed: int) -> np.ndarray:
    """``[count, c, c, 3]`` random natural patches, mean colour removed, rescaled to norm ``radius``
    (the sweep's sphere), returned as RGB grey levels (mean colour added back)."""
    rng = np.random.default_rng(seed)
    images = [read_image(p) for p in photos]
    images = [im for im in images if min(im.shape[:2]) >= canvas]
    mean = np.asarray(mean_rgb, np.float32)
    out = []
    for _ in range(count):
        im = images[rng.integers(len(images))]
        top, left = rng.integers(0, im.shape[0] - canvas + 1), rng.integers(0, im.shape[1] - canvas + 1)
        x = im[top:top + canvas, left:left + canvas] - mean
        out.append(radius * x / max(np.linalg.norm(x), 1e-6) + mean)
    return np.stack(out).astype(np.float32)
