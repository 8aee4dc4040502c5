"""Diversity of a set of N images: how different they are, in pixels, features or Gram matrices.

- **Distance** (the paper): ``d(u, v) = sqrt(mean((u - v)^2))`` over all elements of the images
  (pixel space) or of their post-ReLU feature maps at a lower layer. Only the *minimum* over the
  N(N-1)/2 pairs enters the loss (pushing apart the closest pair); the mean is reported.
- **Gram** (Olah et al. 2017): the cosine similarity between the images' Gram matrices of a lower
  layer's feature maps (texture statistics, blind to position); the loss penalises the mean
  pairwise similarity.

:data:`TERMS` is the single name -> term table: the objective's validation, the optimiser step
and the CLI's choices all read it. A new term is one function of the feature maps ``[N, ...]``
(larger = more diverse, >= 0) plus one :func:`register_term` call (``CONTRIBUTING.md``).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from jaxvis.errors import JaxvisError, check_new_name

# sqrt has an infinite derivative at 0; identical images would otherwise produce NaN gradients
_EPS = 1e-12


def pairwise_rms(features: jax.Array) -> jax.Array:
    """``[N, ...]`` -> ``[N, N]`` RMS differences (0 on the diagonal)."""
    flat = features.reshape(features.shape[0], -1)
    diff = flat[:, None, :] - flat[None, :, :]
    return jnp.sqrt(jnp.mean(jnp.square(diff), axis=-1) + _EPS) * (1 - jnp.eye(flat.shape[0]))


def min_pair_rms(features: jax.Array) -> jax.Array:
    """``[N, ...]`` -> ``min_{i<j} d(f_i, f_j)``: ``min_pair(pairwise_rms(f))`` at a fraction of
    the cost, with the same gradient (away from exact ties).

    The minimum depends on one pair only, so the closest pair is picked without a gradient, from
    squared distances ``|f_i|^2 + |f_j|^2 - 2 f_i.f_j`` (one ``[N, D] x [D, N]`` product), and the
    distance and its gradient come from that pair's own difference. Differentiating the full
    ``[N, N, D]`` difference tensor instead took ~2 ms of a 15 ms optimiser step on VGG-19 conv3_1
    (2-core CPU). Pairs closer than float rounding of the squared distances (~1e-7 |f|^2) may be
    told apart wrongly; the value then differs from the exact minimum by no more than that.
    """
    n = features.shape[0]
    flat = features.reshape(n, -1)
    gram = jax.lax.stop_gradient(flat @ flat.T)
    norms = jnp.diag(gram)
    squared = jnp.where(pair_mask(n), norms[:, None] + norms[None, :] - 2 * gram, jnp.inf)
    i, j = jnp.divmod(jnp.argmin(squared), n)
    diff = flat[i] - flat[j]
    return jnp.sqrt(jnp.mean(jnp.square(diff)) + _EPS)


def pair_mask(n: int) -> jax.Array:
    return jnp.triu(jnp.ones((n, n), bool), k=1)


def min_pair(d: jax.Array) -> jax.Array:
    """Minimum over i < j of ``[N, N]``."""
    return jnp.min(jnp.where(pair_mask(d.shape[0]), d, jnp.inf))


def mean_pair(d: jax.Array) -> jax.Array:
    n = d.shape[0]
    return jnp.sum(jnp.where(pair_mask(n), d, 0.0)) / max(n * (n - 1) // 2, 1)


def gram(features: jax.Array) -> jax.Array:
    """``[N, h, w, C]`` -> ``[N, C, C]`` Gram matrices, averaged over positions."""
    n, h, w, c = features.shape
    f = features.reshape(n, h * w, c)
    return jnp.einsum("npc,npd->ncd", f, f) / (h * w)


def gram_similarity(features: jax.Array) -> jax.Array:
    """``[N, h, w, C]`` -> ``[N, N]`` cosine similarity of the images' Gram matrices."""
    g = gram(features).reshape(features.shape[0], -1)
    g = g / jnp.sqrt(jnp.sum(jnp.square(g), axis=-1, keepdims=True) + _EPS)
    return g @ g.T


