"""One unit, one step: the objective and the optimiser update, as pure functions.

Everything here is written for a single unit (its N images, its direction in channel space); the
loop vmaps it over units once. A *unit* is a direction ``v`` ``[C]`` in the target layer's channel
space at the centre position; a channel is the one-hot direction, so every channel of a layer
shares one compiled program (``v`` is traced).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxvis.models.base import Network
from jaxvis.models.convention import InputConvention
from jaxvis.objectives import diversity as div
from jaxvis.objectives.naturalness import PRIORS
from jaxvis.optimize.config import Objective, Optimizer
from jaxvis.param.image import images as to_images
from jaxvis.param.image import on_sphere


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

    @property
    def n(self) -> int:
        return self.objective.images


class UnitState(NamedTuple):
    z: jax.Array          # [N, H, W, 3] the optimised variable
    opt: optax.OptState
    ema: jax.Array        # EMA of the loss
    best: jax.Array       # best EMA so far
    since: jax.Array      # steps since the EMA last improved
    done: jax.Array       # bool: stopped (converged); frozen from then on
    steps: jax.Array      # optimiser steps taken


def optimizer(problem: Problem) -> optax.GradientTransformation:
    return optax.adam(problem.optimizer.learning_rate)


def network_input(problem, x: jax.Array) -> jax.Array:
    """Images ``x`` ``[N, H, W, 3]`` (deviation from the mean colour) in the network's convention;
    ``problem`` is anything with ``mean_rgb`` and ``convention`` (:class:`Problem`, the shift test's)."""
    return problem.convention(x + jnp.asarray(problem.mean_rgb, x.dtype))


def forward(net: Network, problem: Problem, x: jax.Array):
    """All activations up to the target for images ``x`` (deviation from the mean colour)."""
    return net(network_input(problem, x), upto=problem.target)


def _response(net: Network, problem: Problem, x: jax.Array, direction: jax.Array):
    """(the unit's activation ``[N]``, the diversity feature maps ``[N, ...]``) of images ``x``."""
    activation, acts = net.unit_response(network_input(problem, x), problem.target, problem.centre,
                                         direction)
    return activation, x if problem.feature_layer is None else acts.post[problem.feature_layer]


def terms(net: Network, problem: Problem, x: jax.Array, direction: jax.Array) -> dict:
    """What is reported for one unit's images: activations, all pairwise distances, the prior."""
    activation, feats = _response(net, problem, x, direction)
    out = {"activations": activation}
    if problem.objective.diversity == "gram":
        out["similarity"] = div.gram_similarity(feats)
    out["pixel_distances"] = div.pairwise_rms(x)
    out["feature_distances"] = div.pairwise_rms(feats)
    out["prior"] = PRIORS[problem.objective.prior](x)
    return out


def loss_fn(z: jax.Array, net: Network, problem: Problem, direction: jax.Array, radius: jax.Array):
    """The objective of DESIGN.md section 1; computes only what the loss needs (the reported
    measurements are :func:`terms`)."""
    x = to_images(z, radius)
    activation, feats = _response(net, problem, x, direction)
    o = problem.objective
    loss = -jnp.mean(activation)
    if o.prior != "none":
        loss = loss + o.beta * PRIORS[o.prior](x)
    if o.diversity == "gram":
        loss = loss + o.lam * div.mean_pair(div.gram_similarity(feats))
    elif o.diversity != "none" and problem.n > 1:
        loss = loss - o.lam * div.min_pair_rms(feats)
    return loss


def init(key: jax.Array, problem: Problem) -> UnitState:
    z = jax.random.normal(key, (problem.n, problem.canvas, problem.canvas, 3), jnp.float32)
    inf = jnp.array(jnp.inf, jnp.float32)
    return UnitState(z, optimizer(problem).init(z), inf, inf, jnp.array(0, jnp.int32),
                     jnp.array(False), jnp.array(0, jnp.int32))


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
         radius: jax.Array) -> UnitState:
    """One Adam step for one unit, unless it has stopped (then everything stays as it is)."""
    loss, grad = jax.value_and_grad(loss_fn)(state.z, net, problem, direction, radius)
    updates, opt = optimizer(problem).update(grad, state.opt, state.z)
    z = optax.apply_updates(state.z, updates)
    stop = early_stop(loss, state.ema, state.best, state.since, problem.optimizer.ema,
                      problem.optimizer.patience)
    new = UnitState(z, opt, *stop, state.steps + 1)
    return freeze(state.done | (state.steps >= problem.optimizer.steps), state, new)


def evaluate(state: UnitState, net: Network, problem: Problem, direction: jax.Array,
             radius: jax.Array) -> dict:
    """Final images (RGB grey levels) and their measurements for one unit."""
    x = on_sphere(state.z, radius)
    t = terms(net, problem, x, direction)
    t.pop("prior")
    return {**t, "images": x + jnp.asarray(problem.mean_rgb, x.dtype),
            "loss": loss_fn(state.z, net, problem, direction, radius)}
