"""Static HTML reports of a results file: one page per layer plus an index, no server needed.

``jaxvis report RESULTS.h5 [--out DIR] [--layer a,b]`` writes ``<out>/<layer>.html`` per layer,
its images as PNG files in ``<out>/<layer>_files/`` and ``<out>/index.html``. Every page works
from ``file://`` and fetches nothing from anywhere else: images are files next to the page
(Pillow; small canvases enlarged with nearest-neighbour sampling so each pixel is a visible
square), loaded lazily (``loading="lazy"``, with their sizes, so a page of 512 units opens at
once and fetches images as they scroll into view); plots are inline SVG
(:mod:`jaxvis.report.svg`), and a few lines of inline JavaScript sort the unit table.

Each layer page is made by :mod:`jaxvis.report.layer_page`. The index page shows the profile
across layers (each class's share and count, linked to its gallery row), then the layers'
medians, and their trends where there are two layers or more.

Metrics and their definitions come from the metrics table (:mod:`jaxvis.analysis.metrics`) and
the ``metrics`` group that ``jaxvis analyze`` adds per layer; every one of them is optional. Those
computable from the sweep itself are computed on the fly where the group lacks them
(:mod:`jaxvis.report.summary`), so a freshly swept file renders too.

Contrast: a unit's best image, diverse set and floor sets share one ``to_display`` mapping (what
varies across them is what the unit ignores); natural patches share one per unit; response and
variance maps are heat maps over their own range, with a colour bar.

Pages and images are written all or nothing (:func:`jaxvis.io.atomic.write_all`): an error
leaves the output folder as it was. Once they are in place, images an earlier report of the same
layer left for units it no longer holds are removed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from jaxvis.analysis import metrics as metric_table
from jaxvis.analysis import readout as rules
from jaxvis.report.summary import (label, layer_meta, layer_order, layer_profile, layer_scalars, model_name,
                                   percent, quartiles)
from jaxvis.errors import JaxvisError
from jaxvis.io.atomic import write_all
from jaxvis.report.html import esc, fmt, html_page
from jaxvis.report.render import check_needed
from jaxvis.store.results import METRICS, file_stems, json_attr, open_results, unknown_layer
from jaxvis.report.layer_page import IMAGE_NAME, axis_label, gallery_id, layer_files, plural
from jaxvis.report.svg import BLUE, svg_lines

# the index's per-layer medians: (key of the layer's scalar medians, header); metric names on hover
TRENDS = ("fraction_median", "participation_ratio", "shift_index", "feature_min", "pixel_min")


def _index_page(path: Path, config: dict, rows: list[dict]) -> str:
    """The index: the profile of every layer (each class's share and count, as on the layer
    pages), the layers' medians and, with two layers or more, their trends."""
    out = [f"<h1>jaxvis report: {esc(path.name)}</h1>",
           f'<p class="kv">{esc(model_name(config))} &middot; {plural(len(rows), "layer")} (in '
           "catalogue order)</p>"]
    at = fmt(rules.PROFILE_ALPHA)
    out += ['<h2>Profile across layers</h2><p class="note">The read-out per layer: the share of its units '
            "in each class (count in brackets; &ndash;: no unit has a class on that axis), thresholds in "
            "<code>jaxvis.analysis.readout.THRESHOLDS</code>. A layer's page has the 95% intervals and the "
            "units of each class.</p>",
            '<table class="summary" id="profiles"><thead><tr><th class="l">layer</th><th>units</th>'
            + "".join(f'<th class="l">{esc(axis_label(axis, rules.PROFILE_ALPHA))}</th>' for axis in rules.AXES)
            + "".join(f'<th title="{esc(metric)}: {esc(what)}">median {esc(label(metric))}'
                      + (f" at {at}" if metric_table.REGISTRY.get(metric) and metric_table.REGISTRY[metric].per_floor else "") + "</th>"
                      for _, metric, what in rules.MEDIANS)
            + "</tr></thead><tbody>"]
    for row in rows:
        p = row["profile"]
        cells = []
        for axis, names in rules.AXES.items():
            if not p.known(axis):
                cells.append('<td class="l">&ndash;</td>')
                continue
            shares = [(n, p.fractions[axis][n]) for n in (*names[::-1], rules.UNKNOWN) if p.fractions[axis][n] > 0]
            cells.append('<td class="l nowrap">' + "<br>".join(
                f'<a href="{esc(row["href"])}#{gallery_id(axis, n)}">{percent(f)} {esc(n)}</a> ({round(f * p.units)})'
                if n != rules.UNKNOWN else f"{percent(f)} {esc(n)} ({round(f * p.units)})" for n, f in shares) + "</td>")
        cells += [f"<td>{fmt(p.medians[field])}</td>" for field, _, _ in rules.MEDIANS]
        out.append(f'<tr><td class="l"><a href="{esc(row["href"])}">{esc(row["layer"])}</a></td>'
                   f'<td>{p.units}</td>{"".join(cells)}</tr>')
    out += ["</tbody></table>", '<h2>Layers</h2><p class="note">Medians over each layer\'s units.</p>',
            '<table class="summary"><thead><tr><th class="l">layer</th><th>units</th>'
            '<th title="receptive field (px)">receptive field</th><th title="canvas (px)">canvas</th>'
            + "".join(f'<th title="{esc(key)}: the median over the layer\'s units">{esc(label(key))}</th>'
                      for key in TRENDS)
            + '<th class="l">metrics</th></tr></thead><tbody>']
    for row in rows:
        out.append(f'<tr><td class="l"><a href="{esc(row["href"])}">{esc(row["layer"])}</a></td>'
                   f'<td>{row["units"]}</td><td>{esc(fmt(row["rf"]))}</td>'
                   f'<td>{esc(fmt(row["canvas"]))}</td>'
                   + "".join(f"<td>{fmt(row['medians'].get(key, math.nan))}</td>" for key in TRENDS)
                   + f'<td class="l">{"analysed" if row["analysed"] else "sweep only"}</td></tr>')
    out.append("</tbody></table>")
    if len(rows) >= 2:  # a trend needs two layers
        names = [row["layer"] for row in rows]
        plots = []
        for key in TRENDS:
            values = [row["medians"].get(key, math.nan) for row in rows]
            if np.isfinite(values).sum() >= 2:
                plots.append(svg_lines(names, [(label(key), values, BLUE)], label(key), f"median {key}"))
        if plots:
            out.append('<h2>Trends over layers</h2><div class="plots">' + "".join(plots) + "</div>")
    return html_page(f"{path.name} - jaxvis report", "\n".join(out))



