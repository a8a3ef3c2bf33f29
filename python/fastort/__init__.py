"""fastort: fast, dependable ONNX model serving from Python.

>>> from fastort import Engine
>>> engine = Engine("model.onnx")
>>> outputs = engine.run({"x": x})
"""

from __future__ import annotations

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
)
from ._runtime import configure_global_threads, runtime_info

__version__ = "0.1.0"

_runtime.load()

__all__ = [
    "Engine",
    "IOSpec",
    "BatchConfig",
    "runtime_info",
    "configure_global_threads",
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
    "__version__",
]
