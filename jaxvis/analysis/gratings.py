"""The grating battery: full-field gratings on a unit's canvas at its contrast budget, no optimisation.

Every channel of a layer sees the same stimuli, so the whole battery is one set of images pushed
through one jitted forward pass (:meth:`jaxvis.Model.layer_output`, weights as a jit argument) in
equal chunks that bound memory, for all units at once (a unit is a direction read off the shared
responses); the finer pass is one set too, every unit's gratings together. Each chunk is split
over the devices of the unit mesh (:func:`responses`: data parallel, the images of a chunk spread
over the devices, the weights replicated). What stays on the host: the stimuli (numpy, made chunk
by chunk), the ripple of each grating and the per-unit measures (small numpy arrays). Seconds per
layer on a CPU.

**Stimuli.** On the layer's ``c x c`` canvas, pixel ``(y, x)`` measured from the canvas centre::

    g(y, x) = mean + A cos(2 pi (x cos(theta) + y sin(theta)) / period + phase) * u

- ``theta`` in ``[0, pi)`` is the direction of modulation (0: vertical bars varying left to right;
  ``y`` points down), ``orientations`` equally spaced steps;
- ``period`` in pixels, ``periods`` values log-spaced from 2 px (Nyquist) to twice the canvas;
- ``phase`` ``phases`` equally spaced steps of ``[0, 2 pi)``; phase 0 puts a crest on the centre;
- ``u`` a unit colour axis in RGB: luminance ``(1, 1, 1)/sqrt 3``, red-green ``(1, -1, 0)/sqrt 2``,
  blue-yellow ``(-1, -1, 2)/sqrt 6`` (the sign of an axis is a phase of pi, so it is covered);
- ``mean`` the network's natural mean colour (the sweep's images deviate from the same colour).
- The amplitude ``A = r sqrt(2) / c`` is fixed: averaged over the phases, a grating's squared L2
  norm is exactly ``r^2``, the sweep's sphere (``r`` the unit's contrast budget). Single gratings
  differ from ``r`` only when the period does not fit the canvas (at 2 px and phase pi/2 the
  sampled grating vanishes). A fixed amplitude keeps a linear unit's response exactly sinusoidal
  in the phase; renormalising each grating to ``r`` would not.

**Per unit** (a unit is a direction ``v`` in the layer's channel space at the centre position; its
response is the pre-activation ``a . v`` as in the sweep), ``R[o, p, f, k]`` over orientation,
period, phase and colour axis. The *preferred grating* ``(o*, p*, k*)`` maximises the peak over
phase ``max_f R`` among the gratings whose phase is a translation of the sampled pattern: a
2 px grating along a pixel axis samples to ``(-1)^x cos(phase)``, so its phase sets its contrast,
and such gratings (squared norm changing by more than :data:`MAX_RIPPLE` of its mean over phase,
:func:`phase_ripple`) are left out of the choice (their responses stay in ``grating_responses``).
Gratings longer than the canvas keep their moderate ripple (a crest or an edge in view): that is
what a large grating does to a receptive field, as in physiology. The measures are ratios of the unit's own responses, so none presupposes that a
grating drives the unit anywhere near its optimised maximum:

- ``grating_f1_f0``: the modulation ratio of the phase response at the preferred grating,
  rectified above the unit's baseline: ``rho = max(R - b, 0)`` with ``b = max(blank, 0)`` the
  rectified response to the mean colour alone (the unit's "spontaneous" output), ``F1 / F0`` with
  ``F0`` the mean of ``rho`` over phase and ``F1`` the amplitude of its first harmonic. Skottun,
  De Valois, Grosof, Movshon, Albrecht & Bonds (1991), Vision Res. 31:1079: > 1 simple, < 1
  complex; as there, ``F0`` is the response *above the spontaneous rate*. A half-wave rectified
  sinusoid gives pi/2; an energy model (sum of squared quadrature filters) has no first harmonic
  at all. The baseline matters: a linear unit with a positive bias ``B`` larger than its grating
  drive ``d`` never rectifies, so ``max(R, 0) = B + d cos(phase)`` would give ``d / B < 1`` and
  call it complex; above the baseline it is the half-wave rectified ``d cos(phase)`` again (the
  EfficientNet-Lite0 stem has such units). Units whose blank response is negative (below a
  ReLU's threshold) have ``b = 0``: their output is ``max(R, 0)`` as before.
- ``grating_phase_min_max``: ``min rho / max rho`` over phase at the preferred grating, the same
  ``rho`` (1: phase invariant; 0: some phase brings the unit down to its baseline or below).
- ``grating_orientation_selectivity``: ``1 - circular variance`` of the orientation curve (peak over
  phase at the preferred period and colour) above the same baseline, ``|sum rho(t) e^{2it}| / sum rho(t)``
  (Ringach, Shapley & Hawken 2002, J. Neurosci. 22:5639): 0 untuned, 1 a single orientation.
- ``grating_orientation_index``: ``(pref - orth) / (pref + orth)`` on the same curve, orth the
  orientation 90 degrees from the preferred one.
- ``grating_best``: the preferred grating's peak response; ``grating_best_fraction`` the same over
  the unit's single-image maximum (passed in): how much of the unit a grating explains.
- ``grating_blank``: the response to the mean colour alone (zero contrast), the unit's baseline.

Ratios whose denominator is not positive (a unit no grating drives above its baseline) are NaN.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from jax.sharding import Mesh

from jaxvis.errors import JaxvisError, unknown
from jaxvis.models.geometry import LayerInfo
from jaxvis.optimize.parallel import unit_mesh

COLOURS = {
    "luminance": np.array([1.0, 1.0, 1.0]) / np.sqrt(3.0),
    "red-green": np.array([1.0, -1.0, 0.0]) / np.sqrt(2.0),
    "blue-yellow": np.array([-1.0, -1.0, 2.0]) / np.sqrt(6.0),
}
# gratings whose squared norm changes by more than this over phase are not candidates for the
# preferred grating: there a phase step changes the sampled contrast, not the position
MAX_RIPPLE = 0.5
# the near-peak set: every grating whose peak above the baseline is within this share of the best one
# (on VGG-19 conv2_1, gratings within 5% of the peak gave opposite F1/F0 classes: docs/invariance.md
# section 5, threshold phase_consensus)
NEAR_PEAK = 0.05
# the second, finer pass around the coarse winner: offsets in steps of the coarse grid, the same for
# orientation and log-period (half a step each way: 3 x 3 gratings, the winner among them)
REFINE = (-0.5, 0.0, 0.5)
# images per forward call and device times their pixels. An accelerator's conv1_2 of VGG-19 then
# holds 2^19 x 64 floats (128 MiB); a CPU device's call should stay near its caches, where smaller
# calls are as fast and hold a quarter of the memory (docs/speed.md, "Analysis memory")
PIXELS_PER_CALL = {"cpu": 1 << 16, "accelerator": 1 << 19}

DEFINITIONS = {
    "grating_preferred_orientation": "direction of modulation of the preferred grating (radians, 0: vertical bars)",
    "grating_preferred_period": "period of the preferred grating (px)",
    "grating_preferred_colour": "colour axis of the preferred grating (index into Battery.colours: luminance, red-green, blue-yellow)",
    "grating_orientation_selectivity": "1 - circular variance of the orientation curve above the baseline, max(curve - max(blank, 0), 0) (Ringach et al. 2002)",
    "grating_orientation_index": "(pref - orth) / (pref + orth) of the orientation curve above the baseline",
    "grating_f1_f0": "F1/F0 of the phase response above the baseline, max(R - max(blank, 0), 0), at the preferred grating (Skottun et al. 1991: >1 simple, <1 complex)",
    "grating_phase_min_max": "min / max over phase of the response above the baseline, max(R - max(blank, 0), 0), at the preferred grating",
    "grating_best": "the preferred grating's response (pre-activation, peak over phase)",
    "grating_best_fraction": "grating_best / the unit's single-image maximum",
    "grating_blank": "response to the mean colour alone (zero contrast)",
    "grating_orientation_curve": "peak response over phase per orientation, at the preferred period and colour",
    "grating_period_curve": "peak response over phase per period, at the preferred orientation and colour",
    "grating_phase_curve": "response per phase at the preferred grating",
    "grating_colour_curve": "peak response over phase per colour axis, at the preferred orientation and period",
    "grating_responses": "response to every grating [orientation, period, phase, colour]",
    "grating_near_f1_f0": "F1/F0 above the baseline of every near-peak grating (peak above the baseline within "
                          "NEAR_PEAK of the best, coarse battery and refinement), best first, NaN-padded [units, gratings]",
    "grating_near_f2_f0": "F2/F0 (second harmonic) above the baseline of the same near-peak gratings [units, gratings]",
    "grating_near_min_max": "min / max over phase above the baseline of the same near-peak gratings [units, gratings]",
    "grating_refined_orientation": "orientation of the best grating after the finer pass around the coarse winner (radians)",
    "grating_refined_period": "period of the best grating after the finer pass (px)",
}


@dataclasses.dataclass(frozen=True)
class Battery:
    """Which gratings: counts per axis and the colour axes (names of :data:`COLOURS`)."""

    orientations: int = 16
    periods: int = 12
    phases: int = 8
    colours: tuple[str, ...] = tuple(COLOURS)

    def __post_init__(self):
        if self.orientations < 4 or self.orientations % 2:
            raise JaxvisError(f"orientations must be an even number >= 4 (the orthogonal one is in "
                              f"the set), not {self.orientations}")
        if self.periods < 2:
            raise JaxvisError(f"periods must be >= 2, not {self.periods}")
        if self.phases < 4:
            raise JaxvisError(f"phases must be >= 4 (F1 needs them), not {self.phases}")
        for c in self.colours:
            if c not in COLOURS:
                raise unknown("colour axis", c, COLOURS)

    def axes(self, canvas: int) -> dict[str, np.ndarray]:
        """``orientations`` ``[O]`` and ``phases`` ``[F]`` in radians, ``periods`` ``[P]`` in px."""
        return {"orientations": np.arange(self.orientations) * np.pi / self.orientations,
                "periods": np.geomspace(2.0, 2.0 * canvas, self.periods),
                "phases": np.arange(self.phases) * 2 * np.pi / self.phases}


def waves(canvas: int, theta, period, phase) -> np.ndarray:
    """``[B]`` orientations (radians), periods (px) and phases -> ``[B, c, c]`` unit-amplitude
    cosine gratings, pixel ``(y, x)`` measured from the canvas centre (module docstring)."""
    y, x = np.mgrid[:canvas, :canvas] - (canvas - 1) / 2
    t = np.asarray(theta, np.float64)[:, None, None]
    return np.cos(2 * np.pi * (x * np.cos(t) + y * np.sin(t)) / np.asarray(period, np.float64)[:, None, None]
                  + np.asarray(phase, np.float64)[:, None, None])


def grating_images(canvas: int, battery: Battery, radius: float, index: np.ndarray) -> np.ndarray:
    """Gratings number ``index`` ``[B]`` (flat over ``[O, P, F, K]``; ``O*P*F*K`` is the blank, the
    mean colour alone) -> ``[B, c, c, 3]`` deviations from the mean colour (module docstring)."""
    a = battery.axes(canvas)
    shape = (battery.orientations, battery.periods, battery.phases, len(battery.colours))
    blank = index >= np.prod(shape)
    o, p, f, k = np.unravel_index(np.where(blank, 0, index), shape)
    colours = np.stack([COLOURS[c] for c in battery.colours])[k] * ~blank[:, None]  # [B, 3]
    return coloured(waves(canvas, a["orientations"][o], a["periods"][p], a["phases"][f]), colours, radius)


def coloured(wave: np.ndarray, colours: np.ndarray, radius: float) -> np.ndarray:
    """``[B, c, c]`` unit-amplitude gratings along colour axes ``[B, 3]`` at the battery's fixed
    amplitude ``r sqrt(2) / c`` -> ``[B, c, c, 3]`` float32."""
    amplitude = radius * np.sqrt(2.0) / wave.shape[-1]
    return (amplitude * wave[..., None] * colours[:, None, None, :]).astype(np.float32)


def stimuli(canvas: int, battery: Battery, radius: float) -> np.ndarray:
    """The whole battery ``[O, P, F, K, c, c, 3]`` at once (:func:`gratings` makes it chunk by chunk)."""
    shape = (battery.orientations, battery.periods, battery.phases, len(battery.colours))
    return grating_images(canvas, battery, radius, np.arange(np.prod(shape))).reshape(*shape, canvas, canvas, 3)


def ripple(canvas: int, theta, period, phases) -> np.ndarray:
    """How much a grating's squared norm changes with its phase, ``(max - min) / mean`` over
    ``phases``, for gratings ``theta``, ``period`` of any (equal) shape (the colour axis does not
    matter: each is a unit vector)."""
    theta, period = np.broadcast_arrays(np.asarray(theta, np.float64), np.asarray(period, np.float64))
    out = np.empty(theta.size)
    for i, (t, p) in enumerate(zip(theta.ravel(), period.ravel())):  # [F, c, c] at a time: small
        n2 = np.square(waves(canvas, np.full(len(phases), t), np.full(len(phases), p), phases)).sum(axis=(-2, -1))
        out[i] = (n2.max() - n2.min()) / n2.mean()
    return out.reshape(theta.shape)


def phase_ripple(canvas: int, battery: Battery) -> np.ndarray:
    """``[O, P]`` :func:`ripple` of the battery's gratings."""
    a = battery.axes(canvas)
    return ripple(canvas, a["orientations"][:, None], a["periods"][None, :], a["phases"])


