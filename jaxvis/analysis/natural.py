"""Natural-image calibration: how a unit responds to real photographs, on the sweep's terms.

Every position of a layer's output on a whole photograph is the unit applied to one patch (the
network is translation-equivariant up to its stride), so one forward pass per photo scores every
RF-sized patch at a stride of the layer's jump. Positions whose receptive field (and canvas) would
reach past the photo's border are dropped, so each score is the unit on a real patch, exactly as on
the sweep's canvas. Per unit jaxvis keeps the top patches and the 99th percentile of the scores.

The sets of patches jaxvis shows or measures against (a unit's top patches, the N-patch reference
sets of the ``reference_*`` metrics) hold no flat patch and no near-duplicate (:func:`usable`,
:func:`similar`): rescaled to the sweep's norm, flat patches of one hue are the same vector (a
reference set's min distance of 1e-6), and the top positions of a unit are often one edge
shifted by a pixel or two.

**Devices.** One forward pass per photo serves every unit of the layer (a unit is a direction
read off the shared activations), so the calibration is batched across units by construction.
Photos differ in size, so they cannot share a batch; instead each is a batch of one on a device of
its own, the photos dealt over the unit mesh's devices in turn and computed at the same time
(:func:`calibrate`). What stays on the host, in numpy, and is not sharded: reading the photos, the
scores' percentiles and ranking, and the choice of each unit's top patches and of the reference
sets (:func:`distinct`: a sequential walk down a ranked list that stops at the first ``top``
distinct patches; it is cheap next to the forward passes and has no batch to split).
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
from jax.sharding import Mesh

from jaxvis.analysis.gratings import equal_chunks, images_per_call
from jaxvis.errors import JaxvisError
from jaxvis.io.images import read_image
from jaxvis.models.geometry import LayerInfo, trace
from jaxvis.objectives.diversity import pairwise_rms
from jaxvis.optimize.parallel import UNITS, unit_mesh
from jaxvis.weights import Model


# A patch is flat below this RMS deviation from its own mean colour, in grey levels: 8-bit photos
# carry ~0.3 of quantisation and 1-2 of sensor and JPEG noise, so below 4 a patch is one colour
# plus noise, and its rescaling to the sweep's norm only amplifies that noise.
MIN_CONTRAST = 4.0
# ... and, where it is rescaled to a norm (the reference sets), its structure at least this share
# of its deviation from the mean colour: otherwise it is mostly one colour offset, and all such
# patches of a hue are nearly one vector. With MAX_SIMILARITY, two patches of a reference set are
# then at least MIN_STRUCTURE * sqrt(2 - 2 * MAX_SIMILARITY) = 0.25 of the norm apart.
MIN_STRUCTURE = 0.25
# Two patches are near-duplicates above this cosine similarity of their own-mean-removed pixels: a
# step edge shifted by 1 pixel in a 10-pixel patch keeps 0.8 of it, by 2 (one position at a layer
# of jump 2) 0.6; unrelated patches of 10 x 10 x 3 values stay below about 0.2.
MAX_SIMILARITY = 0.5
# Candidate patches tried per patch wanted before a reference set is given up (photos that are
# nearly all flat at this canvas).
TRIES_PER_PATCH = 50


def _structure(patch: np.ndarray) -> np.ndarray:
    """A ``[c, c, 3]`` patch's own mean colour removed, flattened (float64)."""
    x = np.asarray(patch, np.float64).reshape(-1, 3)
    return (x - x.mean(axis=0)).ravel()


def usable(patch: np.ndarray, mean_rgb=None) -> bool:
    """Whether a patch has contrast: RMS about its own mean colour at least :data:`MIN_CONTRAST`
    and, given the ``mean_rgb`` it is rescaled about, :data:`MIN_STRUCTURE` of its RMS about that."""
    x = _structure(patch)
    rms = float(np.sqrt(np.mean(x ** 2)))
    if mean_rgb is not None:
        offset = float(np.sqrt(np.mean((np.asarray(patch, np.float64) - np.asarray(mean_rgb, np.float64)) ** 2)))
        if rms < MIN_STRUCTURE * offset:
            return False
    return rms >= MIN_CONTRAST


