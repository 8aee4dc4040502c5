"""What a results file says about a layer, summarised: its scalar metrics, their quartiles, the
layers in catalogue order, the model's name. Read by the report and by ``jaxvis compare``.

Metrics come from the ``metrics`` group ``jaxvis analyze`` adds. Those the sweep itself
determines (:data:`SWEEP_INPUTS`: activation fractions, pairwise distances of the diverse set)
are computed on the fly through the metrics table (:mod:`jaxvis.analysis.metrics`) where the
group lacks them, so a freshly swept file is summarised too. Only these small datasets are read
whole; images stay on disk. The read-out's classes and a layer's profile
(:mod:`jaxvis.analysis.readout`) are computed here from the stored measures:
:func:`layer_profiles` gives them for a whole file.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from jaxvis.analysis import metrics as metric_table
from jaxvis.analysis import readout as rules
from jaxvis.store.results import METRICS, json_attr, open_results, unknown_layer

# sweep datasets read whole to compute metrics on the fly: per unit a few numbers, no images
SWEEP_INPUTS = ("activations", "max_activation", "pixel_distances", "feature_distances")
# sweep datasets shown beside the metrics, with what they are
SWEEP_COLUMNS = {"max_activation": "activation of the single-image maximum",
                 "steps": "optimiser steps of the diverse set"}
# what pages show for a metric (its name and definition on hover); a metric not listed shows its
# name with spaces. "the diverse set" is the paper's lambda set; "floor set": docs/floor.md.
LABELS = {
    "max_activation": "best image's activation",
    "steps": "optimiser steps (diverse set)",
    "fraction_min": "weakest diverse image (x best)",
    "fraction_median": "median diverse image (x best)",
    "pixel_min": "diverse set: closest pair (pixels)",
    "pixel_mean": "diverse set: mean distance (pixels)",
    "feature_min": "diverse set: closest pair (features)",
    "feature_mean": "diverse set: mean distance (features)",
    "participation_ratio": "diverse set: effective dimensions",
    "shift_index": "shift-invariance index",
    "max_over_p99": "best image / natural 99th percentile",
    "reference_pixel_min": "natural patches: closest pair (pixels)",
    "reference_pixel_mean": "natural patches: mean distance (pixels)",
    "reference_feature_min": "natural patches: closest pair (features)",
    "reference_feature_mean": "natural patches: mean distance (features)",
    "natural_p99": "natural patches' 99th percentile response",
    "shift_sigma": "shift test: learnt mask radius (px)",
    "shift_steps": "shift test: optimiser steps",
    "max_raised": "best image raised by a diverse one",
    "floor_fraction_min": "weakest image (x best)",
    "floor_pixel_min": "closest pair (pixels)",
    "floor_pixel_mean": "mean distance (pixels)",
    "floor_feature_min": "closest pair (features)",
    "floor_pixel_vs_natural": "closest pair / natural patches'",
    "floor_pixel_vs_linear": "closest pair / a linear unit's",
    "floor_agreement": "starts' agreement",
    "floor_phase_spread": "phase spread (degrees)",
    "floor_feasible": "kept its floor",
    "floor_steps_all": "optimiser steps (all starts)",
    "grating_preferred_orientation": "preferred grating: orientation (rad)",
    "grating_preferred_period": "preferred grating: period (px)",
    "grating_preferred_colour": "preferred grating: colour axis",
    "grating_orientation_selectivity": "orientation selectivity",
    "grating_orientation_index": "orientation index",
    "grating_f1_f0": "grating F1/F0 (phase modulation)",
    "grating_phase_min_max": "grating: weakest / strongest phase",
    "grating_best": "best grating's response",
    "grating_best_fraction": "best grating / best image",
    "grating_blank": "response to a blank (mean colour)",
    "rotation_min_max": "phase-rotated best image: min / max",
    "rotation_at_pi": "best image with phase reversed / max",
    "rotation_orientation": "best image's orientation (rad)",
    "phase_class": "phase class",
    "diversity_class": "diversity class",
    "shift_class": "shift class",
}
# a 95% interval: the normal quantile of Wilson's score interval for a share of units
Z95 = 1.959964


def label(name: str) -> str:
    """Plain words for metric ``name`` (:data:`LABELS`; else the name with spaces)."""
    return LABELS.get(name, name.replace("_", " "))


def percent(share: float) -> str:
    """A share of units as pages and lines print it: whole percent, ``<1%`` / ``>99%`` where
    rounding would say 0% or 100% of a share that is not, ``–`` for NaN."""
    if not math.isfinite(share):
        return "–"
    if 0 < share < 0.005:
        return "<1%"
    if 0.995 < share < 1:
        return ">99%"
    return f"{100 * share:.0f}%"


def share_interval(count: int, total: int) -> tuple[float, float]:
    """Wilson's 95% score interval of the share ``count / total`` (NaN, NaN for no units): how
    far the share of a layer's units could be from that of a layer of the same kind."""
    if total <= 0:
        return math.nan, math.nan
    p, z2 = count / total, Z95 ** 2
    centre = (p + z2 / (2 * total)) / (1 + z2 / total)
    half = Z95 * math.sqrt(p * (1 - p) / total + z2 / (4 * total ** 2)) / (1 + z2 / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def sweep_inputs(group) -> dict[str, np.ndarray]:
    """The :data:`SWEEP_INPUTS` of a layer group that are there and well-shaped; a malformed
    one is left out (the metrics that need it are then missing, not wrong)."""
    out = {}
    count = len(group["unit"]) if "unit" in group else None
    for name in SWEEP_INPUTS:
        if name not in group:
            continue
        value = np.asarray(group[name][()])
        if value.dtype.kind not in "biuf" or (count is not None and value.shape[:1] != (count,)):
            continue
        out[name] = value.astype(np.float64)
    acts, peak = out.get("activations"), out.get("max_activation")
    if acts is not None and (acts.ndim != 2 or acts.shape[1] == 0):
        del out["activations"]
    if peak is not None and (peak.ndim != 1 or (acts is not None and peak.shape != acts.shape[:1])):
        del out["max_activation"]
    for name in ("pixel_distances", "feature_distances"):
        d = out.get(name)
        if d is not None and (d.ndim != 3 or d.shape[1] != d.shape[2] or d.shape[1] < 2):
            del out[name]
    return out


def stored_scalars(group) -> dict[str, np.ndarray]:
    """The numeric datasets of one value per unit (``[U]``) in the group's ``metrics`` group."""
    if METRICS not in group:
        return {}
    count = len(group["unit"]) if "unit" in group else None
    out = {}
    for name, item in group[METRICS].items():
        if not hasattr(item, "dtype") or item.dtype.kind not in "biuf" or item.ndim != 1:
            continue
        if count is not None and item.shape[0] != count:
            continue
        out[name] = np.asarray(item[()], np.float64)
    return out


def layer_scalars(group) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """All scalar metrics of a layer group: ({name: [U] float64}, {name: "metrics", "sweep" or
    "readout"}), in table order. Every ``[U]`` numeric dataset of the metrics group counts; the
    scalar metrics the sweep determines fill in what the group lacks; the read-out's class columns
    are always recomputed from the stored measures (so they follow the current thresholds), and
    left out where no unit has a class."""
    scalars = stored_scalars(group)
    sources = {name: "metrics" for name in scalars}
    derived = metric_table.evaluate(sweep_inputs(group), names=[n for n in metric_table.scalar_names(metric_table.REGISTRY)
                                        if n not in scalars])
    for name, values in derived.items():
        scalars[name] = np.asarray(values, np.float64)
        sources[name] = "sweep"
    values, floors = layer_values(group)
    for axis, codes in rules.classify(values, floors).items():
        name = rules.CLASS_METRICS[axis]
        if name not in metric_table.REGISTRY or not metric_table.REGISTRY[name].scalar:
            continue
        scalars.pop(name, None)
        sources.pop(name, None)
        if np.isfinite(codes).any():
            scalars[name], sources[name] = np.asarray(codes, np.float64), "readout"
    order = metric_table.order(scalars)
    return {n: scalars[n] for n in order}, {n: sources[n] for n in order}


def layer_floors(group) -> list[float]:
    """The activation floors of a layer's ``floor_*`` arrays, in their order (layer metadata
    ``floors``; empty where there are none or they are damaged)."""
    floors = layer_meta(group).get("floors")
    if not isinstance(floors, list) or not all(isinstance(a, (int, float)) and not isinstance(a, bool)
                                               for a in floors):
        return []
    return [float(a) for a in floors]


def layer_values(group) -> tuple[dict[str, np.ndarray], list[float]]:
    """What the read-out (:mod:`jaxvis.analysis.readout`) reads of a layer group, and its floors:
    every stored ``[U]`` metric, ``max_activation``, and the ``[U, floors]`` metrics
    ``floor_pixel_vs_natural`` (stored by the analysis), ``floor_fraction_min`` and
    ``floor_pixel_min`` and ``floor_agreement`` (stored, else computed from the sweep's floor sets
    and their certificate), ``floor_phase_spread`` (stored), ``floor_pixel_vs_linear`` (from
    ``floor_pixel_min``, the layer's radius and the sets' shape) and the ``[U, gratings]`` near-peak
    measures of the phase class (:data:`jaxvis.analysis.readout.NEAR_PEAK_MEASURES`).
    Malformed arrays are left out (their axis then has no class)."""
    values = dict(stored_scalars(group))
    count = len(group["unit"]) if "unit" in group else None
    inputs = sweep_inputs(group)
    if "max_activation" in inputs:
        values["max_activation"] = inputs["max_activation"]
    floors = layer_floors(group)
    shape = (count, len(floors))
    metrics = group[METRICS] if METRICS in group else {}
    for name in ("floor_pixel_vs_natural", "floor_fraction_min", "floor_pixel_min", "floor_agreement",
                 "floor_phase_spread"):
        item = metrics[name] if name in metrics else None
        if item is not None and hasattr(item, "dtype") and item.dtype.kind in "fiu" and item.shape == shape:
            values[name] = np.asarray(item[()], np.float64)
    for name in rules.NEAR_PEAK_MEASURES:  # [U, gratings]: the phase class's near-peak gratings
        item = metrics[name] if name in metrics else None
        if item is not None and hasattr(item, "dtype") and item.dtype.kind == "f" and item.ndim == 2 \
                and item.shape[0] == count:
            values[name] = np.asarray(item[()], np.float64)
    sets = group["floor_images"].shape if floors and "floor_images" in group else None
    sets = sets if sets is not None and len(sets) == 6 and sets[:2] == shape and sets[2] >= 2 else None
    sweep = {}  # the floor sets' small datasets, for what the metrics group lacks
    for name, tail in (("floor_activations", 1), ("floor_pixel_distances", 2)):
        item = group[name] if sets is not None and name in group else None
        if item is not None and item.dtype.kind in "fiu" and item.shape == (*shape, *[sets[2]] * tail):
            sweep[name] = np.asarray(item[()], np.float64)
    for name in ("floor_start_diversity", "floor_start_feasible"):  # the certificate, [U, floors, starts]
        item = group[name] if sets is not None and name in group else None
        if item is not None and item.dtype.kind in "fiub" and item.ndim == 3 and item.shape[:2] == shape:
            sweep[name] = np.asarray(item[()])
    if "max_activation" in values:
        sweep["max_activation"] = values["max_activation"]
    derived = metric_table.evaluate(sweep, names=[n for n in ("floor_fraction_min", "floor_pixel_min", "floor_agreement")
                                       if n not in values])
    values.update({k: np.asarray(v, np.float64) for k, v in derived.items()})
    radius = layer_meta(group).get("radius")
    if sets is not None and "floor_pixel_min" in values and isinstance(radius, (int, float)) \
            and not isinstance(radius, bool) and radius > 0:
        bound = rules.floor_bound(float(radius), sets, floors, values.get("max_activation"), values.get("grating_blank"))
        values["floor_pixel_vs_linear"] = values["floor_pixel_min"] / bound
    return values, floors


def layer_profile(name: str, group, *, alpha: float | None = rules.PROFILE_ALPHA) -> rules.Profile:
    """The read-out profile (:class:`jaxvis.analysis.readout.Profile`) of one layer group."""
    values, floors = layer_values(group)
    if "unit" in group and not values:
        values = {"unit": np.asarray(group["unit"][()])}  # nothing measured: every class unknown
    rf = layer_meta(group).get("rf")
    rf = int(rf) if isinstance(rf, (int, float)) and not isinstance(rf, bool) else None
    return rules.profile(values, floors, layer=name, rf=rf, alpha=alpha)


def layer_profiles(results_path, layers=None, *, alpha: float | None = rules.PROFILE_ALPHA) -> dict[str, rules.Profile]:
    """{layer: :class:`jaxvis.analysis.readout.Profile`} of a results file, in catalogue order
    (``layers``: only these). Classes and medians come from the stored metrics of ``jaxvis
    analyze`` (a layer not analysed has only unknown classes); ``alpha`` the floor whose sets the
    diversity class and median describe (None where the layer has no set at it). Format them with
    :func:`jaxvis.analysis.readout.format_profiles`."""
    path = Path(results_path)
    with open_results(path) as f:
        config = json_attr(f.attrs, "config", path)
        config = config if isinstance(config, dict) else {}
        groups = f["layers"]
        names = layer_order(groups, config, {n: layer_meta(g).get("rf") for n, g in groups.items()})
        for name in layers or []:
            if name not in groups:
                raise unknown_layer(path, name, names)
        chosen = list(dict.fromkeys(layers)) if layers else names
        return {name: layer_profile(name, groups[name], alpha=alpha) for name in chosen}


def activation_fractions(group) -> np.ndarray | None:
    """``[U, N]``: the stored ``activation_fraction``, else computed from the sweep; None
    without activations."""
    inputs = sweep_inputs(group)
    if METRICS in group and "activation_fraction" in group[METRICS] and "activations" in inputs:
        stored = np.asarray(group[METRICS]["activation_fraction"][()], np.float64)
        if stored.shape == inputs["activations"].shape:
            return stored
    return metric_table.evaluate(inputs, names=["activation_fraction"]).get("activation_fraction")


def definitions(group) -> dict[str, str]:
    """What each metric and sweep column of a layer is: the table's definitions, overridden by
    those the analysis stored next to its values (they describe what was computed then)."""
    stored = {}
    if METRICS in group:
        try:
            found = json.loads(group[METRICS].attrs.get("definitions", "{}"))
        except (TypeError, ValueError):
            found = {}
        stored = {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}
    return {**SWEEP_COLUMNS, **metric_table.definitions(metric_table.REGISTRY), **stored}


def layer_meta(group) -> dict:
    """A layer's metadata (empty where it is missing or damaged: a summary then shows less)."""
    try:
        meta = json.loads(group.attrs["meta"])
    except (KeyError, TypeError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def quartiles(values) -> tuple[int, float, float, float]:
    """(number of finite values, first quartile, median, third quartile); NaN when none."""
    if values is None:
        return 0, math.nan, math.nan, math.nan
    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0, math.nan, math.nan, math.nan
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return int(v.size), float(q1), float(med), float(q3)


def _natural(name: str):
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name)]


