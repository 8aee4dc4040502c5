"""The grating battery and the phase rotation of a unit's own maximum, on toys with known answers
(Gabor simple cells, energy-model complex cells) and on the linear conv1_1 units of real VGG-19."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxvis
from jaxvis.analysis import gratings as G
from jaxvis.analysis.gratings import Battery, gratings, stimuli
from jaxvis.analysis.phase import phase_rotation, phases
from jaxvis.param.phase import half_plane, rotate
from jaxvis.analysis.readout import labels, phase_class
from jaxvis.errors import JaxvisError
from jaxvis.models.geometry import LayerSpec, Op
from tests.optimize.complex_cell import model as complex_cell_model, quadrature_pair

SIZE = 15      # 6 sigma: the Gabor envelopes fit the canvas, so each pair is in quadrature
SIGMA = 2.5
RADIUS = 300.0
# (orientation, period, colour axis) of the two Gabor pairs: orientations on the battery's grid
# (multiples of pi/16), periods between its log-spaced values
CELLS = ((6 * np.pi / 16, 5.5, "luminance"), (12 * np.pi / 16, 4.0, "red-green"))


def gabor(theta: float, period: float, phase: float, colour: str) -> np.ndarray:
    """``[SIZE, SIZE, 3]`` unit-norm Gabor filter (mean removed) along a colour axis."""
    y, x = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    envelope = np.exp(-(x ** 2 + y ** 2) / (2 * SIGMA ** 2))
    g = envelope * np.cos(2 * np.pi * (x * np.cos(theta) + y * np.sin(theta)) / period + phase)
    g = (g - g.mean())[:, :, None] * G.COLOURS[colour]
    return g / np.linalg.norm(g)


# a positive bias larger than any grating's drive of a unit-norm Gabor filter (at most RADIUS)
BIAS = 1000.0


class Cells(jaxvis.Network):
    """``simple``: 4 linear Gabor units (pre-ReLU; even and odd of each pair in ``CELLS``);
    ``energy``: the 2 energy-model complex cells (sum of squares of each pair); ``biased``: the 6
    of them plus :data:`BIAS` (a positive baseline, never rectified); ``pooled``: a global average
    (a layer after global pooling)."""

    name = "cells"

    def __init__(self):
        filters = [gabor(t, p, f, c) for t, p, c in CELLS for f in (0.0, -np.pi / 2)]
        self.filters = nnx.Param(jnp.asarray(np.stack(filters, -1), jnp.float32))

    def specs(self):
        return (LayerSpec("simple", 4, (Op(SIZE, 1, "VALID"),)), LayerSpec("energy", 2, (), "block"),
                LayerSpec("biased", 6, (), "block"), LayerSpec("pooled", 2, (), "global"))

    def forward(self, x, record):
        s = jax.lax.conv_general_dilated(x, self.filters[...], (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                         precision=jax.lax.Precision.HIGHEST)
        record("simple", s, jax.nn.relu(s))
        e = record("energy", s[..., 0::2] ** 2 + s[..., 1::2] ** 2)
        record("biased", jnp.concatenate([s, e], axis=-1) + BIAS)
        record("pooled", e.mean(axis=(1, 2), keepdims=True))


@pytest.fixture(scope="module")
def cells():
    return jaxvis.Model(Cells(), jaxvis.InputConvention(), {"name": "cells"})


def nearest_period(period: float) -> float:
    periods = Battery().axes(SIZE)["periods"]
    return float(periods[np.argmin(np.abs(np.log(periods / period)))])


def test_stimuli_are_gratings_at_the_contrast_budget():
    b = Battery()
    x = stimuli(SIZE, b, RADIUS)  # [O, P, F, K, c, c, 3]
    assert x.shape == (16, 12, 8, 3, SIZE, SIZE, 3)
    norms2 = np.square(x.astype(np.float64)).sum(axis=(-3, -2, -1))
    # averaged over phase the squared norm is exactly r^2, for every orientation, period, colour
    np.testing.assert_allclose(norms2.mean(axis=2), RADIUS ** 2, rtol=1e-5)
    a = b.axes(SIZE)
    assert a["periods"][0] == 2 and np.isclose(a["periods"][-1], 2 * SIZE)
    vertical = x[0, 5, 0, 0]  # orientation 0: bars vertical, constant down each column
    np.testing.assert_allclose(vertical, np.broadcast_to(vertical[:1], vertical.shape), atol=1e-4)
    # each colour axis: the pixels lie along it
    for k, name in enumerate(b.colours):
        pixels = x[3, 4, 1, k].reshape(-1, 3)
        np.testing.assert_allclose(np.abs(pixels @ G.COLOURS[name]), np.linalg.norm(pixels, axis=1), rtol=1e-4)


def test_nyquist_gratings_along_the_axes_are_not_preferred():
    """A 2 px grating along a pixel axis samples to (-1)^x cos(phase): its phase is its contrast."""
    ripple = G.phase_ripple(10, Battery())  # [O, P]
    np.testing.assert_allclose(ripple[[0, 8], 0], 2.0, atol=1e-6)  # full modulation, 0 at some phase
    assert (ripple[:, 1:6] < 0.25).all() and set(map(tuple, np.argwhere(ripple > G.MAX_RIPPLE))) == {(0, 0), (8, 0)}
    axes = Battery().axes(10)
    R = np.zeros((1, 16, 12, 8, 3))
    R[0, 0, 0, :, 0] = np.abs(np.cos(axes["phases"])) * 10  # the unit "prefers" a contrast-modulated grating
    R[0, 3, 4, :, 1] = 5 + np.cos(axes["phases"])
    out = G.summarise(R, axes, ripple <= G.MAX_RIPPLE)
    assert out["grating_best"][0] == 6 and out["grating_preferred_colour"][0] == 1
    assert np.isclose(out["grating_preferred_orientation"][0], axes["orientations"][3])
    np.testing.assert_allclose(out["grating_f1_f0"], 1 / 5, rtol=1e-5)  # F1 = 1, F0 = 5
    # a unit no grating drives above zero has no ratios (NaN), but still a best grating
    silent = G.summarise(R - 20, axes, ripple <= G.MAX_RIPPLE)
    for name in ("grating_f1_f0", "grating_phase_min_max", "grating_orientation_selectivity",
                 "grating_orientation_index"):
        assert np.isnan(silent[name]).all(), name
    assert silent["grating_best"][0] == -14


def test_gabor_simple_cells_are_simple_and_their_preferences_are_recovered(cells):
    g = gratings(cells, "simple", radius=RADIUS, directions=[0, 2])
    for i, (theta, period, colour) in enumerate(CELLS):
        assert np.isclose(g["grating_preferred_orientation"][i], theta, atol=1e-6)
        assert np.isclose(g["grating_preferred_period"][i], nearest_period(period))
        assert Battery().colours[g["grating_preferred_colour"][i]] == colour
    assert (g["grating_f1_f0"] > 1.4).all(), g["grating_f1_f0"]  # a half-wave rectified sinusoid: ~pi/2
    assert (g["grating_phase_min_max"] == 0).all()
    assert (g["grating_orientation_index"] > 0.99).all() and (g["grating_orientation_selectivity"] > 0.5).all()
    # a linear unit's phase response is exactly sinusoidal at the battery's fixed amplitude
    f = Battery().axes(SIZE)["phases"]
    basis = np.stack([np.ones_like(f), np.cos(f), np.sin(f)], 1)
    for curve in g["grating_phase_curve"]:
        fit = basis @ np.linalg.lstsq(basis, curve, rcond=None)[0]
        assert np.abs(fit - curve).max() < 1e-4 * np.abs(curve).max()
    # the best grating explains part of the linear unit: its optimum on the sphere is r ||w|| = r
    fraction = gratings(cells, "simple", radius=RADIUS, directions=[0], maximum=np.array([RADIUS]))
    assert 0.5 < fraction["grating_best_fraction"][0] < 1.0, fraction["grating_best_fraction"]
    assert g["grating_blank"].tolist() == [0.0, 0.0]


def test_energy_complex_cells_are_phase_invariant(cells):
    g = gratings(cells, "energy", radius=RADIUS)
    assert (g["grating_f1_f0"] < 0.1).all(), g["grating_f1_f0"]
    assert (g["grating_phase_min_max"] > 0.98).all(), g["grating_phase_min_max"]
    for i, (theta, period, colour) in enumerate(CELLS):
        assert np.isclose(g["grating_preferred_orientation"][i], theta, atol=1e-6)
        assert np.isclose(g["grating_preferred_period"][i], nearest_period(period))
        assert Battery().colours[g["grating_preferred_colour"][i]] == colour
    assert g["grating_orientation_curve"].shape == (2, 16) and g["grating_period_curve"].shape == (2, 12)
    assert g["grating_responses"].shape == (2, 16, 12, 8, 3)


def test_phase_measures_are_taken_above_a_positive_baseline(cells):
    """A linear unit whose positive bias exceeds its grating drive never rectifies: rectified at
    zero its phase response B + d cos(phase) would have F1/F0 = d / B < 1 (complex). Above the
    baseline (the blank response) it is the simple cell again, and the biased energy cell the
    complex one: every phase measure equals the unbiased unit's."""
    biased = gratings(cells, "biased", radius=RADIUS, directions=[0, 2, 4, 5])
    plain = {**gratings(cells, "simple", radius=RADIUS, directions=[0, 2]),
             "energy": gratings(cells, "energy", radius=RADIUS)}
    np.testing.assert_allclose(biased["grating_blank"], BIAS)
    assert (biased["grating_phase_curve"][:2] > 0).all()  # never rectified at zero
    assert (np.maximum(biased["grating_phase_curve"][:2], 0).min(1) / biased["grating_best"][:2] > 0.5).all()
    for name in ("grating_f1_f0", "grating_phase_min_max", "grating_orientation_selectivity",
                 "grating_orientation_index"):
        np.testing.assert_allclose(biased[name][:2], plain[name], rtol=1e-3, atol=1e-4, err_msg=name)
        np.testing.assert_allclose(biased[name][2:], plain["energy"][name], rtol=1e-3, atol=1e-4, err_msg=name)
    assert (biased["grating_f1_f0"][:2] > 1.4).all() and (biased["grating_f1_f0"][2:] < 0.1).all()
    # the read-out names them as it names the unbiased cells (a linear unit's maximum: r ||w|| + B)
    maximum = np.array([RADIUS + BIAS] * 2 + list(biased["grating_best"][2:] * 1.5))
    codes = phase_class(biased["grating_near_f1_f0"], biased["grating_near_f2_f0"], biased["grating_near_min_max"],
                        biased["grating_best"], biased["grating_blank"], maximum, np.full(4, np.nan))
    assert labels("phase", codes) == ["simple-like"] * 2 + ["complex-like"] * 2


