"""The precisions a computation can ask its convolutions for (``Optimizer.precision``,
``--precision``; :func:`jaxvis.models.ops.precision` applies them). A module of its own, without
jax or flax, so that a results file's configuration is read without the network code."""

PRECISIONS = ("float32", "tf32", "bf16")
