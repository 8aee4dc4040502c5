"""Random keys of a unit: derived from (seed, what, unit, N) alone, so a unit's result does not
depend on which units share its chunk, on the device count or on the process layout. The random
transforms (``Objective.transforms``) draw from a stream folded off the unit's key, hashed with
the step and the image."""

from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp


def unit_key(seed: int, layer: str, unit: int, images: int) -> jax.Array:
    """The key of ``unit`` of ``layer`` (any name: the sweep uses the layer, the shift test
    ``"shift:<layer>"``) optimised with ``images`` images."""
    key = jax.random.key(seed)
    for part in (zlib.crc32(layer.encode()), unit, images):
        key = jax.random.fold_in(key, part)
    return key


# the transforms' stream of a unit: a fold of its key no restart index reaches
# (``maximum.restart_keys`` folds in 1 .. K-1)
TRANSFORM_STREAM = zlib.crc32(b"transforms")
DRAWS = 4  # uniform numbers per image and step (jaxvis.param.transform.draw)


def transform_key(key: jax.Array) -> jax.Array:
    """``[2]`` uint32: the seed of a unit's random transforms, ``fold_in(key, TRANSFORM_STREAM)``
    of its key (``unit_key`` or a restart's) as raw bits."""
    return jax.random.key_data(jax.random.fold_in(key, TRANSFORM_STREAM)).astype(jnp.uint32)


def _fmix(h: jax.Array) -> jax.Array:
    """murmur3's 32-bit finaliser: a bijection of uint32 that mixes every bit into every bit."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def image_uniforms(stream: jax.Array, step: jax.Array, images: int) -> jax.Array:
    """``[images, DRAWS]`` uniform numbers in [0, 1) of step ``step`` (traced) of a unit's
    transform ``stream`` (:func:`transform_key`): a keyed hash of (stream, step, image, draw),
    so image ``i``'s numbers depend on the unit, the step and ``i`` alone.

    A counter-based hash rather than ``jax.random`` inside the step: threefry in the compiled
    step cost 3-4 s of XLA:CPU compilation per program (one draw per image), the hash 0.1 s."""
    counter = jnp.arange(images * DRAWS, dtype=jnp.uint32).reshape(images, DRAWS)
    at = _fmix(stream[1] ^ _fmix(step.astype(jnp.uint32) + jnp.uint32(0x9E3779B9)))
    bits = _fmix(stream[0] ^ _fmix(at ^ _fmix(counter + jnp.uint32(0x7F4A7C15))))
    return (bits >> 8).astype(jnp.float32) * jnp.float32(2.0 ** -24)
