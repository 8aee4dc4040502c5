"""CONTRIBUTING.md's "A new model", followed step by step: a network module, a tables module and
one registry row make a model that converts a weight file, is checked, catalogued and swept."""

from __future__ import annotations

import numpy as np
import pytest

import jaxvis
from jaxvis.models.registry import MODELS, register_model

torch = pytest.importorskip("torch")


@pytest.fixture
def tiny_registered():
    register_model("tiny", "tests.recipes.tiny_net", "TinyNet", tables="tests.recipes.tiny_tables")
    yield
    del MODELS["tiny"]


def test_a_model_from_its_module_tables_and_one_row(tiny_registered, tmp_path, capsys):
    state = {"features.0.weight": torch.randn(6, 3, 3, 3) * 0.2, "features.0.bias": torch.randn(6) * 0.1,
             "features.2.weight": torch.randn(4, 6, 3, 3) * 0.2, "features.2.bias": torch.randn(4) * 0.1}
    path = tmp_path / "tiny.pth"
    torch.save(state, path)

    from jaxvis.cli import main
    assert main(["layers", "--model", "tiny"]) == 0
    assert "conv2" in capsys.readouterr().out
    entry = jaxvis.convert_weights(path, root=tmp_path / "weights")  # source detected from the file's keys
    model = jaxvis.load(str(entry))
    assert model.meta["source"] == "tiny-torch"

    from tests.recipes.tiny_net import forward_reference
    x = np.random.default_rng(0).uniform(0, 255, (2, 9, 9, 3)).astype(np.float32)
    ours = np.asarray(model(x, upto="conv2").pre["conv2"])
    reference = np.asarray(forward_reference({k: v.numpy() for k, v in state.items()}, model.convention(x)))
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)

    info = model.network.layer("conv2")
    assert (info.rf, info.canvas) == (5, 5)
    out = jaxvis.sweep(model, "conv2", "all", images=2, steps=10, radius=40.0)["conv2"]
    assert out["images"].shape == (4, 2, 5, 5, 3)
