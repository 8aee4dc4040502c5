"""The analysis stages' forward passes split over devices give the one-device numbers: the natural
references, the calibration, the grating battery and the phase rotation of three conv2_1 units on
a mesh of 2 emulated CPU devices (``--xla_force_host_platform_device_count``) against a mesh of 1,
in one process (jax fixes its device count when it starts); this file is also that process's
script (``python tests/analysis/test_analysis_devices.py OUT``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
MESHES = (1, 2)
LAYER, UNITS = "conv2_1", [3, 40, 101]


@pytest.fixture(scope="module")
def stages(vgg19, photos, real_root, tmp_path_factory) -> dict:
    """``{devices: {stage/key: array}}`` from the subprocess, plus ``"split"``: how the batch of a
    two-device forward pass was laid out."""
    out = tmp_path_factory.mktemp("devices") / "stages.npz"
    env = {**os.environ, "JAXVIS_WEIGHTS": str(real_root), "PYTHONPATH": str(ROOT),
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={max(MESHES)}", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, __file__, str(out)], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(out) as npz:
        arrays = dict(npz)
    result = {n: {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(f"{n}/")} for n in MESHES}
    result["split"] = arrays["split"]
    return result


def test_two_devices_give_the_one_device_numbers(stages):
    one, two = stages[1], stages[2]
    assert set(one) == set(two) and {k.split(":")[0] for k in one} == {"reference", "calibrate", "gratings", "rotation"}
    for key in one:
        a, b = np.asarray(one[key]), np.asarray(two[key])
        assert a.shape == b.shape, key
        if a.dtype.kind == "f":
            scale = float(np.nanmax(np.abs(a))) if np.isfinite(a).any() else 1.0
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * scale, err_msg=key)
        else:
            np.testing.assert_array_equal(b, a, err_msg=key)
    assert np.isfinite(one["gratings:grating_best"]).all() and one["calibrate:natural_top_patches"].shape[:2] == (3, 2)


def test_a_forward_pass_on_two_devices_is_split_between_them(stages):
    """Six images on two devices: three on each, on two devices; five: padded to six, the padding
    dropped from the result, which is the one-device result."""
    shards, devices, rows, same = stages["split"]
    assert shards == 3 and devices == 2 and rows == 5 and same == 1


def main(out: str) -> None:
    import jax

    import jaxvis
    from jaxvis.analysis.gratings import Battery, gratings
    from jaxvis.analysis.natural import calibrate, reference_distances
    from jaxvis.analysis.phase import phase_rotation
    from jaxvis.optimize.parallel import unit_mesh
    from jaxvis.weights import default_photos

    assert jax.device_count() == max(MESHES), jax.devices()
    model = jaxvis.load("vgg19")
    info = model.network.layer(LAYER)
    photos = sorted(default_photos())[:2]
    directions = np.eye(info.channels, dtype=np.float32)[UNITS]
    rng = np.random.default_rng(0)
    best = np.clip(rng.normal(120, 40, (len(UNITS), info.canvas, info.canvas, 3)), 0, 255).astype(np.float32)
    battery = Battery(orientations=4, periods=3, phases=4, colours=("luminance", "red-green"))
    meta = {"radius": 300.0, "feature_layer": "conv1_2"}
    saved = {}
    for n in MESHES:
        mesh = unit_mesh(jax.devices()[:n])
        found = {"reference": reference_distances(model, info, meta, len(UNITS), 4, photos, 0, mesh),
                 "calibrate": calibrate(model, info, directions, photos, top=2, mesh=mesh),
                 "gratings": gratings(model, LAYER, radius=300.0, directions=directions, battery=battery, mesh=mesh),
                 "rotation": phase_rotation(model, LAYER, best, directions, steps=4, mesh=mesh)}
        saved.update({f"{n}/{stage}:{k}": v for stage, values in found.items() for k, v in values.items()})
    two = unit_mesh(jax.devices()[:2])
    six = model.layer_output(best[[0, 1, 2, 0, 1, 2]], LAYER, mesh=two)
    shards = {s.data.shape[0] for s in six.addressable_shards}
    five = np.asarray(model.layer_output(best[[0, 1, 2, 0, 1]], LAYER, mesh=two))
    split = [shards.pop() if len(shards) == 1 else -1, len({s.device for s in six.addressable_shards}),
             len(five), int(np.allclose(five, np.asarray(model.layer_output(best[[0, 1, 2, 0, 1]], LAYER)), rtol=1e-5,
                                        atol=1e-3))]
    np.savez(out, **saved, split=np.array(split))


if __name__ == "__main__":
    main(sys.argv[1])
