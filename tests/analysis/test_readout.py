"""The read-out (jaxvis.analysis.readout): toys with known classes (an energy complex cell, a
Gabor + ReLU simple cell, a unit no grating drives), every threshold of the table moved to show it
is the one used, missing measures giving no class, and the profiles of a results file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxvis
from jaxvis.analysis import metrics as metric_table
from jaxvis.analysis import readout as rules
from jaxvis.analysis.gratings import gratings
from jaxvis.analysis.phase import phase_rotation
from jaxvis.report.summary import layer_profiles, layer_scalars
from jaxvis.errors import JaxvisError
from jaxvis.models.geometry import LayerSpec, Op
from jaxvis.optimize.config import Objective, Optimizer
from jaxvis.optimize.keys import unit_key
from jaxvis.optimize.loop import optimize
from jaxvis.optimize.step import Problem
from tests.helpers import (FLOOR_FRACTION_MIN, FLOOR_VS_LINEAR, FLOORS, GRATING_F1_F0, H, N, RADIUS as
                           FAKE_RADIUS, U, make_results)
from tests.optimize.complex_cell import SIZE, quadrature_pair

RADIUS = 300.0
BIAS = 0.8 * RADIUS  # above the best grating's drive of the Gabor (0.77 r), below its maximum (r)
DOUBLING = 0.1 * RADIUS ** 2   # the squared unit's offset: its maximum is r^2 - DOUBLING
HIDDEN = 0.75 * RADIUS ** 2    # above the energy cell's best grating (~0.6 r^2), below its maximum r^2


class Toys(jaxvis.Network):
    """Units on the 11 px canvas of the engine tests' complex cell, each with its maximum on the
    sphere |x| = r known (the quadrature pair e, o is orthonormal; e', o' is the same pair turned by
    90 degrees):

    0. Gabor + ReLU (the even filter ``e``): a simple cell, maximum ``r``;
    1. energy model ``(e.x)^2 + (o.x)^2``: a complex cell, maximum ``r^2``;
    2. ``e.x - 0.8 r``: maximum ``0.2 r`` (at ``x = r e``), but no grating at the contrast budget
       gets it above zero (the best reaches ``0.77 r``);
    3. ``e.x``, linear (unit 0 before its ReLU, whose zero gradient would strand a floor set's
       images): maximum ``r``;
    4. ``e.x + 0.8 r``, affine with a positive baseline ``0.8 r`` (its response to the mean
       colour): maximum ``1.8 r``;
    5. ``(e.x)^2 - 0.1 r^2``, frequency doubling: its grating response is ``d^2 cos^2(phase) - c``,
       all second harmonic, and falls to its baseline twice per cycle; maximum ``0.9 r^2``;
    6. ``(e.x)^2 + (o.x)^2 - 0.75 r^2``, an energy cell no grating drives above zero (the best
       reaches ~0.6 r^2), whose own best image keeps ``0.25 r^2`` at every phase rotation;
    7. ``relu(e.x) + tie ((e'.x)^2 + (o'.x)^2)``, a simple and a complex cell at right angles,
       ``tie`` setting their best gratings' peaks equal: a near-tie of a simple and a complex
       grating; its maximum is at most ``r + tie r^2``."""

    name = "toys"

    def __init__(self, tie: float = 0.0):
        pair = quadrature_pair()
        self.filters = nnx.Param(jnp.asarray(np.concatenate([pair, np.swapaxes(pair, 0, 1)], -1)))
        self.tie = tie

    def specs(self):
        return (LayerSpec("units", 8, (Op(SIZE, 1, "VALID"),)),)

    def forward(self, x, record):
        s = jax.lax.conv_general_dilated(x, self.filters[...], (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                         precision=jax.lax.Precision.HIGHEST)
        even = s[..., :1]
        energy = jnp.sum(jnp.square(s[..., :2]), -1, keepdims=True)
        turned = jnp.sum(jnp.square(s[..., 2:]), -1, keepdims=True)
        record("units", jnp.concatenate([jax.nn.relu(even), energy, even - BIAS, even, even + BIAS,
                                         jnp.square(even) - DOUBLING, energy - HIDDEN,
                                         jax.nn.relu(even) + self.tie * turned], -1))


MAXIMA = np.array([RADIUS, RADIUS ** 2, RADIUS - BIAS, RADIUS, RADIUS + BIAS, RADIUS ** 2 - DOUBLING,
                   RADIUS ** 2 - HIDDEN])
BLANKS = np.array([0.0, 0.0, -BIAS, 0.0, BIAS, -DOUBLING, -HIDDEN])  # the responses to the mean colour
TOY_CLASSES = ["simple-like", "complex-like", "grating-unresponsive", "simple-like", "simple-like",
               "frequency-doubling", "own-image-invariant", "ambiguous"]


@pytest.fixture(scope="module")
def toy_values():
    """The grating battery and the phase rotation of each toy's best image (``r e``, a maximum of
    units 0-6), the tie of unit 7 set from units 0 and 1's best gratings."""
    first = gratings(jaxvis.Model(Toys(), jaxvis.InputConvention(), {"name": "toys"}), "units", radius=RADIUS,
                     directions=[0, 1])
    tie = float(first["grating_best"][0] / first["grating_best"][1])
    model = jaxvis.Model(Toys(tie), jaxvis.InputConvention(), {"name": "toys"})
    maxima = np.append(MAXIMA, RADIUS + tie * RADIUS ** 2)
    best = np.repeat(RADIUS * quadrature_pair()[None, ..., 0], 8, axis=0)
    return {**gratings(model, "units", radius=RADIUS, directions=np.arange(8), maximum=maxima),
            **phase_rotation(model, "units", best, np.arange(8)), "max_activation": maxima}


