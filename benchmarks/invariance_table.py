"""The paper's comparison with the networks jaxvis has: what the units of early
layers of VGG-19 and EfficientNet-Lite0 are invariant to, per layer, with the wall time of each
stage.

For each (network, layer) of :data:`PLAN` (layers of the two networks paired by receptive field)
the script sweeps the first ``--units`` units with the defaults of ``jaxvis sweep`` plus an
activation-floor set at alpha = 0.9 (``--floor 0.9``), analyses them (natural references, grating
battery, phase rotation, shift test) and reads the per-layer profile of the read-out
(:mod:`jaxvis.analysis.readout`). It writes, in ``--out`` (default
``benchmarks/results/invariance``):

- ``<weights>_<layer>.h5`` (+ ``.csv``): the results files (rerunning resumes: a finished stage is
  not recomputed, and its first measured time is kept in ``timings-<weights>.json``);
- ``invariance.json`` and ``invariance.md``: the table, the machine and the settings.

    python -m benchmarks.invariance_table                     # up to 32 units a layer: 49 min, idle 2-core CPU
    python -m benchmarks.invariance_table --units 8 --steps 300   # a quick look
    python -m benchmarks.invariance_table --table-only        # the table from files already there
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

from benchmarks.tables import RESULTS, markdown

# (weights, layers): the VGG-19 layers of the paper's early range and the EfficientNet-Lite0 layers
# of about the same receptive field (rf 3 / 10 / 24 px against 3 / 11 / 19 px)
PLAN = (("vgg19-normalized", ("conv1_1", "conv2_1", "conv3_1")),
        ("efficientnet-lite0", ("stem", "blocks.1", "blocks.2")))
ALPHA = 0.9


def parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.invariance_table",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=RESULTS / "invariance")
    p.add_argument("--units", type=int, default=32, help="first U units of each layer (default 32)")
    p.add_argument("--steps", type=int, default=1000, help="optimiser steps (sweep default 1000)")
    p.add_argument("--shift-steps", type=int, default=300, help="steps of the shift test (as make demo)")
    p.add_argument("--shift-max-canvas", type=int, default=None,
                   help="run the shift test only on layers whose canvas is at most this (it is an "
                        "optimisation per unit over every offset: the costly stage on a CPU); default all")
    p.add_argument("--only", default="", help="comma-separated weights names to run (default all)")
    p.add_argument("--table-only", action="store_true", help="no computation: the table from the files")
    return p.parse_args(argv)


def _load_timings(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _save_timings(path: Path, timings: dict) -> None:
    from jaxvis.io.atomic import write_text
    write_text(path, json.dumps(timings, indent=1, sort_keys=True) + "\n")


def compute(args) -> dict:
    """Sweep and analyse every (network, layer) of the plan not done yet; returns the timings
    ``{"<weights>/<layer>": {"sweep_s": ..., "analyze_s": ..., "gratings_s": ...}}``."""
    import jaxvis
    jaxvis.cpu_devices()  # as `jaxvis sweep` does: one jax device per core
    from jaxvis.analysis.gratings import gratings
    from jaxvis.store.results import read_results

    timings = {}
    only = {s for s in args.only.split(",") if s}
    for weights, layers in PLAN:
        if only and weights not in only:
            continue
        timings_path = args.out / f"timings-{weights}.json"  # one per network: networks can run at once
        timings.update(_load_timings(timings_path))
        model = jaxvis.load(weights)
        for layer in layers:
            key, path = f"{weights}/{layer}", args.out / f"{weights}_{layer}.h5"
            if not path.exists():  # timings without their file (a fresh checkout): measure again
                timings.pop(key, None)
            entry = timings.setdefault(key, {})
            channels = model.network.layer(layer).channels
            units = f"0-{min(args.units, channels) - 1}"
            if "sweep_s" not in entry:
                t = time.perf_counter()
                jaxvis.sweep(model, layer, units, out=path, floors=(ALPHA,), steps=args.steps, progress=True)
                entry.update(sweep_s=time.perf_counter() - t, units=units, steps=args.steps)
                _save_timings(timings_path, {k: v for k, v in timings.items() if k.startswith(f"{weights}/")})
            if "analyze_s" not in entry:
                t = time.perf_counter()
                canvas = model.network.layer(layer).canvas
                shift = args.shift_max_canvas is None or canvas <= args.shift_max_canvas
                jaxvis.analyze(path, model=model, shift=shift, shift_steps=args.shift_steps,
                               shift_stride=2 if canvas >= 20 else 1)
                entry.update(analyze_s=time.perf_counter() - t, shift_test=shift)
                # the battery alone (it ran inside analyze too): forward passes only
                results = read_results(path)
                arrays, meta = results.layers[layer], results.layer_meta[layer]
                directions = results.sweep_config.basis(channels)[arrays["unit"]]
                t = time.perf_counter()
                gratings(model, layer, radius=meta["radius"], directions=directions,
                         maximum=arrays["max_activation"])
                entry["gratings_s"] = time.perf_counter() - t
                _save_timings(timings_path, {k: v for k, v in timings.items() if k.startswith(f"{weights}/")})
    return timings


def table(args, timings: dict) -> dict:
    """The per-layer profiles of the read-out beside the stage times: ``invariance.json`` / ``.md``."""
    from benchmarks.machine import machine_info
    from jaxvis.analysis.readout import format_profiles
    from jaxvis.report.summary import layer_profiles  # reads the file; readout is the pure rules

    rows = []
    for weights, layers in PLAN:
        for layer in layers:
            path = args.out / f"{weights}_{layer}.h5"
            if not path.exists():
                continue
            profile = layer_profiles(path)[layer]
            rows.append({"weights": weights, "layer": layer, "profile": profile,
                         **timings.get(f"{weights}/{layer}", {})})
    result = {"benchmark": "invariance_table", "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "machine": machine_info(), "alpha": ALPHA, "args": {k: str(v) for k, v in vars(args).items()},
              "rows": [{**r, "profile": _plain(r["profile"])} for r in rows]}
    times = markdown(["network", "layer", "units", "sweep (s)", "analyze (s)", "shift test",
                      "grating battery alone (s)"],
                     [[r["weights"], r["layer"], r.get("units", ""), _s(r.get("sweep_s")), _s(r.get("analyze_s")),
                       "yes" if r.get("shift_test", True) else "not run", _s(r.get("gratings_s"))] for r in rows])
    text = (format_profiles({f"{r['weights']} {r['layer']}": r["profile"] for r in rows})
            + "\n\nWall time of each stage on this machine:\n\n" + times + "\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "invariance.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (args.out / "invariance.md").write_text(text)
    print(text)
    return result


def _s(seconds) -> str:
    return "" if seconds is None else f"{seconds:.0f}"


def _plain(profile):
    import dataclasses
    return dataclasses.asdict(profile) if dataclasses.is_dataclass(profile) else profile


def main(argv=None):
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        compute(args)
    timings = {k: v for path in sorted(args.out.glob("timings-*.json")) for k, v in _load_timings(path).items()}
    return table(args, timings)


if __name__ == "__main__":
    main()
