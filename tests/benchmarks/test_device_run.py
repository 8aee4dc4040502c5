"""The prepared GPU run (benchmarks/device_run.sh) end to end on the CPU with --tiny, so the one
call a session with a lent accelerator makes cannot rot: every stage runs on real VGG-19 and
writes its figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxvis.optimize.maximum import RESTARTS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.real
def test_device_run_tiny_end_to_end(vgg19, real_root, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out), "JAXVIS_WEIGHTS": str(real_root),
           "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_run.sh"), "--tiny"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((out / "device_run.json").read_text())
    assert {k: v for k, v in result["errors"].items() if not k.endswith("_traceback")} == {}
    assert result["skipped"] == {}
    stages = result["stages"]
    assert set(stages) == {"machine", "precision", "torch", "peers", "sweep", "chunks", "analysis", "tune"}
    assert stages["machine"]["machine"]["backend"] == "cpu"
    assert all(p["gflops"] > 0 for p in stages["machine"]["matmul_peak"].values())

    rows = {r["precision"]: r for r in stages["precision"]["rows"]}
    assert set(rows) == {"float32", "tf32", "bf16"}
    for r in rows.values():  # 4 units x 20 steps, early stopping off: every step of every unit
        assert r["unit_steps"] == 4 * 20 and r["unit_steps_per_s"] > 0 and r["tflops"] > 0
        assert r["first_call_s"] > 0 and 0 < r["pct_peak"]
    # reduced precision moves the final activations (measured in float32) only a little
    assert rows["tf32"]["vs_float32"]["max_rel_diff"] < 1e-2
    assert rows["bf16"]["vs_float32"]["max_rel_diff"] < 5e-2

    torch = stages["torch"]
    assert torch["check"]["loss_rel_diff"] < 1e-5 and torch["check"]["grad_rel_diff"] < 1e-5
    assert torch["rows"][0]["unit_steps"] > 0 and "float32" in torch["speedup_vs_torch_float32"]

    peers = stages["peers"]  # parity first, then every row that could run: 2 units x 5 steps
    assert peers["parity"]["batched"]["ok"] and peers["args"]["layer"] == "conv1_1"
    measured = {r["row"]: r for r in peers["rows"] if "seconds" in r}
    assert {"jaxvis", "sweep", "batched"} <= set(measured)
    assert all(r["unit_steps"] == 2 * 5 and r["unit_steps_per_s"] > 0 for r in measured.values())
    assert "lucent" in measured or "lucent" in peers["missing"]  # skipped, saying so, without lucent

    sweep = stages["sweep"]
    assert [p["layer"] for p in sweep["probes"]] == ["conv1_1"] and sweep["units"] == 64
    assert sweep["extrapolated_s"] > 0 and sweep["mode"] == "measured"
    assert sweep["measured_units"] == 64 and sweep["cache_entries"] > 0  # the compilation cache is on
    # early stopping off: the diverse set and every restart of the maximum, all 20 steps
    assert sweep["measured_unit_steps"] == 64 * 20 * (1 + RESTARTS)
    probe = sweep["probes"][0]  # one chunk of the sweep's own size
    assert probe["probe_units"] == probe["chunk"] and probe["unit_steps"] == probe["chunk"] * 20 * (1 + RESTARTS)

    chunks = stages["chunks"]
    auto = chunks["auto_chunk"]  # a CPU's cache-sized chunk: 16 units a device
    assert auto == 16 * stages["machine"]["machine"]["devices"]
    assert [r["chunk"] for r in chunks["rows"]] == [4, auto] and [r["auto"] for r in chunks["rows"]] == [False, True]

    assert [r["variant"] for r in stages["tune"]["rows"]] == ["default", "conv=xla"]
    assert all(r["unit_steps_per_s"] > 0 for r in stages["tune"]["rows"])

    analysis = stages["analysis"]
    assert analysis["gratings"]["units"] == 64 and analysis["gratings"]["seconds"] > 0
    assert 0 <= analysis["shift"]["median_shift_index"] <= 1.5

    assert set(result["targets"]) == {"bf16_wall_s", "speedup_vs_torch", "bf16_pct_peak", "sweep_s"}
    table = (out / "device_run.md").read_text()
    assert "| conv1_1 | bf16 |" in table and "PyTorch eager" in table and "torch batched" in table