def test_toys_have_their_known_phase_classes(toy_values):
    g = toy_values
    assert g["grating_best"][2] < 0 < g["grating_best"][0]  # the premise of unit 2
    assert g["grating_best"][6] < 0 < g["rotation_curve"][6].min()  # and of unit 6
    values = metric_table.evaluate(g, names=["phase_class", "phase_agreement", "phase_rotation_agreement"])
    codes = values["phase_class"]  # through the metrics table
    assert rules.labels("phase", codes) == TOY_CLASSES, (g["grating_near_f1_f0"], g["grating_near_min_max"])
    np.testing.assert_array_equal(codes, rules.classify(g)["phase"])
    # the squared unit: F1/F0 0 (it was complex-like by F1/F0 alone), all second harmonic, min/max 0
    assert g["grating_f1_f0"][5] < 0.01 and g["grating_phase_min_max"][5] == 0
    assert (g["grating_near_f2_f0"][5][np.isfinite(g["grating_near_f2_f0"][5])] > 0.9).all()
    # the near-tie: both cells' gratings are within 5% of the peak, and they disagree
    assert 0 < values["phase_agreement"][7] < 1 and (values["phase_agreement"][[0, 1, 3, 4, 5]] == 1).all()
    # the own-image rotation agrees with each firm class: the simple units' maxima reverse, the
    # energy cell's keeps, the squared unit's (r^2 cos^2 phi - c) falls below its baseline
    np.testing.assert_array_equal(values["phase_rotation_agreement"][[0, 1, 3, 4, 5]], 1.0)
    assert np.isnan(values["phase_rotation_agreement"][[2, 6, 7]]).all()  # no firm grating class
    p = rules.profile(g, layer="units")
    assert p.units == 8 and p.disagree == 0.0
    assert p.fractions["phase"] == {name: TOY_CLASSES.count(name) / 8 for name in rules.AXES["phase"]} | {"unknown": 0.0}
    assert p.fractions["shift"]["unknown"] == 1.0 and p.fractions["diversity"]["unknown"] == 1.0
    # medians over the units with a value: units 2 and 6 have no F1/F0 (no grating drives them above 0)
    assert p.counts["f1_f0"] == 6
    assert np.isnan(p.medians["diversity"]) and p.alpha is None


