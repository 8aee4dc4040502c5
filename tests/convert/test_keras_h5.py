"""Tests for jaxvis.convert.keras_h5 on tiny files laid out the way Keras writes them."""

from __future__ import annotations

import os

import h5py
import jax
import numpy as np
import pytest

from jaxvis.convert.keras_h5 import KerasWeights, load_keras_h5, name_keras3_vars
from jaxvis.errors import ConversionError, JaxvisError, UnknownNameError, WeightFileError
from tests.convert.measure import PEAK_LIMIT, refused_in_child

RNG = np.random.default_rng(0)


def _rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _write_legacy(root: h5py.Group, layers: dict[str, dict[str, np.ndarray]]) -> None:
    """What Keras 2 ``save_weights_to_hdf5_group`` does: byte-string name lists as attributes."""
    root.attrs["backend"] = b"tensorflow"
    root.attrs["keras_version"] = b"2.2.4"
    root.attrs["layer_names"] = np.asarray([n.encode("utf8") for n in layers])
    for layer, weights in layers.items():
        g = root.create_group(layer)
        g.attrs["weight_names"] = np.asarray([w.encode("utf8") for w in weights])
        for w, value in weights.items():
            g.create_dataset(w, data=value)  # 'block1_conv1/kernel:0' makes a subgroup


LEGACY = {
    "input_1": {},
    "block1_conv1": {"block1_conv1/kernel:0": _rand(3, 3, 3, 4), "block1_conv1/bias:0": _rand(4)},
    "bn_conv1": {f"bn_conv1/{n}:0": _rand(4) for n in
                 ("gamma", "beta", "moving_mean", "moving_variance")},
    "block1_pool": {},
    "conv1": {"conv1/conv1/kernel:0": _rand(1, 1, 4, 2)},
    "fc_old": {"fc_old_W_1:0": _rand(2, 3), "fc_old_b_1:0": _rand(3)},
}
SHORT = {
    "block1_conv1": ["kernel", "bias"],
    "bn_conv1": ["gamma", "beta", "moving_mean", "moving_variance"],
    "conv1": ["kernel"],
    "fc_old": ["W", "b"],
}


def _check_legacy(kw: KerasWeights) -> None:
    assert kw.layout == "legacy"
    assert list(kw.layers) == list(SHORT)  # file order; weightless input/pool left out
    for layer, shorts in SHORT.items():
        assert list(kw.layers[layer]) == shorts
        for short, expected in zip(shorts, LEGACY[layer].values()):
            np.testing.assert_array_equal(kw.layers[layer][short], expected)
            assert kw.layers[layer][short].dtype == np.float32


def test_legacy_weights_file(tmp_path):
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:
        _write_legacy(f, LEGACY)
    _check_legacy(load_keras_h5(path))


def test_legacy_full_model_file(tmp_path):
    path = tmp_path / "model.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = b'{"class_name": "Functional"}'
        _write_legacy(f.create_group("model_weights"), LEGACY)
        f.create_group("optimizer_weights")
    _check_legacy(load_keras_h5(str(path)))


def test_legacy_chunked_attributes(tmp_path):
    # Keras splits attributes over 64 KiB into layer_names0, layer_names1, ...
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:
        _write_legacy(f, {"a": {"a/kernel:0": _rand(2)}, "b": {"b/kernel:0": _rand(2)}})
        del f.attrs["layer_names"]
        f.attrs["layer_names0"] = np.asarray([b"a"])
        f.attrs["layer_names1"] = np.asarray([b"b"])
    assert list(load_keras_h5(path).layers) == ["a", "b"]


def test_legacy_colliding_short_names_keep_full_names(tmp_path):
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:
        _write_legacy(f, {"blk": {"blk/a/kernel:0": _rand(2), "blk/b/kernel:0": _rand(3)}})
    assert list(load_keras_h5(path).layers["blk"]) == ["blk/a/kernel", "blk/b/kernel"]


def _write_keras3(path, tree: dict) -> None:
    """What ``H5IOStore`` writes: a ``vars`` group per saveable, datasets '0', '1', ..."""
    def fill(group: h5py.Group, node: dict) -> None:
        for key, value in node.items():
            if key == "vars":
                v = group.create_group("vars")
                for i, a in enumerate(value):
                    v[str(i)] = a
            else:
                fill(group.create_group(key), value)

    with h5py.File(path, "w") as f:
        fill(f, tree)


