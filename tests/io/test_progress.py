"""Progress: the ETA is measured on warm segments only (compilation is never taken for the rate),
counts the chunk in flight, does not grow inside a chunk, and is within 2x of the real remaining
time of a sweep from its first warm segment on (a real sweep's control flow, its compute replaced
by a cost model on a fake clock, so the test cannot flake); logs are throttled; the library is
quiet unless asked."""

from __future__ import annotations

import importlib
import io
import math

import numpy as np
import pytest

from jaxvis.io.progress import Progress, Status


class Log(io.StringIO):
    def isatty(self):
        return False


def test_eta_waits_for_a_warm_segment_and_counts_the_chunk_in_flight(monkeypatch):
    now = [0.0]
    log = Log()
    bar = Progress(stream=log, clock=lambda: now[0])
    bar.start("conv2_1", 8, 0, work=100)   # t = 0; a unit takes at most 100 work
    bar.begin()
    now[0] = 50.0
    bar.advance(0, 40, 100)                 # first segment: 50 s of compiling, not a rate
    now[0] = 60.0
    bar.advance(0, 40, 100)                 # warm: 100 work in 10 s; 800 - 200 left -> 60 s
    now[0] = 61.0
    bar.advance(0, 40, 100)                 # within LOG_EVERY_S of the last line: silent
    now[0] = 70.0
    bar.advance(4, 0)                       # a finished chunk always logs: 4 units took 300 work
    lines = log.getvalue().splitlines()
    assert len(lines) == 4, lines
    assert lines[0].endswith("ETA measuring") and lines[1].endswith("ETA measuring")
    assert "0/8 units (25%)" in lines[2] and lines[2].endswith("ETA 1:00")
    # the finished units' measured cost (75 a unit, not the bound) for the 4 left: 300 work at
    # the warm rate of 200 work in 11 s
    assert "4/8 units (50%)" in lines[3] and lines[3].endswith("ETA 0:16")
    assert bar.layers[-1]["unit_steps"] == 120 and bar.layers[-1]["units"] == 4


def test_progress_of_what_a_library_call_is_given(capsys):
    seen = []
    assert Progress.of(seen.append).callback is not None and not Progress.of(seen.append).enabled
    assert not Progress.of(False).enabled and Progress.of(True).enabled
    bar = Progress(enabled=False)
    assert Progress.of(bar) is bar
    quiet = Progress.of(seen.append)
    quiet.start("conv1_1", 2, 0, work=10)
    quiet.note("a line nobody asked to see")
    assert isinstance(seen[0], Status) and seen[0].eta is None
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------------------------------------
# a real sweep's control flow on a cost model

SECONDS_PER_IMAGE_STEP = 1e-3
COMPILE_S = 40.0     # per compiled program: a large share of the whole run, as on a CPU
CALL_S = 0.5         # per call: placing inputs, evaluating (outside any segment)


class CostModel:
    """Stands in for :func:`jaxvis.optimize.loop.optimize`: every segment costs its rows' image-steps
    on the fake clock (stopped rows too), the first call of each shape compiles, and a call stops
    early after a share of its segments (a fixed pseudo-random draw per call)."""

    def __init__(self):
        self.now, self.compiled, self.calls = 0.0, set(), 0

    def optimize(self, network, problem, keys, directions, radius, mesh=None, maxima=None, on_segment=None,
                 starts=None, mixes=None):
        rows, n, c = len(directions), problem.n, problem.canvas
        o = problem.optimizer
        shape = (problem, rows)
        self.now += CALL_S + (COMPILE_S if shape not in self.compiled else 0.0)
        self.compiled.add(shape)
        segments = math.ceil(o.steps / o.segment)
        self.calls += 1
        run = max(2, int(segments * (0.6 + 0.4 * ((self.calls * 7919) % 13) / 12)))  # 60-100% of them
        for s in range(run):
            self.now += SECONDS_PER_IMAGE_STEP * rows * n * o.segment
            on_segment(np.full(rows, min((s + 1) * o.segment, o.steps)))
        steps = np.full(rows, run * o.segment, np.int32)
        out = {"images": np.full((rows, n, c, c, 3), 100.0, np.float32),
               "activations": np.ones((rows, n), np.float32),
               "pixel_distances": np.ones((rows, n, n), np.float32),
               "feature_distances": np.ones((rows, n, n), np.float32), "loss": np.zeros(rows, np.float32),
               "loss_curve": np.zeros((rows, segments), np.float32), "steps": steps,
               "stop_reason": np.ones(rows, np.int8)}
        if maxima is not None:
            out.update(feasible=np.ones(rows, bool), diversity=np.ones(rows, np.float32))
        return out


@pytest.mark.usefixtures("weights_env")
def test_eta_of_a_sweep_is_within_2x_of_the_real_remaining_time(vgg19, monkeypatch, capsys):
    from jaxvis.run.sweep import sweep

    model = CostModel()
    monkeypatch.setattr(importlib.import_module("jaxvis.run.sweep"), "optimize", model.optimize)
    monkeypatch.setattr(importlib.import_module("jaxvis.optimize.maximum"), "optimize", model.optimize)
    seen: list[tuple[float, Status]] = []
    bar = Progress(enabled=False, clock=lambda: model.now, callback=lambda s: seen.append((model.now, s)))
    sweep(vgg19, "conv1_1", "0-11", chunk=4, progress=bar, floors=(0.9,), restarts=2, images=3, steps=200,
          segment=25, compile_cache=False)
    end = model.now
    timed = [(t, s) for t, s in seen if s.eta is not None and s.done < s.total]
    assert seen[0][1].eta is None  # nothing measured yet: no guess
    first = next(i for i, (t, s) in enumerate(seen) if s.eta is not None)
    assert first == 2  # start, the cold first segment, then the first warm one has an ETA
    for t, s in timed:  # in the last tenth, seconds of slack (a last call stopping early) are no error
        assert abs(s.eta - (end - t)) < 0.02 * end or 0.5 <= s.eta / (end - t) <= 2, (t, s, end - t)
    for (t0, a), (t1, b) in zip(timed, timed[1:]):
        if a.done == b.done:  # inside one chunk
            assert b.eta <= a.eta + 1e-9, (a, b)
    assert seen[-1][1].done == 12 and seen[-1][1].eta == 0.0
    assert capsys.readouterr().err == ""  # a callback prints nothing


@pytest.mark.usefixtures("weights_env")
def test_library_sweep_is_quiet_unless_asked(vgg19, monkeypatch, capsys):
    from jaxvis.run.sweep import sweep

    model = CostModel()
    monkeypatch.setattr(importlib.import_module("jaxvis.run.sweep"), "optimize", model.optimize)
    monkeypatch.setattr(importlib.import_module("jaxvis.optimize.maximum"), "optimize", model.optimize)
    sweep(vgg19, "conv1_1", "0-1", chunk=2, restarts=1, images=2, steps=50, segment=25, compile_cache=False)
    assert capsys.readouterr().err == ""
    sweep(vgg19, "conv1_1", "0-1", chunk=2, restarts=1, images=2, steps=50, segment=25, compile_cache=False,
          progress=True)
    err = capsys.readouterr().err
    assert "conv1_1: 2/2 units (100%)" in err and "ETA" in err
