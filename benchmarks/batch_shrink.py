"""Stopped units leaving the batch (``jaxvis.optimize.loop.Batch``) against the whole chunk running
to its slowest unit, side by side in one process.

    python -m benchmarks.batch_shrink                       # conv3_1 units 0-15, no floor set
    python -m benchmarks.batch_shrink --floor 0.9 --units 0-15
    python -m benchmarks.batch_shrink --shift RESULTS.h5 --units 0-15   # analyze's shift test

Each setting sweeps the same units of ``--layer`` (``jaxvis.sweep`` with its defaults: the
maximum's 4 restarts, the lambda set, and ``--floor`` sets if given) in ``--rounds`` interleaved
rounds (whole, shrink, whole, shrink, ...), every sweep in full; the first round compiles (the
shrinking setting has more programs to compile: one per halved batch size), so the table gives
the first round and the best of the later ones. Per setting: wall seconds, the row-segments the devices computed (a row is a unit's restart, set or floor start in the
batch, counted every segment), and the results' agreement (max relative difference of the
units' final activations; the step counts). Prints a table and writes
``results/batch_shrink_<host>-<device>_<date>.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import describe, machine_info
from benchmarks.tables import default_out, markdown, write_json

SETTINGS = ("whole", "shrink")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default="vgg19-normalized")
    p.add_argument("--layer", default="conv3_1")
    p.add_argument("--units", default="0-15")
    p.add_argument("--floor", default="", help="floor sets, e.g. 0.9 (default none)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--shift", type=Path, default=None, metavar="RESULTS.h5",
                   help="time analyze's shift test (default settings) of --units of this results file's "
                        "--layer instead of the sweep")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    from jaxvis.optimize.parallel import cpu_devices

    cpu_devices()
    import jax

    import jaxvis
    from jaxvis.optimize import loop

    model = jaxvis.load(args.weights)
    run = shift_test(model, args) if args.shift else \
        (lambda: jaxvis.sweep(model, args.layer, args.units, floors=args.floor or ())[args.layer])
    from jaxvis.analysis import shift

    rows_computed, shrink = [0], dict(loop.SHRINK)
    segments = {module: module._segment for module in (loop, shift)}  # the sweep's and the shift test's

    def counted(segment):
        def run(params, states, directions, *rest, **kw):
            rows_computed[0] += len(directions)
            return segment(params, states, directions, *rest, **kw)
        return run

    for module, segment in segments.items():
        module._segment = counted(segment)
    runs = {s: [] for s in SETTINGS}
    for r in range(args.rounds):
        for setting in SETTINGS:
            loop.SHRINK.update(cpu=setting == "shrink", accelerator=setting == "shrink")  # any platform
            rows_computed[0] = 0
            t = time.perf_counter()
            out = run()
            seconds = time.perf_counter() - t
            runs[setting].append({"round": r, "seconds": seconds, "row_segments": rows_computed[0], "out": out})
            print(f"round {r} {setting}: {seconds:.1f} s, {rows_computed[0]} row-segments", flush=True)
    loop.SHRINK.update(shrink)
    for module, segment in segments.items():
        module._segment = segment

    ref = runs["whole"][-1]["out"]
    value = "shift_responses" if args.shift else "activations"  # each unit's mean of these is compared
    rows, result = [], {"benchmark": "batch_shrink", "machine": machine_info(with_torch=False),
                        "args": vars(args), "devices": jax.device_count(), "settings": {}}
    for setting in SETTINGS:
        first, later = runs[setting][0], runs[setting][1:] or runs[setting][:1]
        best = min(later, key=lambda x: x["seconds"])
        o = best["out"]
        mean = lambda r: r[value].reshape(len(r[value]), -1).mean(1)  # noqa: E731
        act = np.abs(mean(o) / mean(ref) - 1).max()
        key = "shift_steps" if args.shift else "steps"
        steps = np.abs(o[key].astype(int) - ref[key].astype(int)).max()
        entry = {"first_s": first["seconds"], "best_later_s": best["seconds"],
                 "all_s": [x["seconds"] for x in runs[setting]], "row_segments": best["row_segments"],
                 "activation_rel_diff_vs_whole": float(act),
                 "steps_diff_vs_whole": int(steps)}
        if "floor_diversity" in o:
            entry["floor_width_ratio_vs_whole"] = [float(x) for x in
                                                   (o["floor_diversity"] / ref["floor_diversity"]).ravel()]
        result["settings"][setting] = entry
        rows.append([setting, f"{entry['first_s']:.1f}", f"{entry['best_later_s']:.1f}", entry["row_segments"],
                     f"{act:.1e}", steps])
    base = result["settings"]["whole"]["best_later_s"]
    result["speedup"] = base / result["settings"]["shrink"]["best_later_s"]
    print()
    print(markdown(["setting", "first round (s, compile incl.)", "best later round (s)", "row-segments computed",
                    f"{value} vs whole (max rel.)", "steps vs whole (max diff.)"], rows))
    what = f"the shift test of {args.shift.name}" if args.shift else f"the sweep, floors {args.floor or 'none'}"
    print(f"\n{describe(result['machine'])}; {args.weights} {args.layer} units {args.units}, {what}; "
          f"shrink / whole: {result['speedup']:.2f}x faster")
    path = write_json(default_out("batch_shrink", result["machine"]) if args.out is None else args.out, result)
    print(f"wrote {path}")


def shift_test(model, args):
    """A call of ``analyze``'s shift test (its default settings) of ``args.units`` of the results
    file ``args.shift``'s layer, as ``jaxvis analyze`` runs it."""
    from jaxvis.run import analyze as A
    from jaxvis.run.plan import parse_units
    from jaxvis.store.results import read_results

    results = read_results(args.shift, layers=[args.layer])
    arrays, info = results.layers[args.layer], model.network.layer(args.layer)
    pick = np.isin(arrays["unit"], parse_units(args.units, info.channels, args.layer))
    arrays = {k: v[pick] for k, v in arrays.items()}
    directions = np.eye(info.channels, dtype=np.float32)[arrays["unit"]]
    settings = A.AnalysisConfig().shift_settings()
    return lambda: A.shift_metrics(model, info, arrays, directions, results.layer_meta[args.layer], settings)


if __name__ == "__main__":
    main()
