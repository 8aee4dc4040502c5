"""Random transforms (Objective.transforms): the resampler on known maps and as a linear map with
its adjoint, the draws, independence of the chunk and of a unit's place in it, the paper's method
untouched when they are off, and the configuration (JSON, old files, command line)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvis.cli import _method, build_parser, main
from jaxvis.store.config import SweepConfig
from jaxvis.errors import JaxvisError
from jaxvis.optimize.config import Objective, Optimizer
from jaxvis.optimize.keys import image_uniforms, transform_key, unit_key
from jaxvis.optimize.loop import optimize
from jaxvis.optimize.parallel import unit_mesh
from jaxvis.optimize.step import Problem
from jaxvis.param.transform import Transforms, draw, resample
from tests.optimize.complex_cell import model as complex_cell


resample = jax.jit(resample, static_argnames="pad")


def test_resample_known_maps():
    x = np.asarray(jax.random.normal(jax.random.key(0), (7, 6, 3)))
    zero = jnp.zeros(2)
    assert np.array_equal(resample(x, zero, 1.0, 0.0), x)  # identity, bit for bit
    shifted = np.zeros_like(x)
    shifted[1:, :4] = x[:-1, 2:]  # down 1, left 2, the mean colour (0) moves in
    assert np.array_equal(resample(x, jnp.array([1.0, -2.0]), 1.0, 0.0), shifted)
    square = x[:, :6] if x.shape[0] == 6 else x[:6]
    np.testing.assert_allclose(resample(square, zero, 1.0, np.pi / 2), np.rot90(square), atol=1e-5)
    # pad 1: one mirrored column moves in, then the mean colour
    padded = np.asarray(resample(x, jnp.array([0.0, 2.0]), 1.0, 0.0, pad=1))
    assert np.array_equal(padded[:, 1], x[:, 0]) and np.array_equal(padded[:, 0], 0 * x[:, 0])
    # scale 2 about the centre of an odd canvas: the centre pixel stays, its neighbour is halfway
    odd = x[:5, :5]
    big = np.asarray(resample(odd, zero, 2.0, 0.0))
    np.testing.assert_allclose(big[2, 2], odd[2, 2], atol=1e-6)
    np.testing.assert_allclose(big[2, 3], (odd[2, 2] + odd[2, 3]) / 2, atol=1e-6)


def test_resample_is_linear_and_its_gradient_is_the_adjoint():
    """T is linear in the image; jax's gradient of <w, T x> is T^T w, so <T^T w, v> = <w, T v>."""
    k = jax.random.split(jax.random.key(1), 3)
    x, v = jax.random.normal(k[0], (2, 9, 9, 3))
    w = jax.random.normal(k[1], (9, 9, 3))
    t = dict(shift=jnp.array([0.4, -1.3]), scale=jnp.float32(1.07), angle=jnp.float32(0.3), pad=3)
    T = jax.jit(lambda image: resample(image, **t))  # noqa: E731
    np.testing.assert_allclose(T(2 * x + v), 2 * T(x) + T(v), atol=1e-5)
    adjoint_w = jax.grad(lambda image: jnp.sum(w * T(image)))(x)
    np.testing.assert_allclose(jnp.sum(adjoint_w * v), jnp.sum(w * T(v)), rtol=1e-5)
    assert float(jnp.abs(adjoint_w).sum()) > 0


def test_draws_cover_their_ranges_and_depend_on_unit_step_and_image_only():
    stream = transform_key(unit_key(0, "energy", 3, 6))
    steps = jax.jit(jax.vmap(image_uniforms, in_axes=(None, 0, None)), static_argnums=2)
    u = np.asarray(steps(stream, jnp.arange(4000), 6))  # [steps, N, 4]
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.005
    # the four draws uncorrelated (24000 rows: a correlation's standard error is 0.0065)
    assert np.abs(np.corrcoef(u.reshape(-1, 4).T) - np.eye(4)).max() < 0.03
    # image i's numbers are the same whatever N is, and differ between images, steps and units
    np.testing.assert_array_equal(image_uniforms(stream, jnp.int32(5), 2), u[5, :2])
    assert len(np.unique(u[:, :, 0])) > 0.99 * u[:, :, 0].size
    other = transform_key(unit_key(0, "energy", 4, 6))
    assert not np.array_equal(image_uniforms(other, jnp.int32(0), 6), u[0])
    t = Transforms(jitter=2, scales=(1.0, 0.9, 1.1), rotate=5.0)
    shifts, scales, angles = jax.vmap(lambda r: draw(r, t))(jnp.asarray(u.reshape(-1, 4)))
    assert set(np.unique(shifts).tolist()) == {-2, -1, 0, 1, 2}
    assert set(np.round(np.unique(scales).astype(np.float64), 4).tolist()) == {0.9, 1.0, 1.1}
    assert -np.radians(5) <= float(angles.min()) < -np.radians(4.9) and np.radians(4.9) < float(angles.max())


