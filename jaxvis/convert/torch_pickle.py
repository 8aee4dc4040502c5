"""Read PyTorch ``.pth`` files without torch and without running code from the file.

``torch.save`` writes one of two formats:

* **zip** (torch >= 1.6, the default): an archive whose top folder (any name) holds
  ``data.pkl``, the pickled object, and ``data/<key>``, the raw bytes of each storage
  (little-endian unless a ``byteorder`` file says ``big``).
* **legacy** (torch < 1.6, or ``_use_new_zipfile_serialization=False``): a stream of
  pickles (magic number, protocol version 1001, a sys-info dict, the object, the list of
  storage keys) followed, per key, by an int64 element count and the storage's raw
  little-endian bytes.

In both, a tensor is a call ``torch._utils._rebuild_tensor_v2(storage, offset, size,
stride, ...)`` (``_rebuild_tensor`` with four arguments in 2017-era files,
``_rebuild_tensor_v3`` with an explicit dtype for newer dtypes) whose storage is a
persistent id ``('storage', <torch.XStorage>, key, location, numel[, view])``.

The pickle is read by an unpickler whose ``find_class`` resolves an explicit allow-list of
globals to *our own* stand-ins, so a hostile file cannot reach ``os.system`` or any other
callable. Tensors become owned, contiguous numpy arrays. bfloat16 and float8 become
``ml_dtypes`` arrays (installed with jax); without ``ml_dtypes`` bfloat16 is upcast to
float32 and float8 is refused.

Sizes come from the pickle, never from the container alone: a zip storage member must hold exactly
the bytes its persistent id declares (element count x element size; a larger member is refused
unread), a member whose declared size exceeds 100 times its compressed size (above 16 MiB) is
refused as a compression bomb before it is expanded, a legacy storage's count must match the
pickle's, and a tensor may neither reach past its storage nor expand it (stride 0) more than 64-fold
beyond 1 Mi elements. All tensors of a file together may materialise at most 64 MiB plus 4 times the
bytes of the storages read (tied weights and views copy a storage more than once, three stride-0
views of one element must not make gigabytes). A zip archive with two members of one name is
refused (which copy a reader takes differs). The file's first bytes are checked before the rest is
read, and a zip archive is read through its directory, member by member, never whole.

The unpickled object is flattened into ``{dotted name: value}`` with bounded work: a container
that contains itself is refused, nesting is limited to 64 levels, and the names made may total at
most 16 Mi characters (a 733-byte pickle of lists ``L(n+1) = [Ln, Ln]`` otherwise names 2^40
paths). A container shared by several names is fine within that bound (tied weights are).
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from collections.abc import Mapping
from math import prod
from typing import Any, Callable, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from jaxvis.errors import WeightFileError

try:
    import ml_dtypes
except ImportError:  # pragma: no cover - ml_dtypes ships with jax
    ml_dtypes = None

# ``pickle.dumps(MAGIC_NUMBER, protocol=2)`` minus the PROTO opcode: LONG1, 10 bytes.
_MAGIC_BYTES = b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_PROTOCOL_VERSION = 1001


class _Kind(NamedTuple):
    """A torch element type: the numpy code of its stored bits, and what they mean."""

    name: str
    raw: str  # e.g. "f4"; "u2" for bfloat16, whose bits numpy cannot interpret itself
    view: Any = None  # an ml_dtypes type the native-order bits are reinterpreted as


_KINDS = {k.name: k for k in [
    _Kind("Float", "f4"), _Kind("Double", "f8"), _Kind("Half", "f2"),
    _Kind("BFloat16", "u2", getattr(ml_dtypes, "bfloat16", None)), _Kind("Long", "i8"), _Kind("Int", "i4"),
    _Kind("Short", "i2"), _Kind("Char", "i1"), _Kind("Byte", "u1"), _Kind("Bool", "?"),
    _Kind("ComplexFloat", "c8"), _Kind("ComplexDouble", "c16"), _Kind("UInt16", "u2"),
    _Kind("UInt32", "u4"), _Kind("UInt64", "u8"),
    *(_Kind(f, "u1", getattr(ml_dtypes, f)) for f in ml_dtypes and  # float8: ml_dtypes only
      ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz") or ()),
]}
# ``torch.<dtype>`` globals, as ``_rebuild_tensor_v3`` names the dtype explicitly.
_TORCH_DTYPES = {
    "float32": "Float", "float64": "Double", "float16": "Half", "bfloat16": "BFloat16",
    "int64": "Long", "int32": "Int", "int16": "Short", "int8": "Char", "uint8": "Byte",
    "bool": "Bool", "complex64": "ComplexFloat", "complex128": "ComplexDouble",
    "uint16": "UInt16", "uint32": "UInt32", "uint64": "UInt64",
    **{f: f for f in _KINDS if f.startswith("float8")},
}


class _Corrupt(Exception):
    """Internal: the file's content is inconsistent; load_pth adds the file name."""


