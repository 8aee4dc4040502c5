"""One unit, one step: the objective and the optimiser update, as pure functions.

Everything here is written for a single unit (its N images, its direction in channel space); the
loop vmaps it over units once. A *unit* is a direction ``v`` ``[C]`` in the target layer's channel
space at the centre position; a channel is the one-hot direction, so every channel of a layer
shares one compiled program (``v`` is traced).

The images come from ``z`` through the parameterisation ``Objective.param`` (pixels with the
whitened gradient, or decorrelated-colour Fourier coefficients; :mod:`jaxvis.param.image`), always
on the contrast sphere. With ``Objective.transforms`` the network sees each image under its own
random jitter, scale and rotation, drawn per step from the unit's transform stream
(:mod:`jaxvis.param.transform`, :func:`jaxvis.optimize.keys.image_uniforms`); without (the
default) the step is the paper's, unchanged.

The unit's response, the diversity term and the prior are looked up by name in their tables
(:data:`jaxvis.objectives.response.RESPONSES`, :data:`jaxvis.objectives.diversity.TERMS`,
:data:`jaxvis.objectives.naturalness.PRIORS`) when the program is traced; nothing here matches
names. ``Problem.canvas`` is the canvas the images have (the layer's, or ``Objective.canvas``).

**Activation floors** (``Objective.floor = alpha``): maximise the diversity ``D`` of the N images
subject to ``c_i = (a(x_i) - alpha a*) / |a*| >= 0`` for every image, ``a*`` the unit's
single-image maximum (a traced per-unit input, like the direction). It is solved as an
augmented Lagrangian (Powell-Hestenes-Rockafellar) with one multiplier ``mu_i >= 0`` per image,
updated after every optimiser step (a primal-dual method: the inner problem is never solved
exactly, Adam's iterate and the multipliers converge together):

    loss = -L_k(D) + sum_i psi(c_i - m, mu_i; rho) + beta * prior,
    psi(c, mu; rho) = (max(0, mu - rho c)^2 - mu^2) / (2 rho),       mu_i <- max(0, mu_i - eta (c_i - m)).

``L_k`` is the term's smooth ``log D`` (for the min-distance terms a soft minimum over pairs of
sharpness ``k``, :func:`jaxvis.objectives.diversity.soft_log_min_pair_rms`), dimensionless like the
constraints, so one schedule serves every unit. **The schedule** (:class:`FloorSchedule`): over the
first :data:`FLOOR_ANNEAL_SHARE` of the steps the sharpness ``k`` grows geometrically from a soft
mean of all pairs to nearly the hard minimum, and the penalty ``rho`` stiffens with it: early on
every pair pushes apart (the hard minimum would move one pair at a time and leave the set next to
its start), at the end the set is the max-min set. The iterate aims at the floor plus a margin
``m`` (:data:`FLOOR_MARGIN`) so that it can sit on the feasible side.

**What is kept**: the widest *feasible* iterate seen (every image at or above its floor, the term's
exact value), not the last one; a unit has converged only once the annealing is over and the kept
set has not widened by more than :data:`FLOOR_PROGRESS` (relative) for ``patience`` steps, so a set
still widening is never "converged". A unit that never was feasible runs to ``steps`` and its last
iterate is returned (its fractions say so). The multipliers only push an image up its own basin,
so the sweep runs every floor set from several starts and keeps the widest
(:data:`FLOOR_STARTS`, :func:`start_near`). Derivations and measurements: ``docs/floor.md``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxvis.errors import JaxvisError
from jaxvis.models.base import Network
from jaxvis.models.convention import InputConvention
from jaxvis.objectives import diversity as div
from jaxvis.objectives.diversity import TERMS
from jaxvis.objectives.naturalness import PRIORS
from jaxvis.objectives.response import RESPONSES
from jaxvis.optimize.config import (FLOOR_DIVERSITY, FLOOR_METHOD, FLOOR_START,  # noqa: F401 (re-exported)
                                    FLOOR_STARTS, Objective, Optimizer)
from jaxvis.optimize.keys import image_uniforms, transform_key
from jaxvis.param.image import coefficients, final_images
from jaxvis.param.image import images as to_images
from jaxvis.param.transform import transform


@dataclasses.dataclass(frozen=True)
class Problem:
    """Everything static about one compiled program: layer, canvas, feature space, settings."""

    target: str
    centre: int               # the optimised unit's position in the target's output
    canvas: int
    feature_layer: str | None  # None: pixel space (or no diversity)
    objective: Objective
    optimizer: Optimizer
    convention: InputConvention
    mean_rgb: tuple[float, float, float]  # natural mean colour the images deviate from
    colour: tuple[tuple[float, ...], ...] | None = None  # [3, 3] colour basis C (param fourier/lucid)

    def __post_init__(self):
        if self.colour is not None:  # any [3, 3] array-like: kept as tuples (the Problem is a jit key)
            object.__setattr__(self, "colour", tuple(tuple(float(v) for v in row) for row in self.colour))

    @property
    def n(self) -> int:
        return self.objective.images

    def images(self, z: jax.Array, radius: jax.Array) -> jax.Array:
        """``z`` ``[N, H, W, 3]`` -> the images on the sphere (deviation from the mean colour)."""
        return to_images(z, radius, self.objective.param, self.colour)


class UnitState(NamedTuple):
    z: jax.Array          # [N, H, W, 3] the optimised variable
    opt: optax.OptState
    ema: jax.Array        # EMA of the loss
    best: jax.Array       # best EMA so far
    since: jax.Array      # steps since the EMA last improved
    done: jax.Array       # bool: stopped (converged); frozen from then on
    steps: jax.Array      # optimiser steps taken
    multipliers: jax.Array  # [N] the floor constraints' Lagrange multipliers (0 without a floor)
    kept: jax.Array       # [N, H, W, 3] floor: the widest feasible iterate so far (else unused)
    kept_value: jax.Array  # its diversity (the term's exact value); -inf: none feasible yet
    mark: jax.Array       # floor: the kept value when it last widened by more than FLOOR_PROGRESS
    stall: jax.Array      # [N] int: floor: steps each image has been below its floor without climbing
    climb: jax.Array      # [N] floor: its constraint c_i when it last climbed (-inf: fresh)
    transforms: jax.Array | None = None  # [2] uint32 the unit's transform stream (None: no transforms)


# floor objective: the augmented Lagrangian's penalty weight rho and the soft minimum's sharpness k,
# each annealed geometrically from its first value to its second over the first
# FLOOR_ANNEAL_SHARE of Optimizer.steps (then held); the multipliers' step per optimiser step.
# k = 5 weighs all 15 pairs of N = 6 alike (a pair 10% farther than the closest keeps 62% of its
# weight), k = 100 is within log(15)/100 = 2.7% of the hard minimum. A multiplier step as large as
# rho winds the multipliers up while the start is below the floor; 1 lets Adam's iterate track them.
FLOOR_RHO = (10.0, 100.0)
FLOOR_SHARPNESS = (5.0, 100.0)
FLOOR_ANNEAL_SHARE = 0.7
FLOOR_DUAL_STEP = 1.0
FLOOR_MARGIN = 0.001    # the iterate aims at alpha + this (fractions of a*), so it can be feasible
FLOOR_PROGRESS = 1e-3   # relative widening of the kept set that resets the patience count
# an image more than FLOOR_DEPTH (of a*) below its floor that has not climbed by FLOOR_CLIMB for more
# than FLOOR_STUCK steps sits in a basin whose local maximum is below the floor (the multiplier cannot
# lift it out): it restarts next to the set's most active image, if that one keeps its floor (its own
# z mixed in at FLOOR_START_MIX), with its multiplier at 0. Images climbing back (a phase start's) and
# images settling onto the floor from just below (the augmented Lagrangian's approach) are left alone.
FLOOR_STUCK = 100
FLOOR_CLIMB = 0.01
FLOOR_DEPTH = 0.005
# the random draw's share in a start near an image: z_i = sqrt(1 - m^2) z* + m eps_i (z*: the
# image's coefficients scaled to the norm of a N(0, 1) draw), so each start image keeps a cosine
# of about sqrt(1 - m^2) = 0.95 with it (docs/floor.md); 1 is the random start itself.
FLOOR_START_MIX = 0.3


def adam(learning_rate: float) -> optax.GradientTransformation:
    return optax.adam(learning_rate)


def optimizer(problem: Problem) -> optax.GradientTransformation:
    return adam(problem.optimizer.learning_rate)


@dataclasses.dataclass(frozen=True)
class Start:
    """All a unit's start depends on but its transform stream, so every problem of the same shape
    (a layer's diverse set and its floor sets, with or without transforms) shares one compiled
    init (threefry's normal draw costs seconds of XLA:CPU compilation)."""

    images: int
    canvas: int
    learning_rate: float

    @classmethod
    def of(cls, problem: Problem) -> "Start":
        return cls(problem.n, problem.canvas, problem.optimizer.learning_rate)


def network_input(problem, x: jax.Array) -> jax.Array:
    """Images ``x`` ``[N, H, W, 3]`` (deviation from the mean colour) in the network's convention;
    ``problem`` is anything with ``mean_rgb`` and ``convention`` (:class:`Problem`, the shift test's)."""
    return problem.convention(x + jnp.asarray(problem.mean_rgb, x.dtype))


def forward(net: Network, problem: Problem, x: jax.Array):
    """All activations up to the target for images ``x`` (deviation from the mean colour)."""
    return net(network_input(problem, x), upto=problem.target)


def _response(net: Network, problem: Problem, x: jax.Array, direction: jax.Array):
    """(the unit's activation ``[N]``, the diversity feature maps ``[N, ...]``) of images ``x``:
    the objective's response (:data:`jaxvis.objectives.response.RESPONSES`) of the target layer."""
    response = RESPONSES[problem.objective.response]
    if response.centre:  # the paper's unit, through the network's centre-unit path
        activation, acts = net.unit_response(network_input(problem, x), problem.target, problem.centre,
                                             direction)
    else:
        acts = net(network_input(problem, x), upto=problem.target)
        activation = response.value(acts.pre[problem.target], direction)
        if activation.shape != (x.shape[0],):
            raise JaxvisError(f"response {problem.objective.response!r} returned shape {activation.shape} for "
                              f"{x.shape[0]} images; value(pre [N, h, w, C], direction [C]) must return [N]")
    return activation, x if problem.feature_layer is None else acts.post[problem.feature_layer]


def terms(net: Network, problem: Problem, x: jax.Array, direction: jax.Array) -> dict:
    """What is reported for one unit's images: activations, all pairwise distances, the prior."""
    activation, feats = _response(net, problem, x, direction)
    return {"activations": activation, "pixel_distances": div.pairwise_rms(x),
            "feature_distances": div.pairwise_rms(feats), "prior": PRIORS[problem.objective.prior].penalty(x)}


def floor_constraints(activation: jax.Array, maximum: jax.Array, floor: float) -> jax.Array:
    """``[N]`` activations -> ``c_i = (a_i - floor * a*) / |a*|`` (>= 0: image i keeps its floor)."""
    return (activation - floor * maximum) / jnp.maximum(jnp.abs(maximum), 1e-12)


def floor_penalty(c: jax.Array, multipliers: jax.Array, rho: jax.Array | float = FLOOR_RHO[0]) -> jax.Array:
    """The augmented-Lagrangian term ``sum_i psi(c_i, mu_i)`` for constraints ``c >= 0``."""
    return jnp.sum(jnp.square(jnp.maximum(0.0, multipliers - rho * c)) - jnp.square(multipliers)) / (2 * rho)


class FloorSchedule(NamedTuple):
    """A floor objective's annealed settings at one step: penalty ``rho``, soft-min ``sharpness``,
    and whether the annealing is over (a unit may stop only then)."""

    rho: jax.Array
    sharpness: jax.Array
    annealed: jax.Array

    @classmethod
    def at(cls, steps: jax.Array, total: int) -> "FloorSchedule":
        """The schedule after ``steps`` of a run of at most ``total`` steps: both settings move
        geometrically from the first value of :data:`FLOOR_RHO` / :data:`FLOOR_SHARPNESS` to the
        second over ``FLOOR_ANNEAL_SHARE * total`` steps."""
        length = max(1.0, FLOOR_ANNEAL_SHARE * total)
        t = jnp.minimum(steps.astype(jnp.float32) / length, 1.0)

        def geometric(pair):
            return pair[0] * (pair[1] / pair[0]) ** t

        return cls(geometric(FLOOR_RHO), geometric(FLOOR_SHARPNESS), steps >= length)


def _loss(z, net, problem, direction, radius, maximum, multipliers, schedule=None, draws=None):
    """(loss, (the unit's activations ``[N]``, the diversity term's exact value)). ``schedule``: a
    floor objective's :class:`FloorSchedule` (default: its end). ``draws`` ``[N, 4]``: the images'
    transform numbers of this step; the network then sees the transformed images (features too),
    while pixel diversity and the prior measure the images themselves."""
    x = problem.images(z, radius)
    seen = x if draws is None else transform(draws, x, problem.objective.transforms)
    activation, feats = _response(net, problem, seen, direction)
    o = problem.objective
    term = TERMS[o.diversity]
    if problem.feature_layer is None or term.space == "pixels":
        feats = x
    loss = o.beta * PRIORS[o.prior].penalty(x)
    value = term.value(feats) if problem.n > 1 else jnp.zeros((), jnp.float32)
    if o.floor is None:
        loss = loss - jnp.mean(activation)
        if problem.n > 1:
            loss = loss - o.lam * value
    else:
        schedule = schedule or FloorSchedule.at(jnp.array(problem.optimizer.steps), problem.optimizer.steps)
        c = floor_constraints(activation, maximum, o.floor) - FLOOR_MARGIN
        loss = loss - term.log_value(feats, schedule.sharpness) + floor_penalty(c, multipliers, schedule.rho)
    return loss, (activation, jax.lax.stop_gradient(value))


def loss_fn(z: jax.Array, net: Network, problem: Problem, direction: jax.Array, radius: jax.Array,
            maximum: jax.Array | None = None, multipliers: jax.Array | None = None):
    """The objective of :class:`Objective` for one unit's ``z`` ``[N, H, W, 3]``; computes only
    what the loss needs (the reported measurements are :func:`terms`). ``maximum`` (scalar ``a*``)
    and ``multipliers`` ``[N]`` enter only a floor objective. No transforms: the loss of the images
    as they are."""
    if multipliers is None:
        multipliers = jnp.zeros((problem.n,), jnp.float32)
    if maximum is None:
        maximum = jnp.ones((), jnp.float32)
    return _loss(z, net, problem, direction, radius, maximum, multipliers)[0]


def init(key: jax.Array, problem: Problem) -> UnitState:
    """The start of a unit: ``z ~ N(0, 1)`` from its key (pixels or coefficients, as ``param``
    says), and with transforms the key stream they draw from."""
    state = start(key, Start.of(problem))
    return state if problem.objective.transforms is None else state._replace(transforms=transform_key(key))


def start(key: jax.Array, s: Start) -> UnitState:
    """:func:`init` without the transform stream, from what it depends on (:class:`Start`)."""
    z = jax.random.normal(key, (s.images, s.canvas, s.canvas, 3), jnp.float32)
    inf = jnp.array(jnp.inf, jnp.float32)
    return UnitState(z, adam(s.learning_rate).init(z), inf, inf, jnp.array(0, jnp.int32),
                     jnp.array(False), jnp.array(0, jnp.int32), jnp.zeros((s.images,), jnp.float32),
                     z, -inf, -inf, jnp.zeros((s.images,), jnp.int32), jnp.full((s.images,), -inf))


def start_near(z: jax.Array, images: jax.Array, param: str = "pixel", colour=None,
               mix: jax.Array | float = FLOOR_START_MIX) -> jax.Array:
    """One unit's random start ``z`` ``[N, H, W, 3]`` moved next to ``images`` (deviations from
    the mean colour): ``[H, W, 3]`` one image for all N (e.g. the unit's maximum) or ``[N, H, W, 3]``
    one per image. Image i becomes ``sqrt(1 - mix^2) z*_i + mix z_i`` with ``z*_i`` its target's
    coefficients (:func:`jaxvis.param.image.coefficients`) scaled to the expected norm of a
    ``N(0, 1)`` draw, so Adam's steps have the scale they have from a random start. ``mix = 1`` is
    the random start itself (whatever the images)."""
    images = jnp.broadcast_to(images.astype(z.dtype), z.shape)

    def scaled(image):
        target = coefficients(image, param, colour)
        norm = jnp.sqrt(jnp.sum(jnp.square(target)))
        return target * jnp.sqrt(jnp.float32(target.size)) / jnp.maximum(norm, 1e-12)

    return jnp.sqrt(1.0 - jnp.square(mix)) * jax.vmap(scaled)(images) + mix * z


def early_stop(loss, ema, best, since, decay: float, patience: int):
    """(ema, best, since, done) after one more ``loss``: the EMA starts at the first loss, and a
    unit is done once its EMA has not improved for more than ``patience`` steps."""
    ema = jnp.where(jnp.isinf(ema), loss, decay * ema + (1 - decay) * loss)
    since = jnp.where(ema < best, 0, since + 1)
    return ema, jnp.minimum(ema, best), since, since > patience


def freeze(stopped, old, new):
    """``old`` where ``stopped``, else ``new`` (same pytrees): a stopped unit keeps its state
    exactly, so its result cannot depend on its batch neighbours or on how long the batch runs."""
    return jax.tree.map(lambda o, n: jnp.where(stopped, o, n), old, new)


def step(state: UnitState, net: Network, problem: Problem, direction: jax.Array,
         radius: jax.Array, maximum: jax.Array | None = None) -> UnitState:
    """One Adam step for one unit, unless it has stopped (then everything stays as it is).
    ``maximum``: the unit's single-image maximum ``a*`` (needed by a floor objective only)."""
    maximum = jnp.ones((), jnp.float32) if maximum is None else maximum
    draws = None if state.transforms is None else image_uniforms(state.transforms, state.steps, problem.n)
    floor = problem.objective.floor
    schedule = None if floor is None else FloorSchedule.at(state.steps, problem.optimizer.steps)
    (loss, (activation, value)), grad = jax.value_and_grad(_loss, has_aux=True)(
        state.z, net, problem, direction, radius, maximum, state.multipliers, schedule, draws)
    updates, opt = optimizer(problem).update(grad, state.opt, state.z)
    z = optax.apply_updates(state.z, updates)
    ema, best, since, done = early_stop(loss, state.ema, state.best, state.since, problem.optimizer.ema,
                                        problem.optimizer.patience)
    new = state._replace(z=z, opt=opt, ema=ema, best=best, since=since, done=done, steps=state.steps + 1)
    if floor is not None:
        new = _floor_update(new, state, activation, value, maximum, floor, schedule, problem.optimizer.patience)
    return freeze(state.done | (state.steps >= problem.optimizer.steps), state, new)


def _floor_update(new: UnitState, old: UnitState, activation, value, maximum, floor: float,
                  schedule: FloorSchedule, patience: int) -> UnitState:
    """A floor objective's bookkeeping after one step: the multipliers' dual step; ``old.z`` (whose
    ``activation`` and exact diversity ``value`` this step measured) kept if every image kept its
    floor and it is wider than the kept set; the patience count on the kept set's widening; done
    once annealed, feasible and not widening for more than ``patience`` steps; images stuck below
    their floor without climbing for more than :data:`FLOOR_STUCK` steps restarted next to the most
    active image."""
    c = floor_constraints(activation, maximum, floor)
    multipliers = jnp.maximum(0.0, old.multipliers - FLOOR_DUAL_STEP * (c - FLOOR_MARGIN))
    moving = (c >= -FLOOR_DEPTH) | (c >= old.climb + FLOOR_CLIMB)
    climb, stall = jnp.where(moving, c, old.climb), jnp.where(moving, 0, old.stall + 1)
    donor = jnp.argmax(activation)
    stuck = (stall > FLOOR_STUCK) & (c[donor] >= 0)
    z = jnp.where(stuck[:, None, None, None], _next_to(old.z[donor], new.z), new.z)
    multipliers = jnp.where(stuck, 0.0, multipliers)
    stall, climb = jnp.where(stuck, 0, stall), jnp.where(stuck, -jnp.inf, climb)
    wider = jnp.all(c >= 0) & (value > old.kept_value)
    kept = jnp.where(wider, old.z, old.kept)
    kept_value = jnp.where(wider, value, old.kept_value)
    widened = kept_value > jnp.where(jnp.isfinite(old.mark), old.mark * (1 + FLOOR_PROGRESS), -jnp.inf)
    mark = jnp.where(widened, kept_value, old.mark)
    since = jnp.where(widened | ~schedule.annealed, 0, old.since + 1)
    done = schedule.annealed & jnp.isfinite(kept_value) & (since > patience)
    return new._replace(z=z, multipliers=multipliers, kept=kept, kept_value=kept_value, mark=mark, since=since,
                        done=done, stall=stall, climb=climb)


def _next_to(target: jax.Array, z: jax.Array, mix: float = FLOOR_START_MIX) -> jax.Array:
    """Each of ``z`` ``[N, ...]`` moved next to ``target`` (one image's ``z``) as
    :func:`start_near` does: ``sqrt(1 - mix^2) target + mix z_i``, ``z_i`` scaled to ``target``'s norm."""
    norm = jnp.sqrt(jnp.sum(jnp.square(z), axis=(1, 2, 3), keepdims=True))
    scale = jnp.sqrt(jnp.sum(jnp.square(target))) / jnp.maximum(norm, 1e-12)
    return jnp.sqrt(1.0 - mix ** 2) * target + mix * scale * z


def evaluate(state: UnitState, net: Network, problem: Problem, direction: jax.Array,
             radius: jax.Array, maximum: jax.Array | None = None) -> dict:
    """Final images (RGB grey levels) and their measurements for one unit, untransformed: a floor
    objective's widest feasible iterate (``feasible`` True), or its last one if none was."""
    z, out = state.z, {}
    maximum = jnp.ones((), jnp.float32) if maximum is None else maximum
    if problem.objective.floor is not None:
        out["feasible"] = jnp.isfinite(state.kept_value)
        z = jnp.where(out["feasible"], state.kept, state.z)
    loss, (_, value) = _loss(z, net, problem, direction, radius, maximum, state.multipliers)
    if problem.objective.floor is not None:
        out["diversity"] = value
    x = final_images(z, radius, problem.objective.param, problem.colour)
    t = terms(net, problem, x, direction)
    t.pop("prior")
    return {**t, **out, "images": x + jnp.asarray(problem.mean_rgb, x.dtype), "loss": loss}
