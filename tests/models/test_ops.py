"""jaxvis's convolution op: patches + matmul equals XLA's convolution, and the reduced precisions
round what they should, by about what they should, and nothing when float32 is asked for."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxvis.errors import UnknownNameError
from jaxvis.models import ops
from tests.conftest import rel_err


def _inputs():
    x = jax.random.normal(jax.random.key(0), (2, 12, 12, 64))
    w = jax.random.normal(jax.random.key(1), (3, 3, 64, 32))
    return x, w


def _reference(x, w):
    """float64 numpy cross-correlation, VALID."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    h, wd = x.shape[1] - 2, x.shape[2] - 2
    return sum(np.einsum("bhwc,co->bhwo", x[:, i:i + h, j:j + wd], w[i, j]) for i in range(3) for j in range(3))


@pytest.mark.parametrize("impl", ops.IMPLS)
def test_both_implementations_match_a_float64_reference(impl):
    x, w = _inputs()
    assert rel_err(ops.conv2d(x, w, impl=impl), _reference(x, w)) < 1e-6
    g = jax.grad(lambda x: jnp.sum(jnp.sin(ops.conv2d(x, w, impl=impl))))(x)
    g_xla = jax.grad(lambda x: jnp.sum(jnp.sin(ops.conv2d(x, w, impl="xla"))))(x)
    assert rel_err(g, g_xla) < 1e-5


# relative error of one product of rounded operands: ~2^-(mantissa bits + 1), times sqrt(terms)
# cancellation; the bounds leave room either way but tell the three modes apart
BOUNDS = {"float32": (0.0, 1e-6), "tf32": (5e-5, 2e-3), "bf16": (5e-4, 1.5e-2)}


@pytest.mark.parametrize("name", ops.PRECISIONS)
@pytest.mark.parametrize("impl", ops.IMPLS)
def test_precision_rounds_the_operands_by_its_mantissa(name, impl):
    x, w = _inputs()
    ref = _reference(x, w)
    with ops.precision(name):  # traced inside: the jit cache keeps one program per precision
        y = jax.jit(lambda x, w: ops.conv2d(x, w, impl=impl))(x, w)
        conv = ops.Conv(64, 32, (3, 3), padding="VALID", use_bias=False, rngs=nnx.Rngs(0))
        conv.kernel.set_value(w)
        y_flax = conv(x)  # flax's layer (ResNet, EfficientNet) goes through the same rounding
    lo, hi = BOUNDS[name]
    for out in (y, y_flax):
        assert lo <= rel_err(out, ref) < hi, (name, rel_err(out, ref))
    y32 = jax.jit(lambda x, w: ops.conv2d(x, w, impl=impl))(x, w)  # outside: float32 again
    assert rel_err(y32, ref) < 1e-6


def test_unknown_precision_is_refused():
    with pytest.raises(UnknownNameError, match="valid: float32, tf32, bf16"):
        ops.precision("fp8")


def test_max_pool_gradient_goes_to_the_first_maximum_of_each_window():
    """Same values and gradient as XLA's reduce_window max pooling (select-and-scatter), including
    an odd last row/column and ties (windows of ReLU zeros): one element per window gets it all."""
    x = jax.random.normal(jax.random.key(0), (2, 7, 9, 5))
    g = jax.random.normal(jax.random.key(1), (2, 3, 4, 5))
    y, vjp = jax.vjp(ops.pool2x2, x)

    def reference(x):
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

    y_ref, vjp_ref = jax.vjp(reference, x)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(vjp(g)[0], vjp_ref(g)[0])
    ties = jax.grad(lambda x: ops.pool2x2(jax.nn.relu(x)).sum())(-jnp.ones((1, 4, 4, 1)))
    assert float(ties.sum()) == 0.0  # all-zero windows after a ReLU: nothing flows back
    zeros = jax.grad(lambda x: ops.pool2x2(x).sum())(jnp.zeros((1, 4, 4, 1)))[0, :, :, 0]
    np.testing.assert_array_equal(zeros, [[1, 0, 1, 0], [0, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
