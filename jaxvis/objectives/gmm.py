"""A learned naturalness prior: a Gaussian mixture of small natural colour patches (EPLL-style).

Zoran & Weiss 2011 (*From learning models of natural image patches to whole image restoration*):
model every ``p x p`` patch of an image, its per-patch DC removed, by a zero-mean Gaussian mixture
with full covariances; an image's cost is the mean negative log-likelihood over its overlapping
patches. This module is the model and its pure penalty; the mixture is fitted by EM on the CC0
photographs jaxvis fetches through pip, cached and checksummed by :mod:`jaxvis.data.prior`, and
reaches the compiled loss as an argument (:func:`arrays`, bound by the loop:
:func:`jaxvis.objectives.naturalness.bound`).

Patches: ``p x p x 3`` grey levels (the same units as the sweep's images), flattened row, column,
channel; the DC of each channel is removed by projecting onto the orthonormal 2-D DCT basis
without its constant vector (:func:`basis`, ``d = 3 (p^2 - 1)`` coefficients). No contrast
normalisation: the density is of patches at their own contrast, since on the sweep's sphere an
image's total contrast is fixed and the prior can only move contrast around (into smooth, sparse,
low-chroma structure, as natural images hold it), not lower it. Pixels are dequantised (uniform
noise of one grey level) before fitting, so the likelihood is bounded and EM is plain maximum
likelihood, monotone by construction.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxvis.errors import JaxvisError

PATCH = 6                 # patch side in pixels
COMPONENTS = 16           # mixture components


def basis(patch: int) -> np.ndarray:
    """``[p*p*3, 3*(p*p-1)]`` orthonormal columns spanning the patches whose every channel has
    zero mean: the 2-D DCT-II basis of each channel without its constant vector."""
    k, n = np.arange(patch)[:, None], np.arange(patch)[None, :]
    dct = np.cos(np.pi * (n + 0.5) * k / patch) * np.sqrt(2.0 / patch)
    dct[0] /= np.sqrt(2.0)                                          # [p, p] orthonormal rows
    two_d = np.einsum("ua,vb->uvab", dct, dct).reshape(patch * patch, patch * patch)[1:]  # [p²-1, p²]
    out = np.zeros((patch, patch, 3, 3, patch * patch - 1))
    for c in range(3):
        out[:, :, c, c, :] = two_d.T.reshape(patch, patch, -1)
    return out.reshape(patch * patch * 3, 3 * (patch * patch - 1))


@dataclasses.dataclass(frozen=True)
class Mixture:
    """A zero-mean Gaussian mixture over DC-free patch coefficients: ``log_weights`` ``[K]``,
    ``covariances`` ``[K, d, d]`` (grey levels squared), ``patch`` the side ``p``
    (``d = 3 (p^2 - 1)``)."""

    log_weights: np.ndarray
    covariances: np.ndarray
    patch: int

    @property
    def components(self) -> int:
        return len(self.log_weights)

    def check(self) -> "Mixture":
        k, d = len(self.log_weights), 3 * (self.patch ** 2 - 1)
        if self.covariances.shape != (k, d, d):
            raise JaxvisError(f"a {self.patch}x{self.patch} gmm prior needs covariances [{k}, {d}, {d}], "
                              f"got {list(self.covariances.shape)}; retrain it with train(overwrite)")
        return self

    def whitening(self) -> tuple[np.ndarray, np.ndarray]:
        """(``[K, d, d]`` matrices ``A_k`` with ``A_k^T A_k = Sigma_k^-1``, ``[K]`` constants
        ``log pi_k - log|Sigma_k| / 2 - d log(2 pi) / 2``)."""
        chol = np.linalg.cholesky(self.covariances)                  # Sigma = L L^T
        inv = np.linalg.inv(chol)                                    # A = L^-1
        d = self.covariances.shape[-1]
        logdet = 2 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(-1)
        return inv, self.log_weights - 0.5 * logdet - 0.5 * d * np.log(2 * np.pi)


def log_joint(y: np.ndarray, mixture: Mixture) -> np.ndarray:
    """``[n, K]`` log(pi_k N(y | 0, Sigma_k)) of coefficients ``y`` ``[n, d]`` (the big products
    in ``y``'s dtype, the rest in float64)."""
    inv, const = mixture.whitening()
    inv = inv.astype(y.dtype)
    return np.stack([const[k] - 0.5 * np.square(y @ inv[k].T).sum(-1, dtype=np.float64)
                     for k in range(len(inv))], 1)


def logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    top = a.max(axis=axis, keepdims=True)
    return (top + np.log(np.exp(a - top).sum(axis=axis, keepdims=True))).squeeze(axis)


def log_likelihood(y: np.ndarray, mixture: Mixture) -> np.ndarray:
    """``[n]`` log-density (nats) of DC-free coefficients ``y`` ``[n, d]``."""
    return logsumexp(log_joint(y, mixture), 1)


# -- the prior in jax ----------------------------------------------------------------------------

def patch_coefficients(x: jax.Array, patch: int, stride: int = 1) -> jax.Array:
    """DC-free coefficients ``[N, h, w, d]`` of every ``patch``-sized patch (at ``stride``) of
    images ``x`` ``[N, H, W, 3]``: one VALID convolution with the :func:`basis` filters."""
    if min(x.shape[1:3]) < patch:
        raise JaxvisError(f"the gmm prior scores {patch}x{patch} patches; these images are "
                          f"{x.shape[1]}x{x.shape[2]} px (set Objective.prior to tv or spectrum for smaller canvases)")
    kernel = jnp.asarray(basis(patch).reshape(patch, patch, 3, -1), x.dtype)
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), "VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        precision=jax.lax.Precision.HIGHEST)


