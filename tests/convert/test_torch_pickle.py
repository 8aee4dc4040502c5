"""Tests for the torch-free ``.pth`` reader: both formats, views, 2017 files, hostile input."""

import io
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

from jaxvis.convert.torch_pickle import load_pth, load_state_dict
from jaxvis.errors import WeightFileError
from tests.convert.measure import PEAK_LIMIT, refused_in_child

NEEDS_TORCH = "torch writes the reference files"
MAGIC = 0x1950A86A20F9469CFC6C
FORMATS = {"zip": True, "legacy": False}


def _save(torch, obj, path, fmt):
    torch.save(obj, path, _use_new_zipfile_serialization=FORMATS[fmt])
    return path


def _as_numpy(t):
    return t.float().numpy() if str(t.dtype) == "torch.bfloat16" else t.detach().numpy()


def _assert_one_line(err):
    assert "\n" not in str(err.value) and str(err.value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_dtypes_and_views(tmp_path, fmt):
    torch = pytest.importorskip("torch", reason=NEEDS_TORCH)
    base = torch.arange(12, dtype=torch.float32)
    matrix = torch.randn(3, 4, dtype=torch.float64)
    shared = torch.arange(10, dtype=torch.int64)
    state = {
        "f32": torch.randn(2, 3), "f64": matrix, "f16": torch.randn(5).half(),
        "bf16": torch.randn(4).bfloat16(), "i64": torch.arange(-3, 3),
        "i32": torch.tensor([1, -2], dtype=torch.int32), "u8": torch.tensor([0, 7, 255], dtype=torch.uint8),
        "i8": torch.tensor([-128, 127], dtype=torch.int8), "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5), "param": torch.nn.Parameter(torch.randn(2, 2)),
        "transposed": matrix.t(), "slice": base[3:9], "strided": base.view(3, 4)[:, 1::2],
        "share_a": shared[:4], "share_b": shared[4:].view(2, 3), "empty": torch.zeros(0, 3),
        "nested": {"inner": torch.ones(2, dtype=torch.int16)},
    }
    loaded = load_pth(_save(torch, state, tmp_path / "m.pth", fmt))
    assert set(loaded) == set(state)
    for key, tensor in {**state, "nested": state["nested"]["inner"]}.items():
        ours = loaded["nested"]["inner"] if key == "nested" else loaded[key]
        expected = _as_numpy(tensor)
        if key == "bf16":
            ours = ours.astype(np.float32)
        assert ours.dtype == expected.dtype and ours.shape == expected.shape, key
        np.testing.assert_array_equal(ours, expected, err_msg=key)
        assert ours.flags.c_contiguous and ours.flags.owndata, key
    assert str(loaded["bf16"].dtype) in ("bfloat16", "float32")
    # Views were copied out of the shared storage: writing one leaves the other alone.
    loaded["share_a"][0] = 99
    assert loaded["share_b"][0, 0] == 4


@pytest.mark.parametrize("fmt", FORMATS)
def test_real_module_state_dict(tmp_path, fmt):
    torch = pytest.importorskip("torch", reason=NEEDS_TORCH)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5))
    model(torch.randn(2, 3, 8, 8))  # moves the BatchNorm running statistics
    state = model.state_dict()
    loaded = load_state_dict(_save(torch, state, tmp_path / "model.pth", fmt))
    assert list(loaded) == list(state)
    for key, tensor in state.items():
        assert loaded[key].dtype == tensor.numpy().dtype
        np.testing.assert_array_equal(loaded[key], tensor.numpy(), err_msg=key)
    assert loaded["1.num_batches_tracked"].dtype == np.int64


@pytest.mark.parametrize("fmt", FORMATS)
def test_load_state_dict_unwraps_and_flattens(tmp_path, fmt):
    torch = pytest.importorskip("torch", reason=NEEDS_TORCH)
    checkpoint = {"epoch": 7, "arch": "tiny",
                  "state_dict": {"enc": {"w": torch.ones(2)}, "head.b": torch.zeros(1)}}
    loaded = load_state_dict(_save(torch, checkpoint, tmp_path / "ckpt.pth", fmt))
    assert sorted(loaded) == ["enc.w", "head.b"]
    np.testing.assert_array_equal(loaded["enc.w"], np.ones(2, np.float32))


