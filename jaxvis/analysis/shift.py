"""The shift / phase-invariance test (Cadena et al. 2018, section 3.3).

For a unit with canvas ``c`` (its receptive field on the VGG canvas), optimise one texture ``T`` of
size ``(2c - 1)^2`` so that every masked crop ``T[i:i+c, j:j+c] * M``, at offsets ``i, j`` in
``0..c-2``, drives the unit. ``M = exp(-(r / sigma)^q)`` with ``r`` the Euclidean distance from the
crop centre, ``q = 4`` and ``sigma = rf / 2.4`` (fixed, or learnt per unit with ``learn_mask``).
One common scale makes the RMS norm of the masked crops equal the unit's contrast budget, so the
crops are comparable to the sweep's images. Loss: ``-(1 - w) * mean_k a_k - w * min_k a_k``.

**Shift-invariance index** (used everywhere in jaxvis): the mean response over all offsets divided
by the unit's single-image maximum at the same norm (the sweep's ``max_activation``). A unit that
keeps its response under every shift of its preferred pattern (a complex cell: phase invariance)
scores near 1; a linear unit followed by ReLU cannot, since shifting a grating through its filter
flips the sign of the response.

**Linear reference** (:func:`linear_reference`; docs/invariance.md section 5): what an affine unit ``a(x) = w . x + b``
scores on the same test, in closed form. The crops are linear maps of the texture, ``c_k = B_k T``
(window ``k`` times the mask), so the mean response is ``b + g . T`` with ``g = mean_k B_k^T w``,
and the common scale fixes ``T^T Q T = r^2`` with ``Q = mean_k B_k^T B_k`` (diagonal: each texture
pixel's squared mask weights summed over the windows that cover it). By Cauchy-Schwarz the best
texture gives ``b + r sqrt(g^T Q^-1 g)``; over the unit's maximum ``r ||w|| + b`` that is the
affine unit's best index (:func:`jaxvis.analysis.readout.shift_reference`). With ``w`` the unit's
own best image (the affine unit whose maximum is the unit's; exactly the unit for a linear layer
such as VGG-19's conv1_1), a unit is shift-invariant only well above it. A kernel that is mostly
uniform colour (``uniform_colour_share``) scores near 1: crops of a flat texture are all alike, so
the test cannot tell position invariance from linearity there.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flax import nnx
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxvis.models import ops
from jaxvis.models.base import Network
from jaxvis.models.convention import InputConvention
from jaxvis.optimize import parallel
from jaxvis.optimize.config import Optimizer
from jaxvis.optimize.step import early_stop, freeze, network_input
from jaxvis.param.image import whiten_gradient

ROWS, SHARED = P(parallel.UNITS), P()


@dataclasses.dataclass(frozen=True)
class ShiftProblem:
    target: str
    centre: int
    canvas: int
    rf: int
    convention: InputConvention
    mean_rgb: tuple[float, float, float]
    stride: int = 1           # offsets 0, stride, 2*stride, ... < canvas - 1 (1: all of them)
    weight_min: float = 0.5   # w: the share of the worst offset in the loss
    q: float = 4.0
    learn_mask: bool = False
    # Adam on the texture, early stopping (EMA, patience) and segment length, as in the sweep
    optimizer: Optimizer = Optimizer(steps=1000, learning_rate=1.0)

    @property
    def offsets(self) -> np.ndarray:
        return np.arange(0, self.canvas - 1, self.stride)

    @property
    def texture(self) -> int:
        return 2 * self.canvas - 1


def mask(canvas: int, sigma: jax.Array, q: float) -> jax.Array:
    """``[canvas, canvas]`` soft aperture ``exp(-(r / sigma)^q)`` around the crop centre."""
    y, x = np.mgrid[:canvas, :canvas] - (canvas - 1) / 2
    r = jnp.asarray(np.sqrt(y ** 2 + x ** 2), jnp.float32)
    return jnp.exp(-((r / sigma) ** q))


def linear_reference(kernels: np.ndarray, problem: ShiftProblem, sigma=None) -> np.ndarray:
    """``[U, c, c, 3]`` kernels (any scale; the units' best images minus the mean colour) ->
    ``[U]`` ``rho = sqrt(g^T Q^-1 g)`` for unit-norm ``w`` (module docstring): the best mean of
    ``w . crop / (r ||w||)`` over the test's crops of any texture, in [0, 1]. ``sigma`` ``[U]`` the
    learnt mask radii (None: the problem's fixed ``rf / 2.4``)."""
    w = np.asarray(kernels, np.float64)
    w = w / np.maximum(np.linalg.norm(w.reshape(len(w), -1), axis=1), 1e-300)[:, None, None, None]
    c, t, offsets = problem.canvas, problem.texture, problem.offsets
    sigma = np.full(len(w), problem.rf / 2.4) if sigma is None else np.asarray(sigma, np.float64)
    masks = np.stack([np.asarray(mask(c, jnp.float32(s), problem.q), np.float64) for s in sigma])  # [U, c, c]
    g, q = np.zeros((len(w), t, t, 3)), np.zeros((len(w), t, t))
    for i in offsets:
        for j in offsets:
            g[:, i:i + c, j:j + c] += masks[..., None] * w
            q[:, i:i + c, j:j + c] += masks ** 2
    g, q = g / len(offsets) ** 2, q / len(offsets) ** 2  # means over the windows
    covered = q > 0
    return np.sqrt(np.sum(np.where(covered[..., None], g ** 2 / np.where(covered, q, 1.0)[..., None], 0.0),
                          axis=(1, 2, 3)))


def uniform_colour_share(images: np.ndarray, mean_rgb) -> np.ndarray:
    """``[U, c, c, 3]`` RGB images -> ``[U]`` the share of each image's energy (deviation from
    ``mean_rgb``) in its spatially uniform colour, ``c^2 |mean_xy x|^2 / |x|^2`` (1: a flat colour)."""
    x = np.asarray(images, np.float64) - np.asarray(mean_rgb, np.float64)
    flat = np.square(x.mean(axis=(1, 2))).sum(-1) * x.shape[1] * x.shape[2]
    total = np.square(x).sum(axis=(1, 2, 3))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, flat / np.where(total > 0, total, 1.0), np.nan)


def crops(texture: jax.Array, problem: ShiftProblem, log_sigma: jax.Array, radius: jax.Array):
    """``[T, T, 3]`` texture -> (``[K, c, c, 3]`` masked crops at every offset with RMS norm
    ``radius``, the common scale applied to the texture)."""
    c, offsets = problem.canvas, problem.offsets
    windows = jnp.stack([texture[i:i + c, j:j + c] for i in offsets for j in offsets])
    masked = windows * mask(c, jnp.exp(log_sigma), problem.q)[None, :, :, None]
    scale = radius / jnp.maximum(jnp.sqrt(jnp.mean(jnp.sum(jnp.square(masked), axis=(1, 2, 3)))), 1e-12)
    return scale * masked, scale


def responses(params, net: Network, problem: ShiftProblem, direction, radius) -> jax.Array:
    z, log_sigma = params
    x, _ = crops(whiten_gradient(z), problem, log_sigma, radius)
    return net.unit_response(network_input(problem, x), problem.target, problem.centre, direction)[0]


def _loss(params, net, problem, direction, radius):
    a = responses(params, net, problem, direction, radius)
    return -(1 - problem.weight_min) * jnp.mean(a) - problem.weight_min * jnp.min(a)


def _optimizer(problem: ShiftProblem) -> optax.GradientTransformation:
    adam = optax.adam(problem.optimizer.learning_rate)
    if problem.learn_mask:
        return adam
    # the fixed mask: sigma's gradient is zeroed so only the texture moves
    return optax.chain(optax.masked(optax.set_to_zero(), (False, True)), optax.masked(adam, (True, False)))


def _init(key, problem: ShiftProblem):
    """One unit's carry: (params, opt state, ema, best, since, done, steps)."""
    z = jax.random.normal(key, (problem.texture, problem.texture, 3), jnp.float32)
    params = (z, jnp.log(jnp.float32(problem.rf / 2.4)))
    inf = jnp.float32(jnp.inf)
    return (params, _optimizer(problem).init(params), inf, inf, jnp.int32(0), jnp.bool_(False), jnp.int32(0))


def _step(carry, net, problem: ShiftProblem, direction, radius):
    params, opt, ema, best, since, done, steps = carry
    loss, grad = jax.value_and_grad(_loss)(params, net, problem, direction, radius)
    updates, new_opt = _optimizer(problem).update(grad, opt, params)
    new_params = optax.apply_updates(params, updates)
    o = problem.optimizer
    stop = early_stop(loss, ema, best, since, o.ema, o.patience)
    return freeze(done | (steps >= o.steps), carry, (new_params, new_opt, *stop, steps + 1))


@functools.partial(jax.jit, static_argnames=("problem", "mesh"))
def _start(keys, *, problem: ShiftProblem, mesh: Mesh):
    return parallel.per_device(jax.vmap(lambda k: _init(k, problem)), mesh, (ROWS,), ROWS)(keys)


@functools.partial(jax.jit, static_argnames=("graphdef", "problem", "mesh"), donate_argnames=("carry",))
def _segment(params_net, carry, directions, radius, *, graphdef, problem: ShiftProblem, mesh: Mesh):
    def run(params_net, carry, directions, radius):  # one device, its own units
        net = nnx.merge(graphdef, params_net)
        batched = jax.vmap(lambda c, d: _step(c, net, problem, d, radius))
        with ops.precision(problem.optimizer.precision):
            carry, _ = jax.lax.scan(lambda c, _: (batched(c, directions), None), carry, None,
                                    length=problem.optimizer.segment)
        return carry

    return parallel.per_device(run, mesh, (SHARED, ROWS, ROWS, SHARED), ROWS)(params_net, carry, directions, radius)


@functools.partial(jax.jit, static_argnames=("graphdef", "problem", "mesh"))
def _measure(params_net, carry, directions, radius, *, graphdef, problem: ShiftProblem, mesh: Mesh):
    def run(params_net, carry, directions, radius):
        net = nnx.merge(graphdef, params_net)

        def one_unit(carry, direction):
            (z, log_sigma), *_, steps = carry
            _, scale = crops(z, problem, log_sigma, radius)
            return {"responses": responses((z, log_sigma), net, problem, direction, radius),
                    "texture": scale * z + jnp.asarray(problem.mean_rgb, z.dtype),
                    "sigma": jnp.exp(log_sigma), "steps": steps}

        with ops.precision("float32"):  # what the texture really does
            return jax.vmap(one_unit)(carry, directions)

    return parallel.per_device(run, mesh, (SHARED, ROWS, ROWS, SHARED), ROWS)(params_net, carry, directions, radius)


def shift_test(network: Network, problem: ShiftProblem, keys, directions, radius: float,
               mesh: Mesh | None = None, on_segment=None) -> dict[str, np.ndarray]:
    """Run the test for ``U`` units, spread over ``mesh`` (default all local devices), segment by
    segment until every unit has stopped (early stopping as in the sweep) or reached the most
    steps. ``on_segment(steps)`` is called after each segment with ``[U]`` steps taken so far.

    Returns ``responses`` ``[U, S, S]``, ``texture`` ``[U, T, T, 3]`` (RGB grey levels, displayed at
    the crops' common scale), ``sigma`` ``[U]``, ``steps`` ``[U]``."""
    mesh = parallel.unit_mesh() if mesh is None else mesh
    count = len(directions)
    size = parallel.padded_count(count, mesh)
    rows, shared = parallel.unit_sharding(mesh), parallel.replicated(mesh)
    graphdef, params = nnx.split(network)
    params = jax.device_put(params, shared)
    keys = jax.device_put(parallel.pad_rows(keys, size), rows)
    directions = jax.device_put(parallel.pad_rows(np.asarray(directions, np.float32), size), rows)
    radius = jax.device_put(np.float32(radius), shared)
    jitted = dict(graphdef=graphdef, problem=problem, mesh=mesh)
    carry = _start(keys, problem=problem, mesh=mesh)
    o = problem.optimizer
    for _ in range(-(-o.steps // o.segment)):
        carry = _segment(params, carry, directions, radius, **jitted)
        done, steps = jax.device_get((carry[5], carry[6]))
        if on_segment is not None:
            on_segment(np.asarray(steps[:count]))
        if (done | (steps >= o.steps)).all():
            break
    out = jax.device_get(_measure(params, carry, directions, radius, **jitted))
    out = {k: np.asarray(v)[:count] for k, v in out.items()}
    s = len(problem.offsets)
    out["responses"] = out["responses"].reshape(-1, s, s)
    return out
