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
# two restarts of the maximum: the restart keys are covered by every layout comparison, at half
# the cost of the default four
SETTINGS = dict(images=3, steps=200, patience=10, restarts=2)
CLI = ["sweep", "--weights", "vgg19", "--layer", "conv2_1", "--units", UNITS, "--images", "3",
       "--steps", "200", "--patience", "10", "--restarts", "2", "--no-render"]


def rel_err(a, b) -> float:
    """max |a - b| / max |b|: the parity measure used throughout the tests."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


# Layouts that batch units differently (chunks, devices, processes) round differently, and over
# 200 steps the rounding moves the images apart a little: measured up to 1.6 grey levels per pixel
# and 0.35 in a pair's conv1_2 distance (2 and 8 devices, two processes), 1.4e-3 in a restart's
# activation, while the final activations agree to 1e-3.
LAYOUT_TOLERANCE = {"images": dict(rtol=0, atol=4.0), "max_image": dict(rtol=0, atol=4.0),
                    "pixel_distances": dict(rtol=0, atol=1.0), "feature_distances": dict(rtol=0, atol=1.0),
                    "max_restart_activations": dict(rtol=5e-3, atol=1e-2)}
FLOAT_TOLERANCE = dict(rtol=1e-3, atol=1e-2)


# Early stopping is not layout-invariant to the step either: where a unit's EMA is on a plateau,
# rounding decides whether a step counts as an improvement (measured: a maximum stopped at step
# 198 on 2 devices and ran its 200 steps on 1; a unit stopped at 178 on 8 devices, at 191 on 1).
# Steps agree to within twice the patience; the stop reason follows from the steps
# (tests/test_sweep.py checks that) and is not compared here.
STEP_SLACK = 2 * SETTINGS["patience"]


def assert_same_units(a: dict, b: dict, keys=None):
    """Two layouts' arrays of the same units: floats to LAYOUT_TOLERANCE, step counts to within
    STEP_SLACK, other integers exactly."""
    for key in sorted(keys or a.keys(), key=lambda k: a[k].dtype.kind == "f"):  # integers first
        if key in ("stop_reason", "max_stop_reason", "max_restart", "max_raised"):
            continue  # follow from steps / near-tie activations, which layouts move (see above)
        if key in ("steps", "max_steps"):
            assert np.abs(a[key].astype(int) - b[key].astype(int)).max() <= STEP_SLACK, (key, a[key], b[key])
        elif a[key].dtype.kind != "f":
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:
            np.testing.assert_allclose(a[key], b[key], **LAYOUT_TOLERANCE.get(key, FLOAT_TOLERANCE), err_msg=key)


def assert_same(a, b, exact: bool = True):
    """Two results files hold the same sweep: config, layer metadata and every array. ``exact``
    False: another layout of the same sweep (``assert_same_units``)."""
    assert a.config == b.config
    assert a.layer_meta == b.layer_meta
    assert a.layers.keys() == b.layers.keys()
    for layer, arrays in a.layers.items():
        assert arrays.keys() == b.layers[layer].keys()
        if not exact:
            assert_same_units(arrays, b.layers[layer])
            continue
        for key, value in arrays.items():
            np.testing.assert_array_equal(value, b.layers[layer][key], err_msg=f"{layer}/{key}")


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
