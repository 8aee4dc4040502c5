"""What the benchmarks time: a layer set up exactly as ``jaxvis sweep`` plans it, and the ways of
running it (the sweep's chunks over all devices, one chunk on one device, one unit at a time, the
PyTorch twin), each a ``(row, run)`` pair timed round-robin by :func:`interleaved`."""

from __future__ import annotations

import time

import numpy as np

from benchmarks.machine import CpuMeter


def load_model(name: str):
    """``jaxvis.load(name)``; where the weights store cannot be written or read (a fresh machine
    whose orbax differs), the real file converted in memory instead (the same network, uncached),
    so a device run never fails on the cache alone."""
    import jaxvis

    try:
        return jaxvis.load(name)
    except Exception as err:  # noqa: BLE001 - any failure of the cache, not of the weights
        from jaxvis.convert.fetch import fetch_weight_file
        from jaxvis.convert.sources import convert_file
        from jaxvis.weights import DERIVED, Model, default_photos, weights_root

        if name in DERIVED:  # e.g. vgg19-normalized: derived from its base in memory, the same way
            from jaxvis.convert.normalize import normalize

            print(f"note: jaxvis.load({name!r}) failed ({type(err).__name__}: {err}); deriving it in memory",
                  flush=True)
            return normalize(load_model(DERIVED[name][0]), default_photos())
        raw, spec = fetch_weight_file(name, weights_root() / "files")
        network, src, provenance = convert_file(raw, source=spec["source"])
        print(f"note: jaxvis.load({name!r}) failed ({type(err).__name__}: {err}); converted {raw.name} "
              "in memory instead", flush=True)
        return Model(network, src.convention, {"model": src.model.to_json(), "name": name,
                                               "convention": src.convention.to_json(), **provenance})


def layer_problem(model, layer: str, images: int, steps: int, precision: str = "float32",
                  segment: int | None = None, patience: int = 10 ** 9):
    """The sweep's own plan for ``layer`` (feature layer, canvas, radius exactly as ``jaxvis
    sweep`` resolves them), by default with early stopping disabled so every unit runs all
    ``steps``."""
    from jaxvis.optimize.config import Objective, Optimizer
    from jaxvis.run.plan import configure, plan

    extra = {} if segment is None else {"segment": segment}
    optimizer = Optimizer(steps=steps, patience=patience, precision=precision, **extra)
    return plan(model, configure(model, layer, "0", objective=Objective(images=images), optimizer=optimizer))[0]


def unit_inputs(lp, units: list[int]):
    """(keys ``[U]``, one-hot directions ``[U, C]``) of ``units`` as the sweep makes them; unit
    numbers past the layer's channels wrap around (benchmarks may time more units than it has)."""
    import jax.numpy as jnp

    from jaxvis.optimize.keys import unit_key

    channels = lp.info.channels
    units = [u % channels for u in units]
    keys = jnp.stack([unit_key(0, lp.info.name, u, lp.diverse.n) for u in units])
    return keys, np.eye(channels, dtype=np.float32)[units]


def interleaved(variants: list[tuple[dict, object]], repeats: int, on_pass=None) -> list[dict]:
    """Time ``repeats`` passes of every variant, round-robin (pass 1 of each, then pass 2 ...), so a
    machine whose speed drifts (other tenants, clocks) drifts for all of them alike. ``variants``:
    (row, run) with ``run()`` -> (unit-steps, mean final loss). Each row gets its best pass (the
    least disturbed), every pass's seconds and the other load during the best one. ``on_pass(row,
    seconds, others)``, if given, is called after every pass (progress of a long run)."""
    passes = [[] for _ in variants]
    for _ in range(repeats):
        for (row, run), mine in zip(variants, passes):
            with CpuMeter() as cpu:
                t = time.perf_counter()
                unit_steps, loss = run()
                seconds = time.perf_counter() - t
            mine.append((seconds, cpu.others, unit_steps, loss))
            if on_pass is not None:
                on_pass(row, seconds, cpu.others)
    rows = []
    for (row, _), mine in zip(variants, passes):
        seconds, others, unit_steps, loss = min(mine, key=lambda p: p[0])
        row = {**row, "unit_steps": unit_steps, "seconds": seconds, "repeats_s": [p[0] for p in mine],
               "others_busy_cores": others, "final_loss_mean": loss}
        if "first_call_s" in row:
            row["compile_s"] = max(row["first_call_s"] - seconds, 0.0)  # the first pass compiled too
        rows.append(row)
    return rows


def auto_chunk(model, lp, mesh, units: int) -> int:
    """The chunk ``jaxvis sweep`` would use for ``units`` units of ``lp`` on ``mesh``."""
    from jaxvis.optimize.loop import units_per_chunk
    from jaxvis.run.sweep import chunk_size

    return chunk_size(units_per_chunk(model.network, lp.diverse, mesh.devices.flat[0], mesh.size),
                      units, mesh.size)


def jaxvis_run(model, lp, units: int, mesh, chunk: int):
    """``run()`` -> (unit-steps, mean final loss, outputs): ``units`` units through ``optimize``
    in chunks of ``chunk`` spread over ``mesh``, what ``jaxvis sweep`` runs per problem."""
    from jaxvis.optimize.loop import optimize

    keys, directions = unit_inputs(lp, list(range(units)))

    def run():
        outs = [optimize(model.network, lp.diverse, keys[i:i + chunk], directions[i:i + chunk], lp.radius, mesh)
                for i in range(0, units, chunk)]
        out = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
        return int(out["steps"].sum()), float(np.mean(out["loss"])), out

    return run


def jaxvis_variant(model, lp, units: int, mesh, label: str, chunk: int | None = None):
    """(row, run): ``units`` units through ``optimize`` in chunks of ``chunk`` (default: the sweep's
    own chunk for ``mesh``, ``units_per_chunk``) spread over ``mesh``: what ``jaxvis sweep`` runs.
    One untimed pass here (compile + run)."""
    chunk = auto_chunk(model, lp, mesh, units) if chunk is None else chunk
    full = jaxvis_run(model, lp, units, mesh, chunk)

    def run():
        return full()[:2]

    t = time.perf_counter()
    run()
    first = time.perf_counter() - t
    return {"variant": label, "units": units, "chunk": chunk, "devices": mesh.size,
            "steps": lp.diverse.optimizer.steps, "first_call_s": first}, run


def torch_variant(model, lp, units: int, threads: int):
    """(row, run): the torch twin, ``units`` units one after another from jaxvis's starts, after
    the check of its objective against jaxvis's and a short warm-up."""
    from benchmarks.machine import torch_or_none
    from benchmarks.torch_twin import TorchUnit, compare, time_units
    from jaxvis.optimize import step as unit_step

    torch_or_none().set_num_threads(threads)
    twin = TorchUnit(model, lp.diverse, lp.radius)
    steps = lp.diverse.optimizer.steps
    keys, directions = unit_inputs(lp, list(range(units)))
    check = compare(model, lp.diverse, lp.radius, twin, keys[0], directions[0])
    starts = [np.asarray(unit_step.init(k, lp.diverse).z) for k in keys]  # the same starts as jaxvis
    twin.run(starts[0], directions[0], min(steps, 20))  # warm: allocator, oneDNN primitive caches

    def run():
        row = time_units(twin, starts, directions, steps)
        return row["unit_steps"], row["final_loss_mean"]

    return {"variant": "torch per-unit", "units": units, "steps": steps, "threads": threads,
            "check": check}, run
