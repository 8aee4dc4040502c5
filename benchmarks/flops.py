"""FLOPs of the work: the useful FLOPs of a unit-step counted from the layer shapes, and XLA's own
count as a cross-check (docs/method.md section 7: useful = 2 x the forward convolutions of N
canvas-sized images up to the target, i.e. forward plus the input gradient)."""

from __future__ import annotations


def forward_flops(network, problem) -> dict:
    """Forward FLOPs for ONE canvas-sized image up to the target: sum over the convolutions of
    ``2 * H_out * W_out * C_out * k * k * C_in`` (pools and ReLUs are negligible and not counted)."""
    import jax
    import jax.numpy as jnp

    from jaxvis.optimize import step as unit_step

    x = jax.ShapeDtypeStruct((1, problem.canvas, problem.canvas, 3), jnp.float32)
    acts = jax.eval_shape(lambda x: unit_step.forward(network, problem, x), x)
    per_layer = {}
    for name, out in acts.pre.items():
        conv = network.convs[name] if name in getattr(network, "convs", {}) else None
        if conv is None:
            continue
        kh, kw, c_in, c_out = conv.kernel.shape
        _, h, w, _ = out.shape
        per_layer[name] = 2 * h * w * c_out * kh * kw * c_in
    return {"per_layer": per_layer, "total": sum(per_layer.values())}


def xla_flops(network, problem, radius: float) -> dict:
    """XLA's own count, as a cross-check of :func:`forward_flops`: one forward pass of one image,
    and one complete optimiser step of one unit (forward, backward, FFTs, Adam: everything)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxvis.optimize import step as unit_step
    from jaxvis.optimize.loop import cost_flops, useful_flops

    graphdef, params = nnx.split(network)

    def one_step(params, state, direction, radius):
        return unit_step.step(state, nnx.merge(graphdef, params), problem, direction, radius)

    channels = network.layer(problem.target).channels
    state = unit_step.init(jax.random.key(0), problem)
    direction = jnp.zeros((channels,), jnp.float32).at[0].set(1.0)
    out = {"forward_one_image": useful_flops(network, problem) / (2 * problem.n)}
    out["step_one_unit"] = cost_flops(
        jax.jit(one_step).lower(params, state, direction, jnp.float32(radius)).compile())
    return out
