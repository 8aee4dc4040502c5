"""`jaxvis sweep` end to end on real VGG-19: results file, resume after Ctrl-C and kill -9,
refusals that leave existing results alone, and the pictures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import jaxvis
from jaxvis.cli import main
from jaxvis.io.progress import Progress
from jaxvis.io.results import read_results
from jaxvis.sweep import sweep

SETTINGS = dict(images=3, steps=40)
# one CPU device, as the in-process reference (the CLI's default of one device per core computes
# the same units to float rounding, tests/optimize/test_parallel.py; here files must be identical)
CLI = ["sweep", "--weights", "vgg19", "--layer", "conv2_1", "--units", "0-5", "--images", "3",
       "--steps", "40", "--chunk", "2", "--no-render", "--cpu-devices", "1"]


pytestmark = pytest.mark.usefixtures("weights_env")


@pytest.fixture(scope="module")
def reference(vgg19, real_root, tmp_path_factory):
    os.environ["JAXVIS_WEIGHTS"] = str(real_root)
    out = tmp_path_factory.mktemp("ref") / "ref.h5"
    sweep(vgg19, "conv2_1", "0-5", out=out, chunk=2, **SETTINGS)
    return read_results(out)


def assert_same(a, b):
    assert a.config == b.config
    for layer, arrays in a.layers.items():
        assert arrays.keys() == b.layers[layer].keys()
        for key, value in arrays.items():
            np.testing.assert_array_equal(value, b.layers[layer][key], err_msg=f"{layer}/{key}")


class StopAfter(Progress):
    """Ctrl-C after ``n`` chunks."""

    def __init__(self, n):
        super().__init__(enabled=False)
        self.n = n

    def advance(self, units, unit_steps):
        self.n -= units > 0  # per finished chunk (segments report unit-steps only)
        if self.n == 0:
            raise KeyboardInterrupt


def test_results_file_holds_everything(reference):
    r = reference.layers["conv2_1"]
    assert r["unit"].tolist() == list(range(6))
    assert r["images"].shape == (6, 3, 10, 10, 3) and r["max_image"].shape == (6, 10, 10, 3)
    assert r["pixel_distances"].shape == (6, 3, 3) and r["loss_curve"].shape == (6, 1)
    assert (r["max_activation"] > 0).all() and (r["steps"] <= 40).all()
    meta = reference.layer_meta["conv2_1"]
    assert meta["canvas"] == 10 and meta["feature_layer"] == "conv1_2" and meta["radius"] > 100
    assert reference.config["objective"]["lam"] == 0.01 and reference.config["weights"] == "vgg19"
    assert reference.config["weights_meta"]["source_sha256"]


def test_interrupted_sweep_resumes_to_the_same_file(vgg19, reference, tmp_path):
    out = tmp_path / "r.h5"
    with pytest.raises(KeyboardInterrupt):
        sweep(vgg19, "conv2_1", "0-5", out=out, chunk=2, progress=StopAfter(2), **SETTINGS)
    assert not out.exists() and len(list(Path(f"{out}.parts").glob("*.npz"))) >= 1
    sweep(vgg19, "conv2_1", "0-5", out=out, chunk=2, **SETTINGS)
    assert_same(read_results(out), reference)
    assert not Path(f"{out}.parts").exists()


def test_killed_process_resumes_to_the_same_file(reference, tmp_path, real_root):
    out = tmp_path / "k.h5"
    cmd = [sys.executable, "-m", "jaxvis.cli", *CLI, "--out", str(out)]
    env = {**os.environ, "JAXVIS_WEIGHTS": str(real_root)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = Path(f"{out}.parts")
    deadline = time.time() + 120
    while time.time() < deadline and not list(parts.glob("*.npz")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    assert_same(read_results(out), reference)


def test_different_sweep_is_refused_and_nothing_is_overwritten(reference, tmp_path, capsys):
    out = tmp_path / "d.h5"
    assert main([*CLI, "--out", str(out)]) == 0
    capsys.readouterr()
    before = out.read_bytes()
    code = main([*CLI, "--lambda", "0.5", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "different sweep (objective.lam: 0.01 there, 0.5 now)" in err and "--overwrite" in err and err.count("\n") == 1
    assert out.read_bytes() == before
    assert main([*CLI, "--lambda", "0.5", "--out", str(out), "--overwrite"]) == 0
    assert read_results(out).config["objective"]["lam"] == 0.5


def test_unwritable_output_fails_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    start = time.perf_counter()
    code = main([*CLI, "--out", str(blocker / "r.h5")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write results" in err and time.perf_counter() - start < 20


def test_render_from_the_file_alone(reference, tmp_path, capsys):
    src = tmp_path / "x.h5"
    sweep(jaxvis.load("vgg19"), "conv2_1", "0-5", out=src, chunk=2, **SETTINGS)
    assert main(["render", str(src), "--out", str(tmp_path / "pics")]) == 0
    from PIL import Image
    pics = sorted(p.name for p in (tmp_path / "pics").iterdir())
    assert pics == ["conv2_1_contact.png", "conv2_1_units.png"]
    with Image.open(tmp_path / "pics" / "conv2_1_units.png") as im:
        assert im.width > 4 * 64 and im.height > 6 * 64


def test_layers_are_computed_largest_first_and_returned_in_network_order(vgg19):
    """conv2_1 (36 MFLOP a unit-step at N=6) runs before conv1_1 (0.13 MFLOP); the file and the
    returned dict keep the network's order."""
    from jaxvis.optimize.config import Objective, Optimizer
    from jaxvis.sweep import largest_first, plan

    plans = plan(vgg19, "conv1_1,conv1_2,conv2_1", "0-1", Objective(), Optimizer())
    assert [p.info.name for p in largest_first(vgg19, plans)] == ["conv2_1", "conv1_2", "conv1_1"]

    class Order(Progress):
        def __init__(self):
            super().__init__(enabled=False)
            self.seen = []

        def start(self, layer, total, done=0):
            self.seen.append(layer)
            super().start(layer, total, done)

    bar = Order()
    r = sweep(vgg19, "conv1_1,conv2_1", "0", images=2, steps=5, progress=bar)
    assert bar.seen == ["conv2_1", "conv1_1"] and list(r) == ["conv1_1", "conv2_1"]
