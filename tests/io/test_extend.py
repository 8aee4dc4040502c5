"""Growing a finished results file, damaged files, metrics added in place, the typed config."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest

from jaxvis.store.config import SweepConfig, first_difference, method_of
from jaxvis.errors import JaxvisError
from jaxvis.store.results import (ResultWriter, merge_parts, parts_dir, read_results, read_rows,
                               write_metrics)
from jaxvis.optimize.config import FLOOR_METHOD, Objective, Optimizer


def config(units: dict, **change) -> SweepConfig:
    return SweepConfig(weights="vgg19", model={"name": "vgg19", "options": {}}, layers=tuple(units),
                       units={k: tuple(v) for k, v in units.items()},
                       objective=Objective(images=2), optimizer=Optimizer(steps=5), **change)


def chunk(layer: str, units) -> dict:
    """Deterministic fake results: every value derives from (layer, unit)."""
    units = np.asarray(units, np.int64)
    base = units[:, None].astype(np.float32) + (100 if layer == "b" else 0)
    return {"unit": units, "activations": base + np.arange(2, dtype=np.float32),
            "images": np.broadcast_to(base[:, :, None, None, None], (len(units), 2, 4, 4, 3)).copy()}


def sweep_file(out, units: dict, extra_metrics=False):
    cfg = config(units)
    writer = ResultWriter(out, cfg.to_json())
    todo = {layer: [u for u in us if u not in writer.done_units(layer)] for layer, us in units.items()}
    for layer, us in todo.items():
        if us:
            writer.write_chunk(layer, chunk(layer, us))
    writer.finalize({layer: {"units": list(us), "canvas": 4} for layer, us in units.items()})
    return writer, todo


def test_config_round_trip_and_refusals():
    cfg = config({"a": [0, 1]}, directions=((1.0, 0.0), (0.0, 1.0)), seed=3)
    again = SweepConfig.from_json(cfg.to_json())
    assert again == cfg and again.objective == Objective(images=2)
    np.testing.assert_array_equal(again.basis(2), np.eye(2))
    assert first_difference(cfg.to_json(), cfg.to_json()) is None
    assert first_difference(method_of({**cfg.to_json(), "units": {"a": [5]}}), method_of(cfg.to_json())) is None
    assert first_difference(cfg.to_json(), dataclasses.replace(cfg, seed=4).to_json()) == "seed: 3 there, 4 now"
    assert first_difference({"a": 1}, {"a": 1.0}) == "a: 1 there, 1.0 now"
    assert first_difference({"a": {"b": 1}}, {}) == "a: {'b': 1} there, not set now"
    with pytest.raises(JaxvisError, match="unknown key"):
        SweepConfig.from_json({**cfg.to_json(), "colour": "red"})
    with pytest.raises(JaxvisError, match="objective has unknown field"):
        SweepConfig.from_json({**cfg.to_json(), "objective": {"images": 2, "lambda_": 1}})
    with pytest.raises(JaxvisError, match="lacks 'units'"):
        SweepConfig.from_json({"weights": "x", "layers": []})
    old = cfg.to_json()
    del old["objective"]["prior"]  # a file written before a field existed reads with its default
    assert SweepConfig.from_json(old).objective.prior == Objective().prior


def test_finished_file_grows_with_new_units_and_layers(tmp_path):
    out = tmp_path / "s.h5"
    sweep_file(out, {"a": [0, 1, 2]})
    write_metrics(out, {"a": {"score": np.arange(3, dtype=np.float32)}}, {"score": "test"}, {})
    before = read_results(out)

    # same method, more units of a and a new layer b: only those are computed
    writer, todo = sweep_file(out, {"a": [0, 1, 2, 3, 4], "b": [7]})
    assert todo == {"a": [3, 4], "b": [7]}
    grown = read_results(out)
    assert grown.config["units"] == {"a": [0, 1, 2, 3, 4], "b": [7]} and grown.config["layers"] == ["a", "b"]
    for layer, units in (("a", [0, 1, 2, 3, 4]), ("b", [7])):
        expected = chunk(layer, units)
        for key, value in expected.items():
            np.testing.assert_array_equal(grown.layers[layer][key], value, err_msg=f"{layer}/{key}")
    assert grown.layer_meta["a"]["units"] == [0, 1, 2, 3, 4]
    assert "a" not in grown.metrics  # the old metrics covered 3 of its 5 units: dropped
    assert not parts_dir(out).exists()

    # a subset of what is there: nothing to do, the file is not rewritten
    mtime = out.stat().st_mtime_ns
    writer, todo = sweep_file(out, {"a": [1, 3]})
    assert todo == {"a": []} and out.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(read_rows(out, "a", [3, 1])["unit"], [1, 3])
    assert before.layers["a"]["activations"].shape == (3, 2)


def test_untouched_layers_keep_their_metrics_and_method_changes_are_refused(tmp_path):
    out = tmp_path / "s.h5"
    sweep_file(out, {"a": [0, 1]})
    write_metrics(out, {"a": {"score": np.ones(2, np.float32)}}, {"score": "test"}, {"k": 1})
    sweep_file(out, {"b": [3]})  # another layer only: a's rows and metrics are copied as they are
    grown = read_results(out)
    np.testing.assert_array_equal(grown.metrics["a"]["score"], np.ones(2))
    assert set(grown.layers) == {"a", "b"}
    before = out.read_bytes()
    changed = dataclasses.replace(config({"a": [0, 1, 2]}), seed=1)
    with pytest.raises(JaxvisError, match=r"different sweep \(seed: 0 there, 1 now\).*extended with more units"):
        ResultWriter(out, changed.to_json())
    assert out.read_bytes() == before and not parts_dir(out).exists()


def test_interrupted_extension_resumes_and_merges(tmp_path):
    out = tmp_path / "s.h5"
    sweep_file(out, {"a": [0, 1]})
    cfg = config({"a": [0, 1, 2, 3]})
    writer = ResultWriter(out, cfg.to_json())
    assert writer.extends and writer.done_units("a") == {0, 1}
    writer.write_layer_meta("a", {"units": [0, 1, 2, 3], "canvas": 4})
    writer.write_chunk("a", chunk("a", [2]))
    del writer  # killed: the old file is intact, the parts hold unit 2
    assert read_results(out).layers["a"]["unit"].tolist() == [0, 1]
    again = ResultWriter(out, cfg.to_json())
    assert again.done_units("a") == {0, 1, 2}
    again.write_chunk("a", chunk("a", [3]))
    merge_parts(out)  # e.g. after a multi-host sweep
    np.testing.assert_array_equal(read_results(out).layers["a"]["activations"], chunk("a", [0, 1, 2, 3])["activations"])


def test_damaged_file_says_so_and_how_to_recover(tmp_path):
    out = tmp_path / "s.h5"
    sweep_file(out, {"a": [0, 1]})
    data = out.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    with pytest.raises(JaxvisError, match=r"damaged or truncated results file.*sweep\(overwrite\)"):
        read_results(out)
    parts_dir(out).mkdir()
    with pytest.raises(JaxvisError, match="jaxvis merge"):
        read_results(out)
    other = tmp_path / "notes.h5"
    other.write_bytes(b"plain text")
    with pytest.raises(JaxvisError, match=r"is not a jaxvis results file \(not HDF5\)"):
        read_results(other)


def test_metrics_are_added_in_place_and_a_failed_write_keeps_the_old_ones(tmp_path, monkeypatch):
    out = tmp_path / "s.h5"
    sweep_file(out, {"a": [0, 1]})
    with h5py.File(out, "r") as f:
        images_offset = f["layers/a/images"].id.get_offset()
    write_metrics(out, {"a": {"score": np.array([1.0, 2.0], np.float32)}}, {"score": "old"}, {})
    with h5py.File(out, "r") as f:  # the images were not rewritten (no copy of the file)
        assert f["layers/a/images"].id.get_offset() == images_offset
        assert "old" in f["layers/a/metrics"].attrs["definitions"]

    class Boom(Exception):
        pass

    def explode(*args, **kwargs):
        raise Boom
    monkeypatch.setattr(h5py.Group, "create_dataset", explode)
    with pytest.raises(JaxvisError, match="the writing process failed"):  # the writer is a forked child
        write_metrics(out, {"a": {"score": np.array([5.0, 6.0], np.float32)}}, {"score": "new"}, {})
    monkeypatch.undo()
    r = read_results(out)  # the half-written temporary group is ignored ...
    np.testing.assert_array_equal(r.metrics["a"]["score"], [1.0, 2.0])
    assert set(r.layers["a"]) == {"unit", "activations", "images"}
    write_metrics(out, {"a": {"score": np.array([5.0, 6.0], np.float32)}}, {"score": "new"}, {})
    with h5py.File(out, "r") as f:  # ... and removed by the next write
        assert set(f["layers/a"]) == {"unit", "activations", "images", "metrics"}
    np.testing.assert_array_equal(read_results(out).metrics["a"]["score"], [5.0, 6.0])
    with pytest.raises(JaxvisError, match="holds no layer 'zz'"):
        write_metrics(out, {"zz": {"score": np.ones(1)}}, {}, {})


def test_a_file_from_before_new_fields_resumes_and_grows(tmp_path):
    """Fields added to the config since a file was written (floors, restarts, Objective.floor)
    take the values that reproduce how it was made, so the file still resumes and grows."""
    out = tmp_path / "old.h5"
    old = config({"a": [0, 1]}).to_json()
    for key in ("floors", "restarts"):
        del old[key]
    del old["objective"]["floor"]
    writer = ResultWriter(out, old)
    writer.write_chunk("a", chunk("a", [0, 1]))
    writer.finalize({"a": {"units": [0, 1], "canvas": 4}})
    now = config({"a": [0, 1, 2]}).to_json()
    with pytest.raises(JaxvisError, match="different sweep"):
        ResultWriter(out, now)  # compared as stored
    grown = ResultWriter(out, now, upgrade=SweepConfig.upgrade)
    assert grown.extends and grown.done_units("a") == {0, 1}


def test_floor_starts_and_method_are_part_of_the_method_only_where_there_are_floors(tmp_path):
    """Files from before several starts name one ``floor_start`` (none: random) and were made by
    floor method 1 (no annealing, the last iterate kept): they read as such, and a floored one no
    longer grows (this jaxvis runs method 2 only); without floors neither is part of the method
    (None), so such a file grows under any default."""
    assert config({"a": [0]}).floor_starts is None and config({"a": [0]}).floor_method is None
    assert config({"a": [0]}, floor_starts=("random",)).to_json()["floor_starts"] is None
    with pytest.raises(JaxvisError, match="unknown floor start 'best'; valid: maximum, phase, diverse, random"):
        config({"a": [0]}, floors=(0.9,), floor_starts=("maximum", "best"))
    for floors, start, grows in (((), None, True), ((0.9,), None, False), ((0.9,), "maximum", False)):
        out = tmp_path / f"old{len(floors)}{start}.h5"
        old = config({"a": [0, 1]}, floors=floors).to_json()
        del old["floor_starts"], old["floor_method"]
        if start:
            old["floor_start"] = start
        read = SweepConfig.from_json(old)
        assert (read.floor_starts, read.floor_method) == (((start or "random",), 1) if floors else (None, None))
        writer = ResultWriter(out, old)
        writer.write_chunk("a", chunk("a", [0, 1]))
        writer.finalize({"a": {"units": [0, 1], "canvas": 4}})
        now = config({"a": [0, 1, 2]}, floors=floors, floor_starts=(start or "random",),
                     floor_diversity=None).to_json()  # the lambda set's term, as floor method 1 used
        if grows:
            assert ResultWriter(out, now, upgrade=SweepConfig.upgrade).done_units("a") == {0, 1}
        else:
            with pytest.raises(JaxvisError, match=f"floor_method: 1 there, {FLOOR_METHOD} now"):
                ResultWriter(out, now, upgrade=SweepConfig.upgrade)
