"""Static HTML reports of a results file: one page per layer plus an index, no server needed.

``jaxvis report RESULTS.h5 [--out DIR] [--layer a,b]`` writes ``<out>/<layer>.html`` per layer,
its images as PNG files in ``<out>/<layer>_files/`` and ``<out>/index.html``. Every page works
from ``file://`` and fetches nothing from anywhere else: images are files next to the page
(Pillow; small canvases enlarged with nearest-neighbour sampling so each pixel is a visible
square), loaded lazily (``loading="lazy"``, with their sizes, so a page of 512 units opens at
once and fetches images as they scroll into view); plots are inline SVG
(:mod:`jaxvis.io.svg`), and a few lines of inline JavaScript sort the unit table.

Per layer page:

- first, the layer's read-out profile (:mod:`jaxvis.analysis.readout`): the share of units in each
  class of each axis (phase, diversity at alpha = 0.9, shift), the medians of the measures and
  their histograms (F1/F0, grating phase min/max, rotation min/max, diversity against the linear
  bound and against natural patches, the shift-invariance index) with the thresholds marked;
- a summary: the layer's metadata, a table of every scalar metric over units (median and
  quartiles, with the metric's definition; the class columns are in the profile), and a scatter of
  the median activation fraction against diversity
  (``feature_min`` relative to ``reference_feature_min``, else the pixel version, else the raw
  distance);
- the unit table: one row per unit with its maximum and diverse images and one column per scalar
  metric (a class column shows the class's name); clicking a header sorts the rows by it (again:
  the other direction; NaN always last);
- per unit a detail section ``#unit-<n>``: its classes, maximum and diverse images with their
  activation fractions and beside them its orientation, period and phase tuning curves (inline
  SVG, the grating battery's axes from the analysis settings), the shift texture and response map,
  the top natural patches and the variance map, whichever of these the file holds.

The index page shows the profile across layers (one row per layer), then the layers' medians and
trend plots.

Metrics and their definitions come from the metrics table (:mod:`jaxvis.analysis.metrics`) and
the ``metrics`` group that ``jaxvis analyze`` adds per layer; every one of them is optional. Those
computable from the sweep itself are computed on the fly where the group lacks them
(:mod:`jaxvis.analysis.summary`), so a freshly swept file renders too.

Contrast: a unit's maximum and its diverse images share one ``to_display`` mapping (what varies
across them is what the unit ignores), as in ``jaxvis render``; natural patches share one per
unit; response and variance maps are heat maps over their own range.

Pages and images are written all or nothing (:func:`jaxvis.io.html.write_files`): an error
leaves the output folder as it was. Once they are in place, images an earlier report of the same
layer left for units it no longer holds are removed.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from urllib.parse import quote

import numpy as np

from jaxvis.analysis import metrics as M
from jaxvis.analysis import readout as R
from jaxvis.analysis.gratings import Battery
from jaxvis.analysis.summary import (activation_fractions, analysis_config, definitions,
                                     layer_meta, layer_order, layer_profile, layer_scalars,
                                     layer_values, model_name, quartiles)
from jaxvis.errors import JaxvisError
from jaxvis.io.html import SORT_JS, esc, fmt, html_page, write_files
from jaxvis.io.render import heat, png_tile, to_display
from jaxvis.io.results import METRICS, file_stems, json_attr, open_results, unknown_layer
from jaxvis.io.svg import BLUE, svg_curve, svg_histogram, svg_lines, svg_scatter

NEEDED = ("unit", "images", "activations", "max_image", "max_activation")
THUMB = 40          # table thumbnails: about this many px (small canvases enlarged, big ones shrunk)
DETAIL = 96         # detail images
BLOCK = 64          # units read from the file at a time
_IMAGE_NAME = re.compile(r"u\d+_[a-z0-9_]+\.png")  # the names _layer_files gives images

class _Images:
    """The image files of one page: each ``img`` call encodes a PNG, queues it for writing and
    returns its ``<img>`` tag (relative link, lazy, with its size)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.files: list[tuple[Path, bytes]] = []

    def img(self, pixels: np.ndarray, target: int, name: str, alt: str, title: str = "") -> str:
        data, width, height = png_tile(pixels, target)
        self.files.append((self.folder / name, data))
        href = f"{quote(self.folder.name)}/{quote(name)}"
        tip = f' title="{esc(title)}"' if title else ""
        return (f'<img src="{href}" width="{width}" height="{height}" loading="lazy" '
                f'decoding="async" alt="{esc(alt)}"{tip}>')

    def take(self) -> list[tuple[Path, bytes]]:
        files, self.files = self.files, []
        return files