def test_a_file_without_the_new_measures_reads_unknown():
    """A file analysed before the near-peak gratings and the shift test's linear reference existed
    has no phase or shift class (never the old rule's, never a crash)."""
    old = {"grating_f1_f0": np.array([0.5]), "grating_best": np.array([5.0]), "grating_blank": np.array([0.0]),
           "max_activation": np.array([10.0]), "rotation_min_max": np.array([0.5]), "shift_index": np.array([0.95])}
    classes = rules.classify(old)
    assert rules.labels("phase", classes["phase"]) == ["unknown"] and rules.labels("shift", classes["shift"]) == ["unknown"]
    assert "phase_class" not in metric_table.evaluate(old) and "shift_class" not in metric_table.evaluate(old)
    assert rules.profile(old).fractions["phase"]["unknown"] == 1.0


def test_floor_sets_of_the_toys_are_diverse_for_the_energy_cell_and_tight_for_the_affine_ones():
    """alpha = 0.9, N = 6, optimised from the units' analytic maxima: the energy cell's set spans
    its circle of maxima, wider than an affine unit's can be (diverse); the linear Gabor's and the
    positively biased one's stay on their caps, at the bound of an affine unit with their maximum
    and baseline (tight). Against the bias-free bound the biased unit's cap, ``t = (0.9 * 1.8 r -
    0.8 r) / r = 0.82`` instead of 0.9, would read 1.3 times wider: "diverse", wrongly."""
    model = jaxvis.Model(Toys(), jaxvis.InputConvention(), {"name": "toys"})
    info = model.network.layer("units")
    n, alpha, units = 6, 0.9, [1, 3, 4]
    problem = Problem(target="units", centre=info.centre, canvas=info.canvas, feature_layer=None,
                      objective=Objective(images=n, diversity="pixels", floor=alpha),
                      optimizer=Optimizer(steps=300, segment=100), convention=model.convention,
                      mean_rgb=model.convention.mean_rgb255)
    best = RADIUS * np.repeat(quadrature_pair()[None, ..., 0], 3, axis=0)  # r e: a maximum of each unit
    out = optimize(model.network, problem, jnp.stack([unit_key(0, "units", u, n) for u in units]),
                   np.eye(8, dtype=np.float32)[units], RADIUS, maxima=MAXIMA[units].astype(np.float32), starts=best)
    floor_sets = {"floor_activations": out["activations"][:, None],
                  "floor_pixel_distances": out["pixel_distances"][:, None],
                  "max_activation": MAXIMA[units], "floors": np.array([alpha]),
                  "floor_agreement": np.ones((len(units), 1))}  # one start here: taken as settled
    shape = (len(units), 1, n, SIZE, SIZE, 3)
    values = metric_table.evaluate({**floor_sets, "floor_linear_bound": rules.floor_bound(RADIUS, shape, [alpha], MAXIMA[units],
                                                                           BLANKS[units])})
    assert rules.labels("diversity", values["diversity_class"][:, 0]) == ["diverse", "tight", "tight"], (
        values["floor_fraction_min"], values["floor_pixel_vs_linear"])
    assert (values["floor_fraction_min"] >= alpha - 0.005).all()
    np.testing.assert_allclose(values["floor_pixel_vs_linear"][1:, 0], 1.0, atol=0.03)  # at the cap's optimum
    bias_free = metric_table.evaluate({**floor_sets, "floor_linear_bound": rules.floor_bound(RADIUS, shape, [alpha])})
    assert rules.labels("diversity", bias_free["diversity_class"][:, 0]) == ["diverse", "tight", "diverse"]


# Per threshold: measures that sit between the table's value and a moved one, the class with the
# table's value and with the moved one. Each axis's measures, one unit.
def _phase(f1_f0=0.8, drive=0.5, f2_f0=0.0, min_max=0.5, rotation=0.5):
    """One unit's phase measures; ``f1_f0`` etc. a number (one near-peak grating) or a list (several,
    best first)."""
    near = lambda v: np.atleast_1d(np.asarray(v, np.float64))[None, :]  # noqa: E731
    f1 = near(f1_f0)
    return {"grating_near_f1_f0": f1, "grating_near_f2_f0": np.broadcast_to(near(f2_f0), f1.shape),
            "grating_near_min_max": np.broadcast_to(near(min_max), f1.shape), "grating_best": [drive * 10.0],
            "grating_blank": [-1.0], "max_activation": [10.0], "rotation_min_max": [rotation]}


