"""Inline SVG plots for jaxvis's pages, drawn here (no plotting library, no assets): histograms
over shared bins (far outliers counted at the edges, not stretching the range), scatter plots with
clickable points, lines over categorical positions, tuning curves, colour bars of heat maps.
"""

from __future__ import annotations

import math

import numpy as np

from jaxvis.report.html import esc, fmt
from jaxvis.report.render import VIRIDIS

BLUE, ORANGE, GREY = "#1f77b4", "#ff7f0e", "#888888"
# a histogram's range covers its values up to this many interquartile ranges beyond the quartiles
# (Tukey's "far out") and at least its OUTLIER_SHARE .. 1 - OUTLIER_SHARE quantiles; values beyond
# are counted at the edge, so one 1e7 does not flatten the rest, nor is a long tail cut off
OUTLIER_IQR = 3.0
OUTLIER_SHARE = 0.02


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


def _shown_range(values: np.ndarray) -> tuple[float, float]:
    """The range a histogram shows: every value but far outliers (:data:`OUTLIER_IQR`,
    :data:`OUTLIER_SHARE`)."""
    lo, hi = _range(values)
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size < 4:
        return lo, hi
    low, q1, q3, high = np.percentile(v, [100 * OUTLIER_SHARE, 25, 75, 100 * (1 - OUTLIER_SHARE)])
    spread = OUTLIER_IQR * (q3 - q1)
    if spread <= 0:
        return lo, hi
    return _range(v[(v >= min(low, q1 - spread)) & (v <= max(high, q3 + spread))])


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
        """The box, ticks and labels; ``xticks``: True (nice ticks), False (none) or a list of
        (position in data units, label)."""
        parts = [f'<rect x="{self.x0}" y="{self.y1}" width="{self.x1 - self.x0}" '
                 f'height="{self.y0 - self.y1}" fill="none" stroke="#444"/>']
        if xticks is True:
            xticks = [(t, fmt(t)) for t in _nice_ticks(*self.xlim)]
        for t, text in xticks or ():
            px = self.x(t)
            parts.append(f'<line x1="{px:.1f}" y1="{self.y0}" x2="{px:.1f}" y2="{self.y0 + 4}" '
                         'stroke="#444"/>'
                         f'<text x="{px:.1f}" y="{self.y0 + 15}" text-anchor="middle">'
                         f'{esc(text)}</text>')
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


def _outlier_marks(ax, every: np.ndarray, lo: float, hi: float) -> list[str]:
    """A triangle at each edge that values lie beyond, pointing out of the range shown."""
    below, above = every[every < lo], every[every > hi]
    parts = []
    for beyond, x, sign in ((below, ax.x0, -1), (above, ax.x1, 1)):
        if beyond.size:  # a triangle pointing out of the range, its count and values on hover
            y = ax.y0 - 8
            tip = (f"{beyond.size} value(s) {'below' if sign < 0 else 'above'} the range shown: "
                   + ", ".join(fmt(b) for b in np.sort(beyond)[:20]) + (" ..." if beyond.size > 20 else ""))
            parts.append(f'<g class="outliers"><title>{esc(tip)}</title>'
                         f'<path d="M{x + sign * 7:.1f},{y} L{x:.1f},{y - 5} L{x:.1f},{y + 5} Z" fill="{GREY}"/>'
                         f'<text x="{x - sign * 3:.1f}" y="{y - 8}" text-anchor="{"start" if sign < 0 else "end"}" '
                         f'fill="{GREY}">{beyond.size} {"below" if sign < 0 else "above"} {esc(fmt(lo if sign < 0 else hi))}'
                         "</text></g>")
    return parts


