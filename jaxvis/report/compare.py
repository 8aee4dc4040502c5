"""Side-by-side read-out profiles and metric distributions of two results files, layers paired by
receptive field.

``jaxvis compare A.h5 B.h5 [--out DIR]``: two sweeps (two models, or one model normalised and
not) rarely share layer names, so every layer of A is paired with the layer of B whose receptive
field (layer metadata ``rf``) is closest (ties: the earlier layer of B in file order); both rfs
are reported (layers in catalogue order: the sweep config's ``layers``, then rf). For every pair
it sets the two layers' read-out profiles side by side (:mod:`jaxvis.analysis.readout`: shares of
each class, medians of the measures), and for every scalar metric (one value per unit) it prints
the number of units with a finite value, the quartiles and the median for A and B, and writes ``<out>/compare.html`` (self-contained:
paired SVG histograms over shared bins, no external assets).

Metrics and their definitions come from the metrics table (:mod:`jaxvis.analysis.metrics`),
read through :mod:`jaxvis.report.summary`: the ``metrics`` group ``jaxvis analyze`` adds, and
where it lacks them those the sweep itself determines (activation fractions, pairwise distances),
so two unanalysed files compare too.

Numbers are comparable only when they measure the same thing, so the comparison says where the
two files differ in how they were made: sweep settings (``objective``, ``optimizer``: e.g. N or
lambda), per layer pair the analysis settings (the metrics group's ``config``: shift-test steps,
photos, ...), the images' norm budget (``radius``: pixel distances scale with it) and the
*feature space* of the ``feature_*`` distances (the model and its diversity feature layer:
distances of 0.68 in one network's conv1_2 and 6.65 in another's are on different scales). Each difference is a ``differs:`` line under the pair in the table and a highlighted
note on the page; one that every layer pair shares (e.g. both files analysed with other shift-test
steps) is said once, at the top, for every pair.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jaxvis.analysis import readout as rules
from jaxvis.analysis.metrics import order
from jaxvis.report.summary import (layer_meta, layer_order, layer_profile,
                                     layer_scalars, model_name, quartiles)
from jaxvis.errors import JaxvisError
from jaxvis.io.atomic import write_all
from jaxvis.report.html import esc, fmt, html_page
from jaxvis.store.config import differing_leaves
from jaxvis.store.results import METRICS, analysis_config, json_attr, open_results
from jaxvis.report.svg import BLUE, ORANGE, svg_histogram

SWEEP_SETTINGS = ("objective", "optimizer")  # the parts of a sweep config that shape its metrics


# ----------------------------------------------------------------------------------------------
# reading and pairing


@dataclass
class LayerStats:
    name: str
    rf: int | None
    units: int
    scalars: dict[str, np.ndarray]
    sources: dict[str, str]
    feature_space: str = "unknown"          # where feature_* distances are measured
    analysis: dict | None = None            # settings of the analysis that wrote its metrics
    radius: float | None = None             # the images' norm budget (grey levels)
    profile: rules.Profile | None = None        # the read-out (jaxvis.analysis.readout)


@dataclass
class Side:
    path: Path
    model: str
    analysed: bool                     # at least one layer has a metrics group
    layers: list[LayerStats] = field(default_factory=list)
    config: dict = field(default_factory=dict)


@dataclass
class Comparison:
    a: Side
    b: Side
    pairs: list[tuple[LayerStats, LayerStats | None]]
    notes: list[str]
    differs: list[str] = field(default_factory=list)  # how the two sweeps were made differently
    shared: set[str] = field(default_factory=set)     # pair differences every pair has (in differs)

    def metrics(self, pair) -> list[str]:
        """The pair's scalar metrics, without the read-out's class codes (the profiles give their
        shares)."""
        la, lb = pair
        names = set(la.scalars) | (set(lb.scalars) if lb is not None else set())
        return order(names - set(rules.CLASS_METRICS.values()))

    def differences(self, pair) -> list[str]:
        """What makes the pair's numbers measure different things (see the module docstring),
        less what every pair shares (said once, in ``differs``)."""
        return [d for d in self.pair_differences(pair) if d not in self.shared]

    def pair_differences(self, pair) -> list[str]:
        la, lb = pair
        if lb is None:
            return []
        out = []
        if la.feature_space != lb.feature_space and {"feature_min", "feature_mean"} & (
                set(la.scalars) | set(lb.scalars)):
            out.append(f"feature_* distances are in different spaces (A: {la.feature_space}; "
                       f"B: {lb.feature_space}): compare them within a file, not across")
        if la.radius and lb.radius and abs(la.radius - lb.radius) > 0.01 * max(la.radius, lb.radius):
            out.append(f"the images' norm budgets differ (radius {fmt(la.radius)} in A, "
                       f"{fmt(lb.radius)} in B): pixel_* distances scale with it")
        if la.analysis is not None and lb.analysis is not None:
            out += [f"analysis settings differ: {d}" for d in differences(la.analysis, lb.analysis)]
        return out


def differences(a, b, path: str = "") -> list[str]:
    """Every differing leaf of two JSON values, as ``key A-value (A) vs B-value (B)`` (a key one
    side lacks reads as None there)."""
    return [f"{key or 'value'} {_short(x)} (A) vs {_short(y)} (B)"
            for key, x, y in differing_leaves(a, b, path, strict=False, missing=None)]


def _short(value) -> str:
    text = "-" if value is None else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _feature_space(model: str, meta: dict) -> str:
    layer = meta.get("feature_layer")
    if layer in (None, ""):
        return f"{model}, feature layer not recorded"
    return "pixels" if layer == "pixels" else f"{model} {layer}"


def read_side(path: Path) -> Side:
    path = Path(path)
    with open_results(path) as f:
        config = json_attr(f.attrs, "config", path)
        config = config if isinstance(config, dict) else {}
        side = Side(path, model_name(config), analysed=False, config=config)
        metas = {name: layer_meta(group) for name, group in f["layers"].items()}
        rfs = {}
        for name, meta in metas.items():
            rf = meta.get("rf")
            rfs[name] = int(rf) if isinstance(rf, (int, float)) and not isinstance(rf, bool) \
                else None
        for name in layer_order(rfs, config, rfs):
            group = f["layers"][name]
            scalars, sources = layer_scalars(group)
            side.analysed |= METRICS in group
            units = len(group["unit"]) if "unit" in group else 0
            radius = metas[name].get("radius")
            side.layers.append(LayerStats(name, rfs[name], units, scalars, sources,
                                          _feature_space(side.model, metas[name]),
                                          analysis_config(group),
                                          float(radius) if isinstance(radius, (int, float))
                                          and not isinstance(radius, bool) else None,
                                          layer_profile(name, group)))
    if not side.layers:
        raise JaxvisError(f"{path} holds no layers")
    return side


def pair_layers(a: list[LayerStats], b: list[LayerStats]):
    """Each layer of ``a`` with the layer of ``b`` of the closest rf (ties: earlier in ``b``);
    a layer without an rf is paired with the same-named layer of ``b``, if any, else None."""
    pairs = []
    with_rf = [lb for lb in b if lb.rf is not None]
    for la in a:
        if la.rf is not None and with_rf:
            best = min(with_rf, key=lambda lb: abs(lb.rf - la.rf))  # min keeps the first on ties
        else:
            best = next((lb for lb in b if lb.name == la.name), None)
        pairs.append((la, best))
    return pairs


def compare(a_path: Path, b_path: Path) -> Comparison:
    """Read both files and pair their layers (see the module docstring)."""
    a, b = read_side(a_path), read_side(b_path)
    notes = []
    for label, side in (("A", a), ("B", b)):
        if not side.analysed:
            derived = sorted({m for layer in side.layers for m in layer.scalars})
            notes.append(f"{label} {side.path} has no metrics: run `jaxvis analyze {side.path}` "
                         "first for the shift test and natural references; comparing what the "
                         f"sweep itself gives ({', '.join(derived) or 'nothing'})")
        for layer in side.layers:
            if layer.rf is None:
                notes.append(f"{label} layer {layer.name} has no rf in its metadata; paired by "
                             "name only")
    changed = [d for key in SWEEP_SETTINGS
               for d in differences(a.config.get(key), b.config.get(key), key)]
    differs = ["sweep settings differ, so the metrics describe differently made sets: "
               + "; ".join(changed)] if changed else []
    pairs = pair_layers(a.layers, b.layers)
    if not any(lb is not None and (set(la.scalars) | set(lb.scalars)) for la, lb in pairs):
        raise JaxvisError(f"nothing to compare between {a.path} and {b.path}: no layer pairs "
                          "with metrics (the layers need activations and max_activation, or a "
                          "metrics group)")
    c = Comparison(a, b, pairs, notes, differs)
    each = [set(c.pair_differences(pair)) for pair in pairs if pair[1] is not None]
    if len(each) > 1:  # one pair keeps its differences under it
        c.shared = set.intersection(*each)
        c.differs += [f"every layer pair: {d}" for d in sorted(c.shared)]
    return c


# ----------------------------------------------------------------------------------------------
# output


def format_table(comparison: Comparison) -> str:
    """The text table: per layer pair a header line, its ``differs:`` lines, the two profiles side
    by side (:func:`jaxvis.analysis.readout.profile_columns`), then per metric n, q1, median, q3
    of A and B."""
    c = comparison
    lines = [f"A: {c.a.path} ({c.a.model})", f"B: {c.b.path} ({c.b.model})"]
    lines += [f"differs: {d}" for d in c.differs]
    lines += [f"note: {n}" for n in c.notes]
    columns = rules.profile_columns(rules.PROFILE_ALPHA)
    for la, lb in c.pairs:
        lines.append("")
        if lb is None:
            lines.append(f"A {la.name} (rf {fmt(la.rf)}): no layer of B to pair with")
            continue
        lines.append(f"A {la.name} (rf {fmt(la.rf)}, {la.units} units)  <->  "
                     f"B {lb.name} (rf {fmt(lb.rf)}, {lb.units} units)")
        lines += [f"  differs: {d}" for d in c.differences((la, lb))]
        lines.append(f"  {'profile (read-out)':<40}{'A':>10}{'B':>10}")
        lines += [f"  {head:<40}{_cell(cell, la):>10}{_cell(cell, lb):>10}"
                  for head, cell in columns[1:]]  # units: in the header line
        lines.append(f"  {'metric':<24}{'n A':>6}{'q1 A':>10}{'median A':>10}{'q3 A':>10}"
                     f"{'n B':>7}{'q1 B':>10}{'median B':>10}{'q3 B':>10}")
        for metric in c.metrics((la, lb)):
            na, q1a, ma, q3a = quartiles(la.scalars.get(metric))
            nb, q1b, mb, q3b = quartiles(lb.scalars.get(metric))
            lines.append(f"  {metric:<24}{na:>6}{fmt(q1a):>10}{fmt(ma):>10}{fmt(q3a):>10}"
                         f"{nb:>7}{fmt(q1b):>10}{fmt(mb):>10}{fmt(q3b):>10}")
    return "\n".join(lines)


def _cell(cell, layer: LayerStats) -> str:
    return "–" if layer.profile is None else cell(layer.profile)


def _profiles_html(c: Comparison) -> list[str]:
    """The two networks' profiles side by side: per layer pair a row for A and one for B."""
    columns = rules.profile_columns(rules.PROFILE_ALPHA)
    out = ['<h2 id="profiles">Profiles, layers paired by receptive field</h2>',
           '<p class="note">The read-out of each layer (shares of all units; &ndash;: no unit has a '
           "class on that axis), thresholds in <code>jaxvis.analysis.readout.THRESHOLDS</code>.</p>",
           '<table class="summary" id="profile-pairs"><thead><tr><th class="l">file</th>'
           '<th class="l">layer</th><th>rf</th>'
           + "".join(f"<th>{esc(head)}</th>" for head, _ in columns) + "</tr></thead><tbody>"]
    for k, (la, lb) in enumerate(c.pairs):
        for label, colour, layer in (("A", BLUE, la), ("B", ORANGE, lb)):
            if layer is None:
                continue
            border = ' style="border-top:2px solid #888"' if label == "A" and k else ""
            out.append(f'<tr{border}><td class="l"><span style="color:{colour}">&#9632;</span> '
                       f'{label}</td><td class="l"><a href="#pair-{k}">{esc(layer.name)}</a></td>'
                       f"<td>{fmt(layer.rf)}</td>"
                       + "".join(f"<td>{esc(_cell(cell, layer))}</td>" for _, cell in columns)
                       + "</tr>")
    out.append("</tbody></table>")
    return out


