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

from jaxvis.cli import main
from jaxvis.io.progress import Progress
from jaxvis.store.results import read_results
from jaxvis.objectives.diversity import pairwise_rms
from jaxvis.run.sweep import sweep
from tests.helpers import CLI as CLI_BASE, SETTINGS, UNITS, Counting, StopAfter, assert_same, assert_stops_mixed

# one CPU device, as the reference (the CLI's default of one device per core computes the same
# units to float rounding, tests/optimize/test_parallel.py; here files must be identical)
CLI = [*CLI_BASE, "--chunk", "2", "--cpu-devices", "1"]


pytestmark = pytest.mark.usefixtures("weights_env")


@pytest.fixture
def reference(reference_sweep):
    return reference_sweep[1]


def test_results_file_holds_everything(reference, vgg19):
    """Every stored number is what the network says of the stored images."""
    r = reference.layers["conv2_1"]
    assert r["unit"].tolist() == list(range(6))
    assert r["images"].shape == (6, 3, 10, 10, 3) and r["max_image"].shape == (6, 10, 10, 3)
    assert r["loss_curve"].shape == (6, SETTINGS["steps"] // 50)
    assert_stops_mixed(r)
    steps = SETTINGS["steps"]
    for n, reason in ((r["steps"], r["stop_reason"]), (r["max_steps"], r["max_stop_reason"])):
        assert ((n == steps) == (reason == 0)).all() and (n > SETTINGS["patience"]).all(), (n, reason)
    # the reported activations are the unit's pre-ReLU centre response to the stored images
    acts = np.asarray(vgg19.layer_output(r["images"].reshape(18, 10, 10, 3), "conv2_1"))[:, 0, 0]
    np.testing.assert_allclose(acts.reshape(6, 3, 128)[np.arange(6), :, np.arange(6)], r["activations"],
                               rtol=1e-4, atol=1e-3)
    best = np.asarray(vgg19.layer_output(r["max_image"], "conv2_1"))[np.arange(6), 0, 0, np.arange(6)]
    np.testing.assert_allclose(best, r["max_activation"], rtol=1e-4, atol=1e-3)
    assert (r["max_activation"] > 0).all()
    # and the distances are those between the stored images, in pixels and in conv1_2
    feats = np.asarray(vgg19.layer_output(r["images"].reshape(18, 10, 10, 3), "conv1_2", post=True))
    for u in range(6):
        np.testing.assert_allclose(pairwise_rms(r["images"][u]), r["pixel_distances"][u], rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(pairwise_rms(feats[3 * u: 3 * u + 3]), r["feature_distances"][u],
                                   rtol=1e-4, atol=1e-3)
    norms = np.linalg.norm((r["images"] - np.asarray(vgg19.convention.mean_rgb255)).reshape(18, -1), axis=1)
    meta = reference.layer_meta["conv2_1"]
    np.testing.assert_allclose(norms, meta["radius"], rtol=1e-4)  # every image on the budget's sphere
    assert meta["canvas"] == 10 and meta["feature_layer"] == "conv1_2" and meta["radius"] > 100
    assert reference.config["objective"]["lam"] == 0.01 and reference.config["weights"] == "vgg19"
    assert reference.config["weights_meta"]["source_sha256"]


def test_interrupted_sweep_resumes_to_the_same_file(vgg19, reference, tmp_path):
    out = tmp_path / "r.h5"
    with pytest.raises(KeyboardInterrupt):
        sweep(vgg19, "conv2_1", UNITS, out=out, chunk=2, progress=StopAfter(2), **SETTINGS)
    assert not out.exists() and len(list(Path(f"{out}.parts").glob("*.npz"))) >= 1
    bar = Counting()
    sweep(vgg19, "conv2_1", UNITS, out=out, chunk=2, progress=bar, **SETTINGS)
    assert (bar.resumed, bar.computed) == (4, 2)  # only the chunk that was cut off is computed again
    assert_same(read_results(out), reference)
    assert not Path(f"{out}.parts").exists()
    bar = Counting()
    sweep(vgg19, "conv2_1", UNITS, out=out, chunk=2, progress=bar, **SETTINGS)
    assert (bar.resumed, bar.computed) == (6, 0)  # a finished file: nothing recomputes


def test_killed_process_resumes_to_the_same_file(reference, tmp_path, real_root):
    out = tmp_path / "k.h5"
    cmd = [sys.executable, "-m", "jaxvis.cli", *CLI, "--out", str(out)]
    env = {**os.environ, "JAXVIS_WEIGHTS": str(real_root)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    parts = Path(f"{out}.parts")
    deadline = time.time() + 300
    while time.time() < deadline and not list(parts.glob("*.npz")) and proc.poll() is None:
        time.sleep(0.05)
    written = sorted(p.name for p in parts.glob("*.npz"))
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert alive and written, ("the sweep ended before it could be killed", err[-2000:])
    assert proc.returncode == -signal.SIGKILL and not out.exists()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_same(read_results(out), reference)


def test_different_sweep_is_refused_and_nothing_is_overwritten(reference_sweep, tmp_path, capsys):
    out = tmp_path / "d.h5"
    out.write_bytes(reference_sweep[0].read_bytes())  # the same sweep, finished: nothing to do
    before = out.read_bytes()
    assert main([*CLI, "--out", str(out)]) == 0
    capsys.readouterr()
    assert out.read_bytes() == before
    code = main([*CLI, "--lambda", "0.5", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "different sweep (objective.lam: 0.01 there, 0.5 now)" in err and "--overwrite" in err and err.count("\n") == 1
    assert out.read_bytes() == before
    assert main([*CLI, "--lambda", "0.5", "--steps", "5", "--out", str(out), "--overwrite"]) == 0
    assert read_results(out).config["objective"]["lam"] == 0.5


def test_unwritable_output_fails_before_any_work(tmp_path, capsys, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("a unit was optimised before the output was checked")

    # the module (the attribute jaxvis.sweep is the function)
    monkeypatch.setattr(sys.modules["jaxvis.run.sweep"], "run_units", no_work)
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = main([*CLI, "--out", str(blocker / "r.h5")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write results" in err and err.count("\n") == 1


def test_render_from_the_file_alone(reference_sweep, tmp_path):
    src = tmp_path / "x.h5"
    src.write_bytes(reference_sweep[0].read_bytes())
    assert main(["render", str(src), "--out", str(tmp_path / "pics")]) == 0
    from PIL import Image
    pics = sorted(p.name for p in (tmp_path / "pics").iterdir())
    assert pics == ["conv2_1_contact.png", "conv2_1_units.png"]
    with Image.open(tmp_path / "pics" / "conv2_1_units.png") as im:
        assert im.width > 4 * 64 and im.height > 6 * 64


def test_layers_are_computed_largest_first_and_returned_in_network_order(vgg19):
    """conv2_1 (36 MFLOP a unit-step at N=6) runs before conv1_1 (0.13 MFLOP); the file and the
    returned dict keep the network's order."""
    from jaxvis.run.plan import configure, plan
    from jaxvis.run.sweep import largest_first

    plans = plan(vgg19, configure(vgg19, "conv1_1,conv1_2,conv2_1", "0-1"))
    assert [p.info.name for p in largest_first(vgg19, plans)] == ["conv2_1", "conv1_2", "conv1_1"]

    class Order(Progress):
        def __init__(self):
            super().__init__(enabled=False)
            self.started = []

        def start(self, layer, *args, **kwargs):
            self.started.append(layer)
            super().start(layer, *args, **kwargs)

    bar = Order()
    r = sweep(vgg19, "conv1_1,conv2_1", "0", images=2, steps=5, progress=bar)
    assert bar.started == ["conv2_1", "conv1_1"] and list(r) == ["conv1_1", "conv2_1"]
