"""Pictures of a sweep, made from its results file alone (no model, no weights, no GPU).

Per layer two kinds of PNG are written:

- ``<layer>_units.png`` (and ``<layer>_units_p2.png``, ... beyond ``ROWS_PER_PAGE`` units): one row
  per unit: its index, then the single-image maximum, then the N diverse images. Under the maximum
  stands its activation (``12.3``), under each diverse image its activation as a fraction of the
  maximum's (``0.97``; the raw activation where the maximum is not positive). What varies across
  a row is what the unit ignores, so all images of a row share one contrast mapping (below): a
  washed-out image stays washed out next to its neighbours.
- ``<layer>_floor<alpha>.png`` (and ``_p2``, ...) per activation floor of the sweep (``--floor``):
  the same rows with the unit's floor set at ``alpha`` (docs/floor.md) in place of the diverse
  images, each labelled with its activation / the maximum (at least ``alpha``).
- ``<layer>_contact.png``: every unit's maximum in a square-ish grid, labelled with the unit, each
  tile contrast-mapped on its own (units differ in contrast), at most ``CONTACT_MAX_TILE`` px.

Contrast mapping (``to_display``): the 0.5 and 99.5 percentiles ``lo``, ``hi`` of the finite pixel
values of the group (all channels) map linearly to 0 and 255, values beyond are clipped. Optimised
images are grey levels that need not stay in 0..255 and often vary little, so a fixed mapping would
show flat grey; the percentiles keep a few extreme pixels from setting the range. A flat group
(``hi - lo < 1e-3``) is shown as its grey levels clipped to 0..255.

Small canvases (3 px at VGG conv1_1, 10 px at conv2_1) are enlarged by an integer factor with
nearest-neighbour sampling, so every pixel is a visible square: by default the smallest factor
that makes a tile at least ``MIN_TILE`` px. Text uses PIL's built-in default font, no font files.
The pictures are written all or nothing (:func:`jaxvis.io.atomic.write_all`): each PNG to a
temporary name as it is drawn, renamed only when every one is complete, so an error or a killed
render leaves the folder as it was (a folder it created is removed again). File names are unique
per layer (:func:`jaxvis.store.results.file_stems`), whatever the layers' names.

The report uses the same building blocks for its image files: :func:`to_display`, :func:`heat` (a
viridis heat map) and :func:`png_tile` (a tile enlarged or shrunk to about a target size).
"""

from __future__ import annotations

import io
import json
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxvis.errors import JaxvisError
from jaxvis.io.atomic import write_all, write_bytes
from jaxvis.store.results import file_stems, open_results, unknown_layer

MIN_TILE = 64
ROWS_PER_PAGE = 64
CONTACT_MAX_TILE = 128
PAD = 4
LOW_PERCENTILE, HIGH_PERCENTILE = 0.5, 99.5
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)
NEEDED = ("unit", "images", "activations", "max_image", "max_activation")


def check_needed(group, layer: str, path: Path, needs: str) -> None:
    """Raise a one-line error if the results ``group`` of ``layer`` lacks a dataset of
    :data:`NEEDED`, the arrays every picture and report page is drawn from (``needs``: who
    needs them, e.g. "pictures need")."""
    missing = [k for k in NEEDED if k not in group]
    if missing:
        raise JaxvisError(f"layer {layer} of {path} has no {', '.join(missing)}; {needs} {', '.join(NEEDED)}")


def to_display(pixels: np.ndarray) -> np.ndarray:
    """Grey levels of any range -> uint8 for display (see the module docstring); same shape."""
    x = np.asarray(pixels, dtype=np.float64)
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return np.zeros(x.shape, np.uint8)
    lo, hi = np.percentile(finite, [LOW_PERCENTILE, HIGH_PERCENTILE])
    if hi - lo < 1e-3:
        mapped = x
    else:
        mapped = (x - lo) * (255.0 / (hi - lo))
    mapped = np.nan_to_num(mapped, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(mapped), 0, 255).astype(np.uint8)


def enlarge(image: np.ndarray, scale: int) -> np.ndarray:
    """``[H, W, 3]`` -> ``[H * scale, W * scale, 3]``, nearest neighbour (every pixel a square)."""
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)


