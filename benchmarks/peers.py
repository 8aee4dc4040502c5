"""The peers a user would pick, measured beside jaxvis on the same weights and objective.

VGG-19 ``--layer`` (conv3_1) of ``--weights`` (vgg19-normalized), ``--units`` (16) channels,
N = ``--images`` (6), ``--steps`` (200) Adam steps, early stopping off, the sweep's lambda-set
objective with pixel diversity: ``loss = -mean_i a(x_i) - lam * min_{i<j} rms(x_i - x_j)`` on the
sweep's contrast sphere with the whitened gradient (``--lam`` 0.01). Every row starts from jaxvis's
own random start of each unit (:func:`jaxvis.optimize.keys.unit_key`):

- ``jaxvis lambda set``: the units through :func:`jaxvis.optimize.loop.optimize` in the sweep's own
  chunks over all of the process's devices: exactly the work of the peers below (the ratio base);
- ``jaxvis.sweep``: the library call as a user writes it, ``jaxvis.sweep(model, layer, units,
  diversity="pixels", ...)``; it also computes each unit's single-image maximum (``restarts=1``
  here, 4 by default), which the peers do not, and its rate counts only the lambda set's steps;
- ``torch batched``: the strongest torch peer, one eager program over all units x images in one
  batch (per-unit activation and diversity, one Adam over the whole tensor, which is the same
  as one Adam per unit), built on :class:`benchmarks.torch_twin.TorchUnit`'s weights, input
  convention and whitening;
- ``torch-lucent``: lucent 0.1.8 as its users run it, one ``render_vis`` per unit with a
  6-image batch: ``objectives.neuron(layer, unit) - lam * <pixel diversity>`` (lucent's own
  ``objectives.diversity`` is a Gram-matrix cosine penalty on a layer, a different objective,
  so the sweep's term is written as a lucent objective on ``T("input")``), the sweep's
  parameterisation as ``param_f``, ``transforms=[]``, ``preprocess=False`` (the convention is the
  model's first module), ``fixed_image_size`` = the canvas (otherwise lucent upsamples to 224
  px; bilinear at the same size is the identity), ``torch.optim.Adam(lr)``. The model is a
  ``torch.nn.Sequential`` of the VGG layers up to the target (nothing above it is computed),
  its weights frozen; lucent's hooks are removed after each call (it leaves them on the model).

**Parity first**: at every unit's start the torch programs' loss and gradient must match jaxvis's
to ``PARITY_RTOL`` (relative; float32 rounding is ~1e-7), else nothing is timed
(:class:`ParityError`). **Timing**: each row runs once untimed (compilation, caches), then
``--repeats`` (3) passes round-robin over the rows (:func:`benchmarks.variants.interleaved`),
best pass per row. **Threads**: on a CPU both frameworks get ``--threads`` (default: the cores this
process may use): the process is pinned to that many cores, ``torch.set_num_threads``,
``OMP_NUM_THREADS``/``MKL_NUM_THREADS``, and jax one CPU device per thread (as ``jaxvis sweep``
does). On a GPU (``--device cuda``) the torch rows run in a child process with jax on the CPU
(the two CUDA stacks never share a process, as in :mod:`benchmarks.device_run`); rows are then
interleaved within each process, and both compute in float32 (torch's TF32 off).

    python -m benchmarks.peers                     # ~6 min on 2 CPU cores (after a ~1 min setup)
    python -m benchmarks.peers --units 2 --images 3 --steps 10 --repeats 1   # a smoke run

Writes ``benchmarks/results/peers/peers_<host>-<device>_<date>.json`` (or ``--out``) and prints the
table. lucent is optional (``pip install`` notes in benchmarks/README.md): without it its row says so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np

PARITY_RTOL = 1e-5  # loss and gradient, relative; observed ~1e-7 (float32, other summation orders)
ROWS = ("jaxvis", "sweep", "batched", "lucent")
LABELS = {"jaxvis": "jaxvis lambda set (optimize, sweep's chunks)",
          "sweep": "jaxvis.sweep(...) call (+ 1-image maximum)",
          "batched": "torch batched (all units x images, one program)",
          "lucent": "torch-lucent 0.1.8 (render_vis per unit)"}
ROOT = Path(__file__).resolve().parents[1]


class ParityError(RuntimeError):
    """A peer's objective differs from jaxvis's: its timing would compare different work."""


# --------------------------------------------------------------------------------------------------
# the problem all rows share


class Setup:
    """The layer as the sweep plans it (pixel diversity, ``lam``, early stopping off), the units'
    keys, one-hot directions ``[U, C]`` and jaxvis's random starts ``[U, N, H, W, 3]``."""

    def __init__(self, model, layer: str, units: int, images: int, steps: int, lam: float,
                 diversity: str = "pixels"):
        from benchmarks.variants import unit_inputs
        from jaxvis.optimize import step as unit_step
        from jaxvis.optimize.config import Objective, Optimizer
        from jaxvis.run.plan import configure, plan

        self.model, self.units = model, units
        self.objective = Objective(images=images, diversity=diversity, lam=lam)
        self.optimizer = Optimizer(steps=steps, patience=10 ** 9)
        self.lp = plan(model, configure(model, layer, f"0-{units - 1}", objective=self.objective,
                                          optimizer=self.optimizer))[0]
        self.problem, self.radius = self.lp.diverse, float(self.lp.radius)
        self.keys, self.directions = unit_inputs(self.lp, list(range(units)))
        self.starts = np.stack([np.asarray(unit_step.init(k, self.problem).z) for k in self.keys])

    def jaxvis_loss_and_grad(self) -> tuple[np.ndarray, np.ndarray]:
        """jaxvis's loss ``[U]`` and gradient with respect to ``z`` at every unit's start."""
        import jax
        import jax.numpy as jnp

        from jaxvis.optimize import step as unit_step

        net, problem, r = self.model.network, self.problem, jnp.float32(self.radius)
        vg = jax.jit(jax.value_and_grad(lambda z, d: unit_step.loss_fn(z, net, problem, d, r)))
        out = [vg(jnp.asarray(z), jnp.asarray(d)) for z, d in zip(self.starts, self.directions)]
        return np.array([float(v) for v, _ in out]), np.stack([np.asarray(g) for _, g in out])


