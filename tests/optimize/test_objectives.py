"""Open objectives: the unit's response is a name in a table (``centre``, the paper's; ``channel``,
the spatial mean on a larger canvas; or a user's own pure function), optimised by the same
engine. conv1_1 of the real VGG-19 is affine in the image, so the best image on the contrast
sphere for any response linear in its output is known: ``r * ||g|| + b`` with ``g`` the
response's weights on the canvas."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jaxvis.run.analyze import analyze
from jaxvis.errors import JaxvisError
from jaxvis.store.results import read_results
from jaxvis.models.geometry import at_canvas
from jaxvis.models.registry import ModelConfig, build
from jaxvis.objectives import response as responses
from jaxvis.objectives.response import register_response
from jaxvis.optimize.config import Objective, Optimizer
from jaxvis.data.budget import radius as budget_radius
from jaxvis.run.plan import configure, plan
from jaxvis.run.sweep import sweep
from jaxvis.weights import default_photos

CANVAS = 8  # conv1_1 (rf 3) on 8 px: a 6 x 6 output


def top_left(pre, direction):
    """``[N, h, w, C]``, ``[C]`` -> ``[N]``: the direction at the top-left output position."""
    return pre[:, 0, 0, :] @ direction


@pytest.fixture
def registered():
    register_response("top_left", top_left, "the direction at the top-left output position")
    yield
    del responses.RESPONSES["top_left"]


def _weights(vgg19, unit, positions):
    """The image-space weights ``[CANVAS, CANVAS, 3]`` (RGB) of the mean of conv1_1 unit ``unit``
    over ``positions`` (top-left corners of its 3 x 3 window), and its bias."""
    kernel = np.asarray(vgg19.params()["convs/conv1_1/kernel"])[:, :, ::-1, unit]  # BGR -> RGB
    g = np.zeros((CANVAS, CANVAS, 3))
    for y, x in positions:
        g[y:y + 3, x:x + 3] += kernel / len(positions)
    return g, float(vgg19.params()["convs/conv1_1/bias"][unit])


@pytest.mark.parametrize("name", ["channel", "top_left"])
def test_a_response_linear_in_the_output_reaches_its_analytic_optimum(vgg19, weights_env, registered, name):
    units = [0, 7]  # one chunk, the response vmapped over both
    r = sweep(vgg19, "conv1_1", units, images=1, diversity="none", steps=300, restarts=1,
              response=name, canvas=CANVAS)["conv1_1"]
    budget = budget_radius(CANVAS, vgg19.convention.mean_rgb255, default_photos(), None)
    positions = [(y, x) for y in range(6) for x in range(6)] if name == "channel" else [(0, 0)]
    pre = np.asarray(vgg19(r["images"][:, 0], upto="conv1_1").pre["conv1_1"])  # [U, 6, 6, 64]
    for i, u in enumerate(units):
        g, b = _weights(vgg19, u, positions)
        analytic = budget * np.linalg.norm(g) + b
        assert abs(r["activations"][i, 0] / analytic - 1) < 0.005, (name, u, r["activations"][i, 0], analytic)
        measured = pre[i].mean((0, 1))[u] if name == "channel" else pre[i, 0, 0, u]
        np.testing.assert_allclose(r["activations"][i, 0], measured, rtol=1e-4)  # what was reported
        x = r["images"][i, 0] - np.asarray(vgg19.convention.mean_rgb255)
        assert np.corrcoef(x.ravel(), g.ravel())[0, 1] > 0.99  # the image is r g / ||g||


def test_the_canvas_and_its_budget_are_the_objectives(vgg19, weights_env):
    objective = Objective(images=2, response="channel", canvas=CANVAS)
    lp = plan(vgg19, configure(vgg19, "conv1_1", [0], objective=objective))[0]
    mean = vgg19.convention.mean_rgb255
    assert (lp.info.canvas, lp.info.out, lp.diverse.canvas, lp.maximum.canvas) == (CANVAS, 6, CANVAS, CANVAS)
    assert lp.radius == budget_radius(CANVAS, mean, default_photos(), None)
    assert lp.radius > 2 * budget_radius(3, mean, default_photos(), None)  # the norm grows with the canvas
    assert lp.meta()["canvas"] == CANVAS and lp.maximum.objective.response == "channel"
    # the default objective is the layer's own canvas, exactly as before
    assert plan(vgg19, configure(vgg19, "conv1_1", [0]))[0].info == vgg19.network.layer("conv1_1")


def test_centred_canvases_follow_the_catalogue():
    for model in ("vgg19", "efficientnet-lite0"):
        net = build(ModelConfig.make(model))
        for row in net.layers():
            assert at_canvas(net.specs(), row.name, row.canvas) == (row.out, True), (model, row)
    vgg = build(ModelConfig.make("vgg19"))
    assert at_canvas(vgg.specs(), "conv2_1", 14) == (3, True)  # rf 10, jump 2: 10 + 2 * jump
    assert at_canvas(vgg.specs(), "conv2_1", 12)[1] is False


def test_wrong_objectives_are_one_line(vgg19, weights_env):
    with pytest.raises(JaxvisError, match="unknown response 'top_right'; valid: centre, channel .*"
                                          "register_response\\('top_right'"):
        Objective(response="top_right")
    with pytest.raises(JaxvisError, match="Objective.canvas must be a positive"):
        Objective(canvas=0)
    with pytest.raises(JaxvisError, match="Objective.canvas 8 is smaller than conv2_1's canvas 10"):
        plan(vgg19, configure(vgg19, "conv2_1", [0], canvas=8))
    with pytest.raises(JaxvisError, match="no unit of conv2_1 is centred on a 12 px canvas.*: 10, 14 \\(or Objective.response channel\\)"):
        plan(vgg19, configure(vgg19, "conv2_1", [0], canvas=12))
    register_response("flat", lambda pre, d: pre @ d, "not one number per image")
    try:
        with pytest.raises(JaxvisError, match="response 'flat' returned shape \\(1, 1, 1\\) for 1 images"):
            sweep(vgg19, "conv1_1", [0], images=1, diversity="none", steps=1, restarts=1, response="flat")
    finally:
        del responses.RESPONSES["flat"]


def test_a_file_made_with_an_own_response_says_what_to_register(vgg19, weights_env, registered, tmp_path):
    out = tmp_path / "own.h5"
    sweep(vgg19, "conv1_1", [3], images=1, diversity="none", steps=5, restarts=1, response="top_left",
          canvas=CANVAS, out=out)
    assert read_results(out).config["objective"]["response"] == "top_left"  # recorded by name
    with pytest.raises(JaxvisError, match="response 'top_left' on a 8 px canvas; analysis measures"):
        analyze(out, model=vgg19, shift=False, battery=None)
    del responses.RESPONSES["top_left"]
    try:
        with pytest.raises(JaxvisError, match="unknown response 'top_left'.*register_response\\('top_left'"):
            read_results(out).sweep_config
        with pytest.raises(JaxvisError, match="unknown response 'top_left'"):  # nor resumed
            sweep(vgg19, "conv1_1", [3], images=1, diversity="none", steps=5, restarts=1,
                  response="top_left", canvas=CANVAS, out=out)
    finally:
        register_response("top_left", top_left, "the direction at the top-left output position")


def test_the_centre_row_is_the_networks_centre_unit(vgg19):
    x = np.random.default_rng(0).normal(128, 40, (2, 14, 14, 3)).astype(np.float32)
    direction = jnp.asarray(np.random.default_rng(1).normal(size=128), jnp.float32)
    pre = vgg19.network(vgg19.convention(jnp.asarray(x)), upto="conv2_1").pre["conv2_1"]  # [2, 3, 3, 128]
    fast, _ = vgg19.network.unit_response(vgg19.convention(jnp.asarray(x)), "conv2_1", 1, direction)
    np.testing.assert_allclose(responses.centre_response(pre, direction), fast, rtol=1e-5)
    np.testing.assert_allclose(responses.channel_mean(pre, direction), np.mean(pre @ direction, (1, 2)), rtol=1e-6)


@pytest.mark.parametrize("settings, match", [
    (dict(patience=-1), "patience must be 0 or more"),  # stopped every unit after one step, "converged"
    (dict(learning_rate=float("nan")), "learning_rate must be a finite number above 0"),
    (dict(ema=1.0), r"ema must lie in \[0, 1\)"),
    (dict(segment=0), "segment must be positive"),
])
def test_optimizer_settings_out_of_range_are_refused_by_the_library(settings, match):
    with pytest.raises(JaxvisError, match=match):
        Optimizer(**settings)


@pytest.mark.parametrize("settings, match", [
    (dict(lam=-1.0), "lam must be a finite number 0 or more"),
    (dict(lam=float("nan")), "lam must be a finite number"),
    (dict(beta=-2.0), "beta must be a finite number 0 or more"),
])
def test_objective_weights_out_of_range_are_refused_by_the_library(settings, match):
    with pytest.raises(JaxvisError, match=match):
        Objective(**settings)
