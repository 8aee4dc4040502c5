"""Source detection (which layout a file is, read from its keys) and what a weight may be."""

import jax
import ml_dtypes
import numpy as np
import pytest
from flax import nnx

import jaxvis
from jaxvis.convert.sources import candidates, convert_file
from jaxvis.errors import ConversionError
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


# --- what a weight may be: real floating point and finite (a tiny registered model, hand-built files) -

@pytest.fixture
def tiny_model():
    """The recipe test's two-layer network (``tests/recipes``), registered for one test."""
    from jaxvis.models.registry import MODELS, register_model

    register_model("tiny", "tests.recipes.tiny_net", "TinyNet", tables="tests.recipes.tiny_tables")
    yield
    del MODELS["tiny"]


_STORAGES = {"float32": "FloatStorage", "float16": "HalfStorage", "float64": "DoubleStorage",
             "bfloat16": "BFloat16Storage", "int8": "CharStorage", "bool": "BoolStorage",
             "uint64": "UInt64Storage", "complex64": "ComplexFloatStorage"}


def _tiny_file(path, dtype="float32", change=None):
    """A torch zip of the tiny network's state dict (no torch needed); ``change(arrays)`` edits it."""
    from tests.convert.test_torch_pickle import _pid, _state, _v2, _zip

    rng = np.random.default_rng(0)
    arrays = {"features.0.weight": rng.normal(size=(6, 3, 3, 3)), "features.0.bias": rng.normal(size=6),
              "features.2.weight": rng.normal(size=(4, 6, 3, 3)), "features.2.bias": rng.normal(size=4)}
    arrays = {k: (v * 3).astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype) for k, v in arrays.items()}
    if change:
        change(arrays)
    values, storages = {}, {}
    for i, (key, a) in enumerate(arrays.items()):
        strides = tuple(s // a.itemsize for s in a.strides)
        values[key] = _v2(_pid(_STORAGES[dtype], str(i), a.size), 0, a.shape, strides)
        storages[str(i)] = a.tobytes()
    return _zip(path, _state(**values), storages), arrays


def _set(key, index, value):
    def change(arrays):
        arrays[key][index] = value
    return change


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_refused_naming_the_tensor(tiny_model, tmp_path, monkeypatch, capsys, bad):
    """One NaN or Inf would make every activation it meets NaN; refused before anything is written."""
    from jaxvis.cli import main

    path, _ = _tiny_file(tmp_path / "tiny.pth", change=_set("features.2.weight", (1, 2, 0, 1), bad))
    monkeypatch.setenv("JAXVIS_WEIGHTS", str(tmp_path / "weights"))
    before = path.read_bytes()
    assert main(["convert", "--from", str(path), "--name", "t"]) != 0
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and ("tiny.pth: tensor 'features.2.weight' holds 1 non-finite values (NaN or "
                                "Inf; the first at index (1, 2, 0, 1)); weights must be finite numbers") in err
    assert path.read_bytes() == before and not list((tmp_path / "weights").rglob("*"))


@pytest.mark.parametrize("dtype", ["int8", "bool", "uint64", "complex64"])
def test_non_float_weights_refused_naming_tensor_and_dtype(tiny_model, tmp_path, dtype):
    path, _ = _tiny_file(tmp_path / "tiny.pth", dtype)
    with pytest.raises(ConversionError) as err:
        jaxvis.convert_weights(path, root=tmp_path / "weights")
    assert str(err.value) == (f"tiny.pth: tensor 'features.0.weight' has dtype {dtype}, not real floating "
                              "point (float16, bfloat16, float32 or float64); weights are not converted "
                              "from integers, booleans or complex numbers")
    assert not (tmp_path / "weights").exists()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_real_float_weights_convert(tiny_model, tmp_path, dtype):
    path, arrays = _tiny_file(tmp_path / "tiny.pth", dtype)
    model = jaxvis.load(str(jaxvis.convert_weights(path, root=tmp_path / "weights")))
    np.testing.assert_array_equal(model.params()["conv2/bias"], arrays["features.2.bias"].astype(np.float32))
