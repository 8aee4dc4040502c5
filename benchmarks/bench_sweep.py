"""Sweep speed: unit-steps per second of the diverse-visualisation optimiser (DESIGN.md section 4).

A *unit-step* is one Adam step of one unit with its N images. In one run on one machine this
script measures, per target layer of real VGG-19 (VALID canvas):

1. ``jaxvis sweep``   - :func:`jaxvis.optimize.loop.optimise` on U units in the sweep's own chunks
   over all devices (on CPU one device per core, as ``jaxvis sweep``);
2. ``jaxvis one device, batched`` - the same U units as one chunk on one device;
3. ``jaxvis per-unit`` - the same function with a chunk of 1, looped over a few units (how the
   original code ran: one unit after another);
4. ``torch per-unit``  - the same algorithm written in PyTorch eager, one unit at a time (when
   torch is importable), checked against jaxvis's objective on the same ``z`` first.

Each variant: one untimed pass, then the best of ``--timed-repeats`` timed passes.

Achieved GFLOP/s use the *useful* FLOPs (2 x the forward convolutions of N canvas-sized images up
to the target: forward plus input gradient), compared with a float32 matmul timed in the same run.

    PYTHONPATH=. python benchmarks/bench_sweep.py                 # defaults: ~6 min on 2 CPU cores
    PYTHONPATH=. python benchmarks/bench_sweep.py --layers conv3_1 --units 256 --steps 200
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import socket
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


# --------------------------------------------------------------------------------------------------
# machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def core_count() -> int:
    # the cores this process may run on (a container's cpuset), not the host's total
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_info() -> dict:
    import jax
    import jaxlib

    device = jax.devices()[0]
    info = {"host": socket.gethostname(), "cpu": cpu_model(), "cores": core_count(),
            "python": platform.python_version(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "backend": jax.default_backend(), "device_kind": device.device_kind,
            "devices": len(jax.devices())}
    torch = _torch()
    info["torch"] = torch.__version__ if torch else None
    if torch:
        info["torch_threads"] = torch.get_num_threads()
    return info


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


class CpuMeter:
    """How many cores *other* processes kept busy while a measurement ran (from /proc/stat minus
    this process's own CPU time): on a shared machine a busy neighbour explains a slow row."""

    def __enter__(self):
        self.wall, self.busy, self.own = time.perf_counter(), _busy_seconds(), _own_seconds()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.wall
        if self.busy is None:
            self.others = None
        else:
            others = (_busy_seconds() - self.busy) - (_own_seconds() - self.own)
            self.others = max(others, 0.0) / max(wall, 1e-9)
        return False


def _busy_seconds() -> float | None:
    """CPU seconds spent by everything on the machine (all cores, not idle, not iowait)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


def matmul_peak(size: int, repeats: int) -> dict:
    """Best-of-``repeats`` GFLOP/s of a jitted float32 ``jnp.dot`` of two ``size x size`` matrices:
    the machine's practical peak, measured next to the benchmark rather than taken from a sheet."""
    import jax
    import jax.numpy as jnp

    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (size, size), jnp.float32)
    b = jax.random.normal(kb, (size, size), jnp.float32)
    dot = jax.jit(jnp.dot)
    dot(a, b).block_until_ready()  # compile and warm the caches
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        dot(a, b).block_until_ready()
        times.append(time.perf_counter() - t)
    flops = 2.0 * size ** 3
    return {"size": size, "repeats": repeats, "best_s": min(times), "gflops": flops / min(times) / 1e9}


def torch_matmul_peak(size: int, repeats: int) -> dict | None:
    """The same matmul in torch (context for the torch row: its BLAS may differ from XLA's)."""
    torch = _torch()
    if torch is None:
        return None
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g)
    b = torch.randn(size, size, generator=g)
    a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return {"size": size, "repeats": repeats, "best_s": min(times),
            "gflops": 2.0 * size ** 3 / min(times) / 1e9}


# --------------------------------------------------------------------------------------------------
# FLOPs


