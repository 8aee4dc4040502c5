"""One layer's page of the HTML report (:mod:`jaxvis.report.pages` writes the report).

The page, top-down:

- the layer's read-out profile (:mod:`jaxvis.analysis.readout`): per axis (phase, diversity at
  alpha = 0.9, shift) each class's units, share and Wilson 95% interval, the class linked to its
  gallery row; the medians of the measures with their quartiles and their histograms (ranges set by
  quantiles, far outliers counted at the edge), the thresholds marked;
- "units by class": per class of every axis its clearest units (farthest from the threshold: the
  most diverse first among "diverse", the least among "tight"), each its best image and its floor
  set at 0.9 (else its diverse set), linked to its details;
- a summary: every scalar measure over units (quartiles) in plain words with its definition and
  metric name, and a scatter of the median activation fraction against diversity;
- the unit table: per unit its best image, diverse (lambda) set and floor set at 0.9, its classes
  by name (sorted by their codes), the floor set's measures and every scalar metric (a few columns
  until "all columns" is clicked; the metric and its definition on hover); it scrolls sideways
  inside the page with the unit column fixed; clicking a header sorts the rows (again: the other
  direction; NaN always last);
- per unit a detail section ``#unit-<n>``: its classes with the measure each is read from; a
  table of its sets (best image, diverse set, the floor set at each floor) with each image's
  activation / the best image's, each set's closest pair, that over a linear unit's, phase spread,
  starts' agreement (each start's diversity on hover) and class; its orientation, period and phase
  tuning curves (inline SVG, the grating battery's axes from the analysis settings); the shift
  texture and response map and the variance map with colour bars; the top natural patches; every
  measure (folded). Ratios above 1 link to why they occur (:data:`ABOVE_MAX`).
"""


from __future__ import annotations

import math
import re
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

import numpy as np

from jaxvis.analysis import metrics as metric_table
from jaxvis.analysis import readout as rules
from jaxvis.analysis.gratings import Battery
from jaxvis.report.summary import (activation_fractions, definitions, label, layer_profile, layer_scalars,
                                   layer_values, model_name, percent, quartiles, share_interval)
from jaxvis.errors import JaxvisError
from jaxvis.report.html import SORT_JS, esc, fmt, html_page
from jaxvis.report.render import heat, png_tile, stored_floors, to_display
from jaxvis.store.results import METRICS, analysis_config
from jaxvis.report.svg import BLUE, svg_colourbar, svg_curve, svg_histogram, svg_scatter

THUMB = 40          # table thumbnails: about this many px (small canvases enlarged, big ones shrunk)
DETAIL = 96         # detail images
BLOCK = 64          # units read from the file at a time
IMAGE_NAME = re.compile(r"u\d+_[a-z0-9_]+\.png")  # the names layer_files gives images


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


def _diversity(scalars: dict) -> tuple[np.ndarray | None, str, str]:
    """The diversity of each unit's diverse set on one scale for the layer: (values, axis label,
    what it is)."""
    for space in ("feature", "pixel"):
        if f"{space}_min" in scalars:
            ref = scalars.get(f"reference_{space}_min")
            if ref is not None and np.isfinite(ref).any() and np.nanmedian(ref) > 0:
                # one natural scale for the layer: a unit's own reference set can be ~0 in a
                # sparse feature space (all patches silent there), which would blow its ratio up
                return (scalars[f"{space}_min"] / np.nanmedian(ref), "closest pair / natural patches'",
                        f"{space}_min / the layer's median reference_{space}_min (natural patches)")
            return scalars[f"{space}_min"], f"closest pair ({space}s)", f"{space}_min"
    return None, "", ""


# the profile's histograms: (field of readout.MEDIANS, title, x label, threshold marking a class)
PROFILE_PLOTS = (("f1_f0", "phase modulation (gratings)", "F1/F0 at the preferred grating", "f1_f0"),
                 ("grating_phase_min_max", "grating: weakest / strongest phase", "min / max over phase", None),
                 ("rotation_min_max", "best image rotated in phase", "min / max over the rotation", None),
                 ("diversity_vs_linear", "floor set vs a linear unit", "closest pair / a linear unit's",
                  "beyond_linear"),
                 ("diversity", "floor set vs natural patches", "closest pair / natural patches'", None),
                 ("phase_spread", "phase spread of the floor set", "degrees of the phase circle covered", None),
                 ("shift_index", "shift invariance", "mean response over shifts / best image's", "shift_invariant"))
