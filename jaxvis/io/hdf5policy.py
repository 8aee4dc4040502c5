"""One reading policy for the HDF5 files jaxvis opens: nothing outside the named file is read, and
no size the file declares is trusted before it has been checked against a budget.

HDF5 can make a read reach beyond the file: an external link opens another file, a virtual dataset
maps other files' datasets (and silently yields its fill value where they are missing), external
raw storage reads a dataset's bytes from any path (the system's password file, or a FIFO that
blocks for ever), and a filter id HDF5 does not know makes it load a plugin library from its plugin
path. Keras and jaxvis write none of these, so each is refused, naming the object, before any of
its data is read. Soft links are refused with them: they only rename hard-linked objects, and
refusing every non-hard link is one check that nothing can route around.

Sizes: a dataset's declared bytes (and those of its chunk, which HDF5 decompresses whole) are
charged to a :class:`Budget` before it is read, so a tiny file declaring a 3 GiB gzip-compressed
dataset is refused at its declaration, not at 3 GB of memory. The caller chooses the budget: a
weight file's total is bounded by its own size (:func:`expansion_budget`).

The module depends only on ``jaxvis.errors``, h5py and numpy, so any layer may use it.
"""

from __future__ import annotations

import os
from math import prod

import h5py
import numpy as np

from jaxvis.errors import JaxvisError

__all__ = ["Budget", "check_dataset", "child", "expansion_budget"]

# Filters built into HDF5 (deflate, shuffle, fletcher32, szip, nbit, scaleoffset) and LZF, which
# h5py registers itself. Any other id makes HDF5 search its plugin path for a shared library.
BUILTIN_FILTERS = {1: "deflate", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit",
                   6: "scaleoffset", 32000: "lzf"}
# How far the data of a file may expand beyond the file's own size, and a floor under which
# expansion cannot hurt: uncompressed weights never expand, and data compressing better than
# 100:1 is padding (the torch reader bounds each zip member the same way).
MAX_EXPANSION, SMALL_BYTES = 100, 16 << 20


def _refuse(obj: h5py.HLObject, what: str) -> JaxvisError:
    return JaxvisError(f"refusing {obj.file.filename}: {what}; jaxvis reads only data stored "
                       "in the file itself")


def child(group: h5py.Group, path: str) -> h5py.Group | h5py.Dataset | None:
    """``group[path]`` following hard links only, one component at a time; ``None`` if absent.

    h5py's own lookup resolves every link on the way, opening another file for an external link,
    so each component's link type is read before the component is entered.
    """
    node: h5py.Group | h5py.Dataset = group
    for part in path.split("/"):
        if not part:
            continue  # 'a//b' and a trailing '/' name the same object as 'a/b'
        if not isinstance(node, h5py.Group):
            return None
        name = part.encode("utf8")
        if not node.id.links.exists(name):
            return None
        kind = node.id.links.get_info(name).type
        if kind != h5py.h5l.TYPE_HARD:
            link = node.get(part, getlink=True) if kind == h5py.h5l.TYPE_SOFT else None
            target = (f"a soft link to {link.path!r}" if link is not None else
                      "an external link" if kind == h5py.h5l.TYPE_EXTERNAL else f"a link of type {kind}")
            where = f"{node.name.rstrip('/')}/{part}"
            raise _refuse(node, f"{where!r} is {target}, not a plain (hard) link")
        node = node[part]
    return node


def check_dataset(ds: h5py.Dataset) -> int:
    """The bytes reading ``ds`` may allocate, after refusing what reads outside the file or what
    numpy cannot hold as numbers (strings, compound and variable-length types, references)."""
    plist = ds.id.get_create_plist()
    if plist.get_layout() == h5py.h5d.VIRTUAL:
        raise _refuse(ds, f"dataset {ds.name!r} is a virtual dataset (its data lives in other files)")
    if plist.get_external_count():
        source = plist.get_external(0)[0].decode("utf8", "replace")
        raise _refuse(ds, f"dataset {ds.name!r} keeps its bytes in external file {source!r}")
    for i in range(plist.get_nfilters()):
        code = plist.get_filter(i)[0]
        if code not in BUILTIN_FILTERS:
            raise _refuse(ds, f"dataset {ds.name!r} needs filter {code}, which would load a plugin "
                              f"(built-in filters: {', '.join(BUILTIN_FILTERS.values())})")
    try:
        dtype = ds.dtype
    except (TypeError, ValueError) as err:  # an HDF5 type h5py cannot map to numpy
        raise JaxvisError(f"{ds.file.filename}: dataset {ds.name!r} has an HDF5 type numpy cannot "
                          f"hold ({' '.join(str(err).split())})") from None
    if dtype.kind not in "biufcV" or dtype.fields or dtype.subdtype or h5py.check_dtype(vlen=dtype):
        raise JaxvisError(f"{ds.file.filename}: dataset {ds.name!r} holds {_describe(dtype)}, "
                          "not numbers")
    if ds.shape is None:
        raise JaxvisError(f"{ds.file.filename}: dataset {ds.name!r} has no data (a null dataspace)")
    return dtype.itemsize * max(prod(ds.shape), prod(ds.chunks or ()))


def _describe(dtype: np.dtype) -> str:
    if h5py.check_string_dtype(dtype) is not None:
        return "strings"
    if h5py.check_vlen_dtype(dtype) is not None:
        return "variable-length sequences"
    if dtype.fields:
        return f"compound records ({', '.join(dtype.fields)})"
    if dtype.subdtype:
        return f"arrays of {dtype.subdtype[1]} {dtype.subdtype[0]}"
    return f"values of numpy type {dtype}"


class Budget:
    """A running total of declared bytes that may not exceed ``limit``: charge every dataset
    before reading any, so that the total is refused before the first byte is read."""

    def __init__(self, limit: int, why: str):
        self.limit, self.why, self.total = limit, why, 0

    def charge(self, ds: h5py.Dataset) -> None:
        """Check ``ds`` (:func:`check_dataset`) and add its declared bytes to the total."""
        need = check_dataset(ds)
        if self.total + need > self.limit:
            before = f" ({self.total + need} with the datasets before it)" if self.total else ""
            raise JaxvisError(f"refusing {ds.file.filename}: dataset {ds.name!r} declares {need} "
                              f"bytes{before}, over the {self.limit} bytes {self.why}")
        self.total += need


def expansion_budget(path: str | os.PathLike) -> Budget:
    """The budget of a file whose data cannot be larger than the file, bar compression."""
    size = os.path.getsize(path)
    return Budget(max(SMALL_BYTES, MAX_EXPANSION * size),
                  f"a file of {size} bytes may hold ({MAX_EXPANSION} times its size, at least "
                  f"{SMALL_BYTES >> 20} MiB)")
