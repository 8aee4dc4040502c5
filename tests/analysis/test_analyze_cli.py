"""`jaxvis analyze` from the command line: a successful run on a real sweep, a read-only target
refused before any work, a custom-network file refused with one line, a
bad --cpu-devices refused as the sweep refuses it."""

from __future__ import annotations

import csv
import os

import h5py
import numpy as np
import pytest

from jaxvis.run import analyze as analyze_module
from jaxvis.cli import main
from jaxvis.store.results import read_results

pytestmark = [pytest.mark.usefixtures("weights_env"), pytest.mark.real]


@pytest.fixture(scope="module")
def swept(tmp_path_factory, real_root, vgg19):
    out = tmp_path_factory.mktemp("cli") / "c11.h5"
    os.environ["JAXVIS_WEIGHTS"] = str(real_root)  # restored by weights_env in each test
    assert main(["sweep", "--weights", "vgg19", "--layer", "conv1_1", "--units", "0-3", "--images", "3",
                 "--steps", "30", "--restarts", "1", "--no-render", "--cpu-devices", "1", "--out", str(out)]) == 0
    return out


def test_analyze_from_the_command_line(swept, capsys):
    capsys.readouterr()
    assert main(["analyze", str(swept), "--shift-steps", "20", "--top", "2"]) == 0
    printed = capsys.readouterr()
    assert "conv1_1: median activation fraction" in printed.out and "shift index > 0.9" in printed.out
    assert "ETA" in printed.err  # progress of the shift test
    r = read_results(swept)
    m = r.metrics["conv1_1"]
    assert m["shift_index"].shape == (4,) and m["natural_top_patches"].shape == (4, 2, 3, 3, 3)
    np.testing.assert_allclose(m["shift_index"], m["shift_responses"].mean(axis=(1, 2))
                               / r.layers["conv1_1"]["max_activation"], rtol=1e-5)
    assert (m["shift_steps"] <= 20).all() and (m["shift_steps"] >= 1).all()
    # the grating battery and the phase rotation of each maximum, forward passes only
    assert m["grating_responses"].shape == (4, 16, 12, 8, 3) and m["rotation_curve"].shape == (4, 12)
    np.testing.assert_allclose(m["grating_best_fraction"], m["grating_best"] / r.layers["conv1_1"]["max_activation"],
                               rtol=1e-5)
    # conv1_1 is linear pre-ReLU: its response to its phase-rotated maximum is c + d cos(phi)
    phi = np.arange(12) * 2 * np.pi / 12
    design = np.stack([np.ones(12), np.cos(phi), np.sin(phi)], 1)
    fit = design @ np.linalg.lstsq(design, m["rotation_curve"].T, rcond=None)[0]
    assert np.abs(fit.T - m["rotation_curve"]).max() < 0.01 * np.abs(m["rotation_curve"]).max()
    assert "grating F1/F0 median" in printed.out
    rows = list(csv.DictReader(open(swept.with_suffix(".csv"))))
    assert [int(row["unit"]) for row in rows] == [0, 1, 2, 3]
    assert {"grating_f1_f0", "rotation_min_max", "shift_index"} <= set(rows[0])
    with h5py.File(swept, "r") as f:
        assert "definitions" in f["layers/conv1_1/metrics"].attrs


def test_a_read_only_target_is_refused_before_any_work(swept, monkeypatch, capsys):
    before = swept.read_bytes()
    monkeypatch.setattr(os, "access", lambda path, mode: os.fspath(path) != os.fspath(swept))

    def never(*args, **kwargs):
        raise AssertionError("analysis ran although the file cannot be written")
    monkeypatch.setattr(analyze_module, "analyze_layer", never)
    assert main(["analyze", str(swept)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not writable" in err and str(swept) in err
    monkeypatch.setattr(os, "access", lambda path, mode: os.fspath(path) != os.fspath(swept.parent))
    assert main(["analyze", str(swept)]) == 2
    assert "folder" in capsys.readouterr().err and swept.read_bytes() == before


def test_a_custom_network_file_needs_the_network(swept, tmp_path, capsys):
    import json
    import shutil
    custom = tmp_path / "custom.h5"
    shutil.copy(swept, custom)
    with h5py.File(custom, "r+") as f:
        config = json.loads(f.attrs["config"])
        f.attrs["config"] = json.dumps({**config, "weights": "custom"})
    assert main(["analyze", str(custom)]) == 2
    assert "swept on a custom network" in capsys.readouterr().err


def test_cpu_devices_is_checked_as_the_sweeps_is(swept, monkeypatch, capsys):
    """`analyze --cpu-devices` spreads the stages over CPU devices as `sweep`'s does; a count below 1
    is refused in the sweep's words before any work."""
    before = swept.read_bytes()
    monkeypatch.setattr(analyze_module, "analyze_layer",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("analysis ran")))
    assert main(["analyze", str(swept), "--cpu-devices", "0"]) == 2
    assert capsys.readouterr().err == "jaxvis: error: --cpu-devices must be at least 1, not 0\n"
    assert swept.read_bytes() == before
