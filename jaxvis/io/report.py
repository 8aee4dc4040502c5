"""Static HTML reports of a results file: one page per layer plus an index, no server needed.

``jaxvis report RESULTS.h5 [--out DIR] [--layer a,b]`` writes ``<out>/<layer>.html`` per layer and
``<out>/index.html``. Every page stands alone and works from ``file://``: images are embedded as
``data:image/png;base64`` (Pillow; small canvases enlarged with nearest-neighbour sampling so each
pixel is a visible square), plots are inline SVG drawn here (histogram, scatter, line), and a few
lines of inline JavaScript sort the unit table. Nothing is fetched from anywhere.

Per layer page:

- a summary: the layer's metadata, a table of every scalar metric over units (median and
  quartiles), a histogram of the shift-invariance index (when the shift test ran), and a scatter of
  the median activation fraction against diversity (``feature_min`` relative to
  ``reference_feature_min``, else the pixel version, else the raw distance);
- the unit table: one row per unit with its maximum and diverse images and one column per scalar
  metric; clicking a header sorts the rows by it (again: the other direction; NaN always last);
- per unit a detail section ``#unit-<n>``: maximum and diverse images with their activation
  fractions, the shift texture and response map, the top natural patches and the variance map,
  whichever of these the file holds.

Metrics come from the ``metrics`` group that ``jaxvis analyze`` adds per layer; every one of them
is optional. The ones computable from the sweep itself (activation fraction, pairwise distances of
the diverse set) are computed on the fly where the group lacks them
(``jaxvis.analysis.compare.layer_scalars``), so a freshly swept file renders too.

Contrast: a unit's maximum and its diverse images share one ``to_display`` mapping (what varies
across them is what the unit ignores), as in ``jaxvis render``; natural patches, the shift texture
share one per unit; response and variance maps are heat maps over their own range.

Pages are written to temporary names and renamed only when every page is complete: an error leaves
the output folder as it was.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import math
import os
import re
import uuid
from pathlib import Path

import numpy as np

from jaxvis.errors import JaxvisError
from jaxvis.io.render import to_display
from jaxvis.io.results import file_stem, open_results, unknown_layer

NEEDED = ("unit", "images", "activations", "max_image", "max_activation")
THUMB = 40          # table thumbnails: about this many px (small canvases enlarged, big ones shrunk)
DETAIL = 96         # detail images
BLOCK = 64          # units read from the file at a time
METRICS = "metrics"
BLUE, ORANGE, GREY = "#1f77b4", "#ff7f0e", "#888888"

# display order of the scalar columns; any other [U] dataset of the metrics group follows, sorted
PREFERRED = ("fraction_min", "fraction_median", "pixel_min", "pixel_mean", "feature_min",
             "feature_mean", "participation_ratio", "shift_index", "max_over_p99",
             "reference_pixel_min", "reference_pixel_mean", "reference_feature_min",
             "reference_feature_mean", "natural_p99")


# ----------------------------------------------------------------------------------------------
# images


def png_uri(pixels: np.ndarray, target: int) -> str:
    """uint8 ``[H, W, 3]`` or ``[H, W]`` as a ``data:image/png;base64`` URI, about ``target`` px.

    Smaller images are enlarged by an integer factor with nearest-neighbour sampling (every pixel
    a square); larger ones are shrunk to fit ``target`` (box filter).
    """
    from PIL import Image

    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    height, width = pixels.shape[:2]
    image = Image.fromarray(pixels)
    side = max(height, width, 1)
    if side < target:
        k = max(1, target // side)
        if k > 1:
            image = image.resize((width * k, height * k), Image.NEAREST)
    elif side > target * 1.5:
        k = target / side
        image = image.resize((max(1, round(width * k)), max(1, round(height * k))), Image.BOX)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# viridis at 9 points; linear interpolation in between
_VIRIDIS = np.array([[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
                     [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]], np.float64)


def heat(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    """A 2-D array as a viridis heat map over its finite range: (uint8 ``[H, W, 3]``, lo, hi)."""
    x = np.asarray(values, np.float64)
    finite = x[np.isfinite(x)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    t = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    t = np.clip(np.nan_to_num(t, nan=0.0), 0.0, 1.0) * (len(_VIRIDIS) - 1)
    i = np.minimum(np.floor(t).astype(int), len(_VIRIDIS) - 2)
    f = (t - i)[..., None]
    rgb = _VIRIDIS[i] * (1 - f) + _VIRIDIS[i + 1] * f
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8), lo, hi


# ----------------------------------------------------------------------------------------------
# small HTML and SVG helpers (shared with jaxvis.analysis.compare)


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def fmt(value) -> str:
    """A number for tables: 3 significant digits, integers as they are, NaN as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    if not math.isfinite(value):
        return "–"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.2e}"
    return f"{value:.3g}"


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks, t = [], first
    while t <= hi + step * 1e-9:
        ticks.append(0.0 if abs(t) < step * 1e-9 else t)
        t += step
    return ticks


