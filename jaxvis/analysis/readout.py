"""The read-out: a small rule set that names each unit's invariance classes from its stored
measures, and a layer's profile (fractions per class, medians of the measures).

A unit carries one class on each of three independent **axes**, each from its own measures:

- ``phase`` (the grating battery, :mod:`jaxvis.analysis.gratings`, and the phase rotation of the
  unit's own best image, :mod:`jaxvis.analysis.phase`): a unit whose best grating lifts it by less
  than :data:`THRESHOLDS` ``grating_drive`` of its own range above its blank response is read by its
  own image, ``own-image-invariant`` where its rotation keeps a response (``rotation_keeps``), else
  ``grating-unresponsive``; a driven unit takes the class of its best grating
  (:func:`grating_classes`: ``frequency-doubling`` where the phase response falls to the baseline
  with F2 > F1, else ``complex-like`` where F1/F0 < ``f1_f0`` (Skottun et al. 1991), else
  ``simple-like``) where at least ``phase_consensus`` of its near-peak gratings (within 5% of the
  best, coarse battery and finer pass) share it, else ``ambiguous``;
- ``diversity`` (an activation-floor set at ``alpha``, docs/floor.md): ``diverse`` where the set's
  closest pair is at least ``beyond_linear`` times as far apart as the set of an affine unit with
  the same maximum and baseline can be (``floor_pixel_vs_linear``, the analytic cap bound
  :func:`linear_bound`), ``tight`` where not, but either only where the set is **settled**: its
  independent starts reached the same optimum (``floor_agreement``, the runner-up start's
  diversity over the best's, at least ``floor_agreement``), else ``unsettled``; a set that did not
  reach its floor (``floor_fraction_min < alpha - floor_slack``) has no class, nor a set without
  the starts' certificate (files made before it).
  (Against natural patches, ``floor_pixel_vs_natural``, the profile reports a median: it says how
  different the images are, not whether more than a linear unit allows: 3 x 3 natural patches are
  so alike that VGG-19's linear conv1_1 units reach 3 times their distance.)
- ``shift`` (the shift test): ``shift-untestable`` where an affine unit with the unit's best image
  already scores within ``shift_beyond_linear`` of 1 (:func:`shift_reference`), ``shift-invariant``
  where ``shift_index > shift_invariant`` and at least ``shift_beyond_linear`` above that reference,
  ``shift-variant`` where not.

Every threshold is a row of :data:`THRESHOLDS` (name, value, rule, source); no rule holds a
number of its own. A measure that is missing or not finite gives **no class** on its axis (code NaN,
"unknown"), never a guessed one: a file analysed with ``--no-gratings`` has no phase class, a sweep
without ``--floor`` no diversity class.

Classes are coded as float32 arrays, the code the index into :data:`AXES` ``[axis]`` and NaN for
unknown, so that they are metrics like any other (``phase_class``, ``shift_class`` ``[U]`` and
``diversity_class`` ``[U, floors]`` in :mod:`jaxvis.analysis.metrics`). Everything here is pure
numpy on arrays with the units on the leading axis; reading them from a results file is
:func:`jaxvis.report.summary.layer_profiles`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np

from jaxvis.errors import JaxvisError, unknown


@dataclasses.dataclass(frozen=True)
class Threshold:
    """One number of the rule set: what it decides (``rule``) and where it comes from."""

    name: str
    value: float
    rule: str
    source: str


# The one table of the read-out's numbers (docs/invariance.md, section 5, shows it).
THRESHOLDS: dict[str, Threshold] = {t.name: t for t in (
    Threshold("grating_drive", 0.05,
              "grating-unresponsive if (grating_best - b) / (max_activation - b) < value, "
              "b = max(grating_blank, 0)",
              "jaxvis convention (no literature value): the best grating must lift the unit by 5% of "
              "its range above its blank response before its phase response means anything; far below "
              "the measured medians of grating_best_fraction (VGG-19 conv2_1 0.35, conv3_1 0.17), so it "
              "presupposes no near-maximal drive"),
    Threshold("f1_f0", 1.0,
              "a grating's phase response is complex-like if its F1/F0 < value, else simple-like",
              "Skottun, De Valois, Grosof, Movshon, Albrecht & Bonds (1991), Vision Res. 31:1079"),
    Threshold("doubling_min_max", 0.1,
              "a grating's phase response is frequency-doubling if its min/max above the baseline < value "
              "and F2 > F1 (before the F1/F0 rule)",
              "docs/invariance.md section 5: on the linear-nonlinear family F1/F0 < 1 exactly when the response never reaches the "
              "baseline (section 5), so a response that falls to it (VGG-19 conv2_1 unit 19: 0.00, conv3_1 "
              "unit 29: 0.01) with a small F1 is a second harmonic (a squared filter (g.x)^2: F1 = 0, min/max "
              "0), not phase invariance; 10% of the range allows for the 8-phase sampling"),
    Threshold("phase_consensus", 1.0,
              "simple-like, complex-like or frequency-doubling only if phase_agreement >= value (the share of "
              "near-peak gratings, within gratings.NEAR_PEAK = 5% of the best above the baseline, coarse "
              "battery and finer pass, whose class is the best one's), else ambiguous",
              "docs/invariance.md section 5: 4 of 11 complex-like labels of VGG-19 conv2_1 flipped with the choice among gratings "
              "within 5% of the peak; a class that depends on which of gratings the unit cannot tell apart is "
              "not given (value 1: all of them agree)"),
    Threshold("rotation_keeps", 0.0,
              "the own-image read is invariant if rotation_min_max > value (it keeps a response above the "
              "baseline at every phase rotation of its best image); a unit no grating drives is "
              "own-image-invariant if so, else grating-unresponsive; phase_rotation_agreement compares it "
              "with the grating class",
              "the rotation's counterpart of F1/F0 < 1: on the linear-nonlinear family both mean the response "
              "never reaches the baseline (a linear unit's rotated maximum reverses, c + d cos(phi), "
              "docs/invariance.md section 2)"),
    Threshold("beyond_linear", 1.1,
              "diverse at alpha if floor_pixel_vs_linear >= value, else tight",
              "docs/floor.md: no affine unit w.x + b with the unit's maximum a* and baseline b "
              "(grating_blank) admits N images on the sphere, all at >= alpha a*, whose closest pair is "
              "farther apart than r sqrt(2N/(N-1)) sqrt(1-t^2) / sqrt(D), t = (alpha a* - b) / (a* - b) "
              "(the floor_linear_bound, at alpha - floor_slack); linear units measured at 0.977-0.984 "
              "of it (VGG-19 conv1_1, EfficientNet-Lite0 stem, alpha = 0.9); the 10% margin marks sets "
              "clearly wider than an affine unit's"),
    Threshold("floor_slack", 0.005,
              "a floor set has a diversity class only if floor_fraction_min >= alpha - value",
              "docs/floor.md: the kept set keeps every floor exactly (floor methods 2 and 3); files of floor "
              "method 1 stopped with images up to 0.002 below it, and float rounding of a re-measured "
              "activation is far below 0.005"),
    Threshold("floor_agreement", 0.95,
              "a floor set is tight or diverse only if floor_agreement >= value, else unsettled",
              "docs/floor.md: an optimiser is trusted where independent starts reach the same optimum; "
              "5% is the spread allowed between the best and the runner-up start's diversity"),
    Threshold("shift_invariant", 0.9,
              "shift-invariant if shift_index > value and shift_index - shift_linear_reference >= "
              "shift_beyond_linear, else shift-variant",
              "jaxvis convention, as in `jaxvis analyze`'s summary line: the texture keeps "
              "90% of the single-image maximum on average over every shift"),
    Threshold("shift_beyond_linear", 0.1,
              "shift-invariant needs shift_index >= shift_linear_reference + value; shift-untestable where "
              "shift_linear_reference > 1 - value (not even an index of 1 is that far above it)",
              "docs/invariance.md section 5: VGG-19 conv1_1's 'shift-invariant' units (kernels 85-99% uniform colour) scored their "
              "linear reference within 0.0005; the reference is the best an affine unit whose best image is "
              "the unit's can score on the same test (closed form, shift.linear_reference); a margin of 0.1 "
              "of the maximum marks an index clearly beyond it"),
)}

# the classes of each axis; a class's code is its index (NaN: unknown)
AXES: dict[str, tuple[str, ...]] = {
    # codes of earlier files stay: new classes are appended
    "phase": ("grating-unresponsive", "simple-like", "complex-like", "ambiguous", "frequency-doubling",
              "own-image-invariant"),
    "diversity": ("tight", "diverse", "unsettled"),
    "shift": ("shift-variant", "shift-invariant", "shift-untestable"),
}
UNKNOWN = "unknown"
# the metrics that hold the classes (jaxvis.analysis.metrics), per axis
CLASS_METRICS = {"phase": "phase_class", "diversity": "diversity_class", "shift": "shift_class"}
# inputs that are not per unit (the layer's floors, the model's mean colour)
NOT_PER_UNIT = ("floors", "mean_rgb")
# the floor whose set the profile reports: alpha = 0.9, the floor docs/floor.md measures the
# floor sets and their bounds at
PROFILE_ALPHA = 0.9
# a layer's floors are matched to a requested alpha within this
ALPHA_MATCH = 1e-6


def threshold(name: str, overrides: Mapping[str, float] | None = None) -> float:
    """The value of row ``name`` of :data:`THRESHOLDS`, or ``overrides[name]`` where given."""
    if overrides and name in overrides:
        return float(overrides[name])
    if name not in THRESHOLDS:
        raise unknown("threshold", name, THRESHOLDS)
    return float(THRESHOLDS[name].value)


def _check_overrides(overrides) -> None:
    for name in overrides or {}:
        if name not in THRESHOLDS:
            raise unknown("threshold", name, THRESHOLDS)


def _f64(x) -> np.ndarray:
    return np.asarray(x, np.float64)


def grating_classes(f1_f0, f2_f0, min_max, *, overrides=None) -> np.ndarray:
    """Per grating, ``[...]`` its F1/F0, F2/F0 and min/max over phase above the baseline
    (``grating_near_*``) -> ``[...]`` phase codes of that grating alone: ``frequency-doubling`` where
    min/max < ``doubling_min_max`` and F2 > F1, else ``complex-like`` where F1/F0 < ``f1_f0``, else
    ``simple-like``; NaN where the grating does not lift the unit above its baseline (no F1/F0)."""
    _check_overrides(overrides)
    f1, f2, low = _f64(f1_f0), _f64(f2_f0), _f64(min_max)
    out = np.full(f1.shape, np.nan)
    known = np.isfinite(f1) & np.isfinite(f2) & np.isfinite(low)
    doubling = known & (low < threshold("doubling_min_max", overrides)) & (f2 > f1)
    complex_like = known & ~doubling & (f1 < threshold("f1_f0", overrides))
    out[known & ~doubling & ~complex_like] = AXES["phase"].index("simple-like")
    out[complex_like] = AXES["phase"].index("complex-like")
    out[doubling] = AXES["phase"].index("frequency-doubling")
    return out


def phase_agreement(f1_f0, f2_f0, min_max, *, overrides=None) -> np.ndarray:
    """``grating_near_*`` ``[U, M]`` (best grating first, NaN-padded) -> ``[U]`` the share of the
    near-peak gratings whose class (:func:`grating_classes`) is the best one's (1: all agree; NaN:
    no near-peak grating)."""
    codes = grating_classes(f1_f0, f2_f0, min_max, overrides=overrides)
    counted = np.isfinite(codes)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = (counted & (codes == codes[:, :1])).sum(1) / counted.sum(1)
    return np.where(np.isfinite(codes[:, 0]), share, np.nan)


def phase_class(f1_f0, f2_f0, min_max, best, blank, maximum, rotation_min_max, *, overrides=None) -> np.ndarray:
    """The phase codes ``[U]`` (:data:`AXES` ``phase``; NaN unknown) from the near-peak gratings'
    ``grating_near_f1_f0``, ``_f2_f0``, ``_min_max`` ``[U, M]`` (best first), ``grating_best``,
    ``grating_blank``, the single-image ``maximum`` and ``rotation_min_max`` ``[U]``.

    With ``b = max(blank, 0)``, a unit whose best grating lifts it by less than ``grating_drive``
    of its own range ``maximum - b`` is read by its own best image instead: ``own-image-invariant``
    where ``rotation_min_max > rotation_keeps``, else ``grating-unresponsive``. A driven unit takes
    its best grating's class (:func:`grating_classes`) where at least ``phase_consensus`` of the
    near-peak gratings share it (:func:`phase_agreement`), else ``ambiguous``. No class where
    ``best``, ``blank`` or ``maximum`` is not finite or the maximum is not above the baseline."""
    _check_overrides(overrides)
    best, blank, maximum, rotation = map(_f64, (best, blank, maximum, rotation_min_max))
    base = np.maximum(blank, 0.0)
    span = maximum - base
    known = np.isfinite(best) & np.isfinite(blank) & np.isfinite(maximum) & (span > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        drive = (best - base) / np.where(span > 0, span, 1.0)
    undriven = known & (drive < threshold("grating_drive", overrides))
    names = AXES["phase"]
    out = np.full(best.shape, np.nan)
    keeps = rotation > threshold("rotation_keeps", overrides)
    out[undriven & keeps] = names.index("own-image-invariant")
    out[undriven & ~keeps] = names.index("grating-unresponsive")
    own = grating_classes(f1_f0, f2_f0, min_max, overrides=overrides)[:, 0]
    agreed = phase_agreement(f1_f0, f2_f0, min_max, overrides=overrides) >= threshold("phase_consensus", overrides)
    driven = known & ~undriven & np.isfinite(own)
    out[driven & agreed] = own[driven & agreed]
    out[driven & ~agreed] = names.index("ambiguous")
    return out.astype(np.float32)


def rotation_agreement(phase_codes, rotation_min_max, *, overrides=None) -> np.ndarray:
    """``[U]`` phase codes and ``rotation_min_max`` -> ``[U]`` 1 where the grating class and the
    own-image rotation read the unit alike (``complex-like`` and ``rotation_min_max > rotation_keeps``;
    ``simple-like`` or ``frequency-doubling`` and not), 0 where they do not, NaN where the unit has
    no firm grating class or no rotation."""
    codes, rotation = _f64(phase_codes), _f64(rotation_min_max)
    names = AXES["phase"]
    invariant = codes == names.index("complex-like")
    variant = (codes == names.index("simple-like")) | (codes == names.index("frequency-doubling"))
    keeps = rotation > threshold("rotation_keeps", overrides)
    out = np.where(invariant == keeps, 1.0, 0.0)
    return np.where((invariant | variant) & np.isfinite(rotation), out, np.nan).astype(np.float32)


def linear_bound(radius: float, images: int, dims: int, floors, maximum=None, baseline=None, *,
                 overrides=None) -> np.ndarray:
    """``[U, A]``: per unit and floor alpha, the largest min pairwise RMS pixel distance that N =
    ``images`` images on the sphere of radius ``radius`` (grey levels, ``dims`` numbers each:
    H x W x 3) can have while all keep ``alpha - floor_slack`` of the maximum of an **affine unit
    with the same maximum and baseline**: ``a(x) = w.x + b`` with ``a* = maximum`` ``[U]`` and
    ``b = baseline`` ``[U]`` (its response to the mean colour, ``grating_blank``). docs/floor.md:
    ``r sqrt(2N/(N-1)) sqrt(1 - t^2) / sqrt(dims)`` with the cap's cosine
    ``t = (alpha' a* - b) / (a* - b)``, clipped to [0, 1]; NaN where ``a* <= b`` (no floor above
    the baseline) or ``a* <= 0`` (``alpha a* >= a*``: no floor below the maximum). Without
    ``maximum`` and ``baseline`` (both or neither) the unit is bias-free, ``t = alpha'``, and ``U``
    is 1."""
    _check_overrides(overrides)
    if not (radius > 0 and images >= 2 and dims >= 1):
        raise JaxvisError(f"the linear bound needs radius > 0, N >= 2 images and dims >= 1, not "
                          f"{radius}, {images}, {dims}")
    if (maximum is None) != (baseline is None):
        raise JaxvisError("the linear bound needs both the maxima and the baselines [units], or neither")
    alpha = _f64(floors).reshape(1, -1) - threshold("floor_slack", overrides)
    if maximum is None:
        t = alpha
    else:
        a_star, b = _f64(maximum).reshape(-1, 1), _f64(baseline).reshape(-1, 1)
        if a_star.shape != b.shape:
            raise JaxvisError(f"the linear bound needs one maximum and one baseline per unit, not "
                              f"{a_star.size} and {b.size}")
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.where((a_star > b) & (a_star > 0), (alpha * a_star - b) / (a_star - b), np.nan)
    t = np.clip(t, 0.0, 1.0)  # NaN stays NaN
    return radius * np.sqrt(2.0 * images / (images - 1)) * np.sqrt(1.0 - t ** 2) / np.sqrt(dims)


def floor_bound(radius: float, floor_images_shape, floors, maximum=None, blank=None) -> np.ndarray:
    """:func:`linear_bound` ``[U, A]`` of a layer's floor sets (``floor_images`` of shape
    ``[U, A, N, H, W, 3]``): the affine unit with each unit's ``maximum`` and baseline ``blank``
    (``grating_blank``) where both are known, else the bias-free one."""
    n, dims = floor_images_shape[2], int(np.prod(floor_images_shape[3:]))
    if maximum is None or blank is None:
        return linear_bound(radius, n, dims, floors)
    return linear_bound(radius, n, dims, floors, maximum, blank)


def agreement(start_diversity, start_feasible) -> np.ndarray:
    """``[U, A, K]`` each start's diversity and whether it kept its floor (``floor_start_*``) ->
    ``[U, A]`` the runner-up feasible start's diversity / the best's (1: two starts reached the same
    set width; NaN: fewer than two starts kept their floor)."""
    values = np.where(np.asarray(start_feasible, bool), _f64(start_diversity), -np.inf)
    ranked = np.sort(values, axis=-1)[..., ::-1]  # best first, infeasible starts last
    if ranked.shape[-1] < 2:
        return np.full(ranked.shape[:-1], np.nan)
    best, second = ranked[..., 0], ranked[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isfinite(second) & (best > 0), second / np.where(best > 0, best, 1.0), np.nan)


def diversity_class(vs_linear, fraction_min, floors, agreed, *, overrides=None) -> np.ndarray:
    """``floor_pixel_vs_linear``, ``floor_fraction_min`` and ``floor_agreement`` ``[U, A]``, the
    floors ``[A]`` (in the order of the ``floor_*`` arrays) -> ``[U, A]`` diversity codes (NaN
    unknown: no ratio, or the set stayed below its floor; unsettled: its starts disagree)."""
    _check_overrides(overrides)
    ratio, fraction, agreed = _f64(vs_linear), _f64(fraction_min), _f64(agreed)
    floors = _f64(floors).reshape(-1)
    if ratio.ndim != 2 or {fraction.shape, agreed.shape} != {ratio.shape} or ratio.shape[1] != floors.size:
        raise JaxvisError(f"floor_pixel_vs_linear, floor_fraction_min and floor_agreement must be [units, "
                          f"floors={floors.size}], not {list(ratio.shape)}, {list(fraction.shape)} and "
                          f"{list(agreed.shape)}")
    reached = np.isfinite(fraction) & (fraction >= floors[None, :] - threshold("floor_slack", overrides))
    known = reached & np.isfinite(ratio)
    settled = np.nan_to_num(agreed, nan=0.0) >= threshold("floor_agreement", overrides)
    out = np.full(ratio.shape, np.nan)
    diverse = ratio >= threshold("beyond_linear", overrides)
    out[known & settled & diverse] = AXES["diversity"].index("diverse")
    out[known & settled & ~diverse] = AXES["diversity"].index("tight")
    out[known & ~settled] = AXES["diversity"].index("unsettled")
    return out.astype(np.float32)


def shift_reference(linear, maximum, blank) -> np.ndarray:
    """``[U]`` each -> ``[U]`` the shift index an **affine unit** with the unit's maximum ``a*``,
    baseline ``b`` (``grating_blank``, its response to the mean colour) and best image reaches on
    the same test: ``(b + (a* - b) rho) / a*``, ``rho`` = ``shift_linear`` (the best mean of
    ``w . crop / (r ||w||)`` over textures, :func:`jaxvis.analysis.shift.linear_reference`). NaN
    where ``a*`` is not positive."""
    a_star, b = _f64(maximum), _f64(blank)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a_star > 0, (b + (a_star - b) * _f64(linear)) / np.where(a_star > 0, a_star, 1.0), np.nan)


def shift_class(shift_index, reference, *, overrides=None) -> np.ndarray:
    """``[U]`` shift index and its linear reference (:func:`shift_reference`) -> ``[U]`` shift codes:
    ``shift-untestable`` where the reference exceeds ``1 - shift_beyond_linear`` (an affine unit
    already keeps nearly all of its maximum: the test cannot tell position invariance from
    linearity there), ``shift-invariant`` where ``shift_index > shift_invariant`` and at least
    ``shift_beyond_linear`` above the reference, else ``shift-variant``; NaN where either is missing."""
    _check_overrides(overrides)
    index, ref = _f64(shift_index), _f64(reference)
    margin = threshold("shift_beyond_linear", overrides)
    out = np.full(index.shape, np.nan)
    ok = np.isfinite(index) & np.isfinite(ref)
    untestable = ok & (ref > 1 - margin)
    invariant = ok & ~untestable & (index > threshold("shift_invariant", overrides)) & (index - ref >= margin)
    out[ok & ~untestable & ~invariant] = AXES["shift"].index("shift-variant")
    out[invariant] = AXES["shift"].index("shift-invariant")
    out[untestable] = AXES["shift"].index("shift-untestable")
    return out.astype(np.float32)


def labels(axis: str, codes) -> list[str]:
    """Codes of ``axis`` -> class names (``unknown`` for NaN)."""
    names = AXES[axis]
    return [names[int(c)] if np.isfinite(c) else UNKNOWN for c in np.asarray(codes, np.float64).ravel()]


def floor_index(floors: Sequence[float], alpha: float | None) -> int | None:
    """Position of ``alpha`` among a layer's ``floors`` (None: not among them, or no alpha)."""
    if alpha is None:
        return None
    for i, a in enumerate(floors):
        if abs(float(a) - alpha) <= ALPHA_MATCH:
            return i
    return None


