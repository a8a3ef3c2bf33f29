"""The exceptions fastort raises.

Every error is a :class:`FastortError`; each kind also derives from the builtin
exception a caller would catch for it (``ImportError``, ``ValueError``, ...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional, Type

if TYPE_CHECKING:  # pragma: no cover
    from .prepare.validate import ValidationReport

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
    "ProviderUnavailableError",
    "EpLibraryError",
    "QueueFullError",
    "RequestTimeoutError",
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
    "UnsupportedOnTargetError",
    "PruningError",
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


class ProviderUnavailableError(ConfigError):
    """A requested execution provider cannot be used here; the message says why
    (plugin not installed, its library fails to load, no device for it on this
    machine, or onnxruntime too old for plugin EPs)."""


class EpLibraryError(ProviderUnavailableError):
    """A plugin EP library could not be registered with onnxruntime."""


class QueueFullError(FastortError, RuntimeError):
    """The request queue is at its limit (backpressure): the request was not accepted."""


class RequestTimeoutError(FastortError, TimeoutError):
    """The request's deadline passed before it could run; it was never run."""


# -- model preparation (fastort.convert, optimize, quantize, validate, package) --


class PrepareError(FastortError):
    """Base class of the errors of the model-preparation steps."""


class MissingDependencyError(PrepareError, ImportError):
    """An optional dependency of a step is not installed; the message names the
    ``pip install 'fastort[EXTRA]'`` that brings it."""


class ConversionError(PrepareError, ValueError):
    """A framework model could not be converted to ONNX (unsupported op or
    model, or the exported model fails the ONNX checker)."""


class ValidationError(PrepareError, ValueError):
    """A candidate model's outputs are outside the tolerances. ``report`` is the
    :class:`fastort.prepare.validate.ValidationReport` with the numbers; ``model`` the
    candidate (an ``onnx.ModelProto``) when a step produced it."""

    def __init__(self, message: str, report: "Optional[ValidationReport]" = None, model: Any = None) -> None:
        super().__init__(message)
        self.report = report
        self.model = model


class ConversionMismatchError(ValidationError, ConversionError):
    """The converted ONNX model does not compute what the framework model does."""


class OptimizationError(PrepareError, RuntimeError):
    """Graph optimization, simplification or float16 conversion failed."""


class QuantizationError(PrepareError, ValueError):
    """onnxruntime's quantization tools failed or were given bad settings."""


class CalibrationError(QuantizationError):
    """The calibration data for static quantization is missing or unusable."""


class PackageError(PrepareError, ModelLoadError):
    """A model package directory is missing, malformed, or cannot be written."""


class PackageIntegrityError(PackageError):
    """A file of a model package does not match the hash in its manifest
    (tampered, truncated or replaced), or is missing."""


class UnsupportedOnTargetError(PrepareError, ValueError):
    """The target execution provider has no kernel for a node of a prepared
    model (e.g. onnxruntime's CPU provider and a bfloat16 MatMul). ``provider``,
    ``op_type`` and ``node`` name what is missing (None where onnxruntime did
    not say)."""

    def __init__(self, message: str, provider: str = "", op_type: "Optional[str]" = None,
                 node: "Optional[str]" = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.op_type = op_type
        self.node = node


class PruningError(PrepareError, ValueError):
    """Structured pruning was given bad settings (a ratio outside (0, 1), an
    unknown importance, layers it cannot prune) or torch-pruning failed."""


#: The classes the native core raises, by the key the binding knows each by;
#: handed to ``fastort._core`` once, when :mod:`fastort.runtime` is imported.
NATIVE_ERRORS: Dict[str, Type[FastortError]] = {
    "base": FastortError,
    "runtime_load": RuntimeLoadError,
    "model_load": ModelLoadError,
    "invalid_input": InvalidInputError,
    "too_large": RequestTooLargeError,
    "run": RunError,
    "queue_full": QueueFullError,
    "timeout": RequestTimeoutError,
    "closed": EngineClosedError,
}