def _read_rows(dataset, start, stop):
    return None if dataset is None else np.asarray(dataset[start:stop])


def _diversity(scalars: dict) -> tuple[np.ndarray | None, str]:
    for space in ("feature", "pixel"):
        if f"{space}_min" in scalars:
            ref = scalars.get(f"reference_{space}_min")
            if ref is not None and np.isfinite(ref).any() and np.nanmedian(ref) > 0:
                # one natural scale for the layer: a unit's own reference set can be ~0 in a
                # sparse feature space (all patches silent there), which would blow its ratio up
                return (scalars[f"{space}_min"] / np.nanmedian(ref),
                        f"{space}_min / layer median of reference_{space}_min (natural patches)")
            return scalars[f"{space}_min"], f"{space}_min (no natural reference in the file)"
    return None, ""


# the profile's histograms: (field of readout.MEDIANS, title, x label, threshold marking a class)
PROFILE_PLOTS = (("f1_f0", "F1/F0 (gratings)", "F1/F0 of the phase response at the preferred grating",
                  "f1_f0"),
                 ("grating_phase_min_max", "grating phase min/max", "min / max over phase", None),
                 ("rotation_min_max", "rotation min/max (own maximum)", "min / max over the phase rotation",
                  None),
                 ("diversity_vs_linear", "diversity at the floor vs linear",
                  "floor_pixel_min / the linear cap bound", "beyond_linear"),
                 ("diversity", "diversity at the floor vs natural",
                  "floor_pixel_min / natural patches' (reference_pixel_min)", None),
                 ("phase_spread", "phase spread of the floor set", "degrees of the best image's phase "
                  "circle the set covers (300: six phases equally spaced)", None),
                 ("shift_index", "shift-invariance index", "mean response over shifts / maximum",
                  "shift_invariant"))
AXIS_SOURCES = {"phase": "grating battery", "diversity": "activation-floor set", "shift": "shift test"}


def _profile_section(profile: R.Profile, measures: dict, analysed: bool, path: Path) -> list[str]:
    """The layer's read-out (:mod:`jaxvis.analysis.readout`): classes per axis, medians,
    distributions with the thresholds marked."""
    at = f"alpha = {profile.alpha:g}" if profile.alpha is not None else f"alpha = {R.PROFILE_ALPHA:g}"
    out = ['<section id="profile"><h2>Profile</h2>',
           '<p class="note">The read-out: each unit\'s class on three axes, from its measures, with '
           "the thresholds of <code>jaxvis.analysis.readout.THRESHOLDS</code> (docs/invariance.md); "
           "a unit whose measures are missing has no class there (unknown).</p>",
           '<table class="summary" id="profile-classes"><thead><tr><th class="l">axis</th>'
           '<th class="l">from</th><th class="l">classes: share of the units (count)</th></tr></thead><tbody>']
    for axis, names in R.AXES.items():
        label = f"{axis} at {at}" if axis == "diversity" else axis
        shares = profile.fractions[axis]
        cells = " &middot; ".join(
            f"<b>{fmt(100 * shares[n])}%</b> {esc(n)} ({round(shares[n] * profile.units)})"
            for n in (*names[::-1], R.UNKNOWN) if n != R.UNKNOWN or shares[n] > 0)
        out.append(f'<tr><td class="l">{esc(label)}</td><td class="l">{AXIS_SOURCES[axis]}</td>'
                   f'<td class="l">{cells}</td></tr>')
    out.append("</tbody></table>")
    out.append('<table class="summary" id="profile-medians"><thead><tr><th class="l">measure</th>'
               '<th>median</th><th>n</th></tr></thead><tbody>')
    for field, _, what in R.MEDIANS:
        what = what.replace("at alpha", f"at {at}")
        out.append(f'<tr><td class="l">{esc(what)}</td><td>{fmt(profile.medians[field])}</td>'
                   f"<td>{profile.counts[field]}</td></tr>")
    out.append("</tbody></table>")
    plots = []
    for field, title, xlabel, cut in PROFILE_PLOTS:
        v = measures.get(field)
        if v is None or not np.isfinite(v).any():
            continue
        marks = [(R.threshold(cut), f"{R.THRESHOLDS[cut].name} {R.threshold(cut):g}")] if cut else []
        per_floor = M.REGISTRY[dict((f, m) for f, m, _ in R.MEDIANS)[field]].per_floor
        plots.append(svg_histogram([("units", v, BLUE)], f"{title} ({at})" if per_floor
                                   else title, xlabel, marks=marks, width=340, height=220))
    if plots:
        out.append('<div class="plots">' + "".join(plots) + "</div>")
    if not any(profile.known(axis) for axis in R.AXES):
        out.append('<p class="note">No unit has a class: the read-out needs the grating battery, the '
                   "natural references of floor sets or the shift test"
                   + (f" (<code>jaxvis analyze {esc(path.name)}</code>)" if not analysed else "")
                   + ".</p>")
    out.append("</section>")
    return out


