"""CONTRIBUTING.md's "A new metric", followed step by step: one function and one
``register_metric`` row make a metric that ``jaxvis analyze`` computes and stores, the CSV exports
and the report shows (before any analysis too, when the sweep alone determines it)."""

from __future__ import annotations

import csv
import json
from html.parser import HTMLParser

import h5py
import numpy as np
import pytest
from PIL import Image

from jaxvis.analysis import metrics as metric_table
from jaxvis.run.analyze import analyze
from jaxvis.store.config import SweepConfig
from jaxvis.report.pages import report
from jaxvis.store.results import ResultWriter, read_results
from tests.optimize.complex_cell import model as complex_cell


@pytest.fixture
def fraction_range():
    """The recipe's metric, registered the documented way (and removed again afterwards)."""

    @metric_table.register_metric("fraction_range", "highest minus lowest activation fraction of the "
                       "diverse set", inputs=("activation_fraction",))
    def _range(fraction):
        return np.max(fraction, axis=1) - np.min(fraction, axis=1)

    yield "fraction_range"
    del metric_table.REGISTRY["fraction_range"]


class _Heads(HTMLParser):
    def __init__(self):
        super().__init__()
        self.keys = []

    def handle_starttag(self, tag, attrs):
        if tag == "th" and dict(attrs).get("data-key"):
            self.keys.append(dict(attrs)["data-key"])


def _column(page) -> list[str]:
    parser = _Heads()
    parser.feed(page.read_text())
    return parser.keys


def _sweep_file(path, rng, units=(0, 1), n=3):
    """A finished sweep of the complex cell's ``simple`` units (its two Gabor filters) as the
    sweep writes it (made-up numbers: optimising for real would cost this test most of its time)."""
    size = 11
    config = SweepConfig(weights="custom", model=None, layers=("simple",),
                         units={"simple": tuple(units)}).to_json()
    pixel = rng.uniform(1, 10, (len(units), n, n))
    pixel = np.triu(pixel, 1) + np.triu(pixel, 1).transpose(0, 2, 1)
    peak = rng.uniform(5, 10, len(units))
    writer = ResultWriter(path, config)
    writer.write_chunk("simple", {
        "unit": np.asarray(units, np.int64),
        "images": rng.uniform(60, 200, (len(units), n, size, size, 3)).astype(np.float32),
        "activations": (peak[:, None] * rng.uniform(0.5, 1, (len(units), n))).astype(np.float32),
        "max_image": rng.uniform(60, 200, (len(units), size, size, 3)).astype(np.float32),
        "max_activation": peak.astype(np.float32),
        "pixel_distances": pixel.astype(np.float32), "feature_distances": pixel.astype(np.float32),
        "steps": np.full(len(units), 30, np.int32)})
    writer.finalize({"simple": {"units": list(units), "canvas": size, "rf": size, "jump": 1,
                                "centre": 0, "channels": 2, "radius": 300.0,
                                "feature_layer": "pixels"}})
    return path


def test_a_metric_from_one_function_and_one_row(fraction_range, tmp_path):
    rng = np.random.default_rng(0)
    photos = []
    for k in range(2):  # tiny natural-image stand-ins for the calibration
        photos.append(tmp_path / f"photo{k}.png")
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(photos[-1])
    cell = complex_cell()
    out = _sweep_file(tmp_path / "cell.h5", rng)
    with h5py.File(out, "r") as f:
        acts, peak = f["layers/simple/activations"][()], f["layers/simple/max_activation"][()]
    expected = np.ptp(acts / peak[:, None], axis=1)

    # the sweep alone determines it: the report shows it before any analysis
    page = report(out, tmp_path / "before")[0]
    assert fraction_range in _column(page)
    assert "highest minus lowest activation fraction of the diverse set (from the sweep)" in \
        page.read_text()

    analysis = analyze(out, model=cell, shift=False, photos=photos, top=2, log=lambda *a: None)
    values = analysis.metrics["simple"][fraction_range]  # the analysis output
    np.testing.assert_allclose(values, expected, rtol=1e-5)
    assert {"fraction_min", "participation_ratio", "reference_pixel_min", "natural_p99",
            "max_over_p99", "diverse_over_p99"} <= set(analysis.metrics["simple"])  # and the rest
    stored = read_results(out).metrics["simple"][fraction_range]  # the file, with its definition
    np.testing.assert_allclose(stored, expected, rtol=1e-5)
    with h5py.File(out, "r") as f:
        definitions = json.loads(f["layers/simple/metrics"].attrs["definitions"])
    assert definitions[fraction_range] == metric_table.REGISTRY[fraction_range].definition
    rows = list(csv.DictReader(open(analysis.csv)))  # the CSV
    assert [float(r[fraction_range]) for r in rows] == pytest.approx(expected.tolist(), rel=1e-5)
    page = report(out, tmp_path / "after")[0]  # the report page, from the stored metric
    assert fraction_range in _column(page)
    assert "diverse set (from the sweep)" not in page.read_text()
    assert f'data-v="{float(np.float32(expected[0]))!r}"' in page.read_text()
