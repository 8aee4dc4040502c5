"""The diverse-visualisation engine on known answers: the analytic optimum of a linear unit, the
phase invariance of a model complex cell, chunk independence, and the parameterisation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvis
from jaxvis.errors import JaxvisError, UnknownNameError
from jaxvis.param.image import frequency_gain, whiten_gradient
from jaxvis.run.plan import parse_units
from jaxvis.run.sweep import sweep
from tests.helpers import SETTINGS, assert_same_units, assert_stops_mixed
from tests.optimize.complex_cell import model as complex_cell_model, quadrature_pair


def test_whitening_is_identity_forward_and_filters_the_gradient():
    z = jax.random.normal(jax.random.key(0), (2, 8, 6, 3))
    w = jax.random.normal(jax.random.key(1), z.shape)
    assert jnp.array_equal(whiten_gradient(z), z)
    grad = jax.grad(lambda z: jnp.sum(w * whiten_gradient(z)))(z)
    # numpy reference of g(k) = w(k) / mean(w), w = 1 / max(1, sqrt|k|)
    ky = np.minimum(np.arange(8), 8 - np.arange(8))[:, None]
    kx = np.minimum(np.arange(6), 6 - np.arange(6))[None]
    gain = 1 / np.maximum(1, np.sqrt(np.sqrt(ky ** 2 + kx ** 2)))
    gain /= gain.mean()
    want = np.real(np.fft.ifft2(np.fft.fft2(np.asarray(w), axes=(1, 2)) * gain[:, :, None], axes=(1, 2)))
    np.testing.assert_allclose(grad, want, atol=1e-5)
    np.testing.assert_allclose(frequency_gain(8, 6), gain, rtol=1e-6)
    assert float(frequency_gain(5, 5)[0, 0]) > float(frequency_gain(5, 5)[2, 2])  # low frequencies boosted


def test_linear_unit_reaches_its_analytic_optimum(vgg19, real_root, monkeypatch):
    """conv1_1 is linear in the image: the best image on the sphere is r w/||w||, response r||w|| + b."""
    monkeypatch.setenv("JAXVIS_WEIGHTS", str(real_root))
    units = [0, 7, 33]
    r = sweep(vgg19, "conv1_1", units, images=1, diversity="none", steps=400, restarts=1)["conv1_1"]
    from jaxvis.weights import default_photos
    from jaxvis.data.budget import radius
    budget = radius(3, vgg19.convention.mean_rgb255, default_photos(real_root), real_root / "budgets.json")
    kernel = vgg19.params()["convs/conv1_1/kernel"][:, :, ::-1]  # BGR filter -> RGB image order
    bias = vgg19.params()["convs/conv1_1/bias"]
    for i, u in enumerate(units):
        w = kernel[..., u]
        analytic = budget * np.linalg.norm(w) + bias[u]
        assert abs(r["activations"][i, 0] / analytic - 1) < 0.005
        x = r["images"][i, 0] - np.asarray(vgg19.convention.mean_rgb255)
        assert np.corrcoef(x.ravel(), w.ravel())[0, 1] > 0.99


def test_linear_unit_must_lose_activation_to_be_diverse(vgg19, real_root, monkeypatch):
    monkeypatch.setenv("JAXVIS_WEIGHTS", str(real_root))
    r = sweep(vgg19, "conv1_1", [0], images=4, diversity="pixels", lam=0.1, steps=300, restarts=1)["conv1_1"]
    fractions = r["activations"][0] / r["max_activation"][0]
    # every diverse image is off the unique optimum, so each pays in activation
    assert fractions.max() < 1.0 and fractions.min() > 0.9, fractions
    d = r["pixel_distances"][0][np.triu_indices(4, 1)]
    assert d.min() > 0.5 and d.max() < 1.5 * d.min(), d  # the min-distance term equalises the pairs


def phases(images: np.ndarray) -> np.ndarray:
    pair = quadrature_pair()
    return np.array([np.arctan2((x * pair[..., 1]).sum(), (x * pair[..., 0]).sum()) for x in images])


def test_complex_cell_yields_phase_shifted_gratings():
    """The energy model responds equally to every phase of its grating: the diverse set should
    spread over phase at no cost in activation. (lambda is relative to the unit's activation scale,
    here r^2 = 9e4; six gratings 60 degrees apart are 2 r sin(30 deg) / sqrt(D) = 15.7 RMS apart.)"""
    cell = complex_cell_model()
    r = sweep(cell, "energy", [0], images=6, diversity="pixels", radius=300.0, lam=10.0, steps=1000, restarts=1)["energy"]
    fractions = r["activations"][0] / r["max_activation"][0]
    assert fractions.min() >= 0.95, fractions
    # independent single-image runs from different seeds, no diversity term
    singles = [sweep(cell, "energy", [0], images=1, diversity="none", radius=300.0, steps=600, seed=s)
               ["energy"]["images"][0, 0] for s in range(6)]
    d_diverse = r["pixel_distances"][0][np.triu_indices(6, 1)]
    d_single = jaxvis.objectives.diversity.pairwise_rms(jnp.stack(singles))[np.triu_indices(6, 1)]
    assert d_diverse.min() > 2 * float(d_single.min()), (d_diverse.min(), d_single.min())
    assert d_diverse.min() > 0.95 * 2 * 300 * np.sin(np.pi / 6) / np.sqrt(11 * 11 * 3)  # near optimal
    # the diverse images are gratings of different phase: sorted phases spread around the circle
    gaps = np.diff(np.sort(np.concatenate([p := phases(r["images"][0]), [p.min() + 2 * np.pi]])))
    assert gaps.min() > 0.5, np.degrees(p)


def test_unit_results_do_not_depend_on_the_chunk(vgg19, reference_sweep, real_root, monkeypatch):
    """A unit alone, in the reference's chunks of 2 and in one chunk of 12 (some units and maxima
    stop early there and are frozen while the others go on) gives the same results."""
    monkeypatch.setenv("JAXVIS_WEIGHTS", str(real_root))
    pairs = reference_sweep[1].layers["conv2_1"]  # units 0-5 in chunks of 2
    alone = sweep(vgg19, "conv2_1", [5], chunk=1, **SETTINGS)["conv2_1"]
    twelve = sweep(vgg19, "conv2_1", range(12), chunk=12, **SETTINGS)["conv2_1"]
    assert_stops_mixed(twelve)
    five = {k: v[5:6] for k, v in pairs.items()}
    first_six = {k: v[:6] for k, v in twelve.items()}
    for got, want in ((five, alone), (first_six, pairs)):
        # batch shapes round differently: floats to the measured layout tolerance, steps to within
        # twice the patience (tests/helpers.py), units exactly
        assert_same_units(got, want, keys=("unit", "steps", "max_steps", "images", "max_image",
                                           "activations", "max_activation"))



def test_stopped_units_leave_the_batch_and_the_results_stay(vgg19, real_root, monkeypatch):
    """Once at most half of a chunk's rows still optimise, the next segments run only those (the
    batch halved while they fit): the same results as the whole batch running to the end, and the
    batch really shrank."""
    from jaxvis.optimize import loop

    monkeypatch.setenv("JAXVIS_WEIGHTS", str(real_root))
    sizes, run = [], loop._segment

    def spy(params, states, directions, *args, **kwargs):
        sizes.append(len(directions))
        return run(params, states, directions, *args, **kwargs)

    monkeypatch.setattr(loop, "_segment", spy)
    shrunk = sweep(vgg19, "conv2_1", range(8), chunk=8, segment=10, **SETTINGS)["conv2_1"]
    assert_stops_mixed(shrunk)
    rows_shrunk, sizes[:] = list(sizes), []
    monkeypatch.setitem(loop.SHRINK, "cpu", False)
    whole = sweep(vgg19, "conv2_1", range(8), chunk=8, segment=10, **SETTINGS)["conv2_1"]
    assert set(sizes) == {16, 8}, sizes  # 8 units x 2 restarts for the maximum, 8 for the diverse set
    assert sum(rows_shrunk) < sum(sizes), (rows_shrunk, sizes)  # fewer rows x segments computed
    assert_same_units(shrunk, whole, keys=("unit", "steps", "max_steps", "images", "max_image",
                                           "activations", "max_activation", "loss_curve"))

def test_bad_input_is_refused_with_one_clear_error(vgg19, real_root, monkeypatch):
    monkeypatch.setenv("JAXVIS_WEIGHTS", str(real_root))
    with pytest.raises(UnknownNameError, match="conv9_9.*valid: conv1_1"):
        sweep(vgg19, "conv9_9", steps=1)
    with pytest.raises(JaxvisError, match="unit 64 is out of range for conv1_1, which has 64 channels"):
        sweep(vgg19, "conv1_1", "60-64", steps=1)
    with pytest.raises(JaxvisError, match="feature layer 'conv3_2' is not below the target 'conv3_1'"):
        sweep(vgg19, "conv3_1", [0], feature_layer="conv3_2", steps=1)
    with pytest.raises(JaxvisError, match="needs at least 2 images"):
        sweep(vgg19, "conv2_1", [0], images=1, diversity="pixels", steps=1)
    with pytest.raises(JaxvisError, match="bad units"):
        sweep(vgg19, "conv2_1", "1-x", steps=1)
    for spec in ("0-999999999", "999999999-0", "3,70"):  # refused before a range is expanded
        with pytest.raises(JaxvisError, match="out of range for conv1_1, which has 64 channels"):
            parse_units(spec, 64, "conv1_1")
    with pytest.raises(JaxvisError, match="unknown sweep setting.*lamda"):
        sweep(vgg19, "conv2_1", [0], lamda=1)


def test_directions_in_channel_space(vgg19, real_root, monkeypatch):
    monkeypatch.setenv("JAXVIS_WEIGHTS", str(real_root))
    settings = dict(images=2, steps=30, diversity="pixels", restarts=1)  # one maximum program to compile
    channel = sweep(vgg19, "conv2_1", [3], **settings)["conv2_1"]
    onehot = np.zeros((2, 128), np.float32)
    onehot[0, 3], onehot[1, [3, 9]] = 2.0, 1.0  # any length: directions are normalised
    by_direction = sweep(vgg19, "conv2_1", directions=onehot, **settings)["conv2_1"]
    assert by_direction["unit"].tolist() == [0, 1]
    # the same start and objective only if the unit index matches: compare the objective instead
    acts = vgg19(by_direction["images"][1], upto="conv2_1").pre["conv2_1"][:, 0, 0]
    np.testing.assert_allclose(by_direction["activations"][1], acts @ (onehot[1] / np.sqrt(2)), rtol=1e-4)
    assert channel["max_activation"][0] > 0
    with pytest.raises(JaxvisError, match="directions must be"):
        sweep(vgg19, "conv2_1", directions=np.ones((1, 64)), steps=1)


@pytest.mark.parametrize("name,layer", [("resnet50", "layer1.0.conv2"), ("efficientnet-lite0", "blocks.1.depthwise")])
def test_padded_networks_use_the_centre_unit(name, layer, real_root, monkeypatch):
    """ResNet-50 (random weights) and EfficientNet-Lite0 sweep on their centre-unit canvases."""
    monkeypatch.setenv("JAXVIS_WEIGHTS", str(real_root))
    if name == "resnet50":
        net = jaxvis.build(jaxvis.ModelConfig.make(name), abstract=False)
        model = jaxvis.Model(net, jaxvis.InputConvention(), {"name": name})
    else:
        model = jaxvis.load(name, root=real_root)
    info = model.network.layer(layer)
    r = sweep(model, layer, [0, 1], images=2, steps=20, restarts=1)[layer]
    assert r["images"].shape == (2, 2, info.canvas, info.canvas, 3)
    # the reported activation is the centre unit of the network's own output on that canvas
    acts = model(r["images"][0], upto=layer).pre[layer]
    assert acts.shape[1] == info.out
    np.testing.assert_allclose(acts[:, info.centre, info.centre, 0], r["activations"][0], rtol=1e-4, atol=1e-4)


def test_closest_pair_distance_equals_the_full_minimum_in_value_and_gradient():
    """The loss's ``min_pair_rms`` (closest pair picked without a gradient) against the reference
    ``min_pair(pairwise_rms(f))`` differentiated through all N(N-1)/2 pairs."""
    div = jaxvis.objectives.diversity
    for seed, shape in enumerate([(6, 6, 6, 128), (4, 10, 10, 3), (2, 5)]):
        f = jax.random.normal(jax.random.key(seed), shape) * (1 + seed)
        fast, g_fast = jax.value_and_grad(div.min_pair_rms)(f)
        ref, g_ref = jax.value_and_grad(lambda f: div.min_pair(div.pairwise_rms(f)))(f)
        np.testing.assert_allclose(fast, ref, rtol=1e-6)
        np.testing.assert_allclose(g_fast, g_ref, atol=1e-6 * float(jnp.abs(g_ref).max()))
        assert int((jnp.abs(g_fast).reshape(shape[0], -1).max(axis=1) > 0).sum()) == 2  # one pair moves
    # the closest pair is found even when it is far from the first: only images 3 and 5 are close
    f = jax.random.normal(jax.random.key(9), (6, 50)) * 10
    f = f.at[5].set(f[3] + 0.01)
    g = jax.grad(div.min_pair_rms)(f)
    assert set(np.flatnonzero(np.abs(np.asarray(g)).max(axis=1))) == {3, 5}


def test_reduced_precision_stays_within_one_percent_of_float32(vgg19, real_root, monkeypatch):
    """tf32 / bf16 convolutions while optimising (emulated on CPU, the same rounding as tensor
    cores): the diverse images' mean activation and the single maximum, both measured in float32,
    stay within 1% of a float32 run (measured on 8 conv2_1 units of normalised VGG-19, 400 steps:
    at most 0.09% for tf32 and 0.28% for bf16); the images themselves do differ."""
    monkeypatch.setenv("JAXVIS_WEIGHTS", str(real_root))
    runs = {p: sweep(vgg19, "conv2_1", [3, 40, 77], steps=300, precision=p, restarts=1)["conv2_1"]
            for p in ("float32", "tf32", "bf16")}
    ref = runs["float32"]
    for name in ("tf32", "bf16"):
        r = runs[name]
        np.testing.assert_allclose(r["activations"].mean(1), ref["activations"].mean(1), rtol=0.01)
        np.testing.assert_allclose(r["max_activation"], ref["max_activation"], rtol=0.01)
        assert np.abs(r["images"] - ref["images"]).max() > 1e-3  # the rounding took effect
    with pytest.raises(JaxvisError, match="unknown precision 'fp16'"):
        sweep(vgg19, "conv2_1", [0], steps=10, precision="fp16")


def test_useful_flops_falls_back_to_the_compiled_count(vgg19, real_root, monkeypatch):
    """jax 0.11 on CUDA answers None for a lowered program's cost analysis (seen on the H200):
    the count then comes from the compiled program. XLA's fusions change the elementwise part of
    the count, not the convolutions that make up nearly all of it."""
    from jaxvis.optimize.config import Objective, Optimizer
    from jaxvis.optimize.loop import useful_flops
    from jaxvis.run.plan import configure, plan

    monkeypatch.setenv("JAXVIS_WEIGHTS", str(real_root))
    problem = plan(vgg19, configure(vgg19, "conv2_1", "0", objective=Objective(images=2),
                                    optimizer=Optimizer(steps=2)))[0].diverse
    direct = useful_flops(vgg19.network, problem)
    monkeypatch.setattr(jax.stages.Lowered, "cost_analysis", lambda self: None)
    assert useful_flops(vgg19.network, problem) == pytest.approx(direct, rel=0.05)  # 2.4% at conv2_1
    assert direct > 0
