"""The learned ``gmm`` prior measured as docs/method.md reports it (section "The learned prior").

1. Ranking: the mean patch NLL of images on the sweep's contrast sphere (canvas of the layer, the
   norm the sweep gives its images): crops of the held-out photograph and of the training ones
   versus white noise, 1/f noise (independent channels and achromatic) and unregularised
   visualisations of real VGG-19 units (short sweeps without a prior). ``auc_held_out_lower``: the
   fraction of (held-out crop, other image) pairs in which the held-out crop has the lower NLL.
2. Cost: the same units swept with ``--prior gmm`` at a few beta values: the mean activation of the
   diverse images and the single-image maximum, as fractions of the beta = 0 run, and their NLL.

    .venv/bin/python benchmarks/gmm_prior.py [--units 0-7] [--steps 200] [--out FILE.json]

Uses the cached prior (trained on first use) and ``vgg19`` weights of the default weights root.
"""

from __future__ import annotations

import argparse
import json
import time

import jax.numpy as jnp
import numpy as np


def noise(kind: str, count: int, canvas: int, radius: float, rng) -> np.ndarray:
    """``[count, c, c, 3]`` noise images of norm ``radius``: white, 1/f amplitude (each channel its
    own) or 1/f achromatic (one field in all three channels)."""
    if kind == "white":
        x = rng.normal(size=(count, canvas, canvas, 3))
    else:
        k = np.fft.fftfreq(canvas)
        f = np.sqrt(k[:, None] ** 2 + k[None, :] ** 2)
        amp = np.where(f > 0, 1 / np.maximum(f, 1e-9), 0.0)[None, :, :, None]
        channels = 3 if kind == "pink" else 1
        spec = amp * (rng.normal(size=(count, canvas, canvas, channels))
                      + 1j * rng.normal(size=(count, canvas, canvas, channels)))
        x = np.real(np.fft.ifft2(spec, axes=(1, 2)))
        x = np.repeat(x, 3, axis=-1) if channels == 1 else x
    return radius * x / np.linalg.norm(x.reshape(count, -1), axis=1)[:, None, None, None]


def main() -> None:
    import jaxvis
    from jaxvis.analysis.natural import random_patches
    from jaxvis.data import prior
    from jaxvis.objectives import gmm
    from jaxvis.data.budget import radius as budget_radius
    from jaxvis.run.plan import target_layers
    from jaxvis.weights import default_photos, weights_root

    ap = argparse.ArgumentParser()
    ap.add_argument("--layer", default="conv2_1")
    ap.add_argument("--units", default="0-7")
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--betas", default="0.3,1,3")
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--out")
    args = ap.parse_args()

    model = jaxvis.load("vgg19")
    canvas = target_layers(model, args.layer)[0].canvas
    mean = np.asarray(model.convention.mean_rgb255, np.float32)
    photos = default_photos()
    r = budget_radius(canvas, tuple(mean), photos, weights_root() / "budgets.json")
    mixture, meta = prior.load(prior.entry_folder())
    nll = lambda x: np.asarray(gmm.patch_nll(jnp.asarray(x, jnp.float32), mixture).mean(axis=(1, 2)))  # noqa: E731

    by_name = {p.name: p for p in photos}
    rng = np.random.default_rng(0)
    sets = {
        "held-out photo (" + ",".join(prior.HELD_OUT) + ")":
            random_patches([by_name[n] for n in prior.HELD_OUT], canvas, args.count, mean, r, 1) - mean,
        "training photos": random_patches([by_name[n] for n in prior.TRAIN_PHOTOS], canvas, args.count, mean, r, 2) - mean,
        "white noise": noise("white", args.count, canvas, r, rng),
        "1/f noise, channels independent": noise("pink", args.count, canvas, r, rng),
        "1/f noise, achromatic": noise("pink-grey", args.count, canvas, r, rng),
    }
    report = {"layer": args.layer, "canvas": canvas, "radius": r, "prior": {k: meta[k] for k in (
        "components", "patch", "seed", "held_out_log_likelihood")}, "ranking": {}, "cost": {}}

    runs, seconds = {}, {}
    for beta in [0.0] + [float(b) for b in args.betas.split(",")]:
        t0 = time.perf_counter()
        runs[beta] = jaxvis.sweep(model, args.layer, args.units, images=args.images, steps=args.steps,
                                  prior="gmm" if beta else "none", beta=beta, restarts=1)[args.layer]
        seconds[beta] = round(time.perf_counter() - t0, 1)
    base = runs[0.0]
    sets["unregularised visualisations (beta = 0)"] = base["images"].reshape(-1, canvas, canvas, 3) - mean
    sets["unregularised single-image maxima"] = base["max_image"].reshape(-1, canvas, canvas, 3) - mean
    natural = nll(sets[next(iter(sets))])
    for name, x in sets.items():
        v = nll(x)
        report["ranking"][name] = {"mean_nll": float(v.mean()), "median_nll": float(np.median(v)),
                                   "auc_held_out_lower": float(np.mean(natural[:, None] < v[None, :])),
                                   "norm": float(np.linalg.norm(x.reshape(len(x), -1), axis=1).mean())}
    for beta, run in runs.items():
        report["cost"][str(beta)] = {
            "activation_fraction": float(np.mean(run["activations"].mean(1) / base["activations"].mean(1))),
            "max_activation_fraction": float(np.mean(run["max_activation"] / base["max_activation"])),
            "mean_nll": float(nll(run["images"].reshape(-1, canvas, canvas, 3) - mean).mean()),
            "seconds": seconds[beta]}
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