def test_chunked_forward_equals_one_call(cells, monkeypatch):
    best = np.stack([RADIUS * gabor(t, p, 0.0, c) for t, p, c in CELLS])
    monkeypatch.setitem(G.PIXELS_PER_CALL, "cpu", 1 << 30)  # one call
    whole = gratings(cells, "energy", radius=RADIUS)
    turned = phase_rotation(cells, "simple", best, [0, 2])
    monkeypatch.setitem(G.PIXELS_PER_CALL, "cpu", 700 * SIZE * SIZE)  # 7 calls, the last one padded
    chunked = gratings(cells, "energy", radius=RADIUS)
    np.testing.assert_allclose(chunked["grating_responses"], whole["grating_responses"], rtol=1e-5,
                               atol=1e-6 * whole["grating_responses"].max())
    np.testing.assert_array_equal(chunked["grating_blank"], whole["grating_blank"])
    monkeypatch.setitem(G.PIXELS_PER_CALL, "cpu", 5 * SIZE * SIZE)  # 24 images: 5 calls, chunks cut units
    np.testing.assert_allclose(phase_rotation(cells, "simple", best, [0, 2])["rotation_curve"],
                               turned["rotation_curve"], rtol=1e-5, atol=1e-4)


def test_bad_battery_input_is_refused_with_one_clear_line(cells):
    with pytest.raises(JaxvisError, match="'pooled' of cells comes after global pooling.*: simple, energy, biased$"):
        gratings(cells, "pooled", radius=RADIUS)
    with pytest.raises(JaxvisError, match="orientations must be an even number >= 4"):
        Battery(orientations=5)
    with pytest.raises(JaxvisError, match="unknown colour axis 'green'; valid: luminance"):
        Battery(colours=("green",))
    with pytest.raises(JaxvisError, match=r"maximum must have one value per unit \(2\)"):
        gratings(cells, "energy", radius=RADIUS, maximum=np.ones(3))
    with pytest.raises(JaxvisError, match="unit 4 is out of range for a layer of 4 channels"):
        gratings(cells, "simple", radius=RADIUS, directions=[1, 4])
    with pytest.raises(JaxvisError, match="radius must be a positive"):
        gratings(cells, "simple", radius=0.0)
    with pytest.raises(JaxvisError, match=r"images must be \[units=1, 15, 15, 3\]"):
        phase_rotation(cells, "energy", np.zeros((1, 11, 11, 3)), [0])
    with pytest.raises(JaxvisError, match="steps must be an even number"):
        phase_rotation(cells, "energy", np.zeros((1, SIZE, SIZE, 3)), [0], steps=9)


