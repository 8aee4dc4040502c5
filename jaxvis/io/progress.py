"""Progress of a sweep or an analysis stage: a one-line bar on a terminal, plain log lines otherwise,
and what a library caller's ``progress=`` asks for (:meth:`Progress.of`).

The ETA is measured, never guessed. Work is counted in what the device computes (e.g. image-steps:
rows x images x steps of every compiled segment, stopped rows included, since they still compute).
The time of a compiled call outside its warm segments (its first segment: placing the inputs and
compiling; what follows its last one: evaluating) is its overhead; the first call of each program
(:meth:`Progress.begin`) compiles, and its overhead beyond the warm rate is its compile time. Until
one warm segment is done the bar says ``measuring``. The work still to do is the units left times
the work a unit takes: the stage's bound (every call running all its steps) until a chunk is
finished, then what finished units really took (early stopping included). It is timed at the warm
rate plus the measured compile time of every program not compiled yet while the first chunk runs,
then at the rate of the finished chunks, compile time excluded (every program is compiled by
then). Within a chunk the work left only shrinks, so the ETA does not grow unless a measured rate
falls.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Status:
    """One update: ``done`` of ``total`` units of ``layer`` (a layer or a stage such as
    ``conv2_1 shift test``), ``fraction`` of the work done, ``elapsed`` seconds, ``eta`` seconds
    left (None while measuring), ``rate`` unit-steps per second."""

    layer: str
    done: int
    total: int
    fraction: float
    elapsed: float
    eta: float | None
    rate: float

    def line(self) -> str:
        eta = "measuring" if self.eta is None else f"{int(self.eta // 60)}:{int(self.eta % 60):02d}"
        return (f"{self.layer}: {self.done}/{self.total} units ({100 * self.fraction:.0f}%), "
                f"{self.rate:,.0f} unit-steps/s, elapsed {self.elapsed:.0f}s, ETA {eta}")


class Progress:
    """Call :meth:`start` per layer (or stage); :meth:`begin` before each compiled call;
    :meth:`advance` after every segment (``unit_steps`` the units' optimiser steps, ``work`` what
    the device computed) and with ``units`` when a chunk is finished. On a terminal one line is
    redrawn; elsewhere (logs) a line is written at most every ``LOG_EVERY_S`` seconds and at every
    finished chunk. ``callback`` hears every :class:`Status`; ``clock`` is the time source."""

    LOG_EVERY_S = 10.0

    def __init__(self, stream=None, enabled: bool = True, clock: Callable[[], float] = time.perf_counter,
                 callback: Callable[[Status], None] | None = None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.clock = clock
        self.callback = callback
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.layers: list[dict] = []  # per layer: units computed, unit-steps, seconds (this run)

    @classmethod
    def of(cls, progress: "bool | Progress | Callable[[Status], None] | None") -> "Progress":
        """A library call's ``progress=``: a Progress as it is; True: the bar the CLI shows, on
        stderr; a callable: called with every :class:`Status`, nothing printed; False: silence."""
        if isinstance(progress, Progress):
            return progress
        if callable(progress):
            return cls(enabled=False, callback=progress)
        return cls(enabled=bool(progress))

    def start(self, layer: str, total: int, done: int, work: float | None = None, programs: int = 1) -> None:
        """``total`` units, ``done`` of them already (resumed); ``work``: the most work one unit
        takes, in the units :meth:`advance` reports (None: known only once a chunk is finished);
        ``programs``: how many distinct compiled programs the calls of a chunk use."""
        self.layer, self.total, self.done, self.bound, self.programs = layer, total, done, work, programs
        self.layers.append({"layer": layer, "units": 0, "unit_steps": 0, "seconds": 0.0})
        self.t0 = self.last = self.clock()
        self.first, self.unit_steps, self.cold = done, 0, True
        self.inflight = 0.0                    # work of the chunk in flight
        self.finished_work = self.finished_units = 0.0
        self.finished_at = self.t0             # when the last chunk was finished
        self.warm_work = self.warm_seconds = 0.0
        self.seen: set = set()                 # programs called so far
        self.compiles: list[list[float]] = []  # per program's first call: [overhead s, its cold work]
        self.call: list[float] | None = None   # the call in flight's, if it is a program's first
        self.shown = float("-inf")
        self._show(final=False, chunk=True)

    def begin(self, program=None) -> None:
        """A compiled call of ``program`` (any hashable name) begins: the time to its first
        segment (placing, compiling) is overhead, not a measure of the rate."""
        self._overhead(self.clock())
        self.cold = True
        self.call = None
        if program not in self.seen:
            self.seen.add(program)
            self.call = [0.0, 0.0]
            self.compiles.append(self.call)

    def _overhead(self, now: float) -> None:
        """Time since the last event outside a warm segment: the current call's overhead."""
        if self.call is not None:
            self.call[0] += now - self.last
        self.last = now

    def advance(self, units: int, unit_steps: int, work: float = 0.0) -> None:
        now = self.clock()
        if work and not self.cold:
            self.warm_work += work
            self.warm_seconds += now - self.last
            self.last = now
        else:
            if work and self.call is not None:
                self.call[1] += work
            self._overhead(now)
        self.cold = self.cold and not work
        self.done += units
        self.unit_steps += unit_steps
        self.inflight += work
        if units:
            self.finished_work += self.inflight
            self.finished_units += units
            self.finished_at = now
            self.inflight = 0.0
        self.layers[-1].update(units=self.done - self.first, unit_steps=self.unit_steps, seconds=now - self.t0)
        self._show(final=self.done >= self.total, chunk=bool(units))

    def note(self, text: str) -> None:
        """A line of its own (what a stage did), where the bar is shown."""
        if self.enabled:
            self.stream.write(("\n" if self.tty else "") + text + "\n")
            self.stream.flush()

    def status(self) -> Status:
        now = self.clock()
        elapsed = now - self.t0
        per_unit = self.finished_work / self.finished_units if self.finished_units else self.bound
        left = self.total - self.done
        if per_unit:
            fraction = 1 - max(left * per_unit - self.inflight, 0.0) / max(self.total * per_unit, 1e-12)
        else:
            fraction = self.done / max(self.total, 1)
        eta = None
        if not left:
            eta = 0.0
        elif per_unit and self.warm_work and self.warm_seconds > 0:
            warm = self.warm_seconds / self.warm_work  # seconds per work
            compiling = [max(s - w * warm, 0.0) for s, w in self.compiles if w]
            work_left = max(left * per_unit - self.inflight, 0.0)
            spent = self.finished_at - self.t0 - sum(compiling)
            if self.finished_units and spent > 0:
                eta = work_left * spent / self.finished_work
            else:
                pending = max(self.programs - len(self.seen), 0)
                eta = work_left * warm + pending * (sum(compiling) / len(compiling) if compiling else 0.0)
        rate = self.unit_steps / elapsed if elapsed > 0 else 0.0
        return Status(self.layer, self.done, self.total, min(max(fraction, 0.0), 1.0), elapsed, eta, rate)

    def _show(self, final: bool, chunk: bool) -> None:
        if not (self.enabled or self.callback):
            return
        status = self.status()
        if self.callback is not None:
            self.callback(status)
        if not self.enabled:
            return
        now = self.clock()
        if not self.tty and not chunk and now - self.shown < self.LOG_EVERY_S:
            return
        self.shown = now
        if self.tty:
            width = 24
            filled = int(width * status.fraction)
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {status.line()}\033[K")
            if final:
                self.stream.write("\n")
        else:
            self.stream.write(status.line() + "\n")
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