# Materialised tensors of one file may total this much more than 4 times its storages' bytes.
_COPY_FLOOR, _COPY_RATIO = 64 << 20, 4


class _Budget:
    """The bytes all tensors of one file have materialised, against what its storages allow."""

    def __init__(self):
        self.stored = self.copied = 0

    def copy(self, nbytes: int, size: tuple[int, ...]) -> None:
        limit = _COPY_FLOOR + _COPY_RATIO * self.stored
        if self.copied + nbytes > limit:
            raise _Corrupt(f"a tensor of size {size} would bring the tensors to {self.copied + nbytes} "
                           f"bytes, over the {limit} bytes its {self.stored} stored bytes allow")
        self.copied += nbytes


class _Storage(NamedTuple):
    buf: np.ndarray | None  # raw uint8 bytes; None in the legacy format's first pass
    kind: _Kind
    byteorder: str  # "<" or ">"
    budget: _Budget  # shared by every storage of the file


def _materialise(storage: Any, offset: Any, size: Any, stride: Any, kind: _Kind | None = None,
                 metadata: Any = None) -> np.ndarray | None:
    """An owned contiguous array for the strided view ``storage[offset; size; stride]``."""
    if not isinstance(storage, _Storage):
        raise _Corrupt(f"a tensor is built from a {type(storage).__name__}, not a storage")
    size, stride = tuple(size), tuple(stride)
    if len(size) != len(stride) or not all(type(v) is int and v >= 0
                                           for v in (offset, *size, *stride)):
        raise _Corrupt(f"bad tensor geometry: offset {offset!r}, size {size!r}, stride {stride!r}")
    if storage.buf is None:
        return None
    kind = kind or storage.kind
    dtype = np.dtype(kind.raw).newbyteorder(storage.byteorder)
    elems = storage.buf[: len(storage.buf) // dtype.itemsize * dtype.itemsize].view(dtype)
    numel = prod(size)
    if numel and offset + sum((n - 1) * s for n, s in zip(size, stride)) >= len(elems):
        # Checked before as_strided, which would otherwise read memory outside the storage.
        raise _Corrupt(f"a tensor of size {size} at offset {offset} overruns its storage "
                       f"of {len(elems)} elements")
    if numel > 64 * max(len(elems), 1 << 20):  # stride-0 expansion into a memory bomb
        raise _Corrupt(f"a tensor of size {size} expands a storage of {len(elems)} elements")
    storage.budget.copy(numel * dtype.itemsize, size)
    if numel:
        strides = tuple(s * dtype.itemsize for s in stride)
        array = as_strided(elems[offset:], shape=size, strides=strides).copy()
    else:
        array = np.zeros(size, dtype)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if kind.view is not None:
        array = array.view(kind.view)
    elif kind.name == "BFloat16":  # no ml_dtypes: bfloat16 is the top half of a float32
        array = (array.astype(np.uint32) << 16).view(np.float32)
    if isinstance(metadata, Mapping):  # unresolved conj/neg bits of complex views
        array = np.conj(array) if metadata.get("conj") else array
        array = np.negative(array) if metadata.get("neg") else array
    return array


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None,
                       metadata=None):  # also the 4-argument _rebuild_tensor of 2017 files
    return _materialise(storage, offset, size, stride, metadata=metadata)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, kind,
                       metadata=None):
    if not isinstance(kind, _Kind):
        raise _Corrupt(f"_rebuild_tensor_v3 got dtype {kind!r}")
    return _materialise(storage, offset, size, stride, kind, metadata)


