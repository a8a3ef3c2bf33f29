"""Quantize an ONNX model to int8 with onnxruntime's quantization tools.

>>> from fastort.prepare.quantize import quantize   # also fastort.quantize
>>> result = quantize("model.onnx", "model.int8.onnx", mode="dynamic")
>>> result = quantize("model.onnx", "model.qdq.onnx", mode="static", calibration={"x": x_calib},
...                   method="entropy", per_channel=True)

``dynamic``: int8 weights, activations quantized on the fly (MatMulInteger,
ConvInteger); no calibration data. ``static``: int8 weights and activations in
QDQ format, with activation ranges calibrated on data you give (arrays, an
.npz file, or an iterable of batches) by ``minmax``, ``entropy`` or
``percentile``. The model is first pre-processed the way onnxruntime
recommends (shape inference and basic optimization) unless ``preprocess=False``.

The result is validated against the float model; it is refused when outside
tolerance unless ``force=True``. The default tolerance suits int8: per output,
``|int8 - float| <= atol + rtol * |float|`` with ``rtol = 0.1`` and ``atol`` 5 % of
the output's largest magnitude on the validation inputs (``atol_fraction``).
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Union

import numpy as np

from ..errors import CalibrationError, QuantizationError
from .calibration import ArrayCalibrationReader
from .common import (
    ModelStats,
    StepResult,
    TempDir,
    available,
    check_force,
    first_row,
    load_model,
    measure_latency,
    normalize_feeds,
    prune_opsets,
    save_model,
    step_inputs,
    take_rows,
    tool_versions,
)
from ..bench import SyntheticInputs
from .tool_output import route_tool_output
from .validate import run_model, validate

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["quantize", "ArrayCalibrationReader", "QuantizationError", "CalibrationError", "METHODS", "MODES"]

MODES = ("dynamic", "static", "int4", "int8_weight")  # the last two: weight-only, in fastort.prepare.wquant
METHODS = ("minmax", "entropy", "percentile")
_TYPES = {"int8": "QInt8", "uint8": "QUInt8"}


def _as_reader(model_path: str, reader: ArrayCalibrationReader) -> Any:
    """Wraps our reader in a subclass of onnxruntime's abstract reader."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime ships no type information
        def get_next(self) -> Optional[Dict[str, np.ndarray]]:
            return reader.get_next()

        def rewind(self) -> None:
            reader.rewind()

    return _Reader()


_CWD_LOCK = threading.Lock()


@contextlib.contextmanager
def _in_dir(folder: str) -> Iterator[None]:
    here = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(here)


