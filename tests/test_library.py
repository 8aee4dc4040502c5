"""The library as a notebook user meets it: the top-level names, and the advice to use the cores."""

from __future__ import annotations

import importlib
import warnings

import jax
import numpy as np
import pytest

import jaxvis
from jaxvis.optimize import parallel

sweep_module = importlib.import_module("jaxvis.run.sweep")  # jaxvis.sweep is also the function


def test_top_level_names_resolve():
    for name in jaxvis.__all__:
        assert getattr(jaxvis, name) is not None, name


def test_one_cpu_device_on_many_cores_says_how_to_use_them(monkeypatch):
    if jax.devices()[0].platform != "cpu":
        pytest.skip("about CPU devices")
    mesh = parallel.unit_mesh(jax.devices()[:1])
    monkeypatch.setattr(sweep_module.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(sweep_module._warn_single_cpu, "said", False, raising=False)
    monkeypatch.setattr(sweep_module, "_cpu_count_chosen", lambda: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sweep_module._warn_single_cpu(mesh)
        sweep_module._warn_single_cpu(mesh)  # once per process
    assert len(caught) == 1 and issubclass(caught[0].category, sweep_module.SingleCpuWarning)
    assert "jaxvis.cpu_devices()" in str(caught[0].message)


def test_a_finished_sweep_grows_without_recomputing(tmp_path, monkeypatch):
    """More units and another layer of the same method extend the file: only the new units are
    optimised, the old ones are kept bit for bit, and the result equals a fresh sweep's."""
    from tests.models.test_own_network import Tiny, model

    net = model(Tiny())
    settings = dict(images=2, steps=15, radius=40.0, chunk=1)
    out = tmp_path / "grow.h5"
    first = jaxvis.sweep(net, "b", [0], out=out, **settings)["b"]

    computed = []
    real = sweep_module.run_units
    monkeypatch.setattr(sweep_module, "run_units",
                        lambda model, lp, units, *a, **k: computed.append((lp.info.name, list(units)))
                        or real(model, lp, units, *a, **k))
    grown = jaxvis.sweep(net, "a,b", [0, 1], out=out, **settings)
    assert sorted(computed) == [("a", [0]), ("a", [1]), ("b", [1])]
    np.testing.assert_array_equal(grown["b"]["images"][0], first["images"][0])
    fresh = jaxvis.sweep(net, "a,b", [0, 1], out=tmp_path / "fresh.h5", **settings)
    for layer in ("a", "b"):
        for key in ("images", "activations", "max_activation", "direction"):
            np.testing.assert_array_equal(grown[layer][key], fresh[layer][key], err_msg=f"{layer}/{key}")
    stored = jaxvis.read_results(out)
    assert stored.config["units"] == {"b": [0, 1], "a": [0, 1]}
    with pytest.raises(jaxvis.JaxvisError, match="different sweep"):
        jaxvis.sweep(net, "b", [0, 1], out=out, **{**settings, "steps": 16})


def test_one_configuration_in(tmp_path):
    """sweep(model, config) with configure's SweepConfig is the keyword sweep; the config a file
    stores, read back, is the same config and resumes the file; settings beside a config are refused."""
    from tests.models.test_own_network import Tiny, model

    net = model(Tiny())
    config = jaxvis.configure(net, "b", "0-1", images=2, steps=20, floors=0.9, restarts=2, seed=3)
    assert (config.optimizer.steps, config.floors, config.restarts, config.units) == (20, (0.9,), 2, {"b": (0, 1)})
    by_config = jaxvis.sweep(net, config, out=tmp_path / "c.h5", radius=40.0)["b"]
    by_keywords = jaxvis.sweep(net, "b", "0-1", images=2, steps=20, floors=0.9, restarts=2, seed=3,
                               radius=40.0)["b"]
    for key in by_keywords:
        np.testing.assert_array_equal(by_config[key], by_keywords[key], err_msg=key)
    stored = jaxvis.read_results(tmp_path / "c.h5").sweep_config
    assert stored.to_json() == config.to_json()
    again = jaxvis.sweep(net, stored, out=tmp_path / "c.h5", radius=40.0)["b"]  # resumed: nothing to do
    np.testing.assert_array_equal(again["images"], by_config["images"])
    with pytest.raises(jaxvis.JaxvisError, match="from the config, not from units= or steps"):
        jaxvis.sweep(net, config, steps=5)


def test_floor_sets_and_the_trusted_maximum(tmp_path):
    """--floor through the sweep: per unit and alpha a set whose images keep alpha x the maximum
    (the maximum the best of several restarts, raised to a diverse image where one beats it)."""
    from tests.models.test_own_network import Tiny, model

    net = model(Tiny())  # layer a is linear before its ReLU, like conv1_1: the floor is reachable
    out = jaxvis.sweep(net, "a", "all", images=3, steps=300, radius=40.0, floors="0.8,0.95",
                       restarts=3, out=tmp_path / "f.h5")["a"]
    assert out["floor_images"].shape == (4, 2, 3, 3, 3, 3) and out["floor_activations"].shape == (4, 2, 3)
    fractions = out["floor_activations"] / out["max_activation"][:, None, None]
    assert (fractions >= np.array([0.95, 0.8])[None, :, None] - 0.005).all(), fractions
    # a lower floor lets the images spread further
    from jaxvis.analysis.metrics import evaluate
    m = evaluate(out, names=["floor_pixel_min"])
    assert (m["floor_pixel_min"][:, 1] > m["floor_pixel_min"][:, 0]).all()
    # the maximum: the best restart, or the best diverse image where that is higher
    restarts = out["max_restart_activations"]
    assert restarts.shape == (4, 3)
    from jaxvis.optimize.maximum import TIE, winners
    best = restarts[np.arange(4), winners(restarts)]
    diverse = out["activations"].max(1)
    raised = diverse - best > TIE * np.abs(best)
    np.testing.assert_array_equal(out["max_raised"], raised)
    np.testing.assert_allclose(out["max_activation"], np.where(raised, diverse, best), rtol=1e-6)
    stored = jaxvis.read_results(tmp_path / "f.h5")
    assert stored.config["floors"] == [0.95, 0.8] and stored.config["restarts"] == 3
    assert stored.layer_meta["a"]["floors"] == [0.95, 0.8]


@pytest.mark.parametrize("settings, message", [
    (dict(floors="1.2"), "strictly between 0 and 1"),
    (dict(floors="0.9", images=1, diversity="none"), "needs a diversity term and at least 2 images"),
    (dict(floors="ninety"), "bad SweepConfig.floors"),
    (dict(restarts=0), "SweepConfig.restarts must be at least 1"),
])
def test_bad_floors_are_refused_before_any_work(tmp_path, settings, message):
    from tests.models.test_own_network import Tiny, model

    with pytest.raises(jaxvis.JaxvisError, match=message):
        jaxvis.sweep(model(Tiny()), "b", "all", steps=5, radius=40.0, out=tmp_path / "x.h5",
                     **{"images": 2, **settings})
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "x.h5.parts").exists()


def test_names_do_not_hide_modules():
    """``jaxvis.convert`` is the conversion package and ``jaxvis.sweep`` the function (the module
    is ``jaxvis.run.sweep``)."""
    import types

    assert isinstance(jaxvis.convert, types.ModuleType) and callable(jaxvis.convert.sources.convert_file)
    assert callable(jaxvis.convert_weights) and callable(jaxvis.sweep) and callable(jaxvis.analyze)
    assert isinstance(importlib.import_module("jaxvis.run.sweep"), types.ModuleType)