# ----------------------------------------------------------------------------------------------
# per unit and per layer


# what each axis reads (besides the floors): metric names, in the order the class function takes them
PHASE_INPUTS = ("grating_near_f1_f0", "grating_near_f2_f0", "grating_near_min_max", "grating_best",
                "grating_blank", "max_activation", "rotation_min_max")
SHIFT_INPUTS = ("shift_index", "shift_linear_reference")
# the [U, M] measures the phase class reads (the near-peak gratings); the others are [U] or [U, floors]
NEAR_PEAK_MEASURES = PHASE_INPUTS[:3]


def classify(values: Mapping[str, np.ndarray], floors: Sequence[float] = (), *,
             alpha: float | None = PROFILE_ALPHA, overrides=None) -> dict[str, np.ndarray]:
    """Every axis's codes ``[U]`` from whatever ``values`` holds (metric name -> array; the units'
    count from any ``[U]`` array there): ``phase`` from :data:`PHASE_INPUTS`; ``diversity`` at
    ``alpha`` (one of ``floors``) from ``floor_pixel_vs_linear``, ``floor_fraction_min`` and
    ``floor_agreement`` ``[U, A]``; ``shift`` from :data:`SHIFT_INPUTS`. An axis whose measures are
    missing (a file analysed before they existed, or without that part) is all NaN: unknown."""
    units = _count(values)
    nan = np.full(units, np.nan, np.float32)
    out = {axis: nan.copy() for axis in AXES}
    if all(k in values for k in PHASE_INPUTS):
        out["phase"] = phase_class(*(values[k] for k in PHASE_INPUTS), overrides=overrides)
    k = floor_index(floors, alpha)
    if k is not None and all(name in values for name in ("floor_pixel_vs_linear", "floor_fraction_min",
                                                         "floor_agreement")):
        out["diversity"] = diversity_class(values["floor_pixel_vs_linear"], values["floor_fraction_min"], floors,
                                           values["floor_agreement"], overrides=overrides)[:, k]
    if all(k in values for k in SHIFT_INPUTS):
        out["shift"] = shift_class(*(values[k] for k in SHIFT_INPUTS), overrides=overrides)
    return out


