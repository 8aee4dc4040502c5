"""Pictures from a results file: sizes, pages, tiles that show the documented contrast mapping."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from jaxvis.errors import JaxvisError
from jaxvis.report import render as render_module
from jaxvis.report.render import PAD, default_scale, render, row_layout, to_display
from jaxvis.store.results import ResultWriter

N, H = 3, 5
FLOORS = [0.95, 0.9]
RAMP = np.broadcast_to((np.arange(H, dtype=np.float32) * 10)[None, :, None], (H, H, 3))  # 0..40


def unit_chunk(units) -> dict[str, np.ndarray]:
    """Unit u: maximum = a horizontal ramp 0..40, images = the ramp, half its contrast, noise."""
    rng = np.random.default_rng(0)
    count = len(units)
    images = np.empty((count, N, H, H, 3), np.float32)
    images[:, 0] = RAMP
    images[:, 1] = RAMP / 2
    images[:, 2] = rng.uniform(0, 40, (count, H, H, 3))
    max_activation = np.arange(1, count + 1, dtype=np.float32) * 2
    return {"unit": np.asarray(units, np.int64), "images": images,
            "activations": max_activation[:, None] * np.array([0.97, 0.5, 0.25], np.float32),
            "max_image": np.broadcast_to(RAMP, (count, H, H, 3)).copy(),
            "max_activation": max_activation}


@pytest.fixture
def results(tmp_path):
    out = tmp_path / "sweep.h5"
    writer = ResultWriter(out, {"test": True})
    chunk = unit_chunk([0, 1, 2, 3, 4])  # conv1_1 with floor sets at 0.95 and 0.9, layer1.0 without
    rng = np.random.default_rng(1)
    chunk["floor_images"] = rng.uniform(0, 40, (5, len(FLOORS), N, H, H, 3)).astype(np.float32)
    chunk["floor_activations"] = rng.uniform(0.9, 1, (5, len(FLOORS), N)).astype(np.float32)
    writer.write_chunk("conv1_1", chunk)
    writer.write_chunk("layer1.0", unit_chunk([11, 30]))
    return writer.finalize({"conv1_1": {"units": [0, 1, 2, 3, 4], "floors": FLOORS},
                            "layer1.0": {"units": [11, 30]}})


def test_to_display_is_the_documented_percentile_mapping():
    x = np.linspace(-50, 400, 1000).reshape(10, 100)
    lo, hi = np.percentile(x, [0.5, 99.5])
    want = np.clip(np.rint((x - lo) * 255 / (hi - lo)), 0, 255)
    np.testing.assert_array_equal(to_display(x), want)
    assert to_display(np.full((2, 2), 300.0)).tolist() == [[255, 255], [255, 255]]  # flat: clipped
    assert to_display(np.array([np.nan, 0.0, 10.0])).dtype == np.uint8
    assert default_scale(3, 3) == 22 and default_scale(10, 10) == 7 and default_scale(156, 156) == 1


def test_render_pages_tiles_and_contact_sheet(results, tmp_path):
    out_dir = tmp_path / "pictures"
    paths = render(results, out_dir)
    assert [p.name for p in paths] == ["conv1_1_units.png", "conv1_1_floor0.95.png", "conv1_1_floor0.9.png",
                                       "conv1_1_contact.png", "layer1.0_units.png", "layer1.0_contact.png"]
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(p.name for p in paths)  # no tmp

    scale = default_scale(H, H)
    tile = H * scale
    assert tile >= 64
    with Image.open(out_dir / "conv1_1_units.png") as image:
        sheet = np.asarray(image.convert("RGB"))
    layout = row_layout(H, H, N, scale, range(5))
    assert sheet.shape[0] == layout.height(5) >= 5 * tile
    assert sheet.shape[1] >= layout.width() >= (N + 1) * tile

    data = unit_chunk([0, 1, 2, 3, 4])
    for row in range(5):
        shown = to_display(np.concatenate([data["max_image"][row][None], data["images"][row]]))
        for column in range(N + 1):
            x, y = layout.tile_origin(row, column)
            got = sheet[y:y + tile, x:x + tile]
            np.testing.assert_array_equal(got, np.repeat(np.repeat(shown[column], scale, 0),
                                                         scale, 1))  # one mapping per row
    x, y = layout.tile_origin(0, 0)
    ramp_tile = sheet[y:y + tile, x:x + tile, 0]
    columns = ramp_tile[0, ::scale]
    assert columns[0] == 0 and columns[-1] == 255 and np.all(np.diff(columns.astype(int)) > 0)
    assert np.all(ramp_tile == ramp_tile[:1])  # a horizontal ramp: every row the same
    x, y = layout.tile_origin(0, 2)  # the half-contrast ramp stays half as bright, same mapping
    assert 120 <= sheet[y, x + tile - 1, 0] <= 135

    label_area = sheet[layout.header_h + PAD:, :layout.label_w]
    assert (label_area < 128).any()  # unit indices are printed at the row starts
    x, y = layout.tile_origin(0, 1)
    below = sheet[y + tile:y + layout.row_h, x:x + tile]
    assert (below < 128).any()  # activation fractions under the tiles

    # the floor sets as stored: a row per unit, the maximum then the set at that floor, one mapping
    import h5py
    with h5py.File(results, "r") as f:
        floor_images = f["layers/conv1_1/floor_images"][()]
    assert floor_images.shape == (5, 2, N, H, H, 3)
    with Image.open(out_dir / "conv1_1_floor0.9.png") as image:
        floor_sheet = np.asarray(image.convert("RGB"))
    for row in range(5):
        shown = to_display(np.concatenate([data["max_image"][row][None], floor_images[row, 1]]))
        for column in range(N + 1):
            x, y = layout.tile_origin(row, column)
            np.testing.assert_array_equal(floor_sheet[y:y + tile, x:x + tile],
                                          np.repeat(np.repeat(shown[column], scale, 0), scale, 1))

    with Image.open(out_dir / "conv1_1_contact.png") as image:
        contact = np.asarray(image.convert("RGB"))
    assert contact.shape[1] >= 3 * tile and contact.shape[0] >= 2 * tile  # 5 units: 3 x 2 grid
    assert contact.shape[1] < 4 * (tile + PAD) + 40 and contact.shape[0] < 3 * (tile + 30)


def test_render_scale_layers_and_pages(results, tmp_path, monkeypatch):
    monkeypatch.setattr(render_module, "ROWS_PER_PAGE", 2)
    paths = render(results, tmp_path / "p", layers=["conv1_1"], scale=2)
    assert [p.name for p in paths] == ["conv1_1_units.png", "conv1_1_units_p2.png", "conv1_1_units_p3.png",
                                       *(f"conv1_1_floor{a}{p}.png" for a in ("0.95", "0.9") for p in ("", "_p2", "_p3")),
                                       "conv1_1_contact.png"]
    heights = []
    for path in paths[:3]:
        with Image.open(path) as image:
            heights.append(image.size[1])
    layout = row_layout(H, H, N, 2, range(5))
    assert heights == [layout.height(2), layout.height(2), layout.height(1)]
    assert layout.tile_h == 10


def test_render_errors(results, tmp_path):
    with pytest.raises(JaxvisError) as err:
        render(results, tmp_path / "p", layers=["conv9_9"])
    assert str(err.value) == f"{results} holds no layer 'conv9_9'; layers there: conv1_1, layer1.0"
    with pytest.raises(JaxvisError, match="scale must be a positive integer"):
        render(results, tmp_path / "p", scale=0)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(JaxvisError, match="cannot write .*a_file"):
        render(results, blocker / "p")
    assert not (tmp_path / "p").exists()


def test_render_is_all_or_nothing(results, tmp_path):
    """An error at the last picture leaves what was there before: no new, no half, no temps."""
    out_dir = tmp_path / "p"
    out_dir.mkdir()
    (out_dir / "conv1_1_units.png").write_bytes(b"an older picture")
    (out_dir / "layer1.0_contact.png").mkdir()  # the last picture cannot be renamed into place
    with pytest.raises(JaxvisError, match="cannot write .*layer1.0_contact.png"):
        render(results, out_dir)
    assert sorted(p.name for p in out_dir.iterdir()) == ["conv1_1_units.png", "layer1.0_contact.png"]
    assert (out_dir / "conv1_1_units.png").read_bytes() == b"an older picture"
    (out_dir / "layer1.0_contact.png").rmdir()
    assert len(render(results, out_dir)) == 6  # and once the way is free, all of them
    with Image.open(out_dir / "conv1_1_units.png") as image:
        assert image.size[0] > 0
