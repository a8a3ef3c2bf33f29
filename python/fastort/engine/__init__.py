"""The engine layer: :class:`Engine` (one ONNX model served by the native core),
its settings (:class:`BatchConfig`), the model IO description (:class:`IOSpec`),
the Python side of the request queue, model sources and shared weights, and
reading model packages (:mod:`fastort.engine.manifest`).

Imports only :mod:`fastort.runtime`, :mod:`fastort.errors` and ``fastort._core``.
"""

from __future__ import annotations

from .engine import BatchConfig, Dim, Engine, EngineOptions, Inputs, InputValue, IOSpec, MapValue, ModelLike
from .manifest import is_package, load_package

__all__ = ["Engine", "EngineOptions", "IOSpec", "BatchConfig", "ModelLike", "Dim", "Inputs", "InputValue", "MapValue",
           "is_package", "load_package"]