def _rebuild_parameter(data, requires_grad=False, hooks=None, state=None):
    return data  # an nn.Parameter is just its data here


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # Protocol-2 pickles spell ``bytes`` as _codecs.encode(str, "latin1"); allow only that.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Corrupt(f"_codecs.encode with {encoding!r}")
    return text.encode("latin1")


_np_scalar = np.float64(0).__reduce__()[0]  # numpy's own scalar reconstructor


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise _Corrupt(f"a numpy scalar of dtype {dtype!r}")
    return _np_scalar(dtype, data)


def _numpy_dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    if not isinstance(spec, str):
        raise _Corrupt(f"numpy.dtype({spec!r})")
    return np.dtype(spec, align, copy)


class _Call:
    """An allowed function, sealed: a BUILD opcode could otherwise rewrite its attributes."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[..., Any]):
        object.__setattr__(self, "_fn", fn)

    def __call__(self, *args: Any) -> Any:
        return self._fn(*args)

    def __setstate__(self, state: Any) -> None:
        raise _Corrupt(f"the pickle tries to modify {self._fn.__name__}")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor"): _Call(_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_tensor_v2"): _Call(_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_tensor_v3"): _Call(_rebuild_tensor_v3),
    ("torch._utils", "_rebuild_parameter"): _Call(_rebuild_parameter),
    ("torch._utils", "_rebuild_parameter_with_state"): _Call(_rebuild_parameter),
    ("collections", "OrderedDict"): collections.OrderedDict,  # builtin types are immutable
    ("torch", "Size"): tuple,
    ("_codecs", "encode"): _Call(_latin1_encode),
    ("numpy.core.multiarray", "scalar"): _Call(_numpy_scalar),
    ("numpy._core.multiarray", "scalar"): _Call(_numpy_scalar),
    ("numpy", "dtype"): _Call(_numpy_dtype),
    **{(module, n): t for module in ("builtins", "__builtin__")
       for n, t in (("set", set), ("frozenset", frozenset))},
    **{("torch", f"{k}Storage"): kind for k, kind in _KINDS.items() if not k.startswith("float8")},
    ("torch", "UntypedStorage"): _KINDS["Byte"],
    ("torch.storage", "UntypedStorage"): _KINDS["Byte"],
    **{("torch", d): _KINDS[k] for d, k in _TORCH_DTYPES.items()},
}
_ALLOWED_TEXT = ("torch._utils._rebuild_tensor[_v2|_v3], torch._utils._rebuild_parameter, "
                 "torch.<Type>Storage, torch.<dtype>, torch.Size, collections.OrderedDict, "
                 "set, frozenset, numpy scalars")


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: io.BytesIO, name: str, storage_for: Callable[[Any], _Storage]):
        # latin1 reads Python 2 ``str`` (2017-era files) as text, as torch.load advises.
        super().__init__(data, encoding="latin1")
        self._name, self._storage_for = name, storage_for

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        hint = ("; it is a TorchScript archive: load it with torch and save its state_dict()"
                if module.startswith("__torch__") else "")
        raise WeightFileError(
            f"refusing to load {self._name}: the pickle asks for {module}.{name}, which is "
            f"not a tensor rebuild function (allowed: {_ALLOWED_TEXT}){hint}")

    def persistent_load(self, pid: Any) -> _Storage:
        return self._storage_for(pid)


def _no_storage(pid: Any) -> _Storage:
    raise _Corrupt(f"unexpected persistent id {pid!r} outside the main pickle")


def _parse_pid(pid: Any) -> tuple[_Kind, str, int, Any]:
    """(kind, key, numel, legacy view metadata) of a storage persistent id."""
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] in ("storage", b"storage")
            and isinstance(pid[1], _Kind) and type(pid[4]) is int and pid[4] >= 0):
        raise _Corrupt(f"unexpected persistent id {pid!r}")
    key = pid[2].decode("latin1") if isinstance(pid[2], bytes) else str(pid[2])
    return pid[1], key, pid[4], pid[5] if len(pid) == 6 else None


# A member may expand at most this much (torch itself stores members uncompressed); real data that
# compresses better than 100:1 is all-zero padding, and below 16 MiB a bomb cannot hurt.
_MAX_RATIO, _BOMB_FLOOR = 100, 1 << 24


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, size: int, name: str) -> bytes:
    """A member's bytes, after checking its declared sizes against the archive (``size`` bytes)."""
    if info.header_offset + info.compress_size > size:
        raise WeightFileError(f"{name} is truncated: member {info.filename} needs "
                              f"{info.compress_size} bytes at offset {info.header_offset} of {size}")
    if info.file_size > max(_BOMB_FLOOR, _MAX_RATIO * info.compress_size):
        # zipfile stops expanding at the declared size, so the declared size is what to bound
        raise WeightFileError(f"refusing to load {name}: member {info.filename} would expand "
                              f"{info.compress_size} bytes to {info.file_size} (a compression bomb)")
    return archive.read(info)