AXIS_SOURCES = {"phase": "grating battery", "diversity": "activation-floor set", "shift": "shift test"}
# per axis: the profile measure (a field of readout.MEDIANS) shown with a unit's class and the
# threshold row it is read against; a class's gallery shows its clearest units first (farthest
# from the threshold), so "diverse" starts with the most diverse units and "tight" with the least
AXIS_MEASURES = {"phase": ("f1_f0", "f1_f0"), "diversity": ("diversity_vs_linear", "beyond_linear"),
                 "shift": ("shift_index", "shift_invariant")}
GALLERY = 4  # example units per class in the gallery
# the unit table's columns shown before "all columns" is clicked (the class columns are always shown)
MAIN_COLUMNS = ("max_activation", "fraction_median", "participation_ratio", "floor_pixel_vs_linear",
                "floor_pixel_vs_natural", "floor_phase_spread", "floor_agreement", "grating_f1_f0",
                "shift_index")
# above the maximum: why ratios to the best image's activation can exceed 1 (linked where shown)
ABOVE_MAX = ("Ratios to the best image's activation (&times; best) can exceed 1 without error: the best image "
             "is the best of a few optimiser runs within the sweep's contrast budget, not a proven maximum; "
             "natural patches are crops of photographs at their own contrast, not held to that budget; the "
             "shift test holds its crops to the budget on average (one scale for all), so a single crop can "
             "have more contrast than the best image; and a diverse image can beat the best run "
             "(<code>max_raised</code>).")


def axis_label(axis: str, alpha: float | None) -> str:
    return f"{axis} at {fmt(alpha)}" if axis == "diversity" and alpha is not None else axis


def gallery_id(axis: str, name: str) -> str:
    return "class-" + re.sub(r"[^a-z0-9]+", "-", f"{axis}-{name}".lower())


def _measure_text(axis: str, measures: dict, i: int) -> str:
    field, _ = AXIS_MEASURES.get(axis, (None, None))
    v = measures.get(field)
    if v is None or not np.isfinite(v[i]):
        return ""
    metric = dict((f, m) for f, m, _ in rules.MEDIANS)[field]
    return f"{label(metric)} {fmt(v[i])}"


def _profile_section(profile: rules.Profile, measures: dict, classes: dict, analysed: bool, path: Path) -> list[str]:
    """The layer's read-out (:mod:`jaxvis.analysis.readout`): per axis the share of units in each
    class with its 95% interval (linked to the class's gallery row), the medians of the measures
    with their quartiles, their distributions with the thresholds marked."""
    at = fmt(profile.alpha if profile.alpha is not None else rules.PROFILE_ALPHA)
    out = ['<section id="profile"><h2>Profile</h2>',
           '<p class="note">Each unit gets a class on three axes from its measures and the thresholds of '
           "<code>jaxvis.analysis.readout.THRESHOLDS</code> (docs/invariance.md); a unit whose measures "
           "are missing has no class there (unknown). The interval is Wilson's 95% interval of the share. "
           "Click a class for its units.</p>",
           '<table class="summary" id="profile-classes"><thead><tr><th class="l">axis</th>'
           '<th class="l">measured by</th><th class="l">class</th><th>units</th><th>share</th>'
           '<th>95% interval</th></tr></thead><tbody>']
    for axis, names in rules.AXES.items():
        # an axis no unit has a class on is one row: its class names would all say 0%
        shown = [n for n in (*names[::-1], rules.UNKNOWN) if n != rules.UNKNOWN or profile.fractions[axis][n] > 0] \
            if profile.known(axis) else [rules.UNKNOWN]
        for k, name in enumerate(shown):
            count = round(profile.fractions[axis][name] * profile.units)
            lo, hi = share_interval(count, profile.units)
            linked = (f'<a href="#{gallery_id(axis, name)}">{esc(name)}</a>'
                      if count and name != rules.UNKNOWN and profile.known(axis) else esc(name))
            head = (f'<td class="l" rowspan="{len(shown)}"><b>{esc(axis_label(axis, profile.alpha))}</b></td>'
                    f'<td class="l" rowspan="{len(shown)}">{AXIS_SOURCES.get(axis, "")}</td>') if k == 0 else ""
            out.append(f'<tr>{head}<td class="l">{linked}</td><td>{count}</td>'
                       f"<td><b>{percent(profile.fractions[axis][name])}</b></td>"
                       f"<td>{percent(lo)} &ndash; {percent(hi)}</td></tr>")
    out.append("</tbody></table>")
    out.append('<table class="summary" id="profile-medians"><thead><tr><th class="l">measure</th>'
               '<th>median</th><th>quartiles</th><th>units</th></tr></thead><tbody>')
    for field, metric, what in rules.MEDIANS:
        n, q1, med, q3 = quartiles(measures.get(field))
        per_floor = metric_table.REGISTRY[metric].per_floor if metric in metric_table.REGISTRY else False
        out.append(f'<tr><td class="l" title="{esc(metric)}: {esc(what)}">{esc(label(metric))}'
                   + (f" (floor set at {at})" if per_floor else "")
                   + f"</td><td>{fmt(med)}</td><td>{fmt(q1)} &ndash; {fmt(q3)}</td><td>{n}</td></tr>")
    out.append("</tbody></table>")
    plots = []
    for field, title, xlabel, cut in PROFILE_PLOTS:
        v = measures.get(field)
        if v is None or not np.isfinite(v).any():
            continue
        marks = [(rules.threshold(cut), f"{rules.THRESHOLDS[cut].name} {rules.threshold(cut):g}")] if cut else []
        per_floor = metric_table.REGISTRY[dict((f, m) for f, m, _ in rules.MEDIANS)[field]].per_floor
        plots.append(svg_histogram([("units", v, BLUE)], f"{title} (at {at})" if per_floor
                                   else title, xlabel, marks=marks, width=340, height=220))
    if plots:
        out.append('<div class="plots">' + "".join(plots) + "</div>")
    if not any(profile.known(axis) for axis in rules.AXES):
        out.append('<p class="note">No unit has a class: the read-out needs the grating battery, the '
                   "natural references of floor sets or the shift test"
                   + (f" (<code>jaxvis analyze {esc(path.name)}</code>)" if not analysed else "")
                   + ".</p>")
    out.append("</section>")
    return out


