"""Example 2: a deeper layer, where the paper's pixel images get noisy: random transforms, the
Fourier parameterisation and the channel objective.

    .venv/bin/python -m examples.deeper_layer                          # conv4_1 of VGG-19, units 0-3
    .venv/bin/python -m examples.deeper_layer --tiny --layer conv2_1   # a smoke run

Three sweeps of the same units from the same random starts (the keys depend on seed, layer, unit
and N only), each written as one PNG (a row per unit) into ``--out``:

- ``pixel``: the paper's parameterisation, for comparison;
- ``fourier_transforms``: decorrelated colour in a Fourier basis on the same contrast sphere
  (``param="fourier"``, docs/method.md section 10), every image randomly shifted, scaled and
  rotated at every step (``jitter``, ``scales``, ``rotate``, ``pad``; section 9);
- ``channel``: the unit is the spatial mean of the channel over the layer's whole output on a
  canvas twice the receptive field (``response="channel", canvas=...``; section 12), with the
  contrast budget of that canvas.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import jaxvis


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default="vgg19-normalized")
    p.add_argument("--layer", default="conv4_1")
    p.add_argument("--units", default="0-3")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--out", default="out/examples/deeper_layer")
    p.add_argument("--tiny", action="store_true", help="1 unit, 1 image, 10 steps (a smoke run)")
    args = p.parse_args(argv)
    jaxvis.cpu_devices()
    model = jaxvis.load(args.weights)
    info = model.network.layer(args.layer)
    units, common = args.units, dict(steps=args.steps, restarts=1)
    if args.tiny:
        # one image and no diversity: the set is then the maximum's own problem (one compilation
        # per setting instead of two); the full run is what the example is about
        units, common = "0", dict(steps=10, restarts=1, images=1, diversity="none")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "pixel": {},
        "fourier_transforms": dict(param="fourier", jitter=2, scales=(1.0, 0.95, 1.05), rotate=5.0, pad=4),
        "channel": dict(param="fourier", response="channel", canvas=2 * info.canvas),
    }
    results = {}
    for name, extra in settings.items():
        r = jaxvis.sweep(model, args.layer, units, **common, **extra)[args.layer]
        jaxvis.save_images(r["images"], out / f"{args.layer}_{name}.png")
        fractions = r["activations"] / r["max_activation"][:, None]
        print(f"{name:<20} images {r['images'].shape[2]} px, maxima {np.round(r['max_activation'], 2).tolist()}, "
              f"diverse sets at {fractions.min():.2f}-{fractions.max():.2f} of them")
        results[name] = r
    return results


if __name__ == "__main__":
    main()