def _tuning_axes(group, canvas) -> dict[str, np.ndarray]:
    """The grating battery's axes for this layer (orientations and phases in degrees, periods in
    px), from the analysis settings; empty where they are not recorded."""
    settings = (analysis_config(group) or {}).get("gratings")
    if not isinstance(settings, dict) or not isinstance(canvas, int):
        return {}
    try:
        battery = Battery(**{**settings, "colours": tuple(settings.get("colours", ()))})
    except (TypeError, JaxvisError):
        return {}
    axes = battery.axes(canvas)
    return {"orientation": np.degrees(axes["orientations"]), "period": axes["periods"],
            "phase": np.degrees(axes["phases"])}


# the tuning curves of the unit details: (metric, axis of _tuning_axes, title, x label, log x)
CURVES = (("grating_orientation_curve", "orientation", "orientation", "degrees", False),
          ("grating_period_curve", "period", "period", "px", True),
          ("grating_phase_curve", "phase", "phase", "degrees (preferred grating)", False))


def _curves(tuning: dict, rows) -> list[str]:
    """One unit's tuning curves as SVG (``rows``: its curve per :data:`CURVES` entry, or None)."""
    out = []
    for (metric, axis, title, xlabel, log_x), y in zip(CURVES, rows):
        if y is None:
            continue
        x = tuning.get(axis)
        if x is None or len(x) != len(y):
            x, xlabel, log_x = np.arange(len(y)), "index", False
        out.append(svg_curve(x, y, title, xlabel, log_x=log_x))
    return out


