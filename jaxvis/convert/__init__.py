"""Readers and converters for the weight files researchers have (none needs torch or TensorFlow)."""

import importlib


def __getattr__(name: str):
    # submodules on first use, so that `jaxvis.convert.sources` works after a plain `import jaxvis`
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
