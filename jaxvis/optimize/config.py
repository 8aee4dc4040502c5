"""Frozen configuration of the method (docs/method.md, sections 1 and 4), written next to every output."""

from __future__ import annotations

import dataclasses
import math

from jaxvis.errors import JaxvisError, unknown
from jaxvis.models.precision import PRECISIONS  # of the convolutions
from jaxvis.objectives.diversity import TERMS
from jaxvis.objectives.naturalness import PRIORS as PRIOR_TABLE
from jaxvis.objectives.response import RESPONSES, unknown_response
from jaxvis.param.image import PARAMS
from jaxvis.param.transform import Transforms


FLOOR_METHOD = 4  # the floor optimiser's version, in every floored results file's config
# a unit whose starts disagree (the runner-up feasible start below the read-out's floor_agreement of
# the best, docs/floor.md) runs every start once more from fresh random draws, and its certificate
# holds all 2K starts: on the unsettled conv3_1 units of method 3 the second round found the best
# set's width again in 5 of 5 (docs/floor.md "Not yet settled"); one start (K = 1) certifies nothing,
# so it gets no second round
FLOOR_ROUNDS = 2
# Where a floor set's images start (``sweep(floor_starts=...)``, docs/floor.md "Where the images
# start"); the sweep runs one set per start, all in one batched call, and keeps the widest feasible:
# ``maximum``: every image next to the unit's best known image (its own random draw mixed in);
# ``phase``: image i next to that image turned in phase by 2 pi i / N about its dominant orientation
#   (:func:`jaxvis.param.phase.rotate`): a phase-invariant unit's widest sets lie on that circle;
# ``diverse``: image i next to image i of the paper's lambda set;
# ``random``: the random draw alone. Above ReLUs a random start often lands in a basin whose local
#   maximum lies below the floor, where no multiplier can lift it (docs/floor.md).
FLOOR_STARTS = ("maximum", "phase", "diverse", "random")
FLOOR_START = ("maximum", "phase", "diverse")  # the default: three independent starts
# the diversity term a floor set maximises unless told otherwise (sweep(floor_diversity=...)): the
# read-out's diversity class compares a floor set's min pixel distance with the analytic optimum of
# an affine unit (docs/floor.md), so the set must maximise that same quantity to be comparable
FLOOR_DIVERSITY = "pixels"


def __getattr__(name: str):
    # the valid names, read from the tables at the moment they are asked for, so that terms and
    # priors registered later (jaxvis.objectives) are valid choices too
    if name == "DIVERSITIES":
        return tuple(TERMS)
    if name == "PRIORS":
        return tuple(PRIOR_TABLE)
    if name == "RESPONSE_NAMES":
        return tuple(RESPONSES)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclasses.dataclass(frozen=True)
