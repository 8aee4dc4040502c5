"""The name -> function tables of diversity terms and priors are the single source: a term or a
prior registered the way CONTRIBUTING.md says is optimised by the engine, is a valid choice
everywhere, and an unknown name fails with one line listing the choices."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jaxvis.errors import JaxvisError
from jaxvis.objectives import diversity, naturalness
from jaxvis.objectives.diversity import register_term
from jaxvis.objectives.naturalness import register_prior
from jaxvis.optimize import config
from jaxvis.optimize.config import Objective
from jaxvis.run.sweep import sweep
from tests.optimize.complex_cell import model as complex_cell_model

RADIUS = 300.0


# -- CONTRIBUTING.md, "A new diversity term": one function ...
def mean_spread(features):
    """``[N, ...]`` -> mean over pairs of the RMS difference (larger = more diverse)."""
    return diversity.mean_pair(diversity.pairwise_rms(features))


# -- CONTRIBUTING.md, "A new prior": one function ...
def green_energy(x):
    """``[N, H, W, 3]`` -> mean square of the green channel (a prior that dislikes green)."""
    return jnp.mean(jnp.square(x[..., 1]))


@pytest.fixture
def registered():
    # ... plus one table row each
    register_term("mean_spread", mean_spread, "mean over pairs of the RMS pixel difference", space="pixels")
    register_prior("green_energy", green_energy, "mean square of the green channel")
    yield
    del diversity.TERMS["mean_spread"], naturalness.PRIORS["green_energy"]


def test_a_registered_term_and_prior_are_what_the_engine_optimises(registered):
    cell = complex_cell_model()
    settings = dict(images=3, radius=RADIUS, steps=60, segment=20)
    plain = sweep(cell, "energy", [0], diversity="none", **settings)["energy"]
    lam, beta = 50.0, 2000.0  # beta: the cell's grey filters lose a third of their drive without green
    new = sweep(cell, "energy", [0], diversity="mean_spread", lam=lam, prior="green_energy", beta=beta,
                **settings)["energy"]
    x = new["images"][0] - np.asarray(cell.convention.mean_rgb255)
    # the reported loss is the objective built from the two registered functions
    want = (-new["activations"][0].mean() - lam * float(mean_spread(jnp.asarray(x)))
            + beta * float(green_energy(jnp.asarray(x))))
    np.testing.assert_allclose(new["loss"][0], want, rtol=1e-4, atol=1e-3)
    # and they did their jobs (both runs start from the same images: the keys depend on the seed,
    # layer, unit and N alone): the images are spread further and have lost their green
    spread = lambda r: float(mean_spread(jnp.asarray(r["images"][0])))
    assert spread(new) > 1.2 * spread(plain), (spread(new), spread(plain))
    green = lambda r, c: float(np.sqrt(np.mean(np.square(r["images"][0][..., c] - cell.convention.mean_rgb255[c]))))
    assert green(new, 1) < 0.5 * green(new, 0), (green(new, 1), green(new, 0))
    assert green(plain, 1) > 0.8 * green(plain, 0)  # without the prior the cell sees grey gratings


def test_registered_names_are_valid_choices_and_unknown_names_fail_in_one_line(registered):
    assert "mean_spread" in config.DIVERSITIES and "green_energy" in config.PRIORS
    assert config.DIVERSITIES == tuple(diversity.TERMS) and config.PRIORS == tuple(naturalness.PRIORS)
    Objective(diversity="mean_spread", prior="green_energy")  # valid
    with pytest.raises(JaxvisError) as e:
        Objective(diversity="spred")
    assert str(e.value) == ("unknown diversity 'spred'; valid: none, pixels, features, gram, mean_spread")
    with pytest.raises(JaxvisError) as e:
        Objective(prior="gren")
    assert str(e.value) == "unknown prior 'gren'; valid: none, tv, spectrum, gmm, green_energy"
    with pytest.raises(JaxvisError, match="'mean_spread' is already registered") as e:
        register_term("mean_spread", mean_spread, "again")
    with pytest.raises(JaxvisError, match="prior 'tv' is already registered"):
        register_prior("tv", green_energy, "again")
    with pytest.raises(JaxvisError, match="space must be one of pixels, features, not 'voxels'"):
        register_term("other", mean_spread, "x", space="voxels")
    assert "other" not in diversity.TERMS


def test_every_table_row_has_a_one_line_definition():
    for table in (diversity.TERMS, naturalness.PRIORS):
        for name, row in table.items():
            assert row.definition and "\n" not in row.definition, name
    assert {t.space for t in diversity.TERMS.values()} <= set(diversity.SPACES)