@pytest.mark.parametrize("size", [10, 11])
def test_rotation_keeps_the_power_spectrum_and_turns_gratings(size):
    x = jnp.asarray(np.random.default_rng(size).normal(0, 40, (size, size, 3)), jnp.float32)
    power = np.abs(np.fft.fft2(np.asarray(x), axes=(0, 1)))
    for phi in (0.4, np.pi / 2, np.pi, 5.0):
        y = rotate(x, phi)
        assert np.abs(np.asarray(y) - np.asarray(x)).max() > 1  # it did turn
        np.testing.assert_allclose(np.abs(np.fft.fft2(np.asarray(y), axes=(0, 1))), power,
                                   rtol=1e-4, atol=1e-3 * power.max())
        np.testing.assert_allclose(np.linalg.norm(y), np.linalg.norm(x), rtol=1e-5)
    np.testing.assert_allclose(rotate(x, 2 * np.pi), x, atol=1e-3)
    np.testing.assert_allclose(rotate(rotate(x, 1.0), -1.0), x, atol=1e-3)
    # antisymmetric, s(-k) = -s(k), so rotated images stay real; only the self-conjugate components
    # stay as they are: at any orientation, on the grid axes too, inside a jitted vmap as in use
    thetas = jnp.asarray(np.concatenate([np.arange(8) * np.pi / 8, np.linspace(0, np.pi, 101)]), jnp.float32)
    s = np.asarray(jax.jit(jax.vmap(lambda t: half_plane(size, size, t)))(thetas))
    neg = (-np.arange(size)) % size
    np.testing.assert_array_equal(s[:, neg][:, :, neg], -s)
    assert ((s == 0).sum(axis=(1, 2)) == (1 if size % 2 else 4)).all()
    # a grating on an FFT frequency, k . n > 0: cos(k . p + f) -> cos(k . p + f + phi)
    yy, xx = np.mgrid[:size, :size]
    k = 2 * np.pi * np.array([2, 3]) / size  # (ky, kx)
    wave = lambda f: np.cos(k[0] * yy + k[1] * xx + f)[:, :, None] * np.array([1.0, 0.5, -1.0])
    np.testing.assert_allclose(rotate(jnp.asarray(wave(0.3), jnp.float32), 1.1), wave(1.4), atol=1e-4)


