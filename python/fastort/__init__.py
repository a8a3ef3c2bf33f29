"""fastort: fast, dependable ONNX model serving from Python.

>>> from fastort import Engine
>>> engine = Engine("model.onnx")
>>> outputs = engine.run({"x": x})

The package is layered (docs/ARCHITECTURE.md): :mod:`fastort.errors` ->
:mod:`fastort.runtime` -> :mod:`fastort.engine` -> :mod:`fastort.bench` ->
:mod:`fastort.prepare` -> :mod:`fastort.cli`; each imports only those before
it. This module is the facade: it loads the runtime and re-exports the public
names; the preparation layer is imported on first use.
"""

from __future__ import annotations

from typing import Any

from . import errors, runtime
from ._core import Tensor
from ._version import __version__
from .engine import BatchConfig, Engine, EngineOptions, IOSpec
from .errors import *  # noqa: F403 - every error class (errors.__all__ is the one list)
from .runtime import configure_global_threads, runtime_info
from .runtime.plugin_eps import devices, register_ep_library

runtime.load()

#: The model-preparation names, imported on first use (the preparation layer
#: imports its frameworks lazily too): name -> (module, attribute; None for the
#: module itself). ``fastort.prepare`` is the (callable) package.
_LAZY = {
    "prepare": ("fastort.prepare", None),
    "convert": ("fastort.prepare.convert", None),
    "optimize": ("fastort.prepare.optimize", "optimize"),
    "quantize": ("fastort.prepare.quantize", "quantize"),
    "validate": ("fastort.prepare.validate", "validate"),
    "package": ("fastort.prepare.package", "package"),
    "tune": ("fastort.tune", None),
    "prune": ("fastort.prepare.prune", "prune"),
}


def __getattr__(name: str) -> Any:
    """``fastort.validate(...)``, ``fastort.optimize(...)``, ``fastort.quantize(...)``,
    ``fastort.package(...)``, ``fastort.prune(...)``: the step functions; ``fastort.convert``: the module
    of ``from_torch``, ``from_sklearn``, ``from_tensorflow``; ``fastort.prepare``:
    the preparation package, callable as its pipeline."""
    if name in _LAZY:
        import importlib

        module_name, attribute = _LAZY[name]
        module = importlib.import_module(module_name)
        return module if attribute is None else getattr(module, attribute)
    raise AttributeError(f"module 'fastort' has no attribute {name!r}")


__all__ = [
    "Engine",
    "IOSpec",
    "BatchConfig",
    "EngineOptions",
    "runtime_info",
    "Tensor",
    "configure_global_threads",
    "devices",
    "register_ep_library",
    "__version__",
]
__all__ += errors.__all__