def svg_histogram(series, title: str, xlabel: str, *, bins: int = 20, width: int = 420,
                  height: int = 260, share: bool = False, marks=()) -> str:
    """Histogram(s) over shared bins: ``series`` = [(label, values, colour), ...].

    ``share``: bar heights are the share of each series' units (for series of different sizes)
    instead of counts. ``marks``: [(value, label)] drawn as solid grey vertical lines (e.g. a
    class threshold), the range widened to show them. The range leaves out far outliers
    (:data:`OUTLIER_IQR`, :data:`OUTLIER_SHARE`): they are counted at the edge they lie beyond (a grey triangle, their
    values on hover) and in the legend.
    Several series are drawn as outlined, semi-transparent bars over the same bins, each with its
    median as a dashed line; non-finite values are left out and counted in the legend.
    """
    cleaned = []
    for label, values, colour in series:
        v = np.asarray(values, np.float64).ravel()
        cleaned.append((label, v[np.isfinite(v)], int((~np.isfinite(v)).sum()), colour))
    every = np.concatenate([v for _, v, _, _ in cleaned]) if cleaned else np.zeros(0)
    lo, hi = _shown_range(every)
    if marks and every.size:
        lo, hi = _range(np.concatenate([[lo, hi], [float(m) for m, _ in marks]]))
    edges = np.linspace(lo, hi, bins + 1)
    counts = [np.histogram(v, edges)[0] for _, v, _, _ in cleaned]
    if share:
        counts = [c / max(1, v.size) for c, (_, v, _, _) in zip(counts, cleaned)]
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
            m = ax.x(float(np.clip(np.median(v), lo, hi)))
            parts.append(f'<line x1="{m:.1f}" y1="{ax.y0}" x2="{m:.1f}" y2="{ax.y1}" '
                         f'stroke="{colour}" stroke-dasharray="4 3" stroke-width="1.5"/>')
    parts += _outlier_marks(ax, every, lo, hi)
    for value, label in marks if every.size else ():
        m = ax.x(float(value))
        parts.append(f'<line x1="{m:.1f}" y1="{ax.y0}" x2="{m:.1f}" y2="{ax.y1}" stroke="{GREY}" '
                     f'stroke-width="1.5"><title>{esc(label)}</title></line>'
                     + (f'<text x="{m - 3:.1f}" y="{ax.y1 + 11}" text-anchor="end" fill="{GREY}">'
                        if m > (ax.x0 + ax.x1) / 2 else
                        f'<text x="{m + 3:.1f}" y="{ax.y1 + 11}" fill="{GREY}">') + f"{esc(label)}</text>")
    for k, (label, v, bad, colour) in enumerate(cleaned):
        y = 30 + 13 * k
        out = int(((v < lo) | (v > hi)).sum())
        note = f"{label}: n={v.size}" + (f", median {fmt(np.median(v))} (dashed)" if v.size
                                         else "") + (f", {out} outside the range" if out else "") \
            + (f", {bad} not finite" if bad else "")
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


def svg_curve(x, y, title: str, xlabel: str, *, log_x: bool = False, width: int = 210,
              height: int = 150, colour: str = BLUE) -> str:
    """One response curve ``y`` ``[P]`` over ``x`` ``[P]`` (e.g. a tuning curve) as a line (about
    1 kB: a page shows three per unit), a grey line at 0 where 0 is in range; ``log_x``: x on a log
    scale, ticked at its first, middle and last values. Non-finite points are not drawn."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y) & ((x > 0) if log_x else True)
    px = np.log(np.where(ok, x, 1.0)) if log_x else x
    ax = _Axes(width, height, _padded(px[ok], 0.03), _padded(y[ok], 0.08), left=46, right=8,
               top=20, bottom=34)
    ticks = True
    if log_x and ok.any():
        picks = sorted({int(i) for i in np.flatnonzero(ok)[[0, ok.sum() // 2, -1]]})
        ticks = [(px[i], fmt(x[i])) for i in picks]
    parts = ax.frame(title, xlabel, "", xticks=ticks)
    lo, hi = ax.ylim
    if lo < 0 < hi:
        parts.append(f'<line x1="{ax.x0}" y1="{ax.y(0):.1f}" x2="{ax.x1}" y2="{ax.y(0):.1f}" '
                     f'stroke="{GREY}" stroke-dasharray="2 2"/>')
    points = [(ax.x(a), ax.y(b)) for a, b in zip(px[ok], y[ok])]
    if len(points) > 1:
        parts.append('<polyline points="' + " ".join(f"{a:.1f},{b:.1f}" for a, b in points)
                     + f'" fill="none" stroke="{colour}" stroke-width="1.5"/>')
    elif points:
        parts.append(f'<circle cx="{points[0][0]:.1f}" cy="{points[0][1]:.1f}" r="2" fill="{colour}"/>')
    return _svg(width, height, parts, title)


def svg_colourbar(lo: float, hi: float, label: str, ident: str, *, height: int = 150, width: int = 84) -> str:
    """The colour bar of a viridis heat map (:func:`jaxvis.report.render.heat`) over ``lo`` .. ``hi``:
    a vertical bar, ``hi`` at the top, the values at its ends and middle, ``label`` beside it;
    ``ident`` names its gradient (unique on the page)."""
    top, bottom, bar = 8, height - 8, 12
    stops = "".join(f'<stop offset="{k / (len(VIRIDIS) - 1):.3f}" stop-color="rgb({r},{g},{b})"/>'
                    for k, (r, g, b) in enumerate(VIRIDIS[::-1].astype(int)))
    parts = [f'<defs><linearGradient id="{esc(ident)}" x1="0" y1="0" x2="0" y2="1">{stops}</linearGradient></defs>',
             f'<rect x="2" y="{top}" width="{bar}" height="{bottom - top}" fill="url(#{esc(ident)})" stroke="#444"/>']
    for value, y in ((hi, top), ((lo + hi) / 2, (top + bottom) / 2), (lo, bottom)):
        parts.append(f'<line x1="{2 + bar}" y1="{y:.1f}" x2="{5 + bar}" y2="{y:.1f}" stroke="#444"/>'
                     f'<text x="{7 + bar}" y="{y + 4:.1f}">{esc(fmt(value))}</text>')
    mid = (top + bottom) / 2
    parts.append(f'<text x="{width - 4}" y="{mid:.1f}" text-anchor="middle" '
                 f'transform="rotate(-90 {width - 4} {mid:.1f})">{esc(label)}</text>')
    return _svg(width, height, parts, f"colour bar: {label}")
