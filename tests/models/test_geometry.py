"""Receptive-field arithmetic on its own (the network-level checks live with each model)."""

from jaxvis.models.geometry import GLOBAL_CANVAS, LayerSpec, Op, catalogue, canvas_for
from jaxvis.models.registry import ModelConfig, build


def test_tf_same_padding_puts_the_odd_pixel_after():
    assert Op(3, 2, "SAME").pads(224) == (0, 1) and Op(3, 2, "SAME").pads(57) == (1, 1)
    assert Op(5, 2, "SAME").pads(112) == (1, 2) and Op(3, 1, "SAME").pads(10) == (1, 1)
    assert Op(3, 2, 1).out_size(224) == 112 and Op(2, 2, "VALID").out_size(7) == 3


def test_canvas_rule_centres_the_unit():
    # VALID: canvas = rf and one output; padded: the smallest centred canvas with odd output
    assert canvas_for([Op(3), Op(3), Op(2, 2)]) == (6, 1)
    assert canvas_for([Op(7, 2, 3)]) == (9, 5)


def test_global_layers_take_the_standard_input():
    rows = catalogue([LayerSpec("c", 8, (Op(3, 2, 1),)), LayerSpec("pool", 8, (), "global"),
                      LayerSpec("fc", 10, (), "fc")])
    assert [(r.kind, r.canvas, r.out) for r in rows[1:]] == [("global", GLOBAL_CANVAS, 1)] * 2
    for model, last in (("resnet50", "fc"), ("efficientnet-lite0", "logits")):
        info = build(ModelConfig.make(model, include_top=True)).layer(last)
        assert (info.canvas, info.out, info.centre) == (224, 1, 0)
