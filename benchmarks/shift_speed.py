"""The shift test's cost and result: variants of jaxvis's optimiser against the paper's, side by side.

    python -m benchmarks.shift_speed --layers conv2_1,conv3_1 --units 0-31 --results-dir DIR \
        [--variant default] [--variant grid:batch=36,sampling=grid] ...

For each layer, ``DIR/<weights>_<layer>.h5`` is a swept (and, for ``--old stored``, analysed)
results file holding the units. **Old**: the paper's optimiser (white-noise start, every
``--old-stride``-th offset in every step's loss, ``--old-steps`` steps, Adam ``--old-lr``), either
run here and timed (``--old run``, cached in ``DIR`` as an ``.npz`` per layer and setting, so a
second call with other variants reuses it) or the texture the file's analysis stored (``--old
stored``; ``--old-seconds`` then gives the time per unit measured when it was made). **Variants**
(``--variant NAME:key=value,...``, repeatable; keys steps, lr, batch, final_lr, start, sampling;
default one variant, the library's defaults): the analysis's own shift test
(:func:`jaxvis.run.analyze.shift_metrics`, chunks sized to the device), timed. Every texture is
then measured on **every** offset (stride 1): the index (mean response / the unit's maximum) on
the same offsets for all, the fair comparison (for weight_min 0 a higher index is a lower loss).

Prints a table per layer (seconds per unit, the median and smallest index difference against the
old optimiser, how many units are within 0.02 of it or higher) and writes
``benchmarks/results/shift_speed_<host>_<date>.json`` (or ``--out``). The peak resident size
printed at the end covers the whole process (the old run included).
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


OVERRIDES = {"steps": int, "lr": float, "batch": int, "final_lr": float, "start": str, "sampling": str}


def variant(text: str) -> tuple[str, dict]:
    """``name:key=value,key=value`` (keys of ``OVERRIDES``) -> (name, overrides)."""
    name, _, rest = text.partition(":")
    pairs = [kv.split("=") for kv in rest.split(",") if kv]
    bad = [k for k, _ in pairs if k not in OVERRIDES]
    if bad:
        raise SystemExit(f"unknown variant setting(s) {bad}; choose from {sorted(OVERRIDES)}")
    return name, {k: OVERRIDES[k](v) for k, v in pairs}


def settings_of(defaults, overrides: dict):
    import dataclasses

    o = dataclasses.replace(defaults.optimizer, **{k: v for k, v in (("steps", overrides.get("steps")),
                                                                     ("learning_rate", overrides.get("lr")))
                                                   if v is not None})
    rest = {k: v for k, v in overrides.items() if k not in ("steps", "lr")}
    return dataclasses.replace(defaults, optimizer=o, **rest)


def old_textures(args, model, S, layer, info, units, directions, radius, r, at):
    """The old optimiser's textures and seconds per unit: stored in the file (``--old stored``), or
    run here (``--old run``) and cached in ``--results-dir`` (same units and settings: reused)."""
    import jax

    from jaxvis.optimize.config import Optimizer
    from jaxvis.optimize.keys import unit_key

    if args.old == "stored":
        seconds = dict((k, float(v)) for k, v in (x.split("=") for x in args.old_seconds.split(",") if x))
        return r.metrics[layer]["shift_texture"][at], seconds.get(layer, float("nan"))
    cache = args.results_dir / f"{args.weights}_{layer}_old_{args.old_steps}_{args.old_stride}_{args.old_lr}.npz"
    if cache.exists():
        stored = np.load(cache)
        have = list(stored["units"])
        if all(u in have for u in units):
            pick = [have.index(u) for u in units]
            return stored["texture"][pick], float(stored["seconds"])
    problem = S.ShiftProblem(layer, info.centre, info.canvas, info.rf, model.convention,
                             model.convention.mean_rgb255, stride=args.old_stride, weight_min=0.0,
                             optimizer=Optimizer(steps=args.old_steps, learning_rate=args.old_lr))
    keys = jax.numpy.stack([unit_key(0, f"shift:{layer}", u, 1) for u in units])
    t0 = time.perf_counter()
    chunk = max(1, 4096 // len(problem.offsets) ** 2)  # the old chunks: 4096 crops per call
    texture = np.concatenate([S.shift_test(model.network, problem, keys[i:i + chunk], directions[i:i + chunk],
                                           radius)["texture"] for i in range(0, len(units), chunk)])
    seconds = (time.perf_counter() - t0) / len(units)
    np.savez(cache, units=np.asarray(units), texture=texture, seconds=seconds)
    return texture, seconds


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default="vgg19-normalized")
    p.add_argument("--layers", default="conv2_1,conv3_1")
    p.add_argument("--units", default="0-7", help="e.g. 0-7 or 0,3,5")
    p.add_argument("--results-dir", default="/tmp/shiftbase", type=Path)
    p.add_argument("--old", choices=("stored", "run"), default="run")
    p.add_argument("--old-steps", type=int, default=300)
    p.add_argument("--old-stride", type=int, default=2)
    p.add_argument("--old-lr", type=float, default=0.1)
    p.add_argument("--old-seconds", type=str, default="conv3_1=37",
                   help="with --old stored: seconds per unit per layer measured when the file was analysed "
                        "(layer=s,...; the issue's idle-CPU figure for conv3_1 by default)")
    p.add_argument("--variant", action="append", type=variant, metavar="NAME:KEY=VALUE,...",
                   help=f"a new-optimiser setting to measure (repeatable; keys {', '.join(OVERRIDES)}); "
                        "default: one variant, the library's defaults")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)

    from jaxvis.optimize.parallel import cpu_devices
    cpu_devices()
    import jax

    import jaxvis
    from jaxvis.run import analyze as A
    from jaxvis.run.plan import parse_units
    from jaxvis.analysis import shift as S
    from jaxvis.store.results import read_results

    variants = args.variant or [("default", {})]
    model = jaxvis.load(args.weights)
    old_settings = {"steps": args.old_steps, "stride": args.old_stride, "lr": args.old_lr, "source": args.old}
    result = {"machine": {"host": platform.node(), "cpus": jax.device_count(), "platform": jax.default_backend()},
              "defaults": json.loads(json.dumps(A.SHIFT_DEFAULTS, default=lambda o: o.__dict__)),
              "variants": dict(variants), "old": old_settings, "units": args.units, "layers": {}}
    out = args.out or RESULTS / f"shift_speed_{platform.node()}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    for layer in args.layers.split(","):
        r = read_results(args.results_dir / f"{args.weights}_{layer}.h5")
        units = parse_units(args.units, model.network.layer(layer).channels, layer)
        at = [int(np.flatnonzero(r.layers[layer]["unit"] == u)[0]) for u in units]
        arrays = {k: v[at] for k, v in r.layers[layer].items()}
        meta, info = r.layer_meta[layer], model.network.layer(layer)
        maximum, directions = arrays["max_activation"], arrays["direction"]
        every = S.ShiftProblem(layer, info.centre, info.canvas, info.rf, model.convention,
                               model.convention.mean_rgb255)  # stride 1: every offset
        old_tex, old_s = old_textures(args, model, S, layer, info, units, directions, meta["radius"], r, at)
        idx_old = S.measure(model.network, every, old_tex, directions, meta["radius"]).mean((1, 2)) / maximum
        entry = {"index_old": idx_old.tolist(), "seconds_per_unit_old": old_s, "variants": {}}
        print(f"\n{layer} (c = {info.canvas}, {len(every.offsets) ** 2} offsets measured; index = mean response / "
              f"maximum; old: {old_s:.1f} s per unit)")
        print("| variant | s per unit | median delta | min delta | within 0.02 or higher | higher | steps |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, overrides in variants:
            settings = settings_of(A.SHIFT_DEFAULTS, overrides)
            t0 = time.perf_counter()
            new = A.shift_metrics(model, info, arrays, directions, meta, settings)
            new_s = (time.perf_counter() - t0) / len(units)
            idx = new["shift_responses"].mean((1, 2)) / maximum
            delta = idx - idx_old
            entry["variants"][name] = {"seconds_per_unit": new_s, "index": idx.tolist(), "delta": delta.tolist(),
                                       "steps": new["shift_steps"].tolist(), "peak_gb": peak_gb(),
                                       "median_delta": float(np.median(delta)), "min_delta": float(delta.min()),
                                       "within": int((delta >= -0.02).sum()), "higher": int((delta > 0).sum())}
            print(f"| {name} | {new_s:.1f} | {np.median(delta):+.3f} | {delta.min():+.3f} | "
                  f"{(delta >= -0.02).sum()}/{len(units)} | {(delta > 0).sum()} | {int(np.median(new['shift_steps']))} |",
                  flush=True)
        result["layers"][layer] = entry
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
    print(f"peak resident {peak_gb():.2f} GB; {out}")


if __name__ == "__main__":
    main()
