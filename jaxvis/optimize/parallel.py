"""Many devices and many hosts: the unit mesh, and a sweep split across processes.

Units are independent: a unit's optimisation reads only its own state, key and direction and the
shared, read-only weights. So neither kind of parallelism needs any communication:

- **devices**: a 1-D :class:`~jax.sharding.Mesh` over this process's devices with the axis
  ``"units"``. Per-unit arrays (state, keys, directions) are sharded on their leading axis
  (``NamedSharding(mesh, P("units"))``), the weights replicated (``P()``), and every device runs
  the one-device program on its own slice of units (``jax.shard_map``), so the compiled step
  holds no collective and a unit's result does not depend on the device count.
- **hosts**: every process takes a fixed share of each layer's units (``share``) and writes its
  own part files into the shared ``<out>.parts/`` folder; process 0 assembles the file once all
  have finished (or ``jaxvis merge OUT`` does it later). ``jax.distributed`` is used to find the
  processes and to wait for each other at the start and the end, nothing else: no array crosses
  hosts.
"""

from __future__ import annotations

import atexit
import dataclasses
import math
import os
import shlex
import sys
import threading
import time
import warnings
from typing import Callable, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxvis.errors import JaxvisError

UNITS = "units"  # the mesh axis the units are spread over

# --------------------------------------------------------------------------------------------
# devices


def unit_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis ``"units"`` over ``devices`` (default: all of this process's devices
    of the default backend, i.e. one entry per GPU on a GPU host, one per emulated CPU device on
    a CPU; in a multi-process run each process only ever uses its own).

    Each device may appear once (twice would give it two slices of every chunk to run one after
    the other) and all must be of one platform (the one compiled program is for one backend)."""
    devices = list(jax.local_devices() if devices is None else devices)
    if not devices:
        raise JaxvisError("no devices to run on")
    if len(set(devices)) < len(devices):
        twice = next(d for d in devices if devices.count(d) > 1)
        raise JaxvisError(f"device {twice} appears {devices.count(twice)} times in the mesh; "
                          "give each device once")
    platforms = sorted({d.platform for d in devices})
    if len(platforms) > 1:
        raise JaxvisError(f"the mesh mixes platforms ({', '.join(platforms)}); give devices of one "
                          f"platform, e.g. jax.devices({platforms[-1]!r})")
    foreign = [d for d in devices if d.process_index != jax.process_index()]
    if foreign:
        raise JaxvisError(f"device {foreign[0]} belongs to process {foreign[0].process_index}; "
                          f"this process ({jax.process_index()}) can only use its own: "
                          f"{', '.join(map(str, jax.local_devices()))}")
    return Mesh(np.array(devices), (UNITS,))


class LateCpuDevicesWarning(UserWarning):
    """:func:`cpu_devices` was called after jax had started computing: it could change nothing."""


def cpu_devices(count: int | None = None) -> int | None:
    """Give jax ``count`` CPU devices (default: one per core this process may use), so the units
    of a chunk are spread over the cores as they are over GPUs: each core runs its own units with
    its own caches and no synchronisation between cores inside an op (docs/speed.md measures
    what it gains). Accelerators are not affected (on GPU and TPU hosts jax computes on those).

    Must run before anything touches a jax device. Does nothing and returns None where the user
    chose a count already (``--xla_force_host_platform_device_count`` in ``XLA_FLAGS``,
    ``JAX_NUM_CPU_DEVICES``) or jax's backends are running (then it warns: the call came too late);
    returns the count it set otherwise.
    """
    if count is not None and count < 1:  # wrong whether or not it would be used
        raise JaxvisError(f"cpu_devices(count) must be at least 1, not {count}")
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "") \
            or jax.config.jax_num_cpu_devices != -1:
        return None
    if count is None:
        count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # a device was used already: keep what jax has, and say so
        warnings.warn(f"jaxvis.cpu_devices({count}) came after jax had started computing, so jax keeps its "
                      f"{jax.device_count()} device(s); call it first, before any jax computation (as "
                      "`jaxvis sweep` does)", LateCpuDevicesWarning, stacklevel=2)
        return None
    return count


def unit_sharding(mesh: Mesh) -> NamedSharding:
    """Arrays with a leading unit axis: each device holds ``units / devices`` rows."""
    return NamedSharding(mesh, P(UNITS))


def replicated(mesh: Mesh) -> NamedSharding:
    """The weights and other shared inputs: a full copy on every device."""
    return NamedSharding(mesh, P())


def padded_count(units: int, mesh: Mesh) -> int:
    """``units`` rounded up to a multiple of the device count (every device gets as many)."""
    return max(1, math.ceil(units / mesh.size)) * mesh.size


def pad_rows(x, size: int):
    """``x`` (numpy, jax or key array) with its last row repeated up to ``size`` rows.

    Padding repeats a real unit rather than zeros so padded rows compute something sensible (a
    zero direction would be fine too, but a zero key array is not a valid key)."""
    n = len(x)
    if n == size:
        return x
    return x[np.minimum(np.arange(size), n - 1)]


def per_device(fn: Callable, mesh: Mesh, in_specs, out_specs) -> Callable:
    """``fn`` run by every device on its own slice (``shard_map``): the program each device
    compiles is the one-device program, so no collective can appear in it.

    ``check_vma=False``: the body mixes replicated weights with per-unit values in ``lax.scan``
    and ``custom_vjp``; all outputs are per unit (``P("units")``), so there is nothing whose
    replication would need checking."""
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)


# --------------------------------------------------------------------------------------------
# processes


@dataclasses.dataclass(frozen=True)
class Processes:
    """This process's place in a multi-process sweep."""

    index: int = 0
    count: int = 1

    def __post_init__(self):
        if not 0 <= self.index < self.count:
            raise JaxvisError(f"process id {self.index} is not in 0-{self.count - 1} "
                              f"for {self.count} processes")


