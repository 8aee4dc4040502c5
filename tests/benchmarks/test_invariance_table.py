"""``python -m benchmarks.invariance_table --table-only``: the table from results files already
there (fake ones with known read-out classes), with the stage times beside it."""

from __future__ import annotations

import json

from benchmarks import invariance_table
from jaxvis.analysis.readout import format_profiles
from jaxvis.report.summary import layer_profiles
from tests.helpers import U, make_results


def test_table_only_reads_the_profiles_of_the_files_and_their_timings(tmp_path):
    path = make_results(tmp_path / "vgg19-normalized_conv1_1.h5", {"conv1_1": 3})
    (tmp_path / "timings-vgg19-normalized.json").write_text(json.dumps(
        {"vgg19-normalized/conv1_1": {"sweep_s": 12.4, "analyze_s": 7.6, "gratings_s": 0.01, "units": "0-4"}}))
    result = invariance_table.main(["--out", str(tmp_path), "--table-only"])
    [row] = result["rows"]  # only the (network, layer) whose file exists
    assert (row["weights"], row["layer"], row["sweep_s"]) == ("vgg19-normalized", "conv1_1", 12.4)
    text = (tmp_path / "invariance.md").read_text()
    want = format_profiles({"vgg19-normalized conv1_1": layer_profiles(path)["conv1_1"]})
    assert text.startswith(want)
    # the fake layer's known classes (tests/helpers.py): 2 complex, 2 simple, 1 unresponsive of U
    assert f"| vgg19-normalized conv1_1 | {U} | 40% | 40% | 20% |" in text
    assert "| vgg19-normalized | conv1_1 | 0-4 | 12 | 8 | yes | 0 |" in text
    stored = json.loads((tmp_path / "invariance.json").read_text())
    assert stored["rows"][0]["profile"]["units"] == U and stored["alpha"] == 0.9