def _layer_files(path: Path, layer: str, stem: str, group, meta: dict, config: dict, out_dir: Path,
                 index_name: str):
    """The image files of a layer page as they are made, (path, bytes) per image, then the page
    (path, html), named after ``stem``. Units are read ``BLOCK`` at a time, so memory stays bounded."""
    scalars, sources = layer_scalars(group)
    described = definitions(group)
    metrics = group[METRICS] if METRICS in group else None
    units = np.asarray(group["unit"][()])
    count = len(units)
    images_shape = group["images"].shape
    n_images, height, width = images_shape[1], images_shape[2], images_shape[3]
    max_activation = np.asarray(group["max_activation"][()], np.float64)
    fractions = activation_fractions(group)
    columns = [("max_activation", max_activation)]
    if "steps" in group and group["steps"].shape == (count,):
        columns.append(("steps", np.asarray(group["steps"][()], np.float64)))
    columns += list(scalars.items())
    files = _Images(out_dir / f"{stem}_files")

    def optional(name, shape_tail):
        if metrics is None or name not in metrics:
            return None
        d = metrics[name]
        return d if d.shape[0] == count and d.shape[1:len(shape_tail) + 1] == shape_tail else None

    texture = optional("shift_texture", ())
    responses = optional("shift_responses", ())
    variance = optional("variance_map", ())
    patches = optional("natural_top_patches", ())
    patch_acts = optional("natural_top_activations", ())
    over_p99 = optional("diverse_over_p99", (n_images,))
    curves = [optional(metric, ()) for metric, *_ in CURVES]
    curves = [d if d is not None and d.ndim == 2 else None for d in curves]
    tuning = _tuning_axes(group, meta.get("canvas"))
    values, floors = layer_values(group)
    measures = values  # (the units table's loop below rebinds `values`)
    profile = layer_profile(layer, group)
    classes = R.classify(values, floors)
    class_columns = {name: axis for axis, name in R.CLASS_METRICS.items()}
    floor_at = R.floor_index(floors, R.PROFILE_ALPHA) if floors is not None else None
    starts = (config.get("floor_starts") or []) if isinstance(config, dict) else []

    title = f"{layer}: diverse feature visualisations"
    out = [f'<p><a href="{esc(index_name)}">&larr; all layers</a></p>',
           f"<h1>{esc(title)}</h1>",
           f'<p class="kv">{esc(path.name)} &middot; {esc(model_name(config))} &middot; {count} '
           f"units &middot; N = {n_images} diverse images &middot; canvas {height}&times;{width} px"
           + "".join(f" &middot; {k} {esc(meta[k])}" for k in ("rf", "jump", "feature_layer")
                     if meta.get(k) is not None) + "</p>"]
    if metrics is None:
        out.append('<p class="note">No <code>metrics</code> group in this file: run '
                   f"<code>jaxvis analyze {esc(path.name)}</code> for the shift test, natural "
                   "references and more. Shown: what the sweep itself gives.</p>")

    out += _profile_section(profile, R.profile_measures(values, floors), metrics is not None, path)

    # summary
    out.append("<h2>Summary</h2>")
    out.append('<table class="summary"><thead><tr><th class="l">metric</th><th>n</th>'
               '<th>q1</th><th>median</th><th>q3</th><th class="l">definition</th></tr></thead>'
               "<tbody>")
    for name, values in columns:
        if name in class_columns:  # shares in the profile, not quartiles of codes
            continue
        n, q1, med, q3 = quartiles(values)
        src = " (from the sweep)" if sources.get(name) == "sweep" else ""
        out.append(f'<tr><td class="l">{esc(name)}</td><td>{n}</td><td>{fmt(q1)}</td>'
                   f"<td>{fmt(med)}</td><td>{fmt(q3)}</td>"
                   f'<td class="l">{esc(described.get(name, ""))}{src}</td></tr>')
    out.append("</tbody></table>")
    plots = []  # the shift index's histogram is in the profile
    fraction = scalars.get("fraction_median")
    diversity, div_label = _diversity(scalars)
    if fraction is not None and diversity is not None:
        plots.append(svg_scatter(fraction, diversity, "activation vs diversity",
                                 "median activation fraction", div_label,
                                 labels=[f"unit {u}" for u in units],
                                 links=[f"#unit-{int(u)}" for u in units]))
    if "participation_ratio" in scalars and np.isfinite(scalars["participation_ratio"]).any():
        plots.append(svg_histogram([("units", scalars["participation_ratio"], BLUE)],
                                   "participation ratio", "effective dimensionality (1..N)"))
    if plots:
        out.append('<div class="plots">' + "".join(plots) + "</div>")

    # the unit table
    out.append(f"<h2>Units</h2><p class=\"note\">Click a column header to sort (again to reverse; "
               f"missing values last). Click a unit for its details. Images: the single-image "
               f"maximum, then the {n_images} diverse images, one contrast mapping per row.</p>")
    heads = ['<th class="sortable" data-key="unit" title="unit (channel)">unit</th>',
             '<th class="l">maximum</th>', '<th class="l">diverse images</th>']
    heads += [f'<th class="sortable" data-key="{esc(name)}" '
              f'title="{esc(described.get(name, name))}">{esc(name)}</th>'
              for name, _ in columns]
    table = [f'<table class="units" id="units"><thead><tr>{"".join(heads)}</tr></thead><tbody>']
    details = []
    for start in range(0, count, BLOCK):
        stop = min(count, start + BLOCK)
        images = np.asarray(group["images"][start:stop])
        maxima = np.asarray(group["max_image"][start:stop])
        extra = [_read_rows(d, start, stop) for d in (texture, responses, variance, patches,
                                                      patch_acts, over_p99)]
        curve_rows = [_read_rows(d, start, stop) for d in curves]
        floor_rows = _floor_rows(group, floor_at, start, stop)
        for k in range(stop - start):
            i = start + k
            u = int(units[i])
            shown = to_display(np.concatenate([maxima[k][None], images[k]]))
            frac = fractions[i] if fractions is not None else np.full(n_images, np.nan)
            cells = [f'<td data-v="{u}"><a href="#unit-{u}">{u}</a></td>',
                     '<td class="imgs">' + files.img(shown[0], THUMB, f"u{u}_max.png",
                                                     f"unit {u} maximum") + "</td>",
                     '<td class="imgs">' + "".join(
                         files.img(shown[j + 1], THUMB, f"u{u}_{j}.png", f"unit {u} image {j}",
                                   fmt(frac[j])) for j in range(n_images)) + "</td>"]
            for name, values in columns:
                v = float(values[i])
                text = R.labels(class_columns[name], [v])[0] if name in class_columns else fmt(v)
                cells.append(f'<td data-v="{v!r}">{esc(text)}</td>' if math.isfinite(v)
                             else '<td data-v="NaN">–</td>')
            table.append(f'<tr id="row-{u}">{"".join(cells)}</tr>')
            readout = " &middot; ".join(
                f"{esc(axis)}{' at ' + fmt(profile.alpha) if axis == 'diversity' and profile.alpha else ''}: "
                f"<b>{esc(R.labels(axis, [codes[i]])[0])}</b>" for axis, codes in classes.items()
            ) if any(profile.known(axis) for axis in R.AXES) else ""
            tuning_plots = _curves(tuning, [None if c is None else c[k] for c in curve_rows])
            details.append(_detail(files, u, shown, max_activation[i], frac,
                                   [c for c in columns if c[0] not in class_columns], i,
                                   *[None if e is None else e[k] for e in extra],
                                   readout=readout, curves=tuning_plots,
                                   floor=_floor_block(files, u, floor_rows, k, floors[floor_at], floor_at,
                                                      max_activation[i], measures, i, starts) if floor_rows else ""))
        yield from files.take()  # this block's images go to disk before the next is read
    table.append("</tbody></table>")
    out += table
    out.append("<h2>Unit details</h2>")
    out += details
    yield (out_dir / f"{stem}.html",
           html_page(f"{layer} - jaxvis report", "\n".join(out), script=SORT_JS))


