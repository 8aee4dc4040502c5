"""The grating battery's call size on this machine: seconds and peak resident memory per setting.

    python -m benchmarks.grating_chunks --results vgg19-normalized_conv3_1.h5 --layer conv3_1

Runs :func:`jaxvis.analysis.gratings.gratings` (battery and refinement, every unit of the file's
layer, all of this process's devices: one per core on CPU) once per ``--pixels`` setting (log2 of
the pixels per device and forward call, ``gratings.PIXELS_PER_CALL``), each in a fresh process so
that its peak resident size is its own, after one untimed run that compiles. Prints a table and
writes ``benchmarks/results/grating_chunks_<host>_<date>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def one(results: str, layer: str, weights: str, log2: int) -> dict:
    """One setting, in this process: seconds of the timed run and the process's peak (GiB)."""
    from jaxvis.optimize.parallel import cpu_devices
    cpu_devices()
    import jax

    import jaxvis
    from jaxvis.analysis import gratings as G
    from jaxvis.store.results import read_results

    platform_ = jax.devices()[0].platform
    G.PIXELS_PER_CALL["cpu" if platform_ == "cpu" else "accelerator"] = 1 << log2
    model, r = jaxvis.load(weights), read_results(results)
    units, meta = r.layers[layer], r.layer_meta[layer]

    def run():
        return G.gratings(model, layer, radius=meta["radius"], directions=units["direction"],
                          maximum=units["max_activation"])
    run()
    t0 = time.perf_counter()
    run()
    return {"log2_pixels": log2, "seconds": time.perf_counter() - t0, "units": len(units["unit"]),
            "devices": jax.device_count(), "platform": platform_,
            "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", required=True, help="a swept results file holding the layer's units")
    p.add_argument("--layer", default="conv3_1")
    p.add_argument("--weights", default="vgg19-normalized")
    p.add_argument("--pixels", default="19,17,16,15,14", help="log2 pixels per device and call, comma-separated")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process of one setting
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.one is not None:
        print(json.dumps(one(args.results, args.layer, args.weights, args.one)))
        return
    rows = []
    for log2 in (int(x) for x in args.pixels.split(",")):
        done = subprocess.run([sys.executable, "-m", "benchmarks.grating_chunks", "--results", args.results,
                               "--layer", args.layer, "--weights", args.weights, "--one", str(log2)],
                              check=True, capture_output=True, text=True, cwd=Path(__file__).parent.parent)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"\n{args.weights} {args.layer}: grating battery + refinement, {rows[0]['units']} units, "
          f"{rows[0]['devices']} {rows[0]['platform']} device(s)")
    print("| pixels per device and call | seconds | peak resident (GiB) |")
    print("|---|---:|---:|")
    for row in rows:
        print(f"| 2^{row['log2_pixels']} | {row['seconds']:.1f} | {row['peak_gib']:.2f} |")
    out = args.out or RESULTS / f"grating_chunks_{platform.node()}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": {"host": platform.node(), "processor": platform.processor()},
                               "layer": args.layer, "weights": args.weights, "rows": rows}, indent=1))
    print(out)


if __name__ == "__main__":
    main()