def _problem(model, objective, steps=20):
    info = model.network.layer("energy")
    return Problem(target="energy", centre=info.centre, canvas=info.canvas, feature_layer=None,
                   objective=objective, optimizer=Optimizer(steps=steps, segment=10),
                   convention=model.convention, mean_rgb=model.convention.mean_rgb255)


def _run(model, problem, units):
    """Units of the model complex cell (one channel: the units differ by their keys, their starts)."""
    keys = jnp.stack([unit_key(0, "energy", u, problem.n) for u in units])
    return optimize(model.network, problem, keys, np.ones((len(units), 1), np.float32), 100.0,
                    mesh=unit_mesh(jax.devices()[:1]))


def test_results_do_not_depend_on_the_chunk_or_the_place_in_it():
    """Units alone (chunks of 1) and three to a chunk, in two orders: the same images, to float
    rounding of the batch shapes (measured 4e-5 grey levels here; tests/helpers.py allows 4 for
    200 steps of VGG-19)."""
    model = complex_cell()
    problem = _problem(model, Objective(images=3, diversity="pixels", transforms=Transforms(
        jitter=1, scales=(1.0, 0.9, 1.1), rotate=10.0, pad=1)))
    alone = {u: _run(model, problem, [u]) for u in (0, 2)}
    together = _run(model, problem, [0, 1, 2])
    turned = _run(model, problem, [2, 0, 1])
    for key, tolerance in (("images", dict(rtol=0, atol=1e-3)), ("activations", dict(rtol=1e-5))):
        for u in (0, 2):
            np.testing.assert_allclose(together[key][u], alone[u][key][0], **tolerance)
        np.testing.assert_allclose(turned[key][[1, 2, 0]], together[key], **tolerance)
    # the transforms took effect: the same starts without them end elsewhere
    assert np.abs(_plain(model)["images"] - together["images"]).max() > 1.0


def _plain(model):
    """The paper's method on the complex cell: three units, N = 3, 20 steps."""
    return _run(model, _problem(model, Objective(images=3, diversity="pixels")), [0, 1, 2])


def test_the_papers_method_is_untouched_when_transforms_are_off():
    """Transforms that move nothing are no transforms (one program), and the default run gives the
    values it gave before transforms existed (stored from that code, this machine's jax)."""
    assert Objective(transforms=Transforms(pad=0, scales=(1.0, 1.0))) == Objective()
    assert Objective().transforms is None
    out = _plain(complex_cell())
    np.testing.assert_allclose(out["activations"], [[9915.599609375, 9881.2001953125, 9892.70703125],
                                                    [9897.994140625, 9921.3310546875, 9914.1376953125],
                                                    [9903.177734375, 9913.2255859375, 9903.73828125]], rtol=1e-6)
    np.testing.assert_allclose(out["images"].sum(axis=(1, 2, 3, 4)), [-7.4305567527, -5.1133428575, 16.0472543167],
                               rtol=0, atol=1e-3)


def test_transforms_in_the_config_and_on_the_command_line():
    args = build_parser().parse_args(["sweep", "--layer", "conv2_1", "--jitter", "2", "--scales",
                                      "1,0.95,1.05", "--rotate", "5", "--pad", "4"])
    objective, _ = _method(args)
    assert objective.transforms == Transforms(jitter=2, scales=(1.0, 0.95, 1.05), rotate=5.0, pad=4)
    assert _method(build_parser().parse_args(["sweep", "--layer", "conv2_1"]))[0] == Objective()
    config = SweepConfig(weights="vgg19", model=None, layers=("conv2_1",), units={"conv2_1": (0,)},
                         objective=objective)
    stored = config.to_json()
    assert stored["objective"]["transforms"] == {"jitter": 2, "scales": [1.0, 0.95, 1.05], "rotate": 5.0, "pad": 4}
    assert SweepConfig.from_json(stored) == config
    # a file written before transforms and parameterisations existed: read, upgraded, the same method
    old = SweepConfig(weights="vgg19", model=None, layers=("conv2_1",), units={"conv2_1": (0,)}).to_json()
    for key in ("transforms", "param"):
        del old["objective"][key]
    assert SweepConfig.from_json(old).objective == Objective()
    assert SweepConfig.upgrade(old) == SweepConfig.from_json(old).to_json()
    with pytest.raises(JaxvisError, match="objective transforms has unknown field.*shear"):
        SweepConfig.from_json({**stored, "objective": {**stored["objective"], "transforms": {"shear": 1}}})


@pytest.mark.parametrize("flags,message", [
    (["--scales", "1,x"], "bad --scales '1,x'"), (["--scales", "0"], "--scales must be"),
    (["--jitter", "-1"], "--jitter must be"), (["--rotate", "200"], "--rotate must be"),
    (["--pad", "2"], "--pad 2 needs --jitter")])
def test_bad_transforms_are_refused_in_one_line(flags, message, capsys):
    assert main(["sweep", "--layer", "conv2_1", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
