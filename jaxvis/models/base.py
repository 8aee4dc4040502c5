"""What every jaxvis network shares: named activations, early exit, and its layer catalogue.

A network maps ``[B, H, W, 3]`` images (already in its input convention) to the activations of
every named layer, before and after the layer's nonlinearity, so any layer can be an
optimisation target (``pre``) or a feature space (``post``). With ``upto=`` the forward pass stops
at that layer: nothing above it is computed. With ``readout=`` (a direction in the last layer's
channel space) a network that can (``reads_out``) computes only that one direction in the last
layer: for a convolution ``pre . v = conv(x, K v) + b . v``, one output channel instead of C.
"""

from __future__ import annotations

import functools
import weakref
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvis.errors import JaxvisError, unknown
from jaxvis.models.geometry import LayerInfo, LayerSpec, catalogue, trace

_CHECKED: "weakref.WeakKeyDictionary[Network, set[str]]" = weakref.WeakKeyDictionary()


class Activations(NamedTuple):
    """``pre[name]``: the layer's output before its own nonlinearity (equal to ``post`` for layers
    without one: pools, linear bottlenecks, logits); ``post[name]``: after it. Each ``[B, h, w, C]``."""

    pre: dict[str, jax.Array]
    post: dict[str, jax.Array]


class _Reached(Exception):
    """Raised (at trace time) once the requested last layer is recorded: skips the rest."""


class Recorder:
    """Collects activations during a forward pass and stops it after layer ``upto``."""

    def __init__(self, upto: str | None, readout: jax.Array | None = None):
        self.upto, self.direction = upto, readout
        self.pre: dict[str, jax.Array] = {}
        self.post: dict[str, jax.Array] = {}

    def __call__(self, name: str, pre: jax.Array, post: jax.Array | None = None) -> jax.Array:
        """Record ``name`` and return ``post`` (or ``pre``) so calls chain inside a forward pass."""
        post = pre if post is None else post
        self.pre[name], self.post[name] = pre, post
        if name == self.upto:
            raise _Reached
        return post

    def readout(self, name: str) -> jax.Array | None:
        """The direction ``[C]`` layer ``name`` should be projected on, if it is the last one."""
        return self.direction if name == self.upto else None


class Network(nnx.Module):
    """Base class. Subclasses implement ``specs()`` (geometry) and ``forward(x, record)``.

    ``specs()`` returns one :class:`~jaxvis.models.geometry.LayerSpec` per named layer, in forward
    order: its ``name``, its output ``channels``, the spatial ``ops`` since the previous named layer
    (:class:`~jaxvis.models.geometry.Op`: kernel, stride, padding ``int`` / ``"VALID"`` /
    ``"SAME"``; a layer with no spatial op, e.g. a ReLU'd 1x1 block output, has ``ops=()``) and its
    ``kind`` (``conv``, ``pool``, ``block``, ``fc``, ``global`` after a global pool). The catalogue
    (receptive fields, canvases) is computed from them, so they must describe the network exactly:
    :meth:`check` compares them with the real output shapes once, when a layer is first optimised.
    ``forward(x, record)`` calls ``record(name, pre, post)`` for every declared layer in order.
    """

    name: str = "network"

    def specs(self) -> tuple[LayerSpec, ...]:
        raise NotImplementedError

    def forward(self, x: jax.Array, record: Recorder) -> None:
        raise NotImplementedError

    def reads_out(self, layer: str) -> bool:
        """Whether ``layer`` can compute a single direction itself (``readout=``). Default: no."""
        return False

    def layers(self) -> tuple[LayerInfo, ...]:
        return _catalogue(self.specs())

    def check(self, name: str) -> None:
        """Compare ``specs()`` with the network's real output shapes at ``name``'s canvas (once
        per network and layer; abstract evaluation, nothing is computed): every layer up to
        ``name`` must have its declared channels and the output size its declared ops give.
        Raises a one-line error naming the first layer that disagrees."""
        done = _CHECKED.setdefault(self, set())
        if name in done:
            return
        info = self.layer(name)
        canvas = info.canvas
        graphdef, state = nnx.split(self)  # weights as arguments: abstract ones work too
        try:
            shapes = jax.eval_shape(lambda st, x: nnx.merge(graphdef, st)(x, upto=name).pre, state,
                                    jax.ShapeDtypeStruct((1, canvas, canvas, 3), jnp.float32))
        except Exception as err:  # noqa: BLE001 - any failure of a user's forward is reported as such
            raise JaxvisError(f"{self.name}: the forward pass fails on the {canvas} px canvas that "
                              f"specs() gives layer {name!r} ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:200]}); check specs() against forward()") from None
        ops, kinds = [], {row.name: row.kind for row in self.layers()}
        for spec in self.specs():
            ops.extend(spec.ops)
            if spec.name not in shapes:
                raise JaxvisError(f"{self.name}: layer {spec.name!r} of specs() is not recorded by "
                                  "forward() (each declared layer must call record(name, pre, post) in order)")
            shape = shapes[spec.name].shape
            expected = 1 if kinds[spec.name] == "global" else trace(ops, canvas)[0]
            if shape[-1] != spec.channels:
                raise JaxvisError(f"{self.name}: layer {spec.name!r} has {shape[-1]} channels, specs() "
                                  f"declares {spec.channels}; fix its LayerSpec")
            if len(shape) == 4 and (shape[1], shape[2]) != (expected, expected):
                raise JaxvisError(f"{self.name}: layer {spec.name!r} is {shape[1]}x{shape[2]} on a "
                                  f"{canvas} px input, but its declared ops give {expected}x{expected}; "
                                  "fix the kernel/stride/padding of its LayerSpec ops")
            if spec.name == name:
                break
        done.add(name)

    def layer(self, name: str) -> LayerInfo:
        for info in self.layers():
            if info.name == name:
                return info
        raise unknown(f"layer of {self.name}", name, [i.name for i in self.layers()])

    def __call__(self, x: jax.Array, upto: str | None = None,
                 readout: jax.Array | None = None) -> Activations:
        """Activations of images ``x`` ``[B, H, W, 3]``. ``readout`` ``[C]`` (needs ``upto`` and
        ``reads_out(upto)``): ``pre[upto]`` is then ``[B, h, w, 1]``, the projection on it."""
        if upto is not None:
            self.layer(upto)  # an unknown name must fail, not silently run the whole network
        if readout is not None and (upto is None or not self.reads_out(upto)):
            raise ValueError(f"{self.name} cannot read out a direction at layer {upto!r}")
        record = Recorder(upto, readout)
        try:
            self.forward(x, record)
        except _Reached:
            pass
        return Activations(record.pre, record.post)

    def unit_response(self, x: jax.Array, layer: str, centre: int, direction: jax.Array):
        """(``[B]`` pre-activation of the unit ``direction`` ``[C]`` at position (centre, centre) of
        ``layer``, the activations up to ``layer``). Where the network ``reads_out`` the layer, only
        that direction is computed there (on VGG-19 conv3_1 this skips a ``[N, 1152] x [1152, 256]``
        product and its gradient every optimiser step); otherwise all C channels, then ``@ direction``.
        """
        if self.reads_out(layer):
            acts = self(x, upto=layer, readout=direction)
            return acts.pre[layer][:, centre, centre, 0], acts
        acts = self(x, upto=layer)
        return acts.pre[layer][:, centre, centre, :] @ direction, acts


@functools.lru_cache(maxsize=None)
def _catalogue(specs: tuple[LayerSpec, ...]) -> tuple[LayerInfo, ...]:
    return catalogue(specs)