def _count(values: Mapping[str, np.ndarray]) -> int:
    counts = {np.shape(v)[0] for k, v in values.items() if np.ndim(v) >= 1 and k not in NOT_PER_UNIT}
    if len(counts) != 1:
        raise JaxvisError(f"the arrays of one layer must share their units (leading axis), not "
                          f"{sorted(counts) or 'none'}")
    return counts.pop()


# the medians a profile reports: (field, metric, what it is)
MEDIANS = (
    ("f1_f0", "grating_f1_f0", "median F1/F0 of the grating phase response"),
    ("grating_phase_min_max", "grating_phase_min_max", "median grating phase min/max"),
    ("rotation_min_max", "rotation_min_max", "median min/max over the phase rotation of the own maximum"),
    ("diversity", "floor_pixel_vs_natural", "median floor_pixel_vs_natural at alpha"),
    ("diversity_vs_linear", "floor_pixel_vs_linear", "median floor_pixel_vs_linear at alpha"),
    ("phase_spread", "floor_phase_spread", "median phase spread of the floor set at alpha (degrees)"),
    ("agreement", "floor_agreement", "median agreement of the floor set's starts at alpha (runner-up / best)"),
    ("shift_index", "shift_index", "median shift index"),
)


@dataclasses.dataclass(frozen=True)
class Profile:
    """A layer's read-out.

    ``units``: how many; ``fractions[axis][class]``: share of all units in each class of each axis
    (:data:`AXES`), ``unknown`` included, so each axis sums to 1; ``disagree``: among the units with
    a firm grating class (simple-like, complex-like, frequency-doubling) and an own-image rotation,
    the share whose rotation reads them otherwise (:func:`rotation_agreement`; NaN: none);
    ``medians[field]``: the median over
    units with a finite value of each measure of :data:`MEDIANS` (NaN: none), the ``diversity``
    and ``diversity_vs_linear`` fields over the floor sets at ``alpha`` that reached their floor
    (``alpha`` None: the layer has no floor set at the requested alpha); ``counts`` the units with
    a finite value of each; ``rf`` the layer's receptive field (None if unknown)."""

    layer: str
    units: int
    fractions: dict[str, dict[str, float]]
    medians: dict[str, float]
    counts: dict[str, int]
    alpha: float | None = None
    rf: int | None = None
    disagree: float = math.nan

    def known(self, axis: str) -> bool:
        """Whether any unit has a class on ``axis``."""
        return self.fractions[axis][UNKNOWN] < 1.0


