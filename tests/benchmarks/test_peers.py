"""The parity gate of benchmarks.peers at a tiny size (real VGG-19 conv3_1, 2 units, N = 3): the
batched torch program and torch-lucent compute jaxvis's loss and gradient at the units' starts, and
an objective that differs (lam off by 1%) is refused before anything is timed. The peers are the
optional bench extra: without torch, or without lucent, the test skips and says which."""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed: the peers need the bench extra "
                                            "(pip install -e '.[bench]', benchmarks/README.md)")

LUCENT = importlib.util.find_spec("lucent") is not None


@pytest.fixture(scope="module")
def setup(vgg19, real_root):
    from benchmarks.peers import Setup

    with pytest.MonkeyPatch.context() as mp:  # budgets and photos under the session's weights root
        mp.setenv("JAXVIS_WEIGHTS", str(real_root))
        s = Setup(vgg19, "conv3_1", units=2, images=3, steps=1, lam=0.01)
    assert s.problem.objective.diversity == "pixels" and s.starts.shape == (2, 3, 24, 24, 3)
    return s


def _perturbed(setup, lam_factor: float):
    """The same problem with lam scaled: a peer optimising something else."""
    objective = dataclasses.replace(setup.problem.objective, lam=setup.problem.objective.lam * lam_factor)
    return dataclasses.replace(setup.problem, objective=objective)


@pytest.mark.real
def test_batched_torch_agrees_with_jaxvis(setup):
    from benchmarks.peers import BatchedTorch, parity, require_parity

    check = parity(setup, {"batched": BatchedTorch(setup.model, setup.problem, setup.radius)})
    assert check["batched"]["ok"], check
    require_parity(check)
    assert min(abs(v) for v in check["loss_jaxvis"]) > 1  # a real objective: the units respond


@pytest.mark.real
def test_parity_refuses_a_different_objective(setup):
    from benchmarks.peers import PARITY_RTOL, BatchedTorch, ParityError, parity, require_parity

    wrong = BatchedTorch(setup.model, _perturbed(setup, 1.01), setup.radius)
    check = parity(setup, {"batched": wrong})
    # the diversity term is ~1% of the loss here: lam off by 1% moves the loss by ~6e-5 (relative)
    assert not check["batched"]["ok"] and check["batched"]["loss_rel_diff"] > PARITY_RTOL, check
    with pytest.raises(ParityError, match="batched"):
        require_parity(check)


@pytest.mark.real
@pytest.mark.skipif(not LUCENT, reason="torch-lucent is not installed (the bench extra; CI does not install it)")
def test_lucent_agrees_with_jaxvis_and_a_wrong_one_is_refused(setup):
    from benchmarks.peers import LucentPeer, ParityError, parity, require_parity

    check = parity(setup, {"lucent": LucentPeer(setup.model, setup.problem, setup.radius)})
    assert check["lucent"]["ok"], check
    wrong = parity(setup, {"lucent": LucentPeer(setup.model, _perturbed(setup, 0.99), setup.radius)})
    with pytest.raises(ParityError, match="lucent"):
        require_parity(wrong)
