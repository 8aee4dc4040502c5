"""The run configuration of a sweep, typed and frozen: built once, stored in the results file,
compared on resume, read back by analysis and report.

:class:`SweepConfig` is what a results file says about how it was made: the weights (name,
model configuration and provenance), the layers and units, the method (:class:`Objective`,
:class:`Optimizer`), the directions, the seed and the versions. ``to_json`` gives the JSON that the
file stores (``/`` attribute ``config``; the layout of format version 1), ``from_json`` reads it
back, refusing what it does not know. The CLI's sweep options, their defaults and choices come from
the fields of :class:`Objective` and :class:`Optimizer` (``jaxvis.cli``).

Two configs describe *the same sweep* (resume) when their JSON is equal; :func:`first_difference`
names the first differing key, and :func:`method_of` leaves out ``layers`` and ``units`` (a
finished file can be extended with new layers or units of the same method).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterator, Mapping

import numpy as np

from jaxvis.errors import JaxvisError, unknown
from jaxvis.optimize.config import FLOOR_DIVERSITY, FLOOR_METHOD, FLOOR_START, FLOOR_STARTS, Objective, Optimizer

from jaxvis.param.transform import Transforms

SELECTION = ("layers", "units")  # what may grow when a finished sweep is extended


def method_of(config: Mapping) -> dict:
    """A config JSON without its selection and software versions: what must match for a
    finished file to be extended (a newer jaxvis of the same method may extend it)."""
    return {k: v for k, v in config.items() if k not in (*SELECTION, "versions")}


def plain(value):
    """numpy scalars and arrays as the Python values JSON knows (``json.dumps`` ``default``)."""
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"{type(value).__name__} {short(value)} is not JSON-able")


def canonical(value, what: str):
    """``value`` after a JSON round trip (tuples become lists, numpy values Python ones);
    refuses what JSON cannot hold (objects, NaN)."""
    try:
        return json.loads(json.dumps(value, sort_keys=True, allow_nan=False, default=plain))
    except (TypeError, ValueError) as err:
        raise JaxvisError(f"{what} is not JSON-able: {err}") from None


def short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


MISSING = object()  # a key one side of a comparison lacks


def differing_leaves(there, now, path: str = "", *, strict: bool = True,
                     missing=MISSING) -> Iterator[tuple[str, Any, Any]]:
    """Every differing leaf of two JSON values in key order, as (dotted key, there, now); a key
    one side lacks is ``missing`` there. ``strict``: equal values of different types (1, 1.0) differ."""
    if isinstance(there, dict) and isinstance(now, dict):
        for key in sorted(set(there) | set(now), key=str):
            yield from differing_leaves(there.get(key, missing), now.get(key, missing),
                                        f"{path}.{key}" if path else str(key), strict=strict, missing=missing)
    elif there != now or (strict and type(there) is not type(now)):
        yield path, there, now


def first_difference(there, now, path: str = "") -> str | None:
    """``"key: <there> there, <now> now"`` for the first differing (nested) key, or None."""
    for key, a, b in differing_leaves(there, now, path):
        a = "not set" if a is MISSING else f"{short(a)}"
        b = "not set" if b is MISSING else f"{short(b)}"
        return f"{key or 'config'}: {a} there, {b} now"
    return None


def _dataclass_from(cls, values: Mapping, what: str):
    """``cls(**values)``, refusing unknown keys with one line that lists the known ones; fields
    missing from ``values`` (files written before the field existed) take their defaults."""
    if not isinstance(values, Mapping):
        raise JaxvisError(f"{what} must be a JSON object, not {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise JaxvisError(f"{what} has unknown field(s) {', '.join(unknown)} (written by a newer "
                          f"jaxvis?); known: {', '.join(sorted(names))}")
    return cls(**values)


def _objective(values: Mapping) -> Objective:
    """The stored objective; its ``transforms`` (a JSON object or null) read as :class:`Transforms`."""
    values = dict(_require_mapping(values, "sweep config objective"))
    if values.get("transforms") is not None:
        values["transforms"] = _dataclass_from(Transforms, values["transforms"], "sweep config objective transforms")
    return _dataclass_from(Objective, values, "sweep config objective")


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """How a sweep was made; see the module docstring.

    ``units[layer]``: the selected units (channels, or rows of ``directions``) of each layer;
    ``directions``: ``[U, C]`` unit vectors in the (single) layer's channel space, or None when
    unit u is channel u; ``weights_meta``: the weights' provenance (source file, checksums,
    normalisation) as stored with them; ``model``: the model configuration JSON
    (``ModelConfig.to_json``), None for a custom network.
    """

    weights: str
    model: Mapping[str, Any] | None
    layers: tuple[str, ...]
    units: Mapping[str, tuple[int, ...]]
    objective: Objective = Objective()
    optimizer: Optimizer = Optimizer()
    directions: tuple[tuple[float, ...], ...] | None = None
    seed: int = 0
    floors: tuple[float, ...] = ()  # activation floors alpha of the floor sets, highest first
    restarts: int = 1               # single-image runs per unit whose best is the maximum
    floor_starts: tuple[str, ...] | None = FLOOR_START  # each floor set's starts (FLOOR_STARTS), widest
                                                       # kept; None without floors
    floor_method: int | None = FLOOR_METHOD  # the floor optimiser's version; None without floors
    floor_diversity: str | None = FLOOR_DIVERSITY  # the term floor sets maximise; None without floors
    weights_meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    versions: Mapping[str, str] = dataclasses.field(default_factory=dict)
    prior_sha256: str | None = None  # a learned prior's parameters (jaxvis.data.prior.checksum)

    def __post_init__(self):
        missing = [name for name in self.layers if name not in self.units]
        if missing:
            raise JaxvisError(f"sweep config selects no units for layer(s) {', '.join(missing)}")
        if self.restarts < 1:
            raise JaxvisError(f"SweepConfig.restarts must be at least 1, not {self.restarts}")
        if not self.floors:  # how sets that do not exist are made is no part of the method
            object.__setattr__(self, "floor_starts", None)
            object.__setattr__(self, "floor_method", None)
            object.__setattr__(self, "floor_diversity", None)
            return
        if self.floor_diversity is None:
            object.__setattr__(self, "floor_diversity", self.objective.diversity)
        object.__setattr__(self, "floor_starts", tuple(self.floor_starts or ()))
        bad = [s for s in self.floor_starts if s not in FLOOR_STARTS]
        if bad or not self.floor_starts:
            raise unknown("floor start", bad[0] if bad else "", FLOOR_STARTS)

    # -- JSON

    def to_json(self) -> dict:
        """The JSON object the results file stores (format version 1 layout)."""
        return canonical({
            "weights": self.weights, "model": self.model, "weights_meta": dict(self.weights_meta),
            "layers": list(self.layers), "units": {k: list(v) for k, v in self.units.items()},
            "objective": dataclasses.asdict(self.objective),
            "optimizer": dataclasses.asdict(self.optimizer),
            "directions": None if self.directions is None else [list(d) for d in self.directions],
            "seed": self.seed, "floors": list(self.floors), "restarts": self.restarts,
            "floor_starts": None if self.floor_starts is None else list(self.floor_starts),
            "floor_method": self.floor_method, "floor_diversity": self.floor_diversity,
            "versions": dict(self.versions),
            **({} if self.prior_sha256 is None else {"prior_sha256": self.prior_sha256})}, "sweep config")

    @classmethod
    def from_json(cls, d: Mapping) -> "SweepConfig":
        d = dict(_require_mapping(d, "sweep config"))
        known = {f.name for f in dataclasses.fields(cls)} | {"floor_start"}  # one start, before floor_starts
        unknown = sorted(set(d) - known)
        if unknown:
            raise JaxvisError(f"sweep config has unknown key(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(known))}")
        for key in ("weights", "layers", "units"):
            if key not in d:
                raise JaxvisError(f"sweep config lacks {key!r}; not a jaxvis sweep config")
        directions = d.get("directions")
        return cls(
            weights=str(d["weights"]), model=d.get("model"), layers=tuple(d["layers"]),
            units={k: tuple(int(u) for u in v) for k, v in _require_mapping(d["units"], "units").items()},
            objective=_objective(d.get("objective", {})),
            optimizer=_dataclass_from(Optimizer, d.get("optimizer", {}), "sweep config optimizer"),
            directions=None if directions is None else tuple(tuple(float(x) for x in row) for row in directions),
            seed=int(d.get("seed", 0)), floors=tuple(float(a) for a in d.get("floors", ())),
            restarts=int(d.get("restarts", 1)), **_floor_settings(d),
            weights_meta=dict(d.get("weights_meta") or {}),
            versions=dict(d.get("versions") or {}), prior_sha256=d.get("prior_sha256"))

    # -- files of older versions

    @staticmethod
    def upgrade(stored: Mapping) -> dict:
        """A stored config JSON in today's form: fields added since it was written take the
        values that reproduce how it was made (``restarts`` 1, no floors, floor sets from one start,
        random or as ``floor_start`` says, made by floor method 1, ``Objective.floor`` None, ``Objective.param`` pixel,
        ``Objective.transforms`` None, ``Objective.response`` centre, ``Objective.canvas`` None),
        so older files resume and grow. Anything that is not a sweep config is returned as it is
        (and then differs)."""
        try:
            return SweepConfig.from_json(stored).to_json()
        except (JaxvisError, TypeError, ValueError):
            return dict(stored)

    @property
    def custom_model(self) -> bool:
        """Swept on a network that is not a cached weights entry (analysis needs it passed in)."""
        return not self.weights or self.weights == "custom"

    def basis(self, channels: int) -> np.ndarray:
        """``[U, C]``: row u is unit u's direction (the identity when units are channels)."""
        if self.directions is None:
            return np.eye(channels, dtype=np.float32)
        return np.asarray(self.directions, np.float32)


def _floor_settings(d: Mapping) -> dict:
    """``floor_starts``, ``floor_method`` and ``floor_diversity`` of a stored config: files from before several starts
    name one ``floor_start`` (none: random) and were made by floor method 1 (no annealing, the
    last iterate kept), which this jaxvis reads but no longer runs, maximising the lambda set's own
    diversity term (``floor_diversity`` None: the objective's)."""
    if "floor_starts" in d:
        starts = d["floor_starts"]
        return {"floor_starts": None if starts is None else tuple(starts), "floor_method": d.get("floor_method"),
                "floor_diversity": d.get("floor_diversity")}
    return {"floor_starts": (d.get("floor_start") or "random",), "floor_method": 1, "floor_diversity": None}


def _require_mapping(value, what: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise JaxvisError(f"{what} must be a JSON object, not {type(value).__name__}")
    return value