def _shift(index=0.95, reference=0.5):
    return {"shift_index": [index], "shift_linear_reference": [reference]}


def _diversity(ratio=1.2, fraction=0.9, agreement=1.0):
    return {"floor_pixel_vs_linear": [[ratio]], "floor_fraction_min": [[fraction]], "floor_agreement": [[agreement]]}


MOVES = {  # threshold: (values, axis, class with the table, moved value, class then)
    "grating_drive": (_phase(drive=0.04, rotation=-0.5), "phase", "grating-unresponsive", 0.03, "complex-like"),
    "f1_f0": (_phase(f1_f0=0.8), "phase", "complex-like", 0.7, "simple-like"),
    "doubling_min_max": (_phase(f1_f0=0.3, f2_f0=0.9, min_max=0.08), "phase", "frequency-doubling", 0.05,
                         "complex-like"),
    "phase_consensus": (_phase(f1_f0=[0.8, 0.8, 0.8, 1.2]), "phase", "ambiguous", 0.7, "complex-like"),
    "rotation_keeps": (_phase(drive=0.04, rotation=0.3), "phase", "own-image-invariant", 0.5,
                       "grating-unresponsive"),
    "beyond_linear": (_diversity(ratio=1.2), "diversity", "diverse", 1.3, "tight"),
    "floor_slack": (_diversity(fraction=0.8951), "diversity", "diverse", 0.004, "unknown"),
    "floor_agreement": (_diversity(agreement=0.96), "diversity", "diverse", 0.97, "unsettled"),
    "shift_invariant": (_shift(index=0.92), "shift", "shift-invariant", 0.95, "shift-variant"),
    "shift_beyond_linear": (_shift(index=0.95, reference=0.8), "shift", "shift-invariant", 0.2, "shift-variant"),
}


def test_every_threshold_of_the_table_has_a_move():
    assert set(MOVES) == set(rules.THRESHOLDS)
    for t in rules.THRESHOLDS.values():
        assert t.rule and t.source and np.isfinite(t.value)


@pytest.mark.parametrize("name", sorted(MOVES))
def test_moving_a_threshold_changes_the_class(name, monkeypatch):
    values, axis, before, moved, after = MOVES[name]
    values = {k: np.asarray(v, np.float64) for k, v in values.items()}

    def label():
        return rules.labels(axis, rules.classify(values, [0.9])[axis])[0]

    assert label() == before
    monkeypatch.setitem(rules.THRESHOLDS, name, dataclasses.replace(rules.THRESHOLDS[name], value=moved))
    assert label() == after  # the table's row is what the rule reads
    monkeypatch.undo()
    assert label() == before
    assert rules.labels(axis, rules.classify(values, [0.9], overrides={name: moved})[axis])[0] == after


