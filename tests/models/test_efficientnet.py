"""EfficientNet-Lite0: parity with a torch reference, the converter table, the catalogue geometry."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxvis.convert.efficientnet_tables import SOURCES
from jaxvis.convert.mapping import param_paths
from jaxvis.convert.sources import convert_file, convert_tensors
from jaxvis.errors import ConversionError
from jaxvis.models.efficientnet import BLOCKS, EfficientNetLite0

SOURCE = SOURCES[0]
PARITY_LAYERS = ("stem", "blocks.0", "blocks.1.depthwise", "blocks.5", "blocks.15", "head", "logits")


# ---------------------------------------------------------------------------------------------
# The torch reference: the lukemelas-style EfficientNet-PyTorch layout of the Lite0 weight file.

def _torch_reference():
    torch = pytest.importorskip("torch")
    nn, F = torch.nn, torch.nn.functional

    class SameConv(nn.Conv2d):
        """Conv2dStaticSamePadding: TF SAME, the odd padding pixel after (bottom/right)."""

        def forward(self, x):
            (kh, kw), (sh, sw) = self.kernel_size, self.stride
            ih, iw = x.shape[-2:]
            ph = max((-(-ih // sh) - 1) * sh + kh - ih, 0)
            pw = max((-(-iw // sw) - 1) * sw + kw - iw, 0)
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
            return F.conv2d(x, self.weight, None, self.stride, 0, 1, self.groups)

    def bn(c):
        return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)

    class Block(nn.Module):
        def __init__(self, a):
            super().__init__()
            self.a = a
            if a.expand != 1:
                self._expand_conv = SameConv(a.c_in, a.c_mid, 1, bias=False)
                self._bn0 = bn(a.c_mid)
            self._depthwise_conv = SameConv(a.c_mid, a.c_mid, a.kernel, a.stride,
                                            groups=a.c_mid, bias=False)
            self._bn1 = bn(a.c_mid)
            self._project_conv = SameConv(a.c_mid, a.c_out, 1, bias=False)
            self._bn2 = bn(a.c_out)

        def forward(self, x, out, i):
            h = x
            if self.a.expand != 1:
                h = F.relu6(self._bn0(self._expand_conv(h)))
                out[f"blocks.{i}.expand"] = h
            h = F.relu6(self._bn1(self._depthwise_conv(h)))
            out[f"blocks.{i}.depthwise"] = h
            h = self._bn2(self._project_conv(h))
            if self.a.stride == 1 and self.a.c_in == self.a.c_out:
                h = h + x
            out[f"blocks.{i}"] = h
            return h

    class Lite0(nn.Module):
        def __init__(self):
            super().__init__()
            self._conv_stem = SameConv(3, 32, 3, 2, bias=False)
            self._bn0 = bn(32)
            self._blocks = nn.ModuleList([Block(a) for a in BLOCKS])
            self._conv_head = SameConv(320, 1280, 1, bias=False)
            self._bn1 = bn(1280)
            self._dropout = nn.Dropout(0.2)
            self._fc = nn.Linear(1280, 1000)

        def forward(self, x):
            out = {}
            x = out["stem"] = F.relu6(self._bn0(self._conv_stem(x)))
            for i, block in enumerate(self._blocks):
                x = block(x, out, i)
            x = out["head"] = F.relu6(self._bn1(self._conv_head(x)))
            x = F.adaptive_avg_pool2d(x, 1).flatten(1)
            out["logits"] = self._fc(self._dropout(x))[:, :, None, None]
            return out

    torch.manual_seed(0)
    net = Lite0()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):  # BN far from the identity
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
            elif isinstance(m, nn.Linear):
                m.bias.normal_(0.0, 0.5)
    return torch, net.eval()


@pytest.fixture(scope="module")
def reference():
    return _torch_reference()


def _convert(path):
    """Convert a saved file through the real entry point: safe torch reader, source detection."""
    network, source, meta = convert_file(path, model="efficientnet-lite0")
    assert source.name == "efficientnet-lite0" and meta["source"] == "efficientnet-lite0"
    return network


@pytest.fixture(scope="module")
def converted(reference, tmp_path_factory):
    torch, net = reference
    tmp = tmp_path_factory.mktemp("lite0")
    nets = {}
    for fmt, zipfile in (("zip", True), ("legacy", False)):
        path = tmp / f"lite0-{fmt}.pth"
        torch.save(net.state_dict(), path, _use_new_zipfile_serialization=zipfile)
        nets[fmt] = _convert(path)
    return nets


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, x):  # the state is an argument: both formats share one compilation
    return nnx.merge(graphdef, state)(x).post


@pytest.mark.parametrize("size", [64, 57])
@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_parity_with_torch_reference(reference, converted, fmt, size):
    torch, net = reference
    x = np.random.default_rng(size).uniform(-4, 4, (2, size, size, 3)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    graphdef, state = nnx.split(converted[fmt])
    got = _forward(graphdef, state, jnp.asarray(x))
    errors = {}
    for name in PARITY_LAYERS:
        a = np.asarray(got[name])
        b = expected[name].numpy().transpose(0, 2, 3, 1)
        assert a.shape == b.shape, name
        errors[name] = float(np.abs(a - b).max() / np.abs(b).max())
    print(f"\n{fmt} {size}px relative errors:",
          ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
    assert all(e < 1e-5 for e in errors.values()), errors


# ---------------------------------------------------------------------------------------------
# The converter table, without torch.

def _fake_tensors() -> dict[str, np.ndarray]:
    """Zero tensors under every key of the real file, with the real shapes."""
    t: dict[str, np.ndarray] = {}

    def conv_bn(conv, bn, shape):
        t[f"{conv}.weight"] = np.zeros(shape, np.float32)
        for n in ("weight", "bias", "running_mean", "running_var"):
            t[f"{bn}.{n}"] = np.zeros(shape[0], np.float32)
        t[f"{bn}.num_batches_tracked"] = np.zeros((), np.int64)

    conv_bn("_conv_stem", "_bn0", (32, 3, 3, 3))
    for i, a in enumerate(BLOCKS):
        if a.expand != 1:
            conv_bn(f"_blocks.{i}._expand_conv", f"_blocks.{i}._bn0", (a.c_mid, a.c_in, 1, 1))
        conv_bn(f"_blocks.{i}._depthwise_conv", f"_blocks.{i}._bn1", (a.c_mid, 1, a.kernel, a.kernel))
        conv_bn(f"_blocks.{i}._project_conv", f"_blocks.{i}._bn2", (a.c_out, a.c_mid, 1, 1))
    conv_bn("_conv_head", "_bn1", (1280, 320, 1, 1))
    t["_fc.weight"] = np.zeros((1000, 1280), np.float32)
    t["_fc.bias"] = np.zeros(1000, np.float32)
    return t


def test_table_fills_every_parameter():
    tensors = _fake_tensors()
    assert len(tensors) == 296  # as in efficientnet-lite0-57934424.pth
    assert SOURCE.detect(tensors)
    net = convert_tensors(tensors, SOURCE, "fake")
    paths = param_paths(net)
    assert len(paths) == 296 - 49
    assert paths["stem/conv/kernel"] == (3, 3, 3, 32)
    assert paths["blocks/3/depthwise/conv/kernel"] == (5, 5, 1, 144)
    assert paths["blocks/15/project/conv/kernel"] == (1, 1, 1152, 320)
    assert paths["fc/kernel"] == (1280, 1000)
    assert "blocks/0/expand/conv/kernel" not in paths


@pytest.mark.parametrize("key", ["_blocks.7._bn1.running_var", "_fc.bias", "_conv_stem.weight"])
def test_missing_key(key):
    tensors = _fake_tensors()
    del tensors[key]
    with pytest.raises(ConversionError, match=key.replace(".", r"\.")):
        convert_tensors(tensors, SOURCE, "fake")


def test_unused_key():
    tensors = _fake_tensors()
    tensors["_blocks.0._expand_conv.weight"] = np.zeros((32, 32, 1, 1), np.float32)
    with pytest.raises(ConversionError, match=r"_blocks\.0\._expand_conv\.weight"):
        convert_tensors(tensors, SOURCE, "fake")


@pytest.mark.parametrize("key,shape", [("_blocks.3._depthwise_conv.weight", (144, 1, 3, 3)),
                                       ("_fc.weight", (1280, 1000))])
def test_wrong_shape(key, shape):
    tensors = _fake_tensors()
    tensors[key] = np.zeros(shape, np.float32)
    with pytest.raises(ConversionError, match=key.replace(".", r"\.")):
        convert_tensors(tensors, SOURCE, "fake")


def test_detect_rejects_other_layouts():
    assert not SOURCE.detect({"conv1.weight": np.zeros(1), "fc.weight": np.zeros(1)})


# ---------------------------------------------------------------------------------------------
# Geometry: the catalogue against the network itself.

def test_catalogue_rows():
    rows = {r.name: r for r in nnx.eval_shape(lambda: EfficientNetLite0(rngs=nnx.Rngs(0))).layers()}
    assert (rows["stem"].rf, rows["stem"].jump, rows["stem"].canvas) == (3, 2, 5)
    assert (rows["blocks.0"].rf, rows["blocks.0"].jump, rows["blocks.0"].canvas) == (7, 2, 9)
    assert (rows["blocks.15"].rf, rows["blocks.15"].jump) == (851, 32)
    assert rows["blocks.1.expand"].channels == 96 and "blocks.0.expand" not in rows
    assert list(rows)[-2:] == ["avgpool", "logits"]


@pytest.fixture(scope="module")
def positive_network() -> EfficientNetLite0:
    """Positive kernels summing to < 1 per output, identity BN: every unit stays in (0, 6), so no
    ReLU6 blocks a gradient and the gradient is non-zero exactly on the receptive field."""
    net = nnx.eval_shape(lambda: EfficientNetLite0(include_top=False, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(1)
    for path, var in nnx.to_flat_state(nnx.state(net)):
        value = var.get_value()
        leaf = path[-1]
        if leaf == "kernel":
            fan_in = int(np.prod(value.shape[:-1]))
            new = rng.uniform(0.5, 1.0, value.shape) / fan_in
        else:
            new = {"scale": 1.0, "bias": 0.0, "mean": 0.0, "var": 1.0 - 1e-3}[leaf] * np.ones(value.shape)
        var.set_value(jnp.asarray(new, value.dtype))
    return net


@pytest.mark.parametrize("name", ["stem", "blocks.1.depthwise", "blocks.2"])
def test_empirical_receptive_field(positive_network, name):
    net = positive_network
    info = net.layer(name)
    c = info.centre

    def unit(x):
        return net(x, upto=name).post[name][0, c, c].sum()

    x = jnp.asarray(np.random.default_rng(2).uniform(0.1, 1.0, (1, info.canvas, info.canvas, 3)),
                    jnp.float32)
    assert jax.eval_shape(lambda x: net(x, upto=name).post[name], x).shape[1:3] == (info.out,) * 2
    support = np.abs(np.asarray(jax.jit(jax.grad(unit))(x))[0]).sum(-1) > 0
    mid, half = (info.canvas - 1) // 2, (info.rf - 1) // 2
    square = np.zeros_like(support)
    square[mid - half:mid + half + 1, mid - half:mid + half + 1] = True
    assert not (support & ~square).any(), f"{name}: gradient outside the receptive field"
    assert support[square].all(), f"{name}: gradient does not fill the receptive field"
    rows, cols = np.nonzero(support)
    assert rows.min() == cols.min() == mid - half and rows.max() == cols.max() == mid + half
