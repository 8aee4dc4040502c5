"""The Fourier parameterisations (Objective.param fourier / lucid): exact round trips, the gradient
geometry against today's whitening, the colour basis of the natural photographs, and a run whose
images lie on the same contrast sphere as the pixel parameterisation's."""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvis.cli import _method, build_parser
from jaxvis.errors import JaxvisError
from jaxvis.optimize.config import Objective, Optimizer
from jaxvis.optimize.keys import unit_key
from jaxvis.optimize.loop import optimize
from jaxvis.optimize.parallel import unit_mesh
from jaxvis.optimize.step import Problem
from jaxvis.data.budget import colour_basis, colour_statistics, sqrt_basis
from jaxvis.param.image import (basis, coefficients, final_images, frequency_gain, hartley, images,
                                precondition, spectrum_scale)
from tests.optimize.complex_cell import model as complex_cell

# a colour basis like the photographs' (correlated channels), for the tests that need no photos
SIGMA = np.array([[3.0, 2.5, 2.0], [2.5, 3.0, 2.6], [2.0, 2.6, 3.2]]) * 1000
COLOUR = sqrt_basis(SIGMA)


def test_hartley_is_orthonormal_and_its_own_inverse():
    x = jax.random.normal(jax.random.key(0), (2, 9, 8, 3))
    np.testing.assert_allclose(hartley(hartley(x)), x, atol=1e-5)
    np.testing.assert_allclose(jnp.linalg.norm(hartley(x)), jnp.linalg.norm(x), rtol=1e-5)


@pytest.mark.parametrize("param", ["fourier", "lucid"])
def test_round_trip_image_coefficients_image(param):
    """An image on the sphere -> its coefficients -> the image again, to float precision; and
    coefficients -> image -> coefficients."""
    x = jax.random.normal(jax.random.key(1), (3, 10, 10, 3)) * 40
    radius = jnp.float32(250.0)
    x = x * radius / jnp.linalg.norm(x.reshape(3, -1), axis=1)[:, None, None, None]
    z = coefficients(x, param, COLOUR)
    np.testing.assert_allclose(final_images(z, radius, param, COLOUR), x, atol=2e-5 * float(jnp.abs(x).max()))
    np.testing.assert_allclose(images(z, radius, param, COLOUR), x, atol=2e-5 * float(jnp.abs(x).max()))
    np.testing.assert_allclose(coefficients(basis(z, param, COLOUR), param, COLOUR), z,
                               atol=2e-5 * float(jnp.abs(z).max()))


@functools.partial(jax.jit, static_argnames="param")
def _velocity(param, z, radius, g, colour):
    """The image-space velocity of gradient descent on ``<g, x(z)>``: ``J grad_z`` (a jvp)."""
    grad = jax.grad(lambda z: jnp.sum(g * images(z, radius, param, colour)))(z)
    return jax.jvp(lambda z: final_images(z, radius, param, colour), (z,), (grad,))[1]


@functools.partial(jax.jit, static_argnames="param")
def _step(param, g, colour):
    """``A A^T g`` before the sphere, ``A`` the (linear) basis of ``param``."""
    return basis(jax.grad(lambda z: jnp.sum(g * basis(z, param, colour)))(jnp.zeros_like(g)), param, colour)


