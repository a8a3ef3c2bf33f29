"""The exceptions fastort raises.

Every error is a :class:`FastortError`; each kind also derives from the builtin
exception a caller would catch for it (``ImportError``, ``ValueError``, ...).
"""

from __future__ import annotations

__all__ = [
    "FastortError",
    "RuntimeLoadError",
    "ModelLoadError",
    "ModelNotFoundError",
    "InvalidInputError",
    "RequestTooLargeError",
    "RunError",
    "EngineClosedError",
    "ConfigError",
    "QueueFullError",
    "RequestTimeoutError",
]


class FastortError(Exception):
    """Base class of every error fastort raises."""


class RuntimeLoadError(FastortError, ImportError):
    """libonnxruntime is missing, unloadable or too old."""


class ModelLoadError(FastortError, ValueError):
    """The model could not be read, or onnxruntime refused it."""


class ModelNotFoundError(ModelLoadError, FileNotFoundError):
    """The model file does not exist."""


class InvalidInputError(FastortError, ValueError):
    """Inputs, output names or output buffers do not fit the model."""


class RequestTooLargeError(InvalidInputError):
    """The request exceeds the engine's ``max_request_bytes`` / ``max_request_rows``,
    or its size computation overflows; refused before anything is allocated for it."""


class RunError(FastortError, RuntimeError):
    """onnxruntime failed while running the model."""


class EngineClosedError(FastortError, RuntimeError):
    """The engine was closed."""


class ConfigError(FastortError, ValueError):
    """An engine option is invalid (unknown provider, bad thread count, ...)."""


class QueueFullError(FastortError, RuntimeError):
    """The request queue is at its limit (backpressure): the request was not accepted."""


class RequestTimeoutError(FastortError, TimeoutError):
    """The request's deadline passed before it could run; it was never run."""
