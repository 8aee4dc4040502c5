"""Diversity of a set of N images: how different they are, in pixels, features or Gram matrices.

- **Distance** (the paper): ``d(u, v) = sqrt(mean((u - v)^2))`` over all elements of the images
  (pixel space) or of their post-ReLU feature maps at a lower layer. Only the *minimum* over the
  N(N-1)/2 pairs enters the loss (pushing apart the closest pair); the mean is reported.
- **Gram** (Olah et al. 2017): the cosine similarity between the images' Gram matrices of a lower
  layer's feature maps (texture statistics, blind to position); the loss penalises the mean
  pairwise similarity.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# sqrt has an infinite derivative at 0; identical images would otherwise produce NaN gradients
_EPS = 1e-12


def pairwise_rms(features: jax.Array) -> jax.Array:
    """``[N, ...]`` -> ``[N, N]`` RMS differences (0 on the diagonal)."""
    flat = features.reshape(features.shape[0], -1)
    diff = flat[:, None, :] - flat[None, :, :]
    return jnp.sqrt(jnp.mean(jnp.square(diff), axis=-1) + _EPS) * (1 - jnp.eye(flat.shape[0]))


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
