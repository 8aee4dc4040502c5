"""Per-step cost of the random transforms and of the Fourier parameterisation, side by side in one
run: real VGG-19, a few conv2_1 units, N = 6, the sweep's chunk over all devices (on CPU one per
core), passes interleaved, the best of three kept (docs/method.md sections 9 and 10).

    python -m benchmarks.bench_transforms                       # ~3 min on 2 CPU cores
    python -m benchmarks.bench_transforms --layer conv3_1 --units 4
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import numpy as np

VARIANTS = {  # name -> Objective changes
    "paper (pixel, no transforms)": {},
    "transforms (jitter 2, scales 1/0.95/1.05, rotate 5, pad 4)": {"transforms": dict(
        jitter=2, scales=(1.0, 0.95, 1.05), rotate=5.0, pad=4)},
    "fourier, no transforms": {"param": "fourier"},
    "fourier + transforms": {"param": "fourier", "transforms": dict(
        jitter=2, scales=(1.0, 0.95, 1.05), rotate=5.0, pad=4)},
}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layer", default="conv2_1")
    p.add_argument("--units", type=int, default=8)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    from jaxvis.optimize.parallel import cpu_devices
    cpu_devices()
    import jaxvis
    from jaxvis.optimize.config import Objective, Optimizer
    from jaxvis.optimize.keys import unit_key
    from jaxvis.optimize.loop import optimize
    from jaxvis.param.transform import Transforms
    from jaxvis.run.plan import configure, plan

    model = jaxvis.load("vgg19")
    optimizer = Optimizer(steps=args.steps, patience=10 * args.steps)  # no early stops: equal work
    problems = {}
    for name, change in VARIANTS.items():
        change = {k: Transforms(**v) if k == "transforms" else v for k, v in change.items()}
        lp = plan(model, configure(model, args.layer, range(args.units), objective=Objective(**change),
                                  optimizer=optimizer))[0]
        problems[name] = (lp.diverse, lp.radius)
    keys = jax.numpy.stack([unit_key(0, args.layer, u, 6) for u in range(args.units)])
    directions = np.eye(model.network.layer(args.layer).channels, dtype=np.float32)[:args.units]
    best = {name: np.inf for name in problems}
    for name, (problem, radius) in problems.items():  # compile and warm up
        optimize(model.network, problem, keys, directions, radius)
    for _ in range(args.repeats):
        for name, (problem, radius) in problems.items():
            start = time.perf_counter()
            optimize(model.network, problem, keys, directions, radius)
            best[name] = min(best[name], time.perf_counter() - start)
    base = best[next(iter(best))]
    print(f"{args.layer}, {args.units} units x N=6 x {args.steps} steps, {jax.device_count()} "
          f"{jax.devices()[0].platform} devices, best of {args.repeats}")
    print(f"{'variant':<62}{'ms/unit-step':>14}{'unit-steps/s':>14}{'vs paper':>10}")
    for name, seconds in best.items():
        per = seconds / (args.units * args.steps)
        print(f"{name:<62}{1e3 * per:>14.3f}{1 / per:>14.1f}{seconds / base:>9.2f}x")


if __name__ == "__main__":
    main()