def _figure(img: str, caption: str) -> str:
    return f"<figure>{img}<figcaption>{caption}</figcaption></figure>"


def _detail(files: _Images, u, shown, max_act, fractions, columns, i, texture, responses,
            variance, patches, patch_acts, over_p99, *, readout: str = "", curves=(), floor: str = "") -> str:
    parts = [f'<section class="unit-detail" id="unit-{u}"><h3>unit {u} '
             f'<a href="#row-{u}" class="note">(back to the table)</a></h3>',
             f'<p class="readout">read-out: {readout}</p>' if readout else "",
             '<p class="kv">' + " &middot; ".join(f"{esc(name)} {fmt(values[i])}"
                                                  for name, values in columns) + "</p>"]
    tiles = [_figure(files.img(shown[0], DETAIL, f"u{u}_max_detail.png", f"unit {u} maximum"),
                     f"maximum<br>{fmt(max_act)}")]
    for j in range(shown.shape[0] - 1):
        caption = f"image {j}<br>{fmt(fractions[j])} &times; max"
        if over_p99 is not None:
            caption += f"<br>{fmt(over_p99[j])} &times; p99"
        tiles.append(_figure(files.img(shown[j + 1], DETAIL, f"u{u}_{j}_detail.png",
                                       f"unit {u} diverse {j}"), caption))
    # the tuning curves beside the images
    parts.append('<div class="tiles">' + "".join(tiles) + "".join(
        f'<div class="curve">{c}</div>' for c in curves) + "</div>")
    parts.append(floor)
    extra = []
    if texture is not None:
        extra.append(_figure(files.img(to_display(texture), DETAIL * 2, f"u{u}_texture.png",
                                       f"unit {u} shift texture"), "shift texture"))
    if responses is not None:
        rgb, lo, hi = heat(responses)
        extra.append(_figure(files.img(rgb, DETAIL * 2, f"u{u}_shifts.png",
                                       f"unit {u} shift responses"),
                             f"response at every shift<br>{fmt(lo)} .. {fmt(hi)}"
                             + (f" ({fmt(lo / max_act)} .. {fmt(hi / max_act)} &times; max)"
                                if max_act > 0 else "")))
    if variance is not None:
        variance = np.asarray(variance, np.float64)
        rgb, lo, hi = heat(variance.mean(-1) if variance.ndim == 3 else variance)
        extra.append(_figure(files.img(rgb, DETAIL, f"u{u}_variance.png",
                                       f"unit {u} variance map"),
                             f"variance across the set<br>{fmt(lo)} .. {fmt(hi)}"))
    if extra:
        parts.append('<div class="tiles">' + "".join(extra) + "</div>")
    if patches is not None and len(patches):
        patch_view = to_display(patches)
        tiles = []
        for k in range(len(patches)):
            caption = f"natural #{k + 1}"
            if patch_acts is not None:
                caption += f"<br>{fmt(patch_acts[k])}" + (f" ({fmt(patch_acts[k] / max_act)} "
                                                            "&times; max)" if max_act > 0 else "")
            tiles.append(_figure(files.img(patch_view[k], DETAIL, f"u{u}_natural{k}.png",
                                           f"unit {u} natural patch {k}"), caption))
        parts.append("<div><b>top natural patches</b></div>"
                     '<div class="tiles">' + "".join(tiles) + "</div>")
    parts.append("</section>")
    return "\n".join(parts)