def test_missing_measures_give_no_class():
    nan = np.nan
    # phase: no battery at all, a NaN in any input, a maximum not above the baseline
    assert np.isnan(rules.classify({"shift_index": np.array([0.5])})["phase"]).all()
    for bad in ({"grating_best": [nan]}, {"grating_blank": [nan]}, {"max_activation": [nan]},
                {"max_activation": [-1.0]}, {"grating_near_f1_f0": [[nan]]}):
        values = {**_phase(), **bad}
        assert rules.labels("phase", rules.classify(values)["phase"]) == ["unknown"], bad
    for name in rules.PHASE_INPUTS:  # any measure missing: no class
        assert rules.labels("phase", rules.classify({k: v for k, v in _phase().items() if k != name})["phase"]) == ["unknown"]
    # below the drive threshold F1/F0 is not needed (it is NaN when no grating drives the unit), and
    # without a rotation (NaN) the unit stays grating-unresponsive
    for rotation in (-0.5, nan):
        assert rules.labels("phase", rules.classify(_phase(f1_f0=nan, drive=-0.2, rotation=rotation))["phase"]) == [
            "grating-unresponsive"]
    # NaN-padded near-peak gratings do not count; the best one decides the class
    assert rules.phase_agreement([[0.5, 0.6, np.nan]], [[0.0] * 3], [[0.5] * 3]).tolist() == [1.0]
    assert rules.phase_agreement([[1.5, 0.6, 0.7]], [[0.0] * 3], [[0.5] * 3]).tolist() == [pytest.approx(1 / 3)]
    # diversity: no floor set at alpha, no floors recorded, no ratio (no analysis), a NaN fraction
    values = {k: np.asarray(v) for k, v in _diversity().items()}
    assert rules.labels("diversity", rules.classify(values, [0.9])["diversity"]) == ["diverse"]
    for floors, alpha in (([0.8], rules.PROFILE_ALPHA), ([], rules.PROFILE_ALPHA), ([0.9], None)):
        assert rules.labels("diversity", rules.classify(values, floors, alpha=alpha)["diversity"]) == ["unknown"]
    assert np.isnan(rules.classify({"floor_fraction_min": values["floor_fraction_min"]}, [0.9])["diversity"]).all()
    assert rules.labels("diversity", rules.classify(_diversity(ratio=nan), [0.9])["diversity"]) == ["unknown"]
    assert rules.labels("diversity", rules.classify(_diversity(fraction=nan), [0.9])["diversity"]) == ["unknown"]
    shift = {"shift_index": np.array([nan, 0.95, 0.95, 0.97, 0.5]),
             "shift_linear_reference": np.array([0.5, 0.5, nan, 0.95, 0.45])}
    assert rules.labels("shift", rules.classify(shift)["shift"]) == [
        "unknown", "shift-invariant", "unknown", "shift-untestable", "shift-variant"]
    assert rules.labels("shift", rules.classify({"shift_index": np.array([0.95])})["shift"]) == ["unknown"]  # no reference
    with pytest.raises(JaxvisError, match=r"must be \[units, floors=2\], not \[1, 1\], \[1, 1\] and \[1, 1\]"):
        rules.diversity_class([[1.0]], [[0.9]], [0.95, 0.9], [[1.0]])
    # starts that disagree, or fewer than two that kept the floor: unsettled, never tight or diverse
    for agreement in (0.8, nan):
        values = {k: np.asarray(v) for k, v in _diversity(agreement=agreement).items()}
        assert rules.labels("diversity", rules.classify(values, [0.9])["diversity"]) == ["unsettled"]
    values = {k: np.asarray(v) for k, v in _diversity().items() if k != "floor_agreement"}
    assert rules.labels("diversity", rules.classify(values, [0.9])["diversity"]) == ["unknown"]  # no certificate
    with pytest.raises(JaxvisError, match="unknown threshold 'f1f0'; valid: grating_drive, f1_f0"):
        rules.classify(_phase(), overrides={"f1f0": 1.0})
    with pytest.raises(JaxvisError, match=r"must share their units \(leading axis\), not \[1, 2\]"):
        rules.classify({"shift_index": np.zeros(2), "grating_best": np.zeros(1)})


