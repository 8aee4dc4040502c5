"""VGG: catalogue arithmetic, receptive fields measured on the network, parity with a torch reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxvis.convert.mapping import assign, conv_from_torch, param_paths
from jaxvis.convert.sources import convert_file, convert_tensors, get_source
from jaxvis.errors import ConversionError, UnknownNameError
from jaxvis.models.registry import ModelConfig, build
from jaxvis.models.vgg import BLOCKS, VGG, WIDTHS
from tests.helpers import rel_err


def test_catalogue_matches_the_paper():
    layers = {r.name: r for r in build(ModelConfig.make("vgg19")).layers()}
    assert [layers[n].rf for n in ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")] == [3, 10, 24, 68, 156]
    assert [layers[n].jump for n in ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")] == [1, 2, 4, 8, 16]
    assert all(r.canvas == r.rf and r.out == 1 for r in layers.values())  # VALID: the RF canvas gives 1x1
    assert (layers["conv3_1"].channels, layers["pool5"].rf) == (256, 268)
    assert len(build(ModelConfig.make("vgg16")).layers()) == 13 + 5


@pytest.mark.parametrize("padding", ["VALID", "SAME"])
@pytest.mark.parametrize("layer", ["conv1_1", "pool1", "conv2_2", "conv3_1"])
def test_receptive_field_is_what_the_network_sees(padding, layer):
    """Gradient support of the centre unit on its canvas is exactly the centred rf x rf square."""
    # positive weights and inputs: no ReLU is ever off and average pooling passes every gradient
    # (max pooling would pick one pixel per window), so every pixel in the RF has a gradient
    net = build(ModelConfig.make("vgg19", padding=padding, pooling="avg"))
    net = assign(net, {k: np.full(s, 0.01, np.float32) for k, s in param_paths(net).items()}, "ones")
    info = net.layer(layer)
    x = jnp.ones((1, info.canvas, info.canvas, 3))
    # jitted with the network as an argument: op by op, VGG's layers would compile ~800 small programs
    grad = jax.jit(jax.grad(lambda x, n: n(x, upto=layer).pre[layer][0, info.centre, info.centre].sum()))(x, net)
    support = np.argwhere(np.abs(np.asarray(grad[0]).sum(-1)) > 0)
    lo, hi = support.min(0), support.max(0)
    assert (hi - lo + 1).tolist() == [info.rf, info.rf]
    assert lo.tolist() == [(info.canvas - info.rf) // 2] * 2 and len(support) == info.rf ** 2


# --- a reference VGG in torch, in torchvision's layout -------------------------------------------

def torch_vgg(depth: int, padding: int, top: bool):
    torch = pytest.importorskip("torch", reason="torch is the parity reference (test extra)")
    nn = torch.nn
    layers, c_in = [], 3
    for n, width in zip(BLOCKS[depth], WIDTHS):
        for _ in range(n):
            layers += [nn.Conv2d(c_in, width, 3, padding=padding), nn.ReLU()]
            c_in = width
        layers.append(nn.MaxPool2d(2, 2))
    model = nn.Module()
    model.features = nn.Sequential(*layers)
    if top:
        model.classifier = nn.Sequential(nn.Linear(25088, 4096), nn.ReLU(), nn.Dropout(),
                                         nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, 1000))
    torch.manual_seed(0)
    for m in model.modules():  # scale so activations stay O(1) through 16 layers
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.normal_(m.bias, std=0.1)
    return model.eval()


def torch_activations(model, x_nhwc, top: bool, depth: int = 19, upto: str | None = None):
    """{name: NHWC pre-ReLU activation} of the torch reference, named like jaxvis."""
    import torch

    out, x = {}, torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))
    names = iter([f"conv{b}_{i}" for b, n in enumerate(BLOCKS[depth], 1)
                  for i in range(1, n + 1)])
    block = 1
    with torch.no_grad():
        for m in model.features:
            x = m(x)
            if isinstance(m, torch.nn.Conv2d):
                out[next(names)] = x
            elif isinstance(m, torch.nn.MaxPool2d):
                out[f"pool{block}"] = x
                block += 1
            if upto in out:
                break
        if top:
            flat = torch.flatten(x, 1)
            for i, name in ((0, "fc6"), (3, "fc7"), (6, "fc8")):
                flat = model.classifier[i](flat)
                out[name] = flat[:, :, None, None]
                flat = torch.relu(flat)
    return {k: v.numpy().transpose(0, 2, 3, 1) for k, v in out.items()}


def gatys_state(model):
    names = [f"conv{b}_{i}" for b, n in enumerate(BLOCKS[19], 1) for i in range(1, n + 1)]
    convs = [m for m in model.features if m.__class__.__name__ == "Conv2d"]
    state = {}
    for name, conv in zip(names, convs):
        state[f"{name}.weight"], state[f"{name}.bias"] = conv.weight.detach(), conv.bias.detach()
    return state


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_parity_with_torch_through_a_pth_file(tmp_path, legacy):
    torch = pytest.importorskip("torch")
    ref = torch_vgg(19, padding=1, top=False)
    path = tmp_path / "vgg_conv.pth"
    torch.save(gatys_state(ref), path, _use_new_zipfile_serialization=not legacy)
    net, source, meta = convert_file(path, model="vgg19")
    assert source.name == "gatys-vgg19" and len(meta["source_sha256"]) == 64
    x = np.random.default_rng(0).normal(size=(2, 40, 40, 3)).astype(np.float32)
    same = build(source.model.with_options(padding="SAME"))
    same = nnx.merge(nnx.graphdef(same), nnx.state(net))
    got = jax.jit(lambda n, x: n(x).pre)(same, x)
    want = torch_activations(ref, x, top=False)
    errors = {k: rel_err(got[k], want[k]) for k in ("conv1_1", "conv2_2", "pool3", "conv4_4", "conv5_4")}
    assert max(errors.values()) < 1e-5, errors


def test_parity_with_torch_valid_canvas():
    """VALID mode equals the SAME network's centre unit when the canvas holds the whole RF."""
    torch = pytest.importorskip("torch")
    ref = torch_vgg(19, padding=0, top=False)
    net = convert_tensors({k: v.numpy() for k, v in gatys_state(ref).items()}, get_source("gatys-vgg19"), "mem")
    info = net.layer("conv3_1")
    x = np.random.default_rng(1).normal(size=(3, info.canvas, info.canvas, 3)).astype(np.float32)
    got = jax.jit(lambda n, x: n(x, upto="conv3_1").pre["conv3_1"])(net, x)
    assert got.shape == (3, 1, 1, 256)
    assert rel_err(got, torch_activations(ref, x, top=False, upto="conv3_1")["conv3_1"]) < 1e-5