def test_rotation_keeps_a_complex_cell_at_its_maximum_and_reverses_a_linear_one(cells):
    """Energy cells (the engine tests' 11 px toy and the two here) keep > 0.95 of their maximum at
    every phase of their own best image; the linear Gabor units reverse at phi = pi."""
    toy = complex_cell_model()
    best = RADIUS * quadrature_pair()[..., 0]  # on the energy cell's circle of maxima
    r = phase_rotation(toy, "energy", best[None], [0])
    assert r["rotation_curve"].shape == (1, 12) and r["rotation_curve"].min() > 0.95 * RADIUS ** 2
    assert r["rotation_min_max"][0] > 0.95
    even = np.stack([RADIUS * gabor(t, p, 0.0, c) for t, p, c in CELLS])  # the simple units' maxima
    r = phase_rotation(cells, "energy", even, [0, 1])
    assert (r["rotation_min_max"] > 0.95).all(), r["rotation_min_max"]
    np.testing.assert_allclose(r["rotation_orientation"], [t for t, _, _ in CELLS], atol=0.05)
    linear = phase_rotation(cells, "simple", even, [0, 2])
    np.testing.assert_allclose(linear["rotation_curve"][:, 0], RADIUS, rtol=1e-4)
    assert (linear["rotation_at_pi"] < -0.95).all(), linear["rotation_at_pi"]
    # with a positive bias the curve is lifted by it, the measures (above the baseline) are not
    biased = phase_rotation(cells, "biased", even, [0, 2])
    np.testing.assert_allclose(biased["rotation_curve"], linear["rotation_curve"] + BIAS, rtol=1e-5)
    for name in ("rotation_min_max", "rotation_at_pi"):
        np.testing.assert_allclose(biased[name], linear[name], rtol=1e-3, atol=1e-3, err_msg=name)