def _range(values: np.ndarray) -> tuple[float, float]:
    finite = np.asarray(values, np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    if hi - lo < 1e-12 * max(1.0, abs(hi)):
        pad = 0.5 if hi == 0 else abs(hi) * 0.1
        return lo - pad, hi + pad
    return lo, hi


def _padded(values, share: float = 0.04) -> tuple[float, float]:
    lo, hi = _range(values)
    pad = (hi - lo) * share
    return lo - pad, hi + pad


class _Axes:
    """A plot area in an SVG of ``width`` x ``height``: data -> pixel transforms and the axes."""

    def __init__(self, width, height, xlim, ylim, left=56, right=12, top=26, bottom=42):
        self.w, self.h = width, height
        self.x0, self.x1 = left, width - right
        self.y0, self.y1 = height - bottom, top
        self.xlim, self.ylim = xlim, ylim

    def x(self, v):
        lo, hi = self.xlim
        return self.x0 + (v - lo) / (hi - lo) * (self.x1 - self.x0)

    def y(self, v):
        lo, hi = self.ylim
        return self.y0 - (v - lo) / (hi - lo) * (self.y0 - self.y1)

    def frame(self, title, xlabel, ylabel, xticks=True) -> list[str]:
        parts = [f'<rect x="{self.x0}" y="{self.y1}" width="{self.x1 - self.x0}" '
                 f'height="{self.y0 - self.y1}" fill="none" stroke="#444"/>']
        if xticks:
            for t in _nice_ticks(*self.xlim):
                px = self.x(t)
                parts.append(f'<line x1="{px:.1f}" y1="{self.y0}" x2="{px:.1f}" y2="{self.y0 + 4}" '
                             'stroke="#444"/>'
                             f'<text x="{px:.1f}" y="{self.y0 + 15}" text-anchor="middle">'
                             f'{esc(fmt(t))}</text>')
        for t in _nice_ticks(*self.ylim):
            py = self.y(t)
            parts.append(f'<line x1="{self.x0 - 4}" y1="{py:.1f}" x2="{self.x0}" y2="{py:.1f}" '
                         'stroke="#444"/>'
                         f'<text x="{self.x0 - 6}" y="{py + 4:.1f}" text-anchor="end">'
                         f'{esc(fmt(t))}</text>')
        parts.append(f'<text x="{(self.x0 + self.x1) / 2:.1f}" y="{self.h - 6}" '
                     f'text-anchor="middle">{esc(xlabel)}</text>')
        parts.append(f'<text x="12" y="{(self.y0 + self.y1) / 2:.1f}" text-anchor="middle" '
                     f'transform="rotate(-90 12 {(self.y0 + self.y1) / 2:.1f})">{esc(ylabel)}</text>')
        parts.append(f'<text x="{self.x0}" y="16" font-weight="bold">{esc(title)}</text>')
        return parts


def _svg(width, height, parts, label) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{esc(label)}" font-family="sans-serif" font-size="11">'
            + "".join(parts) + "</svg>")


