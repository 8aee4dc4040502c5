"""Naturalness priors that need no download (the paper's PixelCNN++ is not available offline).

Each prior maps one image set ``[N, H, W, 3]`` (deviation from the mean colour, grey levels) to a
scalar penalty per image, averaged over the set; its weight is ``beta``.

- ``tv``: total variation, mean absolute difference of neighbouring pixels (favours smooth images).
- ``spectrum``: squared deviation of the image's log amplitude spectrum from a 1/f law fitted to
  the image's own power, i.e. it penalises unnatural spectral slopes, not contrast.
- ``gmm``: a learned prior, the mean negative log-likelihood of the image's overlapping 6x6 colour
  patches under a Gaussian mixture that jaxvis trains on CC0 photographs (EPLL;
  :mod:`jaxvis.objectives.gmm`; trained and cached by :mod:`jaxvis.data.prior`). Its mixture is an
  argument of the compiled loss, as the network's weights are: the loop binds it (:func:`bound`)
  while the loss is traced and the penalty reads it (:func:`state`).

:data:`PRIORS` is the single name -> prior table (objective validation, optimiser step, CLI
choices). A new prior is one function ``[N, H, W, 3] -> scalar`` plus one :func:`register_prior`
call (``CONTRIBUTING.md``).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxvis.errors import JaxvisError, check_new_name
from jaxvis.objectives import gmm
from jaxvis.param.image import frequency_gain


def total_variation(x: jax.Array) -> jax.Array:
    dy = jnp.abs(x[:, 1:] - x[:, :-1]).mean(axis=(1, 2, 3))
    dx = jnp.abs(x[:, :, 1:] - x[:, :, :-1]).mean(axis=(1, 2, 3))
    return jnp.mean(dx + dy)


def spectrum(x: jax.Array) -> jax.Array:
    n, h, w, _ = x.shape
    amplitude = jnp.abs(jnp.fft.fft2(x, axes=(1, 2))).mean(-1)           # [N, h, w]
    target = jnp.asarray(frequency_gain(h, w) ** 2)                         # 1/|k| shape, mean 1
    log_a = jnp.log(amplitude + 1e-6)
    log_t = jnp.log(target)
    offset = jnp.mean(log_a - log_t, axis=(1, 2), keepdims=True)           # contrast-free fit
    return jnp.mean(jnp.square(log_a - log_t - offset))


def no_prior(x: jax.Array) -> jax.Array:
    return jnp.zeros((), x.dtype)


@dataclasses.dataclass(frozen=True)
class Prior:
    """One prior: ``penalty`` maps images ``[N, H, W, 3]`` (deviation from the mean colour, grey
    levels) to a scalar (the loss adds ``beta * penalty``); ``definition``: one line."""

    penalty: Callable[[jax.Array], jax.Array]
    definition: str


# a learned prior's arrays while a loss is traced (see bound)
_STATE: contextvars.ContextVar = contextvars.ContextVar("jaxvis_prior_state", default=None)


@contextlib.contextmanager
def bound(state: Any):
    """Within: :func:`state` returns ``state`` (a learned prior's arrays, e.g. the jit argument that
    carries the gmm mixture), so the penalty reads them as traced inputs, not as constants."""
    token = _STATE.set(state)
    try:
        yield
    finally:
        _STATE.reset(token)


def state() -> Any:
    """The learned prior's arrays bound by the caller (:func:`bound`)."""
    value = _STATE.get()
    if value is None:
        raise JaxvisError("a learned prior's arrays were not passed in (jaxvis.optimize.loop binds "
                          "them; outside the optimiser use jaxvis.data.prior.penalty)")
    return value


def _gmm(x: jax.Array) -> jax.Array:
    return gmm.penalty(x, state())


PRIORS: dict[str, Prior] = {
    "none": Prior(no_prior, "no prior"),
    "tv": Prior(total_variation, "total variation: mean |difference| of neighbouring pixels"),
    "spectrum": Prior(spectrum, "squared deviation of the log amplitude spectrum from a 1/f law"),
    "gmm": Prior(_gmm, "mean NLL (nats) of 6x6 colour patches under a Gaussian mixture trained "
                              "on CC0 photographs (EPLL; jaxvis prior train)"),
}


def register_prior(name: str, penalty: Callable[[jax.Array], jax.Array], definition: str) -> Prior:
    """Add a prior to :data:`PRIORS` under ``name`` (new names only: a compiled program is keyed
    by the name, so a name must always mean the same function)."""
    check_new_name("prior", name, PRIORS, "a Python identifier (e.g. 'smooth')")
    PRIORS[name] = Prior(penalty, definition)
    return PRIORS[name]
