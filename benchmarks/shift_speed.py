"""The shift test's cost and result, today's optimiser against the default one, side by side.

    python -m benchmarks.shift_speed --layers conv2_1,conv3_1 --units 0-7 --results-dir /tmp/shiftbase

For each layer, ``--results-dir/<weights>_<layer>.h5`` is a swept (and, for ``--old stored``,
analysed) results file of the units. **New**: the analysis's own shift test
(:func:`jaxvis.run.analyze.shift_metrics`, the library defaults unless overridden: offsets
drawn per step, the best image tiled as the start, chunks sized to the device), timed. **Old**:
the optimiser before issue 24 (white-noise start, every ``--old-stride``-th offset in every step's
loss, ``--old-steps`` steps, Adam ``--old-lr``), either run here and timed (``--old run``) or the
texture the file's analysis stored (``--old stored``; ``--old-seconds`` then gives the time per
unit measured when it was made). Both textures are then measured on **every** offset (stride 1):
the index (mean response / the unit's maximum) and the loss (``-mean``, in units of the maximum,
for weight_min 0) on the same offsets, the fair comparison. New runs first, so the peak resident
size printed after it is its own.

Prints a table per layer and writes ``benchmarks/results/shift_speed_<host>_<date>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)


def units_of(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default="vgg19-normalized")
    p.add_argument("--layers", default="conv2_1,conv3_1")
    p.add_argument("--units", default="0-7", help="e.g. 0-7 or 0,3,5")
    p.add_argument("--results-dir", default="/tmp/shiftbase", type=Path)
    p.add_argument("--old", choices=("stored", "run"), default="stored")
    p.add_argument("--old-steps", type=int, default=300)
    p.add_argument("--old-stride", type=int, default=2)
    p.add_argument("--old-lr", type=float, default=0.1)
    p.add_argument("--old-seconds", type=str, default="conv3_1=37",
                   help="with --old stored: seconds per unit per layer measured when the file was analysed "
                        "(layer=s,...; the issue's idle-CPU figure for conv3_1 by default)")
    p.add_argument("--steps", type=int, help="new: most steps (default: the library's)")
    p.add_argument("--batch", type=int, help="new: offsets drawn per step")
    p.add_argument("--lr", type=float, help="new: Adam learning rate")
    p.add_argument("--final-lr", type=float, help="new: share of the learning rate at the last step")
    p.add_argument("--start", choices=("maximum", "noise"), help="new: start texture")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)

    from jaxvis.optimize.parallel import cpu_devices
    cpu_devices()
    import dataclasses

    import jax

    import jaxvis
    from jaxvis.run import analyze as A
    from jaxvis.analysis import shift as S
    from jaxvis.store.results import read_results
    from jaxvis.optimize.config import Optimizer
    from jaxvis.optimize.keys import unit_key

    d = A.SHIFT_DEFAULTS
    o = dataclasses.replace(d.optimizer, **{k: v for k, v in (("steps", args.steps), ("learning_rate", args.lr))
                                            if v is not None})
    settings = dataclasses.replace(d, optimizer=o, **{k: v for k, v in (
        ("batch", args.batch), ("final_lr", args.final_lr), ("start", args.start)) if v is not None})
    new_settings = {"steps": o.steps, "lr": o.learning_rate, "batch": settings.batch,
                    "final_lr": settings.final_lr, "start": settings.start, "stride": settings.stride}
    old_settings = {"steps": args.old_steps, "stride": args.old_stride, "lr": args.old_lr, "source": args.old}
    old_seconds = dict((k, float(v)) for k, v in (x.split("=") for x in args.old_seconds.split(",") if x))
    model = jaxvis.load(args.weights)
    units = units_of(args.units)
    result = {"machine": {"host": platform.node(), "cpus": jax.device_count(), "platform": jax.default_backend()},
              "new": new_settings, "old": old_settings, "units": units, "layers": {}}
    for layer in args.layers.split(","):
        path = args.results_dir / f"{args.weights}_{layer}.h5"
        r = read_results(path)
        at = [int(np.flatnonzero(r.layers[layer]["unit"] == u)[0]) for u in units]
        arrays = {k: v[at] for k, v in r.layers[layer].items()}
        meta, info = r.layer_meta[layer], model.network.layer(layer)
        maximum, directions = arrays["max_activation"], arrays["direction"]
        every = S.ShiftProblem(layer, info.centre, info.canvas, info.rf, model.convention,
                               model.convention.mean_rgb255)  # stride 1: every offset

        t0 = time.perf_counter()
        new = A.shift_metrics(model, info, arrays, directions, meta, settings)
        new_s = (time.perf_counter() - t0) / len(units)
        new_peak = peak_gb()
        new_resp = S.measure(model.network, every, new["shift_texture"], directions, meta["radius"])

        if args.old == "run":
            problem = S.ShiftProblem(layer, info.centre, info.canvas, info.rf, model.convention,
                                     model.convention.mean_rgb255, stride=args.old_stride, weight_min=0.0,
                                     optimizer=Optimizer(steps=args.old_steps, learning_rate=args.old_lr))
            keys = jax.numpy.stack([unit_key(0, f"shift:{layer}", u, 1) for u in units])
            t0 = time.perf_counter()
            chunk = max(1, 4096 // len(problem.offsets) ** 2)  # today's chunks: 4096 crops per call
            old_tex = np.concatenate([S.shift_test(model.network, problem, keys[i:i + chunk], directions[i:i + chunk],
                                                   meta["radius"])["texture"] for i in range(0, len(units), chunk)])
            old_s = (time.perf_counter() - t0) / len(units)
        else:
            old_tex = r.metrics[layer]["shift_texture"][at]
            old_s = old_seconds.get(layer, float("nan"))
        old_resp = S.measure(model.network, every, old_tex, directions, meta["radius"])

        idx_old = old_resp.mean((1, 2)) / maximum
        idx_new = new_resp.mean((1, 2)) / maximum
        delta = idx_new - idx_old
        ok = delta >= -0.02
        rows = [{"unit": u, "index_old": float(a), "index_new": float(b), "loss_old": float(-a), "loss_new": float(-b),
                 "min_old": float(mo), "min_new": float(mn), "steps_new": int(s)}
                for u, a, b, mo, mn, s in zip(units, idx_old, idx_new, old_resp.min((1, 2)) / maximum,
                                              new_resp.min((1, 2)) / maximum, new["shift_steps"])]
        result["layers"][layer] = {
            "rows": rows, "seconds_per_unit_old": old_s, "seconds_per_unit_new": new_s,
            "peak_gb_after_new": new_peak, "median_delta": float(np.median(delta)), "min_delta": float(delta.min()),
            "within_0.02_or_higher": int(ok.sum()), "higher": int((delta > 0).sum()), "count": len(units)}
        print(f"\n{layer} (c = {info.canvas}, {len(every.offsets) ** 2} offsets measured; loss = -index, w = 0)")
        print("| unit | index old | index new | delta | min old | min new | new steps |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for row, dl in zip(rows, delta):
            print(f"| {row['unit']} | {row['index_old']:.3f} | {row['index_new']:.3f} | {dl:+.3f} | "
                  f"{row['min_old']:.3f} | {row['min_new']:.3f} | {row['steps_new']} |")
        print(f"time per unit: old {old_s:.1f} s ({args.old}), new {new_s:.1f} s; median delta {np.median(delta):+.3f}, "
              f"min {delta.min():+.3f}; within 0.02 or higher: {ok.sum()}/{len(units)}; peak resident after new "
              f"{new_peak:.2f} GB")
        out = args.out or RESULTS / f"shift_speed_{platform.node()}_{time.strftime('%Y%m%d-%H%M%S')}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
    print(f"peak resident {peak_gb():.2f} GB; {out}")


if __name__ == "__main__":
    main()