def _gallery_picks(profile: rules.Profile, classes: dict, measures: dict) -> list[tuple[str, str, np.ndarray, int]]:
    """The gallery's rows: (axis, class, indices of its first :data:`GALLERY` units, clearest first,
    how many units it has), for every class of every axis that has units."""
    rows = []
    for axis, names in rules.AXES.items():
        if not profile.known(axis):
            continue
        field, cut = AXIS_MEASURES.get(axis, (None, None))
        v = measures.get(field)
        for code, name in reversed(list(enumerate(names))):
            members = np.flatnonzero(classes[axis] == code)
            if not members.size:
                continue
            if v is not None:
                distance = np.abs(v[members] - rules.threshold(cut))
                members = members[np.argsort(np.where(np.isfinite(distance), -distance, np.inf), kind="stable")]
            rows.append((axis, name, members[:GALLERY], len(np.flatnonzero(classes[axis] == code))))
    return rows


def _gallery(rows, cards: dict, units, profile: rules.Profile, measures: dict, sets: str) -> list[str]:
    """The "units by class" section: per class its example units, each its best image and
    ``sets`` (thumbnails in ``cards`` by unit index), linked to its details."""
    if not rows:
        return []
    out = ['<section id="gallery"><h2>Units by class</h2>',
           f'<p class="note">Examples of each class: the best image, then {esc(sets)} (one contrast '
           "mapping per unit: what varies is what the unit ignores). The clearest units come first "
           "(farthest from the class threshold). Click a unit for its details.</p>"]
    for axis, name, picks, count in rows:
        share = percent(profile.fractions[axis][name])
        out.append(f'<div class="gallery-row" id="{gallery_id(axis, name)}"><h3>{esc(axis_label(axis, profile.alpha))}: '
                   f"{esc(name)} <span class=\"note\">{share} ({count} unit{'s' if count != 1 else ''}"
                   + (f", first {len(picks)} shown" if count > len(picks) else "") + ")</span></h3><div class=\"cards\">")
        for i in picks:
            u = int(units[i])
            measure = _measure_text(axis, measures, i)
            out.append(f'<a class="card" href="#unit-{u}">{cards[i]}<span>unit {u}'
                       + (f" &middot; {esc(measure)}" if measure else "") + "</span></a>")
        out.append("</div></div>")
    out.append("</section>")
    return out


def _columns(scalars: dict, values: dict, floors: list, alpha_at, classes: dict, profile: rules.Profile,
             sweep: list, described: dict) -> list[tuple]:
    """The unit table's columns: (key, label, hover text, values [U], names [U] or None, main),
    the class columns first (their names shown, their codes sorted), then the sweep's, then the
    measures of the floor set at the profile's alpha, then every scalar metric."""
    out = []
    for axis in rules.AXES:
        if profile.known(axis):
            metric = rules.CLASS_METRICS[axis]
            out.append((metric, label(metric) + (f" at {fmt(profile.alpha)}" if axis == "diversity" else ""),
                        f"{metric}: the read-out's {axis} class", classes[axis],
                        rules.labels(axis, classes[axis]), True))
    def hover(name):
        return f"{name}: {described.get(name, '')}"

    out += [(name, label(name), hover(name), v, None, name in MAIN_COLUMNS) for name, v in sweep]
    if alpha_at is not None:
        alpha = fmt(floors[alpha_at])
        for name in metric_table.floor_names(values):
            v = values[name]
            if np.ndim(v) == 2 and v.shape[1] == len(floors):
                out.append((f"{name}@{alpha}", f"floor set at {alpha}: {label(name)}", hover(name), v[:, alpha_at],
                            None, name in MAIN_COLUMNS))
    class_metrics = set(rules.CLASS_METRICS.values())
    out += [(name, label(name), hover(name), v, None, name in MAIN_COLUMNS) for name, v in scalars.items()
            if name not in class_metrics]
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


