"""Random keys of a unit: derived from (seed, what, unit, N) alone, so a unit's result does not
depend on which units share its chunk, on the device count or on the process layout."""

from __future__ import annotations

import zlib

import jax


def unit_key(seed: int, layer: str, unit: int, images: int) -> jax.Array:
    """The key of ``unit`` of ``layer`` (any name: the sweep uses the layer, the shift test
    ``"shift:<layer>"``) optimised with ``images`` images."""
    key = jax.random.key(seed)
    for part in (zlib.crc32(layer.encode()), unit, images):
        key = jax.random.fold_in(key, part)
    return key
