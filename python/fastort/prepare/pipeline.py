"""The model-preparation chain: convert -> optimize -> quantize -> validate ->
package, with a progress display and a before/after table at the end.

>>> from fastort.prepare import prepare
>>> result = prepare(torch_module, "models/cnn", example_inputs=x, quantize="static", calibration=x_calib)
>>> print(result.table)
>>> engine = fastort.Engine(*fastort.prepare.load_package("models/cnn"))   # or Engine("models/cnn")

Every step validates its result against its input; the final model is also
validated end to end against the original (the framework model, or the ONNX
model you started from). The package records all of it.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from ..errors import (
    CalibrationError,
    ConversionError,
    OptimizationError,
    PackageError,
    PruningError,
    QuantizationError,
    ValidationError,
)
from .._format import format_bytes, format_table, format_us
from .common import (
    ModelStats,
    StepResult,
    first_row,
    measure_latency,
    step_inputs,
)
from .convert import convert, framework_of
from .optimize import optimize
from .package import load_package, package
from .quantize import ArrayCalibrationReader, quantize
from .validate import ValidationReport, describe, validate

__all__ = ["prepare", "PrepareResult"]


@dataclass
class StageRow:
    """One row of the before/after table."""

    stage: str
    stats: ModelStats
    report: Optional[ValidationReport] = None


@dataclass
class PrepareResult:
    """What :func:`prepare` made.

    Attributes:
        package_dir: the model package.
        model_path: the ONNX file in it.
        engine_kwargs: the recommended Engine settings (from the manifest).
        steps: the step results, in order.
        rows: the before/after table's rows (stage, stats, report vs the original).
        end_to_end: the final model's validation against the original.
        table: the table as text.
    """

    package_dir: str
    model_path: str
    engine_kwargs: Dict[str, Any]
    steps: List[StepResult]
    rows: List[StageRow]
    end_to_end: ValidationReport
    table: str = ""
    notes: List[str] = field(default_factory=list)

    def __str__(self) -> str:
        return self.table


def _table(rows: Sequence[StageRow], reference: str) -> str:
    base = rows[0].stats
    out = []
    for r in rows:
        size = format_bytes(r.stats.bytes)
        if r is not rows[0] and base.bytes:
            size += f" ({base.bytes / max(1, r.stats.bytes):.1f}x)"
        lat = format_us(r.stats.latency_us)
        if r is not rows[0] and base.latency_us and r.stats.latency_us:
            lat += f" ({base.latency_us / r.stats.latency_us:.2f}x)"
        err = "-" if r.report is None else f"{r.report.max_abs_error:.3g}"
        top1 = "-" if r.report is None or r.report.top1_agreement is None else f"{r.report.top1_agreement:.1%}"
        ok = "" if r.report is None else ("ok" if r.report.passed else "FAIL")
        out.append([r.stage, str(r.stats.nodes), size, lat, err, top1, ok])
    return format_table(["model", "nodes", "size", "latency (batch 1)", f"max abs err vs {reference}",
                         "top-1 agree", ""], out)


def prepare(
    model: Any,
    outdir: Union[str, "os.PathLike[str]"],
    *,
    target: str = "cpu",
    precision: str = "f32",
    example_inputs: Any = None,
    inputs: Any = None,
    dims: Any = None,
    allow_synthetic: bool = False,
    quantize: Optional[str] = None,
    calibration: Any = None,
    method: str = "minmax",
    per_channel: bool = False,
    exclude_op_types: Sequence[str] = (),
    exclude_nodes: Sequence[str] = (),
    fp16: bool = False,
    keep_io_types: bool = True,
    level: Optional[str] = None,
    fixed_dims: Optional[Mapping[str, Any]] = None,
    simplifier: str = "auto",
    replicas: int = 1,
    max_batch_size: Optional[int] = None,
    min_top1: Optional[float] = None,
    force: bool = False,
    progress: bool = True,
    verbose: Optional[bool] = None,
    measure: bool = True,
    latency_seconds: float = 1.0,
    overwrite: bool = False,
    convert_options: Optional[Mapping[str, Any]] = None,
    prune: Optional[float] = None,
    prune_options: Optional[Mapping[str, Any]] = None,
    op_types: Optional[Sequence[str]] = None,
    rtol: Optional[float] = None,
    atol: Optional[float] = None,
) -> PrepareResult:
    """Runs the chain and writes a model package to ``outdir``.

    Args:
        model: a torch ``nn.Module``, a scikit-learn estimator, a Keras model, or
            an ONNX model (path, bytes, ModelProto).
        target: ``"cpu"``, ``"cuda"`` or ``"openvino"`` (ONNX-standard ``basic``
            optimizations, then checked on OpenVINO against the CPU EP, see below).
        precision: for ``target="openvino"``: ``"f32"`` (default), ``"bf16"``,
            ``"fp16"`` or ``"auto"``; its error against the CPU EP in f32 is measured
            and refused outside its tolerance (fastort.validate_ep), and the package
            records it.
        example_inputs: inputs for conversion (framework models).
        inputs: validation inputs (default: the example inputs, else up to 256
            rows of the calibration data, else seeded random ones).
        dims, allow_synthetic: with no inputs (and no example or calibration
            data), the free dims' sizes and whether guessing them (1) is
            accepted: see :func:`fastort.validate`.
        quantize: None, ``"dynamic"`` or ``"static"`` (needs ``calibration``).
        calibration, method, per_channel, exclude_op_types, exclude_nodes:
            see :func:`fastort.prepare.quantize.quantize`.
        fp16, keep_io_types: float16 conversion (GPU targets; not with quantize).
        level: onnxruntime's offline level (default ``extended``; ``basic``
            before quantization, which works best on an unfused graph).
        fixed_dims, simplifier: see :func:`fastort.prepare.optimize.optimize`.
        replicas, max_batch_size: recommended Engine settings for the package.
        min_top1: least top-1 agreement of classifier outputs, for every check.
        force: keep results outside tolerance (with warnings).
        progress: show a progress bar (on stderr).
        verbose: print the table at the end (default: as ``progress``).
        measure: time batch-1 latency of every stage through :class:`fastort.Engine`.
        overwrite: replace an existing package in ``outdir``.
        convert_options: extra keyword arguments for the converter.
        prune, prune_options: torch modules: prune this share of channels
            first (:func:`fastort.prepare.prune.prune`, with ``prune_options``, e.g.
            ``fine_tune``, ``metric``); the rest of the chain then starts from
            the pruned module.
        op_types: quantize only these op types (as :func:`fastort.quantize`).
        rtol, atol: tolerances of every step and of the end-to-end check
            (default: each step's own).
    """
    from tqdm.auto import tqdm

    if quantize not in (None, "dynamic", "static"):
        raise QuantizationError(f"quantize must be None, 'dynamic' or 'static', got {quantize!r}")
    if quantize and fp16:
        raise OptimizationError("fp16 and int8 quantization do not combine: choose one")
    if quantize == "static" and calibration is None:
        raise CalibrationError("static quantization needs calibration data (calibration=...)")
    outdir = os.fspath(outdir)
    if os.path.isdir(outdir) and os.listdir(outdir) and not overwrite:
        raise PackageError(f"{outdir} is not empty: pass overwrite=True to replace the package in it")
    kind = framework_of(model)
    if prune is not None and kind != "torch":
        raise PruningError(f"prune works on torch modules (structured pruning needs the layers); got a {kind} model")
    names = (["prune"] if prune is not None else []) + (["convert"] if kind != "onnx" else ["check"]) \
        + ["optimize"] + (["quantize"] if quantize else []) + ["validate", "package"] + (["measure"] if measure else [])
    bar = tqdm(total=len(names), desc="prepare", unit="step", disable=not progress, file=sys.stderr,
               bar_format="{desc}: {n_fmt}/{total_fmt} steps |{bar:20}| {elapsed}")
    steps: List[StepResult] = []
    notes: List[str] = []

    def advance(name: str) -> None:
        bar.set_description(f"prepare: {name}")

    pruned = None
    try:
        # 0. prune (torch modules)
        if prune is not None:
            advance("prune")
            from .prune import prune as prune_module

            if example_inputs is None:
                example_inputs = inputs
            if example_inputs is None:
                raise PruningError("prepare: pruning a torch model needs example_inputs")
            pruned = prune_module(model, example_inputs, prune, **{"force": force, "target": target, "measure": measure,
                                                                   "latency_seconds": latency_seconds,
                                                                   **dict(prune_options or {})})
            model = pruned.module
            notes.append(f"pruned {prune:g} of the channels: parameters {pruned.before.parameters:,} -> "
                         f"{pruned.after.parameters:,}; the checks below compare with the pruned module\n{pruned.table}")
            bar.update(1)
        # 1. convert (or check the ONNX model)
        advance("convert" if kind != "onnx" else "check")
        if kind != "onnx":
            if example_inputs is None:
                example_inputs = inputs
            if example_inputs is None:
                raise ConversionError(f"prepare: converting a {kind} model needs example_inputs")
            converted = convert(model, example_inputs, force=force, **dict(convert_options or {}))
            reference: Any = model
        else:
            converted = convert(model)
            reference = converted.model
        steps.append(converted)
        float_model = converted.model
        bar.update(1)

        # validation inputs
        if inputs is None and example_inputs is not None:
            inputs = example_inputs
        reader = None
        if inputs is None and calibration is not None and quantize == "static":
            reader = ArrayCalibrationReader(float_model, calibration)
            inputs = reader.head(256)
        feeds, synthetic = step_inputs(float_model, inputs, "prepare", dims, allow_synthetic)
        checked: Any = synthetic or feeds  # the steps record synthetic inputs as such
        if synthetic is not None:
            notes.append(f"validated on {synthetic.describe()}")

        # 2. optimize
        advance("optimize")
        ep_target = target == "openvino"  # OpenVINO takes ONNX-standard ops, not onnxruntime's fused ones
        optimized = optimize(float_model, level=level or ("basic" if quantize or ep_target else "extended"),
                             target="cpu" if ep_target else target,
                             simplifier=simplifier, fixed_dims=fixed_dims, fp16=fp16, keep_io_types=keep_io_types,
                             inputs=checked, min_top1=min_top1, force=force, measure=False,
                             rtol=rtol, atol=atol)
        steps.append(optimized)
        bar.update(1)

        # 3. quantize
        if quantize:
            advance("quantize")
            quantized = quantize_step(optimized, quantize, calibration, method, per_channel, exclude_op_types,
                                      exclude_nodes, checked, min_top1, force, op_types=op_types,
                                      **_tolerances(rtol, atol))
            steps.append(quantized)
            bar.update(1)
        final = steps[-1]

        # 4. end-to-end validation against the original
        advance("validate")
        tol = final.settings if final.step != "convert" else converted.settings
        given_rtol, given_atol = rtol, atol
        rtol = tol.get("rtol", 1e-3) if given_rtol is None else given_rtol
        atol = tol.get("atol", 1e-4) if given_atol is None else given_atol
        if kind != "onnx" and final is not converted and given_atol is None:
            # the framework's float32 against the final model: the loosest step tolerance plus conversion's
            atol = _widen(atol, converted.settings.get("atol", 1e-5))
        rows: List[StageRow] = []
        end_to_end = validate(reference, final.model, checked, rtol=rtol, atol=atol, min_top1=min_top1,
                              raise_on_failure=False)
        if not end_to_end.passed:
            if not force:
                raise ValidationError(f"prepare: the final model is outside tolerance against the original "
                                      f"(pass force=True to keep it)\n{end_to_end}", end_to_end, final.model)
            warnings.warn(f"fastort prepare: keeping a final model outside tolerance (force=True)\n{end_to_end}",
                          RuntimeWarning, stacklevel=2)
        if ep_target:
            from .validate_ep import validate_on_ep

            on_ep = validate_on_ep(final.model, feeds, target, precision, raise_on_failure=False)
            notes.append(f"on {target}: " + "; ".join(on_ep.notes) + f": max abs err "
                         f"{max((o.max_abs_error for o in on_ep.outputs), default=0.0):.2e}")
            if not on_ep.passed and not force:
                raise ValidationError(f"prepare: the final model on {target} in precision {precision} is outside "
                                      f"tolerance against the CPU EP (pass force=True to keep it)\n{on_ep}",
                                      on_ep, final.model)
        original_name = "original" if kind == "onnx" else kind
        if kind != "onnx":
            rows.append(StageRow(f"{kind} -> onnx", ModelStats.of(converted.model), converted.validation))
        else:
            rows.append(StageRow("original", ModelStats.of(converted.model), None))
        for step in steps[1:]:
            label = step.step
            if step.step == "optimize":
                label = f"optimized ({step.settings['level']}{', fp16' if fp16 else ''})"
            elif step.step == "quantize":
                label = f"{step.settings['mode']} int8"
            report = end_to_end if step is final else validate(reference, step.model, checked, rtol=rtol, atol=atol,
                                                                raise_on_failure=False)
            rows.append(StageRow(label, ModelStats.of(step.model), report))
        bar.update(1)

        # 5. package
        advance("package")
        recorded = ([pruned.step_result()] if pruned is not None else []) + steps
        package(final, outdir, steps=recorded, validation=[end_to_end], target=target, replicas=replicas,
                precision=precision,
                max_batch_size=max_batch_size, source=describe(model) if kind != "onnx" else
                (os.fspath(model) if isinstance(model, (str, os.PathLike)) else "ONNX model"),
                overwrite=overwrite)
        model_path, engine_kwargs = load_package(outdir)
        bar.update(1)

        # 6. measure
        if measure:
            advance("measure")
            models = {r.stage: s.model for r, s in zip(rows, steps)}
            timings = measure_latency(models, {k: first_row(m, feeds) for k, m in models.items()},
                                      seconds=latency_seconds, providers=engine_kwargs.get("providers", ("cpu",)))
            for r in rows:
                r.stats.latency_us = timings[r.stage].median_us
            bar.update(1)
    finally:
        bar.close()
    table = _table(rows, original_name)
    result = PrepareResult(package_dir=outdir, model_path=model_path, engine_kwargs=engine_kwargs, steps=steps,
                           rows=rows, end_to_end=end_to_end, table=table, notes=notes)
    if progress if verbose is None else verbose:
        print(table)
        print(f"package: {outdir}  (Engine settings: {engine_kwargs})")
    return result


def _widen(atol: Any, extra: float) -> Any:
    if isinstance(atol, Mapping):
        return {k: float(v) + float(extra) for k, v in atol.items()}
    return float(atol) + float(extra)


def quantize_step(model: StepResult, mode: str, calibration: Any, method: str, per_channel: bool,
                  exclude_op_types: Sequence[str], exclude_nodes: Sequence[str], feeds: Any,
                  min_top1: Optional[float], force: bool, **options: Any) -> StepResult:
    return quantize(model, mode=mode, calibration=calibration, method=method, per_channel=per_channel,
                    exclude_op_types=exclude_op_types, exclude_nodes=exclude_nodes, inputs=feeds, min_top1=min_top1,
                    force=force, measure=False, **options)


def _tolerances(rtol: Optional[float], atol: Optional[float]) -> Dict[str, float]:
    """The tolerances given to prepare(), as keywords for a step (none: the step's defaults)."""
    return {k: v for k, v in (("rtol", rtol), ("atol", atol)) if v is not None}

