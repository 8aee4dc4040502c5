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
- 2x2/2 pooling is a reshape and a max/mean over the window axes, whose gradient is elementwise.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

IMPLS = ("patches", "xla")
PATCHES_MAX_PIXELS = 96 * 96


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
        y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
    else:
        h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
        views = [x[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)]
        patches = views[0] if len(views) == 1 else jnp.concatenate(views, axis=-1)
        y = patches @ kernel.reshape(kh * kw * c_in, c_out)  # rows ordered (i, j, c): the HWIO order
    return y if bias is None else y + bias


def pool2x2(x: jax.Array, kind: str = "max") -> jax.Array:
    """2x2 window, stride 2, VALID (an odd last row/column is dropped, as in every framework)."""
    b, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c)
    return x.max(axis=(2, 4)) if kind == "max" else x.mean(axis=(2, 4))
