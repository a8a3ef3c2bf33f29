"""The preparation layer: model-changing steps and the pipeline that chains them.

    convert   framework models (torch, scikit-learn, TensorFlow) to checked ONNX
    optimize  graph simplification, onnxruntime's offline optimizations, fixed dims, float16
    quantize  dynamic or static int8 with onnxruntime's tools
    wquant    weight-only int4/int8 (MatMulNBits), quantize's int4 and int8_weight modes
    kernels   the check that the target provider has a kernel for every node
    prune     structured pruning of torch modules (torch-pruning), before conversion
    validate  a candidate's outputs against a reference's, within tolerances
    package   a model directory with a hashed manifest (reading one: fastort.engine.manifest)
    pipeline  all of the above in one call: :func:`prepare`
    common    what the steps share: optional imports, model IO, inputs, stats, StepResult

``fastort.prepare`` is this package and, as before, callable as its pipeline:
``fastort.prepare(model, outdir, ...)`` is :func:`fastort.prepare.pipeline.prepare`.
That is the one module made callable (a package cannot be a function too);
the steps are plain functions: ``fastort.optimize``, ``fastort.quantize``,
``fastort.validate``, ``fastort.package``, ``fastort.prune``; ``fastort.convert`` is the
:mod:`fastort.prepare.convert` module (``from_torch``, ``from_sklearn``, ...).

Imports the engine, bench, runtime and errors layers; frameworks are imported
lazily, inside the functions that need them.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from ..errors import (
    CalibrationError,
    ConversionError,
    ConversionMismatchError,
    MissingDependencyError,
    OptimizationError,
    PackageError,
    PackageIntegrityError,
    PrepareError,
    QuantizationError,
    ValidationError,
)
from .common import ModelStats, StepResult
from .convert import convert
from .optimize import optimize
from .package import load_package, package
from .pipeline import PrepareResult, prepare
from .quantize import ArrayCalibrationReader, quantize
from .validate import ValidationReport, validate

__all__ = [
    "prepare",
    "PrepareResult",
    "convert",
    "optimize",
    "quantize",
    "validate",
    "package",
    "load_package",
    "StepResult",
    "ModelStats",
    "ValidationReport",
    "ArrayCalibrationReader",
    "PrepareError",
    "MissingDependencyError",
    "ConversionError",
    "ConversionMismatchError",
    "ValidationError",
    "OptimizationError",
    "QuantizationError",
    "CalibrationError",
    "PackageError",
    "PackageIntegrityError",
]


class _CallablePackage(types.ModuleType):
    """``fastort.prepare(...)`` calls :func:`prepare`; ``fastort.prepare.X`` is as usual."""

    def __call__(self, *args: Any, **kwargs: Any) -> PrepareResult:
        return prepare(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
