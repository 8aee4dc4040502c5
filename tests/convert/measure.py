"""Run one reading call on a hostile file in a fresh process: its one-line error and peak memory.

A fresh process, because a blow-up must not take the test run with it, and because its peak
resident memory (imports included) is the number a user would see. The peak is the kernel's
high-water mark of the child's own memory (``VmHWM``): ``ru_maxrss`` would also count the test
process's memory, which Linux carries over when the child is forked and exec'd. A hang (a FIFO
read) ends at ``timeout`` seconds and fails the test instead of the run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What a hostile file may cost the process that reads it, imports (jax among them) included.
PEAK_LIMIT = 300 << 20

_CHILD = """
import re
from jaxvis.errors import JaxvisError
{imports}
try:
    {call}
    print("returned")
except JaxvisError as error:
    print("error:", error)
with open("/proc/self/status") as status:
    print(int(re.search(r"VmHWM:\\s*(\\d+) kB", status.read()).group(1)) * 1024)
"""


def refused_in_child(imports: str, call: str, timeout: float = 120) -> tuple[str, int]:
    """(the JaxvisError's message, peak RSS in bytes) of ``call`` run after ``imports``; fails
    unless the call raised a JaxvisError whose message is one line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    run = subprocess.run([sys.executable, "-c", _CHILD.format(imports=imports, call=call)], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=timeout, check=False)
    lines = run.stdout.splitlines()
    assert run.returncode == 0 and len(lines) == 2, (run.returncode, run.stdout, run.stderr[-2000:])
    assert lines[0].startswith("error: "), lines[0]
    return lines[0][len("error: "):], int(lines[1])
