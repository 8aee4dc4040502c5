"""`jaxvis analyze`: invariance metrics, natural-image calibration and the shift test for every unit
of a finished sweep, stored in the sweep's own HDF5 file and exported as CSV.

The metrics land in ``/layers/<layer>/metrics`` (definitions in the group's attributes). The file is
never edited in place: the analysis writes a copy (``<file>.tmp``) and renames it over the original
only when every layer is done, so an interrupted or failed analysis leaves the results untouched.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import jax
import numpy as np

from jaxvis.analysis import metrics as M
from jaxvis.analysis.natural import calibrate, random_patches
from jaxvis.analysis.shift import ShiftProblem, shift_test
from jaxvis.errors import JaxvisError
from jaxvis.io.results import METRICS, read_results
from jaxvis.objectives.diversity import pairwise_rms
from jaxvis.sweep import unit_key
from jaxvis.weights import Model, default_photos, load

SHIFT_IMAGES_PER_CALL = 4096


def model_for(config: dict) -> Model:
    """The network a results file was swept on, rebuilt from its config."""
    name = config.get("weights")
    if not name or name == "custom":
        raise JaxvisError("this results file was swept on a custom model; pass it with model=")
    return load(name, **(config.get("model") or {}).get("options", {}))


def _reference(model: Model, info, meta: dict, units: int, n: int, photos, seed: int) -> dict:
    """Distances within N random natural patches per unit, at the sweep's size and norm."""
    mean = model.convention.mean_rgb255
    patches = random_patches(photos, info.canvas, units * n, mean, meta["radius"], seed)
    x = patches.reshape(units, n, *patches.shape[1:]) - np.asarray(mean, np.float32)
    pixel = np.asarray(jax.vmap(pairwise_rms)(x))
    feature_layer = meta.get("feature_layer", "pixels")
    if feature_layer in (None, "pixels"):
        feature = pixel
    else:
        feats = np.asarray(model.layer_output(patches, feature_layer, post=True))
        feature = np.asarray(jax.vmap(pairwise_rms)(feats.reshape(units, n, *feats.shape[1:])))
    out = {}
    for name, d in (("pixel", pixel), ("feature", feature)):
        out[f"reference_{name}_min"], out[f"reference_{name}_mean"] = M.pair_stats(d)
    return out


def analyze_layer(model: Model, layer: str, arrays: dict, meta: dict, directions: np.ndarray,
                  photos: list[Path], *, shift: bool, shift_steps: int, shift_stride: int,
                  seed: int, top: int, learn_mask: bool = False) -> dict[str, np.ndarray]:
    info = model.network.layer(layer)
    units, n = arrays["images"].shape[:2]
    mean = model.convention.mean_rgb255
    out = M.from_sweep(arrays, mean)
    out.update(_reference(model, info, meta, units, n, photos, seed))
    natural = calibrate(model, info, directions, photos, top)
    out["natural_p99"] = natural["natural_p99"]
    out["natural_top_activations"] = natural["natural_top_activations"]
    out["natural_top_patches"] = natural["natural_top_patches"]
    p99 = np.where(natural["natural_p99"] > 0, natural["natural_p99"], np.nan)
    out["max_over_p99"] = (arrays["max_activation"] / p99).astype(np.float32)
    out["diverse_over_p99"] = (arrays["activations"] / p99[:, None]).astype(np.float32)
    if shift:
        problem = ShiftProblem(layer, info.centre, info.canvas, info.rf, model.convention, mean,
                               stride=shift_stride, steps=shift_steps, learn_mask=learn_mask)
        keys = jax.numpy.stack([unit_key(seed, f"shift:{layer}", int(u), 1) for u in arrays["unit"]])
        # every unit sees len(offsets)^2 crops at once: bound the images per compiled call
        chunk = max(1, SHIFT_IMAGES_PER_CALL // len(problem.offsets) ** 2)
        tests = [shift_test(model.network, problem, keys[i:i + chunk], directions[i:i + chunk], meta["radius"])
                 for i in range(0, units, chunk)]
        test = {k: np.concatenate([t[k] for t in tests]) for k in tests[0]}
        out["shift_texture"] = test["texture"]
        out["shift_responses"] = test["responses"]
        out["shift_index"] = (test["responses"].mean(axis=(1, 2)) / arrays["max_activation"]).astype(np.float32)
        if learn_mask:
            out["shift_sigma"] = test["sigma"].astype(np.float32)
    return out


def analyze(path: str | Path, *, model: Model | None = None, shift: bool = True, shift_steps: int = 300,
            shift_stride: int = 1, photos: list[Path] | None = None, top: int = 8, seed: int = 0,
            layers: list[str] | None = None, learn_mask: bool = False, log=print) -> Path:
    """Analyse a finished sweep in place (atomically); returns the CSV path."""
    path = Path(path)
    results = read_results(path, layers=layers)
    model = model or model_for(results.config)
    photos = photos or default_photos()
    analysed = {}
    for layer, arrays in results.layers.items():
        meta = results.layer_meta[layer]
        channels = model.network.layer(layer).channels
        basis = np.eye(channels, dtype=np.float32) if results.config.get("directions") is None \
            else np.asarray(results.config["directions"], np.float32)
        log(f"{layer}: {len(arrays['unit'])} units" + (" (with the shift test)" if shift else ""))
        analysed[layer] = analyze_layer(model, layer, arrays, meta, basis[arrays["unit"]], photos,
                                        shift=shift, shift_steps=shift_steps, shift_stride=shift_stride,
                                        seed=seed, top=top, learn_mask=learn_mask)
    config = {"shift": shift, "shift_steps": shift_steps, "shift_stride": shift_stride,
              "learn_mask": learn_mask, "top": top,
              "seed": seed, "photos": [p.name for p in photos]}
    _write(path, analysed, config)
    return export_csv(path, results.layers, analysed)


def _write(path: Path, analysed: dict, config: dict) -> None:
    import h5py

    tmp = path.with_name(f".{path.name}.analyze.tmp")
    shutil.copyfile(path, tmp)
    try:
        with h5py.File(tmp, "r+") as f:
            for layer, values in analysed.items():
                group = f["layers"][layer]
                if METRICS in group:
                    del group[METRICS]
                g = group.create_group(METRICS)
                g.attrs["definitions"] = json.dumps({k: M.DEFINITIONS[k] for k in values})
                g.attrs["config"] = json.dumps(config)
                for name, value in values.items():
                    g.create_dataset(name, data=value, compression="gzip" if value.ndim > 2 else None)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def export_csv(path: Path, layers: dict, analysed: dict) -> Path:
    """One row per (layer, unit) with every scalar metric."""
    out = path.with_suffix(".csv")
    tmp = out.with_name(f".{out.name}.tmp")
    names = sorted({k for v in analysed.values() for k, a in v.items() if a.ndim == 1})
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["layer", "unit", "max_activation", *names])
        for layer, values in analysed.items():
            for i, unit in enumerate(layers[layer]["unit"]):
                row = [layer, int(unit), f"{layers[layer]['max_activation'][i]:.6g}"]
                writer.writerow(row + [f"{values[k][i]:.6g}" if k in values else "" for k in names])
    os.replace(tmp, out)
    return out
