"""Output of the benchmarks: rates and FLOP/s added to timed rows, markdown tables, and the JSON
file every script writes (``benchmarks/results/<kind>_<host>-<device>_<date>.json`` by default)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def markdown(header: list[str], rows: list[list]) -> str:
    """A markdown table; cells are written with ``str`` (format numbers before)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def finish_rows(rows: list[dict], useful_flops: float, peak_gflops: float) -> None:
    """Add unit-steps/s, GFLOP/s, % of peak and the speed-up over the torch per-unit loop."""
    done = [r for r in rows if "skipped" not in r]
    for r in done:
        r["unit_steps_per_s"] = r["unit_steps"] / r["seconds"]
        r["gflops"] = r["unit_steps_per_s"] * useful_flops / 1e9
        r["pct_peak"] = 100.0 * r["gflops"] / peak_gflops
    ref = next((r for r in done if r["variant"] == "torch per-unit"), None)
    for r in done:
        r["speedup_vs_torch"] = r["unit_steps_per_s"] / ref["unit_steps_per_s"] if ref else None


def sweep_table(layers: list[dict]) -> str:
    """``bench_sweep``'s table: one row per (layer, variant)."""
    header = ["layer", "variant", "units (chunk)", "steps", "seconds", "unit-steps/s", "GFLOP/s",
              "% of matmul peak", "speed-up vs torch per-unit", "other load (cores)"]
    rows = []
    for layer in layers:
        for r in layer["rows"]:
            if "skipped" in r:
                rows.append([layer["layer"], r["variant"], "", "", "", r["skipped"], "", "", "", ""])
                continue
            speed = f"{r['speedup_vs_torch']:.2f}x" if r["speedup_vs_torch"] else "n/a"
            others = "n/a" if r.get("others_busy_cores") is None else f"{r['others_busy_cores']:.2f}"
            units = f"{r['units']} ({r['chunk']})" if "chunk" in r else f"{r['units']}"
            rows.append([layer["layer"], r["variant"], units, r["steps"], f"{r['seconds']:.2f}",
                         f"{r['unit_steps_per_s']:.1f}", f"{r['gflops']:.2f}", f"{r['pct_peak']:.1f}",
                         speed, others])
    return markdown(header, rows)


def mega(flops) -> str:
    return "n/a" if flops is None else f"{flops / 1e6:.2f} M"


def sweep_notes(result: dict) -> str:
    """``bench_sweep``'s lines under the table: machine, peak, FLOP counts, compile times, the
    torch twin's agreement with jaxvis."""
    m, p = result["machine"], result["matmul_peak"]
    out = [f"machine: {m['cpu']}, {m['cores']} cores; jax {m['jax']} / jaxlib {m['jaxlib']} "
           f"({m['backend']}, {m['device_kind']}); torch {m['torch'] or 'not installed'}",
           f"float32 matmul peak ({p['size']}x{p['size']}, best of {p['repeats']}): "
           f"jax {p['gflops']:.1f} GFLOP/s"
           + (f", torch {result['torch_matmul_peak']['gflops']:.1f} GFLOP/s" if result["torch_matmul_peak"] else "")]
    for layer in result["layers"]:
        f = layer["flops"]
        xla = f["xla"]
        out.append(f"{layer['layer']}: canvas {layer['canvas']}, N={layer['images']}, diversity in "
                   f"{layer['feature_layer'] or 'pixels'}; forward {f['forward_per_image'] / 1e6:.2f} MFLOP/image "
                   f"(XLA: {mega(xla.get('forward_one_image'))}), useful {f['useful_per_unit_step'] / 1e6:.1f} "
                   f"MFLOP/unit-step (XLA, whole step: {mega(xla.get('step_one_unit'))})")
        for r in layer["rows"]:
            if "compile_s" in r:
                out.append(f"  {r['variant']}: first call (compile + run) {r['first_call_s']:.1f} s, "
                           f"compile ~{r['compile_s']:.1f} s")
            if "check" in r:
                c = r["check"]
                out.append(f"  torch vs jaxvis at step 0 (unit 0): loss {c['loss_torch']:.6g} vs "
                           f"{c['loss_jaxvis']:.6g}, rel. diff {c['loss_rel_diff']:.1e}; "
                           f"gradient rel. diff {c['grad_rel_diff']:.1e}")
    return "\n".join(out)


def stamp() -> str:
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def default_out(kind: str, machine: dict, folder: Path = RESULTS) -> Path:
    """``<folder>/<kind>_<host>-<device kind>_<date>.json``."""
    device = machine["device_kind"].replace(" ", "-").lower()
    return folder / f"{kind}_{machine['host']}-{device}_{stamp()}.json"


def write_json(path: Path, result: dict) -> Path:
    """Write ``result`` to ``path`` all at once (:mod:`jaxvis.io.atomic`), so a run cut off
    mid-write leaves the previous complete file, never half of one."""
    from jaxvis.io.atomic import write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(result, indent=1, default=_plain))
    return path


def _plain(value):
    """numpy scalars and arrays, paths: whatever json cannot write by itself."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