def test_the_linear_bound_is_the_cap_optimum_of_docs_floor():
    """docs/floor.md: a bias-free linear unit's best N-point set at alpha has min pairwise RMS
    distance r sqrt(2N/(N-1)) sqrt(1 - alpha^2) / sqrt(D): 7.62 for the simple cell (r = 300,
    D = 363, N = 6, alpha = 0.95); the complex cell's circle (15.75) is 2.07 times that."""
    exact = rules.linear_bound(300.0, 6, 363, [0.95], overrides={"floor_slack": 0.0})
    np.testing.assert_allclose(exact, [[7.62]], rtol=1e-3)  # [units = 1, floors]
    assert 15.75 / exact[0, 0] > rules.threshold("beyond_linear")  # the energy cell's set is diverse
    # the read-out's bound is taken at alpha - floor_slack (fractions that far below count)
    slack = rules.linear_bound(300.0, 6, 363, [0.95, 0.9])
    np.testing.assert_allclose(slack, [300 * np.sqrt(12 / 5) * np.sqrt(1 - np.array([0.945, 0.895]) ** 2)
                                       / np.sqrt(363)], rtol=1e-12)
    with pytest.raises(JaxvisError, match="needs radius > 0, N >= 2 images"):
        rules.linear_bound(300.0, 1, 363, [0.9])
    # an affine unit a = w.x + b: the cap's cosine t = (alpha' a* - b) / (a* - b), per unit; b = 0
    # is the bias-free bound, a* <= b has no floor above the baseline (NaN), t < 0 clips to 0
    affine = rules.linear_bound(300.0, 6, 363, [0.95, 0.9], maximum=[300.0, 540.0, 5.0, 10.0, -1.0],
                            baseline=[0.0, 240.0, 5.0, 9.8, -5.0])
    assert affine.shape == (5, 2) and np.isnan(affine[4]).all()  # a* <= 0: no floor below a*
    np.testing.assert_allclose(affine[0], slack[0], rtol=1e-12)
    t = (np.array([0.945, 0.895]) * 540 - 240) / 300
    np.testing.assert_allclose(affine[1], 300 * np.sqrt(12 / 5) * np.sqrt(1 - t ** 2) / np.sqrt(363), rtol=1e-12)
    assert np.isnan(affine[2]).all()
    np.testing.assert_allclose(affine[3], 300 * np.sqrt(12 / 5) / np.sqrt(363), rtol=1e-12)  # t < 0: 0
    with pytest.raises(JaxvisError, match="both the maxima and the baselines"):
        rules.linear_bound(300.0, 6, 363, [0.9], maximum=[1.0])
    with pytest.raises(JaxvisError, match="one maximum and one baseline per unit, not 2 and 1"):
        rules.linear_bound(300.0, 6, 363, [0.9], maximum=[1.0, 2.0], baseline=[0.0])


def test_the_diversity_class_through_the_metrics_table():
    """``jaxvis analyze`` passes the layer's floors and their linear bound; the [units, floors]
    class comes out."""
    bound = rules.linear_bound(FAKE_RADIUS, N, H * H * 3, FLOORS)
    out = metric_table.evaluate({"floor_pixel_min": np.asarray(FLOOR_VS_LINEAR) * bound,
                      "floor_fraction_min": np.asarray(FLOOR_FRACTION_MIN),
                      "floor_linear_bound": bound, "floors": np.asarray(FLOORS),
                      "floor_agreement": np.ones((U, 2))},
                     names=["floor_pixel_vs_linear", "diversity_class"])
    np.testing.assert_allclose(out["floor_pixel_vs_linear"], FLOOR_VS_LINEAR, rtol=1e-6)
    codes = out["diversity_class"]
    assert codes.shape == (U, 2)
    assert rules.labels("diversity", codes[:, 1]) == ["diverse", "tight", "unknown", "diverse", "unknown"]
    assert rules.labels("diversity", codes[:, 0]) == ["diverse", "tight", "diverse", "diverse", "tight"]


