"""A model added the documented way: its weight-file tables (a torch state dict ``features.{0,2}``)."""

from __future__ import annotations

from jaxvis.convert.mapping import conv_from_torch
from jaxvis.convert.sources import Source
from jaxvis.models.convention import InputConvention
from jaxvis.models.registry import ModelConfig


def table(src, model):
    out = {}
    for index, (name, c_in, c_out) in enumerate([("conv1", 3, model.width), ("conv2", model.width, 4)]):
        out[f"{name}/kernel"] = conv_from_torch(src.take(f"features.{2 * index}.weight", (c_out, c_in, 3, 3)))
        out[f"{name}/bias"] = src.take(f"features.{2 * index}.bias", (c_out,))
    return out


SOURCES = [Source(
    name="tiny-torch", model=ModelConfig.make("tiny"),
    convention=InputConvention("RGB", 1 / 255, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
    format="torch", table=table,
    detect=lambda t: set(t) == {"features.0.weight", "features.0.bias", "features.2.weight", "features.2.bias"},
    description="the recipe test's tiny network")]
