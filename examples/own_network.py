"""Example 3: your own Flax network, and an objective of your own.

    .venv/bin/python -m examples.own_network            # 300 steps
    .venv/bin/python -m examples.own_network --tiny     # 20 steps

A two-layer network written from scratch as a :class:`jaxvis.Network` (an ``nnx.Module``):
``specs()`` declares its named layers and their spatial ops, so jaxvis computes receptive fields
and canvases (and checks them against the real shapes before the first sweep); ``forward`` calls
``record(name, pre, post)`` for each. Its weights here are random (load your own into the
``nnx.Param`` s); the contrast budget is given as ``radius`` since the network has no natural
mean colour of its own.

Then a response of your own (``register_response``): a pure jax function of the target layer's
pre-activations ``[N, h, w, C]`` and the unit's direction ``[C]`` -> ``[N]``, one per image;
here the direction's largest value anywhere on a 15 px canvas (a soft maximum over positions).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jaxvis
from jaxvis.objectives.response import RESPONSES, register_response


class TwoLayers(jaxvis.Network):
    """conv 5x5 (8 channels, VALID) -> ReLU -> max-pool 2/2 -> conv 3x3 (4 channels, VALID) -> ReLU."""

    name = "two-layers"

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)  # numpy: an eager jax.random draw would compile threefry (seconds)
        self.k1 = nnx.Param(jnp.asarray(rng.normal(size=(5, 5, 3, 8)) / np.sqrt(75), jnp.float32))
        self.b1 = nnx.Param(jnp.zeros(8))
        self.k2 = nnx.Param(jnp.asarray(rng.normal(size=(3, 3, 8, 4)) / np.sqrt(72), jnp.float32))
        self.b2 = nnx.Param(jnp.zeros(4))

    def specs(self):
        return (jaxvis.LayerSpec("conv1", 8, (jaxvis.Op(5, 1, "VALID"),)),
                jaxvis.LayerSpec("conv2", 4, (jaxvis.Op(2, 2, "VALID"), jaxvis.Op(3, 1, "VALID"))))

    def forward(self, x, record):
        conv = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "VALID",
                                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        pre = conv(x, self.k1[...]) + self.b1[...]
        h = record("conv1", pre, jax.nn.relu(pre))
        h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        pre = conv(h, self.k2[...]) + self.b2[...]
        record("conv2", pre, jax.nn.relu(pre))


def soft_peak(pre, direction):
    """``[N, h, w, C]``, ``[C]`` -> ``[N]``: a soft maximum (temperature 1) of the direction over
    the output positions: the unit anywhere on the canvas."""
    return jax.nn.logsumexp(pre @ direction, axis=(1, 2)) - jnp.log(pre.shape[1] * pre.shape[2])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--out", default="out/examples/own_network")
    p.add_argument("--tiny", action="store_true", help="20 steps, 1 image (a smoke run)")
    args = p.parse_args(argv)
    jaxvis.cpu_devices()  # one jax device per core, before anything touches jax
    steps = 20 if args.tiny else args.steps
    # the input convention the weights expect, centred on the images' mean colour: here RGB 0..1
    model = jaxvis.Model(TwoLayers(), jaxvis.InputConvention("RGB", 1 / 255, (0.5, 0.5, 0.5)), {"name": "mine"})
    for row in model.network.layers():  # computed from specs(): conv2 sees 10 px, centred
        print(row)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = dict(images=4, diversity="pixels", lam=0.05, steps=steps, restarts=1, radius=300.0)
    if args.tiny:  # one image, no diversity: the set is the maximum's own problem, one compilation
        settings.update(images=1, diversity="none")
    centre = jaxvis.sweep(model, "conv2", "all", **settings)["conv2"]
    jaxvis.save_images(centre["images"], out / "conv2_centre.png")
    if "soft_peak" not in RESPONSES:  # names are for good: register once per process
        register_response("soft_peak", soft_peak, "soft maximum of the direction over the output positions")
    peak = jaxvis.sweep(model, "conv2", "all", response="soft_peak", canvas=15, **settings)["conv2"]
    jaxvis.save_images(peak["images"], out / "conv2_soft_peak.png")
    for name, r in (("centre", centre), ("soft_peak", peak)):
        print(f"{name:<10} images {r['images'].shape[1:4]}, maxima {np.round(r['max_activation'], 3).tolist()}")
    return {"centre": centre, "soft_peak": peak, "model": model}


if __name__ == "__main__":
    main()
