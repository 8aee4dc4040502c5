"""An interrupted `jaxvis analyze` keeps the layers it finished (written as each is done) and the
next run computes only the rest; other settings or --redo compute every layer again."""

from __future__ import annotations

import numpy as np
import pytest

from jaxvis.run import analyze as analyze_module
from jaxvis.cli import main
from jaxvis.store.results import read_results

pytestmark = [pytest.mark.usefixtures("weights_env"), pytest.mark.real]

FAST = ["--no-shift", "--no-gratings", "--top", "2"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory, real_root, vgg19):
    import os
    out = tmp_path_factory.mktemp("resume") / "two.h5"
    os.environ["JAXVIS_WEIGHTS"] = str(real_root)  # restored by weights_env in each test
    assert main(["sweep", "--weights", "vgg19", "--layer", "conv1_1,conv1_2", "--units", "0-2", "--images", "3",
                 "--steps", "20", "--restarts", "1", "--no-render", "--cpu-devices", "1", "--out", str(out)]) == 0
    return out


def test_an_interrupted_analysis_keeps_finished_layers_and_resumes(swept, monkeypatch, capsys):
    real = analyze_module.analyze_layer
    computed = []

    def interrupted(model, layer, *args, **kwargs):
        if computed:
            raise KeyboardInterrupt  # Ctrl-C (SIGTERM's default kills as abruptly) in the second layer
        computed.append(layer)
        return real(model, layer, *args, **kwargs)

    monkeypatch.setattr(analyze_module, "analyze_layer", interrupted)
    with pytest.raises(KeyboardInterrupt):
        analyze_module.analyze(swept, shift=False, battery=None, top=2)
    first = computed[0]
    kept = read_results(swept).metrics
    assert list(kept) == [first] and kept[first]["natural_top_patches"].shape[:2] == (3, 2)

    def counting(model, layer, *args, **kwargs):
        computed.append(layer)
        return real(model, layer, *args, **kwargs)

    monkeypatch.setattr(analyze_module, "analyze_layer", counting)
    computed.clear()
    capsys.readouterr()
    assert main(["analyze", str(swept), *FAST]) == 0
    assert computed == [l for l in ("conv1_1", "conv1_2") if l != first]  # only the unfinished layer
    err = capsys.readouterr().err
    assert f"{first}: metrics with these settings already in" in err and "kept (recompute them with --redo)" in err
    after = read_results(swept).metrics
    assert set(after) == {"conv1_1", "conv1_2"}
    np.testing.assert_array_equal(after[first]["natural_top_patches"], kept[first]["natural_top_patches"])
    rows = (swept.with_suffix(".csv")).read_text().splitlines()
    assert len(rows) == 1 + 6  # both layers' units in the table
    computed.clear()
    assert main(["analyze", str(swept), *FAST]) == 0 and computed == []  # all done: nothing computed
    assert main(["analyze", str(swept), *FAST, "--redo"]) == 0 and sorted(computed) == ["conv1_1", "conv1_2"]
    computed.clear()
    assert main(["analyze", str(swept), "--no-shift", "--no-gratings", "--top", "3"]) == 0
    assert sorted(computed) == ["conv1_1", "conv1_2"]  # other settings: computed again
    assert read_results(swept).metrics["conv1_2"]["natural_top_patches"].shape[1] == 3


def test_stage_times_are_stored_printed_and_returned_but_are_no_setting(swept, capsys):
    """Each stage's seconds land in the metrics group's ``stage_seconds`` attribute, in
    ``Analysis.seconds`` and in the table printed at the end; an analysis with the same settings
    keeps the layers (the times are not settings) and returns the stored times; a file written
    before the times were stored still reads and resumes (no times)."""
    import h5py

    from jaxvis.store.results import open_results, stage_seconds

    lines = []
    done = analyze_module.analyze(swept, shift=False, battery=None, top=2, redo=True, log=lines.append)
    for layer in ("conv1_1", "conv1_2"):
        assert list(done.seconds[layer]) == ["reference", "calibrate", "metrics"]
        assert all(0 < s < 600 for s in done.seconds[layer].values())
    with open_results(swept) as f:
        assert {layer: stage_seconds(f["layers"][layer]) for layer in done.seconds} == done.seconds
        assert "stage_seconds" not in f["layers/conv1_1/metrics"].attrs["config"]
    head = lines.index("seconds per analysis stage (and per unit):")
    assert lines[head + 1].split() == ["layer", "units", "reference", "calibrate", "metrics", "total"]
    row, per_unit, total = lines[head + 2].split(), lines[head + 3].split(), lines[head + 6].split()
    s = done.seconds["conv1_1"]
    assert row[:2] == ["conv1_1", "3"] and [float(v) for v in row[2:]] == pytest.approx(
        [*s.values(), sum(s.values())], abs=0.006)
    assert per_unit[:2] == ["per", "unit"] and float(per_unit[-1]) == pytest.approx(sum(s.values()) / 3, abs=0.006)
    assert total[:2] == ["total", "6"]
    assert float(total[-1]) == pytest.approx(sum(sum(v.values()) for v in done.seconds.values()), abs=0.006)

    lines.clear()
    kept = analyze_module.analyze(swept, shift=False, battery=None, top=2, log=lines.append)
    assert kept.seconds == done.seconds and not any("per analysis stage" in line for line in lines)
    with h5py.File(swept, "r+") as f:  # as written before the times were stored
        del f["layers/conv1_1/metrics"].attrs["stage_seconds"]
    old = analyze_module.analyze(swept, shift=False, battery=None, top=2, log=lines.append)
    assert old.seconds == {"conv1_1": {}, "conv1_2": done.seconds["conv1_2"]}
    assert read_results(swept).metrics["conv1_1"]["natural_top_patches"].shape[:2] == (3, 2)