def layer_order(names, config: dict, rfs: dict) -> list[str]:
    """Layers in catalogue order: HDF5 lists groups alphabetically (``blocks.10`` before
    ``blocks.2``), so use the sweep config's ``layers`` list, then receptive field (``rfs``),
    then natural name order for anything it does not list."""
    names = list(names)
    listed = config.get("layers") if isinstance(config, dict) else None
    listed = [n for n in listed if n in names] if isinstance(listed, list) else []
    listed = list(dict.fromkeys(listed))
    rest = sorted((n for n in names if n not in listed),
                  key=lambda n: (rfs.get(n) is None, rfs.get(n) or 0, _natural(n)))
    return listed + rest


def model_name(config: dict) -> str:
    """``weights (model)`` from a sweep config, e.g. ``vgg19-normalized (vgg19)``."""
    config = config if isinstance(config, dict) else {}
    weights = config.get("weights")
    model = config.get("model")
    model = model.get("name") if isinstance(model, dict) else model
    if weights and model and str(weights) != str(model):
        return f"{weights} ({model})"
    return str(weights or model or "unknown model")


def sweep_line(layer: str, arrays: dict, floors=()) -> str:
    """One line about a swept layer (the CLI's): units, median activation fraction of all diverse
    images, mean pairwise pixel distance, and per activation floor (``floors``, the alphas in the
    order of the ``floor_*`` arrays) the median min pixel distance, smallest fraction and the share of
    units whose floor-set starts agree (``floor_agreement``, where the certificate is there)."""
    m = metric_table.evaluate(arrays, names=["activation_fraction", "pixel_mean", "floor_fraction_min",
                                  "floor_pixel_min", "floor_agreement"])
    frac = m.get("activation_fraction")
    pixel = m.get("pixel_mean")
    text = (f"{layer}: {len(arrays['unit'])} units, median activation of the diverse images "
            f"{_nanstat(np.nanmedian, frac):.2f} x the maximum, mean pairwise pixel distance "
            f"{_nanstat(np.nanmean, pixel):.1f}")
    for i, alpha in enumerate(floors if "floor_pixel_min" in m else ()):
        text += (f"; floor {alpha:g}: median min pixel distance "
                 f"{_nanstat(np.nanmedian, m['floor_pixel_min'][:, i]):.1f}, smallest fraction "
                 f"{_nanstat(np.nanmin, m['floor_fraction_min'][:, i]):.3f}")
        if "floor_agreement" in m and m["floor_agreement"].shape[1] > i:
            agree = rules.threshold("floor_agreement")
            settled = np.nan_to_num(m["floor_agreement"][:, i]) >= agree
            text += f", starts agree (within {1 - agree:.0%}) for {np.mean(settled):.0%} of the units"
    raised = arrays.get("max_raised")
    if raised is not None and np.any(raised):
        text += f"; {int(np.sum(raised))} units' maximum raised to a diverse image's activation"
    return text


