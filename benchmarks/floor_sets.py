"""Floor sets on real units: how wide, how certain, how phase-spread, at what cost.

    python -m benchmarks.floor_sets --layer conv3_1 --units 0-31 [--baseline OLD.h5 --baseline-seconds S]

Sweeps ``--units`` of ``--layer`` of ``--weights`` (default the Gatys-normalised VGG-19) with a
floor set at ``--floor`` (0.9), N = 6, the sweep's defaults otherwise, twice in one run: with the
default starts (``maximum,phase,diverse``, the widest feasible set kept) and with the cheap
setting (``--floor-starts maximum``, one start). Both are analysed without the shift test
(natural references, gratings, phase rotation: the read-out's phase class). Per unit it reports the
floor set's min pixel distance, its smallest activation fraction, the starts' agreement
(``floor_agreement``), its phase spread (``floor_phase_spread``) and the phase class; per setting
the sweep's wall time.

``--baseline``: a results file of the same layer and units made by an earlier jaxvis (for example
the commit before several starts: ``git worktree add /tmp/base <commit>`` and its ``jaxvis sweep
... --floor 0.9``), compared unit by unit on the same measures; ``--baseline-seconds`` its sweep's
wall time, measured with it (the earlier code cannot be timed from here).

Prints a table and writes ``benchmarks/results/floor_sets/<weights>_<layer>.json``; with
``--figure PNG`` also a picture of two units of the default setting, the complex-like and the
simple-like unit whose phase spread is closest to their class's median: per row the unit's best
image, then its floor set (``figure`` below; also ``python -m benchmarks.floor_sets --figure-from
RESULTS.h5 --figure PNG`` from a kept results file).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "floor_sets"
SETTINGS = {"default": None, "one start": "maximum"}


def measures(path: Path, layer: str, alpha: float, mean_rgb) -> dict[str, np.ndarray]:
    """Per unit of ``layer`` in the results file ``path``: the floor set at ``alpha``'s measures."""
    from jaxvis.analysis import metrics as metric_table
    from jaxvis.store.resultfile import read_results

    results = read_results(path, layers=[layer])
    arrays, meta = results.layers[layer], results.layer_meta[layer]
    a = [round(f, 6) for f in meta["floors"]].index(round(alpha, 6))
    table = {"pixel_min": "floor_pixel_min", "feature_min": "floor_feature_min",
             "fraction_min": "floor_fraction_min", "phase_spread": "floor_phase_spread"}
    measured = metric_table.evaluate({**arrays, "mean_rgb": np.asarray(mean_rgb, np.float32)}, names=list(table.values()))
    out = {"unit": arrays["unit"], "steps": arrays["floor_steps"][:, a],
           **{key: measured[name][:, a] for key, name in table.items()}}
    metrics = results.metrics.get(layer, {})
    if "floor_agreement" in metrics:
        out["agreement"] = np.asarray(metrics["floor_agreement"])[:, a]
    if "phase_class" in metrics:
        out["phase_class"] = np.asarray(metrics["phase_class"])
    if "floor_start_pixel_min" in arrays:
        out["start_pixel_min"] = arrays["floor_start_pixel_min"][:, a]
        out["start_diversity"] = arrays["floor_start_diversity"][:, a]
        out["start_steps"] = arrays["floor_start_steps"][:, a]
    return out


def figure(path: Path, layer: str, out: Path) -> list[int]:
    """Two rows, best image then floor set (alpha of the file's first floor): the complex-like
    and the simple-like unit (read-out phase class) whose phase spread is closest to their class's
    median. Returns their units."""
    from jaxvis.analysis.readout import AXES
    from jaxvis.report.render import save_images
    from jaxvis.store.resultfile import read_results

    results = read_results(path, layers=[layer])
    arrays, metrics = results.layers[layer], results.metrics[layer]
    spread, classes = np.asarray(metrics["floor_phase_spread"])[:, 0], np.asarray(metrics["phase_class"])
    rows = []
    for name in ("complex-like", "simple-like"):
        pick = np.flatnonzero(classes == AXES["phase"].index(name))
        if not len(pick):
            continue
        rows.append(pick[np.argmin(np.abs(spread[pick] - np.median(spread[pick])))])
    images = np.stack([np.concatenate([arrays["max_image"][i][None], arrays["floor_images"][i, 0]]) for i in rows])
    save_images(images, out)
    return [int(arrays["unit"][i]) for i in rows]


def median(x) -> float:
    x = np.asarray(x, np.float64)
    return float(np.nanmedian(x)) if np.isfinite(x).any() else float("nan")


