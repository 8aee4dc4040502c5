"""A sweep split over several processes: two real processes on 127.0.0.1 give the file one process
gives; a coordinator that does not answer ends in one line within the timeout; incomplete parts
are refused naming the missing units, and a share resumes where it stopped."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxvis.cli import main
from jaxvis.errors import JaxvisError
from jaxvis.io.progress import Progress
from jaxvis.io.results import parts_dir, read_results
from jaxvis.optimize.parallel import Processes, launch_settings, share
from jaxvis.sweep import sweep

UNITS, SETTINGS = "0-5", dict(images=3, steps=40)
CLI = ["sweep", "--weights", "vgg19", "--layer", "conv2_1", "--units", UNITS, "--images", "3",
       "--steps", "40", "--no-render"]
ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("weights_env")


@pytest.fixture(scope="module")
def reference(vgg19, real_root, tmp_path_factory):
    os.environ["JAXVIS_WEIGHTS"] = str(real_root)
    out = tmp_path_factory.mktemp("ref") / "ref.h5"
    sweep(vgg19, "conv2_1", UNITS, out=out, **SETTINGS)
    return read_results(out)


def assert_same(a, b):
    """Same config, units and integer arrays; floats to float tolerance (the two layouts batch
    different units together, and XLA's kernels may round differently per batch size)."""
    assert a.config == b.config
    assert a.layer_meta == b.layer_meta
    for layer, arrays in a.layers.items():
        assert arrays.keys() == b.layers[layer].keys()
        for key, value in arrays.items():
            other = b.layers[layer][key]
            if value.dtype.kind == "f":
                np.testing.assert_allclose(value, other, rtol=1e-4, atol=1e-2, err_msg=key)
            else:
                np.testing.assert_array_equal(value, other, err_msg=key)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], real_root) -> subprocess.Popen:
    env = {**os.environ, "JAXVIS_WEIGHTS": str(real_root), "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, "-m", "jaxvis.cli", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_two_processes_give_the_one_process_file(reference, real_root, tmp_path, capsys):
    out = tmp_path / "two.h5"
    port = free_port()
    procs = [launch([*CLI, "--out", str(out), "--distributed", "--coordinator", f"127.0.0.1:{port}",
                     "--num-processes", "2", "--process-id", str(i), "--timeout", "60"], real_root)
             for i in range(2)]
    logs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in logs]
    assert "process 1 of 2: share done" in logs[1][0] and f"results: {out}" in logs[0][0]
    assert not parts_dir(out).exists()
    assert_same(read_results(out), reference)
    assert main(["merge", str(out)]) == 0 and "already complete" in capsys.readouterr().out


def test_coordinator_not_answering_is_one_line_within_the_timeout(real_root, tmp_path):
    start = time.perf_counter()
    proc = launch([*CLI, "--out", str(tmp_path / "x.h5"), "--distributed", "--coordinator",
                   f"127.0.0.1:{free_port()}", "--num-processes", "2", "--process-id", "1",
                   "--timeout", "3"], real_root)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err.strip().splitlines() == [err.strip()], err  # exactly one line
    assert "coordinator at 127.0.0.1:" in err and "did not answer within 3 s" in err
    assert time.perf_counter() - start < 3 + 20  # the timeout plus starting Python and jax
    assert not (tmp_path / "x.h5").exists() and not parts_dir(tmp_path / "x.h5").exists()


class StopAfter(Progress):
    """Ctrl-C after ``n`` chunks (a killed process, as far as the parts folder can tell)."""

    def __init__(self, n):
        super().__init__(enabled=False)
        self.n = n

    def advance(self, units, unit_steps):
        self.n -= units > 0  # per finished chunk (segments report unit-steps only)
        if self.n == 0:
            raise KeyboardInterrupt


def test_shares_merge_only_when_complete_and_resume(vgg19, reference, tmp_path, capsys):
    """The two shares of a two-process sweep, run here one after the other (no coordinator: the
    split and the parts folder are what is tested): process 0 cannot assemble while process 1's
    units are missing, and names them; process 1 stopped midway resumes; then merge succeeds."""
    out = tmp_path / "s.h5"
    with pytest.raises(JaxvisError, match=r"conv2_1 misses 3 of 6 units \(1, 3, 5\)"):
        sweep(vgg19, "conv2_1", UNITS, out=out, chunk=1, processes=Processes(0, 2), **SETTINGS)
    assert main(["merge", str(out)]) == 2
    err = capsys.readouterr().err
    assert "misses 3 of 6 units (1, 3, 5)" in err and err.count("\n") == 1
    with pytest.raises(KeyboardInterrupt):
        sweep(vgg19, "conv2_1", UNITS, out=out, chunk=1, processes=Processes(1, 2),
              progress=StopAfter(1), **SETTINGS)
    assert len(list(parts_dir(out).glob("*.npz"))) == 4  # 0, 2, 4 and the first of 1, 3, 5
    assert sweep(vgg19, "conv2_1", UNITS, out=out, chunk=1, processes=Processes(1, 2), **SETTINGS) == {}
    assert main(["merge", str(out)]) == 0
    assert "merged conv2_1 (6 units)" in capsys.readouterr().out
    assert_same(read_results(out), reference)


def test_share_splits_every_layer_evenly():
    units = list(range(10))
    shares = [share(units, Processes(i, 3)) for i in range(3)]
    assert shares == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert sorted(sum(shares, [])) == units and share([4], Processes(1, 2)) == []


def test_launch_settings_come_from_flags_then_environment():
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    assert launch_settings(environ=env) == ("10.0.0.1:1234", 4, 3)
    assert launch_settings("h:1", 2, 0, environ=env) == ("h:1", 2, 0)
    assert launch_settings(environ={}) == (None, None, None)  # left to jax's SLURM/MPI/TPU detection
    with pytest.raises(JaxvisError, match="'h' is not HOST:PORT"):
        launch_settings("h", 2, 0, environ={})
    with pytest.raises(JaxvisError, match="process id 2 is not in 0-1 for 2 processes"):
        launch_settings("h:1", 2, 2, environ={})
    with pytest.raises(JaxvisError, match="JAX_PROCESS_ID='x' is not an integer"):
        launch_settings(environ={"JAX_PROCESS_ID": "x"})


def test_refusals_at_the_command_line(tmp_path, capsys):
    assert main([*CLI, "--out", str(tmp_path / "r.h5"), "--process-id", "1"]) == 2
    assert "need --distributed" in capsys.readouterr().err
    assert main(["merge", str(tmp_path / "none.h5")]) == 2
    assert "no parts to merge" in capsys.readouterr().err
    with pytest.raises(JaxvisError, match="--overwrite cannot be used with several processes"):
        sweep("vgg19", "conv2_1", UNITS, out=tmp_path / "o.h5", overwrite=True,
              processes=Processes(0, 2), **SETTINGS)