def _load_zip(file: io.BufferedReader, size: int, name: str) -> Any:
    """The object of the zip archive ``file`` (``size`` bytes), reading only the members it needs."""
    try:
        archive = zipfile.ZipFile(file)
    except zipfile.BadZipFile:
        raise WeightFileError(f"{name} is truncated or corrupted: it starts like a zip archive "
                              "but has no readable zip directory") from None
    names = archive.namelist()
    if twice := sorted(n for n, count in collections.Counter(names).items() if count > 1):
        raise WeightFileError(f"refusing to load {name}: member {twice[0]} appears "
                              f"{names.count(twice[0])} times in the archive (which copy counts is unclear)")
    pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise WeightFileError(f"{name} is a zip archive but not a torch.save file "
                              f"({len(pickles)} top-level */data.pkl entries, expected 1)")
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = "<"
    if f"{prefix}byteorder" in names:
        order = _read_member(archive, archive.getinfo(f"{prefix}byteorder"), size, name)
        order = order.decode("ascii", "replace").strip()
        if order not in ("little", "big"):
            raise _Corrupt(f"byteorder is {order!r}, expected 'little' or 'big'")
        byteorder = "<" if order == "little" else ">"
    blobs: dict[str, np.ndarray] = {}  # storages shared by several tensors are read once
    budget = _Budget()

    def storage_for(pid: Any) -> _Storage:
        kind, key, numel, _ = _parse_pid(pid)
        if key not in blobs:
            try:
                info = archive.getinfo(f"{prefix}data/{key}")
            except KeyError:
                raise _Corrupt(f"storage {key!r} is missing from the archive") from None
            need = numel * np.dtype(kind.raw).itemsize
            if info.file_size < need:
                raise WeightFileError(f"{name} is truncated: storage {key!r} needs {need} "
                                      f"bytes, {info.file_size} stored")
            if info.file_size > need:  # the pickle's element count bounds what is read, not the member
                raise _Corrupt(f"storage {key!r} holds {info.file_size} bytes, but the tensor "
                               f"metadata declares {numel} {kind.name} elements ({need} bytes)")
            blobs[key] = np.frombuffer(_read_member(archive, info, size, name), np.uint8)
            budget.stored += need
        return _Storage(blobs[key], kind, byteorder, budget)

    data = _read_member(archive, archive.getinfo(pickles[0]), size, name)
    return _Unpickler(io.BytesIO(data), name, storage_for).load()


