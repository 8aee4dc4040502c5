"""Units spread over several devices: the same results on 1, 2 and 8 devices, and a compiled step
without any collective. jax fixes its device count when it starts, so each device count runs in
its own process with emulated CPU devices (``--xla_force_host_platform_device_count``); this
file is also that process's script (``python tests/optimize/test_parallel.py DEVICES OUT``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

UNITS, SETTINGS = "0-5", dict(images=3, steps=40, segment=20)
COLLECTIVES = ("all-reduce", "all-gather", "all-to-all", "collective-permute", "reduce-scatter")
ROOT = Path(__file__).resolve().parents[2]


def run_devices(devices: int, out: Path, root: Path, chunk: int | None = None) -> dict:
    """Sweep UNITS of conv2_1 in a fresh process with ``devices`` emulated CPU devices."""
    env = {**os.environ, "JAXVIS_WEIGHTS": str(root), "PYTHONPATH": str(ROOT),
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, __file__, str(devices), str(out)] + ([str(chunk)] if chunk else [])
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(out) as npz:
        return dict(npz)


@pytest.fixture(scope="module")
def one_device(real_root, tmp_path_factory):
    import jaxvis
    jaxvis.load("vgg19", root=real_root)  # fetch once here, not in three processes at once
    return run_devices(1, tmp_path_factory.mktemp("d1") / "r.npz", real_root, chunk=6)


@pytest.mark.parametrize("devices", [2, 8])
def test_results_do_not_depend_on_the_device_count(devices, one_device, real_root, tmp_path):
    many = run_devices(devices, tmp_path / "r.npz", real_root)
    assert int(many["devices"]) == devices and int(many["chunk"]) % devices == 0
    for key in ("images", "activations", "max_image", "max_activation", "pixel_distances", "loss"):
        np.testing.assert_allclose(many[key], one_device[key], rtol=1e-3, atol=1e-2, err_msg=key)
    for key in ("unit", "steps", "stop_reason", "max_steps"):
        np.testing.assert_array_equal(many[key], one_device[key], err_msg=key)
    if devices == 8:  # the step every device runs talks to no other device
        hlo = str(many["hlo"])
        assert "ENTRY" in hlo and "num_partitions=8" in hlo
        assert not [c for c in COLLECTIVES if c in hlo], [c for c in COLLECTIVES if c in hlo]
        assert "all-reduce" in str(many["summed_hlo"])  # the check can see one where there is one


def test_chunk_is_a_multiple_of_the_device_count():
    from jaxvis.sweep import chunk_size
    assert chunk_size(64, 128, 8) == 64 and chunk_size(5, 128, 8) == 8 and chunk_size(64, 3, 2) == 4
    assert chunk_size(7, 7, 1) == 7 and chunk_size(64, 0, 4) == 4


def test_units_are_padded_and_split_evenly():
    import jax
    from jaxvis.optimize import parallel
    mesh = parallel.unit_mesh()
    assert mesh.axis_names == ("units",) and mesh.size == len(jax.local_devices())
    assert parallel.padded_count(5, mesh) % mesh.size == 0
    np.testing.assert_array_equal(parallel.pad_rows(np.arange(3), 5), [0, 1, 2, 2, 2])
    keys = parallel.pad_rows(jax.random.split(jax.random.key(0), 2), 4)
    assert keys.shape == (4,) and bool((jax.random.key_data(keys[3]) == jax.random.key_data(keys[1])).all())


def main(devices: int, out: str, chunk: int | None) -> None:
    """The subprocess: the sweep's arrays, the compiled segment program's HLO, and for contrast
    the HLO of a program that does need a collective (a sum over the sharded unit axis)."""
    import jax
    import jaxvis
    from jaxvis.optimize import loop, parallel
    from jaxvis.sweep import _settings, chunk_size, plan, sweep, unit_key

    assert len(jax.devices()) == devices, jax.devices()
    model = jaxvis.load("vgg19")
    r = sweep(model, "conv2_1", UNITS, chunk=chunk, compile_cache=False, **SETTINGS)["conv2_1"]
    mesh = parallel.unit_mesh()
    size = chunk_size(chunk or 1, 6, devices)
    lp = plan(model, "conv2_1", UNITS, *_settings(None, None, SETTINGS))[0]
    keys = jax.numpy.stack([unit_key(0, "conv2_1", u, 3) for u in range(size)])
    graphdef, params, keys, directions, radius = loop.place(model.network, keys, np.eye(128)[:size],
                                                            lp.radius, mesh)
    states = loop._init(keys, problem=lp.diverse, mesh=mesh)
    maxima = jax.device_put(np.ones(size, np.float32), parallel.unit_sharding(mesh))  # unused without a floor
    hlo = loop._segment.lower(params, states, directions, maxima, radius, graphdef=graphdef,
                              problem=lp.diverse, mesh=mesh).compile().as_text()
    summed = jax.jit(lambda d: d.sum(0)).lower(directions).compile().as_text()
    np.savez(out, **r, devices=devices, chunk=size, hlo=np.array(hlo), summed_hlo=np.array(summed))



CPU_DEVICES = """
import os, sys, jax
from jaxvis.optimize.parallel import cpu_devices
before = sys.argv[1] == "used"
if before:
    jax.numpy.zeros(1).block_until_ready()
print(cpu_devices(int(sys.argv[2]) if len(sys.argv) > 2 else None), jax.device_count())
"""


@pytest.mark.parametrize("case, flags, want", [
    (["fresh", "3"], "", "3 3"),                 # asked for 3
    (["fresh"], "", f"{len(os.sched_getaffinity(0))} {len(os.sched_getaffinity(0))}"),  # one per core
    (["fresh", "3"], "--xla_force_host_platform_device_count=5", "None 5"),  # the user's flag wins
    (["used", "3"], "", "None 1"),              # too late: jax keeps what it started with
])
def test_cpu_devices_one_per_core_unless_the_user_chose(case, flags, want):
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    env.pop("JAX_NUM_CPU_DEVICES", None)
    done = subprocess.run([sys.executable, "-c", CPU_DEVICES, *case], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == want.split()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else None)
