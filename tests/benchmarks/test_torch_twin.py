"""The PyTorch twin of the algorithm (benchmarks.torch_twin) as an oracle for jaxvis's objective:
written independently from the method, on real VGG-19, it must give the same loss and gradient
as jaxvis at a unit's start, and the same loss after one Adam step of each framework's own."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

# float32 rounding of two different summation orders: observed ~1e-7 (loss) and ~3e-7 (gradient)
LOSS_RTOL, GRAD_RTOL, STEP_RTOL = 1e-5, 1e-5, 1e-4


@pytest.mark.real
@pytest.mark.parametrize("layer,unit", [("conv1_1", 5), ("conv2_1", 17)])
def test_torch_twin_agrees_with_jaxvis(vgg19, weights_env, layer, unit):
    import jax.numpy as jnp

    from benchmarks.torch_twin import TorchUnit, compare
    from benchmarks.variants import layer_problem, unit_inputs
    from jaxvis.optimize import step as unit_step

    lp = layer_problem(vgg19, layer, images=6, steps=1)
    problem = lp.diverse
    assert problem.objective.diversity == "features" and problem.n == 6
    twin = TorchUnit(vgg19, problem, lp.radius)
    keys, directions = unit_inputs(lp, [unit])
    check = compare(vgg19, problem, lp.radius, twin, keys[0], directions[0])
    assert check["loss_rel_diff"] < LOSS_RTOL, check
    assert check["grad_rel_diff"] < GRAD_RTOL, check
    assert abs(check["loss_jaxvis"]) > 1  # a real objective: the unit responds to its random start

    # one Adam step each (jaxvis's optax step vs torch.optim.Adam), then the loss where each landed
    state = unit_step.init(keys[0], problem)
    stepped = unit_step.step(state, vgg19.network, problem, jnp.asarray(directions[0]), jnp.float32(lp.radius))
    after_j = float(unit_step.loss_fn(stepped.z, vgg19.network, problem, jnp.asarray(directions[0]),
                                jnp.float32(lp.radius)))
    after_t, taken = twin.run(np.asarray(state.z), directions[0], steps=1)
    assert taken == 1 and int(stepped.steps) == 1
    assert abs(after_t - after_j) <= STEP_RTOL * abs(after_j), (after_t, after_j)
    assert after_j < check["loss_jaxvis"]  # the step descended
    # the step moved every pixel by about the learning rate (Adam's first step is lr * sign(g))
    moved = np.abs(np.asarray(stepped.z) - np.asarray(state.z))
    assert np.median(moved) == pytest.approx(problem.optimizer.learning_rate, rel=1e-3)
