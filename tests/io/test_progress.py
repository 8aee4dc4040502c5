"""Progress: per segment with an ETA that counts the chunk in flight; logs are throttled."""

from __future__ import annotations

import io

from jaxvis.io.progress import Progress


class Log(io.StringIO):
    def isatty(self):
        return False


def test_eta_counts_the_chunk_in_flight_and_logs_are_throttled(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("jaxvis.io.progress.time.perf_counter", lambda: now[0])
    log = Log()
    bar = Progress(stream=log)
    bar.start("conv2_1", 8, 0, steps=100)   # t = 0
    now[0] = 10.0
    bar.advance(0, 200)                     # 2 of 8 units' worth of steps in 10 s -> ETA 30 s
    now[0] = 11.0
    bar.advance(0, 100)                     # within LOG_EVERY_S of the last line: silent
    now[0] = 30.0
    bar.advance(4, 100)                     # a finished chunk always logs: 4 units in 30 s
    lines = log.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert lines[0].endswith("ETA --:--")
    assert "0/8 units" in lines[1] and lines[1].endswith("ETA 0:30")
    assert "4/8 units" in lines[2] and lines[2].endswith("ETA 0:30")
    assert bar.layers[-1]["unit_steps"] == 400 and bar.layers[-1]["units"] == 4
