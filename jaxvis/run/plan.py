"""The plan of a sweep: its configuration from keywords (:func:`configure`, a
:class:`~jaxvis.store.config.SweepConfig`) and, from a configuration, each layer's problems,
canvas and contrast budget (:func:`plan`); nothing is optimised here (:mod:`jaxvis.run.sweep` does)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable, Sequence

import jax
import numpy as np

from jaxvis.store.config import SweepConfig
from jaxvis.errors import JaxvisError, unknown
from jaxvis.models.geometry import LayerInfo, at_canvas
from jaxvis.optimize.config import Objective, Optimizer
from jaxvis.objectives.diversity import TERMS
from jaxvis.objectives.response import RESPONSES
from jaxvis.optimize.maximum import RESTARTS
from jaxvis.optimize.step import FLOOR_DIVERSITY, FLOOR_START, FLOOR_STARTS, Problem
from jaxvis.data import prior as learned_prior
from jaxvis.data.budget import colour_basis
from jaxvis.data.budget import radius as budget_radius
from jaxvis.param.transform import Transforms
from jaxvis.weights import DEFAULT_WEIGHTS, Model, default_photos, load, version, weights_root

TARGET_KINDS = ("conv", "block", "fc", "global")  # layers with a pre-activation worth optimising


def target_layers(model: Model, spec: str | Sequence[str]) -> list[LayerInfo]:
    """``"conv3_1"``, ``"conv1_1,conv2_1"``, a list, ``"all"`` or ``"all:conv3_1"`` (every target
    layer up to and including conv3_1)."""
    network = model.network
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    if len(names) == 1 and names[0].split(":")[0] == "all":
        rows = network.layers()
        upto = names[0].partition(":")[2]
        last = rows.index(network.layer(upto)) if upto else len(rows) - 1
        return [r for r in rows[: last + 1] if r.kind in TARGET_KINDS]
    return [network.layer(n.strip()) for n in names]


def parse_units(spec: str | Iterable[int], channels: int, layer: str) -> list[int]:
    """``"all"``, ``"0-15"``, ``"3,5,7"``, ``"0-7,32"`` or integers -> sorted unique channels."""
    if isinstance(spec, str):
        if spec.strip() == "all":
            return list(range(channels))
        units = []
        for part in spec.split(","):
            try:
                lo, _, hi = part.partition("-")
                lo, hi = int(lo), int(hi) if hi else int(lo)
            except ValueError:
                raise JaxvisError(f"bad units {spec!r}: use 'all', ranges like 0-15, or lists like 3,5,7") from None
            _in_range(max(lo, hi) if lo >= 0 else lo, channels, layer)  # before the range is expanded
            units += range(lo, hi + 1)
    else:
        units = [int(u) for u in spec]
    for u in units:
        _in_range(u, channels, layer)
    if not units:
        raise JaxvisError("no units selected")
    return sorted(set(units))


def _in_range(unit: int, channels: int, layer: str) -> None:
    if not 0 <= unit < channels:
        raise JaxvisError(f"unit {unit} is out of range for {layer}, which has {channels} channels (0-{channels - 1})")


def feature_layer(model: Model, target: LayerInfo, objective: Objective) -> str | None:
    """The diversity feature space: the configured layer (must lie below the target), by default
    two catalogue entries below it (conv2_2 for conv3_1, as in the paper), or pixels (None)."""
    if TERMS[objective.diversity].space == "pixels":
        return None
    rows = [r.name for r in model.network.layers()]
    below = rows[: rows.index(target.name)]
    if objective.feature_layer is None:
        return below[-2] if len(below) >= 2 else None
    if objective.feature_layer == "pixels":
        return None
    if objective.feature_layer not in rows:
        model.network.layer(objective.feature_layer)  # raises, listing the valid names
    if objective.feature_layer not in below:
        raise JaxvisError(f"feature layer {objective.feature_layer!r} is not below the target {target.name!r}; "
                          f"choose one of: pixels, {', '.join(below)}")
    return objective.feature_layer


@dataclasses.dataclass(frozen=True)
class LayerPlan:
    info: LayerInfo
    units: list[int]
    radius: float
    diverse: Problem
    maximum: Problem
    directions: np.ndarray | None = None  # [units, C] unit vectors; None: unit u is channel u
    floors: tuple[Problem, ...] = ()       # one activation-floor problem per alpha
    restarts: int = RESTARTS               # of the single-image maximum
    floor_starts: tuple[str, ...] = FLOOR_START  # each floor set's starts (FLOOR_STARTS), widest kept

    def meta(self) -> dict:
        colour = {} if self.diverse.colour is None else {"colour_basis": [list(r) for r in self.diverse.colour]}
        return {"units": self.units, "canvas": self.info.canvas, "rf": self.info.rf,
                "jump": self.info.jump, "centre": self.info.centre, "channels": self.info.channels,
                "radius": self.radius, "feature_layer": self.diverse.feature_layer or "pixels",
                "floors": [p.objective.floor for p in self.floors], "restarts": self.restarts,
                "floor_starts": list(self.floor_starts) if self.floors else None, **colour}


def configure(model: Model | str = DEFAULT_WEIGHTS, layers: str | Sequence[str] = "conv3_1",
              units: str | Iterable[int] = "all", *, objective: Objective | None = None,
              optimizer: Optimizer | None = None, seed: int = 0, directions: np.ndarray | None = None,
              floors: Sequence[float] | str = (), restarts: int = RESTARTS,
              floor_starts: str | Sequence[str] = FLOOR_START, floor_diversity: str | None = FLOOR_DIVERSITY,
              **settings) -> SweepConfig:
    """The :class:`SweepConfig` of a sweep of ``layers`` and ``units`` of ``model`` (weights name or
    :class:`Model`), from keywords: the one path from keywords to a config (``sweep(model, layers,
    units, **keywords)`` takes it too). Layers and units are resolved against the network here.

    ``directions`` ``[U, C]`` optimises directions in channel space (one layer) instead of
    channels; they are normalised to unit length and unit u is direction u. ``floors`` (e.g.
    ``(0.95, 0.9)``) adds per unit and alpha an activation-floor set (``floor_*`` keys,
    ``[U, alphas, ...]``, highest alpha first: a diverse set of the same N whose images all keep
    alpha x the unit's maximum; docs/floor.md); ``restarts``: single-image runs per unit whose best
    is the maximum (``jaxvis.optimize.maximum``); ``floor_starts``: the starts each floor set is run
    from, the widest feasible kept (:data:`jaxvis.optimize.step.FLOOR_STARTS`; default maximum,
    phase and diverse). Each start's result is kept as a certificate (``floor_start_diversity``
    etc.): where the starts agree, the optimum was found. ``floor_diversity``: the diversity term
    the floor sets maximise, ``pixels`` by default (the read-out compares their pixel distance
    with the analytic bound of docs/floor.md); None: the objective's own.
    ``settings`` are shortcuts for :class:`Objective` / :class:`Optimizer` fields and those of the
    objective's :class:`~jaxvis.param.transform.Transforms`, e.g. ``images=6, diversity="pixels",
    lam=0.01, steps=1000, learning_rate=1.0, param="fourier", jitter=2, rotate=5.0``."""
    weights, model = named_model(model)
    objective, optimizer = _settings(objective, optimizer, settings)
    infos = target_layers(model, layers)
    if directions is not None:
        directions = _normalised(directions, infos)
        units = range(len(directions))
    floor_starts, floors = parse_floor_starts(floor_starts), parse_floors(floors)
    count = {i.name: i.channels if directions is None else len(directions) for i in infos}
    return SweepConfig(
        weights=weights, model=model.meta.get("model"),
        weights_meta={k: v for k, v in model.meta.items() if k != "created"},
        layers=tuple(count), units={name: tuple(parse_units(units, c, name)) for name, c in count.items()},
        objective=objective, optimizer=optimizer,
        directions=None if directions is None else tuple(map(tuple, directions.tolist())),
        seed=seed, floors=floors, restarts=restarts, floor_starts=floor_starts,
        floor_diversity=(floor_diversity or objective.diversity) if floors else None,
        versions={"jaxvis": version(), "jax": jax.__version__},
        prior_sha256=learned_prior.checksum(objective.prior))


def named_model(model: Model | str) -> tuple[str, Model]:
    """(the weights name a config records, the model): a name is loaded."""
    if isinstance(model, str):
        return model, load(model)
    return model.meta.get("name", "custom"), model


def _normalised(directions, infos: list[LayerInfo]) -> np.ndarray:
    """``directions`` ``[U, C]`` of the (single) layer of ``infos``, each of unit length."""
    directions = np.atleast_2d(np.asarray(directions, np.float32))
    if len(infos) != 1 or directions.shape[1] != infos[0].channels:
        raise JaxvisError(f"directions must be [units, C] for one layer; got {directions.shape} "
                          f"for {', '.join(i.name + f' ({i.channels} channels)' for i in infos)}")
    norms = np.linalg.norm(directions, axis=1, keepdims=True)
    if (norms == 0).any():
        raise JaxvisError("a direction of length 0 cannot be optimised")
    return directions / norms


def plan(model: Model, config: SweepConfig, photos: list[Path] | None = None,
         radius: float | None = None) -> list[LayerPlan]:
    """Resolve feature spaces, canvases and contrast budgets of ``config``'s layers; nothing is
    computed yet. Each floor of ``config.floors`` is a problem of its own, maximising
    ``config.floor_diversity``. ``radius`` overrides the natural-image budget (e.g. for a model
    without a natural mean)."""
    mean, objective, optimizer = model.convention.mean_rgb255, config.objective, config.optimizer
    directions = None if config.directions is None else np.asarray(config.directions, np.float32)
    floor_objectives = tuple(dataclasses.replace(objective, diversity=config.floor_diversity or objective.diversity,
                                                 floor=float(a)) for a in config.floors)
    colour = None if objective.param == "pixel" else colour_basis(photos or default_photos(),
                                                                  weights_root() / "colour.json")
    plans = []
    for name in config.layers:
        model.network.check(name)  # specs() against the real shapes, once (own networks)
        info = on_canvas(model, model.network.layer(name), objective)
        feature = feature_layer(model, info, objective)
        r = radius or budget_radius(info.canvas, mean, photos or default_photos(),
                                    weights_root() / "budgets.json")
        common = dict(target=info.name, centre=info.centre, canvas=info.canvas,
                      convention=model.convention, mean_rgb=mean, colour=colour)
        diverse = Problem(feature_layer=feature, objective=objective, optimizer=optimizer, **common)
        single = dataclasses.replace(objective, images=1, diversity="none", floor=None)
        maximum = Problem(feature_layer=None, objective=single, optimizer=optimizer, **common)
        # a pixel-space floor term measures the images; its sets' feature distances are then
        # reported in the lambda set's feature space (the loss takes the images, step._loss)
        floor_feature = (feature_layer(model, info, floor_objectives[0]) if floor_objectives else None) or feature
        floor_problems = tuple(Problem(feature_layer=floor_feature, objective=o, optimizer=optimizer, **common)
                               for o in floor_objectives)
        plans.append(LayerPlan(info, list(config.units[name]), r, diverse, maximum, directions,
                               floor_problems, config.restarts, config.floor_starts or FLOOR_START))
    return plans


def on_canvas(model: Model, info: LayerInfo, objective: Objective) -> LayerInfo:
    """The layer's row as the objective sees it: on ``Objective.canvas`` (at least the layer's own
    canvas) with the output size there; for a centre response that canvas must centre a unit."""
    size = objective.canvas
    if size is None or size == info.canvas:
        return info
    if size < info.canvas:
        raise JaxvisError(f"Objective.canvas {size} is smaller than {info.name}'s canvas {info.canvas} (its receptive "
                          f"field, centred); use {info.canvas} or more")
    specs = model.network.specs()
    out, centred = at_canvas(specs, info.name, size)
    if RESPONSES[objective.response].centre and not centred:
        near = [c for c in range(max(info.canvas, size - 2 * info.jump), size + 2 * info.jump + 1)
                if at_canvas(specs, info.name, c)[1]]
        raise JaxvisError(f"no unit of {info.name} is centred on a {size} px canvas, which response "
                          f"{objective.response!r} needs; centred canvases near it: {', '.join(map(str, near))} "
                          "(or Objective.response channel)")
    return dataclasses.replace(info, canvas=size, out=out)


def parse_floors(floors) -> tuple[float, ...]:
    """``"0.95,0.9"``, a number or a sequence -> sorted distinct floors, highest first."""
    if isinstance(floors, str):
        try:
            floors = [float(f) for f in floors.split(",") if f.strip()]
        except ValueError:
            raise JaxvisError(f"bad SweepConfig.floors {floors!r}: use fractions like 0.9 or 0.95,0.9,0.8") from None
    elif isinstance(floors, (int, float)):
        floors = [floors]
    return tuple(sorted({float(f) for f in floors}, reverse=True))


def parse_floor_starts(starts) -> tuple[str, ...]:
    """``"maximum,phase"`` or a sequence of names of :data:`FLOOR_STARTS` -> distinct names in the
    order given."""
    names = [s.strip() for s in starts.split(",")] if isinstance(starts, str) else list(starts)
    names = list(dict.fromkeys(n for n in names if n))
    if not names:
        raise JaxvisError(f"SweepConfig.floor_starts needs at least one of {', '.join(FLOOR_STARTS)}")
    for name in names:
        if name not in FLOOR_STARTS:
            raise unknown("floor start", name, FLOOR_STARTS)
    return tuple(names)



def _settings(objective, optimizer, settings) -> tuple[Objective, Optimizer]:
    """Objective and Optimizer with the shortcuts ``settings`` applied (fields of either, or of
    the objective's :class:`Transforms`, e.g. ``jitter=2``)."""
    objective, optimizer = objective or Objective(), optimizer or Optimizer()
    fields_o = {f.name for f in dataclasses.fields(Objective)}
    fields_p = {f.name for f in dataclasses.fields(Optimizer)}
    fields_t = {f.name for f in dataclasses.fields(Transforms)}
    strays = set(settings) - fields_o - fields_p - fields_t
    if strays:
        raise unknown("sweep setting(s)", sorted(strays), sorted(fields_o | fields_p | fields_t))
    moves = {k: v for k, v in settings.items() if k in fields_t}
    if moves:
        settings = {**settings, "transforms": dataclasses.replace(
            settings.get("transforms", objective.transforms) or Transforms(), **moves)}
    objective = dataclasses.replace(objective, **{k: v for k, v in settings.items() if k in fields_o})
    optimizer = dataclasses.replace(optimizer, **{k: v for k, v in settings.items() if k in fields_p})
    return objective, optimizer