def analysis_line(layer: str, values: dict) -> str:
    """One line about an analysed layer (the CLI's): median activation fraction, participation
    ratio and, where measured, the share of shift-invariant units and the grating read-out
    (thresholds of :data:`jaxvis.analysis.readout.THRESHOLDS`)."""
    shift = values.get("shift_index")
    text = (f"{layer}: median activation fraction {_nanstat(np.nanmedian, values.get('fraction_median')):.2f}, "
            f"participation ratio {_nanstat(np.nanmedian, values.get('participation_ratio')):.2f}")
    if shift is not None:
        cut = rules.threshold("shift_invariant")
        text += (f", shift index > {cut:g}: {np.mean(np.asarray(shift) > cut):.0%} "
                 f"(median {_nanstat(np.nanmedian, shift):.2f})")
    f1f0 = values.get("grating_f1_f0")
    if f1f0 is not None:
        cut = rules.threshold("f1_f0")
        text += (f", grating F1/F0 median {_nanstat(np.nanmedian, f1f0):.2f} "
                 f"(< {cut:g}: {np.mean(np.asarray(f1f0) < cut):.0%}), phase-rotation min/max median "
                 f"{_nanstat(np.nanmedian, values.get('rotation_min_max')):.2f}")
    shares = []  # the class metrics of one class per unit, their names from the read-out's axes
    for axis, metric in rules.CLASS_METRICS.items():
        codes = values.get(metric)
        if codes is not None and np.ndim(codes) == 1 and len(codes):
            names = rules.class_text(metric, codes)
            shares.append(", ".join(f"{percent(names.count(n) / len(names))} {n}"
                                    for n in (*rules.AXES[axis][::-1], rules.UNKNOWN) if n in names or n != rules.UNKNOWN))
    if shares:
        text += f"; read-out: {'; '.join(shares)}"
    return text


def _nanstat(stat, values) -> float:
    v = np.asarray(values if values is not None else [], np.float64)
    return float(stat(v)) if np.isfinite(v).any() else math.nan
