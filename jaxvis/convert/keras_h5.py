"""Read the weights out of a Keras HDF5 weight file, per layer, with h5py only.

Two layouts are auto-detected:

* **legacy** (Keras 1/2 ``save_weights('x.h5')``, keras-applications ``*_notop.h5``, or a
  full-model ``model.save('x.h5')`` whose weights live under a ``model_weights`` group): the
  attribute ``layer_names`` lists the layers in model order; each layer group carries a
  ``weight_names`` attribute (``b'block1_conv1/kernel:0'``, Keras 1 ``b'block1_conv1_W_1:0'``,
  nested ``b'conv1/conv1/kernel:0'``) whose entries are dataset paths inside that group.
  Keras splits an attribute over 64 KiB into ``name0``, ``name1``, ...; both forms are read.
* **keras3** (``save_weights('x.weights.h5')``, written by ``saving_lib.H5IOStore``): every
  saveable gets a group holding a ``vars`` group of datasets ``"0"``, ``"1"``, ... in variable
  creation order (trainable first, then non-trainable). A functional/sequential model's layers
  sit under ``layers/<name>``, where ``<name>`` is the snake-cased *class* name made unique
  with ``_1``, ``_2`` (``conv2d``, ``conv2d_1``, ``batch_normalization``), never the user's
  ``name=``. A nested model repeats the pattern (``layers/functional/layers/conv2d/vars``);
  a custom layer's sublayers sit under their attribute names. tf.keras 2.13 wrote
  ``_layer_checkpoint_dependencies`` in place of ``layers``; it is accepted too. The top-level
  ``vars`` (the model's own variables) and ``optimizer`` groups are not layer weights and are
  ignored; subclassed models, whose layers sit at top-level attribute names, are not supported.

Reading follows :mod:`jaxvis.io.hdf5policy`: hard links only (no external or soft links), no
virtual datasets, external raw storage or plugin filters, so nothing outside the named file is
read; every dataset to be read is found and its declared size charged to the file's budget (100
times its size, at least 16 MiB) before the first one is read; a group or dataset reached twice
(a hard-link cycle, or one weight listed under several names) is refused, so a walk ends and no
bytes are read twice.

Decisions: layers without weights (input, pooling, the empty ``vars`` of every keras3 layer)
are left out, so the result maps weight-bearing layers, in order, to their arrays. Arrays are
plain numpy as stored: Keras conv kernels stay HWIO and go straight into an NHWC/HWIO
``conv_general_dilated`` (Keras Conv2D is a cross-correlation, like XLA's).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import h5py
import numpy as np

from jaxvis.errors import ConversionError, JaxvisError, WeightFileError, unknown
from jaxvis.io.hdf5policy import Budget, child, expansion_budget

__all__ = ["KerasWeights", "load_keras_h5", "name_keras3_vars", "KERAS3_VAR_NAMES"]


@dataclass(frozen=True)
class KerasWeights:
    """Per-layer weights of a Keras file, in the file's layer order.

    ``layers`` maps a layer name to ``{short weight name: array}``. Legacy short names are the
    last path component without the ``:0`` suffix (``'block1_conv1/kernel:0'`` -> ``'kernel'``);
    Keras 1 names without a ``/`` lose the ``<layer>_`` prefix and the ``_<n>`` uniquifier TF
    appended (``'conv1_W_1:0'`` -> ``'W'``). Should two weights of a layer shorten to the same
    name, that layer keeps its full names (minus ``:0``). Keras 3 names are the stored indices
    ``'0'``, ``'1'``, ...; see ``name_keras3_vars``. Nested keras3 layers are joined with ``/``.
    """

    layout: str  # "legacy" or "keras3"
    layers: dict[str, dict[str, np.ndarray]]


# Variable order of Keras 3 layers built with default arguments; a trailing "bias" may be
# missing (use_bias=False). BatchNormalization with center/scale off shifts the indices, so
# a count that does not fit is an error rather than a silent mis-naming.
KERAS3_VAR_NAMES: dict[str, tuple[str, ...]] = {
    "conv": ("kernel", "bias"),
    "dense": ("kernel", "bias"),
    "depthwise_conv": ("depthwise_kernel", "bias"),
    "separable_conv": ("depthwise_kernel", "pointwise_kernel", "bias"),
    "batchnorm": ("gamma", "beta", "moving_mean", "moving_variance"),
    "layernorm": ("gamma", "beta"),
}


def name_keras3_vars(weights: dict[str, np.ndarray], kind: str) -> dict[str, np.ndarray]:
    """Rename a keras3 layer's ``{'0': a, '1': b}`` to conventional names for layer ``kind``."""
    if kind not in KERAS3_VAR_NAMES:
        raise unknown("Keras 3 layer kind", kind, KERAS3_VAR_NAMES)
    names = KERAS3_VAR_NAMES[kind]
    fits = len(weights) == len(names) or (names[-1] == "bias" and len(weights) == len(names) - 1)
    if not fits or set(weights) != {str(i) for i in range(len(weights))}:
        raise ConversionError(
            f"a Keras 3 {kind} layer has variables {', '.join(weights)}; expected "
            f"{len(names)} ({', '.join(names)})")
    return {names[i]: weights[str(i)] for i in range(len(weights))}


