"""ResNet-50: parity with torch references of both layouts, key mapping errors, receptive fields."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxvis.convert.mapping import assign, param_paths
from jaxvis.convert.resnet_tables import SOURCES
from jaxvis.convert.sources import convert_file, convert_tensors
from jaxvis.errors import ConversionError
from jaxvis.models.registry import ModelConfig, build

SOURCE = {s.name: s for s in SOURCES}
PARITY_LAYERS = ("conv1", "pool1", "layer1.0", "layer2.0.conv2", "layer3.5", "layer4.2", "fc")
TOL = 1e-5


# ---- torch references (torchvision's ResNet-50 v1.5 and Keras' v1, same key names) -------------

def _torch_resnet50(variant: str):
    torch = pytest.importorskip("torch")
    nn, F = torch.nn, torch.nn.functional
    v1 = variant == "v1"
    eps = 1.001e-5 if v1 else 1e-5

    class Bottleneck(nn.Module):
        def __init__(self, c_in, width, stride):
            super().__init__()
            s1, s2 = (stride, 1) if v1 else (1, stride)
            self.conv1 = nn.Conv2d(c_in, width, 1, stride=s1, bias=v1)
            self.bn1 = nn.BatchNorm2d(width, eps=eps)
            self.conv2 = nn.Conv2d(width, width, 3, stride=s2, padding=1, bias=v1)
            self.bn2 = nn.BatchNorm2d(width, eps=eps)
            self.conv3 = nn.Conv2d(width, 4 * width, 1, bias=v1)
            self.bn3 = nn.BatchNorm2d(4 * width, eps=eps)
            self.downsample = None
            if stride != 1 or c_in != 4 * width:
                self.downsample = nn.Sequential(nn.Conv2d(c_in, 4 * width, 1, stride=stride, bias=v1),
                                                nn.BatchNorm2d(4 * width, eps=eps))

        def forward(self, x, acts, name):
            h = self.bn1(self.conv1(x)); acts[f"{name}.conv1"] = h; h = F.relu(h)
            h = self.bn2(self.conv2(h)); acts[f"{name}.conv2"] = h; h = F.relu(h)
            h = self.bn3(self.conv3(h)); acts[f"{name}.conv3"] = h
            out = h + (x if self.downsample is None else self.downsample(x))
            acts[name] = out
            return F.relu(out)

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=0 if v1 else 3, bias=v1)
            self.bn1 = nn.BatchNorm2d(64, eps=eps)
            c_in = 64
            for stage, (n, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
                blocks = []
                for b in range(n):
                    blocks.append(Bottleneck(c_in, width, 2 if b == 0 and stage > 1 else 1))
                    c_in = 4 * width
                setattr(self, f"layer{stage}", nn.Sequential(*blocks))
            self.fc = nn.Linear(2048, 1000)

        def forward(self, x):
            acts = {}
            if v1:
                x = F.pad(x, (3, 3, 3, 3))
            x = self.bn1(self.conv1(x)); acts["conv1"] = x; x = F.relu(x)
            x = F.max_pool2d(F.pad(x, (1, 1, 1, 1)), 3, 2) if v1 else F.max_pool2d(x, 3, 2, padding=1)
            acts["pool1"] = x
            for stage in range(1, 5):
                for b, block in enumerate(getattr(self, f"layer{stage}")):
                    x = block(x, acts, f"layer{stage}.{b}")
            x = acts["avgpool"] = x.mean(dim=(2, 3), keepdim=True)
            acts["fc"] = self.fc(x.flatten(1))[:, :, None, None]
            return acts

    torch.manual_seed(0)
    net = ResNet()
    with torch.no_grad():  # random weights and BatchNorm statistics, so no BatchNorm is an identity
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0, (2 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.uniform_(-0.1, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype(np.float32)


def _reference(net, image):
    """float64 torch activations (NCHW -> NHWC) for float32 weights."""
    torch = pytest.importorskip("torch")
    with torch.no_grad():
        acts = net.double()(torch.from_numpy(image.transpose(0, 3, 1, 2)).double())
    net.float()
    return {k: v.numpy().transpose(0, 2, 3, 1) for k, v in acts.items()}


def _check_parity(model, ref, image, label):
    acts = nnx.jit(lambda m, x: m(x))(model, jnp.asarray(image))  # one compile beats eager ops
    errors = {}
    for name in PARITY_LAYERS:
        a, b = np.asarray(acts.pre[name], np.float64), ref[name]
        assert a.shape == b.shape, (name, a.shape, b.shape)
        errors[name] = float(np.abs(a - b).max() / np.abs(b).max())
    print(f"\n{label} relative errors: " + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
    assert max(errors.values()) < TOL, errors
    return errors


def _same_params(a, *others):
    sa = dict(nnx.to_flat_state(nnx.state(a)))
    for b in others:
        sb = dict(nnx.to_flat_state(nnx.state(b)))
        assert sa.keys() == sb.keys()
        for k in sa:
            np.testing.assert_array_equal(np.asarray(sa[k].get_value()), np.asarray(sb[k].get_value()))


def test_torchvision_parity(tmp_path, image):
    torch = pytest.importorskip("torch")
    net = _torch_resnet50("v1.5")
    ref = _reference(net, image)
    models = []
    for fmt, zipped in (("zip", True), ("legacy", False)):
        path = tmp_path / f"resnet50_{fmt}.pth"
        torch.save(net.state_dict(), path, _use_new_zipfile_serialization=zipped)
        model, source, meta = convert_file(path, model="resnet50")
        assert source.name == "torchvision-resnet50" and meta["source"] == source.name
        models.append(model)
    _same_params(*models)  # both serialisations give the very same weights
    _check_parity(models[0], ref, image, "torchvision v1.5")

    headless = {k: v.numpy() for k, v in net.state_dict().items() if not k.startswith("fc.")}
    path = tmp_path / "resnet50_notop.pth"
    torch.save({k: torch.from_numpy(v) for k, v in headless.items()}, path)
    model, source, _ = convert_file(path, model="resnet50")
    assert source.name == "torchvision-resnet50-notop" and not model.include_top
    full = dict(nnx.to_flat_state(nnx.state(models[0])))
    for path, var in nnx.to_flat_state(nnx.state(model)):
        np.testing.assert_array_equal(np.asarray(var.get_value()), np.asarray(full[path].get_value()))
    assert len(full) == len(nnx.to_flat_state(nnx.state(model))) + 2  # fc/kernel, fc/bias


def _keras_dict(net, style: str) -> dict[str, np.ndarray]:
    """The flat Keras-layout dict (``layer/short`` legacy or ``layer/<index>`` Keras 3 order)."""
    sd = {k: v.numpy() for k, v in net.state_dict().items()}
    out = {}

    def put(layer, items):
        for i, (short, value) in enumerate(items):
            out[f"{layer}/{short if style == 'legacy' else i}"] = value

    def conv_bn(torch_conv, torch_bn, keras):
        put(f"{keras}_conv", [("kernel", sd[f"{torch_conv}.weight"].transpose(2, 3, 1, 0)),
                              ("bias", sd[f"{torch_conv}.bias"])])
        put(f"{keras}_bn", [("gamma", sd[f"{torch_bn}.weight"]), ("beta", sd[f"{torch_bn}.bias"]),
                            ("moving_mean", sd[f"{torch_bn}.running_mean"]),
                            ("moving_variance", sd[f"{torch_bn}.running_var"])])

    conv_bn("conv1", "bn1", "conv1")
    for stage, n in enumerate((3, 4, 6, 3), start=1):
        for b in range(n):
            t, k = f"layer{stage}.{b}", f"conv{stage + 1}_block{b + 1}"
            for i in (1, 2, 3):
                conv_bn(f"{t}.conv{i}", f"{t}.bn{i}", f"{k}_{i}")
            if b == 0:
                conv_bn(f"{t}.downsample.0", f"{t}.downsample.1", f"{k}_0")
    put("predictions", [("kernel", sd["fc.weight"].T), ("bias", sd["fc.bias"])])
    return out


def _write_legacy_h5(path, flat):
    """A Keras 2 ``save_weights`` style file: ``layer_names``, per layer ``weight_names``."""
    h5py = pytest.importorskip("h5py")
    layers = {}
    for key, value in flat.items():
        layer, short = key.split("/")
        layers.setdefault(layer, {})[f"{layer}/{short}:0"] = value
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [name.encode() for name in layers]
        for layer, weights in layers.items():
            group = f.create_group(layer)
            group.attrs["weight_names"] = [name.encode() for name in weights]
            for name, value in weights.items():
                group.create_dataset(name, data=value)


def test_keras_parity(image, tmp_path):
    net = _torch_resnet50("v1")
    ref = _reference(net, image)
    path = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
    _write_legacy_h5(path, _keras_dict(net, "legacy"))
    model, source, _ = convert_file(path, model="resnet50")
    assert source.name == "keras-resnet50-top"
    models = [model]
    for style in ("legacy", "keras3"):
        flat = _keras_dict(net, style)
        found = [s for s in SOURCES if s.format == "keras" and s.detect(flat)]
        assert [s.name for s in found] == ["keras-resnet50-top"]
        models.append(convert_tensors(flat, found[0], f"keras {style}"))
        notop = {k: v for k, v in flat.items() if not k.startswith("predictions/")}
        assert [s.name for s in SOURCES if s.format == "keras" and s.detect(notop)] == ["keras-resnet50"]
    _same_params(*models)  # the .h5 file and both in-memory key styles agree
    assert models[0].variant == "v1"
    _check_parity(models[0], ref, image, "keras v1")


# ---- key mapping errors (no torch needed) ------------------------------------------------------

def _fake_torchvision() -> dict[str, np.ndarray]:
    """Right keys and shapes, zero values: from the model's own parameter shapes."""
    flat = {}
    model = build(SOURCE["torchvision-resnet50"].model)
    for path, var in nnx.to_flat_state(nnx.state(model)):
        shape = var.get_value().shape
        parts = [str(p) for p in path]
        leaf = parts[-1]
        mod = ".".join(parts[:-1]).replace("downsample_conv", "downsample.0").replace(
            "downsample_bn", "downsample.1")
        if leaf == "kernel" and mod == "fc":
            flat["fc.weight"] = np.zeros(shape[::-1], np.float32)
        elif leaf == "kernel":
            flat[f"{mod}.weight"] = np.zeros((shape[3], shape[2], shape[0], shape[1]), np.float32)
        else:
            key = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}[leaf]
            flat[f"{mod}.{key}"] = np.zeros(shape, np.float32)
        if leaf == "var":
            flat[f"{mod}.num_batches_tracked"] = np.zeros((), np.int64)
    return flat


