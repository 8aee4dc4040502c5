"""The machine a benchmark ran on: what it is (CPU, cores, accelerator, memory, versions), how busy
its other tenants kept it, and its practical matmul peak at each precision, timed in the same run.
"""

from __future__ import annotations

import os
import platform
import socket
import time
from pathlib import Path


def torch_or_none():
    """``torch`` when it is importable (an optional peer of every benchmark), else None."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def core_count() -> int:
    # the cores this process may run on (a container's cpuset), not the host's total
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def device_memory(device=None) -> int | None:
    """Bytes XLA may allocate on ``device`` (``memory_stats()["bytes_limit"]``), None on CPU."""
    import jax

    device = device or jax.devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    return int(stats["bytes_limit"]) if stats and "bytes_limit" in stats else None


def peak_memory(device=None) -> int | None:
    """The most bytes in use on ``device`` since the process started (accelerators only)."""
    import jax

    device = device or jax.devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def machine_info(with_torch: bool = True) -> dict:
    """Host, CPU, jax (backend, device kind and count, device memory) and torch versions."""
    import jax
    import jaxlib

    device = jax.devices()[0]
    info = {"host": socket.gethostname(), "cpu": cpu_model(), "cores": core_count(),
            "python": platform.python_version(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "backend": jax.default_backend(), "device_kind": device.device_kind,
            "devices": len(jax.devices()), "device_memory_bytes": device_memory(device)}
    if not with_torch:
        return info
    torch = torch_or_none()
    info["torch"] = torch.__version__ if torch else None
    if torch:
        info["torch_threads"] = torch.get_num_threads()
        info["torch_cuda"] = bool(torch.cuda.is_available())
    return info


def describe(m: dict) -> str:
    """One line: the machine as a reader of a results table needs it."""
    memory = f", {m['device_memory_bytes'] / 2**30:.0f} GiB for XLA" if m.get("device_memory_bytes") else ""
    return (f"{m['device_kind']} x{m['devices']} ({m['backend']}{memory}); {m['cpu']}, {m['cores']} cores; "
            f"jax {m['jax']} / jaxlib {m['jaxlib']}"
            + ("" if "torch" not in m else f"; torch {m['torch'] or 'not installed'}"))


class CpuMeter:
    """How many cores *other* processes kept busy while a measurement ran (from /proc/stat minus
    this process's own CPU time): on a shared machine a busy neighbour explains a slow row."""

    def __enter__(self):
        self.wall, self.busy, self.own = time.perf_counter(), _busy_seconds(), _own_seconds()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.wall
        if self.busy is None:
            self.others = None
        else:
            others = (_busy_seconds() - self.busy) - (_own_seconds() - self.own)
            self.others = max(others, 0.0) / max(wall, 1e-9)
        return False


def _busy_seconds() -> float | None:
    """CPU seconds spent by everything on the machine (all cores, not idle, not iowait)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


def matmul_peak(size: int, repeats: int, precision: str = "float32") -> dict:
    """Best-of-``repeats`` GFLOP/s of a jitted ``size x size`` matmul at jaxvis's ``precision``
    (``float32``: true float32 products; ``tf32``/``bf16``: the tensor-core paths), through the
    same product jaxvis's networks use (:func:`jaxvis.models.ops.dot_general`): the device's
    practical peak for that precision, measured next to the benchmark rather than taken from a
    sheet. Each repeat queues ``calls`` products and waits once, so a fast accelerator's
    dispatch latency does not count as compute."""
    import jax
    import jax.numpy as jnp

    from jaxvis.models import ops

    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (size, size), jnp.float32)
    b = jax.random.normal(kb, (size, size), jnp.float32)

    @jax.jit
    def dot(a, b):
        with ops.precision(precision):
            return ops.dot_general(a, b, (((1,), (0,)), ((), ())))

    dot(a, b).block_until_ready()  # compile and warm the caches
    t = time.perf_counter()
    dot(a, b).block_until_ready()
    one = time.perf_counter() - t
    calls = max(1, min(50, int(0.05 / max(one, 1e-6))))  # ~50 ms a repeat
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        outs = [dot(a, b) for _ in range(calls)]
        jax.block_until_ready(outs)
        times.append((time.perf_counter() - t) / calls)
    flops = 2.0 * size ** 3
    return {"size": size, "repeats": repeats, "calls_per_repeat": calls, "precision": precision,
            "best_s": min(times), "gflops": flops / min(times) / 1e9}


def torch_matmul_peak(size: int, repeats: int, device: str = "cpu") -> dict | None:
    """The same float32 matmul in torch (context for the torch rows: its BLAS may differ)."""
    torch = torch_or_none()
    if torch is None:
        return None
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g).to(device)
    b = torch.randn(size, size, generator=g).to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    a @ b
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        sync()
        times.append(time.perf_counter() - t)
    return {"size": size, "repeats": repeats, "device": device, "best_s": min(times),
            "gflops": 2.0 * size ** 3 / min(times) / 1e9}