def patch_nll(x: jax.Array, mixture: Mixture, stride: int = 1) -> jax.Array:
    """``[N, h, w]`` negative log-likelihood (nats) of every patch of images ``x`` ``[N, H, W, 3]``
    (grey levels; any constant colour offset is irrelevant, the DC is removed)."""
    inv, const = mixture.whitening()
    return whitened_nll(x, inv, const, mixture.patch, stride)



def arrays(mixture: Mixture) -> dict[str, np.ndarray]:
    """What the compiled loss takes as an argument (like the network's weights, never baked in as
    constants): the whitening matrices ``inv`` ``[K, d, d]`` and constants ``const`` ``[K]``."""
    inv, const = mixture.whitening()
    return {"inv": inv.astype(np.float32), "const": const.astype(np.float32)}


def whitened_nll(x: jax.Array, inv: jax.Array, const: jax.Array, patch: int, stride: int = 1) -> jax.Array:
    """:func:`patch_nll` from the mixture's :func:`arrays`."""
    y = patch_coefficients(x, patch, stride)                                    # [N, h, w, d]

    @jax.checkpoint  # the backward pass keeps y and q, never the K whitened copies of y
    def quadratic(a):                                                           # [d, d] -> [N, h, w]
        z = jnp.einsum("nhwd,ed->nhwe", y, a, precision=jax.lax.Precision.HIGHEST)
        return jnp.sum(jnp.square(z), -1)

    q = jax.lax.map(quadratic, jnp.asarray(inv, x.dtype))                       # [K, N, h, w]
    joint = jnp.asarray(const, x.dtype) - 0.5 * jnp.moveaxis(q, 0, -1)          # [N, h, w, K]
    return -jax.nn.logsumexp(joint, axis=-1)


def penalty(x: jax.Array, state: dict) -> jax.Array:
    """The ``gmm`` prior: images ``[N, H, W, 3]`` (deviation from the mean colour, grey levels) ->
    the mean NLL (nats) over all their overlapping patches under the mixture whose :func:`arrays`
    are ``state``."""
    d = state["inv"].shape[-1]
    patch = int(round((d // 3 + 1) ** 0.5))
    return whitened_nll(x, state["inv"], state["const"], patch).mean()
