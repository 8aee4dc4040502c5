"""The metrics table: every per-unit metric jaxvis stores, shows, compares and exports, defined once.

A metric is a row of :data:`REGISTRY`: a name, its definition (one sentence, shown in the report
and stored in the results file next to the values) and a pure numpy function of named *inputs*.
Inputs are a layer's arrays, leading axis units: the sweep's datasets (``activations`` ``[U, N]``,
``max_activation`` ``[U]``, ``pixel_distances``/``feature_distances`` ``[U, N, N]``, ``images``
``[U, N, H, W, 3]``, ...), the model's ``mean_rgb`` (3 grey levels), what ``jaxvis analyze``
measures with the network (``reference_pixel_distances``/``reference_feature_distances``
``[U, N, N]`` of N natural patches of the sweep's size and norm, ``natural_p99`` ``[U]``,
``natural_top_patches``, ``natural_top_activations``, ``shift_texture``, ``shift_responses``,
``shift_sigma``, ``shift_steps``, the grating battery's and phase rotation's outputs), the layer's
activation floors ``floors`` ``[A]`` (the order of the ``floor_*`` arrays) with the linear cap
bound of each unit and floor, ``floor_linear_bound`` ``[U, A]`` (:func:`jaxvis.analysis.readout.linear_bound`), and
other metrics (registered before or after it). A metric may carry such an input as it is
(``natural_p99``): the table then says what it is.

:func:`evaluate` computes every metric whose inputs are there; ``jaxvis analyze`` stores them,
the report and ``jaxvis compare`` compute the cheap ones on the fly for a file not analysed yet
(:mod:`jaxvis.report.summary`), the CSV and the unit table show the ``scalar`` ones (one number
per unit), in table order. Adding a metric is one function and one :func:`register_metric` row
(CONTRIBUTING.md, "A new metric").

One rule for every ratio to a unit's maximum or natural scale: NaN where the denominator is not
positive (a unit that never responds has no meaningful fraction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from jaxvis.analysis import gratings as _gratings
from jaxvis.analysis import phase as _phase
from jaxvis.analysis import readout as _readout
from jaxvis.errors import check_new_name


@dataclass(frozen=True)
class Metric:
    """One row of the table.

    ``compute(*[inputs[name] for name in inputs])`` (positional, in ``inputs`` order) returns the metric with units on the
    leading axis; ``scalar``: one number per unit (a column of the unit table and the CSV, a
    distribution in ``jaxvis compare``), else an array per unit (images, maps, per-image values);
    ``per_floor``: one number per unit and activation floor, ``[units, floors]`` (a CSV column
    ``name@alpha`` per floor; the read-out's profile takes it at its alpha).
    """

    name: str
    definition: str
    compute: Callable[..., np.ndarray]
    inputs: tuple[str, ...]
    scalar: bool = True
    per_floor: bool = False


REGISTRY: dict[str, Metric] = {}


def register_metric(name: str, definition: str, inputs: tuple[str, ...], *, scalar: bool = True,
                    per_floor: bool = False):
    """Decorator: add ``function`` to the table as metric ``name`` (see :class:`Metric`)."""
    check_new_name("metric", name, REGISTRY, "an identifier (it becomes a dataset and a CSV column)")

    def add(function):
        REGISTRY[name] = Metric(name, definition, function, tuple(inputs), scalar, per_floor)
        return function
    return add


def evaluate(inputs: Mapping[str, np.ndarray], names=None) -> dict[str, np.ndarray]:
    """Every metric (or those of ``names``) whose inputs are in ``inputs`` or are metrics that
    can be computed from them; metrics whose inputs are missing are left out.

    Returns {name: array} in table order, floating-point values as float32.
    """
    wanted = [n for n in REGISTRY if names is None or n in names]
    pool = dict(inputs)
    done: dict[str, np.ndarray] = {}

    def compute(name: str, path: tuple[str, ...]) -> bool:
        if name in done:
            return True
        metric = REGISTRY[name]
        for k in metric.inputs:  # an input given wins over a metric of the same name
            if k not in pool and (k not in REGISTRY or k in path or not compute(k, path + (k,))):
                return False
        value = np.asarray(metric.compute(*[pool[k] for k in metric.inputs]))
        done[name] = value.astype(np.float32) if value.dtype.kind == "f" else value
        pool.setdefault(name, done[name])
        return True

    return {n: done[n] for n in wanted if compute(n, (n,))}


def definitions(names) -> dict[str, str]:
    """{name: definition} of the registered metrics among ``names``."""
    return {n: REGISTRY[n].definition for n in names if n in REGISTRY}


class _Definitions(Mapping):
    """{name: definition} of every registered metric: a read-only view of the table."""

    def __getitem__(self, name: str) -> str:
        return REGISTRY[name].definition

    def __iter__(self):
        return iter(REGISTRY)

    def __len__(self) -> int:
        return len(REGISTRY)


DEFINITIONS: Mapping[str, str] = _Definitions()


def order(names) -> list[str]:
    """``names`` in table order, unregistered ones after them in sorted order."""
    names = set(names)
    return [n for n in REGISTRY if n in names] + sorted(n for n in names if n not in REGISTRY)


def floor_names(names) -> list[str]:
    """The per-floor metrics (``[units, floors]``: one number per unit and floor) among ``names``,
    in table order."""
    return [n for n in order(names) if n in REGISTRY and REGISTRY[n].per_floor]


def scalar_names(names) -> list[str]:
    """The scalar metrics among ``names``, in table order (unregistered names are left out)."""
    return [n for n in order(names) if n in REGISTRY and REGISTRY[n].scalar]


# ----------------------------------------------------------------------------------------------
# the building blocks


def ratio(values: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``values / scale`` broadcast over trailing axes of ``values``; NaN where ``scale <= 0``.

    ``values`` ``[U, ...]``, ``scale`` ``[U]``, computed in float64."""
    values = np.asarray(values, np.float64)
    scale = np.asarray(scale, np.float64).reshape(-1, *([1] * (values.ndim - 1)))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(scale > 0, values / np.where(scale > 0, scale, 1.0), np.nan)


def pair_stats(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[U, N, N]`` distance matrices -> (min, mean) over the pairs i < j, each ``[U]``
    (NaN for N < 2: a set of one has no pairs)."""
    d = np.asarray(d, np.float64)
    n = d.shape[-1]
    if n < 2:
        nan = np.full(d.shape[0], np.nan)
        return nan, nan
    i, j = np.triu_indices(n, 1)
    pairs = d[:, i, j]
    return pairs.min(axis=1), pairs.mean(axis=1)


def participation_ratio(images: np.ndarray, mean_rgb) -> np.ndarray:
    """``[U, N, H, W, 3]`` -> ``[U]``: ``(sum l)^2 / sum l^2`` over the eigenvalues ``l`` of the
    N x N Gram matrix of the images (mean colour removed, not centred across the set): 1 for N
    identical images, N for N orthogonal images of equal norm."""
    x = (images - np.asarray(mean_rgb, np.float32)).reshape(images.shape[0], images.shape[1], -1)
    gram = np.einsum("uid,ujd->uij", x.astype(np.float64), x.astype(np.float64))
    eig = np.clip(np.linalg.eigvalsh(gram), 0, None)
    return (eig.sum(-1) ** 2 / np.maximum((eig ** 2).sum(-1), 1e-300)).astype(np.float32)


def uniform_colour_share(images: np.ndarray, mean_rgb) -> np.ndarray:
    """``[U, c, c, 3]`` RGB images -> ``[U]`` the share of each image's energy (deviation from
    ``mean_rgb``) in its spatially uniform colour, ``c^2 |mean_xy x|^2 / |x|^2`` (1: a flat colour)."""
    x = np.asarray(images, np.float64) - np.asarray(mean_rgb, np.float64)
    flat = np.square(x.mean(axis=(1, 2))).sum(-1) * x.shape[1] * x.shape[2]
    total = np.square(x).sum(axis=(1, 2, 3))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, flat / np.where(total > 0, total, 1.0), np.nan)


def variance_map(images: np.ndarray) -> np.ndarray:
    """``[U, N, H, W, 3]`` -> ``[U, H, W]`` (computed about the first image: exactly 0 where the
    images agree, and no cancellation against the ~120 grey-level mean)."""
    d = (images - images[:, :1]).astype(np.float64)
    return (np.square(d).mean(axis=1) - np.square(d.mean(axis=1))).mean(axis=-1).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# the table; its order is the display order of the scalar columns


def _same(x):
    return x


register_metric("activation_fraction", "activation of each diverse image / the unit's "
                "single-image maximum", ("activations", "max_activation"), scalar=False)(ratio)
register_metric("fraction_min", "smallest activation fraction of the diverse set",
                ("activation_fraction",))(lambda fraction: np.min(fraction, axis=1))
register_metric("fraction_median", "median activation fraction of the diverse set",
                ("activation_fraction",))(lambda fraction: np.median(fraction, axis=1))
register_metric("pixel_min", "min pairwise RMS pixel distance of the diverse set (grey levels)",
                ("pixel_distances",))(lambda d: pair_stats(d)[0])
register_metric("pixel_mean", "mean pairwise RMS pixel distance of the diverse set (grey levels)",
                ("pixel_distances",))(lambda d: pair_stats(d)[1])
register_metric("feature_min", "min pairwise RMS distance in the diversity feature layer",
                ("feature_distances",))(lambda d: pair_stats(d)[0])
register_metric("feature_mean", "mean pairwise RMS distance in the diversity feature layer",
                ("feature_distances",))(lambda d: pair_stats(d)[1])
register_metric("participation_ratio", "effective dimensionality of the diverse set, "
                "1 (identical) .. N", ("images", "mean_rgb"))(participation_ratio)
register_metric("shift_index", "mean response over all shifts of the optimised texture / "
                "single-image maximum", ("shift_responses", "max_activation"))(
    lambda responses, peak: ratio(np.asarray(responses, np.float64).mean(axis=(1, 2)), peak))
register_metric("max_over_p99", "single-image maximum / natural_p99",
                ("max_activation", "natural_p99"))(ratio)
register_metric("reference_pixel_min", "min pairwise RMS pixel distance of N natural patches of "
                "equal size and norm", ("reference_pixel_distances",))(lambda d: pair_stats(d)[0])
register_metric("reference_pixel_mean", "mean pairwise RMS pixel distance of N natural patches "
                "of equal size and norm", ("reference_pixel_distances",))(
    lambda d: pair_stats(d)[1])
register_metric("reference_feature_min", "min pairwise feature distance of the N natural patches",
                ("reference_feature_distances",))(lambda d: pair_stats(d)[0])
register_metric("reference_feature_mean", "mean pairwise feature distance of the N natural "
                "patches", ("reference_feature_distances",))(lambda d: pair_stats(d)[1])
register_metric("natural_p99", "99th percentile of the unit's responses to natural-image "
                "patches", ("natural_p99",))(_same)
register_metric("shift_sigma", "the learnt mask radius sigma of the shift test (px)",
                ("shift_sigma",))(_same)
register_metric("shift_steps", "optimiser steps the shift test took (early stopping)",
                ("shift_steps",))(_same)
register_metric("variance_map", "per-pixel variance across the diverse set (mean over colour)",
                ("images",), scalar=False)(variance_map)
register_metric("diverse_over_p99", "activation of each diverse image / natural_p99",
                ("activations", "natural_p99"), scalar=False)(ratio)
register_metric("shift_texture", "the shift test's texture (RGB grey levels)",
                ("shift_texture",), scalar=False)(_same)
register_metric("shift_responses", "the unit's response at every offset of the shift test",
                ("shift_responses",), scalar=False)(_same)
register_metric("natural_top_patches", "the natural patches that drive the unit most (RGB grey "
                "levels)", ("natural_top_patches",), scalar=False)(_same)
register_metric("natural_top_activations", "the unit's responses to those patches",
                ("natural_top_activations",), scalar=False)(_same)


# Activation-floor sets (docs/floor.md): one per floor alpha, on an axis after the units
# (``floor_*`` ``[U, A, ...]``, highest alpha first, the alphas in the layer metadata ``floors``).
def _floor_pairs(d, which: int):
    d = np.asarray(d)
    return pair_stats(d.reshape(-1, *d.shape[2:]))[which].reshape(d.shape[:2])


register_metric("floor_fraction", "activation of each floor-set image / the unit's maximum "
                "[units, floors, N]", ("floor_activations", "max_activation"), scalar=False)(
    lambda a, peak: ratio(a, np.asarray(peak)[:, None, None]))
register_metric("floor_fraction_min", "smallest activation fraction of each floor set [units, floors]",
                ("floor_fraction",), scalar=False, per_floor=True)(lambda f: np.min(f, axis=2))
register_metric("floor_pixel_min", "min pairwise RMS pixel distance of each floor set (grey levels) "
                "[units, floors]", ("floor_pixel_distances",), scalar=False, per_floor=True)(lambda d: _floor_pairs(d, 0))
register_metric("floor_pixel_mean", "mean pairwise RMS pixel distance of each floor set [units, floors]",
                ("floor_pixel_distances",), scalar=False, per_floor=True)(lambda d: _floor_pairs(d, 1))
register_metric("floor_feature_min", "min pairwise RMS feature distance of each floor set [units, floors]",
                ("floor_feature_distances",), scalar=False, per_floor=True)(lambda d: _floor_pairs(d, 0))
register_metric("floor_pixel_vs_natural", "floor_pixel_min / reference_pixel_min: how diverse the unit "
                "lets N images be at the floor, against N natural patches of the same norm",
                ("floor_pixel_min", "reference_pixel_min"), scalar=False, per_floor=True)(
    lambda d, natural: ratio(d, np.asarray(natural)[:, None]))
register_metric("floor_pixel_vs_linear", "floor_pixel_min / floor_linear_bound: how much wider the floor set "
                "is than the set of an affine unit with the same maximum and baseline can be (docs/floor.md) "
                "[units, floors]", ("floor_pixel_min", "floor_linear_bound"), scalar=False, per_floor=True)(
    lambda d, bound: np.asarray(d, np.float64) / np.asarray(bound, np.float64))
register_metric("floor_agreement", "the runner-up start's diversity / the best start's, among the floor "
                "set's starts that kept their floor (1: independent starts reached the same optimum; NaN: "
                "fewer than two did) [units, floors]", ("floor_start_diversity", "floor_start_feasible"),
                scalar=False, per_floor=True)(_readout.agreement)
register_metric("floor_phase_spread", "the arc (degrees) the floor set's images cover in the plane of the "
                "unit's best image and its 90-degree phase rotation: 360 minus the largest gap between "
                "their phase angles there (N images on the circle: up to 360 (N-1)/N) [units, floors]",
                ("max_image", "floor_images", "mean_rgb"), scalar=False, per_floor=True)(_phase.phase_spread)
register_metric("floor_feasible", "1 where every image of the floor set keeps its floor (the widest such "
                "iterate was kept), 0 where none did [units, floors]", ("floor_feasible",), scalar=False, per_floor=True)(
    lambda f: np.asarray(f, np.float32))
register_metric("floor_steps_all", "optimiser steps of the floor set's starts together (its cost) "
                "[units, floors]", ("floor_start_steps",), scalar=False, per_floor=True)(
    lambda s: np.sum(np.asarray(s, np.float32), axis=-1))
register_metric("max_raised", "1 where a diverse image beat the single-image maximum (it is then the "
                "reference)", ("max_raised",))(lambda r: np.asarray(r, np.float32))


# The grating battery and the phase rotation (jaxvis.analysis.gratings / .phase, docs/invariance.md)
# measure with the network; their per-unit outputs are carried as they are. Axes (the grating
# orientations, periods, phases, colours; the rotation angles) are the same for every unit of a
# layer and follow from the battery and the canvas, so they are not per-unit metrics.
_CURVES = ("grating_orientation_curve", "grating_period_curve", "grating_phase_curve",
           "grating_colour_curve", "grating_responses", "rotation_curve", *_readout.NEAR_PEAK_MEASURES)
for _name, _definition in {**_gratings.DEFINITIONS, **_phase.DEFINITIONS}.items():
    if _name != "rotation_phases":
        register_metric(_name, _definition, (_name,), scalar=_name not in _CURVES)(_same)


# The read-out (jaxvis.analysis.readout, docs/invariance.md section 5): each unit's class per axis,
# coded as the index into readout.AXES[axis] (NaN: its measures are missing). The report and
# `jaxvis compare` recompute them from the stored measures, so they follow the current thresholds.
register_metric("phase_agreement", "share of the near-peak gratings (within 5% of the best above the baseline, "
                "coarse battery and finer pass) whose phase class is the best grating's (1: all agree)",
                _readout.NEAR_PEAK_MEASURES)(_readout.phase_agreement)
register_metric("phase_class", "read-out phase class from the near-peak gratings (own best image where no grating "
                "drives the unit): " + ", ".join(f"{k} {name}" for k, name in enumerate(_readout.AXES["phase"])),
                _readout.PHASE_INPUTS)(_readout.phase_class)
register_metric("phase_rotation_agreement", "1 where the grating phase class and the phase rotation of the "
                "unit's own best image (rotation_min_max > 0: keeps a response) read the unit alike, 0 where "
                "not, empty without a firm grating class", ("phase_class", "rotation_min_max"))(
    _readout.rotation_agreement)
register_metric("diversity_class", "read-out diversity class of each floor set [units, floors]: "
                + ", ".join(f"{k} {name}" for k, name in enumerate(_readout.AXES["diversity"])),
                ("floor_pixel_vs_linear", "floor_fraction_min", "floors", "floor_agreement"), scalar=False, per_floor=True)(
    _readout.diversity_class)
register_metric("shift_linear", "the best mean of w.crop / (r |w|) over the shift test's crops of any texture, "
                "w the unit's best image (closed form, shift.linear_reference)", ("shift_linear",))(_same)
register_metric("shift_linear_reference", "the shift index an affine unit with the unit's best image, maximum and "
                "baseline (grating_blank) reaches on the same test", ("shift_linear", "max_activation",
                                                                      "grating_blank"))(_readout.shift_reference)
register_metric("shift_over_linear", "shift_index - shift_linear_reference: how far the unit keeps its "
                "response under shifts beyond what linearity gives", ("shift_index", "shift_linear_reference"))(
    lambda index, ref: np.asarray(index, np.float64) - np.asarray(ref, np.float64))
register_metric("uniform_colour_share", "share of the best image's contrast energy in its spatially uniform "
                "colour (1: a flat colour patch, which no shift changes)", ("max_image", "mean_rgb"))(
    uniform_colour_share)
register_metric("shift_class", "read-out shift class: "
                + ", ".join(f"{k} {name}" for k, name in enumerate(_readout.AXES["shift"])),
                _readout.SHIFT_INPUTS)(_readout.shift_class)
