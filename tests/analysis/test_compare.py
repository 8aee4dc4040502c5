"""Comparing two results files: layers paired by receptive field, medians and quartiles as numpy
computes them, the HTML page, and unanalysed files compared on the metrics the sweep gives."""

from __future__ import annotations

from html.parser import HTMLParser

import h5py
import numpy as np
import pytest

from jaxvis.report.compare import compare, format_table, pair_layers, write_html
from jaxvis.cli import main
from jaxvis.errors import JaxvisError
from tests.helpers import N, U, make_results


@pytest.fixture
def two(tmp_path):
    a = make_results(tmp_path / "a.h5", {"conv1_1": 3, "conv2_1": 10, "conv3_1": 24},
                     config={"weights": "vgg19-normalized", "model": {"name": "vgg19"}})
    b = make_results(tmp_path / "b.h5", {"stem": 3, "blocks.1": 11, "blocks.3": 19, "head": 27},
                     config={"weights": "efficientnet-lite0",
                             "model": {"name": "efficientnet-lite0"}}, seed=100)
    return a, b


def test_layers_pair_by_closest_rf(two):
    a, b = two
    c = compare(a, b)
    assert [(la.name, la.rf, lb.name, lb.rf) for la, lb in c.pairs] == [
        ("conv1_1", 3, "stem", 3), ("conv2_1", 10, "blocks.1", 11), ("conv3_1", 24, "head", 27)]
    assert c.a.model == "vgg19-normalized (vgg19)" and c.b.model == "efficientnet-lite0"
    back = compare(b, a)  # every layer of B gets the closest of A; ties go to the earlier layer
    assert [(la.name, lb.name) for la, lb in back.pairs] == [
        ("stem", "conv1_1"), ("blocks.1", "conv2_1"), ("blocks.3", "conv3_1"),
        ("head", "conv3_1")]


def test_pairing_ties_and_missing_rf():
    from jaxvis.report.compare import LayerStats

    def layer(name, rf):
        return LayerStats(name, rf, 1, {}, {})

    pairs = pair_layers([layer("x", 10), layer("y", None)],
                        [layer("p", 8), layer("q", 12), layer("y", None)])
    assert [(la.name, lb.name if lb else None) for la, lb in pairs] == [("x", "p"), ("y", "y")]


def _row(table: str, header: str, metric: str) -> list[str]:
    block = table.split(header, 1)[1]
    line = next(line for line in block.splitlines() if line.split()[:1] == [metric])
    return line.split()[1:]


def test_table_holds_the_numpy_medians_and_quartiles(two, capsys):
    a, b = two
    c = compare(a, b)
    table = format_table(c)
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        shift_a = fa["layers/conv1_1/metrics/shift_index"][()]
        frac_b = fb["layers/stem/metrics/fraction_median"][()]
        acts = fa["layers/conv2_1/activations"][()]
        peak = fa["layers/conv2_1/max_activation"][()]
    header = "A conv1_1 (rf 3, 5 units)  <->  B stem (rf 3, 5 units)"
    assert header in table
    finite = shift_a[np.isfinite(shift_a)]
    n_a, q1, med, q3, n_b = _row(table, header, "shift_index")[:5]
    assert int(n_a) == len(finite) == U - 1 and int(n_b) == len(finite)
    np.testing.assert_allclose([float(q1), float(med), float(q3)],
                               np.percentile(finite, [25, 50, 75]), rtol=5e-3)
    row = _row(table, header, "fraction_median")
    np.testing.assert_allclose(float(row[6]), np.median(frac_b), rtol=5e-3)
    # conv2_1 carries a partial metrics group (fraction_median written by the analysis)
    header2 = "A conv2_1 (rf 10, 5 units)  <->  B blocks.1 (rf 11, 5 units)"
    row = _row(table, header2, "fraction_median")
    np.testing.assert_allclose(float(row[2]), np.median(np.median(acts / peak[:, None], 1)),
                               rtol=5e-3)
    pair2 = table.split(header2, 1)[1].split("\n\n")[0]
    assert "shift_index" not in pair2  # neither layer has it (partial metrics groups)
    assert "participation_ratio" in pair2

    assert main(["compare", str(a), str(b), "--out", str(a.parent / "cmp")]) == 0
    out = capsys.readouterr().out
    assert header in out and (a.parent / "cmp" / "compare.html").exists()


def _profile_row(table: str, header: str, name: str) -> list[str]:
    block = table.split(header, 1)[1].split("\n\n")[0]
    line = next(line for line in block.splitlines() if line.startswith(f"  {name} "))
    return line[42:].split()


