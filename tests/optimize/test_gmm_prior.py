"""The learned ``gmm`` prior (``jaxvis/objectives/gmm.py``, trained and cached by ``jaxvis/data/prior.py``): EM is monotone and recovers a known
mixture, the jax NLL is the Gaussian density computed independently, a mixture trained by jaxvis
(tiny, on the real CC0 photographs) ranks held-out natural crops above white and 1/f noise on the
sweep's contrast sphere, its gradient lowers it, a sweep with ``--prior gmm`` lowers it at the cost
of activation, and bad caches or canvases are one-line errors."""

from __future__ import annotations

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvis
from jaxvis.analysis.natural import random_patches
from jaxvis.cli import main
from jaxvis.convert.fetch import MANIFEST
from jaxvis.io.atomic import sha256
from jaxvis.errors import JaxvisError
from jaxvis.data import prior
from jaxvis.objectives import gmm
from jaxvis.objectives.naturalness import PRIORS, bound
from tests.helpers import SETTINGS

MEAN = np.array([123.68, 116.78, 103.94], np.float32)  # VGG-19's mean colour (any colour would do)


def sample_mixture(rng, covs, weights, n):
    which = rng.choice(len(weights), size=n, p=weights)
    chol = np.linalg.cholesky(covs)
    return np.einsum("nde,ne->nd", chol[which], rng.normal(size=(n, covs.shape[1])))


def test_em_increases_the_log_likelihood_monotonically_and_finds_the_mixture():
    rng = np.random.default_rng(1)
    d = 9  # 2x2 colour patches: 3 (2^2 - 1) coefficients
    covs = np.stack([a @ a.T + 0.1 * np.eye(d) for a in rng.normal(size=(3, d, d)) * [[[1.0]], [[4.0]], [[0.3]]]])
    weights = np.array([0.5, 0.3, 0.2])
    y = sample_mixture(rng, covs, weights, 4000)
    truth = gmm.log_likelihood(y, gmm.Mixture(np.log(weights), covs, 2)).mean()
    finals = []
    for seed in range(4):  # EM is local: seeds 0 and 1 merge two components here, 2 and 3 do not
        mixture, history = prior.fit(y, 3, patch=2, seed=seed, iterations=30, tol=-np.inf)
        steps = np.diff(history)
        assert (steps > -1e-6).all(), steps              # never lower (float32 products: 1e-6 slack)
        assert history[-1] - history[0] > 1.0             # and it did climb
        finals.append(history[-1])
    assert max(finals) > truth - 0.02                     # the best start is as good as the truth
    again, _ = prior.fit(y, 3, patch=2, seed=3, iterations=30, tol=-np.inf)
    np.testing.assert_array_equal(again.covariances, mixture.covariances)  # deterministic


def test_one_component_nll_is_the_gaussian_density_of_the_dc_free_patch():
    """Independently: the density on the subspace of patches whose channels have zero mean, with
    the pixel-space covariance's pseudo-inverse and pseudo-determinant (numpy only)."""
    rng = np.random.default_rng(2)
    p, d = 6, 108
    centre = np.eye(d) - np.kron(np.ones((p * p, p * p)) / (p * p), np.eye(3))  # remove each channel's mean
    a = rng.normal(size=(d, d)) * np.linspace(1, 20, d)
    cov_pixels = centre @ (a @ a.T / d + np.eye(d)) @ centre                    # rank 105, DC-free
    b = gmm.basis(p)
    mixture = gmm.Mixture(np.zeros(1), (b.T @ cov_pixels @ b)[None], p)
    x = rng.normal(size=(2, 8, 9, 3)) * 30 + 100
    got = np.asarray(gmm.patch_nll(jnp.asarray(x, jnp.float32), mixture))
    eig = np.linalg.eigvalsh(cov_pixels)
    logdet = np.log(eig[eig > 1e-6 * eig.max()]).sum()
    pinv = np.linalg.pinv(cov_pixels, rcond=1e-8)
    want = np.empty((2, 3, 4))
    for n in range(2):
        for i in range(3):
            for j in range(4):
                patch = x[n, i:i + p, j:j + p]
                v = (patch - patch.mean(axis=(0, 1))).reshape(-1)
                want[n, i, j] = 0.5 * v @ pinv @ v + 0.5 * logdet + 0.5 * 105 * np.log(2 * np.pi)
    np.testing.assert_allclose(got, want, rtol=2e-5)


