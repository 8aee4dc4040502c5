"""Activation-floor diverse sets (``Objective(floor=alpha)``) on known answers, and the trusted
single-image maximum: the analytic optimum on conv1_1 of the real VGG-19 (docs/floor.md), the
energy-model complex cell against a Gabor simple cell, restarts, the reference, bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxvis
from jaxvis.errors import JaxvisError
from jaxvis.models.geometry import LayerSpec, Op
from jaxvis.optimize import step as unit_step
from jaxvis.optimize.config import Objective, Optimizer
from jaxvis.optimize.keys import unit_key
from jaxvis.optimize.loop import optimize
from jaxvis.optimize.maximum import TIE, maximum, reference, restart_keys, winners
from jaxvis.optimize.step import Problem
from tests.optimize.complex_cell import SIZE, model as complex_cell_model, quadrature_pair

ALPHA = 0.9


def problem(model: jaxvis.Model, layer: str, objective: Objective, **optimizer) -> Problem:
    info = model.network.layer(layer)
    return Problem(target=layer, centre=info.centre, canvas=info.canvas, feature_layer=None,
                   objective=objective, optimizer=Optimizer(**optimizer), convention=model.convention,
                   mean_rgb=model.convention.mean_rgb255)


def min_pair(d: np.ndarray) -> np.ndarray:
    """``[U, N, N]`` -> ``[U]`` minimum over i < j."""
    i, j = np.triu_indices(d.shape[1], 1)
    return d[:, i, j].min(axis=1)


@pytest.fixture(scope="module")
def conv1_1(vgg19, real_root):
    """(w ``[64, 27]``, b ``[64]``, r) of conv1_1 as the engine sees it: ``a(x) = w.x + b`` for
    the image deviation ``x`` (the input convention is affine), measured through the network."""
    from jaxvis.data.budget import radius
    from jaxvis.weights import default_photos

    r = radius(3, vgg19.convention.mean_rgb255, default_photos(real_root), real_root / "budgets.json")
    p = problem(vgg19, "conv1_1", Objective(images=1, diversity="none"))
    eye = jnp.eye(64)

    def a(x, u):  # the unit's pre-ReLU response to one image deviation [3, 3, 3]
        return unit_step._response(vgg19.network, p, x[None], eye[u])[0][0]

    x0 = jnp.zeros((3, 3, 3))
    b = np.array([a(x0, u) for u in range(64)])
    w = np.array([np.asarray(jax.grad(a)(x0, u)).ravel() for u in range(64)])
    x1 = jax.random.normal(jax.random.key(0), (3, 3, 3)) * 50
    np.testing.assert_allclose([a(x1, u) for u in range(4)], w[:4] @ np.asarray(x1).ravel() + b[:4],
                               rtol=1e-4)  # affine indeed
    return w, b, r


def analytic_min_distance(w, b, r, n: int, alpha: float):
    """(docs/floor.md) ``[U]`` the largest min pairwise RMS distance of n images on the sphere
    ``|x| = r`` (27 dims) with ``w.x + b >= alpha a*``, and ``[U]`` whether the floor binds."""
    big_r = r * np.linalg.norm(w, axis=1)
    a_star = big_r + b
    t = (alpha * a_star - b) / big_r  # cosine to w of the cap's rim
    binds = (a_star > 0) & (t > 0)
    d = r * np.sqrt(2 * n / (n - 1)) * np.sqrt(1 - np.clip(t, 0, 1) ** 2) / np.sqrt(w.shape[1])
    return d, binds, a_star


@pytest.mark.parametrize("n,start", [(2, "maximum"), (6, "maximum"), (12, "maximum"), (6, "random")])
def test_conv1_1_floor_sets_reach_the_analytic_optimum(vgg19, conv1_1, n, start):
    """All 64 units in one call: the min pairwise pixel distance within 2% of the closed form
    (N points as a regular simplex on the rim of the cap a >= alpha a*), every image at its floor;
    from starts next to the analytic maximum ``r w / |w|`` (the sweep's ``floor_start``) and from
    random ones (on a linear unit the cap is one basin: both reach the optimum)."""
    w, b, r = conv1_1
    want, binds, a_star = analytic_min_distance(w, b, r, n, ALPHA)
    assert binds.sum() == 64  # at alpha = 0.9 the floor binds for every conv1_1 unit (docs/floor.md)
    p = problem(vgg19, "conv1_1", Objective(images=n, diversity="pixels", floor=ALPHA), steps=400, segment=100)
    keys = jnp.stack([unit_key(0, "conv1_1", u, n) for u in range(64)])
    best = (r * w / np.linalg.norm(w, axis=1, keepdims=True)).reshape(64, 3, 3, 3)
    out = optimize(vgg19.network, p, keys, np.eye(64, dtype=np.float32), r, maxima=a_star,
                   starts=best if start == "maximum" else None)
    got = min_pair(out["pixel_distances"])
    ratio = got / want
    fractions = out["activations"] / a_star[:, None]
    assert ratio.min() > 0.98, (np.argsort(ratio)[:5], np.sort(ratio)[:5])
    assert fractions.min() >= ALPHA - 0.005, fractions.min()
    assert ratio.max() < 1.01  # a set beyond the bound would have broken its floor
    # the floor binds: every image sits on the rim, not inside the cap
    assert np.abs(fractions - ALPHA).max() < 0.005


class SimpleCell(jaxvis.Network):
    """A Gabor simple cell: the even filter of the complex cell's quadrature pair; its own ReLU
    follows and is not part of the optimised (pre-ReLU) response."""

    name = "simple-cell"

    def __init__(self):
        self.filter = nnx.Param(jnp.asarray(quadrature_pair()[..., :1]))

    def specs(self):
        return (LayerSpec("simple", 1, (Op(SIZE, 1, "VALID"),)),)

    def forward(self, x, record):
        s = jax.lax.conv_general_dilated(x, self.filter[...], (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        record("simple", s, jax.nn.relu(s))


def test_complex_cell_floor_set_spans_the_phases_and_a_simple_cells_stays_tight():
    """alpha = 0.95: the energy model's set is at least as spread as N phases equally spaced on its
    circle of maximal images, 2 r sin(pi/N) / sqrt(D) RMS (D = 11 x 11 x 3); a linear (simple)
    cell's stays on a small cap (docs/floor.md: sqrt(2N/(N-1)) sqrt(1 - 0.95^2) r / sqrt(D)).
    Measured (N = 6): complex 16.7 against 15.7 for the circle, simple 7.49 against 7.62."""
    r, n, alpha = 300.0, 6, 0.95
    circle = 2 * r * np.sin(np.pi / n) / np.sqrt(SIZE * SIZE * 3)
    sets = {}
    for name, model, layer in (("complex", complex_cell_model(), "energy"),
                               ("simple", jaxvis.Model(SimpleCell(), jaxvis.InputConvention(), {"name": "simple"}),
                                "simple")):
        single = problem(model, layer, Objective(images=1, diversity="none"), steps=300, segment=100)
        best = maximum(model.network, single, jnp.stack([unit_key(0, layer, 0, 1)]), np.eye(1), r, restarts=2)
        floor = problem(model, layer, Objective(images=n, diversity="pixels", floor=alpha), steps=500,
                        segment=100)
        out = optimize(model.network, floor, jnp.stack([unit_key(0, layer, 0, n)]), np.eye(1, dtype=np.float32),
                       r, maxima=best["activation"], starts=best["image"] - np.float32(floor.mean_rgb))
        assert (out["activations"][0] / best["activation"][0]).min() >= alpha - 0.005, out["steps"]
        sets[name] = (min_pair(out["pixel_distances"])[0], best["activation"][0])
    # the maxima are the analytic ones: r^2 for the energy model, r |filter| = r for the Gabor
    np.testing.assert_allclose([sets["complex"][1], sets["simple"][1]], [r * r, r], rtol=2e-3)
    assert sets["complex"][0] >= circle, (sets["complex"][0], circle)
    cap = np.sqrt(2 * n / (n - 1)) * np.sqrt(1 - alpha ** 2) * r / np.sqrt(SIZE * SIZE * 3)
    assert abs(sets["simple"][0] / cap - 1) < 0.02, (sets["simple"][0], cap)
    # more than twice as tight: the bound is 2 sin(pi/6) / (sqrt(12/5) sqrt(1 - 0.95^2)) = 2.07
    assert sets["simple"][0] < sets["complex"][0] / 2, (sets["simple"][0], sets["complex"][0])


def test_floor_sets_show_the_phase_invariance_of_a_complex_cell_and_not_of_a_simple_one():
    """The sweep as users run it (maximum, lambda set, floor set from its three default starts) on
    the energy-model complex cell and the Gabor simple cell, alpha = 0.9, N = 6: the complex cell's
    set covers >= 240 degrees of phase around its best image (``floor_phase_spread``; six equally
    spaced phases cover 300), the simple cell's < 45; every image keeps its floor exactly (the kept
    set is feasible); the certificate holds every start and says the starts agree."""
    from jaxvis.analysis.phase import phase_spread
    from jaxvis.analysis.readout import agreement

    r, n = 300.0, 6
    cells = {"complex": (complex_cell_model(), "energy"),
             "simple": (jaxvis.Model(SimpleCell(), jaxvis.InputConvention(), {"name": "simple"}), "simple")}
    spread, agreed = {}, {}
    for name, (model, layer) in cells.items():
        out = jaxvis.sweep(model, layer, "0", floors=(ALPHA,), radius=r, images=n, diversity="pixels", steps=600,
                           restarts=2, compile_cache=False)[layer]
        assert out["floor_feasible"].all()
        fractions = out["floor_activations"][:, 0] / out["max_activation"][:, None]
        assert fractions.min() >= ALPHA, fractions
        # three starts that agree: no second round (its three columns hold starts that never ran)
        assert out["floor_start_diversity"].shape == (1, 1, 6) and out["floor_start_feasible"][..., :3].all()
        assert not out["floor_start_feasible"][..., 3:].any() and (out["floor_start_steps"][..., 3:] == 0).all()
        # the kept set is the winning start's
        np.testing.assert_allclose(out["floor_start_pixel_min"][0, 0, out["floor_start"][0, 0]],
                                   min_pair(out["floor_pixel_distances"][:, 0])[0], rtol=1e-5)
        spread[name] = phase_spread(out["max_image"], out["floor_images"], model.convention.mean_rgb255)[0, 0]
        agreed[name] = agreement(out["floor_start_diversity"], out["floor_start_feasible"])[0, 0]
    assert spread["complex"] >= 240, spread
    assert spread["simple"] < 45, spread
    assert min(agreed.values()) >= 0.95, agreed


def test_a_unit_whose_starts_disagree_runs_every_start_again_from_fresh_draws(monkeypatch):
    """The second round (``FLOOR_ROUNDS``): a unit whose starts disagree runs its K starts once more
    from fresh random draws; the certificate holds all 2K, the first K exactly those of a sweep
    without the second round, and the kept set is the widest feasible of all 2K."""
    import sys
    sweep_module = sys.modules["jaxvis.run.sweep"]
    kw = dict(floors=(ALPHA,), radius=300.0, images=4, diversity="pixels", steps=150, restarts=1,
              compile_cache=False)
    monkeypatch.setattr(sweep_module, "FLOOR_ROUNDS", 1)
    once = jaxvis.sweep(complex_cell_model(), "energy", "0", **kw)["energy"]
    monkeypatch.setattr(sweep_module, "FLOOR_ROUNDS", 2)
    monkeypatch.setattr(sweep_module, "threshold", lambda name: 1.01)  # no two starts agree enough
    twice = jaxvis.sweep(complex_cell_model(), "energy", "0", **kw)["energy"]
    d, feasible = twice["floor_start_diversity"][0, 0], twice["floor_start_feasible"][0, 0]
    assert d.shape == (6,) and np.isfinite(d).all() and (twice["floor_start_steps"][0, 0] > 0).all()
    np.testing.assert_allclose(d[:3], once["floor_start_diversity"][0, 0], rtol=1e-6)
    assert not np.array_equal(d[3:], d[:3])  # fresh draws, not the first round again
    won = int(twice["floor_start"][0, 0])
    assert feasible[won] and d[won] >= np.max(np.where(feasible, d, -np.inf)) * (1 - TIE)


def test_phase_spread_is_the_arc_the_images_cover_on_the_phase_circle():
    """Known answers: six images at 0, 60, ..., 300 degrees of phase cover 300 degrees; copies of
    the best image cover 0; images at +-30 degrees cover 60."""
    from jaxvis.analysis.phase import phase_spread
    from jaxvis.param.phase import rotate

    best = 100 * quadrature_pair()[..., 0]  # [11, 11, 3] an even Gabor: its 90-degree turn is the odd one

    def turned(*degrees):
        return np.stack([np.asarray(rotate(jnp.asarray(best), jnp.float32(np.radians(d)))) for d in degrees])

    sets = np.stack([turned(0, 60, 120, 180, 240, 300), turned(*[0] * 6), turned(30, -30, 30, -30, 30, -30)])
    got = phase_spread(best[None] + 128, sets[None] + 128, np.full(3, 128, np.float32))
    np.testing.assert_allclose(got[0], [300, 0, 60], atol=0.5)


class TwoBasins(jaxvis.Network):
    """``a(x) = max(g1.x, 0.6 g2.x)`` for the orthonormal Gabor pair (g1, g2): on the sphere
    ``|x| = r`` its maximum is ``r`` at ``x = r g1``, and a second basin peaks at ``0.6 r`` at
    ``r g2``, below a floor of 0.9. A random start puts each image in either basin with
    probability 1/2 (the boundary ``g1.x = 0.6 g2.x`` is a plane through the origin)."""

    name = "two-basins"

    def __init__(self):
        self.filters = nnx.Param(jnp.asarray(quadrature_pair()))

    def specs(self):
        return (LayerSpec("two", 1, (Op(SIZE, 1, "VALID"),)),)

    def forward(self, x, record):
        s = jax.lax.conv_general_dilated(x, self.filters[...], (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        record("two", jnp.maximum(s[..., :1], 0.6 * s[..., 1:]))


def test_images_trapped_in_a_lower_basin_restart_next_to_the_most_active_one(monkeypatch):
    """alpha = 0.9 on :class:`TwoBasins`: from random starts some images climb into the 0.6 r basin,
    where no multiplier can lift them to the floor. Without restarts (``FLOOR_STUCK`` beyond the
    run) they stay there; with them (the default) each such image restarts next to the set's most
    active image, and from random starts as from the maximum every image keeps its floor and the set
    reaches the analytic optimum of the cap around g1 (docs/floor.md: sqrt(2N/(N-1)) sqrt(1 -
    alpha^2) r / sqrt(D))."""
    r, n, alpha = 300.0, 6, ALPHA
    model = jaxvis.Model(TwoBasins(), jaxvis.InputConvention(), {"name": "two-basins"})
    p = problem(model, "two", Objective(images=n, diversity="pixels", floor=alpha), steps=600, segment=100)
    best = r * quadrature_pair()[None, ..., 0]  # [1, 11, 11, 3]: the maximum's deviation, a* = r
    keys = jnp.stack([unit_key(0, "two", 0, n)])

    def run(start):
        return optimize(model.network, p, keys, np.eye(1, dtype=np.float32), r, maxima=np.array([r]),
                        starts=None if start == "random" else best)

    with monkeypatch.context() as m:  # the constant is read when the program is traced
        m.setattr(unit_step, "FLOOR_STUCK", 10 ** 6)
        jax.clear_caches()
        trapped = run("random")["activations"][0] / r
    jax.clear_caches()
    assert trapped.min() < 0.7, trapped  # at most 0.6 r: the lower basin's maximum
    cap = np.sqrt(2 * n / (n - 1)) * np.sqrt(1 - alpha ** 2) * r / np.sqrt(SIZE * SIZE * 3)
    for start in ("random", "maximum"):
        got = run(start)
        assert bool(got["feasible"][0]), start
        assert (got["activations"][0] / r).min() >= alpha, (start, got["activations"][0] / r)
        d = min_pair(got["pixel_distances"])[0]
        assert abs(d / cap - 1) < 0.02, (start, d, cap)


def test_starts_of_the_wrong_shape_and_unknown_floor_starts_are_refused_in_one_line(vgg19):
    p = problem(vgg19, "conv1_1", Objective(images=2, diversity="pixels", floor=0.9), steps=1)
    keys = jnp.stack([unit_key(0, "conv1_1", 0, 2)])
    with pytest.raises(JaxvisError, match=r"starts must be \[units, canvas, canvas, 3\] = \[1, 3, 3, 3\] \(one "
                                          r"image per direction\) or \[units, images, canvas, canvas, 3\] = "
                                          r"\[1, 2, 3, 3, 3\]; got shape \(1, 4, 4, 3\)"):
        optimize(vgg19.network, p, keys, np.eye(64, dtype=np.float32)[:1], 100.0, maxima=np.ones(1),
                 starts=np.zeros((1, 4, 4, 3)))
    with pytest.raises(JaxvisError, match="unknown floor start 'best'") as e:
        jaxvis.sweep(vgg19, "conv1_1", "0", floors=(0.9,), floor_starts="maximum,best", steps=1)
    assert "\n" not in str(e.value) and "maximum" in str(e.value)


def test_maximum_is_the_best_restart_and_restart_0_is_the_single_run(vgg19):
    """conv1_2 (not convex in the image: restarts end differently): restart 0 of each unit is
    exactly the plain N = 1 run with the unit's key, the maximum is the best restart, and a unit's
    result does not depend on its chunk."""
    info = vgg19.network.layer("conv1_2")
    r = 300.0
    p = problem(vgg19, "conv1_2", Objective(images=1, diversity="none"), steps=40, segment=20)
    units = [3, 8, 21]
    keys = jnp.stack([unit_key(0, "conv1_2", u, 1) for u in units])
    eye = np.eye(info.channels, dtype=np.float32)[units]
    both = maximum(vgg19.network, p, keys, eye, r, restarts=3)
    plain = optimize(vgg19.network, p, keys, eye, r)
    np.testing.assert_allclose(both["restart_activations"][:, 0], plain["activations"][:, 0], rtol=1e-5)
    acts = both["restart_activations"]
    np.testing.assert_array_equal(both["activation"], acts[np.arange(3), both["restart"]])
    # the best restart, up to near-ties (TIE), which keep the lower restart
    assert (acts.max(axis=1) - both["activation"] <= TIE * np.abs(both["activation"])).all()
    assert len(set(np.round(both["restart_activations"][0], 3))) == 3  # the restarts differ
    alone = maximum(vgg19.network, p, keys[1:2], eye[1:2], r, restarts=3)
    np.testing.assert_allclose(alone["restart_activations"][0], both["restart_activations"][1], rtol=1e-5)
    np.testing.assert_allclose(alone["image"][0], both["image"][1], rtol=1e-4, atol=1e-3)
    # restart k > 0 folds k into the unit's key: restart 0 is the key itself
    rk = restart_keys(keys[:1], 3)
    assert jnp.array_equal(jax.random.key_data(rk[0]), jax.random.key_data(keys[0]))
    assert jnp.array_equal(jax.random.key_data(rk[2]), jax.random.key_data(jax.random.fold_in(keys[0], 2)))


def test_reference_is_the_best_known_response_and_says_when_a_diverse_image_won():
    ref, raised = reference(np.array([10.0, 5.0, -1.0]), np.array([[9.0, 9.5], [5.2, 4.0], [-2.0, -3.0]]))
    np.testing.assert_array_equal(ref, [10.0, 5.2, -1.0])
    np.testing.assert_array_equal(raised, [False, True, False])
    # a tie to rounding is not a raise: the single-image maximum stays the reference
    ref, raised = reference(np.array([10.0]), np.array([[10.0 * (1 + TIE / 2), 3.0]]))
    assert ref[0] == 10.0 and not raised[0]
    assert winners(np.array([[1.0, 1.0 + TIE / 2, 0.5], [1.0, 2.0, 2.0 + TIE]])).tolist() == [0, 1]


def test_bad_floors_are_refused_in_one_line(vgg19):
    for bad in (0.0, 1.0, -0.1, 1.5, float("nan")):
        with pytest.raises(JaxvisError, match="Objective.floor must lie strictly between 0 and 1") as e:
            Objective(floor=bad)
        assert "\n" not in str(e.value)
    with pytest.raises(JaxvisError, match="a floor needs a diversity term and at least 2 images, not Objective.images 1"):
        Objective(images=1, floor=0.9)
    with pytest.raises(JaxvisError, match="a floor needs a diversity term .* Objective.diversity none"):
        Objective(images=4, diversity="none", floor=0.9)
    p = problem(vgg19, "conv1_1", Objective(images=2, diversity="pixels", floor=0.9), steps=1)
    keys = jnp.stack([unit_key(0, "conv1_1", 0, 2)])
    with pytest.raises(JaxvisError, match="maxima are needed exactly when the objective has a floor"):
        optimize(vgg19.network, p, keys, np.eye(64, dtype=np.float32)[:1], 100.0)
    with pytest.raises(JaxvisError, match=r"maxima must be \[units\] = \[1\], one per direction; got shape \(2,\)"):
        optimize(vgg19.network, p, keys, np.eye(64, dtype=np.float32)[:1], 100.0, maxima=np.ones(2))
    with pytest.raises(JaxvisError, match="a single-image maximum needs images=1"):
        maximum(vgg19.network, p, keys, np.eye(64, dtype=np.float32)[:1], 100.0)


def test_the_widest_feasible_start_wins_and_near_ties_keep_the_earlier_start():
    """``floor_set`` on three starts of four units: a wider set that broke its floor loses to a
    feasible one; among feasible sets the widest wins unless it is within TIE of an earlier one;
    with no feasible start the one closest to its floor is returned, marked infeasible. The
    certificate keeps every start's numbers, and ``agreement`` reads them."""
    from jaxvis.analysis.readout import agreement
    from jaxvis.run.sweep import floor_set

    n = 2
    diversity = np.array([[5.0, 9.0, 6.0], [5.0, 5.0 * (1 + TIE / 2), 4.0], [3.0, 2.0, 1.0], [4.0, 4.1, 8.0]])
    feasible = np.array([[1, 0, 1], [1, 1, 1], [0, 0, 0], [1, 1, 1]], bool)
    fraction = np.array([[0.9, 0.8, 0.9], [0.9, 0.9, 0.9], [0.7, 0.85, 0.6], [0.9, 0.9, 0.9]])
    maxima = np.array([10.0, 10.0, 10.0, 10.0])
    d = np.zeros((4, 3, n, n), np.float32)
    d[..., 0, 1] = d[..., 1, 0] = diversity + 1  # pixel distances: their own numbers
    rows = {"images": np.arange(12, dtype=np.float32).reshape(12, 1, 1, 1, 1) * np.ones((12, n, 1, 1, 3)),
            "activations": np.repeat(fraction.reshape(12, 1) * 10.0, n, axis=1),
            "pixel_distances": d.reshape(12, n, n), "feature_distances": d.reshape(12, n, n),
            "steps": np.arange(12, dtype=np.int32), "stop_reason": np.ones(12, np.int8),
            "feasible": feasible.reshape(12), "diversity": diversity.reshape(12).astype(np.float32)}
    out = floor_set(rows, 3, maxima)
    assert out["start"].tolist() == [2, 0, 1, 2]
    assert out["feasible"].tolist() == [True, True, False, True]
    np.testing.assert_array_equal(out["images"][:, 0, 0, 0, 0], [2, 3, 7, 11])  # the winning rows
    np.testing.assert_allclose(out["start_pixel_min"], diversity + 1)
    np.testing.assert_array_equal(out["start_feasible"], feasible)
    np.testing.assert_allclose(out["start_fraction_min"], fraction, rtol=1e-6)
    agreed = agreement(out["start_diversity"][:, None], out["start_feasible"][:, None])[:, 0]
    np.testing.assert_allclose(agreed, [5 / 6, 1 / (1 + TIE / 2), np.nan, 4.1 / 8], rtol=1e-6)