def test_profiles_of_a_results_file(tmp_path):
    path = make_results(tmp_path / "r.h5", {"conv1_1": 3, "conv2_1": 10})
    profiles = layer_profiles(path)
    assert list(profiles) == ["conv1_1", "conv2_1"]
    p = profiles["conv1_1"]
    assert (p.layer, p.units, p.rf, p.alpha) == ("conv1_1", U, 3, 0.9)
    assert p.fractions["phase"] == {"grating-unresponsive": 0.2, "simple-like": 0.4, "complex-like": 0.4,
                                    "ambiguous": 0.0, "frequency-doubling": 0.0, "own-image-invariant": 0.0,
                                    "unknown": 0.0}
    assert p.fractions["diversity"] == {"tight": 0.2, "diverse": 0.4, "unsettled": 0.0, "unknown": 0.4}
    with h5py.File(path, "r") as f:
        m = {k: v[()] for k, v in f["layers/conv1_1/metrics"].items()}
    shift = m["shift_index"]
    assert p.fractions["shift"]["unknown"] == 0.2  # unit 1 has no shift index
    assert p.fractions["shift"]["shift-invariant"] == np.mean(shift > 0.9)
    np.testing.assert_allclose(p.medians["f1_f0"], np.median(GRATING_F1_F0), rtol=1e-6)
    for field, metric in (("grating_phase_min_max", "grating_phase_min_max"),
                          ("rotation_min_max", "rotation_min_max"), ("shift_index", "shift_index")):
        np.testing.assert_allclose(p.medians[field], np.nanmedian(m[metric]), rtol=1e-6)
    # at 0.9, over the sets that reached their floor and have a ratio (units 0, 1, 3)
    np.testing.assert_allclose(p.medians["diversity"], np.median([1.5, 0.5, 1.2]), rtol=1e-6)
    np.testing.assert_allclose(p.medians["diversity_vs_linear"], np.median([1.5, 0.9, 1.2]), rtol=1e-6)
    assert p.counts["diversity"] == 3 and p.counts["diversity_vs_linear"] == 3
    at = layer_profiles(path, ["conv1_1"], alpha=0.95)["conv1_1"]
    assert at.alpha == 0.95 and at.fractions["diversity"] == {"tight": 0.4, "diverse": 0.6, "unsettled": 0.0,
                                                              "unknown": 0.0}
    none = layer_profiles(path, ["conv1_1"], alpha=0.8)["conv1_1"]
    assert none.alpha is None and none.fractions["diversity"]["unknown"] == 1.0
    # the second layer's analysis ran without gratings, shift test or natural references: its
    # diversity class comes from the sweep's floor sets alone (distances, fractions, the bound)
    q = profiles["conv2_1"]
    assert q.fractions["phase"]["unknown"] == q.fractions["shift"]["unknown"] == 1.0
    assert np.isnan(q.medians["f1_f0"]) and np.isnan(q.medians["diversity"]) and q.units == U
    with h5py.File(path, "r") as f:
        g = f["layers/conv2_1"]
        i, j = np.triu_indices(N, 1)
        pixel_min = g["floor_pixel_distances"][()][:, 1][:, i, j].min(1)
        reached = (g["floor_activations"][()][:, 1].min(1) / g["max_activation"][()]) >= 0.9 - 0.005
    ratio = pixel_min / rules.linear_bound(FAKE_RADIUS, N, H * H * 3, [0.9])[0, 0]  # no blank: bias-free
    assert reached.all() and q.fractions["diversity"]["diverse"] == np.mean(ratio >= 1.1)
    np.testing.assert_allclose(q.medians["diversity_vs_linear"], np.median(ratio), rtol=1e-6)

    table = rules.format_profiles({"fake conv1_1": p, "fake conv2_1": q})
    lines = table.splitlines()
    assert lines[0].startswith("| layer | units | complex-like | simple-like | grating-unresponsive | ambiguous | "
                               "frequency-doubling | own-image-invariant | grating/rotation disagree | "
                               "diverse at 0.9 | shift-invariant | shift-untestable | median F1/F0 |")
    agree = rules.rotation_agreement([2, 1, 0, 2, 1], m["rotation_min_max"])
    assert p.disagree == pytest.approx(1 - np.nanmean(agree))
    assert lines[2].startswith(f"| fake conv1_1 | {U} | 40% | 40% | 20% | 0% | 0% | 0% | {100 * p.disagree:.0f}% | "
                               f"40% | {100 * p.fractions['shift']['shift-invariant']:.0f}% | 0% | ")
    assert lines[2].endswith("| 0/2/1 |") and lines[2].count(f"| {np.median(GRATING_F1_F0):.2f} |") == 1
    assert lines[3].startswith(f"| fake conv2_1 | {U} | – | – | – | – | – | – | – | "
                               f"{100 * np.mean(ratio >= 1.1):.0f}% | – | – | – | – | – | – | "
                               f"{np.median(ratio):.2f} | – | – | 5/0/5 |")  # no phase spread, no shift
    assert rules.format_profiles([p]).splitlines()[2].startswith("| conv1_1 |")
    with pytest.raises(JaxvisError, match="no layer 'conv9'"):
        layer_profiles(path, ["conv9"])