def similar(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two patches are near-duplicates (cosine similarity of their structure above
    :data:`MAX_SIMILARITY`; shifted copies of one edge, one texture twice)."""
    x, y = _structure(a), _structure(b)
    return float(x @ y) > MAX_SIMILARITY * float(np.linalg.norm(x) * np.linalg.norm(y))


def distinct(candidates, wanted: int, mean_rgb=None) -> list[int]:
    """Indices of the first ``wanted`` patches of the iterable ``candidates`` (in their order)
    that have contrast (:func:`usable`, ``mean_rgb`` as there) and are no near-duplicate of one
    kept before; fewer if it runs out."""
    kept, index = [], []
    for i, patch in enumerate(candidates):
        if usable(patch, mean_rgb) and not any(similar(patch, k) for k in kept):
            kept.append(patch)
            index.append(i)
            if len(kept) == wanted:
                break
    return index


def _ops_upto(model: Model, layer: str):
    ops = []
    for spec in model.network.specs():
        ops.extend(spec.ops)
        if spec.name == layer:
            return ops
    raise KeyError(layer)


def responses(model: Model, info: LayerInfo, image: np.ndarray, acts=None):
    """(``[P, C]`` pre-activations at the valid positions, ``[P, 2]`` top-left corners of their
    canvas-sized patches) for one ``[H, W, 3]`` photograph (``acts``: its layer output ``[1, h, w,
    C]`` if computed already)."""
    acts = np.asarray(model.layer_output(image[None], info.name) if acts is None else acts)[0]  # [h, w, C]
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


def calibrate(model: Model, info: LayerInfo, directions: np.ndarray, photos: list[Path], top: int = 8,
              mesh: Mesh | None = None) -> dict:
    """Per unit (a direction ``[U, C]`` in channel space; one-hot rows for channels):
    ``natural_p99`` ``[U]``, ``natural_top_activations`` ``[U, top]`` and ``natural_top_patches``
    ``[U, top, c, c, 3]`` over all patches of ``photos``, the top ones with contrast and no
    near-duplicate among them (:func:`distinct`). The photos' forward passes are spread over the
    devices of ``mesh`` (default all of this process's; module docstring)."""
    scores, where = [], []
    images = [read_image(p) for p in photos]
    for index, image, acts in _layer_outputs(model, info, images, mesh):
        acts, corners = responses(model, info, image, acts)
        scores.append(acts @ directions.T)
        where.append(np.concatenate([np.full((len(corners), 1), index), corners], axis=1))
    if not scores:
        raise ValueError(f"no photograph is larger than the {info.canvas} px canvas of {info.name}")
    scores, where = np.concatenate(scores), np.concatenate(where)
    c = info.canvas

    def patch(i):
        return images[where[i, 0]][where[i, 1]:where[i, 1] + c, where[i, 2]:where[i, 2] + c]

    order = np.argsort(-scores, axis=0)                            # [P, U], best first
    chosen = []
    for u in range(len(directions)):  # the best patches, flat ones and near-duplicates passed over
        ranked = order[:, u]
        picked = ranked[distinct((patch(i) for i in ranked), top)]
        if len(picked) < top:
            raise JaxvisError(f"the photos hold only {len(picked)} distinct patches with contrast at {info.name}'s "
                              f"{c} px canvas, {top} wanted; use fewer (AnalysisConfig.top) or more photos "
                              "(AnalysisConfig.photos)")
        chosen.append(picked)
    chosen = np.stack(chosen, axis=1)                              # [top, U]
    patches = np.stack([[patch(i) for i in chosen[:, u]] for u in range(len(directions))])
    return {"natural_p99": np.percentile(scores, 99, axis=0).astype(np.float32),
            "natural_top_activations": np.take_along_axis(scores, chosen, 0).T.astype(np.float32),
            "natural_top_patches": patches.astype(np.float32), "patch_count": len(scores)}


def _layer_outputs(model: Model, info: LayerInfo, images: list[np.ndarray], mesh: Mesh | None):
    """``(index, image, [1, h, w, C] layer output)`` of every photo at least a canvas wide, in
    order: each photo is a batch of one on a device of ``mesh`` of its own (a mesh of that device
    alone, :meth:`jaxvis.Model.layer_output`), the next photo on the next device, one photo per
    device in flight (dispatched together, read in order)."""
    devices = [Mesh(np.array([d]), (UNITS,)) for d in (unit_mesh() if mesh is None else mesh).devices.flat]
    todo = [(i, image) for i, image in enumerate(images) if min(image.shape[:2]) >= info.canvas]
    for start in range(0, len(todo), len(devices)):
        group = todo[start:start + len(devices)]
        flight = [model.layer_output(image[None], info.name, mesh=device) for (_, image), device in zip(group, devices)]
        yield from ((i, image, acts) for (i, image), acts in zip(group, flight))


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


def reference_sets(photos: list[Path], canvas: int, sets: int, n: int, mean_rgb, radius: float,
                   seed: int) -> np.ndarray:
    """``[sets, n, c, c, 3]`` sets of ``n`` random natural patches with contrast and no
    near-duplicate within a set (:func:`distinct`), each rescaled like :func:`random_patches`:
    the references a unit's diverse sets are measured against."""
    rng = np.random.default_rng(seed)
    images = [im for im in (read_image(p) for p in photos) if min(im.shape[:2]) >= canvas]
    if not images:
        raise JaxvisError(f"no photograph is larger than the {canvas} px canvas")
    mean = np.asarray(mean_rgb, np.float32)

    def draws(drawn: list):
        for _ in range(TRIES_PER_PATCH * n):
            im = images[rng.integers(len(images))]
            top, left = rng.integers(0, im.shape[0] - canvas + 1), rng.integers(0, im.shape[1] - canvas + 1)
            drawn.append(im[top:top + canvas, left:left + canvas])
            yield drawn[-1]

    out = []
    for _ in range(sets):
        candidates: list = []
        picked = distinct(draws(candidates), n, mean)
        if len(picked) < n:
            raise JaxvisError(f"the photos hold too few distinct patches with contrast at a {canvas} px canvas "
                              f"({len(picked)} of {n} in {len(candidates)} draws); use more photos "
                              "(AnalysisConfig.photos)")
        x = np.stack([candidates[i] for i in picked]) - mean
        norms = np.linalg.norm(x.reshape(n, -1), axis=1)[:, None, None, None]
        out.append(radius * x / norms + mean)
    return np.stack(out).astype(np.float32)


def reference_distances(model: Model, info: LayerInfo, meta: dict, units: int, n: int, photos: list[Path],
                        seed: int, mesh: Mesh | None = None) -> dict:
    """Distances ``[U, N, N]`` within N random natural patches per unit (with contrast, no
    near-duplicates: :func:`reference_sets`), at the sweep's size and norm (layer ``meta``'s
    ``radius``), in pixels and in the diversity feature layer (its ``feature_layer``): the inputs
    of the ``reference_*`` metrics. The units' patches go through the feature layer in equal
    calls of whole units, each at most :func:`~jaxvis.analysis.gratings.images_per_call` images
    (the grating battery's bound) split over the devices of ``mesh``, and only their distances are
    kept; drawing the patches (a sequential walk, :func:`distinct`) stays on the host."""
    mean = model.convention.mean_rgb255
    sets = reference_sets(photos, info.canvas, units, n, mean, meta["radius"], seed)  # [U, N, c, c, 3]
    pixel = np.asarray(jax.vmap(pairwise_rms)(sets - np.asarray(mean, np.float32)))
    feature_layer = meta.get("feature_layer", "pixels")
    if feature_layer in (None, "pixels"):
        return {"reference_pixel_distances": pixel, "reference_feature_distances": pixel}
    mesh = unit_mesh() if mesh is None else mesh
    feature = []
    for index in equal_chunks(units, max(1, images_per_call(info.canvas, mesh) // n)):  # whole units
        feats = np.asarray(model.layer_output(sets[index].reshape(-1, *sets.shape[2:]), feature_layer,
                                              post=True, mesh=mesh))
        feature.append(np.asarray(jax.vmap(pairwise_rms)(feats.reshape(len(index), n, *feats.shape[1:]))))
    return {"reference_pixel_distances": pixel, "reference_feature_distances": np.concatenate(feature)[:units]}