# --------------------------------------------------------------------------------------------------
# the torch peers


class BatchedTorch:
    """All units x images of the layer in one eager torch program: the batch ``[U * N]`` through
    the network once per step, each unit's activation along its direction and its own diversity
    term, the sum of the units' losses, one ``torch.optim.Adam`` over ``z`` ``[U, N, H, W, 3]``."""

    def __init__(self, model, problem, radius: float, device: str = "cpu"):
        from benchmarks.torch_twin import TorchUnit

        self.unit = TorchUnit(model, problem, radius, device)
        self.torch, self.problem = self.unit.torch, problem

    def losses(self, z, directions):
        """``z`` ``[U, N, H, W, 3]``, ``directions`` ``[U, C]`` -> each unit's loss ``[U]``."""
        torch, t, o = self.torch, self.unit, self.problem.objective
        u, n = z.shape[:2]
        w = t.whiten.apply(z.reshape(u * n, *z.shape[2:]), t.gain)  # per image and channel
        norm = torch.sqrt(torch.sum(w * w, dim=(1, 2, 3), keepdim=True))
        x = t.radius * w / torch.clamp(norm, min=1e-12)
        pre, feats = t.forward(x)
        c = self.problem.centre
        activation = torch.einsum("unc,uc->un", pre[:, :, c, c].reshape(u, n, -1), directions)
        loss = -activation.mean(dim=1)
        if o.diversity not in ("none", "pixels", "features"):
            raise ValueError(f"the batched torch peer has no {o.diversity!r} diversity term")
        if o.diversity != "none" and n > 1:
            flat = feats.reshape(u, n, -1)
            diff = flat[:, :, None, :] - flat[:, None, :, :]
            d = torch.sqrt(torch.mean(diff * diff, dim=-1) + 1e-12)          # [U, N, N]
            loss = loss - o.lam * d[:, t.upper].min(dim=1).values
        return loss

    def loss_and_grad(self, starts: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = self.unit.tensor(starts, grad=True)
        losses = self.losses(z, self.unit.tensor(directions))
        losses.sum().backward()
        return losses.detach().cpu().numpy(), z.grad.cpu().numpy()

    def run(self, starts: np.ndarray, directions: np.ndarray, steps: int) -> tuple[int, float]:
        """``steps`` Adam steps of every unit -> (unit-steps, mean final loss)."""
        torch = self.torch
        z = self.unit.tensor(starts, grad=True)
        v = self.unit.tensor(directions)
        opt = torch.optim.Adam([z], lr=self.problem.optimizer.learning_rate)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            self.losses(z, v).sum().backward()
            opt.step()
        with torch.no_grad():
            return len(starts) * steps, float(self.losses(z, v).mean().item())


def import_lucent():
    """``(render, objectives, transform)`` of lucent, or None when it is not installed.

    lucent imports ``torchvision.transforms.Normalize`` at import time (only its ``preprocess=True``
    path uses it, which this benchmark turns off). PyPI's torchvision is built against PyPI's CUDA
    torch and does not import next to the CPU torch wheel; where torchvision cannot be imported,
    a stand-in module with that one name is registered first (it raises if anything calls it)."""
    try:
        import torchvision.transforms  # noqa: F401
    except Exception:  # noqa: BLE001 - absent, or present but built for another torch
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        stub, transforms = types.ModuleType("torchvision"), types.ModuleType("torchvision.transforms")

        class Normalize:  # noqa: D401 - a stand-in
            def __init__(self, *args, **kwargs):
                raise RuntimeError("torchvision is not importable here; lucent's preprocess=True needs it")

        transforms.Normalize, stub.transforms, stub.__version__ = Normalize, transforms, "stand-in"
        sys.modules["torchvision"], sys.modules["torchvision.transforms"] = stub, transforms
    try:
        from lucent.optvis import objectives, render, transform
    except ImportError:
        return None
    return render, objectives, transform


class LucentPeer:
    """torch-lucent 0.1.8 as its users run it: one ``render_vis`` per unit (see the module text)."""

    def __init__(self, model, problem, radius: float, device: str = "cpu"):
        from benchmarks.torch_twin import TorchUnit

        modules = import_lucent()
        if modules is None:
            raise ImportError("torch-lucent is not installed (benchmarks/README.md: the bench extra)")
        self.render, self.objectives, self.transform = modules
        self.unit = TorchUnit(model, problem, radius, device)
        self.torch, self.problem = self.unit.torch, problem
        if problem.objective.diversity != "pixels":
            raise ValueError("the lucent peer writes the pixel diversity term only")
        self.net = self._network().to(self.unit.device).eval()
        self.net.requires_grad_(False)
        self.canvas = problem.canvas

    def _network(self):
        """``torch.nn.Sequential``: the input convention, then the VGG layers up to the target
        (lucent names its hooks after the children: ``conv3_1`` ...). ReLUs are not in place, so
        the target's hook holds its pre-activation."""
        torch, t = self.torch, self.unit
        nn = torch.nn

        class Convention(nn.Module):
            """Images (NCHW, deviation from the mean colour) -> the network's input convention."""

            def forward(self, x):
                rgb = x + t.mean_rgb.view(1, 3, 1, 1)
                net = rgb.flip(1) if t.bgr else rgb
                return (net * t.scale - t.net_mean.view(1, 3, 1, 1)) / t.net_std.view(1, 3, 1, 1)

        layers = [("convention", Convention())]
        for name, w, b in t.layers:
            if w is None:
                layers.append((name, nn.MaxPool2d(2, 2)))
                continue
            conv = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2])  # VALID: no padding
            with torch.no_grad():
                conv.weight.copy_(w)
                conv.bias.copy_(b)
            layers.append((name, conv))
            if name != t.target:
                layers.append(("relu" + name[4:], nn.ReLU(inplace=False)))
        return nn.Sequential(OrderedDict(layers))

    def objective(self, unit: int):
        """``neuron(target, unit) - lam * min pairwise RMS distance of the images``, lucent's way."""
        torch, upper = self.torch, self.unit.upper

        @self.objectives.wrap_objective()
        def pixel_diversity(layer="input"):
            def inner(T):
                x = T(layer)
                flat = x.reshape(x.shape[0], -1)
                diff = flat[:, None, :] - flat[None, :, :]
                return torch.sqrt(torch.mean(diff * diff, dim=-1) + 1e-12)[upper].min()
            return inner

        return self.objectives.neuron(self.problem.target, unit) - self.problem.objective.lam * pixel_diversity()

    def param_f(self, start: np.ndarray):
        """lucent's ``param_f``: ``([z], image_f)``, the sweep's sphere with the whitened gradient."""
        t = self.unit
        z = t.tensor(start, grad=True)
        self.z = z

        torch = self.torch

        def image_f():  # [N, 3, H, W], as lucent's parameterisations return
            w = t.whiten.apply(z, t.gain)
            norm = torch.sqrt(torch.sum(w * w, dim=(1, 2, 3), keepdim=True))
            return (t.radius * w / torch.clamp(norm, min=1e-12)).permute(0, 3, 1, 2)

        return [z], image_f

    def _unhook(self) -> None:
        for m in self.net.modules():  # render_vis leaves a hook on every module after each call
            m._forward_hooks.clear()

    def loss(self, start: np.ndarray, unit: int, backward: bool = False):
        """The loss render_vis's closure computes at ``start`` (and its gradient on ``z``)."""
        torch = self.torch
        params, image_f = self.param_f(start)
        hook = self.render.hook_model(self.net, image_f)
        size = torch.nn.Upsample(size=self.canvas, mode="bilinear", align_corners=True)
        try:
            with contextlib.nullcontext() if backward else torch.no_grad():
                self.net(self.transform.compose([size])(image_f()))
                loss = self.objective(unit)(hook)
                if backward:
                    loss.backward()
        finally:
            self._unhook()
        return float(loss.item()), (params[0].grad.cpu().numpy() if backward else None)

    def loss_and_grad(self, starts: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = [self.loss(s, _channel(d), backward=True) for s, d in zip(starts, directions)]
        return np.array([v for v, _ in out]), np.stack([g for _, g in out])

    def render_unit(self, start: np.ndarray, unit: int, steps: int) -> float:
        """One ``render_vis`` call of ``steps`` steps; the final loss."""
        lr = self.problem.optimizer.learning_rate
        try:
            self.render.render_vis(self.net, self.objective(unit), param_f=lambda: self.param_f(start),
                                   optimizer=lambda p: self.torch.optim.Adam(p, lr=lr), transforms=[],
                                   thresholds=(steps,), preprocess=False, progress=False, show_image=False,
                                   fixed_image_size=self.canvas)
        finally:
            self._unhook()
        return self.loss(self.z.detach().cpu().numpy(), unit)[0]

    def run(self, starts: np.ndarray, directions: np.ndarray, steps: int) -> tuple[int, float]:
        losses = [self.render_unit(s, _channel(d), steps) for s, d in zip(starts, directions)]
        return len(starts) * steps, float(np.mean(losses))


def _channel(direction: np.ndarray) -> int:
    """The channel of a one-hot direction (lucent's ``neuron`` objective takes a channel)."""
    c = int(np.argmax(direction))
    if not np.array_equal(direction, np.eye(len(direction), dtype=direction.dtype)[c]):
        raise ValueError("the lucent peer optimises channels (one-hot directions) only")
    return c


# --------------------------------------------------------------------------------------------------
# parity, then timing


def parity(setup: Setup, peers: dict) -> dict:
    """Each peer's loss and gradient at every unit's start against jaxvis's: the largest relative
    difference over the units (loss: |peer - jaxvis| / |jaxvis|; gradient: ||peer - jaxvis|| /
    ||jaxvis|| per unit). ``ok``: both below :data:`PARITY_RTOL`."""
    loss_j, grad_j = setup.jaxvis_loss_and_grad()
    out = {"rtol": PARITY_RTOL, "units": setup.units, "loss_jaxvis": loss_j.tolist()}
    for name, peer in peers.items():
        loss_t, grad_t = peer.loss_and_grad(setup.starts, setup.directions)
        loss_rel = float(np.max(np.abs(loss_t - loss_j) / np.maximum(np.abs(loss_j), 1e-30)))
        axes = tuple(range(1, grad_j.ndim))
        grad_rel = float(np.max(np.sqrt(np.sum((grad_t - grad_j) ** 2, axis=axes))
                                / np.maximum(np.sqrt(np.sum(grad_j ** 2, axis=axes)), 1e-30)))
        out[name] = {"loss_rel_diff": loss_rel, "grad_rel_diff": grad_rel,
                     "ok": loss_rel < PARITY_RTOL and grad_rel < PARITY_RTOL}
    return out


def require_parity(check: dict) -> None:
    """Raise :class:`ParityError` naming every peer whose objective differs from jaxvis's."""
    bad = [f"{name} (loss {c['loss_rel_diff']:.1e}, gradient {c['grad_rel_diff']:.1e})"
           for name, c in check.items() if isinstance(c, dict) and not c["ok"]]
    if bad:
        raise ParityError(f"not timed: {', '.join(bad)} differ from jaxvis by more than {PARITY_RTOL:g} "
                          "(relative) at the units' starts")


def torch_peers(setup: Setup, device: str, wanted) -> tuple[dict, dict]:
    """``({name: peer}, {name: why it is missing})`` for the torch rows in ``wanted``."""
    peers, missing = {}, {}
    if "batched" in wanted:
        peers["batched"] = BatchedTorch(setup.model, setup.problem, setup.radius, device)
    if "lucent" in wanted:
        try:
            peers["lucent"] = LucentPeer(setup.model, setup.problem, setup.radius, device)
        except ImportError as err:
            missing["lucent"] = str(err)
            print(f"note: lucent row skipped: {err}", flush=True)
    return peers, missing


def torch_variants(setup: Setup, peers: dict, threads: int | None) -> list:
    """(row, run) pairs of the torch peers, each warmed by a short untimed run."""
    steps = setup.optimizer.steps
    variants = []
    for name, peer in peers.items():
        peer.run(setup.starts[:1], setup.directions[:1], min(steps, 10))  # allocator, oneDNN/cuDNN plans
        row = {"row": name, "variant": LABELS[name], "units": setup.units, "steps": steps,
               "threads": threads, "device": str(peer.unit.device)}
        variants.append((row, lambda peer=peer: peer.run(setup.starts, setup.directions, steps)))
    return variants


def jax_variants(setup: Setup, wanted) -> list:
    """(row, run) pairs of the jaxvis rows, each run once (compilation) before timing."""
    import jaxvis
    from benchmarks.variants import jaxvis_variant
    from jaxvis.optimize import parallel

    mesh = parallel.unit_mesh()
    variants = []
    if "jaxvis" in wanted:
        row, run = jaxvis_variant(setup.model, setup.lp, setup.units, mesh, LABELS["jaxvis"])
        variants.append(({"row": "jaxvis", **row}, run))
    if "sweep" in wanted:
        layer = setup.lp.info.name

        def run():
            r = jaxvis.sweep(setup.model, layer, f"0-{setup.units - 1}", objective=setup.objective,
                             optimizer=setup.optimizer, restarts=1, compile_cache=False, mesh=mesh)[layer]
            return int(r["steps"].sum()), float(np.mean(r["loss"]))  # the lambda set's steps only

        t = time.perf_counter()
        run()
        variants.append(({"row": "sweep", "variant": LABELS["sweep"], "units": setup.units, "devices": mesh.size,
                          "steps": setup.optimizer.steps, "restarts": 1, "first_call_s": time.perf_counter() - t},
                         run))
    return variants


# --------------------------------------------------------------------------------------------------
# threads, table, main


def limit_threads(threads: int) -> None:
    """Before jax or torch start: pin this process to ``threads`` cores, OpenMP/MKL to ``threads``
    threads, jax to one CPU device per thread (``jaxvis.cpu_devices``, as ``jaxvis sweep`` does)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if cores and threads < len(cores):
        os.sched_setaffinity(0, cores[:threads])
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    from jaxvis.optimize.parallel import cpu_devices

    cpu_devices(threads)


def finish(rows: list[dict]) -> None:
    """unit-steps/s and the ratio to the jaxvis lambda-set row."""
    for r in rows:
        if "seconds" in r:
            r["unit_steps_per_s"] = r["unit_steps"] / r["seconds"]
    ref = next((r for r in rows if r["row"] == "jaxvis" and "seconds" in r), None)
    for r in rows:
        if "seconds" in r:
            r["ratio_to_jaxvis"] = r["unit_steps_per_s"] / ref["unit_steps_per_s"] if ref else None


def table(result: dict) -> str:
    from benchmarks.tables import markdown

    rows = []
    for r in result["rows"]:
        if "seconds" not in r:
            rows.append([r["variant"], "", "", "", "", r.get("skipped", ""), "", "", ""])
            continue
        ratio = "n/a" if r.get("ratio_to_jaxvis") is None else f"{r['ratio_to_jaxvis']:.2f}"
        others = "n/a" if r.get("others_busy_cores") is None else f"{r['others_busy_cores']:.2f}"
        rows.append([r["variant"], r["units"], r["steps"], f"{r['seconds']:.2f}",
                     " / ".join(f"{s:.1f}" for s in r["repeats_s"]), f"{r['unit_steps_per_s']:.0f}", ratio,
                     f"{r['final_loss_mean']:.2f}", others])
    head = ["row", "units", "steps", "best s", "passes (s)", "unit-steps/s", "vs jaxvis", "final loss (mean)",
            "other load (cores)"]
    return markdown(head, rows)


def notes(result: dict) -> str:
    from benchmarks.machine import describe

    a, c = result["args"], result["parity"]
    lines = [f"machine: {describe(result['machine'])}",
             f"{a['weights']} {a['layer']}, {a['units']} units x N = {a['images']} x {a['steps']} steps, "
             f"pixel diversity, lam {a['lam']}; {result['threads_note']}; best of {a['repeats']} interleaved passes"]
    for name in ("batched", "lucent"):
        if name in c:
            lines.append(f"parity {name} vs jaxvis at the {c['units']} starts: loss {c[name]['loss_rel_diff']:.1e}, "
                         f"gradient {c[name]['grad_rel_diff']:.1e} (max relative; limit {c['rtol']:g})")
    for name, why in result.get("missing", {}).items():
        lines.append(f"{name}: not measured ({why})")
    return "\n".join(lines)


def parse(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="jaxvis beside batched torch and torch-lucent",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--weights", default="vgg19-normalized")
    p.add_argument("--layer", default="conv3_1")
    p.add_argument("--units", type=int, default=16)
    p.add_argument("--images", type=int, default=6)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--lam", type=float, default=0.01)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="CPU threads of each framework (default: the cores)")
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated subset of " + ", ".join(ROWS))
    p.add_argument("--device", default="cpu", help="cpu, or cuda (jaxvis on jax's GPU, torch on cuda)")
    p.add_argument("--torch-only", action="store_true", help=argparse.SUPPRESS)  # the GPU run's child
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    args.rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    bad = [r for r in args.rows if r not in ROWS]
    if bad:
        p.error(f"unknown row {bad[0]!r}; valid: {', '.join(ROWS)}")
    return args


def _say_pass(row: dict, seconds: float, others: float | None) -> None:
    load = "" if others is None else f", other load {others:.2f} cores"
    print(f"  {row['variant']}: {row['units'] * row['steps'] / seconds:.1f} unit-steps/s ({seconds:.1f} s{load})",
          flush=True)


def _torch_child(args) -> dict:
    """The GPU run's torch rows in a process of their own (jax on the CPU for the parity check)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "torch.json"
        cmd = [sys.executable, "-m", "benchmarks.peers", "--torch-only", "--device", args.device,
               "--weights", args.weights, "--layer", args.layer, "--units", str(args.units),
               "--images", str(args.images), "--steps", str(args.steps), "--lam", str(args.lam),
               "--repeats", str(args.repeats), "--rows", ",".join(args.rows), "--out", str(out)]
        env = {**os.environ, "JAX_PLATFORMS": "cpu",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        done = subprocess.run(cmd, cwd=ROOT, env=env, text=True, capture_output=True)
        sys.stdout.write(done.stdout)
        if done.returncode:
            tail = "\n".join(done.stderr.strip().splitlines()[-5:]) or "no output"
            raise RuntimeError(f"the torch rows failed (exit {done.returncode}): {tail}")
        return json.loads(out.read_text())


def main(argv=None) -> dict:
    args = parse(sys.argv[1:] if argv is None else argv)
    gpu = args.device.startswith("cuda")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = args.threads or cores
    if not gpu:
        limit_threads(threads)
    import jax

    from benchmarks.machine import machine_info, torch_or_none
    from benchmarks.tables import RESULTS, default_out, write_json
    from benchmarks.variants import interleaved, load_model

    # on a GPU the jaxvis process never imports torch (its CUDA libraries stay out of jax's process)
    torch_here = not gpu or args.torch_only
    torch = torch_or_none() if torch_here else None
    if torch is not None:
        torch.set_num_threads(threads)
        if gpu:
            from benchmarks.torch_twin import set_precision

            set_precision(torch, "float32")
    model = load_model(args.weights)
    setup = Setup(model, args.layer, args.units, args.images, args.steps, args.lam)
    in_process = [r for r in args.rows if r in ("batched", "lucent")] if torch_here else []
    result = {"benchmark": "peers", "args": {k: v for k, v in vars(args).items() if k != "out"},
              "machine": machine_info(with_torch=torch_here), "threads": None if gpu else threads,
              "threads_note": ("GPU: torch and jax compute on the device, float32 (TF32 off)" if gpu else
                               f"{threads} threads each (process pinned to {threads} cores, torch.set_num_threads"
                               f"({threads}), OMP/MKL_NUM_THREADS={threads}, jax {jax.device_count()} CPU devices)"),
              "canvas": setup.problem.canvas, "radius": setup.radius, "rows": [], "missing": {}}
    if torch is None and in_process:
        result["missing"] = {r: "torch is not installed" for r in in_process}
        in_process = []
    peers, missing = torch_peers(setup, args.device if gpu else "cpu", in_process)
    result["missing"].update(missing)
    result["parity"] = parity(setup, peers) if peers else {}
    for name in peers:
        c = result["parity"][name]
        print(f"parity {name}: loss rel. diff {c['loss_rel_diff']:.1e}, gradient {c['grad_rel_diff']:.1e}", flush=True)
    require_parity(result["parity"])
    variants = torch_variants(setup, peers, None if gpu else threads)
    if not args.torch_only:
        variants = jax_variants(setup, args.rows) + variants
    rows = interleaved(variants, args.repeats, on_pass=_say_pass)
    if gpu and not args.torch_only and any(r in args.rows for r in ("batched", "lucent")):
        child = _torch_child(args)
        rows += child["rows"]
        result["parity"].update(child["parity"])  # the rows it checked, and at how many starts
        result["missing"].update(child["missing"])
        result["torch_machine"] = child["machine"]
    for name, why in result["missing"].items():
        rows.append({"row": name, "variant": LABELS[name], "skipped": why})
    rows.sort(key=lambda r: ROWS.index(r["row"]))
    finish(rows)
    result["rows"] = rows
    out = args.out or default_out("peers", result["machine"], RESULTS / "peers")
    if not args.torch_only:
        print("\n" + table(result) + "\n\n" + notes(result), flush=True)
    write_json(out, result)
    print(f"wrote {out}", flush=True)
    return result


if __name__ == "__main__":
    main()
