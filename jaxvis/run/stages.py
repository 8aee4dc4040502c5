"""Where `jaxvis analyze`'s time goes: the wall seconds of each stage of a layer's analysis, and
the table printed at the end.

A stage's time is taken once its outputs are on the host (:func:`timed` waits for every jax array
it returns), so jax's asynchronous dispatch cannot move a stage's device time into the next one.
The seconds are stored with the layer's metrics (the ``stage_seconds`` attribute of
``/layers/<layer>/metrics``, docs/results-format.md) and returned in
:attr:`jaxvis.run.analyze.Analysis.seconds`.
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

import jax

# the stages of jaxvis.run.analyze.analyze_layer, in the order they run (a skipped one is absent)
STAGES = ("reference", "calibrate", "gratings", "phase_rotation", "shift", "metrics")
T = TypeVar("T")


def timed(seconds: dict[str, float], stage: str, compute: Callable[[], T]) -> T:
    """``compute()``, its wall seconds (until every array it returns is ready) added to
    ``seconds[stage]``."""
    start = time.perf_counter()
    out = jax.block_until_ready(compute())
    seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - start
    return out


def table(seconds: dict[str, dict[str, float]], units: dict[str, int]) -> list[str]:
    """Lines of the end-of-analysis table: per layer (``seconds[layer][stage]``, ``units[layer]``)
    its seconds per stage and their total, then the same per unit; a last row sums the layers."""
    stages = [s for s in STAGES if any(s in v for v in seconds.values())]
    stages += sorted({s for v in seconds.values() for s in v} - set(stages))
    widths = [max(9, len(s) + 2) for s in stages] + [9]
    head = f"  {'layer':<16}{'units':>6}" + "".join(f"{s:>{w}}" for s, w in zip([*stages, "total"], widths))

    def row(label: str, count: str, values: dict[str, float], per: int = 1) -> str:
        cells = [values.get(s) for s in stages] + [sum(values.values())]
        return f"  {label:<16}{count:>6}" + "".join(
            f"{'-':>{w}}" if v is None else f"{v / max(per, 1):>{w}.2f}" for v, w in zip(cells, widths))

    lines = ["seconds per analysis stage (and per unit):", head]
    for layer, values in seconds.items():
        lines += [row(layer, str(units[layer]), values), row("  per unit", "", values, units[layer])]
    if len(seconds) > 1:
        total = {s: sum(v[s] for v in seconds.values() if s in v) for s in stages}
        lines.append(row("total", str(sum(units[layer] for layer in seconds)), total))
    return lines
