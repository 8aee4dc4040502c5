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
from jaxvis.analysis.phase import half_plane, phase_rotation, rotate
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


class Cells(jaxvis.Network):
    """``simple``: 4 linear Gabor units (pre-ReLU; even and odd of each pair in ``CELLS``);
    ``energy``: the 2 energy-model complex cells (sum of squares of each pair); ``pooled``: a
    global average (a layer after global pooling)."""

    name = "cells"

    def __init__(self):
        filters = [gabor(t, p, f, c) for t, p, c in CELLS for f in (0.0, -np.pi / 2)]
        self.filters = nnx.Param(jnp.asarray(np.stack(filters, -1), jnp.float32))

    def specs(self):
        return (LayerSpec("simple", 4, (Op(SIZE, 1, "VALID"),)), LayerSpec("energy", 2, (), "block"),
                LayerSpec("pooled", 2, (), "global"))

    def forward(self, x, record):
        s = jax.lax.conv_general_dilated(x, self.filters[...], (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                         precision=jax.lax.Precision.HIGHEST)
        record("simple", s, jax.nn.relu(s))
        e = record("energy", s[..., 0::2] ** 2 + s[..., 1::2] ** 2)
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


def test_gabor_simple_cells_are_simple_and_their_preferences_are_recovered(cells):
    g = gratings(cells, "simple", radius=RADIUS, directions=[0, 2])
    for i, (theta, period, colour) in enumerate(CELLS):
        assert np.isclose(g["grating_preferred_orientation"][i], theta, atol=1e-6)
        assert np.isclose(g["grating_preferred_period"][i], nearest_period(period))
        assert g["grating_colours"][g["grating_preferred_colour"][i]] == colour
    assert (g["grating_f1_f0"] > 1.4).all(), g["grating_f1_f0"]  # a half-wave rectified sinusoid: ~pi/2
    assert (g["grating_phase_min_max"] == 0).all()
    assert (g["grating_orientation_index"] > 0.99).all() and (g["grating_orientation_selectivity"] > 0.5).all()
    # a linear unit's phase response is exactly sinusoidal at the battery's fixed amplitude
    f = g["grating_phases"]
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
        assert g["grating_colours"][g["grating_preferred_colour"][i]] == colour
    assert g["grating_orientation_curve"].shape == (2, 16) and g["grating_period_curve"].shape == (2, 12)
    assert g["grating_responses"].shape == (2, 16, 12, 8, 3)