def test_class_columns_follow_the_current_table(tmp_path):
    """A class stored by an earlier analysis is recomputed from the stored measures."""
    path = make_results(tmp_path / "r.h5", {"conv1_1": 3})
    with h5py.File(path, "r+") as f:
        f["layers/conv1_1/metrics"].create_dataset("phase_class", data=np.zeros(U, np.float32))
        scalars, sources = layer_scalars(f["layers/conv1_1"])
    assert sources["phase_class"] == "readout" and sources["shift_class"] == "readout"
    assert rules.labels("phase", scalars["phase_class"]) == [
        "complex-like", "simple-like", "grating-unresponsive", "complex-like", "simple-like"]
    assert "diversity_class" not in scalars  # [units, floors]: not a column


# ----------------------------------------------------------------------------------------------
# bad input on the analysis side (the grating battery on a layer after global pooling is refused
# by jaxvis.analysis.gratings, tests/analysis/test_gratings.py)


@pytest.mark.parametrize("weights", ["custom", "vgg19"])
def test_a_file_swept_on_a_custom_network_is_refused_and_left_as_it_was(weights, tmp_path, capsys):
    """A user's network has no model configuration in the file; its weights name is the user's
    label and may even be a cached entry's (``vgg19``): the analysis refuses it in one line and
    writes nothing, instead of loading another network."""
    from jaxvis.cli import main

    path = make_results(tmp_path / "mine.h5", {"conv1_1": 3}, metrics="none",
                        config={"weights": weights, "model": None, "layers": ["conv1_1"],
                                "units": {"conv1_1": list(range(0, 2 * U, 2))}})
    before = path.read_bytes()
    assert main(["analyze", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"was swept on a custom network ({weights})" in err
    assert "jaxvis.analyze(path, model=your_model)" in err
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["mine.h5"]


def test_the_docs_show_the_thresholds_of_the_table():
    text = (Path(__file__).parents[2] / "docs" / "invariance.md").read_text(encoding="utf-8")
    assert rules.format_thresholds() in text


def test_the_cli_summary_line_names_the_read_out():
    from jaxvis.report.summary import analysis_line

    line = analysis_line("conv2_1", {"grating_f1_f0": np.array([0.5, 1.5, 2.0, np.nan]),
                                     "phase_class": np.array([2.0, 1.0, 1.0, 0.0])})
    assert line.endswith("grating F1/F0 median 1.50 (< 1: 25%), phase-rotation min/max median nan; "
                         "read-out: 0% own-image-invariant, 0% frequency-doubling, 0% ambiguous, 25% complex-like, "
                         "50% simple-like, 25% grating-unresponsive")


def test_the_csv_has_a_column_per_floor_metric_and_alpha(tmp_path):
    """Per-floor metrics ([units, floors]) become one ``name@alpha`` column per floor of the
    layer's metadata; a layer without a floor leaves them empty."""
    import csv

    from jaxvis.run.table import export_csv

    layers = {"a": {"unit": np.array([0, 2]), "max_activation": np.array([1.0, 2.0])},
              "b": {"unit": np.array([5]), "max_activation": np.array([3.0])}}
    analysed = {"a": {"pixel_min": np.array([1.0, 2.0]), "floor_agreement": np.array([[1.0, 0.5], [0.9, 0.97]]),
                      "floor_phase_spread": np.array([[300.0, 12.5], [40.0, 250.0]])},
                "b": {"pixel_min": np.array([4.0])}}
    path = export_csv(tmp_path / "r.h5", layers, analysed, {"a": {"floors": [0.95, 0.9]}, "b": {}})
    rows = list(csv.DictReader(open(path)))
    assert list(rows[0])[3:] == ["pixel_min", "floor_agreement@0.95", "floor_agreement@0.9",
                                 "floor_phase_spread@0.95", "floor_phase_spread@0.9"]
    assert [r["floor_agreement@0.9"] for r in rows] == ["0.5", "0.97", ""]
    assert rows[1]["floor_phase_spread@0.9"] == "250" and rows[2]["pixel_min"] == "4"
