"""The method's optional terms do what they are for, on real VGG-19 (small layers, few steps):
a Gram term pushes Gram matrices apart, a feature term pushes features apart, a prior lowers its
own penalty; the contrast budget agrees with an independent computation; natural patches are
located correctly at a layer with jump > 1."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import jaxvis
from jaxvis.analysis.natural import calibrate
from jaxvis.io.images import read_image, resize_shorter
from jaxvis.objectives import diversity as D
from jaxvis.objectives.naturalness import PRIORS
from jaxvis.data.budget import radius

pytestmark = [pytest.mark.usefixtures("weights_env"), pytest.mark.real]
RUN = dict(images=3, steps=60, chunk=2, restarts=1)


def off_diagonal_mean(m):
    n = m.shape[-1]
    return (m.sum((-1, -2)) - np.trace(m, axis1=-2, axis2=-1)) / (n * (n - 1))


def features(vgg, images, layer):
    flat = images.reshape(-1, *images.shape[2:])
    f = np.asarray(vgg.layer_output(flat, layer, post=True))
    return f.reshape(*images.shape[:2], *f.shape[1:])


@pytest.mark.parametrize("term", ["gram", "features"])
def test_a_diversity_term_pushes_its_own_measure_apart(vgg19, term):
    """Same random starts (keys depend on seed, layer, unit, N only), lambda 0 against lambda > 0."""
    lam = {"gram": 1000.0, "features": 10.0}[term]
    runs = [jaxvis.sweep(vgg19, "conv1_2", [3, 20], diversity=term, feature_layer="conv1_1", lam=weight,
                         **RUN)["conv1_2"] for weight in (0.0, lam)]
    if term == "gram":
        similarity = [off_diagonal_mean(np.asarray(jax.vmap(D.gram_similarity)(features(vgg19, r["images"], "conv1_1"))))
                      for r in runs]
        assert (similarity[1] < similarity[0] - 0.01).all(), similarity
    else:
        spread = [r["feature_distances"] for r in runs]  # measured by the sweep itself
        recomputed = np.asarray(jax.vmap(D.pairwise_rms)(features(vgg19, runs[1]["images"], "conv1_1")))
        np.testing.assert_allclose(recomputed, spread[1], rtol=1e-3, atol=1e-3)
        assert (off_diagonal_mean(spread[1]) > 2 * off_diagonal_mean(spread[0])).all()


@pytest.mark.parametrize("prior, beta", [("tv", 10.0), ("spectrum", 100.0)])
def test_a_prior_lowers_its_own_penalty(vgg19, prior, beta):
    runs = [jaxvis.sweep(vgg19, "conv1_2", [3, 20], prior=prior, beta=b, **{**RUN, "images": 1,
                         "diversity": "none"})["conv1_2"] for b in (0.0, beta)]
    mean = np.asarray(vgg19.convention.mean_rgb255, np.float32)
    penalty = [[float(PRIORS[prior].penalty(jax.numpy.asarray(x - mean))) for x in r["images"]] for r in runs]
    assert (np.array(penalty[1]) < np.array(penalty[0])).all(), penalty
    # bought with activation, not for free
    assert (runs[1]["activations"] <= runs[0]["activations"] * (1 + 1e-4)).all()


def test_the_contrast_budget_matches_an_exhaustive_count(photos, tmp_path):
    """Half the mean norm of the canvas-sized patches on a 3 px grid of positions (mean colour
    removed), averaged per photo, against the budget's random sample of 2000 patches: a few
    percent apart at most."""
    canvas, mean = 10, (123.68, 116.779, 103.939)
    per_photo = []
    for path in sorted(photos):
        image = read_image(path)
        if min(image.shape[:2]) < 2 * canvas:
            image = resize_shorter(image, 2 * canvas)
        windows = np.lib.stride_tricks.sliding_window_view(image - np.asarray(mean, np.float32),
                                                           (canvas, canvas, 3))[::3, ::3, 0]
        per_photo.append(np.sqrt(np.square(windows).sum((-1, -2, -3))).mean())  # every 3rd position
    expected = 0.5 * float(np.mean(per_photo))
    got = radius(canvas, mean, sorted(photos), tmp_path / "budgets.json")
    assert got == pytest.approx(expected, rel=0.05)
    assert radius(canvas, mean, sorted(photos), tmp_path / "budgets.json") == got  # cached


def test_natural_patches_are_located_at_a_layer_with_jump_two(vgg19, photos):
    info = vgg19.network.layer("conv2_1")
    assert info.jump == 2
    directions = np.eye(info.channels, dtype=np.float32)[[0, 7, 50]]
    found = calibrate(vgg19, info, directions, sorted(photos)[:2], top=3)
    patches = found["natural_top_patches"].reshape(-1, info.canvas, info.canvas, 3)
    acts = np.asarray(vgg19(patches, upto="conv2_1").pre["conv2_1"][:, 0, 0, :]).reshape(3, 3, -1)
    mine = np.einsum("utc,uc->ut", acts, directions)
    np.testing.assert_allclose(mine, found["natural_top_activations"], rtol=1e-4, atol=1e-3)