class _LayerPage:
    """One layer page as it is made: what the page shows of every unit is read here once; the
    units' images are read ``BLOCK`` at a time (:meth:`files`), so memory stays bounded."""

    def __init__(self, layer: str, group, meta: dict, config: dict, files: _Images):
        self.layer, self.group, self.meta, self.config, self.files = layer, group, meta, config, files
        self.scalars, self.sources = layer_scalars(group)
        self.described = definitions(group)
        self.metrics = group[METRICS] if METRICS in group else None
        self.units = np.asarray(group["unit"][()])
        self.count = count = len(self.units)
        self.n_images, self.height, self.width = group["images"].shape[1:4]
        self.max_activation = np.asarray(group["max_activation"][()], np.float64)
        self.fractions = activation_fractions(group)
        sweep = [("max_activation", self.max_activation)]
        if "steps" in group and group["steps"].shape == (count,):
            sweep.append(("steps", np.asarray(group["steps"][()], np.float64)))
        self.maps = [self._optional(name) for name in ("shift_texture", "shift_responses", "variance_map",
                                                       "natural_top_patches", "natural_top_activations")]
        self.curves = [d if d is not None and d.ndim == 2 else None
                       for d in (self._optional(metric) for metric, *_ in CURVES)]
        self.tuning = _tuning_axes(group, meta.get("canvas"))
        self.values, floors = layer_values(group)
        self.profile = layer_profile(layer, group)
        self.classes = rules.classify(self.values, floors)
        self.measures = rules.profile_measures(self.values, floors)
        self.stored = stored = stored_floors(group, count)  # the floors whose sets the file holds
        self.alpha_at = rules.floor_index(stored, rules.PROFILE_ALPHA)
        self.floor_classes = [rules.labels("diversity", rules.classify(self.values, stored, alpha=a)["diversity"])
                              for a in stored]
        self.starts = [str(s) for s in (config.get("floor_starts") or [])] if isinstance(config, dict) else []
        # each start's diversity, what the starts' agreement compares (the certificate, docs/floor.md)
        self.start_distances = group["floor_start_diversity"] if stored and "floor_start_diversity" in group \
            and group["floor_start_diversity"].shape[:2] == (count, len(stored)) else None
        lam = (config.get("objective") or {}).get("lam") if isinstance(config, dict) else None
        self.lam_name = "diverse set (the paper's &lambda; objective" + (
            f", &lambda; = {fmt(lam)})" if lam is not None else ")")
        self.columns = _columns(self.scalars, self.values, stored, self.alpha_at, self.classes, self.profile,
                                sweep, self.described)
        self.picks = _gallery_picks(self.profile, self.classes, self.measures)
        self.alpha_text = fmt(stored[self.alpha_at]) if self.alpha_at is not None else None

    def _optional(self, name):
        if self.metrics is None or name not in self.metrics:
            return None
        d = self.metrics[name]
        return d if d.shape[0] == self.count else None

    def header(self, path: Path, index_name: str) -> list[str]:
        """Title, file facts, navigation, and the note on a file not analysed yet."""
        stored, meta = self.stored, self.meta
        out = [f'<p><a href="{esc(index_name)}">&larr; all layers</a></p>',
               f"<h1>{esc(self.layer)}: diverse feature visualisations</h1>",
               f'<p class="kv">{esc(path.name)} &middot; {esc(model_name(self.config))} &middot; '
               f'{plural(self.count, "unit")} &middot; N = {self.n_images} images per set'
               + (f" &middot; floor sets at {', '.join(fmt(a) for a in stored)}" if stored else "")
               + f" &middot; canvas {self.height}&times;{self.width} px"
               + "".join(f" &middot; {k} {esc(meta[k])}" for k in ("rf", "jump", "feature_layer")
                         if meta.get(k) is not None) + "</p>",
               '<p class="nav"><a href="#profile">profile</a> &middot; <a href="#gallery">units by class</a> '
               '&middot; <a href="#summary">summary</a> &middot; <a href="#units">units</a> &middot; '
               '<a href="#details">unit details</a></p>']
        if self.metrics is None:
            out.append('<p class="note">No <code>metrics</code> group in this file: run '
                       f"<code>jaxvis analyze {esc(path.name)}</code> for the shift test, natural "
                       "references and more. Shown: what the sweep itself gives.</p>")
        return out

    def summary(self) -> list[str]:
        """Every scalar measure's quartiles with its definition; the scatter and histogram."""
        out = ['<h2 id="summary">Summary</h2>',
               '<table class="summary"><thead><tr><th class="l">measure</th><th>units</th>'
               '<th>q1</th><th>median</th><th>q3</th><th class="l">definition (metric)</th></tr></thead>'
               "<tbody>"]
        for key, name, hover, v, names, _ in self.columns:
            if names is not None:  # shares in the profile, not quartiles of codes
                continue
            n, q1, med, q3 = quartiles(v)
            metric = key.split("@")[0]
            src = " (from the sweep)" if self.sources.get(key) == "sweep" else ""
            out.append(f'<tr><td class="l">{esc(name)}</td><td>{n}</td><td>{fmt(q1)}</td>'
                       f"<td>{fmt(med)}</td><td>{fmt(q3)}</td>"
                       f'<td class="l">{esc(self.described.get(metric, ""))}{src} (<code>{esc(key)}</code>)</td></tr>')
        out.append("</tbody></table>")
        plots = []  # the shift index's histogram is in the profile
        scalars, units = self.scalars, self.units
        fraction = scalars.get("fraction_median")
        diversity, div_label, div_what = _diversity(scalars)
        if fraction is not None and diversity is not None:
            plots.append("<figure>" + svg_scatter(fraction, diversity, "activation vs diversity (diverse set)",
                                                  "median image's activation / best", div_label,
                                                  labels=[f"unit {u}" for u in units],
                                                  links=[f"#unit-{int(u)}" for u in units])
                         + f'<figcaption class="note">y: {esc(div_what)}</figcaption></figure>')
        if "participation_ratio" in scalars and np.isfinite(scalars["participation_ratio"]).any():
            plots.append(svg_histogram([("units", scalars["participation_ratio"], BLUE)],
                                       "effective dimensions of the diverse set",
                                       f"participation ratio (1: all alike .. {self.n_images})"))
        if plots:
            out.append('<div class="plots">' + "".join(plots) + "</div>")
        return out

    def table_head(self) -> tuple[list[str], list[str]]:
        """The unit table's heading and note; the table's opening and header row."""
        alpha_text = self.alpha_text
        out = [f'<h2>Units</h2><p class="note">Click a column header to sort (again to reverse; '
               f"missing values last); hover over it for the metric and its definition. Click a unit "
               f"for its details. Images: the best image, then the {self.lam_name}"
               + (f", then the floor set at {alpha_text}" if alpha_text else "")
               + ", one contrast mapping per unit. "
               '<button type="button" id="all-columns" onclick="document.getElementById(\'units\').classList.toggle(\'all\')">'
               "show / hide all columns</button></p>"]
        heads = ['<th class="sortable" data-key="unit" title="unit (channel)">unit</th>',
                 '<th class="l">best image</th>', '<th class="l">diverse set (&lambda;)</th>']
        if alpha_text:
            heads.append(f'<th class="l">floor set at {alpha_text}</th>')
        heads += [f'<th class="sortable{"" if main else " more"}" data-key="{esc(key)}" title="{esc(hover)}">'
                  f"{esc(name)}</th>" for key, name, hover, _, _, main in self.columns]
        return out, ['<div class="scroll"><table class="units" id="units"><thead><tr>'
                     f'{"".join(heads)}</tr></thead><tbody>']

    def block(self, start: int, stop: int) -> dict:
        """Units ``start:stop``'s arrays, read from the file."""
        group, stored = self.group, self.stored
        return {"images": np.asarray(group["images"][start:stop]),
                "maxima": np.asarray(group["max_image"][start:stop]),
                "floor_images": [np.asarray(group["floor_images"][start:stop, a]) for a in range(len(stored))],
                "floor_acts": np.asarray(group["floor_activations"][start:stop], np.float64) if stored else None,
                "certificate": _read_rows(self.start_distances, start, stop),
                "maps": [_read_rows(d, start, stop) for d in self.maps],
                "curves": [_read_rows(d, start, stop) for d in self.curves]}

    def unit(self, rows: dict, k: int, i: int) -> tuple[str, str, str]:
        """Unit ``i`` (row ``k`` of ``rows``): its table row, its gallery card, its detail section."""
        files, n_images, stored, alpha_at = self.files, self.n_images, self.stored, self.alpha_at
        u = int(self.units[i])
        peak = self.max_activation[i]
        frac = self.fractions[i] if self.fractions is not None else np.full(n_images, np.nan)
        floor_images, floor_acts = rows["floor_images"], rows["floor_acts"]
        # one contrast mapping for the unit's every image: what varies is what it ignores
        shown = to_display(np.concatenate([rows["maxima"][k][None], rows["images"][k], *[f[k] for f in floor_images]]))
        sets = [shown[1:1 + n_images]] + [shown[1 + n_images + a * len(f[k]):1 + n_images + (a + 1) * len(f[k])]
                                          for a, f in enumerate(floor_images)]
        floor_fracs = [floor_acts[k, a] / peak if peak > 0 else np.full(floor_acts.shape[2], np.nan)
                       for a in range(len(stored))]
        best = files.img(shown[0], THUMB, f"u{u}_max.png", f"unit {u} best image", f"activation {fmt(peak)}")
        lam_tags = [files.img(sets[0][j], THUMB, f"u{u}_{j}.png", f"unit {u} diverse image {j}",
                              f"{fmt(frac[j])} x best") for j in range(n_images)]
        floor_tags = [] if alpha_at is None else [
            files.img(img, THUMB, f"u{u}_floor{alpha_at}_{j}.png", f"unit {u} floor set {j}",
                      f"{fmt(floor_fracs[alpha_at][j])} x best") for j, img in enumerate(sets[1 + alpha_at])]
        row = self._row(u, i, best, lam_tags, floor_tags)
        card = f'<span class="imgs">{best}{"".join(floor_tags or lam_tags)}</span>'
        set_rows = self._set_rows(u, i, k, shown, sets, frac, floor_fracs, rows["certificate"])
        detail = _detail(files, u, i, peak=peak, readout=self._readout(i), set_rows=set_rows, columns=self.columns,
                         curves=_curves(self.tuning, [None if c is None else c[k] for c in rows["curves"]]),
                         maps=UnitMaps(*[None if e is None else e[k] for e in rows["maps"]]))
        return row, card, detail

    def _row(self, u: int, i: int, best: str, lam_tags: list[str], floor_tags: list[str]) -> str:
        cells = [f'<td data-v="{u}"><a href="#unit-{u}">{u}</a></td>',
                 f'<td class="imgs">{best}</td>', '<td class="imgs">' + "".join(lam_tags) + "</td>"]
        if self.alpha_text:
            cells.append('<td class="imgs">' + "".join(floor_tags) + "</td>")
        for key, _, _, v, names, main in self.columns:
            x = float(v[i])
            more = "" if main else ' class="more"'
            text = names[i] if names is not None else fmt(x)
            cells.append(f'<td{more} data-v="{x!r}">{esc(text)}</td>' if math.isfinite(x)
                         else f'<td{more} data-v="NaN">–</td>')
        return f'<tr id="row-{u}">{"".join(cells)}</tr>'

    def _readout(self, i: int) -> str:
        profile, measures = self.profile, self.measures
        return " &middot; ".join(
            f"{esc(axis_label(axis, profile.alpha))}: <b>{esc(rules.labels(axis, [codes[i]])[0])}</b>"
            + (f" ({esc(m)})" if (m := _measure_text(axis, measures, i)) else "")
            for axis, codes in self.classes.items() if profile.known(axis))

    def _set_rows(self, u, i, k, shown, sets, frac, floor_fracs, certificate) -> list[tuple]:
        """The detail's table of sets: best image, diverse set, each floor's set."""
        files, peak = self.files, self.max_activation[i]
        set_rows = [("best image", [_figure(files.img(shown[0], DETAIL, f"u{u}_max_detail.png",
                                                      f"unit {u} best image"), f"activation {fmt(peak)}")],
                     {}, "", ""),
                    (self.lam_name,
                     [_figure(files.img(sets[0][j], DETAIL, f"u{u}_{j}_detail.png", f"unit {u} diverse {j}"),
                              _times_best(frac[j])) for j in range(self.n_images)],
                     {"floor_pixel_min": self.scalars.get("pixel_min", [math.nan] * self.count)[i]}, "", "")]
        for a, alpha in enumerate(self.stored):
            facts = {name: self.values[name][i, a] for name in ("floor_pixel_min", "floor_pixel_vs_linear",
                                                               "floor_phase_spread", "floor_agreement")
                     if np.ndim(self.values.get(name)) == 2}
            where = ""
            if certificate is not None:
                where = "diversity each start reached: " + ", ".join(
                    f"{n} {fmt(float(d))}" for n, d in zip(_start_names(self.starts, certificate.shape[-1]),
                                                           certificate[k, a]) if np.isfinite(d))
            set_rows.append((f"floor set at {fmt(alpha)}: every image keeps &ge; {fmt(alpha)} &times; best",
                             [_figure(files.img(img, DETAIL, f"u{u}_floor{a}_{j}_detail.png",
                                                f"unit {u} floor set at {fmt(alpha)} image {j}"),
                                      _times_best(floor_fracs[a][j])) for j, img in enumerate(sets[1 + a])],
                             facts, where, self.floor_classes[a][i]))
        return set_rows