def _load_legacy(raw: bytes, name: str) -> Any:
    stream = io.BytesIO(raw)
    header = [_Unpickler(stream, name, _no_storage).load() for _ in range(3)]
    if header[0] != _MAGIC_NUMBER or header[1] != _PROTOCOL_VERSION:
        raise _Corrupt(f"magic number {header[0]!r} / protocol version {header[1]!r}, "
                       f"expected {_MAGIC_NUMBER:#x} / {_PROTOCOL_VERSION}")
    start = stream.tell()
    # The storage bytes follow the object's pickle, so a first pass only learns each
    # storage's type and size; the second pass rebuilds the tensors from the read bytes.
    roots: dict[str, tuple[_Kind, int]] = {}
    budget = _Budget()

    def register(pid: Any) -> _Storage:
        kind, key, numel, _ = _parse_pid(pid)
        roots.setdefault(key, (kind, numel))
        return _Storage(None, kind, "<", budget)

    _Unpickler(stream, name, register).load()
    keys = _Unpickler(stream, name, _no_storage).load()
    if not isinstance(keys, list):
        raise _Corrupt(f"the storage key list is a {type(keys).__name__}")
    position, data = stream.tell(), np.frombuffer(raw, np.uint8)
    buffers: dict[str, np.ndarray] = {}
    for key in (k.decode("latin1") if isinstance(k, bytes) else str(k) for k in keys):
        if key not in roots:
            raise _Corrupt(f"storage {key!r} is listed but used by no tensor")
        kind, numel = roots[key]
        if position + 8 > len(raw):
            raise WeightFileError(f"{name} is truncated: storage {key!r} has no size header")
        (count,) = struct.unpack_from("<q", raw, position)  # legacy data is little-endian
        if count != numel:
            raise _Corrupt(f"storage {key!r} holds {count} elements, the pickle says {numel}")
        need, remain = numel * np.dtype(kind.raw).itemsize, len(raw) - position - 8
        if need > remain:
            raise WeightFileError(f"{name} is truncated: storage {key!r} needs {need} bytes, "
                                  f"{remain} remain")
        buffers[key] = data[position + 8: position + 8 + need]
        budget.stored += need
        position += 8 + need
    if missing := sorted(set(roots) - set(buffers)):
        raise _Corrupt(f"storages {missing} have no data")

    def storage_for(pid: Any) -> _Storage:
        kind, key, _, view = _parse_pid(pid)
        buf = buffers[key]
        if view is not None:  # pre-1.0 storage views: (view_key, offset, numel) in elements
            _, start_el, numel = view
            size = np.dtype(kind.raw).itemsize
            if not (0 <= start_el and 0 <= numel and (start_el + numel) * size <= len(buf)):
                raise _Corrupt(f"storage view {view!r} overruns storage {key!r}")
            buf = buf[start_el * size: (start_el + numel) * size]
        return _Storage(buf, kind, "<", budget)

    stream.seek(start)
    return _Unpickler(stream, name, storage_for).load()


# The first bytes tell the formats apart (a zip local header or the end record of an empty archive;
# a legacy file's pickled magic number; a tar header's "ustar" at 257), so they are read alone first.
_HEAD = 512