FLOOR_KEYS = ("floor_images", "floor_activations", "floor_start_pixel_min", "floor_start_feasible")


def _floor_rows(group, at: int | None, start: int, stop: int) -> dict | None:
    """Rows ``start:stop`` of the floor set at floor index ``at`` (None: no floor set there)."""
    if at is None or "floor_images" not in group:
        return None
    return {k: np.asarray(group[k][start:stop, at]) for k in FLOOR_KEYS if k in group}


def _floor_block(files: _Images, u, rows: dict, k: int, alpha: float, at: int, max_act: float, values: dict,
                 i: int, starts) -> str:
    """The unit's floor set at ``alpha`` (floor index ``at``): its images with their activation
    fractions, its closest pair, phase spread and starts' agreement (the layer's per-floor
    ``values``, unit ``i``), and the certificate (each start's min pixel distance, whether it kept
    its floor)."""
    images = rows["floor_images"][k]
    shown = to_display(images)
    acts = rows["floor_activations"][k]
    tiles = [_figure(files.img(shown[j], DETAIL, f"u{u}_floor{j}_detail.png", f"unit {u} floor set {j}"),
                     f"floor image {j}<br>{fmt(acts[j] / max_act) if max_act > 0 else '–'} &times; max")
             for j in range(len(images))]
    facts = []
    for name, label, unit in (("floor_pixel_min", "closest pair", " grey levels RMS"),
                              ("floor_phase_spread", "phase spread", "&deg;"),
                              ("floor_agreement", "starts' agreement", "")):
        v = values.get(name)
        if v is not None and np.ndim(v) == 2:
            facts.append(f"{label} {fmt(float(v[i, at]))}{unit}")
    if "floor_start_pixel_min" in rows:
        names = list(starts) or [f"start {s}" for s in range(rows["floor_start_pixel_min"].shape[-1])]
        kept = rows.get("floor_start_feasible")
        facts.append("starts: " + ", ".join(
            f"{esc(str(n))} {fmt(float(v))}" + ("" if kept is None or kept[k][s] else " (below its floor)")
            for s, (n, v) in enumerate(zip(names, rows["floor_start_pixel_min"][k]))))
    return (f'<div><b>floor set at {fmt(alpha)}</b> (the most different {len(images)} images that all keep '
            f"{fmt(alpha)} &times; the maximum; docs/floor.md): " + " &middot; ".join(facts) + "</div>"
            '<div class="tiles floor">' + "".join(tiles) + "</div>")