def svg_histogram(series, title: str, xlabel: str, *, bins: int = 20, width: int = 420,
                  height: int = 260, share: bool = False) -> str:
    """Histogram(s) over shared bins: ``series`` = [(label, values, colour), ...].

    ``share``: bar heights are the share of each series' units (for series of different sizes)
    instead of counts.
    Several series are drawn as outlined, semi-transparent bars over the same bins, each with its
    median as a dashed line; non-finite values are left out and counted in the legend.
    """
    cleaned = []
    for label, values, colour in series:
        v = np.asarray(values, np.float64).ravel()
        cleaned.append((label, v[np.isfinite(v)], int((~np.isfinite(v)).sum()), colour))
    every = np.concatenate([v for _, v, _, _ in cleaned]) if cleaned else np.zeros(0)
    lo, hi = _range(every)
    edges = np.linspace(lo, hi, bins + 1)
    counts = [np.histogram(v, edges)[0] for _, v, _, _ in cleaned]
    if share:
        counts = [c / max(1, c.sum()) for c in counts]
    top = max([float(c.max()) for c in counts if c.size] + [1e-9 if share else 1])
    legend_h = 13 * len(cleaned)
    ax = _Axes(width, height + legend_h, (lo, hi), (0, top * 1.08), top=26 + legend_h)
    parts = ax.frame(title, xlabel, "share of units" if share else "units")
    for (label, v, _, colour), c in zip(cleaned, counts):
        for k, n in enumerate(c):
            if n == 0:
                continue
            x0, x1, y = ax.x(edges[k]), ax.x(edges[k + 1]), ax.y(n)
            parts.append(f'<rect x="{x0:.1f}" y="{y:.1f}" width="{max(0.5, x1 - x0):.1f}" '
                         f'height="{ax.y0 - y:.1f}" fill="{colour}" fill-opacity="0.45" '
                         f'stroke="{colour}"><title>{esc(label)}: {fmt(n)} in '
                         f'[{fmt(edges[k])}, {fmt(edges[k + 1])})</title></rect>')
        if v.size:
            m = ax.x(float(np.median(v)))
            parts.append(f'<line x1="{m:.1f}" y1="{ax.y0}" x2="{m:.1f}" y2="{ax.y1}" '
                         f'stroke="{colour}" stroke-dasharray="4 3" stroke-width="1.5"/>')
    for k, (label, v, bad, colour) in enumerate(cleaned):
        y = 30 + 13 * k
        note = f"{label}: n={v.size}" + (f", median {fmt(np.median(v))} (dashed)" if v.size
                                         else "") + (f", {bad} not finite" if bad else "")
        parts.append(f'<rect x="{ax.x0}" y="{y - 8}" width="9" height="9" fill="{colour}" '
                     f'fill-opacity="0.6"/><text x="{ax.x0 + 13}" y="{y}">{esc(note)}</text>')
    return _svg(width, height + legend_h, parts, title)


