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
    assert f"{first}: metrics with these settings already in" in capsys.readouterr().err
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
