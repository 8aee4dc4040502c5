"""Models by name, and the frozen configuration that rebuilds one exactly (stored with weights)."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
from typing import Any

from flax import nnx

from jaxvis.errors import JaxvisError, unknown
from jaxvis.models.base import Network

@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One row of the model table: where the network class lives (imported lazily, so
    `jaxvis layers` stays quick), the constructor arguments fixed by the name, and the module
    whose ``SOURCES`` list the weight files it converts (``jaxvis.convert.sources.Source``)."""

    module: str
    cls: str
    fixed: tuple[tuple[str, Any], ...] = ()
    tables: str | None = None


# The single registry of models: adding a model is its module, its tables and one row here
# (CONTRIBUTING.md, "A new model"; `register_model` does the same at run time).
MODELS: dict[str, ModelEntry] = {
    "vgg16": ModelEntry("jaxvis.models.vgg", "VGG", (("depth", 16),), "jaxvis.convert.vgg_tables"),
    "vgg19": ModelEntry("jaxvis.models.vgg", "VGG", (("depth", 19),), "jaxvis.convert.vgg_tables"),
    "resnet50": ModelEntry("jaxvis.models.resnet", "ResNet50", (), "jaxvis.convert.resnet_tables"),
    "efficientnet-lite0": ModelEntry("jaxvis.models.efficientnet", "EfficientNetLite0", (),
                                     "jaxvis.convert.efficientnet_tables"),
}


def register_model(name: str, module: str, cls: str, fixed: dict | None = None,
                   tables: str | None = None) -> ModelEntry:
    """Add a model to :data:`MODELS` (new names only)."""
    if name in MODELS:
        raise JaxvisError(f"model {name!r} is already registered; choose another name")
    MODELS[name] = ModelEntry(module, cls, tuple(sorted((fixed or {}).items())), tables)
    return MODELS[name]


def table_modules() -> tuple[str, ...]:
    """The modules holding the weight sources of every registered model, each once."""
    return tuple(dict.fromkeys(e.tables for e in MODELS.values() if e.tables))


def __getattr__(name: str):
    if name == "MODEL_NAMES":  # read when asked, so registered models count
        return tuple(MODELS)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A model name plus its constructor options (e.g. ``padding="VALID"``, ``variant="v1.5"``)."""

    name: str
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def make(cls, name: str, **options) -> "ModelConfig":
        if name not in MODELS:
            raise unknown("model", name, tuple(MODELS))
        return cls(name, tuple(sorted(options.items())))

    def with_options(self, **options) -> "ModelConfig":
        return ModelConfig.make(self.name, **{**dict(self.options), **options})

    def to_json(self) -> dict:
        return {"name": self.name, "options": dict(self.options)}

    @classmethod
    def from_json(cls, d: dict) -> "ModelConfig":
        return cls.make(d["name"], **d.get("options", {}))

    def __str__(self) -> str:
        return f"{self.name}({json.dumps(dict(self.options))[1:-1]})"


def build(config: ModelConfig, *, abstract: bool = True, seed: int = 0) -> Network:
    """The network for ``config``: abstract (shapes only, to be filled with weights) or randomly
    initialised (for tests)."""
    entry = MODELS[config.name]
    cls = getattr(importlib.import_module(entry.module), entry.cls)
    fixed = dict(entry.fixed)

    accepted = [p for p in inspect.signature(cls.__init__).parameters
                if p not in fixed and p not in ("self", "rngs")]
    bad = [k for k, _ in config.options if k not in accepted]
    if bad:
        raise JaxvisError(f"model {config.name} has no option {', '.join(bad)}; "
                          f"its options: {', '.join(accepted)}")

    def make():
        return cls(**fixed, **dict(config.options), rngs=nnx.Rngs(seed))

    return nnx.eval_shape(make) if abstract else make()