def test_key_errors():
    source = SOURCE["torchvision-resnet50"]
    flat = _fake_torchvision()
    assert len(flat) == 267 + 53  # parameters + num_batches_tracked per BatchNorm
    assert [s.name for s in SOURCES if s.format == "torch" and s.detect(flat)] == ["torchvision-resnet50"]
    convert_tensors(flat, source, "ok.pth")  # num_batches_tracked is ignored

    missing = dict(flat)
    del missing["layer3.4.bn2.running_var"]
    with pytest.raises(ConversionError, match=r"no tensor 'layer3\.4\.bn2\.running_var'"):
        convert_tensors(missing, source, "missing.pth")

    extra = {**flat, "layer2.1.extra.weight": np.zeros(3, np.float32)}
    with pytest.raises(ConversionError, match=r"unused.*layer2\.1\.extra\.weight"):
        convert_tensors(extra, source, "extra.pth")

    wrong = {**flat, "layer4.0.downsample.0.weight": np.zeros((2048, 1024, 3, 3), np.float32)}
    with pytest.raises(ConversionError, match=r"'layer4\.0\.downsample\.0\.weight' has shape "
                                              r"\(2048, 1024, 3, 3\), expected \(2048, 1024, 1, 1\)"):
        convert_tensors(wrong, source, "wrong.pth")


