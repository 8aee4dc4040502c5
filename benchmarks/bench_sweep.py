"""Sweep speed: unit-steps per second of the diverse-visualisation optimiser (docs/method.md section 7).

A *unit-step* is one Adam step of one unit with its N images. In one run on one machine this
script measures, per target layer of real VGG-19 (VALID canvas):

1. ``jaxvis sweep``   - :func:`jaxvis.optimize.loop.optimize` on U units in the sweep's own chunks
   over all devices (on CPU one device per core, as ``jaxvis sweep``);
2. ``jaxvis one device, batched`` - the same U units as one chunk on one device;
3. ``jaxvis per-unit`` - the same function with a chunk of 1, looped over a few units (how the
   original code ran: one unit after another);
4. ``torch per-unit``  - the same algorithm written in PyTorch eager, one unit at a time (when
   torch is importable), checked against jaxvis's objective on the same ``z`` first.

Each variant: one untimed pass, then the best of ``--timed-repeats`` timed passes.

The pieces live in the ``benchmarks`` package: :mod:`benchmarks.machine` (machine, matmul peak),
:mod:`benchmarks.variants` (the layer set-up and the variants), :mod:`benchmarks.torch_twin`,
:mod:`benchmarks.flops`, :mod:`benchmarks.tables`.

Achieved GFLOP/s use the *useful* FLOPs (2 x the forward convolutions of N canvas-sized images up
to the target: forward plus input gradient), compared with a float32 matmul timed in the same run.

    python -m benchmarks.bench_sweep                 # defaults: ~6 min on 2 CPU cores
    python -m benchmarks.bench_sweep --layers conv3_1 --units 256 --steps 200
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import sys
from pathlib import Path

from benchmarks.flops import forward_flops, xla_flops
from benchmarks.machine import core_count, machine_info, matmul_peak, torch_matmul_peak, torch_or_none
from benchmarks.tables import default_out, finish_rows, sweep_notes, sweep_table, write_json
from benchmarks.variants import interleaved, jaxvis_variant, layer_problem, torch_variant


def parse(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--weights", default="vgg19", help="weights name for jaxvis.load (VALID canvas)")
    p.add_argument("--layers", default="conv2_1,conv3_1", help="comma-separated target layers")
    p.add_argument("--images", type=int, default=6, help="N images per unit")
    p.add_argument("--units", type=int, default=8,
                   help="units of the 'jaxvis sweep' and 'one device, batched' rows")
    p.add_argument("--timed-repeats", type=int, default=3,
                   help="timed passes of every variant after its warm-up (the best is reported)")
    p.add_argument("--cpu-devices", type=int, default=None,
                   help="jax CPU devices (default: one per core, as jaxvis sweep; ignored on accelerators)")
    p.add_argument("--steps", type=int, default=200, help="optimiser steps per unit, every variant")
    p.add_argument("--per-unit-units", type=int, default=2,
                   help="units timed one at a time (jaxvis chunk of 1)")
    p.add_argument("--torch-units", type=int, default=2, help="units timed in the torch loop")
    p.add_argument("--threads", type=int, default=core_count(), help="torch.set_num_threads")
    p.add_argument("--matmul", type=int, default=2048, help="matrix size of the matmul peak")
    p.add_argument("--repeats", type=int, default=10, help="repeats of the matmul (best of)")
    p.add_argument("--no-torch", action="store_true", help="skip the torch variant")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON file (default benchmarks/results/sweep_<host>-<device>_<date>.json)")
    return p.parse_args(argv)


def bench_layer(model, layer: str, args, peak: float) -> dict:
    lp = layer_problem(model, layer, args.images, args.steps)
    forward = forward_flops(model.network, lp.diverse)
    useful = 2 * lp.diverse.n * forward["total"]
    print(f"[{layer}] canvas {lp.info.canvas}, diversity in {lp.diverse.feature_layer}, "
          f"radius {lp.radius:.1f}, {useful / 1e6:.1f} useful MFLOP/unit-step", flush=True)
    import jax

    from jaxvis.optimize.parallel import unit_mesh

    every, first = unit_mesh(), unit_mesh(jax.local_devices()[:1])
    variants = [jaxvis_variant(model, lp, args.units, every, f"jaxvis sweep ({every.size} devices)"),
                jaxvis_variant(model, lp, args.units, first, "jaxvis one device, batched", chunk=args.units),
                jaxvis_variant(model, lp, args.per_unit_units, first, "jaxvis per-unit", chunk=1)]
    skipped = None
    if args.no_torch:
        skipped = {"variant": "torch per-unit", "skipped": "skipped: --no-torch"}
    elif torch_or_none() is None:
        skipped = {"variant": "torch per-unit", "skipped": "skipped: torch not installed"}
    else:
        variants.append(torch_variant(model, lp, args.torch_units, args.threads))
    print(f"[{layer}] compiled and warm; {args.timed_repeats} interleaved timed passes", flush=True)
    rows = interleaved(variants, args.timed_repeats) + ([skipped] if skipped else [])
    finish_rows(rows, useful, peak)
    return {"layer": layer, "canvas": lp.info.canvas, "images": lp.diverse.n,
            "feature_layer": lp.diverse.feature_layer, "radius": lp.radius,
            "problem": {"objective": dataclasses.asdict(lp.diverse.objective),
                        "optimizer": dataclasses.asdict(lp.diverse.optimizer)},
            "flops": {"forward_per_image": forward["total"], "forward_per_layer": forward["per_layer"],
                      "useful_per_unit_step": useful,
                      "xla": xla_flops(model.network, lp.diverse, lp.radius)},
            "rows": rows}


def main(argv=None) -> dict:
    args = parse(sys.argv[1:] if argv is None else argv)
    from jaxvis.optimize.parallel import cpu_devices

    cpu_devices(args.cpu_devices)  # as jaxvis sweep does, before jax starts
    import jaxvis

    torch = None if args.no_torch else torch_or_none()
    if torch is not None:
        torch.set_num_threads(args.threads)  # before machine_info, so it records the setting
    machine = machine_info()
    print(f"{machine['cpu']}, {machine['cores']} cores, jax {machine['jax']} ({machine['backend']})", flush=True)
    peak = matmul_peak(args.matmul, args.repeats)
    print(f"matmul peak: {peak['gflops']:.1f} GFLOP/s", flush=True)
    model = jaxvis.load(args.weights)
    layers = [bench_layer(model, name.strip(), args, peak["gflops"]) for name in args.layers.split(",")]
    result = {"benchmark": "sweep", "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "argv": sys.argv[1:] if argv is None else list(argv), "args": {
                  k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "machine": machine, "matmul_peak": peak,
              "torch_matmul_peak": torch_matmul_peak(args.matmul, args.repeats) if torch else None,
              "layers": layers}
    print()
    print(sweep_table(layers))
    print()
    print(sweep_notes(result))
    out = write_json(args.out or default_out("sweep", machine), result)
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