def test_torchvision_layout_with_classifier():
    torch = pytest.importorskip("torch")
    ref = torch_vgg(16, padding=1, top=True)
    state = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    net = convert_tensors(state, get_source("torchvision-vgg16"), "mem")
    net = nnx.merge(nnx.graphdef(build(ModelConfig.make("vgg16", include_top=True, padding="SAME"))), nnx.state(net))
    x = np.random.default_rng(2).normal(size=(1, 224, 224, 3)).astype(np.float32)
    got = jax.jit(lambda n, x: n(x).pre)(net, x)
    want = torch_activations(ref, x, top=True, depth=16)
    for k in ("pool5", "fc6", "fc8"):  # fc6 checks the (C, H, W) flatten order of the classifier
        assert rel_err(got[k], want[k]) < 1e-5, k


@pytest.mark.parametrize("layout", ["legacy", "keras3"])
def test_keras_layout(layout):
    torch = pytest.importorskip("torch")
    ref = torch_vgg(19, padding=1, top=False)
    convs = [m for m in ref.features if isinstance(m, torch.nn.Conv2d)]
    names = [f"block{b}_conv{i}" for b, n in enumerate(BLOCKS[19], 1) for i in range(1, n + 1)]
    flat = {}
    for k, (name, conv) in enumerate(zip(names, convs)):
        layer = name if layout == "legacy" else ("conv2d" if k == 0 else f"conv2d_{k}")
        kernel, bias = ("kernel", "bias") if layout == "legacy" else ("0", "1")
        flat[f"{layer}/{kernel}"] = conv_from_torch(conv.weight.detach().numpy())
        flat[f"{layer}/{bias}"] = conv.bias.detach().numpy()
    from jaxvis.convert.sources import candidates
    (source,) = candidates("keras", flat, "vgg19")
    net = convert_tensors(flat, source, "mem")
    net = nnx.merge(nnx.graphdef(build(source.model.with_options(padding="SAME"))), nnx.state(net))
    x = np.random.default_rng(3).normal(size=(1, 32, 32, 3)).astype(np.float32)
    got = jax.jit(lambda n, x: n(x).pre)(net, x)
    want = torch_activations(ref, x, top=False)
    assert max(rel_err(got[k], want[k]) for k in ("conv1_1", "conv3_4", "conv5_4")) < 1e-5