def test_vgg_state_dict_is_not_resnet(tmp_path):
    vgg = {f"features.{i}.weight": np.zeros((64, 3, 3, 3), np.float32) for i in (0, 2)}
    vgg.update({"classifier.0.weight": np.zeros((10, 10), np.float32)})  # keys are what matters
    assert not any(s.detect(vgg) for s in SOURCES)
    with pytest.raises(ConversionError, match=r"no tensor 'conv1\.weight'"):
        convert_tensors(vgg, SOURCE["torchvision-resnet50"], "vgg19.pth")
    torch = pytest.importorskip("torch")
    path = tmp_path / "vgg19.pth"
    torch.save({k: torch.from_numpy(v) for k, v in vgg.items()}, path)
    with pytest.raises(ConversionError, match="does not look like a resnet50 file"):
        convert_file(path, model="resnet50")


# ---- geometry ----------------------------------------------------------------------------------

def test_catalogue():
    rows = {i.name: i for i in build(ModelConfig.make("resnet50")).layers()}
    expect = {"conv1": (7, 2), "pool1": (11, 4), "layer1.0.conv2": (19, 4), "layer1.0": (19, 4),
              "layer1.2": (35, 4), "layer2.0": (43, 8), "layer2.3": (91, 8), "layer3.5": (267, 16),
              "layer4.2": (427, 32)}
    assert {k: (rows[k].rf, rows[k].jump) for k in expect} == expect
    assert rows["layer2.0"].canvas == rows["layer2.0.conv3"].canvas
    v1 = {i.name: i for i in build(ModelConfig.make("resnet50", variant="v1")).layers()}
    assert (v1["layer2.0"].rf, v1["layer2.0"].jump, v1["layer4.2"].rf) == (51, 8, 483)
    names = [i.name for i in build(ModelConfig.make("resnet50", include_top=True)).layers()]
    assert names[:6] == ["conv1", "pool1", "layer1.0.conv1", "layer1.0.conv2", "layer1.0.conv3",
                         "layer1.0"]
    assert names[-2:] == ["avgpool", "fc"] and len(names) == 2 + 16 * 4 + 2