def profile_measures(values: Mapping[str, np.ndarray], floors: Sequence[float] = (), *,
                     alpha: float | None = PROFILE_ALPHA, overrides=None) -> dict[str, np.ndarray]:
    """Each measure of :data:`MEDIANS` per unit, ``{field: [U] float64}`` (NaN where a unit has
    none; a field whose metric is missing is left out). A per-floor metric (``[U, A]``: the
    ``floor_*`` ones) is taken at ``alpha``, for the sets that reached their floor."""
    units = _count(values)
    k = floor_index(floors, alpha)
    out = {}
    for field, metric, _ in MEDIANS:
        v = values.get(metric)
        if v is None:
            continue
        v = np.asarray(v, np.float64)
        if v.ndim == 2:
            fraction = values.get("floor_fraction_min")
            if k is None or v.ndim != 2 or fraction is None or np.shape(fraction) != v.shape:
                continue
            reached = np.asarray(fraction, np.float64)[:, k] >= floors[k] - threshold("floor_slack", overrides)
            v = np.where(reached, v[:, k], np.nan)
        if v.shape == (units,):
            out[field] = v
    return out


def profile(values: Mapping[str, np.ndarray], floors: Sequence[float] = (), *, layer: str = "",
            rf: int | None = None, alpha: float | None = PROFILE_ALPHA, overrides=None) -> Profile:
    """A layer's :class:`Profile` from its per-unit measures (see :func:`classify`)."""
    units = _count(values)
    classes = classify(values, floors, alpha=alpha, overrides=overrides)
    fractions = {}
    for axis, names in AXES.items():
        codes = classes[axis]
        share = {name: float(np.mean(codes == k)) if units else math.nan for k, name in enumerate(names)}
        share[UNKNOWN] = float(np.mean(~np.isfinite(codes))) if units else math.nan
        fractions[axis] = share
    measures = profile_measures(values, floors, alpha=alpha, overrides=overrides)
    medians, counts = {}, {}
    for field, _, _ in MEDIANS:
        v = measures.get(field, np.zeros(0))
        v = v[np.isfinite(v)]
        medians[field] = float(np.median(v)) if v.size else math.nan
        counts[field] = int(v.size)
    agree = (rotation_agreement(classes["phase"], values["rotation_min_max"], overrides=overrides)
             if "rotation_min_max" in values else np.zeros(0))
    agree = np.asarray(agree, np.float64)[np.isfinite(agree)]
    return Profile(layer, units, fractions, medians, counts,
                   alpha if floor_index(floors, alpha) is not None else None, rf,
                   float(1 - agree.mean()) if agree.size else math.nan)


