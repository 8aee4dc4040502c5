"""The ``gmm`` prior's mixture: trained by EM on the bundled photographs, cached under the weights
root with its provenance, and handed to the optimiser as arrays with their checksum.

:mod:`jaxvis.objectives.gmm` holds the model and the pure penalty (Zoran & Weiss 2011); this module
fits it (:func:`fit`) on colour patches of the CC0 photographs jaxvis fetches through pip
(:data:`TRAIN_PHOTOS`; :data:`HELD_OUT` is kept for evaluation), saves it (:func:`train`, ``jaxvis
prior train``) as one folder swap (:func:`jaxvis.convert.store.swap_in`), and loads it once per
process (:func:`default_mixture`; trained there on first use unless ``JAXVIS_PRIOR_TRAIN=0``).
The loop passes :func:`arrays` into the compiled program as an argument; the sweep records
:func:`checksum` in the results file's config. Pixels are dequantised (uniform noise of one grey
level) before fitting, so the likelihood is bounded and EM is plain maximum likelihood, monotone
by construction.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from jaxvis.convert.fetch import MANIFEST
from jaxvis.convert.store import EntryExistsError, recover, swap_in
from jaxvis.errors import JaxvisError
from jaxvis.io.atomic import fsync_dir, sha256, tmp_name
from jaxvis.io.images import read_image
from jaxvis.objectives import naturalness
from jaxvis.objectives.gmm import (COMPONENTS, PATCH, Mixture, basis, log_joint, log_likelihood, logsumexp)
from jaxvis.objectives.gmm import arrays as mixture_arrays
from jaxvis.weights import default_photos, version, weights_root

__all__ = ["COMPONENTS", "PATCH", "arrays", "checksum", "default_mixture", "fit", "load", "train"]

SEED = 0
PATCHES = 24_000          # training patches, drawn evenly from the training photographs
ITERATIONS = 30           # EM iterations (at most; stops earlier once the gain is below TOL)
TOL = 0.02                # nats per patch
TRAIN_PHOTOS = ("astronaut.png", "coffee.png", "rocket.jpg")
HELD_OUT = ("chelsea.png",)
# each photograph's licence as scikit-image 0.26.0 states it (skimage/data/_fetchers.py docstrings)
LICENSES = {"astronaut.png": "public domain (NASA Great Images database)",
            "coffee.png": "CC0 (photographer Rachel Michetti)",
            "rocket.jpg": "public domain (SpaceX)",
            "chelsea.png": "CC0 (photographer Stefan van der Walt)"}
ENTRY = "gmm"             # <weights root>/priors/<ENTRY>
PARAMS, META = "params.npz", "meta.json"


def photo_patches(images: list[np.ndarray], patch: int, count: int, seed: int) -> np.ndarray:
    """``[count, p*p*3]`` float64 patches (grey levels, dequantised) at random positions, drawn in
    turn from each ``[H, W, 3]`` image."""
    rng = np.random.default_rng(seed)
    out = np.empty((count, patch * patch * 3))
    for i in range(count):
        im = images[i % len(images)]
        top, left = rng.integers(0, im.shape[0] - patch + 1), rng.integers(0, im.shape[1] - patch + 1)
        out[i] = im[top:top + patch, left:left + patch].reshape(-1)
    return out + rng.uniform(-0.5, 0.5, out.shape)


def initial(y: np.ndarray, components: int, patch: int, seed: int) -> Mixture:
    """Each component the covariance of its own random subset of ``2 d`` patches (distinct
    starting points break the mixture's symmetry), equal weights."""
    rng = np.random.default_rng(seed)
    d = y.shape[1]
    covs = []
    for _ in range(components):
        s = y[rng.choice(len(y), size=2 * d, replace=False)].astype(np.float64)
        covs.append(s.T @ s / len(s))
    return Mixture(np.full(components, -np.log(components)), np.stack(covs), patch)


def em_step(y: np.ndarray, mixture: Mixture) -> tuple[Mixture, float]:
    """One EM iteration on ``y`` ``[n, d]``: (the new mixture, the mean log-likelihood of the *old*
    one, which EM never lowers from one iteration to the next)."""
    joint = log_joint(y, mixture)
    ll = logsumexp(joint, 1)
    resp = np.exp(joint - ll[:, None])                                # [n, K]
    counts = resp.sum(0)
    covs = np.empty_like(mixture.covariances)
    for k in range(len(counts)):
        z = y * np.sqrt(resp[:, k:k + 1]).astype(y.dtype)             # z^T z: one syrk
        covs[k] = (z.T @ z).astype(np.float64) / counts[k]
    covs = 0.5 * (covs + covs.transpose(0, 2, 1))
    return Mixture(np.log(counts / len(y)), covs, mixture.patch), float(ll.mean())


def fit(y: np.ndarray, components: int, patch: int, seed: int = SEED, iterations: int = ITERATIONS,
        tol: float = TOL) -> tuple[Mixture, list[float]]:
    """EM from :func:`initial`: (the mixture, the mean log-likelihood after every iteration, the
    first entry that of the initial mixture). Stops after ``iterations`` or once an iteration
    gains less than ``tol`` nats per patch.

    EM runs on globally whitened coefficients in float32 (whitening by the data's own covariance
    keeps every component well conditioned, so float32 products lose nothing that matters), the
    small matrices in float64; the mixture and the log-likelihoods are returned for ``y`` itself."""
    y = np.asarray(y, np.float64)
    lam, u = np.linalg.eigh(y.T @ y / len(y))
    white = u / np.sqrt(lam)                                          # y_w = y @ white
    unwhite = np.sqrt(lam)[:, None] * u.T                             # y = y_w @ unwhite
    offset = -0.5 * float(np.log(lam).sum())                          # log |det white|
    yw = (y @ white).astype(np.float32)
    mixture = initial(yw, components, patch, seed)
    history = []
    for _ in range(iterations):
        mixture, ll = em_step(yw, mixture)
        history.append(ll + offset)
        if len(history) > 1 and history[-1] - history[-2] < tol:
            break
    history.append(float(log_likelihood(yw, mixture).mean()) + offset)
    covs = np.einsum("dk,nde,el->nkl", unwhite, mixture.covariances, unwhite)   # unwhite^T S unwhite
    return Mixture(mixture.log_weights, 0.5 * (covs + covs.transpose(0, 2, 1)), patch), history


def entry_folder(root: Path | None = None) -> Path:
    return (root or weights_root()) / "priors" / ENTRY


def save(folder: Path, mixture: Mixture, meta: dict, overwrite: bool = False) -> Path:
    """Write ``params.npz`` and ``meta.json`` into ``folder`` as one rename (a killed save leaves
    no half entry); an existing entry is replaced only with ``overwrite``."""
    folder = Path(folder)
    recover(folder)
    if folder.exists() and not overwrite:
        raise JaxvisError(f"a gmm prior is already trained in {folder}; retrain it with train(overwrite)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(folder)
    tmp.mkdir()
    try:
        np.savez(tmp / PARAMS, log_weights=mixture.log_weights.astype(np.float64),
                 covariances=mixture.covariances.astype(np.float64), patch=np.int64(mixture.patch))
        (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
        swap_in(tmp, folder, overwrite)
    except EntryExistsError:  # a concurrent training put the same (deterministic) entry there
        if not (folder / PARAMS).is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    fsync_dir(folder.parent)
    return folder


def load(folder: Path) -> tuple[Mixture, dict]:
    """(mixture, provenance) of a trained entry; one-line errors for a missing or broken one."""
    folder = Path(folder)
    recover(folder)
    if not (folder / PARAMS).is_file() or not (folder / META).is_file():
        raise JaxvisError(f"no trained gmm prior in {folder}: run `jaxvis prior train` "
                          f"(about a minute on 2 CPU cores)")
    try:
        with np.load(folder / PARAMS) as f:
            mixture = Mixture(f["log_weights"], f["covariances"], int(f["patch"]))
        meta = json.loads((folder / META).read_text())
    except (OSError, ValueError, KeyError) as err:
        raise JaxvisError(f"the gmm prior in {folder} is unreadable ({type(err).__name__}); "
                          "retrain it with train(overwrite)") from None
    if meta.get("patch") != mixture.patch or meta.get("components") != mixture.components:
        raise JaxvisError(f"the gmm prior in {folder} holds {mixture.components} components of "
                          f"{mixture.patch}x{mixture.patch} patches but its meta.json says "
                          f"{meta.get('components')} of {meta.get('patch')}; retrain it with train(overwrite)")
    return mixture.check(), meta


def _photos(names: tuple[str, ...], root: Path | None) -> tuple[list[np.ndarray], dict]:
    paths = {p.name: p for p in default_photos(root)}
    entry = MANIFEST["photos"]
    sums = {Path(m).name: s for m, s in entry["members"].items()}
    missing = [n for n in names if n not in paths]
    if missing:
        raise JaxvisError(f"the gmm prior's photographs {', '.join(missing)} are not among the "
                          f"bundled ones ({', '.join(sorted(paths))})")
    source = {n: {"sha256": sums[n], "package": f"{entry['package']}=={entry['version']}",
                  "license": LICENSES.get(n, entry["license"])} for n in names}
    return [read_image(paths[n]) for n in names], source


def train(root: Path | None = None, *, components: int = COMPONENTS, patch: int = PATCH,
          seed: int = SEED, patches: int = PATCHES, iterations: int = ITERATIONS,
          overwrite: bool = False, folder: Path | None = None, log=None) -> Path:
    """Fit the prior on :data:`TRAIN_PHOTOS`, measure it on :data:`HELD_OUT`, cache it with its
    provenance in ``folder`` (default ``<weights root>/priors/gmm``); returns the folder."""
    folder = Path(folder) if folder else entry_folder(root)
    if folder.exists() and not overwrite:
        raise JaxvisError(f"a gmm prior is already trained in {folder}; retrain it with train(overwrite)")
    t0 = time.perf_counter()
    images, train_src = _photos(TRAIN_PHOTOS, root)
    held, held_src = _photos(HELD_OUT, root)
    b = basis(patch)
    y = photo_patches(images, patch, patches, seed) @ b
    mixture, history = fit(y, components, patch, seed, iterations)
    y_held = photo_patches(held, patch, patches // 4, seed + 1) @ b
    held_ll = float(log_likelihood(y_held, mixture).mean())
    gauss = Mixture(np.zeros(1), (y.T @ y / len(y))[None], patch)  # the one-Gaussian baseline
    meta = {"model": "zero-mean Gaussian mixture of DC-free colour patches (EPLL, Zoran & Weiss 2011)",
            "components": components, "patch": patch, "seed": seed, "patches": patches,
            "dequantisation": "uniform noise in [-0.5, 0.5] grey levels", "iterations": len(history) - 1,
            "train_photos": train_src, "held_out_photos": held_src,
            "train_log_likelihood": history[-1], "log_likelihood_history": history,
            "held_out_log_likelihood": held_ll,
            "held_out_log_likelihood_one_gaussian": float(log_likelihood(y_held, gauss).mean()),
            "units": "nats per patch of grey levels 0..255", "seconds": round(time.perf_counter() - t0, 1),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    meta["jaxvis_version"] = version()
    out = save(folder, mixture, meta, overwrite=overwrite)
    if log:
        log(f"gmm prior: K={components}, {patch}x{patch} patches, held-out log-likelihood "
            f"{held_ll:.1f} nats/patch (one Gaussian: {meta['held_out_log_likelihood_one_gaussian']:.1f}), "
            f"{meta['seconds']} s -> {out}")
    return out


@functools.lru_cache(maxsize=4)
def _default(folder: str) -> Mixture:
    path = Path(folder)
    if not (path / PARAMS).is_file() and os.environ.get("JAXVIS_PRIOR_TRAIN", "1") != "0":
        print(f"jaxvis: training the gmm prior once into {path} (about a minute on 2 CPU cores)",
              file=sys.stderr)
        try:
            train(folder=path, root=path.parents[1])
        except JaxvisError:
            if not (path / PARAMS).is_file():  # not a concurrent training that finished first
                raise
    return load(path)[0]


def default_mixture(root: Path | None = None) -> Mixture:
    """The cached prior of the weights root, loaded once per process (trained on first use unless
    ``JAXVIS_PRIOR_TRAIN=0``, then a missing prior is a one-line error naming the command)."""
    return _default(str(entry_folder(root)))


def arrays(name: str) -> dict[str, np.ndarray] | None:
    """The arrays a learned prior's penalty takes (:func:`jaxvis.objectives.naturalness.state`),
    loaded (or trained) now, outside any tracing; None for a prior without any."""
    return mixture_arrays(default_mixture()) if name == ENTRY else None


def checksum(name: str) -> str | None:
    """The sha256 of the learned prior's cached parameters (what a results file records), None for
    a prior without any."""
    if name != ENTRY:
        return None
    default_mixture()  # trained if missing
    return sha256(entry_folder() / PARAMS)


def penalty(name: str, x) -> float:
    """Prior ``name``'s penalty of images ``x`` ``[N, H, W, 3]`` outside the optimiser (tests,
    benchmarks): its arrays bound as the loop binds them."""
    with naturalness.bound(arrays(name)):
        return naturalness.PRIORS[name].penalty(x)