def test_load_state_dict_without_tensors(tmp_path):
    torch = pytest.importorskip("torch", reason=NEEDS_TORCH)
    path = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "name": "x"}, path)
    with pytest.raises(WeightFileError, match="holds no tensors") as err:
        load_state_dict(path)
    _assert_one_line(err)


# --- a 2017-era legacy file, written opcode by opcode as Python 2's pickle would -------------

def _py2_str(text):  # SHORT_BINSTRING: a Python 2 ``str``
    data = text.encode("latin1")
    return b"U" + bytes([len(data)]) + data


def _int(value):
    return b"J" + struct.pack("<i", value)


def _tuple(*items):
    return b"(" + b"".join(items) + b"t"


def _global(module, name):
    return b"c" + f"{module}\n{name}\n".encode()


def _rebuild_4(storage_type, key, numel, offset, size, stride):
    """``torch._utils._rebuild_tensor(storage, offset, size, stride)`` of torch 0.3."""
    storage = _tuple(_py2_str("storage"), _global("torch", storage_type), _py2_str(key),
                     _py2_str("cpu"), _int(numel), b"N") + b"Q"
    args = _tuple(storage, _int(offset), _tuple(*map(_int, size)), _tuple(*map(_int, stride)))
    return _global("torch._utils", "_rebuild_tensor") + args + b"R"


def test_legacy_2017_rebuild_tensor(tmp_path):
    floats = np.arange(8, dtype=np.float32) * 1.5
    longs = np.array([5, -6, 7], dtype=np.int64)
    main = (b"\x80\x02" + _global("collections", "OrderedDict") + b")R(" +
            _py2_str("conv.weight") + _rebuild_4("FloatStorage", "140", 8, 2, (3, 2), (1, 3)) +
            _py2_str("conv.bias") + _rebuild_4("FloatStorage", "140", 8, 0, (2,), (1,)) +
            _py2_str("steps") + _rebuild_4("LongStorage", "141", 3, 0, (3,), (1,)) + b"u.")
    keys = b"\x80\x02](" + _py2_str("140") + _py2_str("141") + b"e."
    header = b"".join(pickle.dumps(x, protocol=2) for x in (
        MAGIC, 1001, {"protocol_version": 1001, "little_endian": True,
                      "type_sizes": {"short": 2, "int": 4, "long": 8}}))
    body = b"".join(struct.pack("<q", a.size) + a.tobytes() for a in (floats, longs))
    path = tmp_path / "old.pth"
    path.write_bytes(header + main + keys + body)
    loaded = load_state_dict(path)
    np.testing.assert_array_equal(loaded["conv.weight"], floats[2:].reshape(2, 3).T)
    np.testing.assert_array_equal(loaded["conv.bias"], floats[:2])
    np.testing.assert_array_equal(loaded["steps"], longs)
    # Cut inside the storage bytes: reported as truncation, naming the storage.
    path.write_bytes(header + main + keys + body[:-10])
    with pytest.raises(WeightFileError, match=r"truncated: storage '141' needs 24 bytes, 14"):
        load_pth(path)


# --- hostile and broken files (torch-free) ---------------------------------------------------

class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _hostile_zip(path, payload):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/data/0", b"\0" * 16)


def _hostile_legacy(path, payload):
    header = b"".join(pickle.dumps(x, protocol=2) for x in (MAGIC, 1001, {"little_endian": True}))
    path.write_bytes(header + payload + pickle.dumps([], protocol=2))


@pytest.mark.parametrize("write", [_hostile_zip, _hostile_legacy], ids=["zip", "legacy"])
def test_hostile_global_is_refused(tmp_path, write):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"weight": _Evil(marker)}, protocol=2)
    write(tmp_path / "model.pth", payload)
    with pytest.raises(WeightFileError) as err:
        load_pth(tmp_path / "model.pth")
    message = str(err.value)
    assert f"{os.system.__module__}.system" in message and "refusing to load" in message
    assert "_rebuild_tensor" in message  # the allow-list is named
    _assert_one_line(err)
    assert not marker.exists()


