"""A sweep split over several processes: two real processes on 127.0.0.1 give the file one process
gives (to LAYOUT_TOLERANCE); a coordinator that does not answer ends in one line within the
timeout; a process killed midway ends the other with one line, and the same commands resume;
incomplete parts are refused naming the missing units; the barrier and the exit handshake
with a fake coordination client (a dead peer, a slow one, one that arrives and leaves between two
looks, a service that is gone)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jaxvis.cli import flagged, main
from jaxvis.errors import JaxvisError
from jaxvis.store.results import parts_dir, read_results
from jaxvis.optimize import parallel
from jaxvis.optimize.parallel import Processes, launch_settings, share
from jaxvis.run.sweep import sweep
from tests.helpers import CLI, SETTINGS, UNITS, StopAfter, assert_same, assert_stops_mixed, free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def reference(reference_sweep):
    return reference_sweep[1]


def launch(args: list[str], real_root) -> subprocess.Popen:
    env = {**os.environ, "JAXVIS_WEIGHTS": str(real_root), "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, "-m", "jaxvis.cli", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.usefixtures("weights_env")
def test_two_processes_give_the_one_process_file(reference, real_root, tmp_path, capsys):
    out = tmp_path / "two.h5"
    port = free_port()
    procs = [launch([*CLI, "--out", str(out), "--distributed", "--coordinator", f"127.0.0.1:{port}",
                     "--num-processes", "2", "--process-id", str(i), "--timeout", "60"], real_root)
             for i in range(2)]
    logs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in logs]
    assert "process 1 of 2: share done" in logs[1][0] and f"results: {out}" in logs[0][0]
    assert not parts_dir(out).exists()
    assert_same(read_results(out), reference, exact=False)
    assert main(["merge", str(out)]) == 0 and "already complete" in capsys.readouterr().out


def test_coordinator_not_answering_is_one_line_within_the_timeout(tmp_path):
    start = time.perf_counter()
    proc = launch([*CLI, "--out", str(tmp_path / "x.h5"), "--distributed", "--coordinator",
                   f"127.0.0.1:{free_port()}", "--num-processes", "2", "--process-id", "1",
                   "--timeout", "3"], tmp_path)  # ends before any weights are needed
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err.strip().splitlines() == [err.strip()], err  # exactly one line
    assert "coordinator at 127.0.0.1:" in err and "did not answer within 3 s" in err
    assert err.rstrip().endswith("or raise --timeout")  # the flag, not initialize(timeout)
    assert time.perf_counter() - start < 3 + 20  # the timeout plus starting Python and jax
    assert not (tmp_path / "x.h5").exists() and not parts_dir(tmp_path / "x.h5").exists()


@pytest.mark.usefixtures("weights_env")
def test_shares_merge_only_when_complete_and_resume(vgg19, reference, tmp_path, capsys):
    """The two shares of a two-process sweep, run here one after the other (no coordinator: the
    split and the parts folder are what is tested): process 0 cannot assemble while process 1's
    units are missing, and names them; process 1 stopped midway resumes; then merge succeeds."""
    out = tmp_path / "s.h5"
    with pytest.raises(JaxvisError, match=r"conv2_1 misses 3 of 6 units \(1, 3, 5\)"):
        sweep(vgg19, "conv2_1", UNITS, out=out, chunk=1, processes=Processes(0, 2), **SETTINGS)
    assert main(["merge", str(out)]) == 2
    err = capsys.readouterr().err
    assert "misses 3 of 6 units (1, 3, 5)" in err and err.count("\n") == 1
    with pytest.raises(KeyboardInterrupt):
        sweep(vgg19, "conv2_1", UNITS, out=out, chunk=1, processes=Processes(1, 2),
              progress=StopAfter(1), **SETTINGS)
    assert len(list(parts_dir(out).glob("*.npz"))) == 4  # 0, 2, 4 and the first of 1, 3, 5
    assert sweep(vgg19, "conv2_1", UNITS, out=out, chunk=1, processes=Processes(1, 2), **SETTINGS) == {}
    assert main(["merge", str(out)]) == 0
    assert "merged conv2_1 (6 units)" in capsys.readouterr().out
    merged = read_results(out)
    assert_stops_mixed(merged.layers["conv2_1"])  # units froze early beside units still running
    assert_same(merged, reference, exact=False)


def test_share_splits_every_layer_evenly():
    units = list(range(10))
    shares = [share(units, Processes(i, 3)) for i in range(3)]
    assert shares == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert sorted(sum(shares, [])) == units and share([4], Processes(1, 2)) == []


def test_launch_settings_come_from_flags_then_environment():
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    assert launch_settings(environ=env) == ("10.0.0.1:1234", 4, 3)
    assert launch_settings("h:1", 2, 0, environ=env) == ("h:1", 2, 0)
    assert launch_settings(environ={}) == (None, None, None)  # left to jax's SLURM/MPI/TPU detection
    with pytest.raises(JaxvisError, match=r"^initialize\(coordinator\) 'h' is not HOST:PORT"):
        launch_settings("h", 2, 0, environ={})
    # a bad value is named where it came from: the argument, or the environment variable
    with pytest.raises(JaxvisError, match="^JAX_COORDINATOR_ADDRESS 'h' is not HOST:PORT"):
        launch_settings(environ={"JAX_COORDINATOR_ADDRESS": "h"})
    with pytest.raises(JaxvisError, match=r"^initialize\(num_processes\) must be at least 1, not 0"):
        launch_settings("h:1", 0, environ=env)
    with pytest.raises(JaxvisError, match="^JAX_NUM_PROCESSES must be at least 1, not 0"):
        launch_settings(environ={"JAX_NUM_PROCESSES": "0"})
    with pytest.raises(JaxvisError, match="process id 2 is not in 0-1 for 2 processes"):
        launch_settings("h:1", 2, 2, environ={})
    with pytest.raises(JaxvisError, match="JAX_PROCESS_ID='x' is not an integer"):
        launch_settings(environ={"JAX_PROCESS_ID": "x"})


def test_refusals_at_the_command_line(tmp_path, capsys):
    assert main([*CLI, "--out", str(tmp_path / "r.h5"), "--process-id", "1"]) == 2
    assert "need --distributed" in capsys.readouterr().err
    # the library names its arguments (cpu_devices(count), initialize(num_processes)); the
    # command line says the flags
    assert main([*CLI, "--out", str(tmp_path / "r.h5"), "--cpu-devices", "0"]) == 2
    assert capsys.readouterr().err == "jaxvis: error: --cpu-devices must be at least 1, not 0\n"
    assert main([*CLI, "--out", str(tmp_path / "r.h5"), "--distributed", "--num-processes", "0"]) == 2
    assert capsys.readouterr().err == "jaxvis: error: --num-processes must be at least 1, not 0\n"
    assert main(["merge", str(tmp_path / "none.h5")]) == 2
    assert "no parts to merge" in capsys.readouterr().err
    with pytest.raises(JaxvisError, match=r"^sweep\(overwrite\) cannot be used with several processes") as err:
        sweep("vgg19", "conv2_1", UNITS, out=tmp_path / "o.h5", overwrite=True,
              processes=Processes(0, 2), **SETTINGS)
    assert flagged(str(err.value)).startswith("--overwrite cannot be used with several processes")
    assert flagged(str(err.value)).endswith("; remove the old results first or use another --out")


class FakeClient:
    """The coordination service as a barrier sees it: a key-value store and the live processes."""

    def __init__(self, live, keys=()):
        self.live, self.kv, self.polls = set(live), dict.fromkeys(keys, "1"), 0

    def key_value_set(self, key, value, allow_overwrite=False):
        assert allow_overwrite or key not in self.kv
        self.kv[key] = value

    def key_value_dir_get(self, prefix):
        self.polls += 1
        return [(k, v) for k, v in self.kv.items() if k.startswith(prefix + "/")]

    def get_live_nodes(self, ids):
        assert 0 in ids or 1 in ids  # the service refuses a request that leaves out the asker
        return {i: 7 for i in ids if i in self.live}


def test_barrier_passes_once_everyone_arrived():
    client = FakeClient(live={0, 1, 2}, keys=["b/1", "b/2", "other/0"])
    parallel.barrier("b", client=client, processes=Processes(0, 3), poll=0)
    assert client.kv["b/0"] == "1"
    # a process that arrived and has exited since (its share done) is not missing
    client = FakeClient(live={0}, keys=["b/1", "jaxvis-exited/1"])
    parallel.barrier("b", client=client, processes=Processes(0, 2), poll=0)


def test_barrier_is_not_fooled_by_a_process_that_arrives_and_ends_between_two_looks():
    """Process 1 arrives, passes and exits while process 0 is between reading the arrivals and
    reading who ended (a real race: a small merge takes well under a poll)."""
    class Racing(FakeClient):
        def key_value_dir_get(self, prefix):
            entries = super().key_value_dir_get(prefix)
            if prefix == "b" and "b/1" not in self.kv:
                self.kv.update({"b/1": "1", "jaxvis-exited/1": "1"})
                self.live.discard(1)
            return entries

    client = Racing(live={0, 1})
    parallel.barrier("b", timeout=1, client=client, processes=Processes(0, 2), poll=0)


def test_barrier_names_a_dead_process_at_once(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/usr/bin/jaxvis", "sweep", "--layer", "conv2_1", "--process-id", "0"])
    client = FakeClient(live={0, 2}, keys=["b/2"])  # 1 died before arriving (no heartbeat)
    with pytest.raises(JaxvisError) as err:
        parallel.barrier("b", timeout=1, client=client, processes=Processes(0, 3), poll=0)
    message = str(err.value)
    assert message.startswith("process 1 of 3 stopped before the end of the sweep") and "\n" not in message
    assert "jaxvis sweep --layer conv2_1 --process-id 0" in message and "without sweep(processes)" in message
    assert "without --distributed" in flagged(message)  # as the command line says it
    assert client.polls == 2  # the first look (who arrived, who exited), not the timeout
    # one that ended without arriving (e.g. an error in process 0) counts the same
    client = FakeClient(live={0, 1}, keys=["jaxvis-exited/0"])
    with pytest.raises(JaxvisError, match="^process 0 of 2 stopped"):
        parallel.barrier("b", client=client, processes=Processes(1, 2), poll=0)


def test_barrier_times_out_naming_the_slow_ones():
    class Slow(FakeClient):
        def key_value_dir_get(self, prefix):
            time.sleep(0.02)
            return super().key_value_dir_get(prefix)

    client = Slow(live={0, 1, 2})
    with pytest.raises(JaxvisError, match="processes 1, 2 did not finish within 0.05 s"):
        parallel.barrier("b", timeout=0.05, client=client, processes=Processes(0, 3), poll=0.01)
    assert client.polls > 1


def test_barrier_service_failure_is_one_line():
    class Gone(FakeClient):
        def key_value_set(self, key, value, allow_overwrite=False):
            raise RuntimeError("UNAVAILABLE: Socket closed\nmore C++ detail")

    with pytest.raises(JaxvisError) as err:
        parallel.barrier("b", client=Gone(live={0, 1}), processes=Processes(1, 2))
    assert "not every process reached 'b' (UNAVAILABLE: Socket closed)" in str(err.value)
    assert "\n" not in str(err.value)
    parallel.barrier("b", client=None, processes=Processes(0, 1))  # one process: nothing to wait for


def test_leaving_marks_the_exit_and_process_0_waits_for_the_others():
    client = FakeClient(live={0, 1})
    parallel._leave(client, Processes(1, 2), timeout=5, poll=0)
    assert client.kv == {"jaxvis-exited/1": "1"}

    class Leaving(FakeClient):  # process 1 disconnects after a few looks
        def get_live_nodes(self, ids):
            self.polls += 1
            if self.polls == 3:
                self.live.discard(1)
            return super().get_live_nodes(ids)

    client = Leaving(live={0, 1})
    parallel._leave(client, Processes(0, 2), timeout=5, poll=0)
    assert client.kv == {"jaxvis-exited/0": "1"} and client.polls == 3


def test_initialize_timeout_is_one_line():
    """The watchdog's line for each side (process 0 waits for the others; the others for it), and
    nothing when the connection is made in time."""
    import io
    import threading
    lines = {pid: parallel._no_answer("10.0.0.1:1234", pid, 4, 30) for pid in (0, 1)}
    assert lines[0] == ("not all 4 processes reached the coordinator at 10.0.0.1:1234 within 30 s; "
                        "start every process with the same initialize(coordinator) and "
                        "initialize(num_processes) and its own initialize(process_id) from 0 to 3, "
                        "or raise initialize(timeout)")
    # the command line passes its flag names as initialize's wording=
    assert flagged(lines[0]).endswith("start every process with the same --coordinator and "
                                      "--num-processes and its own --process-id from 0 to 3, or "
                                      "raise --timeout")
    assert flagged(lines[1]).endswith("or raise --timeout")
    assert lines[1].startswith("the coordinator at 10.0.0.1:1234 did not answer within 30 s; start "
                               "process 0 there")
    stream, exits = io.StringIO(), []
    parallel._watchdog(threading.Event(), 0.01, lines[1], stream, exits.append)
    assert exits == [2] and stream.getvalue() == f"jaxvis: error: {lines[1]}\n"
    connected = threading.Event()
    connected.set()
    parallel._watchdog(connected, 0.01, lines[1], stream, exits.append)
    assert exits == [2]


def test_a_killed_process_ends_the_other_with_one_line(real_root, tmp_path):
    """A real kill -9 of process 1 once both are connected: process 0 finishes its share, notices
    (a heartbeat timeout of --timeout seconds) and ends with one line naming process 1 and the
    command that resumes; its part is kept and the same commands again finish the sweep."""
    out, port = tmp_path / "kill.h5", free_port()
    cmd = ["sweep", "--weights", "vgg19", "--layer", "conv1_1", "--units", "0-3", "--images", "2",
           "--steps", "10", "--no-render", "--out", str(out), "--distributed", "--coordinator",
           f"127.0.0.1:{port}", "--num-processes", "2", "--timeout", "12"]
    procs = [launch([*cmd, "--process-id", str(i)], real_root) for i in range(2)]
    deadline = time.time() + 120
    while time.time() < deadline and not (parts_dir(out) / "config.json").exists():
        time.sleep(0.05)  # written after both connected (initialize waits for everyone)
    procs[1].kill()
    _, err = procs[0].communicate(timeout=300)
    procs[1].communicate()
    lines = [line for line in err.splitlines() if line.startswith("jaxvis")]
    assert procs[0].returncode == 2, err[-3000:]
    assert len(lines) == 1 and lines[0].startswith("jaxvis: error: process 1 of 2 stopped"), err[-3000:]
    assert "Check failure stack trace" not in err and "--process-id 0" in lines[0]
    assert [p.name for p in parts_dir(out).glob("*.npz")] == ["conv1_1__0-2.npz"] and not out.exists()
    port = free_port()
    again = [launch([*cmd[:-5], f"127.0.0.1:{port}", *cmd[-4:], "--process-id", str(i)], real_root)
             for i in range(2)]
    logs = [p.communicate(timeout=300) for p in again]
    assert [p.returncode for p in again] == [0, 0], [e[-2000:] for _, e in logs]
    assert read_results(out).layers["conv1_1"]["unit"].tolist() == [0, 1, 2, 3]
