"""The library as a notebook user meets it: the top-level names, and the advice to use the cores."""

from __future__ import annotations

import importlib
import warnings

import jax
import pytest

import jaxvis
from jaxvis.optimize import parallel

sweep_module = importlib.import_module("jaxvis.sweep")  # jaxvis.sweep is also the function


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
