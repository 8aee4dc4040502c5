"""What a unit's response to an image is: a pure function of the target layer's activations.

A unit is a direction ``v`` ``[C]`` in the target layer's channel space (a channel: one-hot).
Its response to each of one unit's N images is ``value(pre, v)``, ``pre`` ``[N, h, w, C]`` the
target layer's pre-activations (before its own nonlinearity) on the whole canvas:

- ``centre`` (the paper's, the default): ``pre[:, h // 2, w // 2, :] @ v``, the unit at the centre
  of the layer's canvas (the receptive field; ``jaxvis/models/geometry.py``). The step computes it
  through the network's centre-unit path (``Network.unit_response``), which reads out only the
  direction where the network can (VGG).
- ``channel``: ``mean_{y, x} pre[:, y, x, :] @ v``, the spatial mean of the direction over the
  layer's whole output: lucid's channel objective, meant for a canvas larger than the receptive
  field (``Objective.canvas``).

:data:`RESPONSES` is the single name -> response table (objective validation, the optimiser step,
the CLI's ``--response`` choices). A new one is one pure jax function ``(pre [N, h, w, C],
direction [C]) -> [N]`` (traced inside the jitted step, vmapped over units) plus one
:func:`register_response` call; results files record it by name, so reading a file made with it
needs the same registration first.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from jaxvis.errors import JaxvisError, check_new_name, unknown


def centre_response(pre: jax.Array, direction: jax.Array) -> jax.Array:
    """``[N, h, w, C]``, ``[C]`` -> ``[N]``: the direction at the centre position."""
    return pre[:, pre.shape[1] // 2, pre.shape[2] // 2, :] @ direction


def channel_mean(pre: jax.Array, direction: jax.Array) -> jax.Array:
    """``[N, h, w, C]``, ``[C]`` -> ``[N]``: the direction's spatial mean over the whole output."""
    return jnp.mean(pre @ direction, axis=(1, 2))


@dataclasses.dataclass(frozen=True)
class Response:
    """One response: ``value(pre [N, h, w, C], direction [C]) -> [N]`` (larger = drives the unit
    more); ``definition``: one line for docs and ``--help``. ``centre``: it reads the centre
    position only, so the step may take the network's centre-unit path (same value, cheaper)."""

    value: Callable[[jax.Array, jax.Array], jax.Array]
    definition: str
    centre: bool = False


RESPONSES: dict[str, Response] = {
    "centre": Response(centre_response, "the direction at the centre position of the layer's output "
                                        "(the paper's unit)", centre=True),
    "channel": Response(channel_mean, "the direction's spatial mean over the layer's whole output "
                                      "(lucid's channel objective; with --canvas)"),
}


def register_response(name: str, value: Callable[[jax.Array, jax.Array], jax.Array],
                      definition: str) -> Response:
    """Add a response to :data:`RESPONSES` under ``name`` (new names only: compiled programs and
    results files are keyed by the name, so a name must always mean the same function)."""
    check_new_name("response", name, RESPONSES, "a Python identifier (e.g. 'top_left')")
    RESPONSES[name] = Response(value, definition)
    return RESPONSES[name]


def unknown_response(name: str) -> JaxvisError:
    """The one line for a response name that is not registered (a typo, or a results file made
    with a user's own response in another process)."""
    return unknown("response", name, RESPONSES, "a response of your own must be registered first: "
                   f"jaxvis.objectives.response.register_response({name!r}, fn, definition)")