def report(results_path: Path, out_dir: Path, *, layers: list[str] | None = None) -> list[Path]:
    """Write the HTML report of ``results_path`` (all layers, or ``layers``) into ``out_dir``.

    Returns the written pages: one per layer, then ``index.html`` (each layer's images are in
    ``<out_dir>/<layer>_files/``). Raises ``JaxvisError`` (and writes nothing) for a file that is
    not a results file, a missing layer, or a layer without the sweep's images and activations.
    """
    results_path, out_dir = Path(results_path), Path(out_dir)
    with open_results(results_path) as f:
        config = json_attr(f.attrs, "config", results_path)
        config = config if isinstance(config, dict) else {}
        names = layer_order(f["layers"], config, {n: layer_meta(g).get("rf") for n, g in
                                                  f["layers"].items()})
        for name in layers or []:
            if name not in f["layers"]:
                raise unknown_layer(results_path, name, names)
        chosen = list(dict.fromkeys(layers)) if layers else names
        if not chosen:
            raise JaxvisError(f"{results_path} holds no layers")
        for name in chosen:
            group = f["layers"][name]
            check_needed(group, name, results_path, "a report needs")
            if group["images"].ndim != 5 or group["max_image"].ndim != 4:
                raise JaxvisError(f"layer {name}: images must be [units, N, H, W, 3] and "
                                  f"max_image [units, H, W, 3], not {group['images'].shape} and "
                                  f"{group['max_image'].shape}")
        index = out_dir / "index.html"
        stems = file_stems(names)  # of every layer, so a layer's names do not depend on --layer
        pages = [out_dir / f"{stems[name]}.html" for name in chosen] + [index]
        shown = Path(printable(results_path.name))  # the name the pages show (any bytes on disk)

        def files():
            for page in pages:  # an obstacle to any page fails before an image is made
                if page.exists() and not page.is_file():
                    raise JaxvisError(f"cannot write report page {page}: something other than "
                                      "a file is in the way")
            rows = []
            for name in chosen:
                group = f["layers"][name]
                meta = layer_meta(group)
                yield from layer_files(shown, name, stems[name], group, meta, config, out_dir,
                                        index.name)
                scalars, _ = layer_scalars(group)
                rows.append({"layer": name, "href": f"{stems[name]}.html",
                             "units": len(group["unit"]), "rf": meta.get("rf"),
                             "canvas": meta.get("canvas"), "analysed": METRICS in group,
                             "medians": {k: quartiles(v)[2] for k, v in scalars.items()},
                             "profile": layer_profile(name, group)})
            yield index, _index_page(shown, config, rows)

        written = write_all(files())
    _remove_stale(out_dir, [stems[name] for name in chosen], set(written))
    return [p for p in written if p in pages]


def printable(name: str) -> str:
    """A file name as text a page can hold: bytes that are not UTF-8 shown as U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _remove_stale(out_dir: Path, stems: list[str], written: set[Path]) -> None:
    """Images an earlier report of the same layers left that the new pages no longer show (units
    now gone), once the new ones are in place; files of other names are the user's and stay."""
    for stem in stems:
        folder = out_dir / f"{stem}_files"
        for path in folder.glob("u*.png"):
            if path not in written and IMAGE_NAME.fullmatch(path.name):
                path.unlink(missing_ok=True)
