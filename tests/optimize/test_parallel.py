"""Units spread over several devices: the same results on 1, 2 and 8 devices, and a compiled step
without any collective. jax fixes its device count when it starts, so one process with 8 emulated
CPU devices (``--xla_force_host_platform_device_count``) sweeps on meshes of 1, 2 and 8 of them;
this file is also that process's script (``python tests/optimize/test_parallel.py OUT``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import SETTINGS, UNITS, assert_same_units, assert_stops_mixed

MESHES = (1, 2, 8)
COLLECTIVES = ("all-reduce", "all-gather", "all-to-all", "collective-permute", "reduce-scatter")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def meshes(vgg19, real_root, tmp_path_factory) -> dict:
    """The subprocess's arrays: ``{devices: {key: array}}``, plus its HLO texts under ``"hlo"``."""
    out = tmp_path_factory.mktemp("meshes") / "r.npz"
    env = {**os.environ, "JAXVIS_WEIGHTS": str(real_root), "PYTHONPATH": str(ROOT),
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={max(MESHES)}", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, __file__, str(out)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(out) as npz:
        arrays = dict(npz)
    result = {n: {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(f"{n}/")} for n in MESHES}
    result["hlo"] = {k: str(v) for k, v in arrays.items() if "/" not in k}
    return result


@pytest.mark.parametrize("devices", MESHES)
def test_results_do_not_depend_on_the_device_count(devices, meshes, reference_sweep):
    """Every mesh gives the one-device reference's units, early stops included (some units and
    maxima froze while others in the same chunk, on the same device, kept going)."""
    ref, many = reference_sweep[1].layers["conv2_1"], meshes[devices]
    assert int(many["devices"]) == devices and int(many["chunk"]) % devices == 0
    assert int(many["padded"]) == (5 if devices == 1 else 6 if devices == 2 else 8)  # padded_count(5)
    assert_stops_mixed(many)
    assert_same_units(many, ref, ("unit", "steps", "stop_reason", "max_steps", "max_stop_reason",
                                  "activations", "max_activation", "pixel_distances",
                                  "feature_distances", "images", "max_image"))


def test_the_step_talks_to_no_other_device(meshes):
    hlo = meshes["hlo"]["hlo"]
    assert "ENTRY" in hlo and f"num_partitions={max(MESHES)}" in hlo
    assert not [c for c in COLLECTIVES if c in hlo], [c for c in COLLECTIVES if c in hlo]
    assert "all-reduce" in meshes["hlo"]["summed_hlo"]  # the check can see one where there is one


def test_chunk_is_a_multiple_of_the_device_count():
    from jaxvis.run.sweep import chunk_size
    assert chunk_size(64, 128, 8) == 64 and chunk_size(5, 128, 8) == 8 and chunk_size(64, 3, 2) == 4
    assert chunk_size(7, 7, 1) == 7 and chunk_size(64, 0, 4) == 4


def test_units_are_padded_and_split_evenly():
    import jax
    from jaxvis.optimize import parallel
    mesh = parallel.unit_mesh()
    assert mesh.axis_names == ("units",) and mesh.size == len(jax.local_devices())
    np.testing.assert_array_equal(parallel.pad_rows(np.arange(3), 5), [0, 1, 2, 2, 2])
    keys = parallel.pad_rows(jax.random.split(jax.random.key(0), 2), 4)
    assert keys.shape == (4,) and bool((jax.random.key_data(keys[3]) == jax.random.key_data(keys[1])).all())


def main(out: str) -> None:
    """The subprocess: per mesh the sweep's arrays and ``padded_count(5, mesh)``; the compiled
    segment program's HLO on the largest mesh and, for contrast, the HLO of a program that does
    need a collective (a sum over the sharded unit axis)."""
    import jax
    import jaxvis
    from jaxvis.optimize import loop, parallel
    from jaxvis.optimize.keys import unit_key
    from jaxvis.run.plan import configure, plan
    from jaxvis.run.sweep import chunk_size, sweep

    assert len(jax.devices()) == max(MESHES), jax.devices()
    model = jaxvis.load("vgg19")
    saved = {}
    for n in MESHES:
        mesh = parallel.unit_mesh(jax.devices()[:n])
        chunk = 2 if n == 1 else None  # one device: the reference's chunks; else sized to the mesh
        r = sweep(model, "conv2_1", UNITS, chunk=chunk, mesh=mesh, segment=20, **SETTINGS)["conv2_1"]
        saved.update({f"{n}/{k}": v for k, v in r.items()})
        saved.update({f"{n}/devices": n, f"{n}/padded": parallel.padded_count(5, mesh),
                      f"{n}/chunk": chunk_size(chunk or 1, 6, n)})
    size = chunk_size(1, 6, max(MESHES))
    method = {k: v for k, v in SETTINGS.items() if k != "restarts"}  # a sweep setting, not the method's
    lp = plan(model, configure(model, "conv2_1", UNITS, segment=20, **method))[0]
    keys = jax.numpy.stack([unit_key(0, "conv2_1", u, 3) for u in range(size)])
    graphdef, params, keys, directions, radius = loop.place(model.network, keys, np.eye(128)[:size],
                                                            lp.radius, mesh)
    maxima = jax.device_put(np.ones(size, np.float32), parallel.unit_sharding(mesh))
    states = loop._init(keys, problem=lp.diverse, mesh=mesh)
    hlo = loop._segment.lower(params, states, directions, maxima, radius, graphdef=graphdef,
                              problem=lp.diverse, mesh=mesh).compile().as_text()
    summed = jax.jit(lambda d: d.sum(0)).lower(directions).compile().as_text()
    np.savez(out, **saved, hlo=np.array(hlo), summed_hlo=np.array(summed))


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
    # too late is said, not silently ignored (a user's own count is not a mistake)
    assert ("came after jax had started computing" in done.stderr) == (case[0] == "used"), done.stderr[-2000:]


if __name__ == "__main__":
    main(sys.argv[1])