@functools.lru_cache(maxsize=None)
def _positive(variant: str):
    """Constant averaging kernels, BatchNorm y = x + 0.1 (biases 0.1): every activation > 0, so no
    ReLU cuts a gradient and the gradient's support is exactly what the receptive field says."""
    model = build(ModelConfig.make("resnet50", variant=variant))
    params = {}
    for path, shape in param_paths(model).items():
        leaf = path.rsplit("/", 1)[1]
        if leaf == "kernel":
            params[path] = np.full(shape, 1 / np.prod(shape[:-1]), np.float32)
        else:
            params[path] = np.full(shape, {"scale": 1.0, "var": 1.0, "mean": 0.0, "bias": 0.1}[leaf],
                                   np.float32)
    return assign(model, params, "positive")


@nnx.jit(static_argnames=("name", "c"))
def _grad_support(model, x, name, c):
    """Summed |d unit / d input| over images and colours, for unit (c, c, channel 0) of ``name``."""
    def unit(x):
        return model(x, upto=name).pre[name][:, c, c, 0].sum()
    return jnp.abs(jax.grad(unit)(x)).sum(axis=(0, 3))


@pytest.mark.parametrize("variant,name", [("v1.5", "conv1"), ("v1.5", "pool1"), ("v1.5", "layer1.0"),
                                          ("v1.5", "layer2.0"), ("v1", "layer2.0")])
def test_receptive_field_is_gradient_support(variant, name):
    model = _positive(variant)
    info = model.layer(name)
    # many images: a max pool passes the gradient to one input of its window, so each single
    # image sees only part of the field; over 48 images every window position is the max somewhere
    x = jax.random.uniform(jax.random.key(0), (48, info.canvas, info.canvas, 3), minval=0.1, maxval=1.0)
    support = np.asarray(_grad_support(model, x, name, info.centre)) > 0
    lo = (info.canvas - info.rf) // 2
    expected = np.zeros_like(support)
    expected[lo:lo + info.rf, lo:lo + info.rf] = True
    assert (info.canvas - info.rf) % 2 == 0
    assert not (support & ~expected).any(), f"{name}: gradient outside the receptive field"
    assert support.all(where=expected), f"{name}: receptive field not covered"
