"""Convolution and pooling for small canvases, written so their gradients are cheap on every backend.

The optimisation needs the gradient with respect to the *input* through every layer below the
target, on tiny receptive-field canvases (3 to ~250 px). On CPU, XLA's generic convolution is
several times slower when its output must be kept for the backward pass, and the gradient of
``reduce_window`` max pooling (select-and-scatter) costs ~50x its forward; measured on VGG-19
conv3_1 (48 canvases of 24 px, forward + input gradient): 112 ms with XLA's ops, 64 ms with these.

- ``conv2d`` with ``impl="patches"`` gathers the ``kh*kw`` shifted views into one
  ``[B, h, w, kh*kw*C_in]`` tensor and multiplies it by the reshaped kernel (one matmul, whose
  backward is two matmuls); ``impl="xla"`` is ``lax.conv_general_dilated`` (cuDNN on GPUs).
  The default is ``patches`` on CPU for inputs up to :data:`PATCHES_MAX_PIXELS` (the canvases of
  conv1_1 to conv4_x; the patch tensor is kh*kw times the input, which stops paying on whole
  photographs) and ``xla`` otherwise and on accelerators; ``$JAXVIS_CONV`` forces one.
- 2x2/2 pooling is a reshape and a max/mean over the window axes; the max-pool gradient goes to
  the first maximum of each window, picked by elementwise comparisons (no window reduction).

**Precision** of the convolutions (where the FLOPs are) follows jax's own
``jax.default_matmul_precision`` setting of the code being traced (so jit caches keep the variants
apart); :func:`precision` sets it by jaxvis's names. ``"float32"`` (also the default when nothing
is set) asks for true float32 products (``Precision.HIGHEST``: without it, XLA on A100/H100 GPUs
silently uses TF32). ``"tf32"`` and ``"bf16"`` round the operands to 10 and 7 mantissa bits and
accumulate in float32: on accelerators with the hardware's TF32 / bfloat16 units (tensor cores),
on CPU by rounding the operands with ``lax.reduce_precision`` (no speed-up there; the same numbers
up to summation order, since a product of two such operands is exact in float32), so the
tolerance tests run anywhere. Products outside these ops follow jax's rules for the setting.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from jaxvis.errors import unknown

from jaxvis.models.precision import PRECISIONS

IMPLS = ("patches", "xla")
PATCHES_MAX_PIXELS = 96 * 96
_JAX_NAME = {"float32": "highest", "tf32": "tensorfloat32", "bf16": "bfloat16"}
# jax's names (jax.default_matmul_precision) -> jaxvis's; unset means float32 here
_FROM_JAX = {None: "float32", "highest": "float32", "float32": "float32", "bfloat16_3x": "float32",
             "high": "tf32", "tensorfloat32": "tf32", "default": "bf16", "fastest": "bf16",
             "bfloat16": "bf16"}
_MANTISSA_BITS = {"tf32": 10, "bf16": 7}


def precision(name: str):
    """Context manager: code traced inside computes its convolutions at ``name``
    (one of :data:`PRECISIONS`); ``jax.default_matmul_precision`` under jaxvis's names."""
    if name not in PRECISIONS:
        raise unknown("precision", name, PRECISIONS)
    return jax.default_matmul_precision(_JAX_NAME[name])


def current_precision() -> str:
    return _FROM_JAX.get(jax.config.jax_default_matmul_precision, "float32")


def _operands(a: jax.Array, b: jax.Array):
    """(a, b, lax precision, result dtype) of one product under the current precision."""
    name = current_precision()
    if name == "float32":
        return a, b, lax.Precision.HIGHEST, None
    if jax.default_backend() == "cpu":  # emulated: rounded operands, exact float32 products
        bits = _MANTISSA_BITS[name]
        return (lax.reduce_precision(a, 8, bits), lax.reduce_precision(b, 8, bits),
                lax.Precision.HIGHEST, None)
    if name == "bf16":
        return a.astype(jnp.bfloat16), b.astype(jnp.bfloat16), None, jnp.float32
    return a, b, lax.Precision.DEFAULT, None  # float32 operands; TF32 on GPUs that have it


