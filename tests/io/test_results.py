"""Sweep results: atomic parts, resume, refusal of foreign or different results, the HDF5 file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from jaxvis.errors import JaxvisError
from jaxvis.store.results import (FORMAT, FORMAT_VERSION, ResultWriter, merge_parts, parts_dir,
                               read_results)

N, H, S = 3, 5, 4
CONFIG = {"model": "vgg19", "layer": "conv2_1", "steps": 10, "seed": 0, "nested": {"lr": 0.05}}
LAYERS = {"conv1_1": {"units": [0, 1, 2, 3, 4], "canvas": 3, "rf": 3, "budget": 12.5},
          "conv2_1": {"units": [2, 7, 9], "canvas": 10, "rf": 10, "feature_layer": "conv1_2"}}


def unit_arrays(layer: str, unit: int) -> dict[str, np.ndarray]:
    """Deterministic results of one unit (the same whatever chunk it lands in)."""
    rng = np.random.default_rng([unit, len(layer), ord(layer[-1])])
    curve = rng.normal(size=S).astype(np.float32)
    curve[unit % S:] = np.nan
    return {"unit": np.int64(unit),
            "images": rng.uniform(-10, 300, (N, H, H, 3)).astype(np.float32),
            "activations": rng.normal(size=N).astype(np.float32),
            "pixel_distances": rng.normal(size=(N, N)).astype(np.float32),
            "loss_curve": curve,
            "steps": np.int32(unit + 1),
            "stop_reason": np.int8(unit % 2),
            "max_image": rng.uniform(0, 255, (H, H, 3)).astype(np.float32),
            "max_activation": np.float32(unit + 0.5)}


def chunk(layer: str, units) -> dict[str, np.ndarray]:
    rows = [unit_arrays(layer, u) for u in units]
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def expected(layer: str) -> dict[str, np.ndarray]:
    return chunk(layer, sorted(LAYERS[layer]["units"]))


def write_all(writer: ResultWriter) -> None:
    writer.write_chunk("conv1_1", chunk("conv1_1", [3, 4]))
    writer.write_chunk("conv2_1", chunk("conv2_1", [9, 2, 7]))  # unsorted inside a chunk
    writer.write_chunk("conv1_1", chunk("conv1_1", [0, 1, 2]))  # out of order across chunks


def snapshot(*paths) -> dict:
    """Bytes and mtimes of every file under ``paths``."""
    state = {}
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            state[str(p)] = (p.read_bytes(), p.stat().st_mtime_ns)
    return state


def assert_results(path):
    results = read_results(path)
    assert results.config == CONFIG
    assert results.layer_meta == LAYERS
    assert set(results.layers) == set(LAYERS)
    for layer in LAYERS:
        want, got = expected(layer), results.layers[layer]
        assert set(got) == set(want)
        for key in want:
            assert got[key].dtype == want[key].dtype, key
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)  # NaN == NaN here
    return results


def test_roundtrip_two_layers(tmp_path):
    out = tmp_path / "sweep.h5"
    writer = ResultWriter(out, CONFIG)
    assert (parts_dir(out) / "config.json").exists()  # written before anything is computed
    write_all(writer)
    assert writer.done_units("conv1_1") == {0, 1, 2, 3, 4}
    assert writer.done_units("conv2_1") == {2, 7, 9}
    assert writer.done_units("conv3_1") == set()
    numpy_meta = {name: {**meta, "units": np.array(meta["units"])} for name, meta in LAYERS.items()}
    assert writer.finalize(numpy_meta) == out  # numpy values are stored as plain JSON
    assert not parts_dir(out).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.h5"]
    results = assert_results(out)
    assert results.layers["conv1_1"]["unit"].tolist() == [0, 1, 2, 3, 4]
    with h5py.File(out, "r") as f:
        assert f.attrs["format"] == FORMAT and f.attrs["format_version"] == FORMAT_VERSION
        assert json.loads(f.attrs["config"]) == CONFIG
        assert json.loads(f["layers/conv2_1"].attrs["meta"]) == LAYERS["conv2_1"]
    only = read_results(out, layers=["conv2_1"])
    assert list(only.layers) == ["conv2_1"]
    with pytest.raises(JaxvisError, match="holds no layer 'conv9'.*conv1_1, conv2_1"):
        read_results(out, layers=["conv9"])


def test_resume_same_config_skips_done_units(tmp_path):
    out = tmp_path / "sweep.h5"
    first = ResultWriter(out, CONFIG)
    first.write_chunk("conv1_1", chunk("conv1_1", [0, 1]))
    first.write_chunk("conv2_1", chunk("conv2_1", [7]))
    del first  # "killed"
    config = json.loads(json.dumps(CONFIG))  # an equal config built afresh
    again = ResultWriter(out, config)
    assert again.done_units("conv1_1") == {0, 1}
    assert again.done_units("conv2_1") == {7}
    with pytest.raises(JaxvisError, match="units 1 of layer conv1_1 are already written"):
        again.write_chunk("conv1_1", chunk("conv1_1", [1, 2]))
    again.write_chunk("conv1_1", chunk("conv1_1", [2, 3, 4]))
    again.write_chunk("conv2_1", chunk("conv2_1", [2, 9]))
    again.finalize(LAYERS)
    assert_results(out)

    finished = ResultWriter(out, CONFIG)  # a finished file: everything is done
    assert finished.finished
    assert finished.done_units("conv2_1") == {2, 7, 9}
    with pytest.raises(JaxvisError, match="already finished"):
        finished.write_chunk("conv1_1", chunk("conv1_1", [5]))
    assert finished.finalize(LAYERS) == out
    assert_results(out)


@pytest.mark.parametrize("finished", [False, True])
def test_different_config_is_refused_untouched(tmp_path, finished):
    out = tmp_path / "sweep.h5"
    writer = ResultWriter(out, CONFIG)
    write_all(writer)
    if finished:
        writer.finalize(LAYERS)
    where = out if finished else parts_dir(out)
    before = snapshot(where)
    for change, message in [({"layer": "conv3_1"}, "layer: 'conv2_1' there, 'conv3_1' now"),
                            ({"nested": {"lr": 0.1}}, "nested.lr: 0.05 there, 0.1 now"),
                            ({"extra": 1}, "extra: not set there, 1 now")]:
        with pytest.raises(JaxvisError) as err:
            ResultWriter(out, {**CONFIG, **change})
        assert str(err.value) == (f"{where} holds results of a different sweep ({message}); "
                                  "use sweep(overwrite) or another sweep(out)")
    assert snapshot(where) == before

    fresh = ResultWriter(out, {**CONFIG, "layer": "conv3_1"}, overwrite=True)
    assert not out.exists()
    assert fresh.done_units("conv1_1") == set()
    assert json.loads((parts_dir(out) / "config.json").read_text())["config"]["layer"] == "conv3_1"


def test_killed_writes_are_ignored_and_missing_units_refused(tmp_path):
    out = tmp_path / "sweep.h5"
    writer = ResultWriter(out, CONFIG)
    writer.write_chunk("conv1_1", chunk("conv1_1", [0, 1, 2]))
    writer.write_chunk("conv2_1", chunk("conv2_1", [2, 7, 9]))
    parts = parts_dir(out)
    complete = next(parts.glob("conv1_1__*.npz")).read_bytes()
    (parts / ".conv1_1__3-4.npz.123-abcd.tmp").write_bytes(complete)  # killed before the rename
    (parts / ".conv1_1__3-4.npz.124-abcd.tmp").write_bytes(complete[: len(complete) // 2])
    (parts / "conv1_1__3-4.npz.tmp").write_bytes(b"")  # a foreign-style stray tmp
    resumed = ResultWriter(out, CONFIG)
    assert resumed.done_units("conv1_1") == {0, 1, 2}
    before = snapshot(parts)
    with pytest.raises(JaxvisError) as err:
        resumed.finalize(LAYERS)
    assert str(err.value) == (f"cannot finalise {out}: layer conv1_1 misses 2 of 5 units (3, 4); "
                              "run the sweep again to compute them")
    assert not out.exists() and not out.with_name("sweep.h5.tmp").exists()
    before.pop(str(parts / "layers.json"), None)
    after = snapshot(parts)
    after.pop(str(parts / "layers.json"), None)
    assert after == before
    resumed.write_chunk("conv1_1", chunk("conv1_1", [3, 4]))
    resumed.finalize(LAYERS)
    assert_results(out)


def test_kill_9_during_a_write_then_resume(tmp_path):
    """A real SIGKILL in the middle of writing a part: the parts on disk stay complete."""
    out = tmp_path / "sweep.h5"
    child = textwrap.dedent(f"""
        import os, signal, sys
        import numpy as np
        from tests.io.test_results import CONFIG, chunk
        from jaxvis.store.results import ResultWriter
        writer = ResultWriter({str(out)!r}, CONFIG)
        writer.write_chunk("conv1_1", chunk("conv1_1", [0, 1, 2]))
        def dying_savez(f, **arrays):
            f.write(b"PK\\x03\\x04 half a zip")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        np.savez = dying_savez
        writer.write_chunk("conv1_1", chunk("conv1_1", [3, 4]))
    """)
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", child], cwd=root, capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    leftovers = sorted(p.name for p in parts_dir(out).iterdir())
    assert len(leftovers) == 3 and leftovers[0].startswith(".conv1_1__3-4.npz.")  # the dead tmp
    assert leftovers[1:] == ["config.json", "conv1_1__0-2.npz"]

    writer = ResultWriter(out, CONFIG)
    assert writer.done_units("conv1_1") == {0, 1, 2}
    writer.write_chunk("conv1_1", chunk("conv1_1", [3, 4]))
    writer.write_chunk("conv2_1", chunk("conv2_1", [2, 7, 9]))
    writer.finalize(LAYERS)
    assert_results(out)  # equals an uninterrupted run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.h5"]


def test_missing_units_message_is_short(tmp_path):
    out = tmp_path / "sweep.h5"
    writer = ResultWriter(out, CONFIG)
    writer.write_chunk("big", chunk("big", [5]))
    with pytest.raises(JaxvisError) as err:
        writer.finalize({"big": {"units": list(range(100))}})
    assert "big misses 99 of 100 units (0, 1, 2, 3, 4, 6, 7, 8, ... (99 in all))" in str(err.value)
    assert "\n" not in str(err.value)


def test_merge_parts_from_stored_layer_meta_first_copy_wins(tmp_path):
    out = tmp_path / "sweep.h5"
    host_a = ResultWriter(out, CONFIG)
    host_b = ResultWriter(out, CONFIG)  # a second host on the same shared folder
    assert host_b.done_units("conv1_1") == set()  # it looked before host a wrote unit 2
    for layer, meta in LAYERS.items():
        host_a.write_layer_meta(layer, meta)
    host_a.write_chunk("conv1_1", chunk("conv1_1", [0, 1, 2]))
    copy = chunk("conv1_1", [2, 3, 4])  # unit 2 twice; marked so we see which copy is kept
    copy["images"][0] = -1
    host_b.write_chunk("conv1_1", copy)
    host_b.write_chunk("conv2_1", chunk("conv2_1", [2, 7, 9]))
    host_a.write_chunk("conv2_1", chunk("conv2_1", [9, 2, 7]))  # same name: never replaced
    names = sorted(p.name for p in parts_dir(out).glob("*.npz"))
    assert names == ["conv1_1__0-2.npz", "conv1_1__2-4.npz", "conv2_1__2-9.npz",
                     "conv2_1__2-9~2.npz"]
    assert merge_parts(out) == out
    assert not parts_dir(out).exists()
    assert_results(out)  # the first part in name order won unit 2
    with pytest.raises(JaxvisError, match="no parts to merge"):
        merge_parts(tmp_path / "other.h5")


def parts_of_every_layer(out) -> ResultWriter:
    """A complete, unmerged parts folder for ``out`` (what the hosts of a sweep leave)."""
    writer = ResultWriter(out, CONFIG)
    for layer, meta in LAYERS.items():
        writer.write_layer_meta(layer, meta)
    write_all(writer)
    return writer


def test_merge_into_a_file_of_another_sweep_is_refused_untouched(tmp_path):
    out = tmp_path / "sweep.h5"
    parts_of_every_layer(out)
    other = ResultWriter(tmp_path / "other.h5", {**CONFIG, "seed": 1})  # finished elsewhere ...
    write_all(other)
    other.finalize(LAYERS)
    os.replace(tmp_path / "other.h5", out)  # ... then put where these parts belong
    before = snapshot(out, parts_dir(out))
    with pytest.raises(JaxvisError) as err:
        merge_parts(out)
    assert str(err.value) == f"cannot merge into {out}: it exists and holds a different sweep"
    assert snapshot(out, parts_dir(out)) == before
    out.unlink()  # once it is out of the way the parts merge as they are
    assert merge_parts(out) == out
    assert_results(out)


@pytest.mark.parametrize("layer, units, message", [
    ("conv3_1", [0, 1], r"part conv3_1__0-1\.npz holds layer 'conv3_1', which is not among the "
                        r"layers being finalised \(conv1_1, conv2_1\)"),
    ("conv2_1", [3, 11], r"conv2_1__3-11\.npz holds units 3, 11 of layer conv2_1 that are not "
                         r"among its selected units"),
])
def test_parts_of_a_foreign_layer_or_unselected_units_are_refused(tmp_path, layer, units, message):
    out = tmp_path / "sweep.h5"
    writer = parts_of_every_layer(out)
    writer.write_chunk(layer, chunk(layer, units))
    before = snapshot(parts_dir(out))
    with pytest.raises(JaxvisError, match=message):
        merge_parts(out)
    assert not out.exists() and snapshot(parts_dir(out)) == before


def test_parts_are_never_replaced_without_hard_links(tmp_path, monkeypatch):
    """Filesystems without hard links (some network and FUSE mounts): a part still lands under a
    free name, and one already there is kept."""
    def no_links(src, dst, *args, **kwargs):
        raise PermissionError(1, "Operation not permitted", str(dst))

    monkeypatch.setattr(os, "link", no_links)
    out = tmp_path / "sweep.h5"
    host_a, host_b = ResultWriter(out, CONFIG), ResultWriter(out, CONFIG)
    assert host_b.done_units("conv2_1") == set()  # it looked before host a wrote
    first = host_a.write_chunk("conv2_1", chunk("conv2_1", [2, 7, 9]))
    kept = first.read_bytes()
    second = host_b.write_chunk("conv2_1", chunk("conv2_1", [9, 2, 7]))
    assert (first.name, second.name) == ("conv2_1__2-9.npz", "conv2_1__2-9~2.npz")
    assert first.read_bytes() == kept
    assert sorted(p.name for p in parts_dir(out).iterdir()) == [
        "config.json", "conv2_1__2-9.npz", "conv2_1__2-9~2.npz"]  # no temporary file left
    host_a.write_chunk("conv1_1", chunk("conv1_1", [0, 1, 2, 3, 4]))
    host_a.finalize(LAYERS)
    assert_results(out)


def test_inconsistent_parts_are_refused(tmp_path):
    out = tmp_path / "sweep.h5"
    writer = ResultWriter(out, CONFIG)
    writer.write_chunk("conv2_1", chunk("conv2_1", [2]))
    odd = chunk("conv2_1", [7, 9])
    odd["images"] = odd["images"][:, :2]
    writer.write_chunk("conv2_1", odd)
    with pytest.raises(JaxvisError, match="'images' is float32 \\[\\*, 2, 5, 5, 3\\] instead of "
                                          "float32 \\[\\*, 3, 5, 5, 3\\]"):
        writer.finalize({"conv2_1": LAYERS["conv2_1"]})
    assert not out.exists()


@pytest.mark.parametrize("bad, message", [
    ({"images": np.zeros((2, 1))}, "needs the chunk's units|a 'unit' key"),
    ({"unit": np.array([1, 1]), "x": np.zeros(2)}, "distinct non-negative"),
    ({"unit": np.array([1, 2]), "x": np.zeros(3)}, "'x' has 3 rows, other keys 2"),
    ({"unit": np.array([1, 2]), "x": np.array(["a", "b"])}, "dtype <U1; valid: bool, integer"),
    ({"unit": np.array([1, 2]), "a/b": np.zeros(2)}, "not a valid dataset name"),
    ({"unit": np.array([0.5, 1.5])}, "1-D integer array"),
])
def test_bad_chunks_are_refused(tmp_path, bad, message):
    writer = ResultWriter(tmp_path / "sweep.h5", CONFIG)
    with pytest.raises(JaxvisError, match=message):
        writer.write_chunk("conv1_1", bad)
    assert list(parts_dir(tmp_path / "sweep.h5").glob("*.npz")) == []


def test_unwritable_or_foreign_output_is_refused(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(JaxvisError, match=f"cannot write results to {blocker}/sweep.h5: "):
        ResultWriter(blocker / "sweep.h5", CONFIG)
    with pytest.raises(JaxvisError, match="does not exist"):
        ResultWriter(tmp_path / "nowhere" / "sweep.h5", CONFIG)
    with pytest.raises(JaxvisError, match="not JSON-able"):
        ResultWriter(tmp_path / "sweep.h5", {"x": object()})

    foreign = tmp_path / "notes.h5"
    foreign.write_bytes(b"my thesis, no backup")
    before = snapshot(foreign)
    with pytest.raises(JaxvisError) as err:
        ResultWriter(foreign, CONFIG)
    assert str(err.value) == (f"{foreign} exists and is not a jaxvis results file (not HDF5); "
                              "use sweep(overwrite) or another sweep(out)")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(JaxvisError, match="is not a jaxvis results file \\(format None\\)"):
        ResultWriter(tmp_path / "other.h5", CONFIG)
    assert snapshot(foreign) == before
    assert not parts_dir(foreign).exists()

    ResultWriter(foreign, CONFIG, overwrite=True)  # only an explicit overwrite removes it
    assert not foreign.exists()


def test_foreign_parts_folder_is_refused(tmp_path):
    out = tmp_path / "sweep.h5"
    parts = parts_dir(out)
    parts.mkdir()
    (parts / "precious.txt").write_text("mine")
    with pytest.raises(JaxvisError, match="is not a jaxvis parts folder"):
        ResultWriter(out, CONFIG)
    assert (parts / "precious.txt").read_text() == "mine"


def write_file(path, version=FORMAT_VERSION, fmt=FORMAT):
    with h5py.File(path, "w") as f:
        f.attrs["format"] = fmt
        f.attrs["format_version"] = version
        f.attrs["config"] = "{}"
        f.create_group("layers")
    return path


def test_read_results_errors(tmp_path):
    with pytest.raises(JaxvisError, match="does not exist"):
        read_results(tmp_path / "missing.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(os.urandom(100))
    with pytest.raises(JaxvisError) as err:
        read_results(junk)
    assert str(err.value) == f"{junk} is not a jaxvis results file (not HDF5)"
    old = write_file(tmp_path / "old.h5", version=0)
    with pytest.raises(JaxvisError) as err:
        read_results(old)
    assert str(err.value) == (f"{old} is a jaxvis results file of format version 0; "
                              "this jaxvis reads version 1")
    with pytest.raises(JaxvisError, match="format version 2; this jaxvis reads version 1"):
        read_results(write_file(tmp_path / "new.h5", version=2))
    with pytest.raises(JaxvisError, match="not a jaxvis results file \\(format 'other'\\)"):
        read_results(write_file(tmp_path / "other.h5", fmt="other"))
    assert read_results(write_file(tmp_path / "empty.h5")).layers == {}