def refinement(axes: dict[str, np.ndarray], o: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The finer pass around each unit's coarse winner (orientation index ``o``, period index ``p``,
    ``[U]``): ``[U, G]`` orientations and periods at :data:`REFINE` steps of the coarse grid in
    orientation and log-period, the winner itself left out (it is in the battery); periods below
    2 px (Nyquist) are clipped to 2."""
    step_t = axes["orientations"][1] - axes["orientations"][0]
    step_p = np.log(axes["periods"][1] / axes["periods"][0])
    dt, dp = (a.ravel() for a in np.meshgrid(REFINE, REFINE, indexing="ij"))
    keep = (dt != 0) | (dp != 0)
    theta = axes["orientations"][o][:, None] + step_t * dt[keep][None, :]
    period = np.maximum(axes["periods"][p][:, None] * np.exp(step_p * dp[keep][None, :]), 2.0)
    return theta, period


def harmonics(curve: np.ndarray, phases: np.ndarray, blank) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[..., F]`` responses at equally spaced ``phases`` -> ``F0``, ``F1``, ``F2`` (mean and the
    amplitudes of the first two harmonics) of the response above the baseline, :func:`above_baseline`."""
    rho = above_baseline(curve, np.broadcast_to(blank, np.shape(curve)[:-1]))
    amplitude = lambda n: np.abs((rho * np.exp(-1j * n * phases)).sum(-1)) * 2 / len(phases)  # noqa: E731
    return rho.mean(-1), amplitude(1), amplitude(2)