def test_keras3_weights_file(tmp_path):
    conv_k, conv_b = _rand(3, 3, 3, 4), _rand(4)
    bn = [_rand(4) for _ in range(4)]
    inner_k, inner_b = _rand(1, 1, 4, 2), _rand(2)
    many = [_rand(1) for _ in range(12)]  # '10', '11' must come after '9'
    tree = {
        "vars": [],
        "layers": {
            "input_layer": {"vars": []},
            "conv2d": {"vars": [conv_k, conv_b]},
            "batch_normalization": {"vars": bn},
            "max_pooling2d": {"vars": []},
            "functional": {"vars": [], "layers": {
                "conv2d": {"vars": [inner_k, inner_b]},
                "conv2d_2": {"vars": [inner_b]},
                "conv2d_10": {"vars": [inner_k]},
            }},
            "dense": {"vars": many},
        },
        "optimizer": {"vars": [np.int64(3)]},
    }
    path = tmp_path / "m.weights.h5"
    _write_keras3(path, tree)
    kw = load_keras_h5(path)
    assert kw.layout == "keras3"
    assert list(kw.layers) == ["batch_normalization", "conv2d", "dense", "functional/conv2d",
                               "functional/conv2d_2", "functional/conv2d_10"]
    assert list(kw.layers["conv2d"]) == ["0", "1"]
    np.testing.assert_array_equal(kw.layers["conv2d"]["0"], conv_k)
    np.testing.assert_array_equal(kw.layers["conv2d"]["1"], conv_b)
    for i in range(4):
        np.testing.assert_array_equal(kw.layers["batch_normalization"][str(i)], bn[i])
    np.testing.assert_array_equal(kw.layers["functional/conv2d"]["0"], inner_k)
    assert list(kw.layers["dense"]) == [str(i) for i in range(12)]
    np.testing.assert_array_equal(kw.layers["dense"]["11"], many[11])

    named = name_keras3_vars(kw.layers["batch_normalization"], "batchnorm")
    assert list(named) == ["gamma", "beta", "moving_mean", "moving_variance"]
    np.testing.assert_array_equal(named["moving_variance"], bn[3])
    assert list(name_keras3_vars(kw.layers["conv2d"], "conv")) == ["kernel", "bias"]
    assert list(name_keras3_vars(kw.layers["functional/conv2d_10"], "conv")) == ["kernel"]
    with pytest.raises(ConversionError):
        name_keras3_vars(kw.layers["dense"], "dense")
    with pytest.raises(UnknownNameError, match="valid: conv"):
        name_keras3_vars(kw.layers["conv2d"], "lstm")


def test_keras3_tf213_checkpoint_dependencies(tmp_path):
    path = tmp_path / "m.weights.h5"
    k = _rand(2, 2)
    _write_keras3(path, {"vars": [], "_layer_checkpoint_dependencies": {"dense": {"vars": [k]}}})
    kw = load_keras_h5(path)
    assert kw.layout == "keras3" and list(kw.layers) == ["dense"]
    np.testing.assert_array_equal(kw.layers["dense"]["0"], k)