def forward_flops(network, problem) -> dict:
    """Forward FLOPs for ONE canvas-sized image up to the target: sum over the convolutions of
    ``2 * H_out * W_out * C_out * k * k * C_in`` (pools and ReLUs are negligible and not counted)."""
    import jax
    import jax.numpy as jnp

    from jaxvis.optimize import step as one

    x = jax.ShapeDtypeStruct((1, problem.canvas, problem.canvas, 3), jnp.float32)
    acts = jax.eval_shape(lambda x: one.forward(network, problem, x), x)
    per_layer = {}
    for name, out in acts.pre.items():
        conv = network.convs[name] if name in getattr(network, "convs", {}) else None
        if conv is None:
            continue
        kh, kw, c_in, c_out = conv.kernel.shape
        _, h, w, _ = out.shape
        per_layer[name] = 2 * h * w * c_out * kh * kw * c_in
    return {"per_layer": per_layer, "total": sum(per_layer.values())}


def _cost_flops(compiled) -> float | None:
    """``flops`` from XLA's cost analysis (a dict, or a list of one dict in older jax)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # not every backend implements it
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None


def xla_flops(network, problem, radius: float) -> dict:
    """XLA's own count, as a cross-check of :func:`forward_flops`: one forward pass of one image,
    and one complete optimiser step of one unit (forward, backward, FFTs, Adam: everything)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxvis.optimize import step as one
    from jaxvis.optimize.loop import useful_flops

    graphdef, params = nnx.split(network)

    def unit_step(params, state, direction, radius):
        return one.step(state, nnx.merge(graphdef, params), problem, direction, radius)

    channels = network.layer(problem.target).channels
    state = one.init(jax.random.key(0), problem)
    direction = jnp.zeros((channels,), jnp.float32).at[0].set(1.0)
    out = {"forward_one_image": useful_flops(network, problem) / (2 * problem.n)}
    out["step_one_unit"] = _cost_flops(
        jax.jit(unit_step).lower(params, state, direction, jnp.float32(radius)).compile())
    return out


# --------------------------------------------------------------------------------------------------
# jaxvis variants


def layer_problem(model, layer: str, images: int, steps: int):
    """The sweep's own plan for ``layer`` (feature layer, canvas, radius exactly as ``jaxvis
    sweep`` resolves them), with early stopping disabled so every unit runs all ``steps``."""
    from jaxvis.optimize.config import Objective, Optimizer
    from jaxvis.sweep import plan

    optimizer = Optimizer(steps=steps, patience=10 ** 9)
    return plan(model, layer, "0", Objective(images=images), optimizer)[0]


def unit_inputs(lp, units: list[int]):
    import jax.numpy as jnp

    from jaxvis.sweep import unit_key

    channels = lp.info.channels
    units = [u % channels for u in units]
    keys = jnp.stack([unit_key(0, lp.info.name, u, lp.diverse.n) for u in units])
    return keys, np.eye(channels, dtype=np.float32)[units]


def interleaved(variants: list[tuple[dict, object]], repeats: int) -> list[dict]:
    """Time ``repeats`` passes of every variant, round-robin (pass 1 of each, then pass 2 ...), so a
    machine whose speed drifts (other tenants, clocks) drifts for all of them alike. ``variants``:
    (row, run) with ``run()`` -> (unit-steps, mean final loss). Each row gets its best pass (the
    least disturbed), every pass's seconds and the other load during the best one."""
    passes = [[] for _ in variants]
    for _ in range(repeats):
        for (row, run), mine in zip(variants, passes):
            with CpuMeter() as cpu:
                t = time.perf_counter()
                unit_steps, loss = run()
                seconds = time.perf_counter() - t
            mine.append((seconds, cpu.others, unit_steps, loss))
    rows = []
    for (row, _), mine in zip(variants, passes):
        seconds, others, unit_steps, loss = min(mine, key=lambda p: p[0])
        row = {**row, "unit_steps": unit_steps, "seconds": seconds, "repeats_s": [p[0] for p in mine],
               "others_busy_cores": others, "final_loss_mean": loss}
        if "first_call_s" in row:
            row["compile_s"] = max(row["first_call_s"] - seconds, 0.0)  # the first pass compiled too
        rows.append(row)
    return rows


