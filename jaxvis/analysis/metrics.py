"""Per-unit invariance metrics of a diverse set, on interpretable scales.

All are pure numpy functions of one layer's sweep arrays (leading axis: units), except the
reference distances, which need natural patches and the network (see :func:`reference_distances`).

- ``activation_fraction`` ``[U, N]``: each diverse image's activation / the single-image maximum.
- ``pixel_min``/``pixel_mean``, ``feature_min``/``feature_mean``: min and mean pairwise RMS distance
  of the diverse set in pixels and in the diversity feature layer.
- ``reference_*``: the same for N random natural patches of the same size and norm (the budget),
  so a distance reads against what natural variety looks like at that contrast.
- ``participation_ratio``: effective dimensionality of the set, ``(sum l)^2 / sum l^2`` over the
  eigenvalues ``l`` of the N x N Gram matrix of the images (mean colour removed, not centred across
  the set): 1 for N identical images, N for N orthogonal images of equal norm.
- ``variance_map`` ``[U, H, W]``: per-pixel variance across the set (mean over colour channels):
  where the images differ.
"""

from __future__ import annotations

import numpy as np

DEFINITIONS = {
    "activation_fraction": "activation of each diverse image / the unit's single-image maximum",
    "fraction_min": "smallest activation fraction of the diverse set",
    "fraction_median": "median activation fraction of the diverse set",
    "pixel_min": "min pairwise RMS pixel distance of the diverse set (grey levels)",
    "pixel_mean": "mean pairwise RMS pixel distance of the diverse set (grey levels)",
    "feature_min": "min pairwise RMS distance in the diversity feature layer",
    "feature_mean": "mean pairwise RMS distance in the diversity feature layer",
    "reference_pixel_min": "min pairwise RMS pixel distance of N natural patches of equal size and norm",
    "reference_pixel_mean": "mean pairwise RMS pixel distance of N natural patches of equal size and norm",
    "reference_feature_min": "min pairwise feature distance of the N natural patches",
    "reference_feature_mean": "mean pairwise feature distance of the N natural patches",
    "participation_ratio": "effective dimensionality of the diverse set, 1 (identical) .. N",
    "variance_map": "per-pixel variance across the diverse set (mean over colour)",
    "shift_index": "mean response over all shifts of the optimised texture / single-image maximum",
    "shift_texture": "the shift test's texture (RGB grey levels)",
    "shift_responses": "the unit's response at every offset of the shift test",
    "shift_sigma": "the learnt mask radius sigma of the shift test (px)",
    "natural_p99": "99th percentile of the unit's responses to natural-image patches",
    "max_over_p99": "single-image maximum / natural_p99",
    "diverse_over_p99": "activation of each diverse image / natural_p99",
    "natural_top_patches": "the natural patches that drive the unit most (RGB grey levels)",
    "natural_top_activations": "the unit's responses to those patches",
}


def pair_stats(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[U, N, N]`` distance matrices -> (min, mean) over the pairs i < j, each ``[U]``."""
    n = d.shape[-1]
    i, j = np.triu_indices(n, 1)
    pairs = d[:, i, j]
    return pairs.min(axis=1), pairs.mean(axis=1)


def participation_ratio(images: np.ndarray, mean_rgb) -> np.ndarray:
    """``[U, N, H, W, 3]`` -> ``[U]`` (see the module docstring)."""
    x = (images - np.asarray(mean_rgb, np.float32)).reshape(images.shape[0], images.shape[1], -1)
    gram = np.einsum("uid,ujd->uij", x.astype(np.float64), x.astype(np.float64))
    eig = np.clip(np.linalg.eigvalsh(gram), 0, None)
    return (eig.sum(-1) ** 2 / np.maximum((eig ** 2).sum(-1), 1e-300)).astype(np.float32)


def variance_map(images: np.ndarray) -> np.ndarray:
    """``[U, N, H, W, 3]`` -> ``[U, H, W]`` (computed about the first image: exactly 0 where the
    images agree, and no cancellation against the ~120 grey-level mean)."""
    d = (images - images[:, :1]).astype(np.float64)
    return (np.square(d).mean(axis=1) - np.square(d.mean(axis=1))).mean(axis=-1).astype(np.float32)


def from_sweep(layer: dict[str, np.ndarray], mean_rgb) -> dict[str, np.ndarray]:
    """The metrics computable from a layer's sweep arrays alone."""
    fraction = layer["activations"] / layer["max_activation"][:, None]
    pixel_min, pixel_mean = pair_stats(layer["pixel_distances"])
    feature_min, feature_mean = pair_stats(layer["feature_distances"])
    return {
        "activation_fraction": fraction.astype(np.float32),
        "fraction_min": fraction.min(axis=1).astype(np.float32),
        "fraction_median": np.median(fraction, axis=1).astype(np.float32),
        "pixel_min": pixel_min, "pixel_mean": pixel_mean,
        "feature_min": feature_min, "feature_mean": feature_mean,
        "participation_ratio": participation_ratio(layer["images"], mean_rgb),
        "variance_map": variance_map(layer["images"]),
    }
