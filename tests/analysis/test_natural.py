"""Natural patches that cannot degenerate: flat patches and shifted copies of one edge are dropped
from the reference sets and the top-patch lists, distinct patches with contrast are kept."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from jaxvis.analysis.natural import (MAX_SIMILARITY, MIN_CONTRAST, MIN_STRUCTURE, calibrate, distinct,
                                     reference_sets, similar, usable)

C = 10  # patch size


def edge(shift: int = 0, vertical: bool = True, low: float = 60.0, high: float = 190.0) -> np.ndarray:
    """A ``[C, C, 3]`` step edge, its step at column (or row) ``C // 2 + shift``."""
    x = np.full((C, C, 3), low, np.float32)
    if vertical:
        x[:, C // 2 + shift:] = high
    else:
        x[C // 2 + shift:] = high
    return x


def test_flat_patches_and_shifted_copies_are_dropped_distinct_ones_kept():
    rng = np.random.default_rng(0)
    flat = np.full((C, C, 3), 140.0, np.float32)
    grain = flat + rng.normal(0, 1.5, flat.shape)   # one colour plus sensor noise
    texture = 128 + 40 * rng.standard_normal((C, C, 3))
    assert not usable(flat) and not usable(grain) and usable(edge()) and usable(texture)
    assert usable(flat + np.where(np.arange(C) < C // 2, 0, 2 * MIN_CONTRAST)[None, :, None])
    assert similar(edge(), edge(1)) and similar(edge(), edge(-1)) and similar(edge(), edge(0, low=20, high=90))
    assert similar(edge(), edge(2))  # one position apart at a layer of jump 2
    assert not similar(edge(), edge(vertical=False)) and not similar(edge(), texture)
    candidates = [flat, edge(), edge(1), grain, edge(-1), edge(vertical=False), texture, edge(2)]
    assert distinct(candidates, 8) == [1, 5, 6]
    # rescaled about a mean colour, a patch that is mostly one colour offset is flat too
    faint = edge(low=200, high=200 + 3 * MIN_CONTRAST)
    assert usable(faint) and not usable(faint, mean_rgb=np.full(3, 100.0)) and usable(edge(), np.full(3, 100.0))
    assert distinct(candidates, 2) == [1, 5]


@pytest.fixture
def photo(tmp_path):
    """A photograph half flat, with one long vertical edge and a patch of texture."""
    rng = np.random.default_rng(1)
    image = np.full((96, 96, 3), 120, np.uint8)
    image[:, 48:] = 200                                     # one long straight edge: shifted copies
    image[64:, :32] = rng.integers(0, 256, (32, 32, 3))     # texture: distinct patches
    path = tmp_path / "edge.png"
    Image.fromarray(image).save(path)
    return path


def test_reference_sets_hold_no_flat_patch_and_no_near_duplicate(photo):
    mean = np.array([123.0, 117.0, 104.0], np.float32)
    sets = reference_sets([photo], C, 6, 5, mean, 50.0, seed=0)
    assert sets.shape == (6, 5, C, C, 3)
    x = sets - mean
    np.testing.assert_allclose(np.linalg.norm(x.reshape(30, -1), axis=1), 50.0, rtol=1e-4)
    for group in sets:
        structure = group - group.mean(axis=(1, 2), keepdims=True)
        share = np.linalg.norm(structure.reshape(5, -1), axis=1) / np.linalg.norm((group - mean).reshape(5, -1), axis=1)
        assert (share >= MIN_STRUCTURE).all()
        assert not any(similar(a, b) for a, b in itertools.combinations(group, 2))
        d = np.linalg.norm((group[:, None] - group[None]).reshape(5, 5, -1), axis=2)
        assert d[np.triu_indices(5, 1)].min() >= 0.25 * 50  # far from the 1e-6 of identical vectors
    assert np.array_equal(sets, reference_sets([photo], C, 6, 5, mean, 50.0, seed=0))  # seeded


def test_too_few_distinct_patches_is_one_line(tmp_path):
    path = tmp_path / "flat.png"
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(path)
    with pytest.raises(Exception, match="too few distinct patches with contrast"):
        reference_sets([path], C, 1, 3, np.zeros(3), 50.0, seed=0)


@pytest.mark.usefixtures("weights_env")
def test_top_patches_skip_flat_ones_and_shifted_copies(vgg19, photo):
    info = vgg19.network.layer("conv1_2")
    directions = np.eye(info.channels, dtype=np.float32)[[0, 5, 12]]
    found = calibrate(vgg19, info, directions, [photo], top=3)
    patches = found["natural_top_patches"]
    assert patches.shape == (3, 3, info.canvas, info.canvas, 3)
    for unit in patches:
        assert all(usable(p) for p in unit)
        assert not any(similar(a, b) for a, b in itertools.combinations(unit, 2)), MAX_SIMILARITY
    acts = found["natural_top_activations"]
    assert (np.diff(acts, axis=1) <= 0).all()  # still the best ones, best first


@pytest.mark.usefixtures("weights_env")
def test_reference_feature_distances_in_bounded_calls_are_the_one_calls(vgg19, photo, monkeypatch):
    """The reference sets go through the feature layer in equal calls of whole units (the last one
    padded) when the grating battery's bound asks for it: the same distances as one call, and each
    the RMS distance of the layer's own outputs for that unit's patches."""
    from jaxvis.analysis import gratings as G
    from jaxvis.analysis.natural import reference_distances
    from jaxvis.optimize.parallel import unit_mesh

    info, meta = vgg19.network.layer("conv2_1"), {"radius": 50.0, "feature_layer": "conv1_2"}
    monkeypatch.setitem(G.PIXELS_PER_CALL, "cpu", 1 << 30)
    whole = reference_distances(vgg19, info, meta, 5, 4, [photo], seed=0)
    calls = []
    monkeypatch.setattr(type(vgg19), "layer_output", lambda self, x, *a, _real=type(vgg19).layer_output, **k:
                        calls.append(len(x)) or _real(self, x, *a, **k))
    monkeypatch.setitem(G.PIXELS_PER_CALL, "cpu", 8 * info.canvas ** 2)  # 8 images a device: 2 units a call
    chunked = reference_distances(vgg19, info, meta, 5, 4, [photo], seed=0)
    units_a_call = 8 * len(unit_mesh().devices.flat) // 4  # the default mesh: every device
    assert len(calls) == -(-5 // units_a_call) and len(set(calls)) == 1  # equal calls of whole units
    np.testing.assert_allclose(chunked["reference_feature_distances"], whole["reference_feature_distances"], rtol=1e-5)
    np.testing.assert_array_equal(chunked["reference_pixel_distances"], whole["reference_pixel_distances"])
    sets = reference_sets([photo], info.canvas, 5, 4, vgg19.convention.mean_rgb255, 50.0, seed=0)
    feats = np.asarray(vgg19.layer_output(sets[3], "conv1_2", post=True)).reshape(4, -1)
    d = np.sqrt(((feats[:, None] - feats[None]) ** 2).mean(-1))
    np.testing.assert_allclose(whole["reference_feature_distances"][3], d, rtol=1e-4, atol=1e-4)