def jaxvis_variant(model, lp, units: int, mesh, label: str, chunk: int | None = None):
    """(row, run): ``units`` units through ``optimise`` in chunks of ``chunk`` (default: the sweep's
    own chunk for ``mesh``, ``units_per_chunk``) spread over ``mesh``: what ``jaxvis sweep`` runs.
    One untimed pass here (compile + run)."""
    from jaxvis.optimize.loop import optimise, units_per_chunk
    from jaxvis.sweep import chunk_size

    if chunk is None:
        chunk = chunk_size(units_per_chunk(model.network, lp.diverse, mesh.devices.flat[0], mesh.size),
                           units, mesh.size)
    keys, directions = unit_inputs(lp, list(range(units)))

    def run():
        outs = [optimise(model.network, lp.diverse, keys[i:i + chunk], directions[i:i + chunk], lp.radius, mesh)
                for i in range(0, units, chunk)]
        return (int(sum(o["steps"].sum() for o in outs)),
                float(np.mean(np.concatenate([o["loss"] for o in outs]))))

    t = time.perf_counter()
    run()
    first = time.perf_counter() - t
    return {"variant": label, "units": units, "chunk": chunk, "devices": mesh.size,
            "steps": lp.diverse.optimizer.steps, "first_call_s": first}, run


# --------------------------------------------------------------------------------------------------
# torch variant: the same algorithm, written out in PyTorch eager


class TorchUnit:
    """VGG convs up to the target (jaxvis's weights), the sphere + whitened-gradient
    parameterisation, and the paper's loss, for one unit's N images ``z`` ``[N, H, W, 3]``.

    ``z`` stays NHWC like jaxvis's so the same array can be fed to both; it is transposed to NCHW
    once per forward pass (cheap next to the convolutions)."""

    def __init__(self, model, lp):
        import torch

        from jaxvis.param.image import frequency_gain

        self.torch = torch
        problem = lp.diverse
        self.problem, self.radius = problem, float(lp.radius)
        self.target, self.feature = problem.target, problem.feature_layer
        params = model.params()
        self.layers = []  # (name, weight OIHW, bias) in forward order, "pool" entries between blocks
        for spec in model.network.specs():
            if spec.name.startswith("conv"):
                w = params[f"convs/{spec.name}/kernel"]                      # HWIO
                b = params[f"convs/{spec.name}/bias"]
                self.layers.append((spec.name, torch.tensor(np.asarray(w).transpose(3, 2, 0, 1)),
                                    torch.tensor(np.asarray(b))))
            else:
                self.layers.append((spec.name, None, None))
            if spec.name == self.target:
                break
        c = problem.convention
        # the convention, applied literally as jaxvis does: (rgb[..., order] * scale - mean) / std
        self.mean_rgb = torch.tensor(problem.mean_rgb, dtype=torch.float32)
        self.bgr = c.channel_order == "BGR"
        self.scale = float(c.scale)
        self.net_mean = torch.tensor(c.mean, dtype=torch.float32)
        self.net_std = torch.tensor(c.std, dtype=torch.float32)
        gain = frequency_gain(problem.canvas, problem.canvas)
        self.gain = torch.from_numpy(gain)[:, :, None]                        # [H, W, 1]
        self.whiten = _whitening(torch)

    def forward(self, x):
        """``x`` ``[N, H, W, 3]`` deviation from the mean -> (pre-ReLU target [N, C, h, w],
        post-ReLU feature maps of the diversity layer, or ``x`` itself for pixel space)."""
        F = self.torch.nn.functional
        rgb = x + self.mean_rgb
        net = rgb.flip(-1) if self.bgr else rgb
        net = ((net * self.scale - self.net_mean) / self.net_std).permute(0, 3, 1, 2)
        feats = x
        for name, w, b in self.layers:
            if w is None:
                net = F.max_pool2d(net, 2, 2)
                continue
            pre = F.conv2d(net, w, b)  # VALID: no padding
            if name == self.target:
                return pre, feats
            net = F.relu(pre)
            if name == self.feature:
                feats = net
        raise AssertionError(f"target {self.target} not reached")

    def loss(self, z, direction):
        torch = self.torch
        z = self.whiten.apply(z, self.gain)
        norm = torch.sqrt(torch.sum(z * z, dim=(1, 2, 3), keepdim=True))
        x = self.radius * z / torch.clamp(norm, min=1e-12)
        pre, feats = self.forward(x)
        c = self.problem.centre
        activation = pre[:, :, c, c] @ direction                                 # [N]
        flat = feats.reshape(feats.shape[0], -1)
        diff = flat[:, None, :] - flat[None, :, :]
        d = torch.sqrt(torch.mean(diff * diff, dim=-1) + 1e-12)
        n = flat.shape[0]
        upper = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
        loss = -activation.mean()
        if self.problem.objective.diversity != "none" and n > 1:
            loss = loss - self.problem.objective.lam * d[upper].min()
        return loss

    def run(self, z0: np.ndarray, direction: np.ndarray, steps: int) -> float:
        """``steps`` Adam steps from ``z0``; returns the final loss (one sync at the end)."""
        torch = self.torch
        z = torch.tensor(np.asarray(z0), requires_grad=True)
        v = torch.from_numpy(np.asarray(direction))
        opt = torch.optim.Adam([z], lr=self.problem.optimizer.learning_rate)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = self.loss(z, v)
            loss.backward()
            opt.step()
        with torch.no_grad():
            return self.loss(z, v).item()