def layer_files(path: Path, layer: str, stem: str, group, meta: dict, config: dict, out_dir: Path,
                 index_name: str):
    """The image files of a layer page as they are made, (path, bytes) per image, then the page
    (path, html), named after ``stem``. Units are read ``BLOCK`` at a time, so memory stays bounded."""
    files = _Images(out_dir / f"{stem}_files")
    page = _LayerPage(layer, group, meta, config, files)
    out = page.header(path, index_name)
    out += _profile_section(page.profile, page.measures, page.classes, page.metrics is not None, path)
    gallery_at = len(out)  # the gallery goes here once its units' thumbnails are made
    out += page.summary()
    note, table = page.table_head()
    out += note
    wanted = {int(i) for _, _, p, _ in page.picks for i in p}
    cards, details = {}, []
    for start in range(0, page.count, BLOCK):
        stop = min(page.count, start + BLOCK)
        rows = page.block(start, stop)
        for k in range(stop - start):
            row, card, detail = page.unit(rows, k, start + k)
            table.append(row)
            if start + k in wanted:
                cards[start + k] = card
            details.append(detail)
        yield from files.take()  # this block's images go to disk before the next is read
    table.append("</tbody></table></div>")
    sets = f"its floor set at {page.alpha_text}" if page.alpha_text else f"its {page.lam_name}"
    out[gallery_at:gallery_at] = _gallery(page.picks, cards, page.units, page.profile, page.measures, sets)
    out += table
    out.append('<h2 id="details">Unit details</h2>'
               f'<p class="note" id="above-max">Per unit: its classes, then every set of images with each '
               f"image's activation as a multiple of the best image's (&times; best), the set's closest pair "
               f"(RMS distance in grey levels), that distance over the widest set a linear unit allows, the "
               f"phase spread and how well independent starts agree; then its tuning curves, shift test and "
               f"natural patches. {ABOVE_MAX}</p>")
    out += details
    yield (out_dir / f"{stem}.html",
           html_page(f"{layer} - jaxvis report", "\n".join(out), script=SORT_JS))


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _times_best(ratio: float) -> str:
    """A caption: an activation as a multiple of the best image's, a value above 1 linked to why."""
    above = math.isfinite(ratio) and ratio > 1 + 1e-3
    return f"{fmt(ratio)} &times; best" + (' <a href="#above-max" title="why above 1">&dagger;</a>' if above else "")