def png_tile(pixels: np.ndarray, target: int) -> tuple[bytes, int, int]:
    """uint8 ``[H, W, 3]`` or ``[H, W]`` as (PNG bytes, width, height), about ``target`` px on
    its longer side.

    Smaller images are enlarged by an integer factor with nearest-neighbour sampling (every pixel
    a square); larger ones are shrunk to fit ``target`` (box filter).
    """
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    height, width = pixels.shape[:2]
    side = max(height, width, 1)
    if side < target:
        pixels = enlarge(pixels, max(1, target // side))
    elif side > target * 1.5:
        from PIL import Image

        k = target / side
        size = (max(1, round(width * k)), max(1, round(height * k)))
        pixels = np.asarray(Image.fromarray(pixels).resize(size, Image.BOX))
    return png_encode(pixels), pixels.shape[1], pixels.shape[0]


def png_encode(pixels: np.ndarray) -> bytes:
    """uint8 ``[H, W, 3]`` (RGB) or ``[H, W]`` (grey) as PNG bytes.

    Written here rather than through Pillow: a report holds thousands of small tiles, and for
    those Pillow's per-image overhead is most of the time (a 95 px tile of a 5 px canvas: 1.8 ms
    with Pillow, 0.12 ms here, 603 bytes instead of 432). zlib level 1: enlarged tiles are runs
    of equal pixels that every level compresses well, level 6 takes four times as long.
    """
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    height, width = pixels.shape[:2]
    colour = 2 if pixels.ndim == 3 else 0
    rows = pixels.reshape(height, -1)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1)  # filter 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), 1)) + chunk(b"IEND", b""))


def _encode(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# viridis at 9 points; linear interpolation in between
VIRIDIS = np.array([[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
                     [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]], np.float64)


def heat(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    """A 2-D array as a viridis heat map over its finite range: (uint8 ``[H, W, 3]``, lo, hi)."""
    x = np.asarray(values, np.float64)
    finite = x[np.isfinite(x)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    t = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    t = np.clip(np.nan_to_num(t, nan=0.0), 0.0, 1.0) * (len(VIRIDIS) - 1)
    i = np.minimum(np.floor(t).astype(int), len(VIRIDIS) - 2)
    f = (t - i)[..., None]
    rgb = VIRIDIS[i] * (1 - f) + VIRIDIS[i + 1] * f
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8), lo, hi


def default_scale(height: int, width: int) -> int:
    """The smallest integer factor that makes a ``height`` x ``width`` tile >= ``MIN_TILE`` px."""
    return max(1, math.ceil(MIN_TILE / max(1, min(height, width))))


def _font():
    from PIL import ImageFont
    return ImageFont.load_default()


def _text_size(font, text: str) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text)
    return right - left, bottom


@dataclass(frozen=True)
class RowLayout:
    """Geometry of a ``_units`` page: where each tile of each row lands, in pixels.

    Columns: the unit label (``label_w`` wide), then ``1 + n`` cells of ``cell_w`` (column 0 the
    maximum, 1..n the diverse images), separated and surrounded by ``PAD``. Each row is the tile
    (``tile_h`` high, centred in its cell) with a text line of ``text_h`` below it, then ``PAD``.
    A header line of ``header_h`` sits on top.
    """

    tile_h: int
    tile_w: int
    cell_w: int
    label_w: int
    text_h: int
    header_h: int
    columns: int

    @property
    def row_h(self) -> int:
        return self.tile_h + self.text_h + PAD

    def width(self, header_w: int = 0) -> int:
        grid = PAD + self.label_w + self.columns * (self.cell_w + PAD)
        return max(grid, header_w + 2 * PAD)

    def height(self, rows: int) -> int:
        return self.header_h + PAD + rows * self.row_h

    def tile_origin(self, row: int, column: int) -> tuple[int, int]:
        """(x, y) of the top-left pixel of the tile at ``row``, ``column`` (0 = the maximum)."""
        x = PAD + self.label_w + column * (self.cell_w + PAD) + (self.cell_w - self.tile_w) // 2
        return x, self.header_h + PAD + row * self.row_h


def row_layout(height: int, width: int, n: int, scale: int, units, font=None) -> RowLayout:
    font = font or _font()
    text_w, text_h = _text_size(font, "-0.00e+00")  # the widest number label used
    label_w = max(_text_size(font, str(int(u)))[0] for u in units) + PAD if len(units) else 0
    return RowLayout(tile_h=height * scale, tile_w=width * scale,
                     cell_w=max(width * scale, text_w), label_w=label_w, text_h=text_h + 4,
                     header_h=text_h + 6, columns=n + 1)


def _number(value: float) -> str:
    return f"{value:.3g}"


def _fraction(value: float, maximum: float) -> str:
    if np.isfinite(maximum) and maximum > 0:
        return f"{value / maximum:.2f}"
    return _number(value)


def _centred_text(draw, font, x: int, width: int, y: int, text: str) -> None:
    text_w, _ = _text_size(font, text)
    draw.text((x + (width - text_w) // 2, y), text, fill=INK, font=font)


def _units_page(layer: str, page: int, pages: int, units, images, activations, max_image,
                max_activation, scale: int, what: str = "diverse images"):
    """One ``_units`` (or floor-set) page as a PIL image: rows of [maximum, ``images``...];
    ``what`` names the images in the header."""
    from PIL import Image, ImageDraw

    font = _font()
    count, n, height, width = images.shape[:4]
    layout = row_layout(height, width, n, scale, units, font)
    header = (f"{layer}: unit, single-image maximum (activation), {n} {what} "
              f"(activation / maximum)" + (f"  page {page}/{pages}" if pages > 1 else ""))
    sheet = Image.new("RGB", (layout.width(_text_size(font, header)[0]), layout.height(count)),
                      BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    draw.text((PAD, PAD), header, fill=INK, font=font)
    for row in range(count):
        shown = to_display(np.concatenate([max_image[row][None], images[row]]))  # one mapping
        for column in range(n + 1):
            x, y = layout.tile_origin(row, column)
            sheet.paste(Image.fromarray(enlarge(shown[column], scale)), (x, y))
            text = (_number(max_activation[row]) if column == 0
                    else _fraction(activations[row, column - 1], max_activation[row]))
            cell_x = x - (layout.cell_w - layout.tile_w) // 2
            _centred_text(draw, font, cell_x, layout.cell_w, y + layout.tile_h + 2, text)
        _, y = layout.tile_origin(row, 0)
        _, text_h = _text_size(font, str(int(units[row])))
        draw.text((PAD, y + (layout.tile_h - text_h) // 2), str(int(units[row])), fill=INK,
                  font=font)
    return sheet


def _contact_sheet(layer: str, group, scale: int):
    """Every unit's maximum image in a square-ish grid, read ``ROWS_PER_PAGE`` units at a time."""
    from PIL import Image, ImageDraw

    font = _font()
    units = np.asarray(group["unit"][()])
    count, height, width = group["max_image"].shape[:3]
    tile_h, tile_w = height * scale, width * scale
    shrink = min(1.0, CONTACT_MAX_TILE / max(tile_h, tile_w))
    tile_h, tile_w = max(1, round(tile_h * shrink)), max(1, round(tile_w * shrink))
    text_w, text_h = _text_size(font, str(int(units.max())) if count else "0")
    cell_w, cell_h = max(tile_w, text_w) + PAD, tile_h + text_h + 4 + PAD
    columns = max(1, math.ceil(math.sqrt(count)))
    rows = max(1, math.ceil(count / columns))
    header = f"{layer}: single-image maximum of each unit"
    header_h = text_h + 6
    sheet = Image.new("RGB", (max(PAD + columns * cell_w, _text_size(font, header)[0] + 2 * PAD),
                              header_h + PAD + rows * cell_h), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    draw.text((PAD, PAD), header, fill=INK, font=font)
    for start in range(0, count, ROWS_PER_PAGE):
        block = group["max_image"][start:start + ROWS_PER_PAGE]
        for offset, image in enumerate(block):
            i = start + offset
            x = PAD + (i % columns) * cell_w
            y = header_h + PAD + (i // columns) * cell_h
            tile = Image.fromarray(enlarge(to_display(image), scale))
            if tile.size != (tile_w, tile_h):
                tile = tile.resize((tile_w, tile_h), Image.BOX)
            sheet.paste(tile, (x + (cell_w - PAD - tile_w) // 2, y))
            _centred_text(draw, font, x, cell_w - PAD, y + tile_h + 2, str(int(units[i])))
    return sheet


def render(results_path: Path, out_dir: Path, *, layers: list[str] | None = None,
           scale: int | None = None) -> list[Path]:
    """Write the pictures of ``results_path`` (all layers, or ``layers``) into ``out_dir``.

    ``scale``: the integer enlargement of every image (default: tiles of at least ``MIN_TILE``
    px). Returns the written paths: per layer its ``_units`` pages, its floor-set pages (one
    series per floor), then its contact sheet.
    """
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, int) or scale < 1):
        raise JaxvisError(f"scale must be a positive integer, not {scale!r}")
    results_path, out_dir = Path(results_path), Path(out_dir)
    with open_results(results_path) as f:
        names = list(f["layers"])
        for name in layers or []:
            if name not in f["layers"]:
                raise unknown_layer(results_path, name, names)
        chosen = list(dict.fromkeys(layers)) if layers is not None else names
        for name in chosen:
            check_needed(f["layers"][name], name, results_path, "pictures need")
        stems = file_stems(names)  # of every layer, so a layer's names do not depend on --layer
        return write_all((path, _encode(draw())) for name in chosen
                         for path, draw in _render_layer(name, f["layers"][name], out_dir / stems[name], scale))


def pictures_folder(results_path: Path) -> Path:
    """Where ``jaxvis sweep`` and ``jaxvis render`` put a results file's pictures by default: its
    name without the suffix (``x.h5`` -> ``x/``), or with ``_pictures`` added where it has none."""
    results_path = Path(results_path)
    return results_path.with_suffix("") if results_path.suffix else \
        results_path.with_name(results_path.name + "_pictures")


def _render_layer(name: str, group, prefix: Path, scale: int | None):
    """(path, draw) per picture of one layer, its files named ``<prefix>_...``, drawn when asked
    (one page in memory at a time)."""
    images = group["images"]
    if images.ndim != 5 or images.shape[-1] != 3 or group["max_image"].ndim != 4:
        raise JaxvisError(f"layer {name}: images must be [units, N, H, W, 3] and max_image "
                          f"[units, H, W, 3], not {images.shape} and {group['max_image'].shape}")
    count, _, height, width = images.shape[:4]
    if count == 0:
        return
    scale = scale or default_scale(height, width)
    units = np.asarray(group["unit"][()])
    pages = math.ceil(count / ROWS_PER_PAGE)

    def page_sheet(page: int, floor: int | None):
        rows = slice((page - 1) * ROWS_PER_PAGE, min(count, page * ROWS_PER_PAGE))
        if floor is None:
            shown, acts, what = images[rows], group["activations"][rows], "diverse images"
        else:
            shown, acts = group["floor_images"][rows, floor], group["floor_activations"][rows, floor]
            what = f"images of the floor set at {floors[floor]:g} (all keep >= {floors[floor]:g} x the maximum)"
        return _units_page(name, page, pages, units[rows], np.asarray(shown), np.asarray(acts, np.float64),
                           group["max_image"][rows], np.asarray(group["max_activation"][rows], np.float64),
                           scale, what)

    floors = stored_floors(group, count)
    for floor, kind in [(None, "units"), *((k, f"floor{a:g}") for k, a in enumerate(floors))]:
        for page in range(1, pages + 1):
            suffix = "" if page == 1 else f"_p{page}"
            yield (prefix.with_name(f"{prefix.name}_{kind}{suffix}.png"),
                   lambda page=page, floor=floor: page_sheet(page, floor))
    yield prefix.with_name(f"{prefix.name}_contact.png"), lambda: _contact_sheet(name, group, scale)


def stored_floors(group, count: int) -> list[float]:
    """The activation floors of a layer's floor sets (layer metadata ``floors``), where its
    ``floor_images`` ``[U, floors, N, H, W, 3]`` and ``floor_activations`` ``[U, floors, N]`` are
    there and agree with them; empty otherwise (a sweep without ``--floor``)."""
    try:
        floors = json.loads(group.attrs["meta"]).get("floors") or []
    except (KeyError, TypeError, ValueError, AttributeError):
        return []
    if not isinstance(floors, list) or not all(isinstance(a, (int, float)) for a in floors) \
            or "floor_images" not in group or "floor_activations" not in group:
        return []
    shape = group["floor_images"].shape
    ok = (len(shape) == 6 and shape[:2] == (count, len(floors)) and shape[-1] == 3
          and group["floor_activations"].shape == shape[:3])
    return [float(a) for a in floors] if ok else []


def save_images(images, path: Path, *, scale: int | None = None, gap: int = 2) -> Path:
    """Save images as one PNG grid: ``[H, W, 3]``, a row ``[N, H, W, 3]`` or rows
    ``[U, N, H, W, 3]`` (e.g. ``jaxvis.sweep(...)[layer]["images"]``) or floor sets as stored,
    ``[U, floors, N, H, W, 3]`` (a row per unit and floor), RGB grey levels of any range.

    Each row shares one contrast mapping (:func:`to_display`: what varies along a row is what the
    unit ignores); small canvases are enlarged by ``scale`` (default: tiles of at least
    ``MIN_TILE`` px), ``gap`` px of white between tiles. Written atomically; returns ``path``.
    """
    x = np.asarray(images, np.float32)
    if x.ndim == 3:
        x = x[None, None]
    elif x.ndim == 4:
        x = x[None]
    elif x.ndim == 6:  # floor sets as stored, [U, floors, N, H, W, 3]: a row per unit and floor
        x = x.reshape(-1, *x.shape[2:])
    if x.ndim != 5 or x.shape[-1] != 3:
        raise JaxvisError(f"images must be [H, W, 3], [N, H, W, 3], [U, N, H, W, 3] or floor sets [U, floors, N, "
                          f"H, W, 3] RGB, not {list(np.shape(images))}")
    rows, n, height, width, _ = x.shape
    scale = scale or default_scale(height, width)
    th, tw = height * scale, width * scale
    grid = np.full((rows * (th + gap) - gap, n * (tw + gap) - gap, 3), 255, np.uint8)
    for r in range(rows):
        shown = to_display(x[r])
        for i in range(n):
            grid[r * (th + gap): r * (th + gap) + th, i * (tw + gap): i * (tw + gap) + tw] = enlarge(shown[i], scale)
    path = Path(path)
    try:
        return write_bytes(path, png_encode(grid))
    except OSError as err:
        raise JaxvisError(f"cannot write picture {path}: {err.strerror or err}") from None
