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
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flax import nnx
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxvis.errors import JaxvisError
from jaxvis.models import ops
from jaxvis.models.base import Network
from jaxvis.models.convention import InputConvention
from jaxvis.optimize import parallel
from jaxvis.optimize.config import Optimizer
from jaxvis.optimize.loop import Batch, device_budget
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
    # offsets drawn at random (without replacement) for each step's loss and gradient; 0 or at
    # least len(offsets)^2: every offset every step. The responses are always measured on all.
    batch: int = 0
    # Adam's learning rate decays along a cosine to this share of it at the last step (1: constant)
    final_lr: float = 1.0
    # how the batch is drawn: "random" (any batch offsets, without replacement) or "grid" (n x n
    # offsets, n = isqrt(batch), evenly spaced per axis from a random phase, cyclically: every
    # offset is drawn as often, and every step covers the texture evenly)
    sampling: str = "random"  # grid: docs/method.md section 5 compares the two on real units

    def __post_init__(self):
        if self.batch < 0:
            raise JaxvisError(f"the shift test's batch of offsets must be 0 (all) or more, not {self.batch}")
        if self.sampling not in ("random", "grid"):
            raise JaxvisError(f"sampling must be 'random' or 'grid', not {self.sampling!r}")
        if not 0 <= self.final_lr <= 1:
            raise JaxvisError(f"final_lr must lie in [0, 1] (a share of the learning rate), not {self.final_lr}")

    @property
    def offsets(self) -> np.ndarray:
        return np.arange(0, self.canvas - 1, self.stride)

    @property
    def texture(self) -> int:
        return 2 * self.canvas - 1

    @property
    def drawn(self) -> int:
        """Crops per step: ``batch`` offsets, or all ``len(offsets)^2`` of them."""
        total = len(self.offsets) ** 2
        if self.batch == 0 or self.batch >= total:
            return total
        return max(1, math.isqrt(self.batch)) ** 2 if self.sampling == "grid" else self.batch


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


def crops(texture: jax.Array, problem: ShiftProblem, log_sigma: jax.Array, radius: jax.Array):
    """``[T, T, 3]`` texture -> (``[K, c, c, 3]`` masked crops at every offset with RMS norm
    ``radius``, the common scale applied to the texture)."""
    c, offsets = problem.canvas, problem.offsets
    rows, cols = (jnp.asarray(a.ravel()) for a in np.meshgrid(offsets, offsets, indexing="ij"))
    windows = _windows(texture, rows, cols, c)
    masked = windows * mask(c, jnp.exp(log_sigma), problem.q)[None, :, :, None]
    scale = radius / jnp.maximum(jnp.sqrt(jnp.mean(jnp.sum(jnp.square(masked), axis=(1, 2, 3)))), 1e-12)
    return scale * masked, scale


def _windows(texture: jax.Array, rows: jax.Array, cols: jax.Array, c: int) -> jax.Array:
    """``[K, c, c, 3]`` the texture's windows at offsets ``(rows[k], cols[k])``."""
    return jax.vmap(lambda i, j: jax.lax.dynamic_slice(texture, (i, j, 0), (c, c, 3)))(rows, cols)


def coverage(problem: ShiftProblem, log_sigma: jax.Array) -> jax.Array:
    """``[T, T]`` the mean over the test's windows of each texture pixel's squared mask weight
    (``Q``'s diagonal in the module docstring): the crops' mean squared norm is
    ``sum_p Q_p |T_p|^2``, so the common scale needs no crop at all."""
    grid = np.zeros((problem.offsets[-1] + 1,) * 2, np.float32)
    grid[np.ix_(problem.offsets, problem.offsets)] = 1.0 / len(problem.offsets) ** 2
    m2 = jnp.square(mask(problem.canvas, jnp.exp(log_sigma), problem.q))
    q = jax.scipy.signal.convolve2d(jnp.asarray(grid), m2, mode="full", precision=jax.lax.Precision.HIGHEST)
    pad = problem.texture - q.shape[0]
    return jnp.pad(q, ((0, pad), (0, pad)))