def _figure(img: str, caption: str) -> str:
    return f"<figure>{img}<figcaption>{caption}</figcaption></figure>"


# the facts of a set in a unit's detail: (value key, column header)
SET_FACTS = (("floor_pixel_min", "closest pair (grey levels RMS)"),
             ("floor_pixel_vs_linear", "closest pair / a linear unit's"),
             ("floor_phase_spread", "phase spread (degrees)"),
             ("floor_agreement", "starts' agreement"))


class UnitMaps(NamedTuple):
    """One unit's pictures beside its sets (each None where the file lacks it): the shift test's
    texture and response map, the diverse set's variance map, the top natural patches and their
    activations."""

    texture: np.ndarray | None
    responses: np.ndarray | None
    variance: np.ndarray | None
    patches: np.ndarray | None
    patch_acts: np.ndarray | None


def _detail(files: _Images, u, i, *, peak, readout, set_rows, columns, curves, maps: UnitMaps) -> str:
    """One unit's details: its classes, its sets (a table: images with their activations, the
    set's closest pair, phase spread, starts' agreement and class), tuning curves, shift test,
    natural patches, and every measure (folded)."""
    parts = [f'<section class="unit-detail" id="unit-{u}"><h3>unit {u} '
             f'<a href="#row-{u}" class="note">(back to the table)</a></h3>',
             f'<p class="readout">{readout}</p>' if readout else ""]
    parts += _sets_table(set_rows)
    if curves:
        parts.append('<div class="tiles">' + "".join(f'<div class="curve">{c}</div>' for c in curves) + "</div>")
    extra = _maps(files, u, peak, maps)
    if extra:
        parts.append('<div class="tiles">' + "".join(extra) + "</div>")
    if maps.patches is not None and len(maps.patches):
        parts.append(_patches(files, u, peak, maps.patches, maps.patch_acts))
    measures = "".join(  # the metric's name on hover (its definition is in the summary and the table)
        f'<tr><td class="l" title="{esc(key)}">{esc(name)}</td>'
        f"<td>{esc(names[i] if names is not None else fmt(float(v[i])))}</td></tr>"
        for key, name, _, v, names, _ in columns)
    parts.append(f'<details><summary>every measure of unit {u}</summary><table class="summary measures">'
                 f"{measures}</table></details>")
    parts.append("</section>")
    return "\n".join(parts)