def current() -> Processes:
    """The layout jax knows (``jax.distributed.initialize`` sets it; one process otherwise)."""
    return Processes(jax.process_index(), jax.process_count())


def share(units: Sequence[int], processes: Processes) -> list[int]:
    """The units ``processes.index`` computes: every ``count``-th, so neighbouring units (similar
    cost) spread evenly and every process's share is known without talking to the others."""
    return list(units)[processes.index::processes.count]


ENV = {"coordinator": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
       "process_id": "JAX_PROCESS_ID"}
INIT_GRACE_S = 30  # jax's own timeout fires later than ours: its failure is a fatal abort
HEARTBEAT_S = 100      # jax's default: a process silent this long counts as dead (initialize's timeout if shorter)
SHUTDOWN_S = 3600      # how long process 0 waits at exit for the others to leave (its merge comes first)
BARRIER_S = 24 * 3600  # how long processes wait for the slowest; a dead one is noticed sooner
POLL_S = 1.0           # how often a waiting process looks at who arrived and who is still alive
EXITED = "jaxvis-exited"  # key folder: process i sets EXITED/i when it ends (see _leave)


def launch_settings(coordinator: str | None = None, num_processes: int | None = None,
                    process_id: int | None = None,
                    environ: Mapping[str, str] = os.environ) -> tuple[str | None, int | None, int | None]:
    """The arguments of :func:`initialize` first, then ``JAX_COORDINATOR_ADDRESS`` /
    ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``; what is still None is left to jax's cluster
    detection (SLURM, Open MPI, Cloud TPU). A bad value is refused naming where it came from (the
    argument, ``initialize(num_processes)``, or the environment variable)."""
    source = {name: f"initialize({name})" for name in ENV}
    if not coordinator and environ.get(ENV["coordinator"]):
        coordinator, source["coordinator"] = environ[ENV["coordinator"]], ENV["coordinator"]
    coordinator = coordinator or None
    ints = []
    for name, value in (("num_processes", num_processes), ("process_id", process_id)):
        if value is None and environ.get(ENV[name]):
            source[name] = ENV[name]
            try:
                value = int(environ[ENV[name]])
            except ValueError:
                raise JaxvisError(f"{ENV[name]}={environ[ENV[name]]!r} is not an integer") from None
        ints.append(value)
    num_processes, process_id = ints
    if coordinator is not None:
        host, _, port = coordinator.rpartition(":")
        if not host or not port.isdigit():
            raise JaxvisError(f"{source['coordinator']} {coordinator!r} is not HOST:PORT "
                              "(e.g. 10.0.0.1:1234)")
    if num_processes is not None and num_processes < 1:
        raise JaxvisError(f"{source['num_processes']} must be at least 1, not {num_processes}")
    if None not in (num_processes, process_id):
        Processes(process_id, num_processes)  # checks the id is in range
    return coordinator, num_processes, process_id


