"""Source detection: which layout a file is, read from its keys (here: headless torchvision VGG)."""

import jax
import numpy as np
import pytest
from flax import nnx

from jaxvis.convert.sources import candidates, convert_file
from jaxvis.models.registry import build
from tests.helpers import rel_err
from tests.models.test_vgg import torch_activations, torch_vgg


def test_headless_torchvision_vgg19_file(tmp_path):
    """``model.features`` weights alone (no classifier) convert to the headless VGG-19, equal to torch."""
    torch = pytest.importorskip("torch")
    ref = torch_vgg(19, padding=1, top=False)
    state = ref.state_dict()
    assert all(k.startswith("features.") for k in state)
    path = tmp_path / "vgg19_features.pth"
    torch.save(state, path)
    net, source, meta = convert_file(path)
    assert source.name == "torchvision-vgg19-features" and meta["source"] == source.name
    assert not net.include_top and source.model.name == "vgg19"
    assert source.convention.channel_order == "RGB"
    # every conv in place (torch's OIHW read as HWIO by torch itself); the forward pass through the
    # first blocks checks the layout end to end (the whole network would cost a long compile here)
    convs = [m for m in ref.features if isinstance(m, torch.nn.Conv2d)]
    for (name, _), conv in zip(net.conv_names(), convs, strict=True):
        params = getattr(net.convs, name) if hasattr(net.convs, name) else net.convs[name]
        np.testing.assert_array_equal(params.kernel.get_value(), conv.weight.detach().permute(2, 3, 1, 0).numpy())
        np.testing.assert_array_equal(params.bias.get_value(), conv.bias.detach().numpy())
    same = nnx.merge(nnx.graphdef(build(source.model.with_options(padding="SAME"))), nnx.state(net))
    x = np.random.default_rng(3).normal(size=(2, 20, 20, 3)).astype(np.float32)
    got = jax.jit(lambda n, x: n(x, upto="conv3_1").pre)(same, x)
    want = torch_activations(ref, x, top=False, upto="conv3_1")
    errors = {k: rel_err(got[k], want[k]) for k in ("conv1_1", "conv2_2", "pool2", "conv3_1")}
    assert max(errors.values()) < 1e-5, errors


def test_headless_torchvision_vgg16_keys_pick_vgg16():
    """A VGG-16 ``features`` state dict is the headless VGG-16, not a VGG-19 or a classifier file."""
    torch = pytest.importorskip("torch")
    keys = {k: v.numpy() for k, v in torch_vgg(16, padding=1, top=False).state_dict().items()}
    assert [s.name for s in candidates("torch", keys, None)] == ["torchvision-vgg16-features"]
    with_top = {**keys, "classifier.0.weight": np.zeros(1), "classifier.6.weight": np.zeros(1)}
    assert [s.name for s in candidates("torch", with_top, None)] == ["torchvision-vgg16"]
    # a batch-norm VGG numbers its features differently: not taken for a plain headless VGG
    batch_norm = {**keys, "features.1.running_mean": np.zeros(64)}
    assert "torchvision-vgg16-features" not in [s.name for s in candidates("torch", batch_norm, None)]