def near_peak(curves: np.ndarray, eligible: np.ndarray, phases: np.ndarray, blank, thetas: np.ndarray,
              periods: np.ndarray) -> dict[str, np.ndarray]:
    """``[U, G, F]`` phase curves of G gratings per unit, ``eligible`` ``[U, G]`` (phase is a
    translation), ``blank`` ``[U]`` -> the phase measures of the **near-peak set**: the eligible
    gratings whose peak above the baseline is at least ``1 - NEAR_PEAK`` of the best one's (none
    where no grating lifts the unit above it), best first, ``[U, M]`` NaN-padded (``M`` the largest
    set): ``grating_near_f1_f0``, ``grating_near_f2_f0``, ``grating_near_min_max``; and the best
    grating's orientation and period (``thetas``, ``periods`` ``[U, G]``, the gratings'),
    ``grating_refined_orientation`` / ``_period`` ``[U]``."""
    blank = np.asarray(blank, np.float64).reshape(len(curves))
    rho = above_baseline(curves, np.broadcast_to(blank[:, None], curves.shape[:2]))
    peak = np.where(eligible, rho.max(-1), -np.inf)
    best = peak.max(1, keepdims=True)
    near = (peak >= (1 - NEAR_PEAK) * best) & (best > 0) & eligible
    order = np.argsort(np.where(near, -peak, np.inf), axis=1, kind="stable")  # near ones first, best first
    m = max(1, int(near.sum(1).max()))
    pick = order[:, :m]
    taken = np.take_along_axis(near, pick, 1)
    chosen = np.take_along_axis(curves, pick[..., None], 1)  # [U, M, F]
    f0, f1, f2 = harmonics(chosen, phases, np.broadcast_to(blank[:, None], pick.shape))
    r = np.take_along_axis(rho, pick[..., None], 1)
    pad = lambda v: np.where(taken, v, np.nan).astype(np.float32)  # noqa: E731
    return {"grating_near_f1_f0": pad(ratio(f1, f0)), "grating_near_f2_f0": pad(ratio(f2, f0)),
            "grating_near_min_max": pad(ratio(r.min(-1), r.max(-1))),
            "grating_refined_orientation": pad(np.take_along_axis(thetas, pick, 1))[:, 0],
            "grating_refined_period": pad(np.take_along_axis(periods, pick, 1))[:, 0]}