def _no_answer(coordinator: str | None, process_id: int | None, count: int | None, timeout: float) -> str:
    """The watchdog's line, naming :func:`initialize`'s arguments (``initialize(timeout)``)."""
    if process_id == 0:
        return (f"not all {count} processes reached the coordinator at {coordinator} within "
                f"{timeout:g} s; start every process with the same initialize(coordinator) and "
                f"initialize(num_processes) and its own initialize(process_id) from 0 to "
                f"{(count or 1) - 1}, or raise initialize(timeout)")
    return (f"the coordinator at {coordinator} did not answer within {timeout:g} s; start "
            "process 0 there (it runs the coordinator), check HOST:PORT and the firewall, "
            "or raise initialize(timeout)")


def _watchdog(connected: threading.Event, timeout: float, message: str, stream=None,
              exit: Callable[[int], None] = os._exit) -> None:
    """Print ``message`` as one error line and end the process (status 2) unless ``connected`` is
    set within ``timeout`` seconds. The main thread is then blocked inside jax's C++ connect call,
    which Python cannot interrupt: nothing short of ``os._exit`` ends it cleanly."""
    if not connected.wait(timeout):
        stream = sys.stderr if stream is None else stream
        stream.write(f"jaxvis: error: {message}\n")
        stream.flush()
        exit(2)


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, timeout: float = 300.0,
               wording: Callable[[str], str] | None = None) -> Processes:
    """``jax.distributed.initialize`` with a timeout that ends in one clear line.

    Must run before anything touches a jax device. jax's own initialisation timeout aborts the
    process with a fatal C++ error and a stack trace, and the connect call cannot be interrupted
    from Python, so a watchdog thread prints one line and exits the process (status 2) if no
    connection is made within ``timeout`` seconds. Errors in the settings raise JaxvisError.
    Messages name the arguments as ``initialize(timeout)``; that line is printed here, before any
    caller could reword it, so ``wording`` (the CLI: its flag names) is applied to it first.

    A process that dies later must not take the others with it: by default jax's coordination
    service declares it dead after ``heartbeat_timeout_seconds`` without a heartbeat and then
    aborts every other process with a C++ stack dump. Processes here share no arrays, so the job
    is started *recoverable* (``jax_enable_recoverability``): the survivors finish their shares
    and :func:`barrier` names the missing process in one line. A process counts as dead after
    ``min(HEARTBEAT_S, timeout)`` seconds of silence. The coordinator itself (process 0) cannot
    be replaced: if it dies, jax still aborts the others (their parts are kept).
    """
    if jax.distributed.is_initialized():
        return current()
    coordinator, num_processes, process_id = launch_settings(coordinator, num_processes, process_id)
    explicit = None not in (coordinator, num_processes, process_id)
    connected = threading.Event()
    threading.Thread(target=_watchdog, name="jaxvis-init-watchdog", daemon=True,
                     args=(connected, timeout, (wording or str)(
                         _no_answer(coordinator, process_id, num_processes, timeout)))).start()
    try:
        jax.config.update("jax_enable_recoverability", True)
        jax.distributed.initialize(
            coordinator, num_processes, process_id,
            # explicit settings: do not let a stray SLURM/MPI environment override them
            cluster_detection_method="deactivate" if explicit else None,
            initialization_timeout=int(math.ceil(timeout)) + INIT_GRACE_S,
            heartbeat_timeout_seconds=int(math.ceil(min(HEARTBEAT_S, timeout))),
            shutdown_timeout_seconds=SHUTDOWN_S)
    except (ValueError, TypeError) as err:  # jax's checks: missing or inconsistent settings
        raise JaxvisError(f"cannot start a distributed sweep: {err}; give initialize(coordinator) "
                          "as HOST:PORT, initialize(num_processes) and initialize(process_id) (or "
                          f"{', '.join(ENV.values())}), or run under SLURM, Open MPI or on a Cloud "
                          "TPU, where jax detects them") from None
    except RuntimeError as err:  # e.g. initialised after a device was already used
        raise JaxvisError(f"cannot start a distributed sweep: {err}") from None
    finally:
        connected.set()
    processes = current()
    # registered after jax's own exit handler, so it runs before jax disconnects this process
    atexit.register(_leave, _client(), processes)
    return processes


