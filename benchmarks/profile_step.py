"""Where the time of one optimiser step goes: a per-op profile of the sweep's compiled step.

Runs ``--steps`` steps of one unit (real VGG-19 by default, the sweep's own problem: canvas,
radius, feature layer; early stopping off) in one jitted ``lax.scan`` under ``jax.profiler``, reads
the trace back and prints, per step: every op of the compiled program with its time, its pass
(forward or backward, from the HLO metadata), its output shape and what it computes, grouped into

- ``matmul``:  dots and convolutions (on CPU, XLA hands them to YNNPACK as ``ynn_fusion``),
- ``patches``: concatenates and the slices feeding them (the im2col of jaxvis's convolutions),
- ``other``:   everything else (elementwise, pooling and ReLU gradients with the col2im
  scatter-adds fused in, FFTs of the gradient whitening, Adam).

It also prints XLA's FLOP count of the step and the matmul share of the measured time. The JSON
(``benchmarks/results/profile_<layer>_<host>_<date>.json``) has every op. On CPU the per-op
events need ``--xla_cpu_enable_xprof_traceme``, which the script sets before jax starts.

    python -m benchmarks.profile_step --layer conv3_1     # ~1 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import collections
import datetime
import glob
import gzip
import json
import os
import re
import tempfile
import time
from pathlib import Path

from benchmarks.tables import RESULTS, stamp, write_json


WRAPPERS = ("$", "Thunk", "Slinky", "Pjit", "end: ", "ParseArguments", "CommonPjRt", "while")


def hlo_ops(text: str) -> dict[str, dict]:
    """instruction name -> output shape and the jax op it computes (``op_name`` metadata),
    from compiled HLO text."""
    ops = {}
    pattern = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\S+) \w[\w\-]*\(")
    for line in text.splitlines():
        m = pattern.match(line)
        if m:
            op_name = re.search(r'op_name="([^"]*)"', line)
            ops[m.group(1)] = {"shape": m.group(2), "op_name": op_name.group(1) if op_name else ""}
    return ops


def category(name: str, computes: str) -> str:
    """matmul / patches / other, from the op's name and the jax op its HLO metadata names."""
    if computes.endswith(("dot_general", "conv_general_dilated")):
        return "matmul"
    forward = "transpose(" not in computes
    if name.startswith("concatenate") or (forward and computes.endswith(("/slice", "/concatenate"))):
        return "patches"
    return "other"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--weights", default="vgg19")
    p.add_argument("--layer", default="conv3_1")
    p.add_argument("--images", type=int, default=6)
    p.add_argument("--steps", type=int, default=10, help="steps per profiled call")
    p.add_argument("--calls", type=int, default=3, help="profiled calls (after one warm-up)")
    p.add_argument("--top", type=int, default=25, help="ops listed")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true").strip()
    import jax
    import jax.numpy as jnp
    from flax import nnx

    import jaxvis
    from benchmarks.flops import xla_flops
    from benchmarks.machine import machine_info
    from benchmarks.variants import layer_problem, unit_inputs
    from jaxvis.models import ops
    from jaxvis.optimize import step as unit_step

    model = jaxvis.load(args.weights)
    lp = layer_problem(model, args.layer, args.images, args.steps)
    problem = lp.diverse
    graphdef, params = nnx.split(model.network)
    keys, directions = unit_inputs(lp, [0])
    state, direction = unit_step.init(keys[0], problem), jnp.asarray(directions[0])
    radius = jnp.float32(lp.radius)

    @jax.jit
    def steps(params, state, direction, radius):
        net = nnx.merge(graphdef, params)
        with ops.precision(problem.optimizer.precision):
            return jax.lax.scan(lambda s, _: (unit_step.step(s, net, problem, direction, radius), None),
                                state, None, length=args.steps)[0]

    compiled = steps.lower(params, state, direction, radius).compile()
    info = hlo_ops(compiled.as_text())
    # XLA counts a loop's body once, whatever its trip count: count one step on its own
    flops = xla_flops(model.network, problem, lp.radius)["step_one_unit"]
    jax.block_until_ready(steps(params, state, direction, radius))
    with tempfile.TemporaryDirectory() as folder:
        t = time.perf_counter()
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            for _ in range(args.calls):
                jax.block_until_ready(steps(params, state, direction, radius))
        wall = (time.perf_counter() - t) / (args.calls * args.steps)
        trace = glob.glob(f"{folder}/**/*.trace.json.gz", recursive=True)[0]
        events = json.load(gzip.open(trace))["traceEvents"]
    per_op, count = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") == "X" and not e["name"].startswith(WRAPPERS):
            per_op[e["name"]] += e["dur"] * 1e-3   # microseconds -> ms
            count[e["name"]] += 1
    n = args.calls * args.steps
    rows = []
    for name, ms in per_op.most_common():
        i = info.get(name, {})
        what = i.get("op_name", "")
        rows.append({"op": name, "ms_per_step": ms / n, "calls_per_step": count[name] / n,
                     "category": category(name, what), "pass": "backward" if "transpose(" in what else "forward",
                     "shape": i.get("shape", ""), "computes": what.rsplit("/", 1)[-1]})
    total = sum(r["ms_per_step"] for r in rows)
    by_cat = collections.Counter()
    for r in rows:
        by_cat[r["category"]] += r["ms_per_step"]

    print(f"{args.layer}: {args.images} images of {lp.info.canvas} px, one unit, {args.steps} steps per call; "
          f"ops {total:.2f} ms per step (wall {wall * 1e3:.2f} ms with the profiler on)")
    if flops:
        print(f"XLA's count: {flops / 1e6:.1f} MFLOP per step -> {flops / total / 1e6:.1f} GFLOP/s over the ops' time")
    print("\n| share | ms/step | category |\n|---|---|---|")
    for cat, ms in by_cat.most_common():
        print(f"| {100 * ms / total:.1f}% | {ms:.3f} | {cat} |")
    print("\n| ms/step | category | pass | output | computes | op |\n|---|---|---|---|---|---|")
    for r in rows[: args.top]:
        print(f"| {r['ms_per_step']:.3f} | {r['category']} | {r['pass']} | {r['shape']} | {r['computes']} | {r['op']} |")
    result = {"benchmark": "profile_step", "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "args": {k: str(v) for k, v in vars(args).items()}, "machine": machine_info(),
              "layer": args.layer, "canvas": lp.info.canvas, "ops_ms_per_step": total,
              "wall_ms_per_step": wall * 1e3, "xla_flops_per_step": flops,
              "by_category_ms": dict(by_cat), "ops": rows}
    out = write_json(args.out or RESULTS / f"profile_{args.layer}_{result['machine']['host']}_{stamp()}.json",
                     result)
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