def main(argv=None) -> dict:
    import jaxvis

    jaxvis.cpu_devices()  # as `jaxvis sweep` does: one jax device per core (before any jax work)
    from jaxvis.analysis.readout import AXES
    from jaxvis.weights import load
    from benchmarks.machine import describe, machine_info

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default="vgg19-normalized")
    p.add_argument("--layer", default="conv2_1")
    p.add_argument("--units", default="0-31")
    p.add_argument("--floor", type=float, default=0.9)
    p.add_argument("--baseline", type=Path, help="results file of an earlier jaxvis, same layer and units")
    p.add_argument("--baseline-seconds", type=float, help="that sweep's wall time")
    p.add_argument("--keep", type=Path, help="folder to keep the results files in (default: temporary)")
    p.add_argument("--floor-diversity", help="the floor sets' diversity term (default: the sweep's)")
    p.add_argument("--figure", type=Path, help="also write the two-unit picture (PNG) here")
    p.add_argument("--figure-from", type=Path, help="only the picture, from this results file")
    p.add_argument("--settings", default="default,one start",
                   help=f"which of {', '.join(SETTINGS)} to run (comma-separated)")
    args = p.parse_args(argv)
    if args.figure_from:
        print("units", figure(args.figure_from, args.layer, args.figure))
        return {}
    model = load(args.weights)
    mean = model.convention.mean_rgb255
    folder = args.keep or Path(tempfile.mkdtemp(prefix="floor_sets_"))
    folder.mkdir(parents=True, exist_ok=True)
    rows, seconds = {}, {}
    for name in [s.strip() for s in args.settings.split(",") if s.strip()]:
        out = folder / f"{args.layer}_{name.replace(' ', '_')}.h5"
        starts = {} if SETTINGS[name] is None else {"floor_starts": SETTINGS[name]}
        if args.floor_diversity:
            starts["floor_diversity"] = args.floor_diversity
        t0 = time.perf_counter()
        jaxvis.sweep(model, args.layer, args.units, floors=(args.floor,), out=out, overwrite=True, **starts)
        seconds[name] = time.perf_counter() - t0
        jaxvis.analyze(out, model=model, shift=False, log=lambda *a: None)
        rows[name] = measures(out, args.layer, args.floor, mean)
    if args.baseline:
        rows["baseline"] = measures(args.baseline, args.layer, args.floor, mean)
        seconds["baseline"] = args.baseline_seconds
    first = next(iter(rows.values()))
    classes = first.get("phase_class", np.full(len(first["unit"]), np.nan))
    names = AXES["phase"]
    summary = {}
    for name, r in rows.items():
        if not np.array_equal(r["unit"], first["unit"]):
            raise SystemExit(f"{name}: units {r['unit']} are not the benchmark's {first['unit']}")
        s = {"seconds": seconds.get(name), "median_pixel_min": median(r["pixel_min"]),
             "median_feature_min": median(r["feature_min"]), "smallest_fraction": float(np.min(r["fraction_min"])),
             "sets_at_floor": int(np.sum(r["fraction_min"] >= args.floor)),
             "median_steps": median(r["steps"])}
        for k, cls in enumerate(names):
            pick = classes == k
            s[f"median_phase_spread_{cls}"] = median(r["phase_spread"][pick]) if pick.any() else None
            s[f"units_{cls}"] = int(pick.sum())
        if "agreement" in r:
            s["settled_share"] = float(np.mean(np.nan_to_num(r["agreement"]) >= 0.95))
            s["median_agreement"] = median(r["agreement"])
        if name != "default" and "default" in rows:
            s["default_over_this_pixel_min"] = median(rows["default"]["pixel_min"] / r["pixel_min"])
            s["default_over_this_feature_min"] = median(rows["default"]["feature_min"] / r["feature_min"])
        summary[name] = s
    print(f"{args.weights} {args.layer} units {args.units}, floor {args.floor}, N = 6")
    head = ("setting", "seconds", "median min px", "median min feat", "smallest frac", "at floor",
            "med steps", "settled", "spread complex", "spread simple", "default/this px")
    print(" | ".join(head))
    for name, s in summary.items():
        cells = (name, f"{s['seconds']:.0f}" if s["seconds"] else "-", f"{s['median_pixel_min']:.2f}",
                 f"{s['median_feature_min']:.3g}", f"{s['smallest_fraction']:.4f}",
                 f"{s['sets_at_floor']}/{len(first['unit'])}", f"{s['median_steps']:.0f}",
                 f"{s['settled_share']:.0%}" if "settled_share" in s else "-",
                 f"{s['median_phase_spread_complex-like'] or float('nan'):.0f}",
                 f"{s['median_phase_spread_simple-like'] or float('nan'):.0f}",
                 f"{s.get('default_over_this_pixel_min', float('nan')):.2f}")
        print(" | ".join(cells))
    units = {name: {k: np.asarray(v).tolist() for k, v in r.items()} for name, r in rows.items()}
    record = {"weights": args.weights, "layer": args.layer, "units": args.units, "floor": args.floor,
              "machine": machine_info(with_torch=False), "machine_line": describe(machine_info(with_torch=False)), "summary": summary, "per_unit": units,
              "phase_class_names": list(names), "baseline": str(args.baseline) if args.baseline else None}
    if args.figure and "default" in rows:
        record["figure_units"] = figure(folder / f"{args.layer}_default.h5", args.layer, args.figure)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{args.weights}_{args.layer}.json"
    path.write_text(json.dumps(record, indent=1, default=float))
    print(f"saved {path}")
    return record


if __name__ == "__main__":
    main()