def drawn_crops(texture: jax.Array, problem: ShiftProblem, log_sigma: jax.Array, radius: jax.Array,
                key: jax.Array) -> jax.Array:
    """``[B, c, c, 3]`` the masked crops at ``problem.drawn`` offsets drawn with ``key`` as
    ``problem.sampling`` says (without replacement either way), at the common scale of all the test's crops (exact, from :func:`coverage`)."""
    c, offsets, s = problem.canvas, jnp.asarray(problem.offsets), len(problem.offsets)
    if problem.sampling == "grid":
        n = math.isqrt(problem.drawn)
        phase = jax.random.randint(key, (2,), 0, s)
        spaced = jnp.asarray(np.arange(n) * s // n)
        rows, cols = (phase[0] + spaced) % s, (phase[1] + spaced) % s
        rows, cols = jnp.repeat(rows, n), jnp.tile(cols, n)
    else:
        k = jax.random.choice(key, s * s, (problem.drawn,), replace=False)
        rows, cols = k // s, k % s
    windows = _windows(texture, offsets[rows], offsets[cols], c)
    masked = windows * mask(c, jnp.exp(log_sigma), problem.q)[None, :, :, None]
    mean_square = jnp.sum(coverage(problem, log_sigma)[..., None] * jnp.square(texture))
    return radius / jnp.maximum(jnp.sqrt(mean_square), 1e-12) * masked


def responses(params, net: Network, problem: ShiftProblem, direction, radius) -> jax.Array:
    """``[K]`` the unit's response to the masked crops at every offset (row-major ``[S, S]``)."""
    z, log_sigma = params
    x, _ = crops(whiten_gradient(z), problem, log_sigma, radius)
    return net.unit_response(network_input(problem, x), problem.target, problem.centre, direction)[0]


def _loss(params, net, problem, direction, radius, key):
    if problem.drawn == len(problem.offsets) ** 2:  # every offset: today's exact loss
        a = responses(params, net, problem, direction, radius)
    else:  # a random batch of offsets: the mean's gradient unbiased, the min's estimated on it
        z, log_sigma = params
        x = drawn_crops(whiten_gradient(z), problem, log_sigma, radius, key)
        a = net.unit_response(network_input(problem, x), problem.target, problem.centre, direction)[0]
    return -(1 - problem.weight_min) * jnp.mean(a) - problem.weight_min * jnp.min(a)


def _optimizer(problem: ShiftProblem) -> optax.GradientTransformation:
    o = problem.optimizer
    rate = o.learning_rate if problem.final_lr == 1 else \
        optax.cosine_decay_schedule(o.learning_rate, o.steps, alpha=problem.final_lr)
    adam = optax.adam(rate)
    if problem.learn_mask:
        return adam
    # the fixed mask: sigma's gradient is zeroed so only the texture moves
    return optax.chain(optax.masked(optax.set_to_zero(), (False, True)), optax.masked(adam, (True, False)))


def tiled_start(images: np.ndarray, mean_rgb, texture: int) -> np.ndarray:
    """``[U, c, c, 3]`` RGB images (the units' best images) -> ``[U, T, T, 3]`` each image minus
    ``mean_rgb`` repeated with period ``c`` over the texture: the crop at offset ``(i, j)`` starts
    as the best image shifted cyclically by ``(i, j)`` (offset 0: the best image itself)."""
    x = np.asarray(images, np.float32) - np.asarray(mean_rgb, np.float32)
    reps = -(-texture // x.shape[1])
    return np.tile(x, (1, reps, reps, 1))[:, :texture, :texture]


def _init(key, start, problem: ShiftProblem):
    """One unit's carry: (params, opt state, ema, best, since, done, steps, key). ``start``
    ``[T, T, 3]`` (scaled to unit RMS, as the white noise it replaces), or None: white noise."""
    shape = (problem.texture, problem.texture, 3)
    draw, key = jax.random.split(key)
    if start is None:
        z = jax.random.normal(draw, shape, jnp.float32)
    else:
        z = start / jnp.maximum(jnp.sqrt(jnp.mean(jnp.square(start))), 1e-12)
    params = (z, jnp.log(jnp.float32(problem.rf / 2.4)))
    inf = jnp.float32(jnp.inf)
    return (params, _optimizer(problem).init(params), inf, inf, jnp.int32(0), jnp.bool_(False), jnp.int32(0), key)


def _step(carry, net, problem: ShiftProblem, direction, radius):
    params, opt, ema, best, since, done, steps, key = carry
    draw = jax.random.fold_in(key, steps)
    loss, grad = jax.value_and_grad(_loss)(params, net, problem, direction, radius, draw)
    updates, new_opt = _optimizer(problem).update(grad, opt, params)
    new_params = optax.apply_updates(params, updates)
    o = problem.optimizer
    stop = early_stop(loss, ema, best, since, o.ema, o.patience)
    return freeze(done | (steps >= o.steps), carry, (new_params, new_opt, *stop, steps + 1, key))


@functools.partial(jax.jit, static_argnames=("problem", "mesh"))
def _start(keys, *, problem: ShiftProblem, mesh: Mesh):
    return parallel.per_device(jax.vmap(lambda k: _init(k, None, problem)), mesh, (ROWS,), ROWS)(keys)


@functools.partial(jax.jit, static_argnames=("problem", "mesh"))
def _start_from(keys, starts, *, problem: ShiftProblem, mesh: Mesh):
    return parallel.per_device(jax.vmap(lambda k, s: _init(k, s, problem)), mesh, (ROWS, ROWS), ROWS)(keys, starts)


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

        def one_unit(args):
            carry, direction = args
            (z, log_sigma), *_ = carry
            steps = carry[6]
            _, scale = crops(z, problem, log_sigma, radius)
            return {"responses": responses((z, log_sigma), net, problem, direction, radius),
                    "texture": scale * z + jnp.asarray(problem.mean_rgb, z.dtype),
                    "sigma": jnp.exp(log_sigma), "steps": steps}

        with ops.precision("float32"):  # what the texture really does; one unit at a time (memory)
            return jax.lax.map(one_unit, (carry, directions))

    return parallel.per_device(run, mesh, (SHARED, ROWS, ROWS, SHARED), ROWS)(params_net, carry, directions, radius)


def unit_bytes(network: Network, problem: ShiftProblem) -> int:
    """Rough memory one unit's optimisation needs: every activation up to the target for the
    ``problem.drawn`` crops of a step, kept for the backward pass (pre, post and gradient), plus
    the texture and Adam's two moments."""
    x = jax.ShapeDtypeStruct((problem.drawn, problem.canvas, problem.canvas, 3), jnp.float32)
    acts = jax.eval_shape(lambda x: network(x, upto=problem.target), x)
    activations = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(acts))
    return 4 * (3 * activations + 4 * problem.texture ** 2 * 3)


def units_per_chunk(network: Network, problem: ShiftProblem, device: jax.Device | None = None,
                    devices: int = 1) -> int:
    """Units per chunk, as the sweep sizes them (:func:`jaxvis.optimize.loop.device_budget`):
    what one device's budget holds, times ``devices``. The final measurement runs the units of a
    device one after the other (all ``len(offsets)^2`` crops of one unit, forward only), so it
    adds one unit's share whatever the chunk."""
    budget, cap = device_budget(device)
    return devices * max(1, min(cap, budget // max(unit_bytes(network, problem), 1)))


def shift_test(network: Network, problem: ShiftProblem, keys, directions, radius: float,
               mesh: Mesh | None = None, on_segment=None, starts=None) -> dict[str, np.ndarray]:
    """Run the test for ``U`` units, spread over ``mesh`` (default all local devices), segment by
    segment until every unit has stopped (early stopping as in the sweep) or reached the most
    steps. ``on_segment(steps)`` is called after each segment with ``[U]`` steps taken so far.
    ``starts``: ``[U, T, T, 3]`` start textures (deviation from the mean colour, any scale; e.g.
    :func:`tiled_start`), or None: white noise from ``keys``.

    Returns ``responses`` ``[U, S, S]`` (every offset, whatever ``problem.batch``), ``texture``
    ``[U, T, T, 3]`` (RGB grey levels, displayed at the crops' common scale), ``sigma`` ``[U]``,
    ``steps`` ``[U]``."""
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
    if starts is None:
        carry = _start(keys, problem=problem, mesh=mesh)
    else:
        t = problem.texture
        starts = np.asarray(starts, np.float32)
        if starts.shape != (count, t, t, 3):
            raise JaxvisError(f"shift test starts must be [units, texture, texture, 3] = [{count}, {t}, {t}, 3]; "
                              f"got shape {starts.shape}")
        carry = _start_from(keys, jax.device_put(parallel.pad_rows(starts, size), rows), problem=problem, mesh=mesh)
    o = problem.optimizer
    batch = Batch(mesh, carry, directions)  # units that stopped leave the batch (as the sweep's)
    for _ in range(-(-o.steps // o.segment)):
        carry, directions = batch.trees
        carry = _segment(params, carry, directions, radius, **jitted)
        done, now = jax.device_get((carry[5], carry[6]))
        finished = batch.advance((carry, directions), done | (now >= o.steps), now)
        if on_segment is not None:
            on_segment(batch.steps[:count].copy())
        if finished:
            break
    carry, directions = batch.whole()
    out = jax.device_get(_measure(params, carry, directions, radius, **jitted))
    out = {k: np.asarray(v)[:count] for k, v in out.items()}
    s = len(problem.offsets)
    out["responses"] = out["responses"].reshape(-1, s, s)
    return out


def measure(network: Network, problem: ShiftProblem, textures, directions, radius: float,
            mesh: Mesh | None = None) -> np.ndarray:
    """``[U, T, T, 3]`` textures (RGB grey levels, as :func:`shift_test` returns them) ->
    ``[U, S, S]`` the units' responses at every offset of ``problem``, at the common scale: how
    a stored texture does on another set of offsets (e.g. all of them)."""
    mesh = parallel.unit_mesh() if mesh is None else mesh
    count = len(directions)
    size = parallel.padded_count(count, mesh)
    rows, shared = parallel.unit_sharding(mesh), parallel.replicated(mesh)
    graphdef, params = nnx.split(network)
    starts = np.asarray(textures, np.float32) - np.asarray(problem.mean_rgb, np.float32)
    keys = jax.device_put(parallel.pad_rows(jax.random.split(jax.random.key(0), count), size), rows)
    carry = _start_from(keys, jax.device_put(parallel.pad_rows(starts, size), rows), problem=problem, mesh=mesh)
    out = _measure(jax.device_put(params, shared), carry,
                   jax.device_put(parallel.pad_rows(np.asarray(directions, np.float32), size), rows),
                   jax.device_put(np.float32(radius), shared), graphdef=graphdef, problem=problem, mesh=mesh)
    s = len(problem.offsets)
    return np.asarray(jax.device_get(out["responses"]))[:count].reshape(-1, s, s)
