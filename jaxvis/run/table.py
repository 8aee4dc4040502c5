"""The metrics table of an analysed results file: ``<file>.csv`` beside it, one row per unit."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from jaxvis.analysis import metrics as metric_table
from jaxvis.analysis.readout import class_text
from jaxvis.errors import JaxvisError
from jaxvis.io.atomic import write_with


def csv_path(path: Path) -> Path:
    """The metrics table of results file ``path``: ``<path>.csv`` beside it, refused where that
    is the results file itself (``x.csv``), which writing the table would replace."""
    table = path.with_suffix(".csv")
    if table == path or (table.exists() and os.path.samefile(table, path)):
        raise JaxvisError(f"results file {path} ends in .csv, the name its metrics table would take; "
                          f"rename it (e.g. to {path.with_suffix('.h5').name}) and run again")
    return table


def export_csv(path: Path, layers: dict, analysed: dict, meta: dict) -> Path:
    """One row per (layer, unit) with every scalar metric of the table (columns sorted by name)
    and every per-floor one (``[units, floors]``: a column ``name@alpha`` per floor of the layers'
    metadata ``floors``, e.g. ``floor_agreement@0.9``). The read-out's classes (``phase_class``,
    ``diversity_class@alpha``, ...) are written as their names (``complex-like``; ``unknown``
    where a unit has none), never as codes."""
    names = sorted(metric_table.scalar_names({k for values in analysed.values() for k in values}))
    alphas = sorted({float(a) for m in meta.values() for a in (m.get("floors") or [])}, reverse=True)
    per_floor = sorted(metric_table.floor_names({k for values in analysed.values() for k in values}))
    columns = [(k, None) for k in names] + [(k, a) for k in per_floor for a in alphas]

    def cell(values: dict, floors: list, k: str, alpha, i: int) -> str:
        if k not in values:
            return ""
        if alpha is None:
            value = values[k][i]
        else:
            at = [j for j, f in enumerate(floors) if abs(float(f) - alpha) < 1e-9]
            if not at:
                return ""
            value = values[k][i, at[0]]
        names = class_text(k, [value])
        return names[0] if names else f"{value:.6g}"

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            heads = [k if a is None else f"{k}@{a:g}" for k, a in columns]
            writer.writerow(["layer", "unit", "max_activation", *heads])
            for layer, values in analysed.items():
                floors = meta.get(layer, {}).get("floors") or []
                for i, unit in enumerate(layers[layer]["unit"]):
                    row = [layer, int(unit), f"{layers[layer]['max_activation'][i]:.6g}"]
                    writer.writerow(row + [cell(values, floors, k, a, i) for k, a in columns])

    table = csv_path(path)
    try:
        return write_with(table, write)
    except OSError as err:
        raise JaxvisError(f"cannot write the metrics table {table}: {err.strerror or err}") from None