@pytest.fixture(scope="module")
def tiny(photos, tmp_path_factory):
    """A weights root holding the bundled photographs and a tiny prior trained on them by jaxvis
    (K = 4, 4000 patches): ``(root, folder)``."""
    root = tmp_path_factory.mktemp("prior-root")
    (root / "files").mkdir()
    for p in photos:
        shutil.copy(p, root / "files" / p.name)
    return root, prior.train(root, components=4, patches=4000, iterations=12)


def test_training_records_its_provenance(tiny):
    root, folder = tiny
    mixture, meta = prior.load(folder)
    assert folder == root / "priors" / "gmm" and mixture.components == 4 and mixture.patch == gmm.PATCH
    sums = {name.rsplit("/", 1)[-1]: s for name, s in MANIFEST["photos"]["members"].items()}
    assert set(meta["train_photos"]) == set(prior.TRAIN_PHOTOS) and set(meta["held_out_photos"]) == set(prior.HELD_OUT)
    for name, src in {**meta["train_photos"], **meta["held_out_photos"]}.items():
        assert src["sha256"] == sums[name] == sha256(root / "files" / name)
        assert src["license"] == prior.LICENSES[name] and src["package"] == "scikit-image==0.26.0"
    assert (meta["components"], meta["patch"], meta["seed"], meta["patches"]) == (4, gmm.PATCH, 0, 4000)
    assert np.all(np.diff(meta["log_likelihood_history"]) > -1e-6)
    # the mixture beats a single Gaussian on the held-out photograph
    assert meta["held_out_log_likelihood"] > meta["held_out_log_likelihood_one_gaussian"] + 10
    with pytest.raises(JaxvisError, match=r"already trained .*; retrain it with train\(overwrite\)$"):
        prior.train(root, components=4, patches=4000)


def white(rng, n, c):
    return rng.normal(size=(n, c, c, 3))


def pink(rng, n, c):
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(c), np.fft.fftfreq(c), indexing="ij"))
    amp = np.where(f > 0, 1 / np.maximum(f, 1e-9), 0)[None, :, :, None]
    return np.real(np.fft.ifft2(amp * (rng.normal(size=(n, c, c, 3)) + 1j * rng.normal(size=(n, c, c, 3))), axes=(1, 2)))


def on_sphere(x, r):
    return r * x / np.linalg.norm(x.reshape(len(x), -1), axis=1)[:, None, None, None]


def test_held_out_natural_crops_rank_above_noise_at_the_same_contrast(tiny):
    root, folder = tiny
    mixture, _ = prior.load(folder)
    c, r, rng = 10, 520.0, np.random.default_rng(3)  # conv2_1's canvas and (about) its budget
    held = [root / "files" / n for n in prior.HELD_OUT]
    natural = random_patches(held, c, 100, MEAN, r, seed=1) - MEAN
    nll = {name: np.asarray(gmm.patch_nll(jnp.asarray(x, jnp.float32), mixture).mean(axis=(1, 2))) for name, x in
           {"natural": natural, "white": on_sphere(white(rng, 100, c), r),
            "pink": on_sphere(pink(rng, 100, c), r)}.items()}
    for noise in ("white", "pink"):
        auc = np.mean(nll["natural"][:, None] < nll[noise][None, :])
        assert auc > 0.95 and np.median(nll["natural"]) < np.median(nll[noise]) - 50, (noise, auc)


def test_the_registered_prior_loads_lazily_and_its_gradient_lowers_it(tiny, monkeypatch):
    root, _ = tiny
    monkeypatch.setenv("JAXVIS_WEIGHTS", str(root))
    monkeypatch.setenv("JAXVIS_PRIOR_TRAIN", "0")  # must be found, not trained again
    state = prior.arrays("gmm")

    def bound_penalty(x):
        with bound(state):
            return PRIORS["gmm"].penalty(x)

    penalty = jax.jit(bound_penalty)
    x = jnp.asarray(on_sphere(white(np.random.default_rng(4), 3, 10), 520.0), jnp.float32)
    grad = jax.jit(jax.grad(bound_penalty))
    values = [float(penalty(x))]
    for _ in range(5):  # projected gradient steps on the sphere, as the sweep's images live
        x = jnp.asarray(on_sphere(np.asarray(x - 3.0 * grad(x)), 520.0), jnp.float32)
        values.append(float(penalty(x)))
    assert (np.diff(values) < 0).all() and values[-1] < 0.8 * values[0], values


