"""Contrast budgets from natural images: the radius r of the norm sphere, per canvas size.

As in the paper, ``r`` is half the average L2 norm of natural-image patches of the canvas size,
measured in grey levels after removing the natural mean colour (the network convention's mean).
Patches are drawn at random positions (fixed seed) from the photographs, each photo resized so its
shorter side is at least twice the canvas. Results are cached in ``<weights root>/budgets.json``
keyed by canvas, mean colour and the photos' checksums, so every (model, layer) with the same
canvas and convention shares one figure, and it is computed once.

The colour basis of the Fourier parameterisations (:func:`colour_basis`) comes from the same
photographs: the 3x3 covariance of all their RGB pixels, its symmetric square root, normalised so
that grey changes keep their size; cached beside the budgets in ``colour.json`` with its
provenance (the photos' names and checksums, the pixel count, the covariance).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from jaxvis.io.atomic import sha256
from jaxvis.io.atomic import write_text
from jaxvis.io.images import read_image, resize_shorter

PATCHES = 2000


def patch_norms(photos: list[np.ndarray], canvas: int, mean_rgb, n: int = PATCHES, seed: int = 0) -> np.ndarray:
    """L2 norms of ``n`` random ``canvas``-sized patches (mean colour removed)."""
    rng = np.random.default_rng(seed)
    mean = np.asarray(mean_rgb, np.float32)
    norms = np.empty(n, np.float64)
    for i in range(n):
        image = photos[i % len(photos)]
        top = rng.integers(0, image.shape[0] - canvas + 1)
        left = rng.integers(0, image.shape[1] - canvas + 1)
        norms[i] = np.linalg.norm(image[top:top + canvas, left:left + canvas] - mean)
    return norms


def radius(canvas: int, mean_rgb, photo_paths: list[Path], cache: Path | None) -> float:
    """Half the mean natural patch norm for ``canvas``; cached in the JSON file ``cache``."""
    key = f"canvas={canvas};mean={','.join(f'{m:.3f}' for m in mean_rgb)};photos=" + \
        ",".join(sha256(p)[:12] for p in sorted(photo_paths))
    table = json.loads(cache.read_text()) if cache and cache.is_file() else {}
    if key not in table:
        photos = []
        for p in sorted(photo_paths):
            image = read_image(p)
            if min(image.shape[:2]) < 2 * canvas:
                image = resize_shorter(image, 2 * canvas)
            photos.append(image)
        table[key] = 0.5 * float(np.mean(patch_norms(photos, canvas, mean_rgb)))
        if cache:
            cache.parent.mkdir(parents=True, exist_ok=True)
            write_text(cache, json.dumps(table, indent=1, sort_keys=True))
    return table[key]


def colour_statistics(photos: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """(``[3, 3]`` covariance of every RGB pixel of ``photos`` about their mean, pixel count)."""
    pixels = np.concatenate([np.asarray(p, np.float64).reshape(-1, 3) for p in photos])
    return np.cov(pixels, rowvar=False), len(pixels)


def sqrt_basis(covariance: np.ndarray) -> np.ndarray:
    """``C = Sigma^(1/2) / sqrt(1^T Sigma 1 / 3)``: the symmetric square root of the colour
    covariance (``C C^T`` is ``Sigma`` up to scale), scaled so that ``1^T C C^T 1 / 3 = 1``: a grey
    gradient is as large in image space as under the pixel parameterisation."""
    values, vectors = np.linalg.eigh(covariance)
    root = vectors @ np.diag(np.sqrt(np.maximum(values, 0))) @ vectors.T
    grey = np.ones(3)
    return root / np.sqrt(grey @ covariance @ grey / 3)


def colour_basis(photo_paths: list[Path], cache: Path | None) -> tuple[tuple[float, ...], ...]:
    """The colour basis ``C`` ``[3, 3]`` (:func:`sqrt_basis`) of the photographs, cached in the
    JSON file ``cache`` under their checksums, with its provenance."""
    paths = sorted(photo_paths)
    key = "photos=" + ",".join(sha256(p)[:12] for p in paths)
    table = json.loads(cache.read_text()) if cache and cache.is_file() else {}
    if key not in table:
        covariance, count = colour_statistics([read_image(p) for p in paths])
        table[key] = {"basis": sqrt_basis(covariance).tolist(), "covariance": covariance.tolist(),
                      "pixels": count, "photos": {p.name: sha256(p) for p in paths},
                      "definition": "C = Sigma^(1/2) / sqrt(1' Sigma 1 / 3), Sigma the RGB covariance "
                                    "(0..255) of every pixel of the photos; docs/method.md section 10"}
        if cache:
            cache.parent.mkdir(parents=True, exist_ok=True)
            write_text(cache, json.dumps(table, indent=1, sort_keys=True))
    return tuple(tuple(float(v) for v in row) for row in table[key]["basis"])
