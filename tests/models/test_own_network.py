"""A user's own network: specs() is checked against the real shapes with one clear line."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxvis
from jaxvis import LayerSpec, Op


class Tiny(jaxvis.Network):
    """conv 3x3 (4 channels) -> ReLU -> conv 3x3 stride 2 (2 channels), VALID."""

    name = "tiny"

    def __init__(self, declared=((4, 1), (2, 2)), record_second=True):
        key1, key2 = jax.random.split(jax.random.key(0))
        self.k1 = nnx.Param(jax.random.normal(key1, (3, 3, 3, 4)) * 0.1)
        self.k2 = nnx.Param(jax.random.normal(key2, (3, 3, 4, 2)) * 0.1)
        self.declared, self.record_second = declared, record_second

    def specs(self):
        (c1, s1), (c2, s2) = self.declared
        return (LayerSpec("a", c1, (Op(3, s1, "VALID"),)), LayerSpec("b", c2, (Op(3, s2, "VALID"),)))

    def forward(self, x, record):
        conv = lambda x, k, s: jax.lax.conv_general_dilated(x, k, (s, s), "VALID",
                                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
        a = record("a", conv(x, self.k1[...], 1), jax.nn.relu(conv(x, self.k1[...], 1)))
        if self.record_second:
            record("b", conv(a, self.k2[...], 2))


def model(net) -> jaxvis.Model:
    return jaxvis.Model(net, jaxvis.InputConvention(mean=(120.0, 120.0, 120.0)), {"name": "tiny"})


def test_right_specs_sweep():
    net = Tiny()
    assert net.layer("b").canvas == 5 and net.layer("b").out == 1
    out = jaxvis.sweep(model(net), "b", "all", images=2, steps=20, radius=50.0)["b"]
    assert out["images"].shape == (2, 2, 5, 5, 3)
    np.testing.assert_allclose(out["direction"], np.eye(2))
    # the stored images really give the stored activations
    x = jnp.asarray(out["images"][0])
    acts = model(net)(x, upto="b").pre["b"][:, 0, 0, 0]
    np.testing.assert_allclose(acts, out["activations"][0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("declared, message", [
    (((4, 1), (3, 2)), "layer 'b' has 2 channels, specs() declares 3"),
    (((5, 1), (2, 2)), "layer 'a' has 4 channels, specs() declares 5"),
    (((4, 2), (2, 2)), "layer 'a' is 5x5 on a 7 px input, but its declared ops give 3x3"),
])
def test_wrong_specs_are_named_before_any_work(declared, message):
    with pytest.raises(jaxvis.JaxvisError, match=message.replace("(", r"\(").replace(")", r"\)")):
        jaxvis.sweep(model(Tiny(declared)), "b", "all", images=2, steps=5, radius=50.0)


def test_a_layer_forward_never_records_is_named():
    with pytest.raises(jaxvis.JaxvisError, match="'b' of specs\\(\\) is not recorded by forward"):
        Tiny(record_second=False).check("b")


def test_display_conversion_and_saving(tmp_path):
    images = np.random.default_rng(0).normal(128, 80, (3, 2, 5, 5, 3)).astype(np.float32)
    assert ((images < 0) | (images > 255)).any()
    shown = jaxvis.to_display(images[0])
    assert shown.dtype == np.uint8 and shown.shape == (2, 5, 5, 3)
    path = jaxvis.save_images(images, tmp_path / "grid.png")
    from PIL import Image
    with Image.open(path) as im:
        assert im.size[0] > 2 * 5 and im.size[1] > 3 * 5
    with pytest.raises(jaxvis.JaxvisError, match="images must be"):
        jaxvis.save_images(np.zeros((2, 2)), tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
