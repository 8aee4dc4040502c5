"""Frozen configuration of the method (DESIGN.md section 1), written next to every output."""

from __future__ import annotations

import dataclasses

from jaxvis.errors import JaxvisError

DIVERSITIES = ("none", "pixels", "features", "gram")
PRIORS = ("none", "tv", "spectrum")
PRECISIONS = ("float32", "tf32", "bf16")  # of the convolutions: jaxvis.models.ops


@dataclasses.dataclass(frozen=True)
class Objective:
    """``loss = -mean_i a(x_i) - lam * min_{i<j} d(phi(x_i), phi(x_j)) + beta * prior(x)``.

    With ``diversity="gram"`` the second term is ``+ lam * mean_{i<j} cos(G_i, G_j)``.
    ``feature_layer=None`` picks the layer two catalogue entries below the target (conv2_2 for
    conv3_1, as in the paper), or pixels where there is none.
    """

    images: int = 6
    diversity: str = "features"
    feature_layer: str | None = None
    lam: float = 0.01
    prior: str = "none"
    beta: float = 0.0

    def __post_init__(self):
        if self.diversity not in DIVERSITIES:
            raise JaxvisError(f"unknown diversity {self.diversity!r}; valid: {', '.join(DIVERSITIES)}")
        if self.prior not in PRIORS:
            raise JaxvisError(f"unknown prior {self.prior!r}; valid: {', '.join(PRIORS)}")
        if self.images < 1:
            raise JaxvisError(f"--images must be at least 1, not {self.images}")
        if self.diversity != "none" and self.images < 2:
            raise JaxvisError(f"diversity {self.diversity!r} needs at least 2 images, not {self.images} "
                              "(use --diversity none for a single maximum)")


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """Adam on z; a unit stops on its own once the EMA of its loss has not improved for more
    than ``patience`` steps (then it is frozen while the others go on).

    ``precision``: of the network's convolutions during the optimisation (``float32``, ``tf32``,
    ``bf16``; see :mod:`jaxvis.models.ops`). Reduced precision pays on accelerators with tensor
    cores; the final images are measured in float32 whatever it is.
    """

    steps: int = 1000
    learning_rate: float = 1.0
    ema: float = 0.9
    patience: int = 100
    segment: int = 50  # steps per compiled lax.scan between host checks (all stopped -> exit early)
    precision: str = "float32"

    def __post_init__(self):
        if self.steps < 1 or self.segment < 1:
            raise JaxvisError(f"--steps must be positive, not {self.steps}")
        if self.precision not in PRECISIONS:
            raise JaxvisError(f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")