def _preprocess(src: str, dst: str, notes: List[str], keep_names: bool = False) -> str:
    """onnxruntime's recommended pre-processing; on failure the model as it is.
    ``keep_names`` skips its graph optimization, which renames fused nodes."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    symbolic = available("sympy")
    if not symbolic:
        notes.append("pre-processing without symbolic shape inference (sympy not installed; "
                     "pip install 'fastort[prepare]')")
    try:
        # onnxruntime's symbolic shape inference, when it cannot finish, writes
        # sym_shape_infer_temp.onnx (and its data) into the working directory:
        # run it from the temporary folder (the paths here are absolute).
        route_tool_output("onnxruntime.quantization")
        with warnings.catch_warnings(), _CWD_LOCK, _in_dir(os.path.dirname(dst)):
            warnings.simplefilter("ignore")
            quant_pre_process(src, dst, skip_symbolic_shape=not symbolic, skip_optimization=keep_names)
        return dst
    except Exception as e:
        notes.append(f"pre-processing skipped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        return src


def _quant_type(value: str, what: str) -> Any:
    from onnxruntime.quantization import QuantType

    if value not in _TYPES:
        raise QuantizationError(f"{what} must be one of {sorted(_TYPES)}, got {value!r}")
    return getattr(QuantType, _TYPES[value])


#: Op types dynamic mode leaves alone unless named in ``op_types``: ConvInteger
#: is slower than float Conv on onnxruntime's CPU provider.
DYNAMIC_OPT_IN = ("Conv",)
#: Treated as one type in exclusions: pre-processing fuses MatMul + Add into
#: Gemm, and dynamic mode turns Gemm back into MatMul.
_MATMUL_LIKE = {"MatMul", "Gemm"}


def _op_types(model: "onnx.ModelProto", source_ops: Iterable[str], mode: str, op_types: Optional[Sequence[str]],
              exclude_op_types: Sequence[str], notes: List[str]) -> List[str]:
    from onnxruntime.quantization.registry import IntegerOpsRegistry, QDQRegistry

    present = {n.op_type for n in model.graph.node}
    known = present | set(source_ops)
    unknown = sorted(set(exclude_op_types) - known)
    if unknown:
        raise QuantizationError(f"exclude_op_types names op types the model does not have: {unknown} "
                                f"(it has {sorted(known)})")
    excluded = set(exclude_op_types)
    if excluded & _MATMUL_LIKE:
        excluded |= _MATMUL_LIKE
    if mode == "dynamic":
        supported = set(IntegerOpsRegistry) | {"Gemm"}
        default = supported - set(DYNAMIC_OPT_IN)
    else:
        supported = set(QDQRegistry)
        default = supported
    wanted = set(op_types) if op_types is not None else default
    if op_types is not None and set(op_types) & _MATMUL_LIKE:
        wanted |= _MATMUL_LIKE
    chosen = (wanted & supported & present) - excluded
    if mode == "dynamic" and "Gemm" in chosen:  # onnxruntime quantizes Gemm as MatMul + Add
        chosen = (chosen - {"Gemm"}) | {"MatMul"}
    if op_types is None and mode == "dynamic" and present & set(DYNAMIC_OPT_IN) - excluded:
        notes.append("dynamic mode leaves Conv in float (ConvInteger is slow on CPU); use static mode, "
                     "or op_types=[..., 'Conv']")
    if not chosen:
        raise QuantizationError(
            f"nothing to quantize: the model's ops {sorted(present)} include none that {mode} quantization "
            f"handles{' among ' + str(sorted(wanted)) if op_types is not None else ''}"
            f"{' once ' + str(sorted(exclude_op_types)) + ' are excluded' if exclude_op_types else ''}")
    return sorted(chosen)


def quantize(
    model: Any,
    path: Optional[Union[str, "os.PathLike[str]"]] = None,
    *,
    mode: str = "dynamic",
    calibration: Any = None,
    method: str = "minmax",
    per_channel: bool = False,
    exclude_nodes: Sequence[str] = (),
    exclude_op_types: Sequence[str] = (),
    op_types: Optional[Sequence[str]] = None,
    weight_type: str = "int8",
    activation_type: str = "uint8",
    reduce_range: bool = False,
    percentile: float = 99.999,
    calibration_batch_size: Optional[int] = None,
    max_calibration_batches: Optional[int] = None,
    preprocess: bool = True,
    inputs: Any = None,
    dims: Any = None,
    allow_synthetic: bool = False,
    rtol: Optional[float] = None,
    atol: Optional[Union[float, Mapping[str, float]]] = None,
    atol_fraction: Optional[float] = None,
    min_top1: Optional[float] = None,
    force: bool = False,
    measure: bool = True,
    latency_seconds: float = 1.0,
    block_size: int = 32,
    symmetric: bool = False,
    accuracy_level: Optional[int] = None,
    algorithm: str = "rtn",
    target: str = "cpu",
) -> StepResult:
    """Quantizes ``model`` (an .onnx path, bytes, ModelProto or step result) to int8.

    Args:
        path: where to write the result (None: not written).
        mode: ``"dynamic"`` (weights only; no calibration) or ``"static"`` (QDQ);
            ``"int4"`` / ``"int8_weight"``: weight-only MatMulNBits (see
            :func:`fastort.prepare.wquant.quantize_weights`, which takes ``block_size``,
            ``symmetric``, ``accuracy_level``, ``algorithm`` and ``target``;
            ``exclude_nodes`` and ``calibration`` (GPTQ) are passed on).
        calibration: static mode's data (see :class:`ArrayCalibrationReader`).
        method: calibration method: ``"minmax"``, ``"entropy"`` or ``"percentile"``.
        per_channel: one scale per output channel of each weight.
        exclude_nodes: node names left in float.
        exclude_op_types: op types left in float (e.g. ``["Conv"]``).
        op_types: quantize only these op types (default: all the mode handles).
        weight_type, activation_type: ``"int8"`` or ``"uint8"`` (activations:
            static mode; dynamic mode quantizes them to uint8 on the fly).
        reduce_range: 7-bit weights, for CPUs without VNNI where int8 products saturate.
        percentile: the percentile of the ``percentile`` method.
        calibration_batch_size: rows per calibration batch (default: 32, or the
            model's fixed batch size).
        max_calibration_batches: read at most this many batches.
        preprocess: run onnxruntime's quantization pre-processing first.
        inputs: validation inputs (default: up to 256 rows of the calibration
            data, else seeded random inputs).
        dims, allow_synthetic: with no inputs, the free dims' sizes and whether
            guessing them (1) is accepted: see :func:`fastort.validate`.
        rtol, atol: validation tolerance (int8 default: rtol 0.1); ``atol=None`` is
            ``atol_fraction`` (int8 default: 0.05) of each output's largest magnitude.
        min_top1: least top-1 agreement of score outputs ``[N, classes]``, when given.
        force: keep a result outside tolerance (with a warning).
        measure: time batch-1 latency before and after with :class:`fastort.Engine`.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_dynamic, quantize_static

    if mode not in MODES:
        raise QuantizationError(f"mode must be one of {MODES}, got {mode!r}")
    if mode in ("int4", "int8_weight"):
        from .wquant import quantize_weights

        return quantize_weights(model, path, mode=mode, block_size=block_size, symmetric=symmetric,
                                accuracy_level=accuracy_level, algorithm=algorithm, exclude=exclude_nodes,
                                calibration=calibration, calibration_batch_size=calibration_batch_size,
                                max_calibration_batches=max_calibration_batches, inputs=inputs, dims=dims,
                                allow_synthetic=allow_synthetic, target=target,
                                rtol=rtol, atol=atol, atol_fraction=atol_fraction, min_top1=min_top1, force=force,
                                measure=measure, latency_seconds=latency_seconds)
    rtol = 0.1 if rtol is None else rtol
    atol_fraction = 0.05 if atol_fraction is None else atol_fraction
    if method not in METHODS:
        raise QuantizationError(f"method must be one of {METHODS}, got {method!r}")
    if not 0 < percentile <= 100:
        raise QuantizationError(f"percentile must be within (0, 100], got {percentile!r}")
    source = load_model(model, what="model to quantize")
    wtype = _quant_type(weight_type, "weight_type")
    atype = _quant_type(activation_type, "activation_type")
    notes: List[str] = []
    node_names = {n.name for n in source.graph.node}
    unknown = [n for n in exclude_nodes if n not in node_names]
    if unknown:
        raise QuantizationError(f"exclude_nodes names nodes the model does not have: {unknown}")
    reader = None
    if mode == "static":
        reader = ArrayCalibrationReader(source, calibration, calibration_batch_size, max_calibration_batches)
    elif calibration is not None:
        notes.append("calibration data is not used by dynamic quantization")

    before = ModelStats.of(source)
    with TempDir() as tmp:
        src = save_model(source, os.path.join(tmp, "input.onnx"))
        if preprocess:
            src = _preprocess(src, os.path.join(tmp, "preprocessed.onnx"), notes,
                              keep_names=bool(exclude_nodes))
        pre = onnx.load(src)
        chosen_ops = _op_types(pre, {n.op_type for n in source.graph.node}, mode, op_types, exclude_op_types, notes)
        out_path = os.path.join(tmp, "quantized.onnx")
        try:
            route_tool_output("onnxruntime.quantization")  # its prints and root-logger calls -> fastort.tools.*
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if mode == "dynamic":
                    quantize_dynamic(src, out_path, op_types_to_quantize=chosen_ops, per_channel=per_channel,
                                     reduce_range=reduce_range, weight_type=wtype,
                                     nodes_to_exclude=list(exclude_nodes) or None)
                else:
                    assert reader is not None
                    calib = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                             "percentile": CalibrationMethod.Percentile}[method]
                    extra = {"CalibPercentile": float(percentile)} if method == "percentile" else {}
                    quantize_static(src, out_path, _as_reader(src, reader), quant_format=QuantFormat.QDQ,
                                    op_types_to_quantize=chosen_ops, per_channel=per_channel,
                                    reduce_range=reduce_range, activation_type=atype, weight_type=wtype,
                                    nodes_to_exclude=list(exclude_nodes) or None, calibrate_method=calib,
                                    extra_options=extra)
        except CalibrationError:
            raise
        except Exception as e:
            raise QuantizationError(f"onnxruntime could not quantize the model ({mode}): "
                                    f"{type(e).__name__}: {e}") from e
        out = prune_opsets(onnx.load(out_path))
    after = ModelStats.of(out)
    from .kernels import check_kernels

    notes += check_kernels(out, target, what=f"the {mode} int8 model")

    synthetic: Optional[SyntheticInputs] = None
    head = reader.head(256) if inputs is None and reader is not None else None
    if head is not None:
        feeds: Dict[str, np.ndarray] = head
        notes.append("validated on the calibration data (give inputs= for held-out data)")
    else:
        feeds, synthetic = step_inputs(source, inputs, "quantize", dims, allow_synthetic)
    if atol is None:
        ref = run_model(source, feeds)
        atol = {}
        for name, value in ref.items():
            try:
                mag = float(np.max(np.abs(np.asarray(value, dtype=np.float64)))) if np.size(value) else 0.0
            except (TypeError, ValueError):
                mag = 0.0
            atol[name] = max(atol_fraction * mag, 1e-6)
    try:
        report = validate(source, out, synthetic or feeds, rtol=rtol, atol=atol, min_top1=min_top1, raise_on_failure=False)
    except Exception as e:
        if isinstance(e, QuantizationError):
            raise
        raise QuantizationError(f"the quantized model does not run: {type(e).__name__}: {e}") from e
    forced = check_force("quantize", report, out, force, notes)
    if measure:
        timings = measure_latency({"before": source, "after": out},
                                  {"before": first_row(source, feeds), "after": first_row(out, feeds)},
                                  seconds=latency_seconds)
        before.latency_us = timings["before"].median_us
        after.latency_us = timings["after"].median_us
    settings: Dict[str, Any] = {
        "mode": mode, "format": "QOperator (dynamic)" if mode == "dynamic" else "QDQ",
        "weight_type": weight_type, "activation_type": activation_type if mode == "static" else "uint8 (dynamic)",
        "per_channel": per_channel, "reduce_range": reduce_range, "op_types": chosen_ops,
        "exclude_nodes": list(exclude_nodes), "exclude_op_types": list(exclude_op_types), "preprocess": preprocess,
        "rtol": rtol, "atol": atol, "min_top1": min_top1,
    }
    if mode == "static":
        assert reader is not None
        settings.update({"method": method, "calibration_rows": reader.rows,
                         "calibration_batches": len(reader._batches)})
        if method == "percentile":
            settings["percentile"] = percentile
    result = StepResult(step="quantize", model=out, settings=settings,
                        tools=tool_versions(*(["sympy"] if preprocess and available("sympy") else [])),
                        validation=report, before=before, after=after, notes=notes, forced=forced)
    if path is not None:
        result.path = save_model(out, path)
    return result
