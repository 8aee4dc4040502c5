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

# name -> (module, class, fixed keyword arguments). Imported lazily so `jaxvis layers` stays quick.
_MODELS = {
    "vgg16": ("jaxvis.models.vgg", "VGG", {"depth": 16}),
    "vgg19": ("jaxvis.models.vgg", "VGG", {"depth": 19}),
    "resnet50": ("jaxvis.models.resnet", "ResNet50", {}),
    "efficientnet-lite0": ("jaxvis.models.efficientnet", "EfficientNetLite0", {}),
}
MODEL_NAMES = tuple(_MODELS)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A model name plus its constructor options (e.g. ``padding="VALID"``, ``variant="v1.5"``)."""

    name: str
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def make(cls, name: str, **options) -> "ModelConfig":
        if name not in _MODELS:
            raise unknown("model", name, MODEL_NAMES)
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
    module, cls_name, fixed = _MODELS[config.name]
    cls = getattr(importlib.import_module(module), cls_name)

    accepted = [p for p in inspect.signature(cls.__init__).parameters
                if p not in fixed and p not in ("self", "rngs")]
    bad = [k for k, _ in config.options if k not in accepted]
    if bad:
        raise JaxvisError(f"model {config.name} has no option {', '.join(bad)}; "
                          f"its options: {', '.join(accepted)}")

    def make():
        return cls(**fixed, **dict(config.options), rngs=nnx.Rngs(seed))

    return nnx.eval_shape(make) if abstract else make()