def write_html(comparison: Comparison, out_dir: Path) -> Path:
    """``<out_dir>/compare.html``: the table and paired histograms; written atomically."""
    c = comparison
    out_dir = Path(out_dir)
    la_label, lb_label = f"A {c.a.model}", f"B {c.b.model}"
    body = ["<h1>jaxvis compare</h1>",
            f'<p class="kv"><span style="color:{BLUE}">&#9632;</span> A: {esc(c.a.path.name)} '
            f'({esc(c.a.model)})<br><span style="color:{ORANGE}">&#9632;</span> B: '
            f"{esc(c.b.path.name)} ({esc(c.b.model)})</p>"]
    body += [f'<p class="warn">differs: {esc(d)}</p>' for d in c.differs]
    body += [f'<p class="note">{esc(n)}</p>' for n in c.notes]
    body.append('<table class="summary"><thead><tr><th class="l">A layer</th><th>rf</th>'
                '<th class="l">B layer</th><th>rf</th></tr></thead><tbody>')
    for k, (la, lb) in enumerate(c.pairs):
        body.append(f'<tr><td class="l"><a href="#pair-{k}">{esc(la.name)}</a></td>'
                    f"<td>{fmt(la.rf)}</td><td class=\"l\">{esc(lb.name if lb else '–')}</td>"
                    f"<td>{fmt(lb.rf if lb else None)}</td></tr>")
    body.append("</tbody></table>")
    body += _profiles_html(c)
    for k, (la, lb) in enumerate(c.pairs):
        if lb is None:
            continue
        body.append(f'<h2 id="pair-{k}">A {esc(la.name)} (rf {fmt(la.rf)}) vs B {esc(lb.name)} '
                    f"(rf {fmt(lb.rf)})</h2>")
        body += [f'<p class="warn">differs: {esc(d)}</p>' for d in c.differences((la, lb))]
        rows = ['<table class="summary"><thead><tr><th class="l">metric</th><th>n A</th>'
                "<th>q1 A</th><th>median A</th><th>q3 A</th><th>n B</th><th>q1 B</th>"
                "<th>median B</th><th>q3 B</th></tr></thead><tbody>"]
        plots = []
        for metric in c.metrics((la, lb)):
            va, vb = la.scalars.get(metric), lb.scalars.get(metric)
            na, q1a, ma, q3a = quartiles(va)
            nb, q1b, mb, q3b = quartiles(vb)
            rows.append(f'<tr><td class="l">{esc(metric)}</td><td>{na}</td><td>{fmt(q1a)}</td>'
                        f"<td>{fmt(ma)}</td><td>{fmt(q3a)}</td><td>{nb}</td><td>{fmt(q1b)}</td>"
                        f"<td>{fmt(mb)}</td><td>{fmt(q3b)}</td></tr>")
            series = [(s, v, colour) for s, v, colour in ((la_label, va, BLUE),
                                                          (lb_label, vb, ORANGE))
                      if v is not None]
            if na or nb:
                plots.append(svg_histogram(series, metric, metric, share=True))
        rows.append("</tbody></table>")
        body += rows
        body.append('<div class="plots">' + "".join(plots) + "</div>")
    page = out_dir / "compare.html"
    write_all([(page, html_page("jaxvis compare", "\n".join(body)))])  # makes out_dir if needed
    return page