def load_keras_h5(path: str | os.PathLike) -> KerasWeights:
    """Read either layout (auto-detected); arrays as numpy (Keras kernels stay HWIO)."""
    name = os.fspath(path)
    try:
        with h5py.File(name, "r") as f:
            plan = _Plan(name, expansion_budget(name))
            if _has_attr(f, "layer_names"):
                layout = "legacy"
                _plan_legacy(f, plan)
            elif isinstance(mw := child(f, "model_weights"), h5py.Group) and _has_attr(mw, "layer_names"):
                layout = "legacy"
                _plan_legacy(mw, plan)
            else:
                root = next((g for key in ("layers", "_layer_checkpoint_dependencies")
                             if isinstance(g := child(f, key), h5py.Group)), None)
                if root is None:
                    raise WeightFileError(
                        f"{name} is an HDF5 file but neither a legacy Keras weights file (no "
                        "'layer_names' attribute) nor a Keras 3 .weights.h5 (no 'layers' group)")
                layout = "keras3"
                plan.visit(root, "group")
                _plan_keras3(root, "", plan)
            return KerasWeights(layout, plan.read())
    except JaxvisError:
        raise
    except FileNotFoundError:
        raise WeightFileError(f"{name}: no such file") from None
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
        # h5py reports a non-HDF5 or truncated file as OSError on open, and damaged object
        # headers as OSError/KeyError on access; its messages may span lines.
        detail = " ".join(str(e).split()) or type(e).__name__
        raise WeightFileError(f"{name} cannot be read as a Keras HDF5 weight file: {detail}") from None


class _Plan:
    """The datasets to read, ``{layer: {short name: dataset}}``, each checked and charged to the
    file's budget as it is found; nothing is read until the whole file has been planned."""

    def __init__(self, name: str, budget: Budget):
        self.name, self.budget = name, budget
        self.layers: dict[str, dict[str, h5py.Dataset]] = {}
        self.seen: dict = {}  # h5py object id (equal for every hard link to one object) -> path

    def visit(self, obj: h5py.Group | h5py.Dataset, what: str) -> None:
        """Refuse an object reached a second time: a hard-link cycle, or a weight listed twice."""
        if obj.id in self.seen:
            raise WeightFileError(f"{self.name}: {what} {obj.name!r} is {self.seen[obj.id]!r} again "
                                  "(a hard-link cycle or a repeated weight); a Keras file holds "
                                  "every group and weight once")
        self.seen[obj.id] = obj.name

    def add(self, layer: str, weights: dict[str, h5py.Dataset]) -> None:
        for short, ds in weights.items():
            self.visit(ds, f"layer {layer!r} weight {short!r},")
            self.budget.charge(ds)
        self.layers[layer] = weights

    def read(self) -> dict[str, dict[str, np.ndarray]]:
        return {layer: {short: _read_var(ds) for short, ds in ws.items()}
                for layer, ws in self.layers.items()}