def test_keras3_bfloat16(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    path = tmp_path / "m.weights.h5"
    value = np.arange(6, dtype=np.float32).reshape(2, 3).astype(ml_dtypes.bfloat16)
    with h5py.File(path, "w") as f:
        ds = f.create_group("layers/dense/vars").create_dataset("0", data=value)
        ds.attrs["dtype"] = "bfloat16"
    got = load_keras_h5(path).layers["dense"]["0"]
    assert got.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(got.astype(np.float32), value.astype(np.float32))


def _keras_conv2d_valid(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Keras Conv2D, padding='valid', stride 1: out[n,i,j,o] = sum x[n,i+u,j+v,c] k[u,v,c,o] + b."""
    n, h, w, _ = x.shape
    kh, kw, _, co = kernel.shape
    out = np.zeros((n, h - kh + 1, w - kw + 1, co), np.float64)
    for i in range(h - kh + 1):
        for j in range(w - kw + 1):
            patch = x[:, i:i + kh, j:j + kw, :].astype(np.float64)
            out[:, i, j, :] = np.einsum("nuvc,uvco->no", patch, kernel.astype(np.float64))
    return out + bias


def test_keras_kernel_goes_straight_into_nhwc_hwio_conv(tmp_path):
    # An asymmetric 3x2 kernel so that a flip or an H/W transpose would show.
    kernel, bias = _rand(3, 2, 3, 5), _rand(5)
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:
        _write_legacy(f, {"conv": {"conv/kernel:0": kernel, "conv/bias:0": bias}})
    w = load_keras_h5(path).layers["conv"]
    x = _rand(2, 7, 6, 3)
    got = jax.lax.conv_general_dilated(
        x, w["kernel"], (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")) + w["bias"]
    np.testing.assert_allclose(np.asarray(got), _keras_conv2d_valid(x, kernel, bias),
                               atol=1e-5, rtol=1e-5)


def _assert_one_line_error(path, *fragments: str) -> None:
    with pytest.raises(WeightFileError) as info:
        load_keras_h5(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_error_not_hdf5(tmp_path):
    path = tmp_path / "random.h5"
    path.write_bytes(RNG.bytes(4096))
    _assert_one_line_error(path, "cannot be read")


def test_error_truncated(tmp_path):
    path = tmp_path / "cut.h5"
    with h5py.File(path, "w") as f:
        _write_legacy(f, {"conv": {"conv/kernel:0": _rand(64, 64)}})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _assert_one_line_error(path, "cannot be read")


def test_error_neither_layout(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["data"] = np.zeros(3)
    _assert_one_line_error(path, "neither a legacy Keras weights file", "no 'layers' group")


def test_error_dangling_weight_name(tmp_path):
    path = tmp_path / "dangling.h5"
    with h5py.File(path, "w") as f:
        _write_legacy(f, {"conv": {"conv/kernel:0": _rand(2)}})
        f["conv"].attrs["weight_names"] = np.asarray([b"conv/kernel:0", b"conv/bias:0"])
    _assert_one_line_error(path, "'conv'", "'conv/bias:0'", "no such dataset")


def test_error_missing_file(tmp_path):
    _assert_one_line_error(tmp_path / "absent.h5", "no such file")


# --- hostile files: nothing outside the named file is read, no declared size trusted unchecked ---
# Each file is built here, a few KiB; the error is one line naming the dataset or link; the other
# files in the folder are byte-identical afterwards; blow-ups run in a child whose peak is measured.

def _snapshot(folder) -> dict:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _legacy_with(path, make) -> None:
    """A legacy file with one layer 'conv' whose weight 'conv/kernel:0' is ``make(group, name)``."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.asarray([b"conv"])
        group = f.create_group("conv")
        group.attrs["weight_names"] = np.asarray([b"conv/kernel:0"])
        make(group, "conv/kernel:0")


def _refused(path, match: str) -> None:
    before = _snapshot(path.parent)
    with pytest.raises(JaxvisError, match=match) as info:
        load_keras_h5(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert _snapshot(path.parent) == before


def test_hostile_external_raw_storage(tmp_path):
    """A kernel whose bytes HDF5 would read from another file (here a stand-in for /etc/passwd)."""
    secret = tmp_path / "passwd"
    secret.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n" * 4)
    path = tmp_path / "w.h5"
    _legacy_with(path, lambda g, n: g.create_dataset(
        n, shape=(8,), dtype="f4", external=[(str(secret), 0, h5py.h5f.UNLIMITED)]))
    _refused(path, rf"dataset '/conv/conv/kernel:0' keeps its bytes in external file '{secret}'")


def test_hostile_external_storage_fifo_does_not_hang(tmp_path):
    """A FIFO as external storage would block the read for ever: refused before any read."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    path = tmp_path / "w.h5"
    _legacy_with(path, lambda g, n: g.create_dataset(
        n, shape=(8,), dtype="f4", external=[(str(fifo), 0, h5py.h5f.UNLIMITED)]))
    message, _ = refused_in_child("from jaxvis.convert.keras_h5 import load_keras_h5",
                                  f"load_keras_h5({str(path)!r})", timeout=60)
    assert f"keeps its bytes in external file '{fifo}'" in message


@pytest.mark.parametrize("link", ["external", "soft"])
def test_hostile_links(tmp_path, link):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["kernel"] = np.ones(8, np.float32)
    path = tmp_path / "w.h5"
    target = h5py.ExternalLink(str(other), "/kernel") if link == "external" else h5py.SoftLink("/elsewhere")

    def make(group, name):
        group.file["elsewhere"] = np.ones(8, np.float32)
        group.create_group("conv")["kernel:0"] = target

    _legacy_with(path, make)
    _refused(path, "'/conv/conv/kernel:0' is " + ("an external link" if link == "external"
                                                   else "a soft link to '/elsewhere'"))


def test_hostile_virtual_dataset_with_missing_source(tmp_path):
    """Silently its fill value without the check: the source file does not exist."""
    path = tmp_path / "m.weights.h5"
    with h5py.File(path, "w") as f:
        layout = h5py.VirtualLayout(shape=(8,), dtype="f4")
        layout[:] = h5py.VirtualSource(str(tmp_path / "missing.h5"), "kernel", shape=(8,))
        f.create_group("layers/conv2d/vars").create_virtual_dataset("0", layout, fillvalue=7)
    _refused(path, "dataset '/layers/conv2d/vars/0' is a virtual dataset")


def test_hostile_plugin_filter(tmp_path):
    """A filter id HDF5 does not know would make it look for a plugin library to load."""
    path = tmp_path / "w.h5"
    _legacy_with(path, lambda g, n: g.create_dataset(n, shape=(8,), dtype="f4", chunks=(8,),
                                                     compression=31999, allow_unknown_filter=True))
    _refused(path, "dataset '/conv/conv/kernel:0' needs filter 31999, which would load a plugin")


@pytest.mark.parametrize("kind, what", [
    ("string", "strings"), ("bytes", "strings"), ("compound", r"compound records \(a, b\)"),
    ("vlen", "variable-length sequences")])
def test_non_numeric_datasets_one_line(tmp_path, kind, what):
    data = {"string": lambda g, n: g.create_dataset(n, data=["ab", "c"], dtype=h5py.string_dtype()),
            "bytes": lambda g, n: g.create_dataset(n, data=np.asarray([b"ab", b"cd"])),
            "compound": lambda g, n: g.create_dataset(n, data=np.zeros(2, [("a", "f4"), ("b", "i4")])),
            "vlen": lambda g, n: g.create_dataset(n, shape=(2,), dtype=h5py.vlen_dtype("f4"))}[kind]
    path = tmp_path / "w.h5"
    _legacy_with(path, data)
    _refused(path, rf"dataset '/conv/conv/kernel:0' holds {what}, not numbers")


@pytest.mark.parametrize("elements", [3 << 28, 10 ** 12])  # 3 GiB of float32; 1e12 elements
def test_hostile_declared_size_refused_before_reading(tmp_path, elements):
    """A few KiB declaring a gzip-chunked dataset of gigabytes (or terabytes) of zeros."""
    path = tmp_path / "w.h5"
    _legacy_with(path, lambda g, n: g.create_dataset(n, shape=(elements,), dtype="f4", chunks=(1 << 16,),
                                                     compression="gzip"))
    assert path.stat().st_size < 16 << 10
    message, peak = refused_in_child("from jaxvis.convert.keras_h5 import load_keras_h5",
                                     f"load_keras_h5({str(path)!r})")
    assert f"dataset '/conv/conv/kernel:0' declares {4 * elements} bytes, over the 16777216 bytes" in message
    assert peak < PEAK_LIMIT


def test_hostile_one_dataset_listed_many_times(tmp_path):
    """One 8 MiB kernel under 40 names (hard links): read once it is 8 MiB, read 40 times 320 MiB."""
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:
        names = [f"conv/kernel_{i}:0" for i in range(40)]
        f.attrs["layer_names"] = np.asarray([b"conv"])
        group = f.create_group("conv")
        group.attrs["weight_names"] = np.asarray([n.encode() for n in names])
        group[names[0]] = np.ones(2 << 20, np.float32)
        for name in names[1:]:
            group[name] = group[names[0]]
    message, peak = refused_in_child("from jaxvis.convert.keras_h5 import load_keras_h5",
                                     f"load_keras_h5({str(path)!r})")
    assert ("layer 'conv' weight 'kernel_1', '/conv/conv/kernel_1:0' is '/conv/conv/kernel_0:0' "
            "again (a hard-link cycle or a repeated weight)") in message
    assert peak < PEAK_LIMIT


def test_hostile_hard_link_cycle_keras3(tmp_path):
    """A Keras 3 layer group holding a hard link to its parent: a walk without memory never ends."""
    path = tmp_path / "m.weights.h5"
    with h5py.File(path, "w") as f:
        layer = f.create_group("layers/conv2d")
        layer.create_group("vars")["0"] = np.ones((2, 2), np.float32)
        layer["again"] = f["layers"]
    message, peak = refused_in_child("from jaxvis.convert.keras_h5 import load_keras_h5",
                                     f"load_keras_h5({str(path)!r})")
    assert "group '/layers/conv2d/again' is '/layers' again" in message
    assert peak < PEAK_LIMIT