def test_hostile_persistent_id_and_geometry(tmp_path):
    # A storage id with a non-storage type, and a tensor that reaches past its storage.
    # _hostile_zip's data/0 holds 16 bytes: 4 float32.
    _hostile_zip(tmp_path / "a.pth", b"\x80\x02(X\x07\x00\x00\x00storageK\x01X\x01\x00\x00\x000"
          b"X\x03\x00\x00\x00cpuK\x04tQ.")
    with pytest.raises(WeightFileError, match="persistent id"):
        load_pth(tmp_path / "a.pth")
    storage = (b"(X\x07\x00\x00\x00storage" + _global("torch", "FloatStorage") +
               b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQ")
    overrun = (b"\x80\x02" + _global("torch._utils", "_rebuild_tensor_v2") + b"(" + storage +
               b"K\x00(K\x04K\x04t(K\x04K\x01t\x89" + _global("collections", "OrderedDict") +
               b")RtR.")
    _hostile_zip(tmp_path / "b.pth", overrun)
    with pytest.raises(WeightFileError, match="overruns its storage") as err:
        load_pth(tmp_path / "b.pth")
    _assert_one_line(err)


def test_build_cannot_modify_allowed_functions(tmp_path):
    # BUILD with a slot-state dict would setattr(_rebuild_parameter, "__defaults__", ()).
    payload = (b"\x80\x02" + _global("torch._utils", "_rebuild_parameter") +
               b"N}X\x0c\x00\x00\x00__defaults__)s\x86b.")
    _hostile_zip(tmp_path / "m.pth", payload)
    with pytest.raises(WeightFileError, match="tries to modify _rebuild_parameter"):
        load_pth(tmp_path / "m.pth")
    from jaxvis.convert import torch_pickle
    assert torch_pickle._rebuild_parameter.__defaults__ == (False, None, None)


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_real_file(tmp_path, fmt):
    torch = pytest.importorskip("torch", reason=NEEDS_TORCH)
    path = _save(torch, {"w": torch.randn(64, 64), "b": torch.randn(64)}, tmp_path / "m.pth", fmt)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 1, 40):
        path.write_bytes(data[:cut])
        with pytest.raises(WeightFileError, match="m.pth is (truncated|corrupted)") as err:
            load_pth(path)
        _assert_one_line(err)


@pytest.mark.parametrize("content, match", [
    (b"", "is empty"),
    (np.random.default_rng(0).bytes(4096), "neither a torch zip archive nor a legacy torch pickle"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, r"starts with b'\\x89PNG"),
    (pickle.dumps({"a": 1}, protocol=2), "neither a torch zip"),
])
def test_not_a_torch_file(tmp_path, content, match):
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    with pytest.raises(WeightFileError, match=match) as err:
        load_pth(path)
    _assert_one_line(err)


def test_zip_without_data_pkl(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "hello")
    (tmp_path / "x.pth").write_bytes(buffer.getvalue())
    with pytest.raises(WeightFileError, match="not a torch.save file"):
        load_pth(tmp_path / "x.pth")


def test_missing_file(tmp_path):
    with pytest.raises(WeightFileError, match="cannot read"):
        load_pth(tmp_path / "nope.pth")


def test_big_endian_zip(tmp_path):
    torch = pytest.importorskip("torch", reason=NEEDS_TORCH)
    path = tmp_path / "be.pth"
    torch.save({"w": torch.arange(6, dtype=torch.float32).view(2, 3)}, path)
    # Rewrite the archive as a big-endian machine would have saved it.
    with zipfile.ZipFile(path) as src:
        entries = {name: src.read(name) for name in src.namelist()}
    with zipfile.ZipFile(path, "w") as dst:
        for name, data in entries.items():
            if name.endswith("/byteorder"):
                data = b"big"
            elif "/data/" in name:
                data = np.frombuffer(data, "<f4").astype(">f4").tobytes()
            dst.writestr(name, data)
    loaded = load_pth(path)["w"]
    assert loaded.dtype == np.float32 and loaded.dtype.isnative
    np.testing.assert_array_equal(loaded, np.arange(6, dtype=np.float32).reshape(2, 3))


# --- one hand-built hostile file per guard of the reader ------------------------------------------
# Each is refused with one line and before anything large is allocated (tracemalloc's peak covers
# the file itself, numpy and zlib); removing the guard makes its test fail.

def _pid(storage_type, key, numel, view=b""):
    """BINPERSID of ``('storage', torch.<storage_type>, key, 'cpu', numel[, view])``."""
    return _tuple(_py2_str("storage"), _global("torch", storage_type), _py2_str(key), _py2_str("cpu"),
                  _int(numel), view) + b"Q"


