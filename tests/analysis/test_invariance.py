"""Invariance analysis on known answers: the shift test on a linear and a complex cell, exact
metrics of synthetic sets, and `jaxvis analyze` on a real sweep."""

from __future__ import annotations

import csv

import jax
import numpy as np
import pytest

import jaxvis
from jaxvis.analysis import metrics as M
from jaxvis.analysis.analyze import analyze
from jaxvis.analysis.shift import ShiftProblem, shift_test
from jaxvis.cli import main
from jaxvis.errors import JaxvisError
from jaxvis.io.results import read_results
from jaxvis.optimize.config import Optimizer
from jaxvis.sweep import sweep
from tests.optimize.complex_cell import model as complex_cell


def shift_index(model, layer, channel, radius, steps=500):
    maximum = sweep(model, layer, [channel], images=1, diversity="none", radius=radius,
                    steps=steps)[layer]["max_activation"][0]
    info = model.network.layer(layer)
    problem = ShiftProblem(layer, info.centre, info.canvas, info.rf, model.convention,
                           model.convention.mean_rgb255, optimizer=Optimizer(steps=steps))
    direction = np.eye(info.channels, dtype=np.float32)[[channel]]
    out = shift_test(model.network, problem, jax.random.key(0)[None], direction, radius)
    assert out["responses"].shape == (1, info.canvas - 1, info.canvas - 1)
    assert out["texture"].shape == (1, 2 * info.canvas - 1, 2 * info.canvas - 1, 3)
    return out["responses"].mean() / maximum


def test_shift_index_separates_complex_from_simple_cells():
    cell = complex_cell()
    assert shift_index(cell, "energy", 0, 300.0) > 0.9        # phase invariant
    assert shift_index(cell, "simple", 0, 300.0) < 0.3        # its linear even Gabor subunit


def test_exact_metrics_of_synthetic_sets():
    rng = np.random.default_rng(0)
    same = np.repeat(rng.normal(size=(1, 1, 4, 4, 3)), 5, axis=1).astype(np.float32)
    assert M.participation_ratio(same, (0, 0, 0))[0] == pytest.approx(1.0, abs=1e-6)
    d = np.asarray(jax.vmap(jaxvis.objectives.diversity.pairwise_rms)(same))
    assert M.pair_stats(d)[0][0] == pytest.approx(0.0, abs=1e-5)
    assert M.variance_map(same).max() == 0
    # orthogonal images of equal norm: N dimensions
    basis = np.eye(48, dtype=np.float32)[:4].reshape(1, 4, 4, 4, 3) * 10
    assert M.participation_ratio(basis, (0, 0, 0))[0] == pytest.approx(4.0, rel=1e-6)
    layer = {"activations": np.array([[2.0, 1.0, 4.0]]), "max_activation": np.array([4.0]),
             "pixel_distances": np.array([[[0, 1, 2], [1, 0, 3], [2, 3, 0]]], np.float32),
             "feature_distances": np.zeros((1, 3, 3), np.float32), "images": basis[:, :3]}
    m = M.from_sweep(layer, (0, 0, 0))
    assert m["activation_fraction"].tolist() == [[0.5, 0.25, 1.0]]
    assert (m["fraction_min"][0], m["fraction_median"][0]) == (0.25, 0.5)
    assert (m["pixel_min"][0], m["pixel_mean"][0]) == (1.0, 2.0)


@pytest.fixture(scope="module")
def analysed(real_env, tmp_path_factory):
    """conv1_1 swept and analysed: ``(file, csv, model, the sweep's arrays before the analysis)``."""
    out = tmp_path_factory.mktemp("an") / "conv1_1.h5"
    vgg = jaxvis.load("vgg19", root=real_env)
    sweep(vgg, "conv1_1", "all", images=3, steps=400, out=out, restarts=1)
    before = read_results(out).layers["conv1_1"]
    table = analyze(out, model=vgg, shift_steps=300, log=lambda *a: None).csv
    return out, table, vgg, before


def test_analyze_real_conv1_1(analysed):
    out, table, vgg, before = analysed
    r = read_results(out)
    m = r.metrics["conv1_1"]
    assert m["shift_index"].shape == (64,) and m["natural_top_patches"].shape == (64, 8, 3, 3, 3)
    # participation ratio from the Gram matrix's traces, (tr G)^2 / tr(G^2), not its eigenvalues
    x = (r.layers["conv1_1"]["images"] - np.asarray(vgg.convention.mean_rgb255)).reshape(64, 3, -1)
    gram = np.einsum("uid,ujd->uij", x.astype(np.float64), x.astype(np.float64))
    want = np.trace(gram, axis1=1, axis2=2) ** 2 / np.square(gram).sum((1, 2))
    np.testing.assert_allclose(m["participation_ratio"], want, rtol=1e-4)
    # the best natural patch really gets the stored score
    acts = vgg.layer_output(m["natural_top_patches"][:, 0], "conv1_1")[:, 0, 0]
    np.testing.assert_allclose(np.diagonal(np.asarray(acts)), m["natural_top_activations"][:, 0], rtol=1e-4)
    assert (m["natural_top_activations"][:, 0] >= m["natural_p99"]).all()
    # linear units are not shift invariant like the complex cell (> 0.9), even though conv1_1's
    # 3 px canvas only allows 1 px shifts, which smooth patterns survive in part
    assert np.median(m["shift_index"]) < 0.85 and (m["shift_index"] > 0.9).mean() < 0.5
    rows = list(csv.DictReader(open(table)))
    assert len(rows) == 64 and {"shift_index", "participation_ratio", "max_over_p99"} <= set(rows[0])
    assert r.layers["conv1_1"].keys() == before.keys()  # the sweep itself is intact, every array
    for key, value in before.items():
        np.testing.assert_array_equal(r.layers["conv1_1"][key], value, err_msg=key)


def test_analyze_bad_input_leaves_the_file_alone(analysed, tmp_path, capsys):
    out = analysed[0]
    before = out.read_bytes()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["analyze", str(out), "--images", str(empty)]) == 2
    assert "holds no images" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"not a png")
    assert main(["analyze", str(out), "--images", str(bad), "--no-shift"]) == 2
    assert "cannot read image" in capsys.readouterr().err
    assert main(["analyze", str(out), "--layer", "conv9_9"]) == 2
    assert "no layer 'conv9_9'" in capsys.readouterr().err
    assert out.read_bytes() == before
    with pytest.raises(JaxvisError, match="not a jaxvis results file"):
        analyze(bad / "x.png")


def test_mask_is_fixed_unless_learnt():
    cell = complex_cell()
    info = cell.network.layer("energy")
    sigmas = []
    for learn in (False, True):
        problem = ShiftProblem("energy", info.centre, info.canvas, info.rf, cell.convention,
                               (0.0, 0.0, 0.0), optimizer=Optimizer(steps=100), learn_mask=learn)
        out = shift_test(cell.network, problem, jax.random.key(1)[None], np.ones((1, 1), np.float32), 300.0)
        sigmas.append(float(out["sigma"][0]))
    assert sigmas[0] == pytest.approx(info.rf / 2.4, rel=1e-6) and sigmas[1] != pytest.approx(sigmas[0], rel=1e-3)
