"""Progress of a sweep: a one-line bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time


class Progress:
    """Call :meth:`start` per layer and :meth:`advance` per finished chunk."""

    def __init__(self, stream=None, enabled: bool = True):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()

    def start(self, layer: str, total: int, done: int) -> None:
        self.layer, self.total, self.done = layer, total, done
        self.t0, self.unit_steps, self.first = time.perf_counter(), 0, done
        self._show(final=False)

    def advance(self, units: int, unit_steps: int) -> None:
        self.done += units
        self.unit_steps += unit_steps
        self._show(final=self.done >= self.total)

    def _show(self, final: bool) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.t0
        rate = self.unit_steps / elapsed if elapsed > 0 else 0.0
        new = self.done - self.first
        eta = elapsed / new * (self.total - self.done) if new else float("nan")
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