def _whitening(torch):
    """Identity forward; the backward pass whitens the gradient in the 2-D Fourier domain
    (``jaxvis.param.image.whiten_gradient``), per image and channel over the H, W axes."""

    class Whiten(torch.autograd.Function):
        @staticmethod
        def forward(ctx, z, gain):
            ctx.save_for_backward(gain)
            return z.view_as(z)

        @staticmethod
        def backward(ctx, g):
            (gain,) = ctx.saved_tensors
            spectrum = torch.fft.fft2(g, dim=(1, 2))
            return torch.fft.ifft2(spectrum * gain, dim=(1, 2)).real.to(g.dtype), None

    return Whiten


def check_torch(model, lp, tu: TorchUnit) -> dict:
    """Loss and gradient at step 0 of unit 0, jaxvis vs torch on the same ``z``: the torch row
    must compute the same objective, or the comparison means nothing."""
    import jax
    import jax.numpy as jnp

    from jaxvis.optimize import step as one

    torch = tu.torch
    keys, directions = unit_inputs(lp, [0])
    z0 = np.asarray(one.init(keys[0], lp.diverse).z)
    loss_j, grad_j = jax.value_and_grad(one.loss_fn)(
        jnp.asarray(z0), model.network, lp.diverse, jnp.asarray(directions[0]), jnp.float32(lp.radius))
    z = torch.tensor(z0, requires_grad=True)
    loss = tu.loss(z, torch.from_numpy(directions[0]))
    loss.backward()
    loss_t, loss_j = loss.item(), float(loss_j)
    grad_j, grad_t = np.asarray(grad_j), z.grad.numpy()
    return {"loss_jaxvis": loss_j, "loss_torch": loss_t,
            "loss_rel_diff": abs(loss_t - loss_j) / max(abs(loss_j), 1e-30),
            "grad_rel_diff": float(np.linalg.norm(grad_t - grad_j) / max(np.linalg.norm(grad_j), 1e-30))}


def torch_variant(model, lp, units: int, threads: int):
    """(row, run): the torch twin, ``units`` units one after another from jaxvis's starts, after
    the check of its objective against jaxvis's and a short warm-up."""
    torch = _torch()
    from jaxvis.optimize import step as one

    torch.set_num_threads(threads)
    tu = TorchUnit(model, lp)
    check = check_torch(model, lp, tu)
    steps = lp.diverse.optimizer.steps
    keys, directions = unit_inputs(lp, list(range(units)))
    starts = [np.asarray(one.init(k, lp.diverse).z) for k in keys]  # the same starts as jaxvis
    tu.run(starts[0], directions[0], min(steps, 20))  # warm: allocator, oneDNN primitive caches

    def run():
        return units * steps, float(np.mean([tu.run(starts[u], directions[u], steps) for u in range(units)]))

    return {"variant": "torch per-unit", "units": units, "steps": steps, "threads": threads,
            "check": check}, run


# --------------------------------------------------------------------------------------------------
# report