def _v2(storage, offset, size, stride):
    """``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())``."""
    hooks = _global("collections", "OrderedDict") + b")R"
    return (_global("torch._utils", "_rebuild_tensor_v2") +
            _tuple(storage, _int(offset), _tuple(*map(_int, size)), _tuple(*map(_int, stride)), b"\x89", hooks)
            + b"R")


def _state(**values):
    """A protocol-2 pickle of ``{key: value opcodes}``."""
    return b"\x80\x02}(" + b"".join(_py2_str(k) + v for k, v in values.items()) + b"u."


def _zip(path, pickled, storages, compress=zipfile.ZIP_STORED, pickle_compress=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickled, compress_type=pickle_compress)
        for key, data in storages.items():
            archive.writestr(f"archive/data/{key}", data, compress_type=compress)
    return path


def _legacy(path, pickled, storages):
    """A legacy file: header pickles, ``pickled``, the key list, then per key (count, bytes)."""
    header = b"".join(pickle.dumps(x, protocol=2) for x in (MAGIC, 1001, {"little_endian": True}))
    keys = b"\x80\x02](" + b"".join(_py2_str(k) for k in storages) + b"e."
    body = b"".join(struct.pack("<q", count) + data for count, data in storages.values())
    path.write_bytes(header + pickled + keys + body)
    return path