class Objective:
    """What one unit's N images optimise.

    ``floor=None`` (the paper's objective, the default):
    ``loss = -mean_i a(x_i) - lam * D(phi(x)) + beta * prior(x)``, with ``D`` the diversity term
    (:data:`jaxvis.objectives.diversity.TERMS`; the paper's is ``min_{i<j} d(phi(x_i), phi(x_j))``;
    ``gram`` is ``1 - mean_{i<j} cos(G_i, G_j)``).

    ``floor=alpha`` (0 < alpha < 1): maximise ``D`` subject to ``a(x_i) >= alpha * a*`` for every
    image, ``a*`` the unit's single-image maximum passed to ``optimize(..., maxima=...)``; ``lam``
    is unused (an augmented Lagrangian, :func:`jaxvis.optimize.step.loss_fn`).

    ``feature_layer=None`` picks the layer two catalogue entries below the target (conv2_2 for
    conv3_1, as in the paper), or pixels where there is none.

    ``param``: the image parameterisation (:data:`jaxvis.param.image.PARAMS`; ``pixel``, the
    paper's, or decorrelated colour in a Fourier basis, ``fourier`` / ``lucid``), always on the
    same contrast sphere. ``transforms``: random jitter, scale and rotation of every image at
    every step before the network sees it (:class:`jaxvis.param.transform.Transforms`); None
    (the default, the paper's method) or transforms that move nothing: none.

    ``response``: what the unit's activation ``a(x)`` is, by name
    (:data:`jaxvis.objectives.response.RESPONSES`): ``centre`` (the paper's: the direction at the
    centre of the layer's output), ``channel`` (its spatial mean over the whole output) or one
    registered with ``register_response``. ``canvas``: the image size in pixels; None (default)
    the layer's catalogue canvas (its receptive field, centred); larger canvases suit ``channel``.
    The contrast budget ``r`` is that of the canvas used.
    """

    images: int = 6
    diversity: str = "features"
    feature_layer: str | None = None
    lam: float = 0.01
    prior: str = "none"
    beta: float = 0.0
    floor: float | None = None
    param: str = "pixel"
    transforms: Transforms | None = None
    response: str = "centre"
    canvas: int | None = None

    def __post_init__(self):
        if self.response not in RESPONSES:
            raise unknown_response(self.response)
        if self.canvas is not None and (isinstance(self.canvas, bool) or not isinstance(self.canvas, int)
                                        or self.canvas < 1):
            raise JaxvisError(f"Objective.canvas must be a positive number of pixels (or unset: the layer's own), "
                              f"not {self.canvas!r}")
        if self.transforms is not None and not isinstance(self.transforms, Transforms):
            raise JaxvisError(f"transforms must be a Transforms or None, not {type(self.transforms).__name__}")
        if self.transforms is not None and self.transforms.still:
            object.__setattr__(self, "transforms", None)  # one compiled program for "no transforms"
        if self.param not in PARAMS:
            raise unknown("param", self.param, PARAMS)
        if self.diversity not in TERMS:
            raise unknown("diversity", self.diversity, TERMS)
        if self.prior not in PRIOR_TABLE:
            raise unknown("prior", self.prior, PRIOR_TABLE)
        if self.images < 1:
            raise JaxvisError(f"Objective.images must be at least 1, not {self.images}")
        if self.floor is not None:
            if not 0 < self.floor < 1:
                raise JaxvisError(f"Objective.floor must lie strictly between 0 and 1 (a fraction of the unit's "
                                  f"maximum), not {self.floor}")
            if self.images < 2 or self.diversity == "none":
                raise JaxvisError(f"a floor needs a diversity term and at least 2 images, not "
                                  f"Objective.images {self.images}, Objective.diversity {self.diversity}")
        _finite("Objective.lam", self.lam, minimum=0.0)
        _finite("Objective.beta", self.beta, minimum=0.0)
        if self.diversity != "none" and self.images < 2:
            raise JaxvisError(f"diversity {self.diversity!r} needs at least 2 images, not {self.images} "
                              "(use Objective.diversity none for a single maximum)")


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
        if self.steps < 1:
            raise JaxvisError(f"Optimizer.steps must be positive, not {self.steps}")
        if self.segment < 1:
            raise JaxvisError(f"Optimizer.segment must be positive, not {self.segment}")
        if self.patience < 0:
            raise JaxvisError(f"Optimizer.patience must be 0 or more steps, not {self.patience}")
        _finite("Optimizer.learning_rate", self.learning_rate, minimum=0.0, strict=True)
        if not 0 <= self.ema < 1:
            raise JaxvisError(f"Optimizer.ema must lie in [0, 1) (the loss average's decay per step), not {self.ema}")
        if self.precision not in PRECISIONS:
            raise unknown("precision", self.precision, PRECISIONS)


def _finite(name: str, value: float, minimum: float, strict: bool = False) -> None:
    """Refuse a setting that is not a finite number at or above (``strict``: above) ``minimum``."""
    ok = math.isfinite(value) and (value > minimum if strict else value >= minimum)
    if not ok:
        bound = f"above {minimum:g}" if strict else f"{minimum:g} or more"
        raise JaxvisError(f"{name} must be a finite number {bound}, not {value}")