def test_conv1_1_units_follow_c_plus_d_cos_phi(vgg19, weights_env):
    """conv1_1 is linear in the image (pre-ReLU): for its maximum r w/||w|| the rotated responses
    are c + d cos(phi) within 1% of the maximum, for all 64 units; phi = 0 is the analytic optimum."""
    from jaxvis.data.budget import radius
    from jaxvis.weights import default_photos, weights_root

    r = radius(3, vgg19.convention.mean_rgb255, default_photos(), weights_root() / "budgets.json")
    kernel = vgg19.params()["convs/conv1_1/kernel"][:, :, ::-1]  # BGR filter -> RGB image order
    bias = vgg19.params()["convs/conv1_1/bias"]
    w = np.moveaxis(kernel, -1, 0)  # [64, 3, 3, 3]
    best = r * w / np.linalg.norm(w.reshape(64, -1), axis=1)[:, None, None, None]
    out = phase_rotation(vgg19, "conv1_1", best + np.asarray(vgg19.convention.mean_rgb255), np.arange(64))
    curve, phi = out["rotation_curve"], phases(12)
    maximum = r * np.linalg.norm(w.reshape(64, -1), axis=1) + bias
    np.testing.assert_allclose(curve[:, 0], maximum, rtol=1e-4, atol=1e-3)
    basis = np.stack([np.ones_like(phi), np.cos(phi)], 1)
    fit = basis @ np.linalg.lstsq(basis, curve.T, rcond=None)[0]  # [F, 64]
    assert (np.abs(fit.T - curve).max(1) < 0.01 * np.abs(maximum)).all()
    assert np.median(out["rotation_at_pi"]) < 0.5  # the drive reverses: far below the maximum