def svg_scatter(x, y, title: str, xlabel: str, ylabel: str, *, labels=None, links=None,
                width: int = 420, height: int = 300, colour: str = BLUE) -> str:
    """A scatter plot; ``labels`` become tooltips, ``links`` (hrefs) make the points clickable."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    ax = _Axes(width, height, _padded(x[ok]), _padded(y[ok]))
    parts = ax.frame(title, xlabel, ylabel)
    for i in np.flatnonzero(ok):
        tip = f"<title>{esc(labels[i])}: {fmt(x[i])}, {fmt(y[i])}</title>" if labels is not None \
            else ""
        dot = (f'<circle cx="{ax.x(x[i]):.1f}" cy="{ax.y(y[i]):.1f}" r="3.5" fill="{colour}" '
               f'fill-opacity="0.6">{tip}</circle>')
        parts.append(f'<a href="{esc(links[i])}">{dot}</a>' if links is not None else dot)
    if (~ok).any():
        parts.append(f'<text x="{ax.x1}" y="{ax.y1 + 12}" text-anchor="end" fill="{GREY}">'
                     f'{int((~ok).sum())} units without both values</text>')
    return _svg(width, height, parts, title)


def svg_lines(names, series, title: str, ylabel: str, *, width: int = 420,
              height: int = 260) -> str:
    """One line per series over categorical x positions ``names`` (e.g. layers in order).

    ``series``: [(label, values, colour)]; NaN values break nothing, they are just not drawn.
    """
    count = len(names)
    every = np.concatenate([np.asarray(v, np.float64) for _, v, _ in series]) if series else []
    ax = _Axes(width, height, (-0.5, count - 0.5), _padded(every, 0.08), bottom=64)
    parts = ax.frame(title, "", ylabel, xticks=False)
    for i, name in enumerate(names):
        px = ax.x(i)
        parts.append(f'<text x="{px:.1f}" y="{ax.y0 + 10}" text-anchor="end" '
                     f'transform="rotate(-40 {px:.1f} {ax.y0 + 10})">{esc(name)}</text>')
    for k, (label, values, colour) in enumerate(series):
        values = np.asarray(values, np.float64)
        points = [(ax.x(i), ax.y(v)) for i, v in enumerate(values) if np.isfinite(v)]
        if len(points) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" '
                         'stroke-width="1.5"/>')
        for (px, py), v in zip(points, values[np.isfinite(values)]):
            parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{colour}">'
                         f'<title>{esc(label)}: {fmt(v)}</title></circle>')
        if len(series) > 1:
            y = ax.y1 + 12 + 13 * k
            parts.append(f'<rect x="{ax.x0 + 6}" y="{y - 8}" width="9" height="9" '
                         f'fill="{colour}"/><text x="{ax.x0 + 19}" y="{y}">{esc(label)}</text>')
    return _svg(width, height, parts, title)


CSS = """
body{font-family:sans-serif;font-size:14px;margin:16px 24px;color:#222;max-width:1400px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px}h3{font-size:15px;margin:4px 0}
table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right;vertical-align:middle}
th{background:#f0f0f0}td.l,th.l{text-align:left}
table.units th.sortable{cursor:pointer;user-select:none;white-space:nowrap}
table.units th.sortable:hover{background:#dde}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
img{image-rendering:pixelated;image-rendering:crisp-edges;vertical-align:middle}
td.imgs{white-space:nowrap;text-align:left}td.imgs img{margin-right:2px}
.plots{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.unit-detail{border-top:1px solid #bbb;padding:8px 0 12px 0}
.unit-detail:target{background:#fff8d8;outline:2px solid #e0c040}
.tiles{display:flex;flex-wrap:wrap;gap:10px;margin:6px 0}
figure{margin:0;text-align:center;font-size:12px}figcaption{color:#444}
.note{color:#666}.kv{color:#333;font-size:13px}
"""

SORT_JS = """
(function(){
  function key(cell){
    var v=parseFloat(cell.getAttribute('data-v'));
    return isNaN(v)?null:v;
  }
  document.querySelectorAll('table.units').forEach(function(table){
    var heads=table.querySelectorAll('th.sortable');
    heads.forEach(function(th){
      th.addEventListener('click',function(){
        var col=th.cellIndex;
        var asc=th.getAttribute('aria-sort')!=='ascending';
        heads.forEach(function(h){h.removeAttribute('aria-sort');});
        th.setAttribute('aria-sort',asc?'ascending':'descending');
        var body=table.tBodies[0];
        var rows=Array.prototype.slice.call(body.rows);
        rows.forEach(function(r,i){r._pos=i;});
        rows.sort(function(a,b){
          var x=key(a.cells[col]),y=key(b.cells[col]);
          if(x===null&&y===null)return a._pos-b._pos;
          if(x===null)return 1;
          if(y===null)return -1;
          if(x===y)return a._pos-b._pos;
          return asc?x-y:y-x;
        });
        rows.forEach(function(r){body.appendChild(r);});
      });
    });
  });
})();
"""


def html_page(title: str, body: str, *, script: str = "") -> str:
    js = f"<script>{script}</script>" if script else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="icon" href="data:,">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head>\n"
            f"<body>\n{body}\n{js}</body></html>\n")


def quartiles(values) -> tuple[int, float, float, float]:
    """(number of finite values, first quartile, median, third quartile); NaN when none."""
    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0, math.nan, math.nan, math.nan
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return int(v.size), float(q1), float(med), float(q3)


def write_pages(pages: dict[Path, str]) -> list[Path]:
    """Write every page to a temporary name, then rename them all; on error remove the temps.

    Pages are complete before the first rename, so an error (disk full, no permission) leaves
    the folder as it was."""
    for path in pages:  # what would make a rename fail, checked before anything is written
        if path.exists() and not path.is_file():
            raise JaxvisError(f"cannot write report page {path}: something other than a file "
                              "is in the way")
    done: list[tuple[Path, Path]] = []
    path = None
    try:
        for path, text in pages.items():
            tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
            done.append((tmp, path))
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        for tmp, path in done:
            os.replace(tmp, path)
    except OSError as err:
        raise JaxvisError(f"cannot write report page {path}: {err}") from None
    finally:
        for tmp, _ in done:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return [path for _, path in done]


# ----------------------------------------------------------------------------------------------
# reading a layer


def metric_definitions(group) -> dict[str, str]:
    if METRICS not in group:
        return {}
    try:
        found = json.loads(group[METRICS].attrs.get("definitions", "{}"))
    except (TypeError, ValueError):
        return {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def _natural(name: str):
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name)]


def layer_order(names, config: dict, rfs: dict) -> list[str]:
    """Layers in catalogue order: HDF5 lists groups alphabetically (``blocks.10`` before
    ``blocks.2``), so use the sweep config's ``layers`` list, then receptive field (``rfs``),
    then natural name order for anything it does not list."""
    names = list(names)
    listed = config.get("layers") if isinstance(config, dict) else None
    listed = [n for n in listed if n in names] if isinstance(listed, list) else []
    listed = list(dict.fromkeys(listed))
    rest = sorted((n for n in names if n not in listed),
                  key=lambda n: (rfs.get(n) is None, rfs.get(n) or 0, _natural(n)))
    return listed + rest


def _ordered(names) -> list[str]:
    names = list(names)
    return [n for n in PREFERRED if n in names] + sorted(n for n in names if n not in PREFERRED)


def _read_rows(dataset, start, stop):
    return None if dataset is None else np.asarray(dataset[start:stop])


# ----------------------------------------------------------------------------------------------
# the pages


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


def _layer_page(path: Path, layer: str, group, meta: dict, config: dict, index_name: str) -> str:
    from jaxvis.analysis.compare import layer_scalars

    scalars, sources = layer_scalars(group)
    definitions = {**_DERIVED_DEFINITIONS, **metric_definitions(group)}
    metrics = group[METRICS] if METRICS in group else None
    units = np.asarray(group["unit"][()])
    count = len(units)
    images_shape = group["images"].shape
    n_images, height, width = images_shape[1], images_shape[2], images_shape[3]
    max_activation = np.asarray(group["max_activation"][()], np.float64)
    activations = np.asarray(group["activations"][()], np.float64)
    fractions = (np.asarray(metrics["activation_fraction"][()], np.float64)
                 if metrics is not None and "activation_fraction" in metrics
                 and metrics["activation_fraction"].shape == activations.shape
                 else _fraction(activations, max_activation))
    columns = [("max_activation", max_activation)]
    if "steps" in group and group["steps"].shape == (count,):
        columns.append(("steps", np.asarray(group["steps"][()], np.float64)))
    columns += [(name, scalars[name]) for name in _ordered(scalars)]
    definitions.setdefault("max_activation", "activation of the single-image maximum")
    definitions.setdefault("steps", "optimiser steps of the diverse set")

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

    title = f"{layer}: diverse feature visualisations"
    model = _model_name(config)
    out = [f'<p><a href="{esc(index_name)}">&larr; all layers</a></p>',
           f"<h1>{esc(title)}</h1>",
           f'<p class="kv">{esc(path.name)} &middot; {esc(model)} &middot; {count} units &middot; '
           f"N = {n_images} diverse images &middot; canvas {height}&times;{width} px"
           + "".join(f" &middot; {k} {esc(meta[k])}" for k in ("rf", "jump", "feature_layer")
                     if meta.get(k) is not None) + "</p>"]
    if metrics is None:
        out.append('<p class="note">No <code>metrics</code> group in this file: run '
                   f"<code>jaxvis analyze {esc(path.name)}</code> for the shift test, natural "
                   "references and more. Shown: what the sweep itself gives.</p>")

    # summary
    out.append("<h2>Summary</h2>")
    out.append('<table class="summary"><thead><tr><th class="l">metric</th><th>n</th>'
               '<th>q1</th><th>median</th><th>q3</th><th class="l">definition</th></tr></thead>'
               "<tbody>")
    for name, values in columns:
        n, q1, med, q3 = quartiles(values)
        src = " (from the sweep)" if sources.get(name) == "sweep" else ""
        out.append(f'<tr><td class="l">{esc(name)}</td><td>{n}</td><td>{fmt(q1)}</td>'
                   f"<td>{fmt(med)}</td><td>{fmt(q3)}</td>"
                   f'<td class="l">{esc(definitions.get(name, ""))}{src}</td></tr>')
    out.append("</tbody></table>")
    plots = []
    shift = scalars.get("shift_index")
    if shift is not None and np.isfinite(shift).any():
        plots.append(svg_histogram([("units", shift, BLUE)], "shift-invariance index",
                                   "mean response over shifts / maximum"))
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
              f'title="{esc(definitions.get(name, name))}">{esc(name)}</th>'
              for name, _ in columns]
    table = [f'<table class="units" id="units"><thead><tr>{"".join(heads)}</tr></thead><tbody>']
    details = []
    for start in range(0, count, BLOCK):
        stop = min(count, start + BLOCK)
        images = np.asarray(group["images"][start:stop])
        maxima = np.asarray(group["max_image"][start:stop])
        tex = _read_rows(texture, start, stop)
        resp = _read_rows(responses, start, stop)
        var = _read_rows(variance, start, stop)
        pat = _read_rows(patches, start, stop)
        pacts = _read_rows(patch_acts, start, stop)
        p99 = _read_rows(over_p99, start, stop)
        for k in range(stop - start):
            i = start + k
            u = int(units[i])
            shown = to_display(np.concatenate([maxima[k][None], images[k]]))
            cells = [f'<td data-v="{u}"><a href="#unit-{u}">{u}</a></td>',
                     f'<td class="imgs"><img src="{png_uri(shown[0], THUMB)}" alt="unit {u} '
                     f'maximum"></td>',
                     '<td class="imgs">' + "".join(
                         f'<img src="{png_uri(shown[j + 1], THUMB)}" alt="unit {u} image {j}" '
                         f'title="{fmt(fractions[i, j])}">' for j in range(n_images)) + "</td>"]
            for name, values in columns:
                v = float(values[i])
                cells.append(f'<td data-v="{v!r}">{fmt(v)}</td>' if math.isfinite(v)
                             else '<td data-v="NaN">–</td>')
            table.append(f'<tr id="row-{u}">{"".join(cells)}</tr>')
            details.append(_detail(u, shown, max_activation[i], fractions[i],
                                   None if p99 is None else p99[k], columns, i,
                                   None if tex is None else tex[k],
                                   None if resp is None else resp[k],
                                   None if var is None else var[k],
                                   None if pat is None else pat[k],
                                   None if pacts is None else pacts[k]))
    table.append("</tbody></table>")
    out += table
    out.append("<h2>Unit details</h2>")
    out += details
    return html_page(f"{layer} - jaxvis report", "\n".join(out), script=SORT_JS)


def _fraction(activations: np.ndarray, max_activation: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = activations / max_activation[:, None]
    frac[~(max_activation > 0)] = np.nan
    return frac


def _figure(uri: str, caption: str, alt: str) -> str:
    return (f'<figure><img src="{uri}" alt="{esc(alt)}"><figcaption>{caption}</figcaption>'
            "</figure>")


def _detail(u, shown, max_act, fractions, over_p99, columns, i, texture, responses, variance,
            patches, patch_acts) -> str:
    parts = [f'<section class="unit-detail" id="unit-{u}"><h3>unit {u} '
             f'<a href="#row-{u}" class="note">(back to the table)</a></h3>',
             '<p class="kv">' + " &middot; ".join(f"{esc(name)} {fmt(values[i])}"
                                                  for name, values in columns) + "</p>"]
    tiles = [_figure(png_uri(shown[0], DETAIL), f"maximum<br>{fmt(max_act)}", f"unit {u} maximum")]
    for j in range(shown.shape[0] - 1):
        caption = f"image {j}<br>{fmt(fractions[j])} &times; max"
        if over_p99 is not None:
            caption += f"<br>{fmt(over_p99[j])} &times; p99"
        tiles.append(_figure(png_uri(shown[j + 1], DETAIL), caption, f"unit {u} diverse {j}"))
    parts.append('<div class="tiles">' + "".join(tiles) + "</div>")
    extra = []
    if texture is not None:
        extra.append(_figure(png_uri(to_display(texture), DETAIL * 2), "shift texture",
                             f"unit {u} shift texture"))
    if responses is not None:
        rgb, lo, hi = heat(responses)
        extra.append(_figure(png_uri(rgb, DETAIL * 2),
                             f"response at every shift<br>{fmt(lo)} .. {fmt(hi)}"
                             + (f" ({fmt(lo / max_act)} .. {fmt(hi / max_act)} &times; max)"
                                if max_act > 0 else ""), f"unit {u} shift responses"))
    if variance is not None:
        variance = np.asarray(variance, np.float64)
        rgb, lo, hi = heat(variance.mean(-1) if variance.ndim == 3 else variance)
        extra.append(_figure(png_uri(rgb, DETAIL), f"variance across the set<br>{fmt(lo)} .. "
                             f"{fmt(hi)}", f"unit {u} variance map"))
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
            tiles.append(_figure(png_uri(patch_view[k], DETAIL), caption,
                                 f"unit {u} natural patch {k}"))
        parts.append("<div><b>top natural patches</b></div>"
                     '<div class="tiles">' + "".join(tiles) + "</div>")
    parts.append("</section>")
    return "\n".join(parts)


_DERIVED_DEFINITIONS = {
    "fraction_min": "lowest activation of the diverse images / the single-image maximum",
    "fraction_median": "median activation of the diverse images / the single-image maximum",
    "pixel_min": "smallest pairwise RMS pixel distance in the diverse set",
    "pixel_mean": "mean pairwise RMS pixel distance in the diverse set",
    "feature_min": "smallest pairwise feature distance in the diverse set",
    "feature_mean": "mean pairwise feature distance in the diverse set",
}


def _model_name(config: dict) -> str:
    weights = config.get("weights")
    model = config.get("model")
    model = model.get("name") if isinstance(model, dict) else model
    if weights and model and str(weights) != str(model):
        return f"{weights} ({model})"
    return str(weights or model or "unknown model")


def _index_page(path: Path, config: dict, rows: list[dict]) -> str:
    trend = [("fraction_median", "median activation fraction"),
             ("shift_index", "median shift-invariance index"),
             ("participation_ratio", "median participation ratio"),
             ("feature_min", "median feature_min"), ("pixel_min", "median pixel_min")]
    out = [f"<h1>jaxvis report: {esc(path.name)}</h1>",
           f'<p class="kv">{esc(_model_name(config))} &middot; {len(rows)} layers (in '
           "catalogue order)</p>",
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


def _meta(group) -> dict:
    """A layer's metadata (empty where it is missing or damaged: the report shows less)."""
    try:
        meta = json.loads(group.attrs["meta"])
    except (KeyError, TypeError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def report(results_path: Path, out_dir: Path, *, layers: list[str] | None = None) -> list[Path]:
    """Write the HTML report of ``results_path`` (all layers, or ``layers``) into ``out_dir``.

    Returns the written pages: one per layer, then ``index.html``. Raises ``JaxvisError`` (and
    writes nothing) for a file that is not a results file, a missing layer, or a layer without
    the sweep's images and activations.
    """
    from jaxvis.io.results import _json_attr

    results_path, out_dir = Path(results_path), Path(out_dir)
    pages: dict[Path, str] = {}
    with open_results(results_path) as f:
        config = _json_attr(f, "config", results_path)
        config = config if isinstance(config, dict) else {}
        names = layer_order(f["layers"], config, {n: _meta(g).get("rf") for n, g in
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
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise JaxvisError(f"cannot write the report to {out_dir}: {err}") from None
        rows = []
        from jaxvis.analysis.compare import layer_scalars
        for name in chosen:
            group = f["layers"][name]
            meta = _meta(group)
            page = out_dir / f"{file_stem(name)}.html"
            pages[page] = _layer_page(results_path, name, group, meta, config, "index.html")
            scalars, _ = layer_scalars(group)
            rows.append({"layer": name, "href": page.name, "units": len(group["unit"]),
                         "rf": meta.get("rf"), "canvas": meta.get("canvas"),
                         "analysed": METRICS in group,
                         "medians": {k: quartiles(v)[2] for k, v in scalars.items()}})
    pages[out_dir / "index.html"] = _index_page(results_path, config, rows)
    return write_pages(pages)
