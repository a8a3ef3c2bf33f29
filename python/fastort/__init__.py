"""fastort: fast, dependable ONNX model serving from Python.

>>> from fastort import Engine
>>> engine = Engine("model.onnx")
>>> outputs = engine.run({"x": x})
"""

from __future__ import annotations

from typing import Any

from . import _runtime
from .engine import BatchConfig, Engine, IOSpec
from .errors import (
    EngineClosedError,
    FastortError,
    InvalidInputError,
    ModelLoadError,
    ModelNotFoundError,
    RunError,
    RuntimeLoadError,
    ConfigError,
    QueueFullError,
    RequestTimeoutError,
    RequestTooLargeError,
    PrepareError,
    MissingDependencyError,
    ConversionError,
    ValidationError,
    ConversionMismatchError,
    OptimizationError,
    QuantizationError,
    CalibrationError,
    PackageError,
    PackageIntegrityError,
    ProviderUnavailableError,
    EpLibraryError,
)
from ._runtime import configure_global_threads, runtime_info
from ._core import Tensor
from .plugin_eps import devices, register_ep_library

__version__ = "0.1.0"

_runtime.load()

#: The model-preparation modules, imported on first use (they import their
#: frameworks lazily too): ``fastort.validate(reference, candidate, inputs)``,
#: ``fastort.prepare(model, outdir)``, ``fastort.convert.from_torch(...)``, ...
_PREPARATION_MODULES = ("convert", "optimize", "quantize", "validate", "package", "prepare")


def __getattr__(name: str) -> Any:
    if name in _PREPARATION_MODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'fastort' has no attribute {name!r}")

__all__ = [
    "Engine",
    "IOSpec",
    "BatchConfig",
    "runtime_info",
    "Tensor",
    "configure_global_threads",
    "devices",
    "register_ep_library",
    "ProviderUnavailableError",
    "EpLibraryError",
    "FastortError",
    "RuntimeLoadError",
    "ModelLoadError",
    "ModelNotFoundError",
    "InvalidInputError",
    "RunError",
    "EngineClosedError",
    "ConfigError",
    "QueueFullError",
    "RequestTimeoutError",
    "RequestTooLargeError",
    "PrepareError",
    "MissingDependencyError",
    "ConversionError",
    "ValidationError",
    "ConversionMismatchError",
    "OptimizationError",
    "QuantizationError",
    "CalibrationError",
    "PackageError",
    "PackageIntegrityError",
    "__version__",
]
