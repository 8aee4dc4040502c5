"""The read-out's classes reach readers as names: the CSV of `jaxvis analyze` and the console line
hold ``complex-like``, ``diverse``, ..., never the codes the metrics group stores, and the names are
read from :data:`jaxvis.analysis.readout.AXES` when written (a class added there appears)."""

from __future__ import annotations

import csv

import numpy as np

from jaxvis.analysis import readout as rules
from jaxvis.run.table import export_csv
from jaxvis.report.summary import analysis_line


def _analysed():
    nan = np.nan
    return {"a": {"phase_class": np.array([2.0, 1.0, 0.0, nan], np.float32),
                  "shift_class": np.array([1.0, 0.0, nan, 0.0], np.float32),
                  "diversity_class": np.array([[1.0, 0.0], [2.0, 1.0], [0.0, 0.0], [nan, 2.0]], np.float32),
                  "pixel_min": np.array([1.0, 2.0, 3.0, 4.0])}}


def _names(axis, codes):
    return [rules.AXES[axis][int(c)] if np.isfinite(c) else rules.UNKNOWN for c in codes]


def test_the_csv_names_every_class(tmp_path):
    layers = {"a": {"unit": np.arange(4), "max_activation": np.ones(4)}}
    analysed = _analysed()
    path = export_csv(tmp_path / "r.h5", layers, analysed, {"a": {"floors": [0.95, 0.9]}})
    rows = list(csv.DictReader(open(path)))
    assert [r["phase_class"] for r in rows] == _names("phase", analysed["a"]["phase_class"])
    assert [r["shift_class"] for r in rows] == _names("shift", analysed["a"]["shift_class"])
    for k, alpha in enumerate(("0.95", "0.9")):
        assert [r[f"diversity_class@{alpha}"] for r in rows] == _names("diversity", analysed["a"]["diversity_class"][:, k])
    classes = [k for k in rows[0] if "class" in k]
    names = {n for axis in rules.AXES.values() for n in axis} | {rules.UNKNOWN}
    assert all(r[k] in names for r in rows for k in classes)  # no numeric code anywhere
    assert rows[0]["pixel_min"] == "1"  # other metrics stay numbers


def test_class_names_come_from_the_read_out_axes(tmp_path, monkeypatch):
    """A class the rule set adds is named without touching the writers."""
    added = len(rules.AXES["phase"])
    monkeypatch.setitem(rules.AXES, "phase", (*rules.AXES["phase"], "test-added-class"))
    analysed = {"a": {"phase_class": np.array([added, 0.0], np.float32)}}
    layers = {"a": {"unit": np.arange(2), "max_activation": np.ones(2)}}
    rows = list(csv.DictReader(open(export_csv(tmp_path / "r.h5", layers, analysed, {"a": {}}))))
    assert [r["phase_class"] for r in rows] == ["test-added-class", rules.AXES["phase"][0]]
    line = analysis_line("conv2_1", {"phase_class": analysed["a"]["phase_class"],
                                     "shift_class": np.array([1.0, np.nan])})
    assert "read-out: 50% test-added-class, " in line and f"50% {rules.AXES['shift'][1]}" in line
    assert line.endswith("50% unknown"), line
