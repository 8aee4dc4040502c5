"""Hostile and unlucky results files: every one is built here from a real tiny results
file, refused (or handled) in one line before any work, and leaves every file byte-identical."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from jaxvis.run import analyze as analyze_module
from jaxvis.report.compare import compare
from jaxvis.errors import JaxvisError
from jaxvis.report.render import pictures_folder, render
from jaxvis.report.pages import report
from jaxvis.store.results import ResultWriter, read_results, write_metrics
from tests.helpers import FLOORS, make_results

LAYER = "conv1_1"
CHECKOUT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """One real results file (two layers, metrics), copied by each test that alters it."""
    units = list(range(0, 10, 2))  # make_results' units
    config = {"weights": "fake-weights", "model": {"name": "fakenet", "options": {}},
              "layers": [LAYER, "conv2_1"], "units": {LAYER: units, "conv2_1": units}}
    return make_results(tmp_path_factory.mktemp("base") / "base.h5", {LAYER: 3, "conv2_1": 10}, config=config)


def copy(base: Path, folder: Path, name: str = "r.h5") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(base, folder / name))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text, text
    return text


def no_analysis(monkeypatch):
    """Any analysis work fails the test: refusals must come before it."""
    def never(*args, **kwargs):
        raise AssertionError("analysis ran before the refusal")
    monkeypatch.setattr(analyze_module, "analyze_layer", never)
    monkeypatch.setattr(analyze_module, "model_for", never)


# ----------------------------------------------------------------------------------------------
# 1: the CSV never replaces its results file


def test_a_csv_results_name_is_refused_by_sweep_and_analyze(base, tmp_path, monkeypatch):
    with pytest.raises(JaxvisError) as err:
        ResultWriter(tmp_path / "x.csv", {"weights": "w"})
    assert "ending in .csv" in one_line(err) and "x.h5" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even the parts folder
    results = copy(base, tmp_path, "x.csv")  # e.g. renamed by hand
    before = snapshot(tmp_path)
    no_analysis(monkeypatch)
    with pytest.raises(JaxvisError) as err:
        analyze_module.analyze(results)
    assert "ends in .csv" in one_line(err)
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------------------------
# 2: nothing is read or written through links, virtual datasets or external storage


def _external_layer(f, other):
    del f[f"layers/{LAYER}"]
    f[f"layers/{LAYER}"] = h5py.ExternalLink(str(other), f"/layers/{LAYER}")


def _soft_images(f):
    del f[f"layers/{LAYER}/images"]
    f[f"layers/{LAYER}/images"] = h5py.SoftLink(f"/layers/{LAYER}/max_image")


def _external_metrics(f, other):
    del f[f"layers/{LAYER}/metrics"]
    f[f"layers/{LAYER}/metrics"] = h5py.ExternalLink(str(other), f"/layers/{LAYER}/metrics")


def _virtual_activation(f, other):
    old = f[f"layers/{LAYER}/max_activation"]
    layout = h5py.VirtualLayout(shape=old.shape, dtype=old.dtype)
    layout[:] = h5py.VirtualSource(str(other), f"/layers/{LAYER}/max_activation", shape=old.shape)
    del f[f"layers/{LAYER}/max_activation"]
    f.create_virtual_dataset(f"layers/{LAYER}/max_activation", layout)


def _external_storage(f, other):
    old = f[f"layers/{LAYER}/max_activation"]
    del f[f"layers/{LAYER}/max_activation"]
    f.create_dataset(f"layers/{LAYER}/max_activation", shape=old.shape, dtype=old.dtype,
                     external=[(str(other), 0, h5py.h5f.UNLIMITED)])


@pytest.mark.parametrize("plant, named", [
    (_external_layer, "external link"), (_soft_images, "soft link"), (_external_metrics, "external link"),
    (_virtual_activation, "virtual dataset"), (_external_storage, "external file")])
def test_links_and_foreign_storage_are_refused_by_every_command(base, tmp_path, monkeypatch, plant, named):
    results, other = copy(base, tmp_path), copy(base, tmp_path, "other.h5")
    with h5py.File(results, "r+") as f:
        plant(f, other) if plant is not _soft_images else plant(f)
    before = snapshot(tmp_path)
    no_analysis(monkeypatch)
    for command in (lambda: analyze_module.analyze(results), lambda: read_results(results),
                    lambda: report(results, tmp_path / "rep"), lambda: render(results, tmp_path / "pic"),
                    lambda: compare(results, other),
                    lambda: write_metrics(results, {LAYER: {"x": np.zeros(5)}}, {}, {})):
        with pytest.raises(JaxvisError) as err:
            command()
        assert named in one_line(err) and f"/layers/{LAYER}" in str(err.value)
    assert snapshot(tmp_path) == before  # the other file's metrics too


# ----------------------------------------------------------------------------------------------
# 3: a file another process holds is "in use", before any work


HOLD = "import h5py, sys; f = h5py.File(sys.argv[1], sys.argv[2]); print('ready', flush=True); sys.stdin.read()"


@pytest.mark.parametrize("mode", ["r", "r+"])
def test_a_file_held_by_another_process_is_in_use(base, tmp_path, monkeypatch, mode):
    results = copy(base, tmp_path)
    before = snapshot(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(results), mode], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        no_analysis(monkeypatch)
        commands = [lambda: analyze_module.analyze(results)]  # writes: refused under either lock
        if mode == "r+":  # a writer locks readers out too
            commands += [lambda: read_results(results), lambda: report(results, tmp_path / "rep"),
                         lambda: render(results, tmp_path / "pic"), lambda: compare(results, results)]
        for command in commands:
            with pytest.raises(JaxvisError) as err:
                command()
            text = one_line(err)
            assert "in use by another process" in text and "overwrite" not in text and "damaged" not in text
    finally:
        holder.stdin.close()
        holder.wait(10)
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------------------------
# 4: the metrics write survives a kill or a failed write at every step


NEW = {LAYER: {"score": np.arange(5, dtype=np.float32), "maps": np.ones((5, 4, 4), np.float32)}}
WRITES = [(h5py.Group, "create_group"), (h5py.Group, "create_dataset"), (h5py.Group, "__delitem__"),
          (h5py.Group, "move"), (h5py.File, "flush"), (h5py.AttributeManager, "__setitem__")]


def _fail_at(monkeypatch, k: int, fail) -> None:
    """Make the k-th h5py write operation call ``fail()`` instead (counting from 1; the count
    starts afresh in the forked writer)."""
    count = [0]
    for cls, name in WRITES:
        original = getattr(cls, name)

        def wrapped(*args, original=original, **kwargs):
            count[0] += 1
            if count[0] == k:
                fail()
            return original(*args, **kwargs)
        monkeypatch.setattr(cls, name, wrapped)


def _check_after(path: Path, old: dict) -> None:
    """Old or new metrics, whole; the next write proceeds and leaves no temporary behind."""
    metrics = read_results(path).metrics[LAYER]
    assert set(metrics) in (set(old), set(NEW[LAYER])), sorted(metrics)
    if set(metrics) == set(old):
        for key, value in old.items():
            np.testing.assert_array_equal(metrics[key], value)
    write_metrics(path, NEW, {}, {})
    np.testing.assert_array_equal(read_results(path).metrics[LAYER]["score"], NEW[LAYER]["score"])
    with h5py.File(path, "r") as f:
        assert sorted(k for k in f[f"layers/{LAYER}"] if k.startswith(".")) == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the writer is a forked child only where there is fork")
def test_a_kill_at_every_write_of_the_metrics_keeps_them_readable(base, tmp_path, monkeypatch):
    """The writer (a forked child) is killed at its k-th write for every k: one line, and the
    previous metrics stay readable (or the new ones are complete), and the next write proceeds."""
    old = read_results(base).metrics[LAYER]
    k = 0
    while True:
        k += 1
        path = copy(base, tmp_path / str(k))
        with monkeypatch.context() as mp:
            _fail_at(mp, k, lambda: os.kill(os.getpid(), signal.SIGKILL))
            try:
                write_metrics(path, NEW, {}, {})
                killed = False
            except JaxvisError as err:
                assert "killed (SIGKILL)" in str(err) and str(path) in str(err) and "\n" not in str(err)
                killed = True
        _check_after(path, old)
        if not killed:  # k passed the last write: every one was killed once
            break
    assert k > 8  # groups, attributes, datasets, flushes, renames, delete


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), OSError(5, "Input/output error")])
def test_an_os_error_at_every_write_of_the_metrics_is_one_line(base, tmp_path, monkeypatch, error):
    old = read_results(base).metrics[LAYER]
    k = 0
    while True:
        k += 1
        path = copy(base, tmp_path / str(k))

        def fail():
            raise error
        with monkeypatch.context() as mp:
            _fail_at(mp, k, fail)
            try:
                write_metrics(path, NEW, {}, {})
                failed = False
            except JaxvisError as err:
                assert str(path) in str(err) and error.strerror in str(err) and "\n" not in str(err)
                failed = True
        _check_after(path, old)
        if not failed:
            break


def test_a_real_write_failure_leaves_the_old_metrics_and_no_traceback(base, tmp_path):
    """HDF5 itself failing to write (a file size limit stands in for a full disk), at every size:
    one line, no traceback or crash, the old metrics readable and the next write proceeding."""
    path = copy(base, tmp_path)
    script = textwrap.dedent(f"""
        import resource, shutil, signal, sys
        import numpy as np
        import jaxvis.store.resultfile as resultfile
        from jaxvis.errors import JaxvisError
        from jaxvis.store.results import write_metrics
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        size = int(sys.argv[2])
        shutil.copy(sys.argv[1], sys.argv[1] + ".work")
        write = resultfile._write_in_place

        def limited(*args):  # the writer (a forked child) finds the disk full at this size
            resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
            write(*args)
        resultfile._write_in_place = limited
        try:
            write_metrics(sys.argv[1] + ".work", {{"{LAYER}": {{"maps": np.random.default_rng(0).normal(
                size=(5, 64, 64)).astype(np.float32)}}}}, {{}}, {{}})
        except JaxvisError as err:
            print(err)
            sys.exit(2)
    """)
    old = read_results(base).metrics[LAYER]
    size = path.stat().st_size
    for extra in (0, 4096, 8192, 40_000):
        done = subprocess.run([sys.executable, "-c", script, str(path), str(size + extra)], capture_output=True, check=False,
                              text=True, cwd=CHECKOUT, timeout=120)
        assert done.returncode == 2, done.stderr
        assert done.stdout.count("\n") == 1 and "previous metrics are kept" in done.stdout and done.stderr == ""
        work = Path(f"{path}.work")
        assert set(read_results(work).metrics[LAYER]) == set(old)
        write_metrics(work, NEW, {}, {})
        assert set(read_results(work).metrics[LAYER]) == set(NEW[LAYER])


def test_too_little_free_space_is_refused_before_writing(base, tmp_path, monkeypatch):
    path = copy(base, tmp_path)
    before = path.read_bytes()
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    with pytest.raises(JaxvisError) as err:
        write_metrics(path, NEW, {}, {})
    assert "MiB free" in one_line(err) and path.read_bytes() == before


# ----------------------------------------------------------------------------------------------
# 5: layer names that map to one file name, or to the index page, get names of their own


def test_colliding_layer_names_get_their_own_pictures_and_pages(tmp_path):
    layers = {"a b": 3, "a_b": 5, "index": 7, "A_B": 9}
    results = make_results(tmp_path / "c.h5", layers)
    pictures = render(results, tmp_path / "pic")
    each = 2 + len(FLOORS)  # a units page, a contact sheet and a grid per floor
    assert len(pictures) == len(set(pictures)) == each * len(layers)
    assert len({p.name.lower() for p in (tmp_path / "pic").iterdir()}) == each * len(layers)
    pages = report(results, tmp_path / "rep")
    assert len(pages) == len(set(pages)) == len(layers) + 1
    index = (tmp_path / "rep" / "index.html").read_text()
    assert "jaxvis report: c.h5" in index  # the index is the index, not a layer's page
    for name in layers:  # every page shows its own layer
        page = next(p for p in pages if p.name != "index.html" and f"<h1>{name}:" in p.read_text())
        assert f'href="{page.name}"' in index
    one = render(results, tmp_path / "one", layers=["a b", "a b"])  # once, named as in the whole render
    assert len(one) == each and {p.name for p in one} < {p.name for p in pictures}


# ----------------------------------------------------------------------------------------------
# 9: sizes declared by a file are checked before anything is allocated


def test_huge_declared_images_are_refused_with_bounded_memory(base, tmp_path):
    results = copy(base, tmp_path)
    with h5py.File(results, "r+") as f:
        g = f[f"layers/{LAYER}"]
        for key, shape in (("images", (5, 1, 40000, 40000, 3)), ("max_image", (5, 40000, 40000, 3))):
            del g[key]
            g.create_dataset(key, shape=shape, dtype=np.float32, chunks=(1, *shape[1:-3], 100, 100, 3),
                             compression="gzip")
    before = snapshot(tmp_path)
    script = textwrap.dedent("""
        import resource, sys
        from pathlib import Path
        from jaxvis.errors import JaxvisError
        from jaxvis.report.render import render
        from jaxvis.report.pages import report
        from jaxvis.store.results import read_results
        path, out = Path(sys.argv[1]), Path(sys.argv[2])
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)  # the imports alone
        for command in (lambda: report(path, out / "rep"), lambda: render(path, out / "pic"),
                        lambda: read_results(path)):
            try:
                command()
            except JaxvisError as err:
                print(err)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    """)
    done = subprocess.run([sys.executable, "-c", script, str(results), str(tmp_path)], capture_output=True, check=False,
                          text=True, cwd=CHECKOUT, timeout=120)
    imported, *errors, peak = done.stdout.splitlines()
    assert len(errors) == 3 and all(f"/layers/{LAYER}/images" in e and "declares" in e for e in errors), done
    # what the file costs beyond the imports (jax and the report: about 190 MB, more on a loaded machine)
    assert int(peak) - int(imported) < 100, f"peak RSS {peak} MB, {imported} MB after the imports"
    assert snapshot(tmp_path) == before  # no folder made


# ----------------------------------------------------------------------------------------------
# 11: analyze uses the weights the file was swept with, by name, or refuses


def test_analyze_refuses_other_weights_and_weights_by_path(base, tmp_path, monkeypatch):
    results = copy(base, tmp_path)
    with h5py.File(results, "r+") as f:
        config = json.loads(f.attrs["config"])
        f.attrs["config"] = json.dumps({**config, "weights_meta": {"source_sha256": "a" * 64}})
    before = snapshot(tmp_path)
    monkeypatch.setattr(analyze_module, "analyze_layer", lambda *a, **k: pytest.fail("analysis ran"))
    monkeypatch.setattr(analyze_module, "_check_centre", lambda *a: None)
    loaded = []

    def load(name, **options):
        loaded.append(name)
        return analyze_module.Model(None, None, {"source_sha256": "b" * 64})
    monkeypatch.setattr(analyze_module, "load", load)
    with pytest.raises(JaxvisError) as err:
        analyze_module.analyze(results)
    assert "source_sha256 differs" in one_line(err) and "fake-weights" in str(err.value)
    assert loaded == ["fake-weights"]
    assert snapshot(tmp_path) == before
    for path in ("../elsewhere", "/tmp/w", "sub/w", ".."):
        with h5py.File(results, "r+") as f:
            f.attrs["config"] = json.dumps({**config, "weights": path})
        before = snapshot(tmp_path)
        with pytest.raises(JaxvisError) as err:
            analyze_module.analyze(results)
        assert "by a path" in one_line(err) and snapshot(tmp_path) == before
    assert loaded == ["fake-weights"]  # nothing loaded from a path


# ----------------------------------------------------------------------------------------------
# malformed files: one line naming the field, on open, for every reader


def _set(key, value):
    def change(f):
        g = f[f"layers/{LAYER}"]
        del g[key]
        g[key] = value
    return change


def _meta(**fields):
    def change(f):
        g = f[f"layers/{LAYER}"]
        meta = json.loads(g.attrs["meta"])
        g.attrs["meta"] = json.dumps({**meta, **fields} if fields else [1, 2])
    return change


def _metrics_dataset(f):
    g = f[f"layers/{LAYER}"]
    del g["metrics"]
    g["metrics"] = np.zeros(5)


def _version(value):
    def change(f):
        f.attrs["format_version"] = value
    return change


MALFORMED = {
    "string rf": (_meta(rf="three"), "field rf"),
    "mixed-type rf": (_meta(rf=[3, "x"]), "field rf"),
    "list as meta": (_meta(), "metadata is list"),
    "metrics as a dataset": (_metrics_dataset, "metrics is not a group"),
    "short activations": (_set("activations", np.zeros((3, 3), np.float32)), "activations has 3 rows"),
    "short images": (_set("images", np.zeros((2, 3, 5, 5, 3), np.float32)), "images has 2 rows"),
    "string max_activation": (_set("max_activation", np.array([b"x"] * 5)), "max_activation"),
    "2-D unit": (_set("unit", np.zeros((5, 2), np.int64)), "unit has shape (5, 2)"),
    "string format_version": (_version("1"), "format_version is '1', not an integer"),
    "float unit": (_set("unit", np.arange(5.0)), "unit holds float64, not integers"),
    "images without colours": (_set("images", np.zeros((5, 3, 5, 5), np.float32)), "images has shape"),
    "negative radius": (_meta(radius=-1), "field radius"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_file_is_one_line_naming_the_field(base, tmp_path, case):
    change, named = MALFORMED[case]
    results = copy(base, tmp_path)
    with h5py.File(results, "r+") as f:
        change(f)
    before = snapshot(tmp_path)
    for command in (lambda: read_results(results), lambda: report(results, tmp_path / "rep"),
                    lambda: render(results, tmp_path / "pic")):
        with pytest.raises(JaxvisError) as err:
            command()
        text = one_line(err)
        assert named in text and str(results) in text
        assert "this jaxvis reads version 1" not in text or "not an integer" in text
    assert snapshot(tmp_path) == before


def test_analyze_needs_the_radius(base, tmp_path, monkeypatch):
    results = copy(base, tmp_path)
    with h5py.File(results, "r+") as f:
        g = f[f"layers/{LAYER}"]
        g.attrs["meta"] = json.dumps({k: v for k, v in json.loads(g.attrs["meta"]).items() if k != "radius"})
    before = snapshot(tmp_path)
    no_analysis(monkeypatch)
    with pytest.raises(JaxvisError) as err:
        analyze_module.analyze(results)
    assert "has no radius" in one_line(err) and snapshot(tmp_path) == before


def test_a_stale_temporary_group_is_ignored(base, tmp_path):
    results = copy(base, tmp_path)
    with h5py.File(results, "r+") as f:  # as a killed write of another version left it
        f[f"layers/{LAYER}"].create_group(".metrics.tmp").create_dataset("half", data=np.zeros(2))
    r = read_results(results)
    assert set(r.layers[LAYER]) == set(read_results(base).layers[LAYER])
    report(results, tmp_path / "rep")
    render(results, tmp_path / "pic")


# ----------------------------------------------------------------------------------------------
# names


def test_report_of_a_file_whose_name_is_not_utf8(base, tmp_path):
    name = os.fsdecode(b"r\xff.h5")
    results = copy(base, tmp_path, name)
    pages = report(results, tmp_path / "rep")
    assert "r\ufffd.h5" in (tmp_path / "rep" / "index.html").read_text(encoding="utf-8")
    assert len(pages) == 3


def test_a_failed_report_leaves_no_folder(base, tmp_path, monkeypatch):
    import jaxvis.report.pages as report_module
    monkeypatch.setattr(report_module, "_index_page", lambda *a: (_ for _ in ()).throw(UnicodeError("x")))
    with pytest.raises(UnicodeError):
        report(base, tmp_path / "new" / "rep")
    assert list(tmp_path.iterdir()) == []


def test_a_results_file_without_suffix_gets_a_pictures_folder(base, tmp_path):
    results = copy(base, tmp_path, "nosuffix")
    assert pictures_folder(results) == tmp_path / "nosuffix_pictures"
    assert pictures_folder(tmp_path / "x.h5") == tmp_path / "x"
    assert len(render(results, pictures_folder(results))) == 2 * (2 + len(FLOORS))  # two layers
    assert results.is_file()

