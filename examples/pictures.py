"""The pictures of docs/sweep.md ("One unit under each setting"): one EfficientNet-Lite0 unit
under each setting of the method.

    .venv/bin/python -m examples.pictures [--steps 200] [--layer blocks.3] [--unit 7] [--out docs/images]

Per setting one sweep of that unit (6 images, 1 restart of the maximum, the same seed, so every
setting starts from the same random numbers), one PNG row of its 6 diverse images (one contrast
mapping per row) and one line of activations. ``--tiny`` runs 3 steps of every setting (what
``tests/examples/test_examples.py`` does).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jaxvis
from jaxvis.param.transform import Transforms

MOVES = Transforms(jitter=4, scales=(1.0, 0.95, 1.05), rotate=5.0, pad=4)
SETTINGS = {  # file name: (what differs, the sweep's settings)
    "pixel": ("the paper's: pixels, whitened gradient, centre unit", {}),
    "transforms": ("random jitter 4, scale 0.95-1.05, rotation 5 deg, mirror pad 4 at every step",
                   {"transforms": MOVES}),
    "fourier": ("decorrelated colour in a Fourier basis (same sphere, same gradient geometry)",
                {"param": "fourier"}),
    "fourier_transforms": ("fourier and the transforms together", {"param": "fourier", "transforms": MOVES}),
    "gmm": ("the learned gmm patch prior, beta 2", {"prior": "gmm", "beta": 2.0}),
    "channel": ("channel objective: the spatial mean of the channel on a 81 px canvas",
                {"response": "channel", "canvas": 81}),
    "channel_fourier_transforms": ("the channel objective with fourier and the transforms (lucid's usual setting)",
                                   {"response": "channel", "canvas": 81, "param": "fourier", "transforms": MOVES}),
}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default="efficientnet-lite0")
    p.add_argument("--layer", default="blocks.3")
    p.add_argument("--unit", type=int, default=7)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--only", help="comma-separated settings (default: all)")
    p.add_argument("--out", default="docs/images")
    p.add_argument("--tiny", action="store_true", help="3 steps per setting (a smoke run)")
    args = p.parse_args(argv)
    jaxvis.cpu_devices()
    steps = 3 if args.tiny else args.steps
    model = jaxvis.load(args.weights)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = args.only.split(",") if args.only else list(SETTINGS)
    for name in names:
        what, settings = SETTINGS[name]
        t0 = time.perf_counter()
        r = jaxvis.sweep(model, args.layer, [args.unit], images=6, steps=steps, restarts=1,
                         **settings)[args.layer]
        path = jaxvis.save_images(r["images"], out / f"{args.layer}_{args.unit}_{name}.png")
        fractions = r["activations"][0] / r["max_activation"][0]
        print(f"{path}: {what}; max {r['max_activation'][0]:.2f}, diverse {fractions.min():.2f}-"
              f"{fractions.max():.2f} of it, {int(r['steps'][0])} steps, {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
