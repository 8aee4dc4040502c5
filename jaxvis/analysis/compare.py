"""Side-by-side metric distributions of two results files, layers paired by receptive field.

``jaxvis compare A.h5 B.h5 [--out DIR]``: two sweeps (two models, or one model normalised and
not) rarely share layer names, so every layer of A is paired with the layer of B whose receptive
field (layer metadata ``rf``) is closest (ties: the earlier layer of B in file order); both rfs
are reported (layers in catalogue order: the sweep config's ``layers``, then rf). For every pair and every scalar metric (one value per unit) it prints the number of
units with a finite value, the quartiles and the median for A and B, and writes
``<out>/compare.html`` (self-contained: paired SVG histograms over shared bins, no external
assets).

Metrics come from the ``metrics`` group ``jaxvis analyze`` adds. The ones the sweep itself
determines are computed on the fly where that group lacks them (``layer_scalars``), so two
unanalysed files compare too:

- ``fraction_min``, ``fraction_median``: the lowest / median activation of the N diverse images
  divided by the single-image maximum (NaN where the maximum is not positive);
- ``pixel_min``, ``pixel_mean``, ``feature_min``, ``feature_mean``: the smallest / mean pairwise
  distance ``i < j`` of the diverse set (``pixel_distances``, ``feature_distances``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jaxvis.errors import JaxvisError

METRICS = "metrics"


# ----------------------------------------------------------------------------------------------
# metrics of one layer


def sweep_scalars(group) -> dict[str, np.ndarray]:
    """The scalar metrics computable from the sweep's own datasets in ``group`` (see the module
    docstring); a metric whose inputs are missing or malformed is left out."""
    out: dict[str, np.ndarray] = {}
    if "activations" in group and "max_activation" in group:
        acts = np.asarray(group["activations"][()], np.float64)
        peak = np.asarray(group["max_activation"][()], np.float64)
        if acts.ndim == 2 and peak.shape == acts.shape[:1] and acts.shape[1] > 0:
            with np.errstate(divide="ignore", invalid="ignore"):
                frac = acts / peak[:, None]
            frac[~(peak > 0)] = np.nan
            with np.errstate(all="ignore"):
                out["fraction_min"] = np.min(frac, axis=1)
                out["fraction_median"] = np.median(frac, axis=1)
    for space in ("pixel", "feature"):
        key = f"{space}_distances"
        if key not in group:
            continue
        d = np.asarray(group[key][()], np.float64)
        if d.ndim != 3 or d.shape[1] != d.shape[2] or d.shape[1] < 2:
            continue
        i, j = np.triu_indices(d.shape[1], k=1)
        pairs = d[:, i, j]
        out[f"{space}_min"] = pairs.min(axis=1)
        out[f"{space}_mean"] = pairs.mean(axis=1)
    return out


def layer_scalars(group) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """All scalar metrics of a layer group: ({name: [U] float64}, {name: "metrics" or "sweep"}).

    Every ``[U]``-shaped numeric dataset of the ``metrics`` group counts; the sweep-derived ones
    fill in what the group lacks.
    """
    count = len(group["unit"]) if "unit" in group else None
    scalars: dict[str, np.ndarray] = {}
    sources: dict[str, str] = {}
    if METRICS in group:
        import h5py

        for name, item in group[METRICS].items():
            if not isinstance(item, h5py.Dataset) or item.ndim != 1:
                continue
            if item.dtype.kind not in "biuf" or (count is not None and item.shape[0] != count):
                continue
            scalars[name] = np.asarray(item[()], np.float64)
            sources[name] = "metrics"
    for name, values in sweep_scalars(group).items():
        if name not in scalars and (count is None or len(values) == count):
            scalars[name] = values
            sources[name] = "sweep"
    return scalars, sources


# ----------------------------------------------------------------------------------------------
# reading and pairing


@dataclass
class LayerStats:
    name: str
    rf: int | None
    units: int
    scalars: dict[str, np.ndarray]
    sources: dict[str, str]


@dataclass
class Side:
    path: Path
    model: str
    analysed: bool                     # at least one layer has a metrics group
    layers: list[LayerStats] = field(default_factory=list)


@dataclass
class Comparison:
    a: Side
    b: Side
    pairs: list[tuple[LayerStats, LayerStats | None]]
    notes: list[str]

    def metrics(self, pair) -> list[str]:
        from jaxvis.io.report import _ordered

        la, lb = pair
        names = set(la.scalars) | (set(lb.scalars) if lb is not None else set())
        return _ordered(names)


def model_name(config: dict) -> str:
    from jaxvis.io.report import _model_name
    return _model_name(config if isinstance(config, dict) else {})


def read_side(path: Path) -> Side:
    from jaxvis.io.report import _meta, layer_order
    from jaxvis.io.results import _json_attr, open_results

    path = Path(path)
    with open_results(path) as f:
        config = _json_attr(f, "config", path)
        side = Side(path, model_name(config), analysed=False)
        rfs = {}
        for name, group in f["layers"].items():
            rf = _meta(group).get("rf")
            rfs[name] = int(rf) if isinstance(rf, (int, float)) and not isinstance(rf, bool) \
                else None
        for name in layer_order(rfs, config, rfs):
            group = f["layers"][name]
            rf = rfs[name]
            scalars, sources = layer_scalars(group)
            side.analysed |= METRICS in group
            units = len(group["unit"]) if "unit" in group else 0
            side.layers.append(LayerStats(name, rf, units, scalars, sources))
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
    pairs = pair_layers(a.layers, b.layers)
    if not any(lb is not None and (set(la.scalars) | set(lb.scalars)) for la, lb in pairs):
        raise JaxvisError(f"nothing to compare between {a.path} and {b.path}: no layer pairs "
                          "with metrics (the layers need activations and max_activation, or a "
                          "metrics group)")
    return Comparison(a, b, pairs, notes)


# ----------------------------------------------------------------------------------------------
# output


def _stats(values) -> tuple[int, float, float, float]:
    from jaxvis.io.report import quartiles
    return quartiles(values) if values is not None else (0, math.nan, math.nan, math.nan)


def format_table(comparison: Comparison) -> str:
    """The text table: per layer pair a header line, then per metric n, q1, median, q3 of A and B."""
    from jaxvis.io.report import fmt

    c = comparison
    lines = [f"A: {c.a.path} ({c.a.model})", f"B: {c.b.path} ({c.b.model})"]
    lines += [f"note: {n}" for n in c.notes]
    for la, lb in c.pairs:
        lines.append("")
        if lb is None:
            lines.append(f"A {la.name} (rf {fmt(la.rf)}): no layer of B to pair with")
            continue
        lines.append(f"A {la.name} (rf {fmt(la.rf)}, {la.units} units)  <->  "
                     f"B {lb.name} (rf {fmt(lb.rf)}, {lb.units} units)")
        lines.append(f"  {'metric':<24}{'n A':>6}{'q1 A':>10}{'median A':>10}{'q3 A':>10}"
                     f"{'n B':>7}{'q1 B':>10}{'median B':>10}{'q3 B':>10}")
        for metric in c.metrics((la, lb)):
            na, q1a, ma, q3a = _stats(la.scalars.get(metric))
            nb, q1b, mb, q3b = _stats(lb.scalars.get(metric))
            lines.append(f"  {metric:<24}{na:>6}{fmt(q1a):>10}{fmt(ma):>10}{fmt(q3a):>10}"
                         f"{nb:>7}{fmt(q1b):>10}{fmt(mb):>10}{fmt(q3b):>10}")
    return "\n".join(lines)


def write_html(comparison: Comparison, out_dir: Path) -> Path:
    """``<out_dir>/compare.html``: the table and paired histograms; written atomically."""
    from jaxvis.io.report import (BLUE, ORANGE, esc, fmt, html_page, svg_histogram,
                                  write_pages)

    c = comparison
    out_dir = Path(out_dir)
    la_label, lb_label = f"A {c.a.model}", f"B {c.b.model}"
    body = ["<h1>jaxvis compare</h1>",
            f'<p class="kv"><span style="color:{BLUE}">&#9632;</span> A: {esc(c.a.path.name)} '
            f'({esc(c.a.model)})<br><span style="color:{ORANGE}">&#9632;</span> B: '
            f"{esc(c.b.path.name)} ({esc(c.b.model)})</p>"]
    body += [f'<p class="note">{esc(n)}</p>' for n in c.notes]
    body.append('<table class="summary"><thead><tr><th class="l">A layer</th><th>rf</th>'
                '<th class="l">B layer</th><th>rf</th></tr></thead><tbody>')
    for k, (la, lb) in enumerate(c.pairs):
        body.append(f'<tr><td class="l"><a href="#pair-{k}">{esc(la.name)}</a></td>'
                    f"<td>{fmt(la.rf)}</td><td class=\"l\">{esc(lb.name if lb else '–')}</td>"
                    f"<td>{fmt(lb.rf if lb else None)}</td></tr>")
    body.append("</tbody></table>")
    for k, (la, lb) in enumerate(c.pairs):
        if lb is None:
            continue
        body.append(f'<h2 id="pair-{k}">A {esc(la.name)} (rf {fmt(la.rf)}) vs B {esc(lb.name)} '
                    f"(rf {fmt(lb.rf)})</h2>")
        rows = ['<table class="summary"><thead><tr><th class="l">metric</th><th>n A</th>'
                "<th>q1 A</th><th>median A</th><th>q3 A</th><th>n B</th><th>q1 B</th>"
                "<th>median B</th><th>q3 B</th></tr></thead><tbody>"]
        plots = []
        for metric in c.metrics((la, lb)):
            va, vb = la.scalars.get(metric), lb.scalars.get(metric)
            na, q1a, ma, q3a = _stats(va)
            nb, q1b, mb, q3b = _stats(vb)
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
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise JaxvisError(f"cannot write the comparison to {out_dir}: {err}") from None
    page = out_dir / "compare.html"
    write_pages({page: html_page("jaxvis compare", "\n".join(body))})
    return page
