"""Example 1: one layer of VGG-19 the paper's way: sweep, analyse, report.

    .venv/bin/python -m examples.vgg19_one_layer                 # conv2_1, units 0-15, 1000 steps
    .venv/bin/python -m examples.vgg19_one_layer --tiny          # 2 units, 20 steps: a smoke run

The paper's method (Cadena et al. 2018): for every unit, 6 images on the natural contrast sphere
that all drive the unit's centre position while being as different as possible (the min pairwise
distance of a lower layer's features, lambda 0.01), against the unit's single-image maximum (best
of 4 restarts). Writes into ``--out``: ``<layer>.h5`` (the results file; run again to resume),
``<layer>.png`` (one row per unit), ``<layer>.csv`` (metrics) and ``<layer>_report/index.html``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import jaxvis
from jaxvis.report.summary import analysis_line, sweep_line
from jaxvis.report.pages import report
from jaxvis.weights import default_photos


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default="vgg19-normalized", help="Gatys-normalised real VGG-19 (the paper's)")
    p.add_argument("--layer", default="conv2_1")
    p.add_argument("--units", default="0-15")
    p.add_argument("--out", default="out/examples/vgg19_one_layer")
    p.add_argument("--tiny", action="store_true", help="2 units, 3 images, 20 steps; no shift test or gratings, one photo")
    args = p.parse_args(argv)
    jaxvis.cpu_devices()  # one jax device per core, before anything touches jax
    units, settings = args.units, {}  # the defaults are the paper's: N 6, lambda 0.01, 1000 steps
    if args.tiny:
        units, settings = "0-1", dict(images=3, steps=20, restarts=1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.layer}.h5"

    # 1. the sweep: every unit's diverse set and its maximum, crash-safe into the results file
    result = jaxvis.sweep(args.weights, args.layer, units, out=path, progress=not args.tiny, **settings)
    r = result[args.layer]
    print(sweep_line(args.layer, r, ()))
    print("activation fractions per unit:", np.round(r["activations"] / r["max_activation"][:, None], 2).tolist())
    jaxvis.save_images(r["images"], out / f"{args.layer}.png")  # one contrast mapping per row

    # 2. the analysis: invariance metrics into the same file, and a CSV
    # a smoke run skips the shift test, the grating battery and the phase rotation, and takes its
    # natural references from one photo
    tiny = dict(shift=False, battery=None, photos=default_photos()[:1]) if args.tiny else {}
    done = jaxvis.analyze(path, log=lambda line: None, **tiny)
    print(analysis_line(args.layer, done.metrics[args.layer]))

    # 3. the report: a static HTML page per layer
    pages = report(path, out / f"{args.layer}_report")
    print(f"results {path}, pictures {out / (args.layer + '.png')}, report {pages[-1]}")
    return {"results": path, "csv": done.csv, "report": out / f"{args.layer}_report" / "index.html",
            "sweep": r, "metrics": done.metrics[args.layer]}


if __name__ == "__main__":
    main()