def soft_log_min_pair_rms(features: jax.Array, sharpness: jax.Array | float) -> jax.Array:
    """``[N, ...]`` -> ``-(1/k) log sum_{i<j} exp(-k log d_ij)``, a smooth lower bound of
    ``log min_{i<j} d_ij`` (at most ``log(N(N-1)/2) / k`` below it), ``k`` the sharpness.

    What a floor objective maximises for the distance terms: the exact minimum moves one pair per
    step, and Adam then chatters between pairs (conv1_1, N = 6, alpha = 0.9: 95% of the analytic
    optimum after 600 steps, against 99.99% with this). Small ``k`` weighs all pairs nearly alike
    (a set spreads as a whole); the floor objective anneals ``k`` upwards
    (:class:`jaxvis.optimize.step.FloorSchedule`), and as ``k`` grows the maximiser tends to the
    max-min set (it is that set for every ``k`` when all its pairs are equally far apart, as the
    simplex on the cap's rim of docs/floor.md). The value reported is always the exact minimum.
    """
    d = pairwise_rms(features)
    log_d = jnp.where(pair_mask(features.shape[0]), jnp.log(d + _EPS), jnp.inf)
    return -jax.nn.logsumexp(-sharpness * log_d) / sharpness


def dissimilarity(features: jax.Array) -> jax.Array:
    """``[N, h, w, C]`` -> ``1 - mean_{i<j} cos(G_i, G_j)``: the Gram term as a diversity (>= 0)."""
    return 1.0 - mean_pair(gram_similarity(features))


def no_diversity(features: jax.Array) -> jax.Array:
    return jnp.zeros((), features.dtype)


SPACES = ("pixels", "features")


@dataclasses.dataclass(frozen=True)
class Term:
    """One diversity term.

    ``value``: feature maps ``[N, ...]`` -> scalar, larger = more diverse, >= 0 (the lambda
    objective adds ``-lam * value``). ``definition``: one line for docs and ``--help``.
    ``space``: ``"pixels"`` always measures the images themselves; ``"features"`` measures a lower
    layer's post-ReLU maps (``Objective.feature_layer``; pixels where the target has no layer
    below it). ``smooth_log(features, sharpness)``: what a floor objective maximises
    (:mod:`jaxvis.optimize.step`): a smooth stand-in for ``log value`` whose maximiser tends to
    ``value``'s as the annealed ``sharpness`` grows; ``None``: ``log value`` itself (fine for a term
    that is already smooth; the sharpness is then ignored).
    """

    value: Callable[[jax.Array], jax.Array]
    definition: str
    space: str = "features"
    smooth_log: Callable[[jax.Array, jax.Array], jax.Array] | None = None

    def log_value(self, features: jax.Array, sharpness: jax.Array | float) -> jax.Array:
        if self.smooth_log is not None:
            return self.smooth_log(features, sharpness)
        return jnp.log(self.value(features) + _EPS)


TERMS: dict[str, Term] = {
    "none": Term(no_diversity, "no diversity term (a single maximum, or N independent images)", "pixels"),
    "pixels": Term(min_pair_rms, "min over pairs of the RMS pixel difference (grey levels)", "pixels",
                   soft_log_min_pair_rms),
    "features": Term(min_pair_rms, "min over pairs of the RMS difference of a lower layer's post-ReLU maps",
                     "features", soft_log_min_pair_rms),
    "gram": Term(dissimilarity, "1 - mean over pairs of the cosine between a lower layer's Gram matrices"),
}


def register_term(name: str, value: Callable[[jax.Array], jax.Array], definition: str,
                  space: str = "features",
                  smooth_log: Callable[[jax.Array, jax.Array], jax.Array] | None = None) -> Term:
    """Add a diversity term to :data:`TERMS` under ``name`` (new names only: a compiled program
    is keyed by the name, so a name must always mean the same function)."""
    check_new_name("diversity term", name, TERMS, "a Python identifier (e.g. 'cosine')")
    if space not in SPACES:
        raise JaxvisError(f"diversity term space must be one of {', '.join(SPACES)}, not {space!r}")
    TERMS[name] = Term(value, definition, space, smooth_log)
    return TERMS[name]