def _refused(path, match):
    """Assert ``load_pth(path)`` is refused in one line; the peak memory it traced, in bytes."""
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(WeightFileError, match=match) as err:
            load_pth(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    _assert_one_line(err)
    return peak


def _four_floats():
    return np.arange(4, dtype="<f4").tobytes()


def test_guard_sound_file_loads(tmp_path):
    """The helpers write files the reader accepts: the refusals below are the guards' doing."""
    zipped = _zip(tmp_path / "ok.pth", _state(w=_v2(_pid("FloatStorage", "0", 4), 1, (3,), (1,))),
                  {"0": _four_floats()})
    np.testing.assert_array_equal(load_pth(zipped)["w"], [1, 2, 3])
    legacy = _legacy(tmp_path / "ok_legacy.pth",
                     _state(w=_v2(_pid("FloatStorage", "0", 4, _tuple(_py2_str("v"), _int(1), _int(2))),
                                  0, (2,), (1,))), {"0": (4, _four_floats())})
    np.testing.assert_array_equal(load_pth(legacy)["w"], [1, 2])  # a legacy storage view


def test_guard_stride_zero_memory_bomb(tmp_path):
    # 16 stored bytes viewed as 2**27 elements with stride 0: a 128 MiB copy without the guard.
    path = _zip(tmp_path / "m.pth", _state(w=_v2(_pid("ByteStorage", "0", 16), 0, (1 << 27,), (0,))),
                {"0": bytes(16)})
    assert _refused(path, r"size \(134217728,\) expands a storage of 16 elements") < 4 << 20


def test_guard_legacy_view_bounds(tmp_path):
    # a pre-1.0 storage view (view key, offset 2, 10 elements) of a 4-element storage
    view = _tuple(_py2_str("v"), _int(2), _int(10))
    path = _legacy(tmp_path / "m.pth", _state(w=_v2(_pid("FloatStorage", "0", 4, view), 0, (2,), (1,))),
                   {"0": (4, _four_floats())})
    _refused(path, r"storage view \('v', 2, 10\) overruns storage '0'")


def test_guard_codecs_encode_only_latin1(tmp_path):
    # protocol 2 spells bytes as _codecs.encode(text, 'latin1'); any other codec is refused
    call = _global("_codecs", "encode") + _tuple(_py2_str("abc"), _py2_str("utf-16")) + b"R"
    _refused(_zip(tmp_path / "m.pth", _state(w=call), {}), r"_codecs.encode with 'utf-16'")


def test_guard_object_dtype_numpy_scalar(tmp_path):
    # numpy.core.multiarray.scalar(numpy.dtype('O'), <8 bytes>): an object pointer from the file
    dtype = _global("numpy", "dtype") + _tuple(_py2_str("O"), b"\x89\x88") + b"R"
    call = _global("numpy.core.multiarray", "scalar") + _tuple(dtype, b"C\x08" + bytes(8)) + b"R"
    _refused(_zip(tmp_path / "m.pth", _state(w=call), {}), r"a numpy scalar of dtype dtype\('O'\)")


def test_guard_rebuild_tensor_v3_dtype(tmp_path):
    # v3 names its dtype; None (or anything not a torch.<dtype>) is refused, not guessed
    hooks = _global("collections", "OrderedDict") + b")R"
    v3 = (_global("torch._utils", "_rebuild_tensor_v3") +
          _tuple(_pid("FloatStorage", "0", 4), _int(0), _tuple(_int(4)), _tuple(_int(1)), b"\x89", hooks, b"N")
          + b"R")
    _refused(_zip(tmp_path / "m.pth", _state(w=v3), {"0": _four_floats()}), "_rebuild_tensor_v3 got dtype None")


def test_guard_legacy_element_count(tmp_path):
    path = _legacy(tmp_path / "m.pth", _state(w=_v2(_pid("FloatStorage", "0", 4), 0, (4,), (1,))),
                   {"0": (5, _four_floats() + bytes(4))})
    _refused(path, "storage '0' holds 5 elements, the pickle says 4")


def test_guard_zip_storage_bounded_by_tensor_metadata(tmp_path):
    # the member holds 1 MiB, the pickle declares a storage of 4 floats: not read at all
    path = _zip(tmp_path / "m.pth", _state(w=_v2(_pid("FloatStorage", "0", 4), 0, (4,), (1,))),
                {"0": _four_floats() + bytes(1 << 20)})
    assert _refused(path, r"storage '0' holds 1048592 bytes, but the tensor metadata declares 4 Float "
                          r"elements \(16 bytes\)") < 3 << 20  # the 1 MiB file, read once


@pytest.mark.parametrize("where", ["storage", "pickle"])
def test_guard_zip_compression_bomb(tmp_path, where):
    size = 1 << 25  # 32 MiB of zeros deflate to ~32 KiB
    if where == "storage":
        path = _zip(tmp_path / "m.pth", _state(w=_v2(_pid("ByteStorage", "0", size), 0, (4,), (1,))),
                    {"0": bytes(size)}, compress=zipfile.ZIP_DEFLATED)
    else:  # a pickle of one 32 MiB bytes object (BINBYTES)
        path = _zip(tmp_path / "m.pth", b"\x80\x03B" + struct.pack("<I", size) + bytes(size) + b".", {},
                    pickle_compress=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 100_000
    member = {"storage": "data/0", "pickle": "data.pkl"}[where]
    peak = _refused(path, rf"refusing to load .*m.pth: member archive/{member} would expand \d+ bytes to "
                          rf"{size + (8 if where == 'pickle' else 0)} \(a compression bomb\)")
    assert peak < 4 << 20


# --- blow-ups from tiny files: totals, shared and cyclic objects, duplicated members ----------------

def test_guard_total_materialised_bytes(tmp_path):
    """Three stride-0 views of one float, 24 MiB each: every one passes the per-tensor guard, the
    third brings the file's tensors over 64 MiB (+ 4x its 4 stored bytes). Without the total, 30
    such views would make 720 MiB from a file of 1 KiB."""
    view = _v2(_pid("FloatStorage", "0", 1), 0, (6 << 20,), (0,))
    path = _zip(tmp_path / "m.pth", _state(a=view, b=view, c=view), {"0": np.float32(1).tobytes()})
    assert path.stat().st_size < 2048
    message, peak = refused_in_child("from jaxvis.convert.torch_pickle import load_pth",
                                     f"load_pth({str(path)!r})")
    assert message == (f"{path} is corrupted: a tensor of size (6291456,) would bring the tensors to "
                       "75497472 bytes, over the 67108880 bytes its 4 stored bytes allow")
    assert peak < PEAK_LIMIT


def test_guard_shared_lists_do_not_explode(tmp_path):
    """``L(n+1) = [Ln, Ln]``, 40 levels: a pickle of a few hundred bytes naming 2^40 paths."""
    nested = [1.0]
    for _ in range(40):
        nested = [nested, nested]
    path = _zip(tmp_path / "m.pth", pickle.dumps({"w": nested}, protocol=2), {})
    assert path.stat().st_size < 2048
    message, peak = refused_in_child("from jaxvis.convert.torch_pickle import load_state_dict",
                                     f"load_state_dict({str(path)!r})", timeout=60)
    assert message == (f"refusing to load {path}: its nested containers spell over 16777216 characters "
                       "of names (one list or dict repeated many times over)")
    assert peak < PEAK_LIMIT


def test_guard_shared_tensor_is_fine(tmp_path):
    """Sharing itself is legitimate (tied weights): one tensor under two names loads."""
    tensor = _v2(_pid("FloatStorage", "0", 4), 0, (4,), (1,))
    pickled = b"\x80\x02}(" + _py2_str("a") + tensor + b"q\x01" + _py2_str("b") + b"h\x01u."
    flat = load_state_dict(_zip(tmp_path / "m.pth", pickled, {"0": _four_floats()}))
    assert list(flat) == ["a", "b"]
    np.testing.assert_array_equal(flat["b"], [0, 1, 2, 3])


@pytest.mark.parametrize("where", ["top", "inner"])
def test_guard_self_referencing_dict(tmp_path, where):
    cyclic: dict = {}
    cyclic["self"] = cyclic
    obj = cyclic if where == "top" else {"layer": [cyclic]}
    path = _zip(tmp_path / "m.pth", pickle.dumps(obj, protocol=2), {})
    with pytest.raises(WeightFileError) as err:
        load_state_dict(path)
    _assert_one_line(err)
    again = "'self' is the top-level object" if where == "top" else "'layer.0.self' is 'layer.0'"
    assert str(err.value) == (f"refusing to load {path}: {again} again, inside itself (a cyclic pickle "
                              "is not a state dict)")


def test_guard_deep_nesting(tmp_path):
    """5000 lists, each inside the one before (by opcodes: Python's pickler would recurse too)."""
    pickled = b"\x80\x02" + b"]" * 5000 + b"G" + struct.pack(">d", 1.0) + b"a" * 5000 + b"."
    path = _zip(tmp_path / "m.pth", pickled, {})
    with pytest.raises(WeightFileError, match=r"'0(\.0){63}' nests deeper than 64 levels") as err:
        load_state_dict(path)
    _assert_one_line(err)


def test_guard_duplicate_zip_member(tmp_path):
    """Two members named archive/data/0: zipfile silently reads the last one."""
    path = _zip(tmp_path / "m.pth", _state(w=_v2(_pid("FloatStorage", "0", 4), 0, (4,), (1,))),
                {"0": _four_floats()})
    with zipfile.ZipFile(path, "a") as archive, pytest.warns(UserWarning, match="Duplicate name"):
        archive.writestr("archive/data/0", np.full(4, 666, "<f4").tobytes())
    before = path.read_bytes()
    assert _refused(path, r"member archive/data/0 appears 2 times in the archive") < 1 << 20
    assert path.read_bytes() == before


def test_non_torch_file_refused_from_its_first_bytes(tmp_path):
    """A 3 GiB file (sparse: no disk used) that is no weight file: refused from its first bytes."""
    path = tmp_path / "video.mkv"
    with open(path, "wb") as f:
        f.write(b"\x1aE\xdf\xa3 not a weight file")
        f.truncate(3 << 30)
    message, peak = refused_in_child("from jaxvis.convert.sources import read_tensors",
                                     f"read_tensors({str(path)!r})")
    assert message == (f"{path} is neither a torch zip archive nor a legacy torch pickle "
                       r"(starts with b'\x1aE\xdf\xa3 not a weigh')")
    assert peak < PEAK_LIMIT


def test_large_zip_that_is_not_torch_is_read_by_its_directory(tmp_path):
    """A zip archive with a 1 GiB (sparse) member but no data.pkl: only its directory is read."""
    path = tmp_path / "big.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", b"hello")
    directory = path.read_bytes()
    local_end = directory.index(b"PK\x01\x02")  # the local entry, then the central directory
    with open(path, "wb") as f:  # the same archive with 1 GiB of zeros before the directory
        f.write(directory[:local_end])
        f.seek(local_end + (1 << 30))
        f.write(directory[local_end:])
    message, peak = refused_in_child("from jaxvis.convert.torch_pickle import load_pth",
                                     f"load_pth({str(path)!r})")
    assert message == f"{path} is a zip archive but not a torch.save file (0 top-level */data.pkl entries, expected 1)"
    assert peak < PEAK_LIMIT
