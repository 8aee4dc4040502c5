"""Scaling: unit-steps per second on 1, 2, 4, 8 devices, the cost of several processes, and the
persistent compilation cache (cold vs warm first call).

Three parts, every measurement in a fresh subprocess (jax fixes its device count at start):

1. ``devices``: one chunk of ``--units`` units of ``--layer`` (real VGG-19, N = ``--images``,
   early stopping off) through :func:`jaxvis.optimize.loop.optimize` on D emulated CPU devices
   (``XLA_FLAGS=--xla_force_host_platform_device_count=D``): first call (compile + run), then a
   timed call; the activations are compared with D = 1 (they must agree: correctness, not speed).
2. ``processes``: the same units as a whole ``jaxvis sweep`` job, once as one process and once
   as ``--distributed`` processes on 127.0.0.1 (each sweeps half, process 0 merges), both with
   a warm compilation cache; wall time from launch to the merged file.
3. ``cache``: the first ``optimize`` call of a fresh process with an empty compilation cache
   folder, then again with the folder the first run filled.

On a CPU the emulated devices share the same cores, so (1) checks that sharding costs little,
not that it speeds anything up; on a machine with several accelerators the same script measures
the speed-up.

    python -m benchmarks.bench_scaling                  # ~4 min on 2 CPU cores
    python -m benchmarks.bench_scaling --devices 1,2 --units 32 --steps 100
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import machine_info
from benchmarks.tables import RESULTS, stamp, write_json
from benchmarks.variants import layer_problem, unit_inputs

ROOT = Path(__file__).resolve().parents[1]  # the checkout: the workers import jaxvis and benchmarks from it


# --------------------------------------------------------------------------------------------------
# workers (run in subprocesses; print one JSON line)


def worker_optimize(args) -> dict:
    """First and second ``optimize`` call on one chunk, on all (emulated) devices of this process."""
    import jax

    import jaxvis
    from jaxvis.optimize.loop import compilation_cache, optimize

    if args.cache:
        compilation_cache(Path(args.cache))
    model = jaxvis.load(args.weights)
    lp = layer_problem(model, args.layer, args.images, args.steps)
    keys, directions = unit_inputs(lp, list(range(args.units)))
    t = time.perf_counter()
    optimize(model.network, lp.diverse, keys, directions, lp.radius)
    first = time.perf_counter() - t
    t = time.perf_counter()
    out = optimize(model.network, lp.diverse, keys, directions, lp.radius)
    seconds = time.perf_counter() - t
    if args.save:
        np.save(args.save, out["activations"])
    steps = int(out["steps"].sum())
    return {"devices": len(jax.devices()), "units": args.units, "unit_steps": steps,
            "seconds": seconds, "unit_steps_per_s": steps / seconds, "first_call_s": first,
            "compile_s": max(first - seconds, 0.0)}


# --------------------------------------------------------------------------------------------------
# driver


def _env(devices: int = 1, **extra) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "JAX_PLATFORMS": "cpu", **extra}
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def run_worker(args, devices: int = 1, cache: str | None = None, save: str | None = None) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_scaling", "--worker", "--layer", args.layer, "--units", str(args.units),
           "--images", str(args.images), "--steps", str(args.steps), "--weights", args.weights]
    cmd += ["--cache", cache] if cache else []
    cmd += ["--save", save] if save else []
    done = subprocess.run(cmd, env=_env(devices), capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"worker failed ({devices} devices):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_devices(args, tmp: Path) -> list[dict]:
    rows = []
    for d in [int(x) for x in args.devices.split(",")]:
        save = str(tmp / f"act{d}.npy")
        row = run_worker(args, d, save=save)
        reference = np.load(tmp / f"act{rows[0]['devices']}.npy") if rows else np.load(save)
        row["max_rel_diff_vs_first"] = float(np.abs(np.load(save) - reference).max() / np.abs(reference).max())
        rows.append(row)
        print(f"  {d} devices: {row['unit_steps_per_s']:.0f} unit-steps/s (first call {row['first_call_s']:.1f} s)",
              flush=True)
    base = rows[0]["unit_steps_per_s"]
    for row in rows:
        row["vs_first"] = row["unit_steps_per_s"] / base
    return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sweep_job(args, processes: int, out: Path, cache: Path | None) -> float:
    """Wall seconds of a whole `jaxvis sweep` job with ``processes`` processes on this machine
    (``cache`` None: no compilation cache, everything compiles)."""
    base = [sys.executable, "-m", "jaxvis.cli", "sweep", "--weights", args.weights, "--layer", args.layer,
            "--units", f"0-{args.units - 1}", "--images", str(args.images), "--steps", str(args.steps),
            "--no-render", "--out", str(out)] + (["--no-cache"] if cache is None else [])
    env = _env(JAXVIS_CACHE=str(cache or ""))
    port = free_port()
    commands = [base] if processes == 1 else [
        base + ["--distributed", "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(processes),
                "--process-id", str(i), "--timeout", "60"] for i in range(processes)]
    t = time.perf_counter()
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in commands]
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"sweep job failed:\n{err[-3000:]}")
    seconds = time.perf_counter() - t
    if not out.exists():
        raise SystemExit(f"sweep job wrote no {out}")
    return seconds


def bench_processes(args, tmp: Path) -> list[dict]:
    """Whole jobs, 1 vs 2 processes, without and with a warm compilation cache. (On CPU jax keys
    cached programs by device and only process 0 writes entries, so process 1 always compiles.)"""
    from jaxvis.store.results import read_results

    cache = tmp / "job-cache"
    sweep_job(args, 1, tmp / "warm1.h5", cache)  # fills the compilation cache for both layouts
    sweep_job(args, 2, tmp / "warm2.h5", cache)
    unit_steps = 2 * args.units * args.steps  # diverse + single-image maximum per unit
    rows = []
    for label, folder in (("no cache", None), ("warm cache", cache)):
        one = sweep_job(args, 1, tmp / f"one-{len(rows)}.h5", folder)
        two = sweep_job(args, 2, tmp / f"two-{len(rows)}.h5", folder)
        a, b = read_results(tmp / f"one-{len(rows)}.h5"), read_results(tmp / f"two-{len(rows)}.h5")
        diff = max(float(np.abs(a.layers[args.layer][k] - b.layers[args.layer][k]).max())
                   for k in ("activations", "max_activation"))
        rows.append({"compilation": label, "units": args.units, "one_process_s": one,
                     "two_processes_s": two, "overhead": two / one, "unit_steps": unit_steps,
                     "one_process_unit_steps_per_s": unit_steps / one,
                     "two_processes_unit_steps_per_s": unit_steps / two,
                     "same_config": a.config == b.config, "max_abs_diff_activations": diff})
        print(f"  {label}: 1 process {one:.1f} s, 2 processes {two:.1f} s ({two / one:.2f}x)", flush=True)
    return rows


def bench_cache(args, tmp: Path) -> dict:
    cache = str(tmp / "cold-cache")
    cold = run_worker(args, 1, cache=cache)
    warm = run_worker(args, 1, cache=cache)
    row = {"cold_first_call_s": cold["first_call_s"], "warm_first_call_s": warm["first_call_s"],
           "cold_compile_s": cold["compile_s"], "warm_compile_s": warm["compile_s"],
           "run_s": warm["seconds"], "entries": len(list(Path(cache).iterdir())),
           "bytes": sum(p.stat().st_size for p in Path(cache).iterdir())}
    print(f"  first call: cold cache {row['cold_first_call_s']:.2f} s, warm {row['warm_first_call_s']:.2f} s",
          flush=True)
    return row


def table(result: dict) -> str:
    lines = ["| devices | units/device | unit-steps/s | vs 1 device | first call (s) | max rel. diff vs 1 device |",
             "|---|---|---|---|---|---|"]
    for r in result["devices"]:
        lines.append(f"| {r['devices']} | {r['units'] // r['devices']} | {r['unit_steps_per_s']:.0f} | "
                     f"{r['vs_first']:.2f}x | {r['first_call_s']:.1f} | {r['max_rel_diff_vs_first']:.1e} |")
    if result.get("processes"):
        lines += ["", "| whole job | 1 process (s) | 2 processes, --distributed (s) | 2 vs 1 | same config |",
                  "|---|---|---|---|---|"]
        for p in result["processes"]:
            lines.append(f"| {p['compilation']} | {p['one_process_s']:.1f} | {p['two_processes_s']:.1f} | "
                         f"{p['overhead']:.2f}x | {p['same_config']} |")
    c = result.get("cache")
    if c:
        lines += ["", "| compilation cache | first call (s) | compile (s) |", "|---|---|---|",
                  f"| cold | {c['cold_first_call_s']:.2f} | {c['cold_compile_s']:.2f} |",
                  f"| warm | {c['warm_first_call_s']:.2f} | {c['warm_compile_s']:.2f} |"]
    return "\n".join(lines)


def parse(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layer", default="conv2_1")
    p.add_argument("--units", type=int, default=16, help="units per chunk (a multiple of every device count)")
    p.add_argument("--images", type=int, default=6)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--weights", default="vgg19")
    p.add_argument("--devices", default="1,2,4,8")
    p.add_argument("--skip", default="", help="parts to skip: devices, processes, cache (comma-separated)")
    p.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/scaling_<host>_<date>.json)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    p.add_argument("--save", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.worker:
        print(json.dumps(worker_optimize(args)))
        return {}
    machine = machine_info()
    print(f"{machine['cpu']}, {machine['cores']} cores, jax {machine['jax']} ({machine['backend']})", flush=True)
    skip = set(filter(None, args.skip.split(",")))
    result = {"benchmark": "scaling", "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "argv": sys.argv[1:] if argv is None else list(argv),
              "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "machine": machine}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "devices" not in skip:
            print("devices (emulated on this machine's cores):", flush=True)
            result["devices"] = bench_devices(args, tmp)
        if "processes" not in skip:
            print("processes:", flush=True)
            result["processes"] = bench_processes(args, tmp)
        if "cache" not in skip:
            print("compilation cache:", flush=True)
            result["cache"] = bench_cache(args, tmp)
    print()
    print(table({"devices": [], **result}))
    out = write_json(args.out or RESULTS / f"scaling_{machine['host']}_{stamp()}.json", result)
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
