"""The weights store when things go wrong: unwritable folders, full disks, killed saves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxvis.convert import store
from jaxvis.errors import JaxvisError
from tests.convert.measure import ROOT, refused_in_child

PARAMS = {"conv/kernel": np.random.default_rng(0).standard_normal((64, 64, 64)).astype(np.float32)}


def _snapshot(folder) -> dict:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", ["parent is a file", "read-only folder"])
def test_unwritable_weights_folder_refused_before_work(tmp_path, case):
    if case == "parent is a file":
        (tmp_path / "plain").write_bytes(b"not a folder")
        entry = tmp_path / "plain" / "weights" / "w"
        blocking = tmp_path / "plain"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        blocking = tmp_path / "weights"
        blocking.mkdir(mode=0o555)
        entry = blocking / "w"
    before = _snapshot(tmp_path)
    for call in (lambda: store.check_free(entry), lambda: store.save(entry, PARAMS, {})):
        with pytest.raises(JaxvisError) as err:
            call()
        why = (f"{blocking} is not a folder" if case == "parent is a file" else
               f"folder {blocking} is not writable (choose another weights folder or fix its permissions)")
        assert str(err.value) == f"cannot write weights entry {entry}: {why}"
    assert _snapshot(tmp_path) == before


def test_full_disk_during_save_is_one_line_and_keeps_the_old_entry(tmp_path):
    """A disk that fills mid-save (here: a file-size limit on the saving process, the same failed
    write to orbax) ends in one line; the entry it was to replace is untouched, no temporary stays."""
    entry = tmp_path / "weights" / "w"
    store.save(entry, {"conv/kernel": np.ones(3, np.float32)}, {"old": True})
    before = _snapshot(tmp_path)
    setup = ("import resource, signal\nimport numpy as np\nfrom pathlib import Path\n"
             "from jaxvis.convert import store\n"
             "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails (EFBIG) instead\n"
             "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))")
    call = (f"store.save(Path({str(entry)!r}), {{'conv/kernel': np.random.default_rng(0)"
            ".standard_normal(1 << 20).astype(np.float32)}, {}, overwrite=True)")
    message, _ = refused_in_child(setup, call)
    assert message == (f"cannot write weights entry {entry}: File too large; nothing was replaced (free "
                       "some space or choose a writable weights folder)")
    assert _snapshot(tmp_path) == before
    assert store.load(entry)[1] == {"old": True}


def test_orbax_out_of_space_status_is_the_os_reason(tmp_path):
    """tensorstore's status text (as orbax raises it) comes down to the OS's reason."""
    orbax = ValueError("RESOURCE_EXHAUSTED: Error writing \"a.k/0\" in OCDBT database at local file "
                       "\"/x/.w.1-ab.tmp/params\": Failed to write 3497027 bytes to file 4: "
                       "No space left on device [os_error_code='28']")
    assert str(store._write_error(tmp_path / "w", orbax)) == (
        f"cannot write weights entry {tmp_path / 'w'}: No space left on device; nothing was replaced "
        "(free some space or choose a writable weights folder)")


def _killed_save(entry) -> None:
    """A save killed (SIGKILL) after its temporary is complete, just before the swap."""
    code = ("import os, signal, sys\nimport numpy as np\nfrom pathlib import Path\n"
            "from jaxvis.convert import store\n"
            "store.swap_in = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n"
            f"store.save(Path({str(entry)!r}), {{'conv/kernel': np.ones(1000, np.float32)}}, {{'new': True}}, "
            "overwrite=True)")
    child = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                           capture_output=True, check=False)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]


def _age(folder, seconds: float) -> None:
    then = time.time() - seconds
    for p in (folder, *folder.rglob("*")):
        os.utime(p, (then, then), follow_symlinks=False)


def test_temporaries_of_killed_saves_are_removed(tmp_path):
    entry = tmp_path / "weights" / "w"
    store.save(entry, {"conv/kernel": np.zeros(3, np.float32)}, {"old": True})
    old = _snapshot(entry)
    _killed_save(entry)
    _killed_save(entry)
    left = sorted(entry.parent.glob(".w.*.tmp"))
    assert len(left) == 2 and all((p / store.META).is_file() for p in left)  # complete, not swapped in
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as alive:
        try:
            live = entry.parent / f".w.{alive.pid}-0123abcd.tmp"  # a save still running here
            live.mkdir()
            for p in (left[0], live):
                _age(p, 2 * store.STALE_SECONDS)
            # left[1] was touched just now: it may be a save on another host sharing the folder
            store.check_free(entry, overwrite=True)
            assert sorted(entry.parent.glob(".w.*.tmp")) == sorted([left[1], live])
            _age(left[1], 2 * store.STALE_SECONDS)
            store.load(entry)
            assert sorted(entry.parent.glob(".w.*.tmp")) == [live]
        finally:
            alive.kill()
    assert _snapshot(entry) == old