def test_profiles_side_by_side(two, tmp_path):
    """The read-out profiles of paired layers, A beside B, in the table and on the page."""
    a, b = two
    with h5py.File(b, "r+") as f:  # every unit of B's stem that a grating drives is complex-like
        f["layers/stem/metrics/grating_f1_f0"][...] = 0.5
        f["layers/stem/metrics/grating_near_f1_f0"][...] = 0.5  # the near-peak gratings the class reads
    c = compare(a, b)
    table = format_table(c)
    header = "A conv1_1 (rf 3, 5 units)  <->  B stem (rf 3, 5 units)"
    assert _profile_row(table, header, "complex-like") == ["40%", "80%"]
    assert _profile_row(table, header, "simple-like") == ["40%", "0%"]
    assert _profile_row(table, header, "grating-unresponsive") == ["20%", "20%"]
    assert _profile_row(table, header, "median F1/F0") == ["0.90", "0.50"]
    assert _profile_row(table, header, "diverse at 0.9") == ["40%", "40%"]
    # conv2_1 and blocks.1 have partial analyses: no phase or shift class (diversity: the sweep's)
    header2 = "A conv2_1 (rf 10, 5 units)  <->  B blocks.1 (rf 11, 5 units)"
    assert _profile_row(table, header2, "complex-like") == ["–", "–"]
    assert _profile_row(table, header2, "unknown (phase/diversity/shift)") == ["5/0/5", "5/0/5"]
    assert "phase_class" not in table and "shift_class" not in table  # codes are not distributions
    page = write_html(c, tmp_path / "out").read_text()
    profiles = page.split('id="profile-pairs"', 1)[1].split("</table>", 1)[0]
    assert profiles.count("<tr") == 1 + 2 * len(c.pairs)  # the header, then A and B per pair
    assert '<a href="#pair-0">stem</a></td><td>3</td><td>5</td><td>80%</td><td>0%</td><td>20%</td>' in profiles


class _Html(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.srcs = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.srcs += [v for k, v in attrs if k in ("src", "href") and v and not
                      v.startswith(("#", "data:"))]


def test_html_page_is_self_contained(two, tmp_path):
    c = compare(*two)
    page = write_html(c, tmp_path / "out")
    assert page == tmp_path / "out" / "compare.html"
    text = page.read_text()
    parser = _Html()
    parser.feed(text)
    assert parser.srcs == []  # nothing fetched from anywhere
    assert parser.tags.count("svg") >= 3 * 6  # paired histograms for every pair
    assert "efficientnet-lite0" in text and "vgg19-normalized" in text
    assert sorted(p.name for p in page.parent.iterdir()) == ["compare.html"]


def test_unanalysed_files_compare_on_the_sweep_metrics(tmp_path, capsys):
    a = make_results(tmp_path / "plain.h5", {"conv2_1": 10}, metrics="none")
    c = compare(a, a)  # the same file twice is fine
    assert any("run `jaxvis analyze" in note and "plain.h5" in note for note in c.notes)
    table = format_table(c)
    with h5py.File(a, "r") as f:
        g = f["layers/conv2_1"]
        frac = g["activations"][()] / g["max_activation"][()][:, None]
        d = g["feature_distances"][()]
    i, j = np.triu_indices(N, 1)
    header = "A conv2_1 (rf 10, 5 units)  <->  B conv2_1 (rf 10, 5 units)"
    for metric, values in (("fraction_min", frac.min(1)), ("fraction_median", np.median(frac, 1)),
                           ("feature_min", d[:, i, j].min(1)),
                           ("feature_mean", d[:, i, j].mean(1))):
        row = _row(table, header, metric)
        assert int(row[0]) == U
        np.testing.assert_allclose(float(row[2]), np.median(values), rtol=5e-3)
        assert row[1:4] == row[5:8]  # A and B are the same file
    assert "shift_index" not in table
    assert main(["compare", str(a), str(a), "--out", str(tmp_path)]) == 0
    assert "jaxvis analyze" in capsys.readouterr().out


def test_compare_errors(tmp_path, capsys):
    a = make_results(tmp_path / "a.h5", {"conv1_1": 3}, metrics="none")
    with pytest.raises(JaxvisError, match="does not exist"):
        compare(a, tmp_path / "missing.h5")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    assert main(["compare", str(a), str(bad)]) == 2
    assert "not a jaxvis results file" in capsys.readouterr().err


def _set_json(path, key: str, value, layer: str | None = None, metrics: bool = False):
    import json
    with h5py.File(path, "r+") as f:
        node = f if layer is None else f["layers"][layer]
        node = node["metrics"] if metrics else node
        node.attrs[key] = json.dumps(value)


def test_compare_says_when_settings_or_feature_spaces_differ(tmp_path, capsys):
    config = {"weights": "vgg19", "model": {"name": "vgg19"},
              "objective": {"images": N, "lam": 0.01, "feature_layer": None},
              "optimizer": {"steps": 1000}}
    a = make_results(tmp_path / "a.h5", {"conv3_1": 24}, config=config)
    b = make_results(tmp_path / "b.h5", {"conv3_1": 24}, config={
        **config, "objective": {**config["objective"], "lam": 0.1}}, seed=3)
    meta = {"units": list(range(0, 2 * U, 2)), "rf": 24, "canvas": 5, "radius": 100.0}
    _set_json(a, "meta", {**meta, "feature_layer": "conv2_2"}, "conv3_1")
    _set_json(b, "meta", {**meta, "feature_layer": "pixels", "radius": 150.0}, "conv3_1")
    _set_json(a, "config", {"shift_steps": 300, "top": 8}, "conv3_1", metrics=True)
    _set_json(b, "config", {"shift_steps": 200, "top": 8}, "conv3_1", metrics=True)

    c = compare(a, b)
    table = format_table(c)
    assert "differs: sweep settings differ" in table and "objective.lam 0.01 (A) vs 0.1 (B)" in table
    pair = table.split("A conv3_1 (rf 24, 5 units)  <->  B conv3_1 (rf 24, 5 units)")[1]
    assert ("differs: feature_* distances are in different spaces (A: vgg19 conv2_2; B: pixels)"
            in pair)
    assert "differs: analysis settings differ: shift_steps 300 (A) vs 200 (B)" in pair
    assert "norm budgets differ (radius 100 in A, 150 in B)" in pair
    assert "top" not in pair.split("analysis settings differ:")[1].splitlines()[0]  # only changes
    page = write_html(c, tmp_path / "out").read_text()
    assert page.count('<p class="warn">differs: ') == 4
    assert "objective.lam 0.01 (A) vs 0.1 (B)" in page and "A: vgg19 conv2_2; B: pixels" in page

    same = format_table(compare(a, a))  # nothing differs between a file and itself
    assert "differs" not in same
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "cli")]) == 0
    assert "different spaces" in capsys.readouterr().out