def test_fourier_gradient_geometry_is_todays_whitening():
    """Gradient descent on z moves the image by J A A^T J^T grad_x, A the basis: for ``fourier``
    ``A A^T = (C C^T) x (H s^2 H)`` with ``s^2 = g``, today's whitening ``J P J^T grad_x`` where
    the colour basis is the identity (any image); with a natural colour basis, on a grey image
    under a grey gradient the step's spatial pattern is today's, channel c scaled by ``(C C^T 1)_c``."""
    radius = jnp.float32(100.0)
    k = jax.random.split(jax.random.key(2), 4)
    x = jax.random.normal(k[0], (2, 12, 12, 3))
    g = jax.random.normal(k[1], (2, 12, 12, 3))
    pixel = _velocity("pixel", x, radius, g, None)
    fourier = _velocity("fourier", coefficients(x, "fourier", np.eye(3)), radius, g, np.eye(3))
    np.testing.assert_allclose(fourier, pixel, atol=1e-5 * float(jnp.abs(pixel).max()))
    # grey: the same field in every channel; before the sphere A A^T g = (P u) x (C C^T 1)
    u = jax.random.normal(k[2], (2, 12, 12, 1))
    grey = jnp.repeat(u, 3, axis=-1)
    step = _step("fourier", grey, COLOUR)
    metric = COLOUR @ COLOUR.T
    np.testing.assert_allclose(step, precondition(grey) * (metric @ np.ones(3)), atol=1e-4)
    assert abs(np.ones(3) @ metric @ np.ones(3) / 3 - 1) < 1e-6  # grey keeps today's step size
    # lucid: the same with s^2 = 1 / max(f, 1/n)^2 (normalised), against a numpy FFT
    lucid = _step("lucid", grey, np.eye(3))
    f = np.minimum(np.arange(12), 12 - np.arange(12)) / 12
    s2 = 1 / np.maximum(np.hypot(f[:, None], f[None, :]), 1 / 12) ** 2
    want = np.real(np.fft.ifft2(np.fft.fft2(np.asarray(grey), axes=(1, 2)) * (s2 / s2.mean())[:, :, None], axes=(1, 2)))
    np.testing.assert_allclose(lucid, want, atol=1e-4)
    np.testing.assert_allclose(spectrum_scale(12, 12, "fourier") ** 2, frequency_gain(12, 12), rtol=1e-6)


def test_colour_basis_of_the_photographs(photos, tmp_path):
    """C C^T is the photos' RGB covariance up to the grey normalisation; cached with provenance."""
    cache = tmp_path / "colour.json"
    c = np.asarray(colour_basis(photos, cache))
    stored = json.loads(cache.read_text())
    (entry,) = stored.values()
    assert sorted(entry["photos"]) == sorted(p.name for p in photos) and entry["pixels"] > 1e5
    from jaxvis.io.images import read_image
    sigma, count = colour_statistics([read_image(p) for p in photos])
    assert count == entry["pixels"]
    np.testing.assert_allclose(c @ c.T, sigma / (np.ones(3) @ sigma @ np.ones(3) / 3), rtol=1e-6)
    np.testing.assert_allclose(c, c.T, atol=1e-12)  # the symmetric root
    assert np.allclose(colour_basis(photos, cache), c)  # read back from the cache


def test_a_fourier_run_stays_on_the_contrast_sphere():
    """Optimised in coefficients, the images lie on the pixel parameterisation's sphere (radius 40
    around the mean colour) and drive their units well above their random start."""
    model = complex_cell()
    info = model.network.layer("energy")
    mean = np.asarray(model.convention.mean_rgb255)
    problem = Problem(target="energy", centre=info.centre, canvas=info.canvas, feature_layer=None,
                      objective=Objective(images=2, diversity="pixels", param="fourier"),
                      optimizer=Optimizer(steps=30, segment=10), convention=model.convention,
                      mean_rgb=model.convention.mean_rgb255, colour=COLOUR)
    keys = jnp.stack([unit_key(0, "energy", u, 2) for u in range(2)])
    out = optimize(model.network, problem, keys, np.ones((2, 1), np.float32), 40.0,
                   mesh=unit_mesh(jax.devices()[:1]))
    norms = np.linalg.norm((out["images"] - mean).reshape(2, 2, -1), axis=-1)
    np.testing.assert_allclose(norms, 40.0, rtol=1e-5)
    # random coefficients through the same basis, on the same sphere, drive it far less
    rng = np.random.default_rng(0)
    random = final_images(rng.normal(size=(8, info.canvas, info.canvas, 3)).astype(np.float32), 40.0,
                          "fourier", COLOUR)
    chance = np.asarray(model(np.asarray(random) + mean, upto="energy").pre["energy"])[:, 0, 0, 0]
    assert out["activations"].min() > 2 * chance.max(), (out["activations"], chance)


def test_param_in_the_config_and_on_the_command_line():
    objective, _ = _method(build_parser().parse_args(["sweep", "--layer", "conv2_1", "--param", "lucid"]))
    assert objective == Objective(param="lucid")
    with pytest.raises(JaxvisError, match="unknown param 'wavelet'; valid: pixel, fourier, lucid"):
        Objective(param="wavelet")
    with pytest.raises(JaxvisError, match="needs the colour basis"):
        basis(jnp.zeros((1, 4, 4, 3)), "fourier")