def _has_attr(group: h5py.Group, key: str) -> bool:
    return key in group.attrs or f"{key}0" in group.attrs


def _str_list_attr(group: h5py.Group, key: str) -> list[str]:
    """A list-of-strings attribute, joined from Keras' ``key0``, ``key1``... chunks if split."""
    if key in group.attrs:
        chunks = [group.attrs[key]]
    else:
        chunks, i = [], 0
        while f"{key}{i}" in group.attrs:
            chunks.append(group.attrs[f"{key}{i}"])
            i += 1
    return [s.decode("utf8") if isinstance(s, bytes) else str(s)
            for chunk in chunks for s in np.atleast_1d(chunk)]


def _plan_legacy(root: h5py.Group, plan: _Plan) -> None:
    name = plan.name
    for layer in _str_list_attr(root, "layer_names"):
        group = child(root, layer)
        if not isinstance(group, h5py.Group):
            raise WeightFileError(f"{name}: 'layer_names' lists {layer!r} but there is no such group")
        weight_names = _str_list_attr(group, "weight_names")
        if not weight_names:
            continue  # input, pooling, activation... (see module docstring)
        datasets = []
        for w in weight_names:
            ds = child(group, w)
            if not isinstance(ds, h5py.Dataset):
                raise WeightFileError(
                    f"{name}: layer {layer!r} lists weight {w!r} but has no such dataset")
            datasets.append(ds)
        shorts = [_short_name(w, layer) for w in weight_names]
        if len(set(shorts)) != len(shorts):
            shorts = [_strip_index(w) for w in weight_names]
        plan.add(layer, dict(zip(shorts, datasets)))


def _strip_index(weight_name: str) -> str:
    """``'conv1/kernel:0'`` -> ``'conv1/kernel'``: the ``:0`` is TF's output index, not a name."""
    return re.sub(r":\d+$", "", weight_name)


def _short_name(weight_name: str, layer: str) -> str:
    base = _strip_index(weight_name)
    if "/" in base:
        return base.rsplit("/", 1)[1]
    # Keras 1: '<layer>_<param>' plus the '_<n>' TF added for a repeated variable name.
    if base.startswith(layer + "_") and len(base) > len(layer) + 1:
        base = base[len(layer) + 1:]
    return re.sub(r"(?<=.)_\d+$", "", base)


def _natural_key(key: str) -> tuple:
    # 'conv2d_2' before 'conv2d_10', '2' before '10': h5py lists names bytewise.
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key))


def _children(group: h5py.Group) -> list[str]:
    """Child names in creation order when the file tracked it, else in natural name order.

    Keras does not track creation order, so between layers of different classes the model's
    order is not in the file; within one class (``conv2d``, ``conv2d_1``...) it is.
    """
    if group.id.get_create_plist().get_link_creation_order():
        return list(group.keys())
    return sorted(group.keys(), key=_natural_key)


def _read_var(ds: h5py.Dataset) -> np.ndarray:
    value = ds[()]
    if ds.attrs.get("dtype") in ("bfloat16", b"bfloat16"):
        import ml_dtypes  # H5IOStore stores bfloat16 as 2-byte opaque data tagged like this

        value = np.asarray(value).view(ml_dtypes.bfloat16)
    return value


def _plan_keras3(group: h5py.Group, prefix: str, plan: _Plan) -> None:
    for key in _children(group):
        item = child(group, key)
        if key == "vars" or not isinstance(item, h5py.Group):
            continue
        plan.visit(item, "group")
        if key == "layers" and prefix:
            _plan_keras3(item, prefix, plan)  # a nested model's layer list adds no name level
            continue
        layer = f"{prefix}/{key}" if prefix else key
        vars_ = child(item, "vars")
        if isinstance(vars_, h5py.Group) and len(vars_):
            plan.visit(vars_, "group")
            plan.add(layer, {k: ds for k in _children(vars_)
                             if isinstance(ds := child(vars_, k), h5py.Dataset)})
        _plan_keras3(item, layer, plan)