def load_pth(path: str | os.PathLike) -> Any:
    """The unpickled object with every tensor as a numpy array (nested dicts/lists kept)."""
    name = os.fspath(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise WeightFileError(f"cannot read {name}: {e.strerror or e}") from None
    with f:
        head = f.read(_HEAD)
        if not head:
            raise WeightFileError(f"{name} is empty")
        is_zip = head.startswith((b"PK\x03\x04", b"PK\x05\x06"))
        if not is_zip and not (head[:1] == b"\x80" and _MAGIC_BYTES in head[:32]):
            if head[257:262] == b"ustar":
                raise WeightFileError(f"{name} is a tar-format torch file (torch < 0.4), "
                                      "which is not supported; re-save it with a newer torch")
            raise WeightFileError(f"{name} is neither a torch zip archive nor a legacy torch pickle "
                                  f"(starts with {head[:16]!r})")
        try:
            if is_zip:
                return _load_zip(f, os.fstat(f.fileno()).st_size, name)
            return _load_legacy(head + f.read(), name)  # a stream of pickles: read whole
        except WeightFileError:
            raise
        except _Corrupt as e:
            raise WeightFileError(f"{name} is corrupted: {e}") from None
        except Exception as e:  # whatever the unpickler, zipfile or numpy raised on bad input
            detail = " ".join(f"{type(e).__name__}: {e}".split())[:300]
            if isinstance(e, EOFError) or "truncated" in detail.lower():
                raise WeightFileError(f"{name} is truncated: its pickle data ends early") from None
            raise WeightFileError(f"{name} is corrupted: {detail}") from None


# Bounds of a flattened state dict (real ones nest a few levels and spell well under a million
# characters of names); they keep flattening linear in the pickle's size.
_MAX_DEPTH, _MAX_NAME_CHARS = 64, 1 << 24


def _flatten(obj: Any, name: str) -> dict[str, Any]:
    """``{dotted name: leaf}`` of nested dicts/lists/tuples; strings and None are metadata, not
    tensors. The pickle memo lets a few bytes build a container that contains itself or that
    appears in many places (``L(n+1) = [Ln, Ln]``), so cycles are refused and the characters of
    the names made (the walk's whole work) are counted against ``_MAX_NAME_CHARS``."""
    out: dict[str, Any] = {}
    inside: dict[int, str] = {}  # id -> name of each container on the current path
    chars = 0

    def walk(obj: Any, prefix: str, depth: int) -> None:
        nonlocal chars
        chars += len(prefix) + 1
        if chars > _MAX_NAME_CHARS:
            raise WeightFileError(f"refusing to load {name}: its nested containers spell over "
                                  f"{_MAX_NAME_CHARS} characters of names (one list or dict "
                                  "repeated many times over)")
        if isinstance(obj, Mapping):
            items = obj.items()
        elif isinstance(obj, (list, tuple)):
            items = enumerate(obj)
        else:
            if isinstance(obj, (np.ndarray, np.generic, int, float, complex)):
                out[prefix] = obj
            return
        if id(obj) in inside:
            first = repr(inside[id(obj)]) if inside[id(obj)] else "the top-level object"
            raise WeightFileError(f"refusing to load {name}: {prefix!r} is {first} again, inside "
                                  "itself (a cyclic pickle is not a state dict)")
        if depth == _MAX_DEPTH:
            raise WeightFileError(f"refusing to load {name}: {prefix!r} nests deeper than "
                                  f"{_MAX_DEPTH} levels")
        inside[id(obj)] = prefix
        for key, value in items:
            walk(value, f"{prefix}.{key}" if prefix else str(key), depth + 1)
        del inside[id(obj)]

    walk(obj, "", 0)
    return out


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A flat {name: array} state dict: unwraps a top-level {'state_dict': ...} or {'model': ...}
    wrapper if present, flattens nested dicts with '.', drops nothing; raises WeightFileError if
    no tensors are found."""
    obj = load_pth(path)
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    flat = _flatten(obj, os.fspath(path))  # lists flatten by index; plain numbers become 0-d arrays
    if not any(isinstance(v, np.ndarray) for v in flat.values()):
        raise WeightFileError(f"{os.fspath(path)} holds no tensors "
                              f"(it unpickles to a {type(obj).__name__})")
    return {key: np.asarray(value) for key, value in flat.items()}