def test_cli_summary_lines_read_the_metrics_table():
    from jaxvis.report.summary import analysis_line, sweep_line

    d = np.array([[0, 1, 2], [1, 0, 3], [2, 3, 0]], np.float32)
    layer = {"unit": np.array([0, 1]), "activations": np.array([[2.0, 1.0, 4.0], [1.0, 1.0, 1.0]]),
             "max_activation": np.array([4.0, 0.0]),  # unit 1 never responds: no fraction
             "pixel_distances": np.stack([d, 2 * d])}
    assert sweep_line("conv1_1", layer) == (
        "conv1_1: 2 units, median activation of the diverse images 0.50 x the maximum, "
        "mean pairwise pixel distance 3.0")  # fractions 0.5, 0.25, 1 (unit 1: NaN); (2 + 4) / 2
    values = {"fraction_median": np.array([0.5, np.nan, 0.7]),
              "participation_ratio": np.array([1.0, 2.0, 3.0]),
              "shift_index": np.array([0.95, 0.2, 0.91, 0.1])}
    assert analysis_line("conv2_1", values) == (
        "conv2_1: median activation fraction 0.60, participation ratio 2.00, "
        "shift index > 0.9: 50% (median 0.56)")
    assert "shift" not in analysis_line("conv2_1", {"fraction_median": values["fraction_median"]})


def test_a_difference_every_pair_shares_is_said_once(tmp_path):
    """Two files analysed with other shift-test steps (the demo's 300 against the default 700):
    one line at the top, not one per layer pair; a difference of one pair stays under it."""
    a = make_results(tmp_path / "a.h5", {"conv1_1": 3, "conv2_1": 10})
    b = make_results(tmp_path / "b.h5", {"conv1_1": 3, "conv2_1": 10}, seed=3)
    for layer in ("conv1_1", "conv2_1"):
        _set_json(a, "config", {"shift_steps": 300, "top": 8}, layer, metrics=True)
        _set_json(b, "config", {"shift_steps": 700, "top": 8 if layer == "conv1_1" else 4}, layer, metrics=True)
    table = format_table(compare(a, b))
    assert table.count("shift_steps 300 (A) vs 700 (B)") == 1
    assert "differs: every layer pair: analysis settings differ: shift_steps 300 (A) vs 700 (B)" in table
    conv2 = table.split("A conv2_1")[1]
    assert "differs: analysis settings differ: top 8 (A) vs 4 (B)" in conv2 and "shift_steps" not in conv2
    page = write_html(compare(a, b), tmp_path / "out").read_text()
    assert page.count("every layer pair: ") == 1