def target(model, layer: str) -> LayerInfo:
    """The layer's catalogue row; a layer after global pooling has no receptive-field canvas to
    put a grating on, so it is refused."""
    info = model.network.layer(layer)
    if info.kind == "global":
        valid = [i.name for i in model.network.layers() if i.kind != "global"]
        raise JaxvisError(f"layer {layer!r} of {model.network.name} comes after global pooling (it sees "
                          f"the whole {info.canvas} px input, not a receptive field); probe a layer "
                          f"before it: {', '.join(valid)}")
    return info


def unit_directions(spec, channels: int) -> np.ndarray:
    """``None`` (every channel), channel indices ``[U]`` or directions ``[U, C]`` -> unit vectors
    ``[U, C]``."""
    if spec is None:
        return np.eye(channels, dtype=np.float32)
    spec = np.asarray(spec)
    if spec.ndim == 1 and np.issubdtype(spec.dtype, np.integer):
        if spec.size and (spec.min() < 0 or spec.max() >= channels):
            raise JaxvisError(f"unit {int(spec.max() if spec.max() >= channels else spec.min())} is out "
                              f"of range for a layer of {channels} channels (0-{channels - 1})")
        return np.eye(channels, dtype=np.float32)[spec]
    if spec.ndim != 2 or spec.shape[1] != channels:
        raise JaxvisError(f"directions must be [units, {channels}], not {list(spec.shape)}")
    norms = np.linalg.norm(spec, axis=1, keepdims=True)
    if (norms == 0).any():
        raise JaxvisError("a direction of length 0 is not a unit")
    return (spec / norms).astype(np.float32)