def finish_rows(rows: list[dict], useful_flops: float, peak_gflops: float) -> None:
    """Add unit-steps/s, GFLOP/s, % of peak and the speed-up over the torch per-unit loop."""
    done = [r for r in rows if "skipped" not in r]
    for r in done:
        r["unit_steps_per_s"] = r["unit_steps"] / r["seconds"]
        r["gflops"] = r["unit_steps_per_s"] * useful_flops / 1e9
        r["pct_peak"] = 100.0 * r["gflops"] / peak_gflops
    ref = next((r for r in done if r["variant"] == "torch per-unit"), None)
    for r in done:
        r["speedup_vs_torch"] = r["unit_steps_per_s"] / ref["unit_steps_per_s"] if ref else None


def table(layers: list[dict]) -> str:
    head = ("| layer | variant | units (chunk) | steps | seconds | unit-steps/s | GFLOP/s | % of matmul peak "
            "| speed-up vs torch per-unit | other load (cores) |")
    lines = [head, "|" + "---|" * 10]
    for layer in layers:
        for r in layer["rows"]:
            if "skipped" in r:
                lines.append(f"| {layer['layer']} | {r['variant']} | | | | {r['skipped']} | | | | |")
                continue
            speed = f"{r['speedup_vs_torch']:.2f}x" if r["speedup_vs_torch"] else "n/a"
            others = "n/a" if r.get("others_busy_cores") is None else f"{r['others_busy_cores']:.2f}"
            units = f"{r['units']} ({r['chunk']})" if "chunk" in r else f"{r['units']}"
            lines.append(f"| {layer['layer']} | {r['variant']} | {units} | {r['steps']} | "
                         f"{r['seconds']:.2f} | {r['unit_steps_per_s']:.1f} | {r['gflops']:.2f} | "
                         f"{r['pct_peak']:.1f} | {speed} | {others} |")
    return "\n".join(lines)


def notes(result: dict) -> str:
    m, p = result["machine"], result["matmul_peak"]
    out = [f"machine: {m['cpu']}, {m['cores']} cores; jax {m['jax']} / jaxlib {m['jaxlib']} "
           f"({m['backend']}, {m['device_kind']}); torch {m['torch'] or 'not installed'}",
           f"float32 matmul peak ({p['size']}x{p['size']}, best of {p['repeats']}): "
           f"jax {p['gflops']:.1f} GFLOP/s"
           + (f", torch {result['torch_matmul_peak']['gflops']:.1f} GFLOP/s" if result["torch_matmul_peak"] else "")]
    for layer in result["layers"]:
        f = layer["flops"]
        xla = f["xla"]
        out.append(f"{layer['layer']}: canvas {layer['canvas']}, N={layer['images']}, diversity in "
                   f"{layer['feature_layer'] or 'pixels'}; forward {f['forward_per_image'] / 1e6:.2f} MFLOP/image "
                   f"(XLA: {_mega(xla.get('forward_one_image'))}), useful {f['useful_per_unit_step'] / 1e6:.1f} "
                   f"MFLOP/unit-step (XLA, whole step: {_mega(xla.get('step_one_unit'))})")
        for r in layer["rows"]:
            if "compile_s" in r:
                out.append(f"  {r['variant']}: first call (compile + run) {r['first_call_s']:.1f} s, "
                           f"compile ~{r['compile_s']:.1f} s")
            if "check" in r:
                c = r["check"]
                out.append(f"  torch vs jaxvis at step 0 (unit 0): loss {c['loss_torch']:.6g} vs "
                           f"{c['loss_jaxvis']:.6g}, rel. diff {c['loss_rel_diff']:.1e}; "
                           f"gradient rel. diff {c['grad_rel_diff']:.1e}")
    return "\n".join(out)


def _mega(flops) -> str:
    return "n/a" if flops is None else f"{flops / 1e6:.2f} M"


def default_out(machine: dict) -> Path:
    device = machine["device_kind"].replace(" ", "-").lower()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return RESULTS / f"sweep_{machine['host']}-{device}_{stamp}.json"


# --------------------------------------------------------------------------------------------------


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
    elif _torch() is None:
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

    torch = None if args.no_torch else _torch()
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
    print(table(layers))
    print()
    print(notes(result))
    out = args.out or default_out(machine)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=float))
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
