"""Helpers shared by several test modules (fixtures live in conftest.py). Test modules import
from here, never from each other."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import h5py
import numpy as np

from jaxvis.analysis.readout import linear_bound, shift_reference
from jaxvis.io.progress import Progress
from jaxvis.store.results import ResultWriter

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

    def advance(self, units, *args):
        super().advance(units, *args)
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

    def advance(self, units, *args):
        self.computed += units
        super().advance(units, *args)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------------
# a tiny generated results file (tests of the report, `jaxvis compare` and the read-out)

U, N, H, K = 5, 3, 5, 4
T = 2 * H - 1          # shift texture side
S = H - 1              # shift offsets per axis
FLOORS = [0.95, 0.9]   # the floors of the fake floor sets (layer metadata)
# the fake grating read-out of the first layer: best grating / maximum, blank, F1/F0 -> phase
# classes complex, simple, unresponsive (drive 0.01 < 0.05), complex, simple
GRATING_DRIVE = [0.3, 0.2, 0.01, 0.4, 0.25]
GRATING_BLANK = [-1.0, 0.0, -2.0, -1.0, -0.5]
GRATING_F1_F0 = [0.3, 1.6, 0.5, 0.9, 1.2]
# the floor sets' min pixel distance over the linear cap bound (readout.linear_bound), at 0.95 and
# 0.9: at 0.9 diverse, tight, below its floor (unknown), diverse, no distance (unknown)
FLOOR_FRACTION_MIN = [[0.95, 0.9], [0.951, 0.897], [0.95, 0.8], [0.96, 0.9], [0.95, 0.9]]
FLOOR_VS_LINEAR = [[1.2, 1.5], [0.5, 0.9], [3.0, 2.0], [1.15, 1.2], [0.9, np.nan]]
FLOOR_VS_NATURAL = [[1.0, 1.5], [0.4, 0.5], [3.0, 2.0], [1.1, 1.2], [0.9, np.nan]]
RADIUS = 100.0         # the fake layers' contrast budget


def sweep_chunk(units, seed: int, n: int = N) -> dict[str, np.ndarray]:
    N = n  # noqa: N806 - the diverse images per unit, as everywhere in this file
    rng = np.random.default_rng(seed)
    count = len(units)
    pixel = rng.uniform(1, 10, (count, N, N))
    pixel = np.triu(pixel, 1) + np.triu(pixel, 1).transpose(0, 2, 1)
    feature = pixel / 10 + rng.uniform(0, 0.1, (count, N, N))
    feature = np.triu(feature, 1) + np.triu(feature, 1).transpose(0, 2, 1)
    max_activation = rng.uniform(1, 20, count).astype(np.float32)
    return {"unit": np.asarray(units, np.int64),
            "images": rng.uniform(0, 255, (count, N, H, H, 3)).astype(np.float32),
            "activations": (max_activation[:, None] * rng.uniform(0.5, 1.0, (count, N)))
            .astype(np.float32),
            "max_image": rng.uniform(0, 255, (count, H, H, 3)).astype(np.float32),
            "max_activation": max_activation,
            "pixel_distances": pixel.astype(np.float32),
            "feature_distances": feature.astype(np.float32),
            "steps": rng.integers(50, 1000, count).astype(np.int32),
            "stop_reason": np.ones(count, np.int8)}


def full_metrics(group, seed: int, *, partial: bool = False) -> dict[str, np.ndarray]:
    """The documented metrics schema, random but shaped right; written into ``group/metrics``.

    ``partial``: only some of them (no shift test, no natural patches), as an older analysis."""
    rng = np.random.default_rng(seed)
    acts, peak = group["activations"][()], group["max_activation"][()]
    frac = acts / peak[:, None]
    shift = rng.uniform(0, 1, U)
    shift[0] = 0.95    # one shift-invariant unit
    shift[1] = np.nan  # one unit without a shift test
    metrics = {
        "activation_fraction": frac, "fraction_min": frac.min(1),
        "fraction_median": np.median(frac, 1),
        "pixel_min": rng.uniform(1, 5, U), "pixel_mean": rng.uniform(5, 9, U),
        "feature_min": rng.uniform(0.1, 0.5, U), "feature_mean": rng.uniform(0.5, 1, U),
        "participation_ratio": rng.uniform(1, N, U),
        "variance_map": rng.uniform(0, 5, (U, H, H)),
    }
    if not partial:
        metrics.update({
            "reference_pixel_min": rng.uniform(1, 5, U), "reference_pixel_mean": rng.uniform(5, 9, U),
            "reference_feature_min": rng.uniform(0.1, 0.5, U),
            "reference_feature_mean": rng.uniform(0.5, 1, U),
            "shift_index": shift, "shift_texture": rng.uniform(0, 255, (U, T, T, 3)),
            "shift_responses": rng.uniform(0, 10, (U, S, S)),
            "natural_p99": rng.uniform(1, 5, U), "max_over_p99": rng.uniform(1, 4, U),
            "diverse_over_p99": rng.uniform(1, 4, (U, N)),
            "natural_top_patches": rng.uniform(0, 255, (U, K, H, H, 3)),
            "natural_top_activations": np.sort(rng.uniform(1, 5, (U, K)))[:, ::-1],
            "grating_best": np.asarray(GRATING_DRIVE) * peak, "grating_blank": GRATING_BLANK,
            "grating_f1_f0": GRATING_F1_F0, "grating_phase_min_max": rng.uniform(0, 1, U),
            "grating_best_fraction": GRATING_DRIVE,
            "grating_orientation_curve": rng.uniform(-1, 5, (U, 16)),
            "grating_period_curve": rng.uniform(-1, 5, (U, 12)),
            "grating_phase_curve": rng.uniform(-1, 5, (U, 8)),
            "rotation_min_max": rng.uniform(-0.5, 1, U), "rotation_at_pi": rng.uniform(-1, 1, U),
            # one near-peak grating per unit, of the unit's F1/F0 class (no frequency doubling)
            "grating_near_f1_f0": np.asarray(GRATING_F1_F0)[:, None], "grating_near_f2_f0": np.zeros((U, 1)),
            "grating_near_min_max": np.full((U, 1), 0.5),
            "shift_linear": np.full(U, 0.5), "shift_linear_reference": shift_reference(0.5, peak, GRATING_BLANK),
            "floor_fraction_min": FLOOR_FRACTION_MIN, "floor_pixel_vs_natural": FLOOR_VS_NATURAL,
            "floor_agreement": np.ones((U, len(FLOORS))),  # every set's starts agree (settled)
            "floor_pixel_min": np.asarray(FLOOR_VS_LINEAR) * linear_bound(RADIUS, N, H * H * 3, FLOORS, peak,
                                                                          GRATING_BLANK),
        })
        metrics["rotation_min_max"][2] = -0.2  # the unit no grating drives reverses under rotation: unresponsive
    sub = group.create_group("metrics")
    for name, value in metrics.items():
        sub.create_dataset(name, data=np.asarray(value, np.float32))
    sub.attrs["definitions"] = json.dumps({name: f"definition of {name}" for name in metrics})
    sub.attrs["config"] = json.dumps({"fake": True, "gratings": None if partial else {
        "orientations": 16, "periods": 12, "phases": 8, "colours": ["luminance", "red-green", "blue-yellow"]}})
    return metrics


def make_results(path: Path, layers: dict[str, int], *, metrics: str = "full",
                 config: dict | None = None, seed: int = 0) -> Path:
    """A finished results file with ``layers`` {name: rf} of U units each (units 0, 2, 4, ...);
    ``metrics``: "full" (first layer full, the others partial), "none"."""
    config = config or {"weights": "fake-weights", "model": {"name": "fakenet", "options": {}}}
    writer = ResultWriter(path, config)
    meta = {}
    for k, (layer, rf) in enumerate(layers.items()):
        units = list(range(0, 2 * U, 2))
        chunk = sweep_chunk(units, seed=seed + k)
        rng = np.random.default_rng(seed + 20 + k)  # floor sets (their distances: random)
        chunk.update({"floor_images": rng.uniform(0, 255, (U, len(FLOORS), N, H, H, 3)).astype(np.float32),
                      "floor_activations": rng.uniform(0.9, 1, (U, len(FLOORS), N)).astype(np.float32)
                      * chunk["max_activation"][:, None, None],
                      "floor_pixel_distances": np.broadcast_to(chunk["pixel_distances"][:, None],
                                                               (U, len(FLOORS), N, N)).copy(),
                      # the certificate: three starts that agree (settled sets)
                      "floor_start_diversity": np.ones((U, len(FLOORS), 3), np.float32),
                      "floor_start_feasible": np.ones((U, len(FLOORS), 3), bool)})
        writer.write_chunk(layer, chunk)
        meta[layer] = {"units": units, "rf": rf, "canvas": H, "jump": 1, "radius": RADIUS,
                       "feature_layer": "below", "floors": FLOORS}
    writer.finalize(meta)
    if metrics != "none":
        with h5py.File(path, "r+") as f:
            for k, layer in enumerate(layers):
                full_metrics(f["layers"][layer], seed=seed + 10 + k, partial=k > 0)
    return path