def _client():
    from jax._src import distributed  # the public API exposes neither the key-value store nor liveness

    return distributed.global_state.client


def _leave(client, processes: Processes, timeout: float = SHUTDOWN_S, poll: float = POLL_S) -> None:
    """At exit: tell the others this process ended (a barrier it never reached then fails at once
    instead of waiting for a heartbeat timeout), and in process 0, which runs the coordination
    service, wait until the others have disconnected: a recoverable job has no shutdown barrier,
    and a process still connected when the service goes away aborts with a stack dump."""
    if client is None or processes.count == 1:
        return
    try:
        client.key_value_set(f"{EXITED}/{processes.index}", "1", allow_overwrite=True)
        if processes.index != 0:
            return
        everyone = list(range(processes.count))  # the service wants the asking process listed
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and set(client.get_live_nodes(everyone)) - {0}:
            time.sleep(poll)
    except Exception:  # the service is gone already: nothing left to wait for
        pass


def command() -> str:
    """This process's command line as a user would type it again (for resume hints)."""
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if program in ("jaxvis", "cli.py", "__main__.py"):
        return shlex.join(["jaxvis", *sys.argv[1:]])
    return "the same sweep"


def _ids(entries, prefix: str) -> set[int]:
    """Process ids from key-value entries ``(prefix/<id>, value)``."""
    ids = set()
    for key, _ in entries:
        tail = key.rstrip("/").rsplit("/", 1)[-1]
        if tail.isdigit():
            ids.add(int(tail))
    return ids


def barrier(name: str, timeout: float = BARRIER_S, *, client=None, processes: Processes | None = None,
            poll: float = POLL_S) -> None:
    """Wait until every process reached ``name`` (no-op for one process).

    Built on the coordination service's key-value store and liveness (no device collective, so no
    gloo/NCCL): each process sets ``name/<id>``, then waits for the others' keys. A process that
    died on the way (no heartbeat, see :func:`initialize`) or ended without arriving ends the
    wait at once with a JaxvisError naming it and the command that resumes; so does ``timeout``.
    ``client``/``processes``: jax's by default (given explicitly in tests).
    """
    processes = current() if processes is None else processes
    if processes.count == 1:
        return
    client = _client() if client is None else client
    if client is None:
        return
    everyone = set(range(processes.count))
    resume = (f"the units every process finished are kept; resume with the same commands on every "
              f"process (here: {command()}), or on one host without sweep(processes)")
    deadline = time.monotonic() + timeout
    try:
        client.key_value_set(f"{name}/{processes.index}", "1", allow_overwrite=True)
        while True:
            # who ended first, who arrived last: a process sets its arrival before it can end, so
            # one seen ending here and arriving in between is never taken for a dead one
            ended = _ids(client.key_value_dir_get(EXITED), EXITED) \
                | (everyone - set(client.get_live_nodes(sorted(everyone))))
            missing = everyone - _ids(client.key_value_dir_get(name), name)
            if not missing:
                return
            gone = missing & ended
            if gone:
                which = ", ".join(map(str, sorted(gone)))
                raise JaxvisError(f"process {which} of {processes.count} stopped before the end "
                                  f"of the sweep (killed, crashed or lost); {resume}")
            if time.monotonic() > deadline:
                raise JaxvisError(f"process {processes.index}: processes "
                                  f"{', '.join(map(str, sorted(missing)))} did not finish within "
                                  f"{timeout:g} s; {resume}")
            time.sleep(poll)
    except JaxvisError:
        raise
    except Exception as err:  # XlaRuntimeError: the coordination service is gone or refused
        raise JaxvisError(f"process {processes.index}: not every process reached {name!r} "
                          f"({str(err).splitlines()[0][:300]}); {resume}") from None
