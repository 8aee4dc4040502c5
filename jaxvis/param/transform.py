"""Random transforms of the images the network sees (transformation robustness; lucid's
``transform`` module, Olah et al. 2017, "Feature Visualization", Distill; docs/method.md section 9).

Per image and optimiser step, one affine map about the canvas centre: scale ``s`` (drawn from
:attr:`Transforms.scales`), rotation ``theta`` (uniform in ``[-rotate, rotate]`` degrees), then an
integer shift ``t`` (each axis uniform in ``-jitter .. jitter`` pixels). The transformed image is
resampled bilinearly on the same canvas grid, so the network and the optimised unit are unchanged:

    T(x)(u) = x~(c + R(-theta) (u - c - t) / s),     c = ((H - 1) / 2, (W - 1) / 2),

``x~`` the image ``x`` (deviation from the mean colour) mirrored ``pad`` pixels beyond its border
(numpy's ``symmetric`` mode; lucid's ``transform.pad``, mode REFLECT) and the mean colour (0)
beyond that. Integer shifts are exact (bilinear weights 0 and 1). Everything is pure jax and
differentiable with respect to ``x``; the random draws are four uniform numbers per image and
step (:func:`jaxvis.optimize.keys.image_uniforms`).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from jaxvis.errors import JaxvisError


@dataclasses.dataclass(frozen=True)
class Transforms:
    """What the random transforms may do (``Objective.transforms``; None there: no transforms,
    the paper's method). ``jitter``: largest shift in pixels per axis; ``scales``: the scale
    factors one is drawn from per image and step (1: none); ``rotate``: largest rotation in
    degrees; ``pad``: pixels the image is mirrored beyond its border, so that what the transforms
    move into the canvas is the image's own continuation rather than the flat mean colour."""

    jitter: int = 0
    scales: tuple[float, ...] = (1.0,)
    rotate: float = 0.0
    pad: int = 0

    def __post_init__(self):
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))  # from JSON lists
        if not isinstance(self.jitter, int) or self.jitter < 0:
            raise JaxvisError(f"Transforms.jitter must be a whole number of pixels >= 0, not {self.jitter!r}")
        if not isinstance(self.pad, int) or self.pad < 0:
            raise JaxvisError(f"Transforms.pad must be a whole number of pixels >= 0, not {self.pad!r}")
        if not self.scales or any(not (0 < s <= 10) or not math.isfinite(s) for s in self.scales):
            raise JaxvisError(f"Transforms.scales must be one or more factors in (0, 10], e.g. 1,0.95,1.05; "
                              f"not {','.join(map(str, self.scales)) or 'none'}")
        if not isinstance(self.rotate, (int, float)) or not 0 <= self.rotate <= 180:
            raise JaxvisError(f"Transforms.rotate must be a largest angle in degrees between 0 and 180, not {self.rotate!r}")
        object.__setattr__(self, "rotate", float(self.rotate))  # 5 and 5.0: one config, one program
        if self.pad and self.still:
            raise JaxvisError(f"Transforms.pad {self.pad} needs Transforms.jitter, Transforms.scales or Transforms.rotate: it mirrors the "
                              "image into what they move into the canvas")

    @property
    def still(self) -> bool:
        """Nothing moves: every draw is the identity map (then there is nothing to transform)."""
        return self.jitter == 0 and self.rotate == 0 and all(s == 1 for s in self.scales)


def _mirror(q: jax.Array, n: int, pad: int) -> tuple[jax.Array, jax.Array]:
    """Integer pixel indices ``q`` -> (index into ``0 .. n-1`` after mirroring, inside the padded
    image): symmetric reflection with period ``2n``, valid for ``-pad <= q < n + pad``."""
    r = jnp.mod(q, 2 * n)
    return jnp.where(r < n, r, 2 * n - 1 - r), (q >= -pad) & (q < n + pad)


def resample(x: jax.Array, shift: jax.Array, scale: jax.Array, angle: jax.Array, pad: int = 0) -> jax.Array:
    """One image ``x`` ``[H, W, C]`` under the map of the module docstring: ``shift`` ``[2]``
    (pixels, y and x), ``scale`` and ``angle`` (radians) scalars. Returns ``[H, W, C]``."""
    x = jnp.asarray(x)
    h, w = x.shape[0], x.shape[1]
    cy, cx = (h - 1) / 2, (w - 1) / 2
    uy = jnp.arange(h, dtype=jnp.float32)[:, None] - cy - shift[0]
    ux = jnp.arange(w, dtype=jnp.float32)[None, :] - cx - shift[1]
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    sy = cy + (cos * uy + sin * ux) / scale
    sx = cx + (cos * ux - sin * uy) / scale
    y0, x0 = jnp.floor(sy), jnp.floor(sx)
    wy, wx = sy - y0, sx - x0
    y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)
    # the four neighbours of every output pixel, gathered at once from the flattened image
    index, weight = [], []
    for dy, fy in ((0, 1 - wy), (1, wy)):
        iy, vy = _mirror(y0 + dy, h, pad)
        for dx, fx in ((0, 1 - wx), (1, wx)):
            ix, vx = _mirror(x0 + dx, w, pad)
            index.append(iy * w + ix)
            weight.append(jnp.where(vy & vx, fy * fx, 0.0))
    values = x.reshape(h * w, -1).at[jnp.stack(index).reshape(-1)].get(mode="promise_in_bounds")  # [4 H W, C]
    values = values.reshape(4, h, w, -1) * jnp.stack(weight)[..., None].astype(x.dtype)
    return jnp.sum(values, axis=0)


def draw(u: jax.Array, t: Transforms) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(shift ``[2]``, scale, angle in radians) of one image and step from its four uniform
    numbers ``u`` ``[4]`` in [0, 1): the shift and the scale's index by rounding down."""
    span = 2 * t.jitter + 1
    shift = jnp.minimum(jnp.floor(u[:2] * span), span - 1) - t.jitter
    pick = jnp.minimum(jnp.floor(u[2] * len(t.scales)), len(t.scales) - 1).astype(jnp.int32)
    scale = jnp.asarray(t.scales, jnp.float32)[pick]
    angle = (2 * u[3] - 1) * math.radians(t.rotate)
    return shift, scale, angle


def transform(uniforms: jax.Array, x: jax.Array, t: Transforms) -> jax.Array:
    """One unit's images ``x`` ``[N, H, W, C]``, each under its own random map, drawn from its row
    of ``uniforms`` ``[N, 4]`` (:func:`jaxvis.optimize.keys.image_uniforms`)."""
    return jax.vmap(lambda u, image: resample(image, *draw(u, t), pad=t.pad))(uniforms, x)