# ----------------------------------------------------------------------------------------------
# the table


def _share(p: Profile, axis: str, name: str) -> str:
    if not p.known(axis):
        return "–"
    return f"{100 * p.fractions[axis][name]:.0f}%"


def _median(p: Profile, field: str) -> str:
    v = p.medians[field]
    return "–" if not math.isfinite(v) else f"{v:.2f}"


def profile_columns(alpha: float | None = PROFILE_ALPHA) -> list[tuple[str, object]]:
    """The columns of a profile table: (header, cell function of a :class:`Profile` -> text)."""
    at = f"{alpha:g}" if alpha is not None else "alpha"
    cols = [("units", lambda p: str(p.units))]
    phase = AXES["phase"]
    cols += [(name, lambda p, n=name: _share(p, "phase", n)) for name in phase[2::-1] + phase[3:]]
    cols += [("grating/rotation disagree", lambda p: "–" if not math.isfinite(p.disagree) else f"{100 * p.disagree:.0f}%")]
    cols += [(f"diverse at {at}", lambda p: _share(p, "diversity", "diverse")),
             ("shift-invariant", lambda p: _share(p, "shift", "shift-invariant")),
             ("shift-untestable", lambda p: _share(p, "shift", "shift-untestable"))]
    cols += [("median F1/F0", lambda p: _median(p, "f1_f0")),
             ("median grating phase min/max", lambda p: _median(p, "grating_phase_min_max")),
             ("median rotation min/max", lambda p: _median(p, "rotation_min_max")),
             (f"median diversity at {at} / natural", lambda p: _median(p, "diversity")),
             (f"median diversity at {at} / linear", lambda p: _median(p, "diversity_vs_linear")),
             (f"median phase spread at {at}", lambda p: _median(p, "phase_spread")),
             ("median shift index", lambda p: _median(p, "shift_index")),
             ("unknown (phase/diversity/shift)",
              lambda p: "/".join(str(round(p.fractions[a][UNKNOWN] * p.units)) for a in AXES))]
    return cols


