"""The diverse-visualisation algorithm written out in PyTorch eager: a peer to time against, and an
independent oracle for jaxvis's objective (the tests compare loss and gradient on real VGG-19).

It is written from the method, not from jaxvis's code: VALID convolutions of the VGG weights up to
the target (jaxvis's kernels, HWIO -> OIHW), 2x2 max pooling, the input convention applied
literally (mean colour, RGB -> BGR, scale, mean, std), ``x = r z / ||z||`` per image with the
gradient reaching ``z`` whitened in the 2-D Fourier domain by a custom autograd function
(identity forward, the gain of :func:`jaxvis.param.image.frequency_gain`), loss = -mean(pre-ReLU
centre activation along the unit's direction) - lambda * min pairwise RMS distance of the
diversity features, ``torch.optim.Adam``. Only VGG-like networks (convolutions and pools) are
supported; jaxvis supports more.

Run on its own it is the torch row of ``benchmarks.device_run`` (a subprocess, so torch's CUDA
libraries and jax's never share a process)::

    python -m benchmarks.torch_twin --layer conv3_1 --steps 1000 --budget-s 30 --device cuda --out t.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

PRECISIONS = ("float32", "tf32")  # torch's float32 (the original code's) and its TF32 default on GPUs


def set_precision(torch, precision: str) -> None:
    """``float32``: true float32 products everywhere (what the original code computed);
    ``tf32``: TF32 in convolutions and matmuls (torch's default for cuDNN convolutions)."""
    if precision not in PRECISIONS:
        raise ValueError(f"torch twin precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


class TorchUnit:
    """VGG convs up to the target (jaxvis's weights), the sphere + whitened-gradient
    parameterisation, and the paper's loss, for one unit's N images ``z`` ``[N, H, W, 3]``.

    ``z`` stays NHWC like jaxvis's so the same array can be fed to both; it is transposed to NCHW
    once per forward pass (cheap next to the convolutions). ``device``: where torch computes
    (``"cpu"``, ``"cuda"``)."""

    def __init__(self, model, problem, radius: float, device: str = "cpu"):
        import torch

        from jaxvis.param.image import frequency_gain

        self.torch, self.device = torch, torch.device(device)
        self.problem, self.radius = problem, float(radius)
        self.target, self.feature = problem.target, problem.feature_layer
        params = model.params()
        on = dict(device=self.device, dtype=torch.float32)
        self.layers = []  # (name, weight OIHW, bias) in forward order, (name, None, None) for pools
        for spec in model.network.specs():
            if spec.name.startswith("conv"):
                w = params[f"convs/{spec.name}/kernel"]                      # HWIO
                b = params[f"convs/{spec.name}/bias"]
                self.layers.append((spec.name, torch.tensor(np.asarray(w).transpose(3, 2, 0, 1), **on),
                                    torch.tensor(np.asarray(b), **on)))
            elif spec.name.startswith("pool"):
                self.layers.append((spec.name, None, None))
            else:
                raise ValueError(f"the torch twin knows convolutions and pools, not {spec.name!r}")
            if spec.name == self.target:
                break
        c = problem.convention
        # the convention, applied literally as jaxvis does: (rgb[..., order] * scale - mean) / std
        self.mean_rgb = torch.tensor(problem.mean_rgb, **on)
        self.bgr = c.channel_order == "BGR"
        self.scale = float(c.scale)
        self.net_mean = torch.tensor(c.mean, **on)
        self.net_std = torch.tensor(c.std, **on)
        gain = frequency_gain(problem.canvas, problem.canvas)
        self.gain = torch.from_numpy(gain)[:, :, None].to(self.device)        # [H, W, 1]
        n = problem.n
        self.upper = torch.triu(torch.ones(n, n, dtype=torch.bool, device=self.device), diagonal=1)
        self.whiten = _whitening(torch)

    def forward(self, x):
        """``x`` ``[N, H, W, 3]`` deviation from the mean -> (pre-ReLU target ``[N, C, h, w]``,
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
        loss = -activation.mean()
        objective = self.problem.objective
        if objective.diversity not in ("none", "pixels", "features"):
            raise ValueError(f"the torch twin has no {objective.diversity!r} diversity term")
        if objective.diversity != "none" and feats.shape[0] > 1:
            flat = feats.reshape(feats.shape[0], -1)
            diff = flat[:, None, :] - flat[None, :, :]
            d = torch.sqrt(torch.mean(diff * diff, dim=-1) + 1e-12)
            loss = loss - objective.lam * d[self.upper].min()
        return loss

    def tensor(self, a, grad: bool = False):
        return self.torch.tensor(np.asarray(a), dtype=self.torch.float32, device=self.device,
                                 requires_grad=grad)

    def loss_and_grad(self, z0: np.ndarray, direction: np.ndarray) -> tuple[float, np.ndarray]:
        """The loss at ``z0`` ``[N, H, W, 3]`` and its (whitened) gradient with respect to ``z``."""
        z = self.tensor(z0, grad=True)
        loss = self.loss(z, self.tensor(direction))
        loss.backward()
        return loss.item(), z.grad.cpu().numpy()

    def run(self, z0: np.ndarray, direction: np.ndarray, steps: int, deadline: float | None = None,
            check_every: int = 50) -> tuple[float, int]:
        """Up to ``steps`` Adam steps from ``z0``; returns (final loss, steps taken). With a
        ``deadline`` (``time.perf_counter()`` value) it stops at the first check past it (the
        device is synchronised there, so the steps taken are the steps done)."""
        torch = self.torch
        z = self.tensor(z0, grad=True)
        v = self.tensor(direction)
        opt = torch.optim.Adam([z], lr=self.problem.optimizer.learning_rate)
        taken = 0
        for taken in range(1, steps + 1):
            opt.zero_grad(set_to_none=True)
            loss = self.loss(z, v)
            loss.backward()
            opt.step()
            if deadline is not None and taken % check_every == 0:
                self.synchronize()
                if time.perf_counter() > deadline:
                    break
        with torch.no_grad():
            return self.loss(z, v).item(), taken

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)


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


def compare(model, problem, radius: float, twin: TorchUnit, key, direction: np.ndarray) -> dict:
    """Loss and gradient at the start of one unit (``key``), jaxvis vs the twin on the same ``z``:
    a torch row means something only if these agree to float32 rounding."""
    import jax
    import jax.numpy as jnp

    from jaxvis.optimize import step as unit_step

    z0 = np.asarray(unit_step.init(key, problem).z)
    loss_j, grad_j = jax.value_and_grad(unit_step.loss_fn)(
        jnp.asarray(z0), model.network, problem, jnp.asarray(direction), jnp.float32(radius))
    loss_t, grad_t = twin.loss_and_grad(z0, direction)
    loss_j, grad_j = float(loss_j), np.asarray(grad_j)
    return {"loss_jaxvis": loss_j, "loss_torch": loss_t,
            "loss_rel_diff": abs(loss_t - loss_j) / max(abs(loss_j), 1e-30),
            "grad_rel_diff": float(np.linalg.norm(grad_t - grad_j) / max(np.linalg.norm(grad_j), 1e-30))}


def time_units(twin: TorchUnit, starts: list[np.ndarray], directions: np.ndarray, steps: int,
               budget_s: float | None = None) -> dict:
    """Units one after another (``steps`` each, from ``starts``), the way the original code ran,
    until they are done or ``budget_s`` is spent; unit-steps/s from what was done."""
    t0 = time.perf_counter()
    deadline = None if budget_s is None else t0 + budget_s
    done, losses, units = 0, [], 0
    for z0, d in zip(starts, directions):
        loss, taken = twin.run(z0, d, steps, deadline)
        done += taken
        units += taken == steps
        losses.append(loss)
        if deadline is not None and time.perf_counter() > deadline:
            break
    seconds = time.perf_counter() - t0
    return {"unit_steps": done, "seconds": seconds, "unit_steps_per_s": done / seconds,
            "units_completed": units, "steps": steps, "final_loss_mean": float(np.mean(losses))}


def main(argv=None) -> dict:
    """The torch row of the device run, in its own process: load the model (jax on CPU), check the
    twin against jaxvis, warm up, time units one at a time; JSON to ``--out``."""
    p = argparse.ArgumentParser(description="PyTorch eager twin: one unit at a time")
    p.add_argument("--weights", default="vgg19")
    p.add_argument("--layer", default="conv3_1")
    p.add_argument("--images", type=int, default=6)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--units", type=int, default=256, help="most units to time (the budget may stop sooner)")
    p.add_argument("--budget-s", type=float, default=30.0, help="seconds of timed units")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precisions", default="float32", help=f"comma-separated: {', '.join(PRECISIONS)}")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    import torch

    from benchmarks.variants import layer_problem, load_model, unit_inputs
    from jaxvis.optimize import step as unit_step

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.weights)
    lp = layer_problem(model, args.layer, args.images, args.steps)
    twin = TorchUnit(model, lp.diverse, lp.radius, args.device)
    set_precision(torch, "float32")  # the check at float32: CUDA torch's cuDNN default is TF32 (1.5e-3 on the H200)
    keys, directions = unit_inputs(lp, list(range(args.units)))
    result = {"device": args.device, "torch": torch.__version__, "layer": args.layer,
              "images": args.images, "check": compare(model, lp.diverse, lp.radius, twin, keys[0], directions[0]),
              "rows": []}
    starts = [np.asarray(unit_step.init(k, lp.diverse).z) for k in keys]  # the same starts as jaxvis
    if args.device.startswith("cuda"):
        result["device_name"] = torch.cuda.get_device_name(0)
    for precision in args.precisions.split(","):
        set_precision(torch, precision)
        twin.run(starts[0], directions[0], min(args.steps, 20))  # warm: allocator, cuDNN/oneDNN plans
        row = time_units(twin, starts, directions, args.steps, args.budget_s)
        result["rows"].append({"precision": precision, **row})
        print(f"torch {precision} ({args.device}): {row['unit_steps_per_s']:.1f} unit-steps/s", flush=True)
    args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
