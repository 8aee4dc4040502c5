"""Weight sources: which files jaxvis converts, into which model, with which input convention.

A :class:`Source` ties a file layout (torch ``.pth`` or Keras HDF5) to a model configuration, the
input convention of its weights and a converter table. Tables live beside this module, one per
model family (``vgg_tables``, ``resnet_tables``, ``efficientnet_tables``); each exports ``SOURCES``,
and the model registry (``jaxvis.models.registry.MODELS``) names each model's tables module.

:func:`convert_file` reads a file, picks the source (given, or the one whose key signature the
file matches), runs the table and returns a filled network plus its provenance.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from jaxvis.convert.mapping import SourceTensors, assign
from jaxvis.errors import ConversionError, WeightFileError, unknown
from jaxvis.io.atomic import sha256
from jaxvis.models.base import Network
from jaxvis.models.convention import InputConvention
from jaxvis.models.registry import ModelConfig, build, table_modules

Table = Callable[[SourceTensors, Network], dict[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class Source:
    name: str                   # e.g. "torchvision-vgg19"
    model: ModelConfig          # the structure the file holds (options such as include_top)
    convention: InputConvention
    format: str                 # "torch" or "keras"
    table: Table                # source tensors -> {param path: array}
    detect: Callable[[Mapping[str, np.ndarray]], bool]  # does a file's key set look like this?
    description: str
    ignore: Callable[[str], bool] = lambda key: False   # keys that carry no weights


def all_sources() -> dict[str, Source]:
    """Every weight source of every registered model (``SOURCES`` of its tables module)."""
    sources = {}
    for module in table_modules():
        for source in importlib.import_module(module).SOURCES:
            sources[source.name] = source
    return sources


def get_source(name: str) -> Source:
    sources = all_sources()
    if name not in sources:
        raise unknown("weight source", name, sources)
    return sources[name]


def read_tensors(path: str | os.PathLike) -> tuple[str, dict[str, np.ndarray]]:
    """(format, flat ``{key: array}``) of a torch or Keras weight file, by its content.

    Keras weights are keyed ``{layer}/{weight}`` (e.g. ``block1_conv1/kernel`` in legacy files,
    ``block1_conv1/0`` in Keras 3 files).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightFileError(f"weight file {str(path)!r} does not exist")
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        from jaxvis.convert.keras_h5 import load_keras_h5
        weights = load_keras_h5(path)
        return "keras", {f"{layer}/{short}": array for layer, ws in weights.layers.items()
                         for short, array in ws.items()}
    from jaxvis.convert.torch_pickle import load_state_dict
    return "torch", load_state_dict(path)


def candidates(fmt: str, tensors: Mapping[str, np.ndarray], model: str | None) -> list[Source]:
    return [s for s in all_sources().values()
            if s.format == fmt and (model is None or s.model.name == model) and s.detect(tensors)]


def convert_file(path: str | os.PathLike, *, model: str | None = None,
                 source: str | None = None) -> tuple[Network, Source, dict]:
    """Convert a weight file. Returns (filled network, its source, provenance metadata)."""
    fmt, tensors = read_tensors(path)
    name = Path(path).name
    if source is not None:
        chosen = get_source(source)
        if chosen.format != fmt:
            raise ConversionError(f"{name} is a {fmt} file but source {source!r} reads {chosen.format} files")
        if model is not None and chosen.model.name != model:
            raise ConversionError(f"source {source!r} holds {chosen.model.name}, not {model}")
    else:
        found = candidates(fmt, tensors, model)
        if not found:
            could = [s.name for s in all_sources().values()
                     if s.format == fmt and (model is None or s.model.name == model)]
            sample = ", ".join(list(tensors)[:4])
            what = f"a {model} file" if model else "a known network"
            raise ConversionError(
                f"{name} ({fmt}, keys {sample}, ...) does not look like {what}; "
                f"sources tried: {', '.join(could) or 'none'}")
        if len(found) > 1:
            raise ConversionError(f"{name} matches several sources ({', '.join(s.name for s in found)}); "
                                  "choose one with convert_weights(source)")
        chosen = found[0]
    network = convert_tensors(tensors, chosen, origin=name)
    meta = {"source": chosen.name, "source_file": name, "source_sha256": sha256(path)}
    return network, chosen, meta


def convert_tensors(tensors: Mapping[str, np.ndarray], source: Source, origin: str) -> Network:
    """Run ``source``'s table on in-memory tensors: every tensor used, every parameter filled."""
    src = SourceTensors(tensors, origin, source.ignore)
    model = build(source.model)
    params = source.table(src, model)
    src.finish()
    return assign(model, params, origin)