def format_profiles(profiles, *, alpha: float | None = PROFILE_ALPHA) -> str:
    """A markdown table of profiles, one row per layer: ``profiles`` a mapping {row label:
    :class:`Profile`} (e.g. ``{"VGG-19 conv2_1": p}``) or a sequence of them (labelled by their
    layer). Shares are of all units of the layer ("–": no unit has a class on that axis), medians
    to 2 decimals ("–": no finite value); the last column counts the units without a class."""
    rows = list(profiles.items()) if isinstance(profiles, Mapping) else [(p.layer, p) for p in profiles]
    cols = profile_columns(alpha)
    lines = ["| layer | " + " | ".join(h for h, _ in cols) + " |",
             "|---" * (len(cols) + 1) + "|"]
    for label, p in rows:
        lines.append(f"| {label} | " + " | ".join(cell(p) for _, cell in cols) + " |")
    return "\n".join(lines)


def format_thresholds() -> str:
    """The :data:`THRESHOLDS` table in markdown (name, value, rule, source)."""
    lines = ["| name | value | rule | source |", "|---|---|---|---|"]
    lines += [f"| `{t.name}` | {t.value:g} | {t.rule} | {t.source} |" for t in THRESHOLDS.values()]
    return "\n".join(lines)


def class_text(metric: str, codes) -> list[str] | None:
    """The class names of a read-out class metric's codes (``phase_class`` ...; names from
    :data:`AXES`, ``unknown`` for NaN); None where ``metric`` holds no
    classes."""
    axis = {m: a for a, m in CLASS_METRICS.items()}.get(metric)
    return None if axis is None else labels(axis, codes)