def _sets_table(set_rows) -> list[str]:
    """A unit's sets, one row each: (name, image figures, facts, the starts' agreement, class)."""
    rows = ['<div class="scroll"><table class="sets"><thead><tr><th class="l">set</th><th class="l">images</th>'
            + "".join(f'<th title="{esc(key)}">{esc(head)}</th>' for key, head in SET_FACTS)
            + '<th class="l" title="diversity_class">class</th></tr></thead><tbody>']
    for name, figures, facts, where, cls in set_rows:
        cells = []
        for key, _ in SET_FACTS:
            v = facts.get(key)
            tip = f' title="{esc(where)}"' if key == "floor_agreement" and where else ""
            cells.append(f"<td{tip}>{fmt(v) if v is not None else ''}</td>")
        rows.append(f'<tr><td class="l setname">{name}</td><td class="imgs"><div class="tiles">{"".join(figures)}'
                    f'</div></td>{"".join(cells)}<td class="l">{esc(cls)}</td></tr>')
    rows.append("</tbody></table></div>")
    return rows


def _maps(files: _Images, u, peak, maps: UnitMaps) -> list[str]:
    """The shift texture, the response map and the variance map, with their colour bars."""
    extra = []
    if maps.texture is not None:
        extra.append(_figure(files.img(to_display(maps.texture), DETAIL * 2, f"u{u}_texture.png",
                                       f"unit {u} shift texture"), "shift test: the texture"))
    if maps.responses is not None:
        scale = peak if peak > 0 else 1.0
        rgb, lo, hi = heat(np.asarray(maps.responses, np.float64) / scale)
        extra.append('<div class="heat">' + _figure(
            files.img(rgb, DETAIL * 2, f"u{u}_shifts.png", f"unit {u} shift responses"),
            "response at every shift" + (" (&times; best)" if peak > 0 else "")
            + (' <a href="#above-max" title="why above 1">&dagger;</a>' if peak > 0 and hi > 1 + 1e-3 else ""))
            + svg_colourbar(lo, hi, "× best" if peak > 0 else "response", f"bar-{u}-shifts", height=DETAIL * 2) + "</div>")
    if maps.variance is not None:
        variance = np.asarray(maps.variance, np.float64)
        rgb, lo, hi = heat(variance.mean(-1) if variance.ndim == 3 else variance)
        extra.append('<div class="heat">' + _figure(
            files.img(rgb, DETAIL, f"u{u}_variance.png", f"unit {u} variance map"),
            "variance across the diverse set") + svg_colourbar(lo, hi, "grey levels²", f"bar-{u}-variance", height=DETAIL) + "</div>")
    return extra


def _patches(files: _Images, u, peak, patches, patch_acts) -> str:
    """The photograph patches that drive the unit most, with their activations."""
    patch_view = to_display(patches)
    tiles = []
    for k in range(len(patches)):
        caption = f"natural #{k + 1}"
        if patch_acts is not None:
            caption += "<br>" + (_times_best(patch_acts[k] / peak) if peak > 0 else fmt(patch_acts[k]))
        tiles.append(_figure(files.img(patch_view[k], DETAIL, f"u{u}_natural{k}.png",
                                       f"unit {u} natural patch {k}"), caption))
    return ("<div><b>photograph patches that drive it most</b></div>"
            '<div class="tiles">' + "".join(tiles) + "</div>")


def _start_names(starts: list[str], columns: int) -> list[str]:
    """The certificate's column names: the floor starts, then (a second round, for units whose
    starts disagreed) the same starts again; ``start i`` where the file does not say."""
    if starts and columns % len(starts) == 0:
        rounds = columns // len(starts)
        return [s if r == 0 else f"{s} (round {r + 1})" for r in range(rounds) for s in starts]
    return [f"start {i}" for i in range(columns)]