def test_key_mapping_errors_name_the_key():
    rng = np.random.default_rng(0)
    net = build(ModelConfig.make("vgg19"))
    state = {}
    for name, layer in net.convs.items():
        hwio = layer.kernel.get_value().shape
        state[f"{name}.weight"] = rng.normal(size=(hwio[3], hwio[2], 3, 3)).astype(np.float32)
        state[f"{name}.bias"] = np.zeros(hwio[3], np.float32)
    source = get_source("gatys-vgg19")
    convert_tensors(state, source, "ok")
    with pytest.raises(ConversionError, match="conv3_2.weight"):
        convert_tensors({k: v for k, v in state.items() if k != "conv3_2.weight"}, source, "f")
    with pytest.raises(ConversionError, match="unused.*conv6_1.bias"):
        convert_tensors({**state, "conv6_1.bias": np.zeros(3)}, source, "f")
    with pytest.raises(ConversionError, match=r"conv2_1.weight.*\(128, 64, 3, 3\)"):
        convert_tensors({**state, "conv2_1.weight": np.zeros((128, 64, 5, 5))}, source, "f")


def test_unknown_layer_and_model():
    net = build(ModelConfig.make("vgg19"))
    with pytest.raises(UnknownNameError, match="conv9_1.*valid: conv1_1"):
        net(jnp.ones((1, 3, 3, 3)), upto="conv9_1")
    with pytest.raises(UnknownNameError, match="model 'vgg20'.*vgg19"):
        ModelConfig.make("vgg20")


def test_assign_leaves_its_input_alone():
    """Filling a network (e.g. normalising a loaded model) returns a new one; the input keeps
    its weights."""
    base = build(ModelConfig.make("vgg16"), abstract=False)
    before = np.asarray(base.convs["conv1_1"].kernel[...]).copy()
    params = {k: np.zeros(s, np.float32) for k, s in param_paths(base).items()}
    filled = assign(base, params, "zeros")
    assert not np.asarray(filled.convs["conv1_1"].kernel[...]).any()
    np.testing.assert_array_equal(np.asarray(base.convs["conv1_1"].kernel[...]), before)


@pytest.mark.parametrize("layer", ["conv1_1", "conv2_2"])
def test_readout_computes_one_direction_of_the_layer(layer):
    """``unit_response`` projects the layer's kernel on the direction (one output channel); it must
    equal the full layer's pre-activation @ direction, in value and in the input gradient."""
    net = VGG(16, rngs=nnx.Rngs(0))
    info = net.layer(layer)
    x = jax.random.normal(jax.random.key(1), (3, info.canvas, info.canvas, 3)) * 50
    v = jax.random.normal(jax.random.key(2), (info.channels,))
    assert net.reads_out(layer) and not net.reads_out("pool1")
    c = info.centre

    def full(x, net):
        return net(x, upto=layer).pre[layer][:, c, c, :] @ v

    def read(x, net):
        return net.unit_response(x, layer, c, v)[0]

    assert jax.eval_shape(lambda x: net(x, upto=layer, readout=v).pre[layer], x).shape[-1] == 1
    assert rel_err(jax.jit(read)(x, net), jax.jit(full)(x, net)) < 1e-4  # float32 sums in another order
    g_read = jax.jit(jax.grad(lambda x, n: jnp.sum(jnp.sin(read(x, n) / 100))))(x, net)
    g_full = jax.jit(jax.grad(lambda x, n: jnp.sum(jnp.sin(full(x, n) / 100))))(x, net)
    assert rel_err(g_read, g_full) < 1e-4
    with pytest.raises(ValueError, match="cannot read out"):
        net(x, upto="pool1", readout=v[:64])