def test_a_sweep_with_the_gmm_prior_trades_activation_for_naturalness(tiny, reference_sweep, vgg19, monkeypatch):
    """One unit of the session's reference sweep (no prior) again with ``prior="gmm"``: the same
    random starts (keys depend on seed, layer, unit and N alone), more natural images, less drive."""
    _, ref = reference_sweep
    root, folder = tiny
    monkeypatch.setenv("JAXVIS_WEIGHTS", str(root))
    mixture, _ = prior.load(folder)
    data, meta = ref.layers["conv2_1"], ref.layer_meta["conv2_1"]
    row = list(data["unit"]).index(5)
    run = jaxvis.sweep(vgg19, "conv2_1", [5], prior="gmm", beta=3.0, radius=meta["radius"],
                       **SETTINGS)["conv2_1"]
    mean = np.asarray(vgg19.convention.mean_rgb255, np.float32)
    nll = [np.asarray(gmm.patch_nll(jnp.asarray(x - mean), mixture).mean(axis=(1, 2)))  # [N] per image
           for x in (data["images"][row], run["images"][0])]
    assert (nll[1] < nll[0] - 20).all(), nll
    assert run["activations"][0].mean() < data["activations"][row].mean()


def test_bad_caches_and_canvases_are_one_line_errors(tiny, tmp_path, monkeypatch, capsys):
    root, folder = tiny
    monkeypatch.setenv("JAXVIS_WEIGHTS", str(root))
    with pytest.raises(JaxvisError, match=r"scores 6x6 patches; these images are 3x3 px"):
        prior.penalty("gmm", jnp.zeros((2, 3, 3, 3)))  # conv1_1's canvas
    monkeypatch.setenv("JAXVIS_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("JAXVIS_PRIOR_TRAIN", "0")
    with pytest.raises(JaxvisError, match=r"no trained gmm prior in .*: run `jaxvis prior train`"):
        prior.penalty("gmm", jnp.zeros((1, 10, 10, 3)))
    assert main(["prior", "show"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("jaxvis: error: no trained gmm prior")
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    meta = json.loads((broken / prior.META).read_text())
    (broken / prior.META).write_text(json.dumps({**meta, "patch": 8}))
    with pytest.raises(JaxvisError, match="holds 4 components of 6x6 patches but its meta.json says 4 of 8"):
        prior.load(broken)
    (broken / prior.PARAMS).write_bytes(b"not an npz")
    with pytest.raises(JaxvisError, match="unreadable .* retrain it"):
        prior.load(broken)


def test_the_mixture_is_an_argument_and_its_checksum_is_recorded(tiny, monkeypatch):
    """The compiled loss takes the mixture's arrays as inputs (another mixture, same program), and
    the results file's config names the cached parameters by their sha256."""
    from jaxvis.store.config import SweepConfig

    root, folder = tiny
    monkeypatch.setenv("JAXVIS_WEIGHTS", str(root))
    assert prior.checksum("gmm") == sha256(folder / prior.PARAMS) and prior.checksum("tv") is None
    state = prior.arrays("gmm")
    x = jnp.asarray(np.random.default_rng(0).normal(0, 20, (2, 8, 8, 3)), jnp.float32)

    def loss(x, state):
        with bound(state):
            return PRIORS["gmm"].penalty(x)

    jitted = jax.jit(loss)
    scaled = {"inv": state["inv"] * 2, "const": state["const"]}
    np.testing.assert_allclose(jitted(x, state), prior.penalty("gmm", x), rtol=1e-5)
    assert float(jitted(x, scaled)) > float(jitted(x, state))  # read, not baked in
    assert jitted._cache_size() == 1
    cfg = SweepConfig("w", None, ("a",), {"a": (0,)}, prior_sha256=prior.checksum("gmm"))
    assert SweepConfig.from_json(cfg.to_json()).prior_sha256 == sha256(folder / prior.PARAMS)
    assert "prior_sha256" not in SweepConfig("w", None, ("a",), {"a": (0,)}).to_json()
