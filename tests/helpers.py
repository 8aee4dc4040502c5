"""Helpers shared by several test modules (fixtures live in conftest.py). Test modules import
from here, never from each other."""

from __future__ import annotations

import socket

import numpy as np

from jaxvis.io.progress import Progress

# The reference sweep several files compare against (tests/conftest.py `reference_sweep`): six
# conv2_1 units of real VGG-19, long enough and with a patience short enough that some units and
# some maxima stop early (stop_reason 1) while others run all steps, so every layout comparison
# also covers the freezing of stopped units next to running ones.
UNITS = "0-5"
SETTINGS = dict(images=3, steps=200, patience=10)
CLI = ["sweep", "--weights", "vgg19", "--layer", "conv2_1", "--units", UNITS, "--images", "3",
       "--steps", "200", "--patience", "10", "--no-render"]


def rel_err(a, b) -> float:
    """max |a - b| / max |b|: the parity measure used throughout the tests."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def assert_same(a, b, exact: bool = True):
    """Two results files hold the same sweep: config, layer metadata and every array. ``exact``
    False: floats to float tolerance (layouts that batch units differently may round
    differently), integers (units, steps, stop reasons) still exactly."""
    assert a.config == b.config
    assert a.layer_meta == b.layer_meta
    assert a.layers.keys() == b.layers.keys()
    for layer, arrays in a.layers.items():
        assert arrays.keys() == b.layers[layer].keys()
        for key, value in arrays.items():
            other = b.layers[layer][key]
            if exact or value.dtype.kind != "f":
                np.testing.assert_array_equal(value, other, err_msg=f"{layer}/{key}")
            else:
                np.testing.assert_allclose(value, other, rtol=1e-3, atol=1e-2, err_msg=f"{layer}/{key}")


def assert_stops_mixed(r: dict):
    """Some units (or maxima) stopped early and some ran every step: the comparison it guards
    covered both the freezing of stopped units and the units still running beside them."""
    reasons = np.concatenate([r["stop_reason"], r["max_stop_reason"]])
    assert (reasons == 1).any() and (reasons == 0).any(), reasons


class StopAfter(Progress):
    """Ctrl-C after ``n`` chunks (a killed process, as far as the parts folder can tell)."""

    def __init__(self, n):
        super().__init__(enabled=False)
        self.n = n

    def advance(self, units, unit_steps):
        super().advance(units, unit_steps)
        self.n -= bool(units)  # a finished chunk (segments report unit-steps only)
        if self.n == 0:
            raise KeyboardInterrupt


class Counting(Progress):
    """Counts the units each chunk computed (``computed``) and what ``start`` said was done."""

    def __init__(self):
        super().__init__(enabled=False)
        self.computed, self.resumed = 0, 0

    def start(self, layer, total, done=0, *args, **kwargs):
        self.resumed += done
        super().start(layer, total, done, *args, **kwargs)

    def advance(self, units, unit_steps):
        self.computed += units
        super().advance(units, unit_steps)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