def _index_page(path: Path, config: dict, rows: list[dict]) -> str:
    trend = [("fraction_median", "median activation fraction"),
             ("shift_index", "median shift-invariance index"),
             ("participation_ratio", "median participation ratio"),
             ("feature_min", "median feature_min"), ("pixel_min", "median pixel_min")]
    out = [f"<h1>jaxvis report: {esc(path.name)}</h1>",
           f'<p class="kv">{esc(model_name(config))} &middot; {len(rows)} layers (in '
           "catalogue order)</p>"]
    columns = R.profile_columns(R.PROFILE_ALPHA)
    out += ['<h2>Profile across layers</h2><p class="note">The read-out per layer (shares of all '
            "units; &ndash;: no unit has a class on that axis), thresholds in "
            "<code>jaxvis.analysis.readout.THRESHOLDS</code>.</p>",
            '<table class="summary" id="profiles"><thead><tr><th class="l">layer</th>'
            + "".join(f"<th>{esc(head)}</th>" for head, _ in columns) + "</tr></thead><tbody>"]
    for row in rows:
        out.append(f'<tr><td class="l"><a href="{esc(row["href"])}">{esc(row["layer"])}</a></td>'
                   + "".join(f"<td>{esc(cell(row['profile']))}</td>" for _, cell in columns) + "</tr>")
    out += ["</tbody></table>", "<h2>Layers</h2>",
            '<table class="summary"><thead><tr><th class="l">layer</th><th>units</th><th>rf</th>'
            "<th>canvas</th>" + "".join(f"<th>{esc(label)}</th>" for _, label in trend)
            + '<th class="l">metrics</th></tr></thead><tbody>']
    for row in rows:
        out.append(f'<tr><td class="l"><a href="{esc(row["href"])}">{esc(row["layer"])}</a></td>'
                   f'<td>{row["units"]}</td><td>{esc(fmt(row["rf"]))}</td>'
                   f'<td>{esc(fmt(row["canvas"]))}</td>'
                   + "".join(f"<td>{fmt(row['medians'].get(key, math.nan))}</td>"
                             for key, _ in trend)
                   + f'<td class="l">{"analysed" if row["analysed"] else "sweep only"}</td></tr>')
    out.append("</tbody></table>")
    names = [row["layer"] for row in rows]
    plots = []
    for key, label in trend:
        values = [row["medians"].get(key, math.nan) for row in rows]
        if np.isfinite(values).any():
            plots.append(svg_lines(names, [(label, values, BLUE)], label, key))
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
            missing = [k for k in NEEDED if k not in group]
            if missing:
                raise JaxvisError(f"layer {name} of {results_path} has no {', '.join(missing)}; "
                                  f"a report needs {', '.join(NEEDED)}")
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
                yield from _layer_files(shown, name, stems[name], group, meta, config, out_dir,
                                        index.name)
                scalars, _ = layer_scalars(group)
                rows.append({"layer": name, "href": f"{stems[name]}.html",
                             "units": len(group["unit"]), "rf": meta.get("rf"),
                             "canvas": meta.get("canvas"), "analysed": METRICS in group,
                             "medians": {k: quartiles(v)[2] for k, v in scalars.items()},
                             "profile": layer_profile(name, group)})
            yield index, _index_page(shown, config, rows)

        written = write_files(files())
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
            if path not in written and _IMAGE_NAME.fullmatch(path.name):
                path.unlink(missing_ok=True)