def conv_general_dilated(lhs, rhs, *args, precision=None, preferred_element_type=None, **kwargs):
    """``lax.conv_general_dilated`` at the current precision: ``nnx.Conv(conv_general_dilated=...)``
    for the networks that use flax's convolution layers (ResNet, EfficientNet). flax's own
    ``precision`` argument is ignored: the traced code's setting decides."""
    lhs, rhs, prec, out = _operands(lhs, rhs)
    return lax.conv_general_dilated(lhs, rhs, *args, precision=prec, preferred_element_type=out, **kwargs)


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, **kwargs):
    """``lax.dot_general`` at the current precision: ``nnx.Linear(dot_general=...)``."""
    lhs, rhs, prec, out = _operands(lhs, rhs)
    return lax.dot_general(lhs, rhs, dimension_numbers, precision=prec, preferred_element_type=out, **kwargs)


# flax's layers computing at the current precision (ResNet, EfficientNet use them)
Conv = functools.partial(nnx.Conv, conv_general_dilated=conv_general_dilated)
Linear = functools.partial(nnx.Linear, dot_general=dot_general)


def conv_impl(height: int, width: int) -> str:
    impl = os.environ.get("JAXVIS_CONV")
    if impl is None:
        small = height * width <= PATCHES_MAX_PIXELS
        return "patches" if jax.default_backend() == "cpu" and small else "xla"
    if impl not in IMPLS:
        raise ValueError(f"JAXVIS_CONV must be one of {', '.join(IMPLS)}, not {impl!r}")
    return impl


def conv2d(x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None, padding: int | str = "VALID",
           impl: str | None = None) -> jax.Array:
    """Stride-1 cross-correlation: ``x`` ``[B, H, W, C_in]``, ``kernel`` ``[kh, kw, C_in, C_out]``;
    ``padding`` is a symmetric zero padding in pixels or ``"VALID"``."""
    if padding != "VALID" and padding:
        x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    kh, kw, c_in, c_out = kernel.shape
    if (impl or conv_impl(x.shape[1], x.shape[2])) == "xla":
        x, kernel, prec, out = _operands(x, kernel)
        y = lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     precision=prec, preferred_element_type=out)
    else:
        h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
        views = [x[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)]
        flat = kernel.reshape(kh * kw * c_in, c_out)  # rows ordered (i, j, c): the HWIO order
        pad = -len(flat) % 8 if len(views) > 1 else 0
        if pad:  # e.g. 27 rows on RGB input: a multiple of 8 suits the matmul kernels (~12% there)
            views.append(jnp.zeros(x.shape[:1] + (h, w, pad), x.dtype))
            flat = jnp.concatenate([flat, jnp.zeros((pad, c_out), flat.dtype)])
        patches = views[0] if len(views) == 1 else jnp.concatenate(views, axis=-1)
        patches, flat, prec, out = _operands(patches, flat)
        y = jnp.matmul(patches, flat, precision=prec, preferred_element_type=out)
    return y if bias is None else y + bias


def pool2x2(x: jax.Array, kind: str = "max") -> jax.Array:
    """2x2 window, stride 2, VALID (an odd last row/column is dropped, as in every framework)."""
    b, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    return _max_pool(x) if kind == "max" else x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def _windows(x: jax.Array) -> list[jax.Array]:
    """The four elements of every 2x2 window, in row-major order, each ``[B, h/2, w/2, C]``."""
    return [x[:, i::2, j::2] for i in (0, 1) for j in (0, 1)]


@jax.custom_vjp
def _max_pool(x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _max_pool_fwd(x):
    y = _max_pool(x)
    return y, (x, y)


def _max_pool_bwd(res, g):
    """The gradient goes to the first maximum of each window (as in PyTorch and cuDNN), chosen by
    elementwise comparisons that fuse into one loop. jax's own rule shares it among tied
    maxima, which needs a window reduction (counting the ties) that cost ~0.6 ms of a 15 ms
    VGG-19 conv3_1 step on CPU; both are subgradients, and after a ReLU ties are almost only
    windows of zeros, whose gradient the ReLU discards anyway."""
    x, y = res
    taken = jnp.zeros(y.shape, bool)
    parts = []
    for v in _windows(x):
        first = (v == y) & ~taken
        taken = taken | first
        parts.append(jnp.where(first, g, 0))
    b, h2, w2, c = y.shape
    # parts[2i + j] is the window element (i, j): back to [B, h, w, C]
    dx = jnp.stack(parts, axis=3).reshape(b, h2, w2, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
    return (dx.reshape(b, 2 * h2, 2 * w2, c),)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)