def images_per_call(canvas: int, mesh: Mesh) -> int:
    """Images of ``canvas`` px a forward call may take on ``mesh``: :data:`PIXELS_PER_CALL` of
    the mesh's platform per device, at least one per device."""
    pixels = PIXELS_PER_CALL["cpu" if mesh.devices.flat[0].platform == "cpu" else "accelerator"]
    return max(1, pixels // (canvas * canvas)) * mesh.size


def equal_chunks(count: int, most: int, multiple: int = 1):
    """Index arrays ``[size]`` of equal chunks over ``0..count-1``, as few as hold at most ``most``
    each, ``size`` a multiple of ``multiple``; the last one padded with repeats of ``count - 1``,
    so one compiled program serves every call."""
    calls = -(-count // most)
    size = -(-count // (calls * multiple)) * multiple
    for start in range(0, calls * size, size):
        yield np.minimum(np.arange(start, start + size), count - 1)


def responses(model, info: LayerInfo, count: int, images: Callable[[np.ndarray], np.ndarray],
              mesh: Mesh | None = None) -> np.ndarray:
    """The centre position's pre-activations ``[count, C]`` of images ``0..count-1``, made chunk by
    chunk by ``images(index [B]) -> [B, c, c, 3]`` (RGB grey levels), so memory stays bounded by
    :data:`PIXELS_PER_CALL` per device (of the mesh's platform). Each chunk is split over the
    devices of ``mesh`` (default
    :func:`~jaxvis.optimize.parallel.unit_mesh`: all of this process's; data parallel,
    :meth:`jaxvis.Model.layer_output`). The chunks are equal and a multiple of the device count
    (the last one padded with repeats of the last image), so one compiled program serves every call."""
    mesh = unit_mesh() if mesh is None else mesh
    out = []
    for index in equal_chunks(count, images_per_call(info.canvas, mesh), mesh.size):
        acts = model.layer_output(images(index), info.name, mesh=mesh)
        out.append(np.asarray(acts[:, info.centre, info.centre]))
    return np.concatenate(out)[:count]


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` as float32, NaN where ``den`` is not positive."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan).astype(np.float32)


def above_baseline(curve: np.ndarray, blank) -> np.ndarray:
    """``[..., F]`` responses, ``blank`` ``[...]`` -> ``rho = max(curve - max(blank, 0), 0)``: the
    rectified response above the unit's rectified baseline (module docstring)."""
    base = np.maximum(np.asarray(blank, np.float64), 0.0)[..., None]
    return np.maximum(np.asarray(curve, np.float64) - base, 0.0)


def f1_f0(curve: np.ndarray, phases: np.ndarray, blank=0.0) -> np.ndarray:
    """``[..., F]`` responses at equally spaced ``phases`` (``blank`` ``[...]`` the responses to
    the mean colour) -> F1/F0 of the response above the baseline, :func:`above_baseline`."""
    f0, f1, _ = harmonics(curve, phases, blank)
    return ratio(f1, f0)


def preferred(R: np.ndarray, candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[U, O, P, F, K]`` responses, ``candidate`` ``[O, P]`` -> the preferred grating's
    orientation, period and colour indices ``[U]`` each: the largest peak over phase among the
    candidates."""
    U, O, P, F, K = R.shape
    eligible = np.where(candidate[None, :, :, None], R.max(axis=3), -np.inf)
    return np.unravel_index(eligible.reshape(U, -1).argmax(1), (O, P, K))


def summarise(R: np.ndarray, axes: dict[str, np.ndarray], candidate: np.ndarray,
              blank=None) -> dict[str, np.ndarray]:
    """``[U, O, P, F, K]`` responses -> the per-unit measures and tuning curves (module docstring);
    the preferred grating is one of the ``candidate`` ``[O, P]`` (orientation, period) pairs;
    ``blank`` ``[U]`` the responses to the mean colour alone (None: 0), the phase measures' baseline."""
    U, O, P, F, K = R.shape
    peak = R.max(axis=3)  # [U, O, P, K]
    o, p, k = preferred(R, candidate)
    u = np.arange(U)
    orientation = peak[u, :, p, k]  # [U, O]
    phase = R[u, o, p, :, k]        # [U, F]
    blank = np.zeros(U) if blank is None else np.asarray(blank, np.float64).reshape(U)
    rho_t = above_baseline(orientation, blank)
    theta = axes["orientations"]
    pref, orth = rho_t[u, o], rho_t[u, (o + O // 2) % O]
    rho_f = above_baseline(phase, blank)
    return {
        "grating_preferred_orientation": theta[o].astype(np.float32),
        "grating_preferred_period": axes["periods"][p].astype(np.float32),
        "grating_preferred_colour": k.astype(np.int32),
        "grating_orientation_selectivity": ratio(np.abs((rho_t * np.exp(2j * theta)).sum(1)), rho_t.sum(1)),
        "grating_orientation_index": ratio(pref - orth, pref + orth),
        "grating_f1_f0": f1_f0(phase, axes["phases"], blank),
        "grating_phase_min_max": ratio(rho_f.min(1), rho_f.max(1)),
        "grating_best": peak[u, o, p, k].astype(np.float32),
        "grating_orientation_curve": orientation.astype(np.float32),
        "grating_period_curve": peak[u, o, :, k].astype(np.float32),
        "grating_phase_curve": phase.astype(np.float32),
        "grating_colour_curve": peak[u, o, p, :].astype(np.float32),
        "grating_responses": R.astype(np.float32),
    }


def gratings(model, layer: str, *, radius: float | None = None, directions=None,
             maximum: np.ndarray | None = None, battery: Battery = Battery(),
             photos: Sequence[Path] | None = None, mesh: Mesh | None = None) -> dict[str, np.ndarray]:
    """The grating battery for the units of one layer of ``model`` (a :class:`jaxvis.Model`).

    ``directions``: ``None`` (every channel), channel indices ``[U]`` or directions ``[U, C]``
    (as the sweep's units). ``radius``: the contrast budget in grey levels of L2 norm, as the
    sweep's (its layer meta ``radius``); ``None`` computes it from ``photos`` (default the bundled
    photographs) exactly as the sweep does. ``maximum`` ``[U]``: the units' single-image maxima,
    for ``grating_best_fraction``. ``mesh``: the devices the forward passes are split over
    (:func:`responses`; default all of this process's).

    Returns the arrays of :data:`DEFINITIONS`, every one with the units as its leading axis (curves
    ``[U, O]``, ``[U, P]``, ``[U, F]``, ``[U, K]``; ``grating_responses`` ``[U, O, P, F, K]``); their
    axes are ``battery.axes(canvas)`` (orientations, periods, phases) and ``battery.colours``.
    """
    info = target(model, layer)
    basis = unit_directions(directions, info.channels)
    if radius is None:
        from jaxvis.data.budget import radius as budget_radius
        from jaxvis.weights import default_photos, weights_root
        radius = budget_radius(info.canvas, model.convention.mean_rgb255,
                               list(photos or default_photos()), weights_root() / "budgets.json")
    if not radius > 0:
        raise JaxvisError(f"radius must be a positive contrast budget (grey levels of L2 norm), not {radius}")
    if maximum is not None and np.shape(maximum) != (len(basis),):
        raise JaxvisError(f"maximum must have one value per unit ({len(basis)}), not shape {list(np.shape(maximum))}")
    shape = (battery.orientations, battery.periods, battery.phases, len(battery.colours))
    mean = np.asarray(model.convention.mean_rgb255, np.float32)
    acts = responses(model, info, int(np.prod(shape)) + 1,  # the gratings, then the blank
                     lambda index: grating_images(info.canvas, battery, radius, index) + mean, mesh) @ basis.T
    R = np.moveaxis(acts[:-1], -1, 0).reshape(len(basis), *shape)
    axes = battery.axes(info.canvas)
    candidate = phase_ripple(info.canvas, battery) <= MAX_RIPPLE
    blank = acts[-1]
    out = summarise(R, axes, candidate, blank)
    out["grating_blank"] = blank.astype(np.float32)
    out.update(refine(model, info, R, axes, candidate, blank, basis, radius, battery, mesh))
    if maximum is not None:
        out["grating_best_fraction"] = ratio(out["grating_best"], np.asarray(maximum, np.float32))
    return out


def refine(model, info: LayerInfo, R: np.ndarray, axes: dict[str, np.ndarray], candidate: np.ndarray,
           blank: np.ndarray, basis: np.ndarray, radius: float, battery: Battery,
           mesh: Mesh | None = None) -> dict[str, np.ndarray]:
    """The finer pass and the near-peak set: each unit's :func:`refinement` gratings at its coarse
    winner's colour and the battery's phases (one more chunked forward pass, ``U x G x F`` images),
    then :func:`near_peak` over the battery's candidates and these, with the orientation and period
    of the best of them (``grating_refined_*``)."""
    U, O, P, F, K = R.shape
    o, p, k = preferred(R, candidate)
    theta, period = refinement(axes, o, p)  # [U, G]
    G = theta.shape[1]
    colours = np.stack([COLOURS[c] for c in battery.colours])[k]  # [U, 3]
    mean = np.asarray(model.convention.mean_rgb255, np.float32)

    def images(index):  # image (u * G + g) * F + f: unit u's refinement grating g at phase f
        u, rest = np.divmod(index, G * F)
        g, f = np.divmod(rest, F)
        return coloured(waves(info.canvas, theta[u, g], period[u, g], axes["phases"][f]), colours[u], radius) + mean

    acts = responses(model, info, U * G * F, images, mesh)
    fine = np.einsum("ugfc,uc->ugf", acts.reshape(U, G, F, -1), basis)
    coarse = np.moveaxis(R, 3, -1).reshape(U, O * P * K, F)
    eligible = np.concatenate([np.broadcast_to(np.repeat(candidate.ravel(), K), (U, O * P * K)),
                               ripple(info.canvas, theta, period, axes["phases"]) <= MAX_RIPPLE], 1)
    thetas = np.concatenate([np.broadcast_to(np.repeat(np.repeat(axes["orientations"], P), K), (U, O * P * K)),
                             theta], 1)
    periods = np.concatenate([np.broadcast_to(np.tile(np.repeat(axes["periods"], K), O), (U, O * P * K)), period], 1)
    return near_peak(np.concatenate([coarse, fine], 1), eligible, axes["phases"], blank, thetas, periods)
