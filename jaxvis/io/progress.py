"""Progress of a sweep: a one-line bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time


class Progress:
    """Call :meth:`start` per layer (or stage), :meth:`advance` as work is done: with
    ``unit_steps`` only while a chunk is in flight (after every compiled segment), with ``units``
    when a chunk is finished. On a terminal one line is redrawn; elsewhere (logs) a line is written
    at most every ``LOG_EVERY_S`` seconds and at every finished chunk."""

    LOG_EVERY_S = 10.0

    def __init__(self, stream=None, enabled: bool = True):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.layers: list[dict] = []  # per layer: units computed, unit-steps, seconds (this run)

    def start(self, layer: str, total: int, done: int, steps: int | None = None) -> None:
        """``total`` units, ``done`` of them already (resumed); ``steps``: the most optimiser
        steps a unit takes, so the ETA counts a chunk in flight (an upper bound with early stop)."""
        self.layer, self.total, self.done, self.steps = layer, total, done, steps
        self.layers.append({"layer": layer, "units": 0, "unit_steps": 0, "seconds": 0.0})
        self.t0, self.unit_steps, self.first, self.inflight = time.perf_counter(), 0, done, 0
        self.shown = float("-inf")
        self._show(final=False, chunk=True)

    def advance(self, units: int, unit_steps: int) -> None:
        self.done += units
        self.unit_steps += unit_steps
        self.inflight = 0 if units else self.inflight + unit_steps
        self.layers[-1].update(units=self.done - self.first, unit_steps=self.unit_steps,
                               seconds=time.perf_counter() - self.t0)
        self._show(final=self.done >= self.total, chunk=bool(units))

    def _show(self, final: bool, chunk: bool) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not self.tty and not chunk and now - self.shown < self.LOG_EVERY_S:
            return
        self.shown = now
        elapsed = now - self.t0
        rate = self.unit_steps / elapsed if elapsed > 0 else 0.0
        partial = self.inflight / self.steps if self.steps else 0.0  # units' worth in flight
        new = self.done - self.first + partial
        eta = elapsed / new * max(self.total - self.done - partial, 0.0) if new else float("nan")
        eta_s = "--:--" if eta != eta else f"{int(eta // 60)}:{int(eta % 60):02d}"
        text = (f"{self.layer}: {self.done}/{self.total} units, {rate:,.0f} unit-steps/s, "
                f"elapsed {elapsed:.0f}s, ETA {eta_s}")
        if self.tty:
            width = 24
            filled = int(width * self.done / max(self.total, 1))
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {text}\033[K")
            if final:
                self.stream.write("\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def summary(layers: list[dict]) -> list[str]:
    """Lines of a whole-run report: time and unit-steps/s per layer, then the total."""
    lines = []
    for r in layers:
        rate = r["unit_steps"] / r["seconds"] if r["seconds"] else 0.0
        lines.append(f"  {r['layer']:<16}{r['units']:>6} units {r['seconds']:>9.1f} s {rate:>10,.0f} unit-steps/s")
    total_s = sum(r["seconds"] for r in layers)
    total_steps = sum(r["unit_steps"] for r in layers)
    lines.append(f"  {'total':<16}{sum(r['units'] for r in layers):>6} units {total_s:>9.1f} s "
                 f"{(total_steps / total_s if total_s else 0):>10,.0f} unit-steps/s")
    return lines
