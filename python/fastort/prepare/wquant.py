"""Weight-only 4-bit and 8-bit quantization of MatMul weights (MatMulNBits).

>>> from fastort.quantize import quantize
>>> result = quantize("model.onnx", "model.int4.onnx", mode="int4", block_size=32)
>>> result = quantize("model.onnx", "model.int4.onnx", mode="int4", algorithm="gptq", calibration={"x": x})

The constant weight of every MatMul (and of every plain Gemm, rewritten as
MatMul + Add first) is stored in blocks of ``block_size`` values along the
input dim, each block with its own scale (and zero point unless
``symmetric``), by onnxruntime's ``MatMulNBitsQuantizer``; activations stay
float. ``algorithm``: ``"rtn"`` (round to nearest, onnxruntime's own blockwise
quantizer), ``"hqq"`` (half-quadratic optimization of scales and zero points;
needs torch) or ``"gptq"`` (error-compensating, calibrated on your data).
``accuracy_level`` picks the MatMulNBits compute type (0 or None: the
provider's default, 1 float32, 2 float16, 3 bfloat16, 4 int8: activations are
quantized to int8 per block on the CPU, the fastest and the least exact).

The result is refused when the target provider has no kernel for one of its
nodes, and when it is outside tolerance against the float model; with an
``accuracy_level`` it is also compared with the same weights at accuracy level
unset (a lower level can change outputs on models with outlier activations).
``force=True`` keeps a result outside tolerance, with a warning.
"""

from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import CalibrationError, QuantizationError
from .common import (
    ModelStats,
    StepResult,
    check_force,
    first_row,
    load_model,
    measure_latency,
    prune_opsets,
    require,
    save_model,
    step_inputs,
    tool_versions,
)
from .kernels import check_kernels
from .tool_output import route_tool_output

if TYPE_CHECKING:  # pragma: no cover
    import os

    import onnx

__all__ = ["WeightOnlyConfig", "quantize_weights", "matmul_weight_bytes", "WEIGHT_ONLY_MODES", "ALGORITHMS",
           "DEFAULT_TOLERANCE"]

#: mode -> bits of the stored weights.
WEIGHT_ONLY_MODES: Dict[str, int] = {"int4": 4, "int8_weight": 8}
ALGORITHMS = ("rtn", "hqq", "gptq")
#: mode -> (rtol, atol as a fraction of each output's largest magnitude): 4-bit
#: weights move outputs more than int8 does.
DEFAULT_TOLERANCE: Dict[str, Tuple[float, float]] = {"int4": (0.25, 0.15), "int8_weight": (0.1, 0.05)}
_QUANTIZER_LOGGERS = ("onnxruntime.quantization.matmul_nbits_quantizer", "onnxruntime.quantization",
                      "onnxruntime.quantization.neural_compressor")


@dataclass
class WeightOnlyConfig:
    """How to quantize the weights (see the module docstring)."""

    mode: str = "int4"
    block_size: int = 32
    symmetric: bool = False
    accuracy_level: Optional[int] = None
    algorithm: str = "rtn"
    exclude: Sequence[str] = field(default_factory=tuple)

    @property
    def bits(self) -> int:
        return WEIGHT_ONLY_MODES[self.mode]

    def check(self) -> None:
        if self.mode not in WEIGHT_ONLY_MODES:
            raise QuantizationError(f"weight-only mode must be one of {sorted(WEIGHT_ONLY_MODES)}, got {self.mode!r}")
        if self.algorithm not in ALGORITHMS:
            raise QuantizationError(f"algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        b = self.block_size
        if not isinstance(b, int) or isinstance(b, bool) or b < 16 or b & (b - 1):
            raise QuantizationError(f"block_size must be a power of two >= 16 (32, 64, 128...), got {b!r}")
        if self.accuracy_level is not None and self.accuracy_level not in (0, 1, 2, 3, 4):
            raise QuantizationError(f"accuracy_level must be 0-4 (1 float32, 2 float16, 3 bfloat16, 4 int8) or None, "
                                    f"got {self.accuracy_level!r}")
        if self.algorithm in ("gptq", "hqq") and self.bits != 4:
            raise QuantizationError(f"algorithm {self.algorithm!r} makes 4-bit weights only (mode='int4'); "
                                    f"use algorithm='rtn' for {self.mode}")
        if self.algorithm == "hqq" and self.symmetric:
            raise QuantizationError("algorithm 'hqq' optimizes zero points: it is asymmetric (symmetric=False)")


def _initializers(model: "onnx.ModelProto") -> Dict[str, Any]:
    return {i.name: i for i in model.graph.initializer}


def matmul_weight_bytes(model: Any) -> int:
    """Bytes of the constant weights of MatMul, Gemm, MatMulNBits and
    MatMulInteger nodes (quantized weights with the scales and zero points
    they take as inputs; dynamic int8's weight scales, applied by a later Mul,
    are not counted)."""
    proto = load_model(model)
    inits = _initializers(proto)
    seen = set()
    total = 0
    for node in proto.graph.node:
        if node.op_type in ("MatMul", "Gemm", "MatMulNBits", "MatMulInteger"):
            names = node.input[1:] if node.op_type in ("MatMulNBits", "MatMulInteger") else node.input[1:2]
            for name in names:
                if name in inits and name not in seen:
                    seen.add(name)
                    total += len(inits[name].raw_data) or inits[name].ByteSize()
    return total


def _gemm_to_matmul(model: "onnx.ModelProto", exclude: Sequence[str]) -> int:
    """Rewrites plain Gemm nodes (alpha = beta = 1, no transA, constant B) as
    MatMul (+ Add of C), in place, so that their weights can be quantized
    (torch exports ``nn.Linear`` on 2-D inputs as Gemm). Returns how many."""
    from onnx import helper, numpy_helper

    inits = _initializers(model)
    new_nodes = []
    changed = 0
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = (node.op_type == "Gemm" and node.name not in exclude and len(node.input) >= 2
                 and node.input[1] in inits and attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0
                 and not attrs.get("transA", 0))
        if not plain:
            new_nodes.append(node)
            continue
        b = inits[node.input[1]]
        weight = node.input[1]
        if attrs.get("transB", 0):
            arr = numpy_helper.to_array(b).T.copy()
            weight = f"{node.input[1]}_T_{changed}"
            model.graph.initializer.append(numpy_helper.from_array(arr, weight))
        has_bias = len(node.input) > 2 and node.input[2] != ""
        name = node.name or f"gemm_{changed}"
        mm_out = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        new_nodes.append(helper.make_node("MatMul", [node.input[0], weight], [mm_out], name=f"{name}_MatMul"))
        if has_bias:
            new_nodes.append(helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]], name=f"{name}_Add"))
        changed += 1
    if changed:
        del model.graph.node[:]
        model.graph.node.extend(new_nodes)
        used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
        keep = [i for i in model.graph.initializer if i.name in used]
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
    return changed


def _candidates(model: "onnx.ModelProto") -> List[str]:
    """Names of the MatMul nodes with a constant 2-D weight."""
    inits = _initializers(model)
    return [n.name for n in model.graph.node
            if n.op_type == "MatMul" and len(n.input) == 2 and n.input[1] in inits and len(inits[n.input[1]].dims) == 2]


def _algo_config(cfg: WeightOnlyConfig, reader: Any) -> Any:
    """onnxruntime's algorithm configuration (keyword arguments only: their
    positional order changed between onnxruntime versions)."""
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization import matmul_nbits_quantizer as mnq

    if cfg.algorithm == "gptq":
        return mnq.GPTQWeightOnlyQuantConfig(calibration_data_reader=reader, quant_format=QuantFormat.QOperator)
    if cfg.algorithm == "hqq":
        require("torch", "torch", "HQQ weight quantization (algorithm='hqq')")
        return mnq.HQQWeightOnlyQuantConfig(block_size=cfg.block_size, bits=cfg.bits, quant_format=QuantFormat.QOperator)
    return mnq.DefaultWeightOnlyQuantConfig(block_size=cfg.block_size, is_symmetric=cfg.symmetric,
                                            accuracy_level=cfg.accuracy_level, quant_format=QuantFormat.QOperator,
                                            bits=cfg.bits)


class _ListReader:
    """A copyable calibration reader over materialized batches (GPTQ deep-copies it)."""

    def __init__(self, batches: List[Dict[str, np.ndarray]]) -> None:
        self.batches = batches
        self.pos = 0

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        if self.pos >= len(self.batches):
            return None
        self.pos += 1
        return self.batches[self.pos - 1]

    def rewind(self) -> None:
        self.pos = 0

    def __iter__(self) -> Any:
        return iter(self.batches)


def _set_accuracy_level(model: "onnx.ModelProto", level: Optional[int]) -> None:
    """Sets (level > 0) or removes (None / 0) MatMulNBits' ``accuracy_level``, in place."""
    from onnx import helper

    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        kept = [a for a in node.attribute if a.name != "accuracy_level"]
        del node.attribute[:]
        node.attribute.extend(kept)
        if level:
            node.attribute.append(helper.make_attribute("accuracy_level", int(level)))


def _run_quantizer(source: "onnx.ModelProto", cfg: WeightOnlyConfig, reader: Any) -> "onnx.ModelProto":
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    loggers = [logging.getLogger(n) for n in _QUANTIZER_LOGGERS]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        route_tool_output("onnxruntime.quantization")  # its prints and root-logger calls -> fastort.tools.*
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantizer = MatMulNBitsQuantizer(
                model=copy.deepcopy(source), bits=cfg.bits, block_size=cfg.block_size, is_symmetric=cfg.symmetric,
                accuracy_level=cfg.accuracy_level, nodes_to_exclude=list(cfg.exclude),
                algo_config=_algo_config(cfg, reader))
            quantizer.process()
    except (QuantizationError, ImportError):
        raise
    except Exception as e:
        raise QuantizationError(f"onnxruntime could not quantize the weights ({cfg.mode}, {cfg.algorithm}): "
                                f"{type(e).__name__}: {e}") from e
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
    out = quantizer.model  # an ONNXModel wrapper in some onnxruntime versions, the proto in others
    model: "onnx.ModelProto" = out.model if hasattr(out, "model") else out
    return model


def _atol(source: "onnx.ModelProto", feeds: Mapping[str, np.ndarray], fraction: float) -> Dict[str, float]:
    from .validate import run_model

    atol = {}
    for name, value in run_model(source, feeds).items():
        try:
            mag = float(np.max(np.abs(np.asarray(value, dtype=np.float64)))) if np.size(value) else 0.0
        except (TypeError, ValueError):
            mag = 0.0
        atol[name] = max(fraction * mag, 1e-6)
    return atol


def quantize_weights(
    model: Any,
    path: "Optional[Union[str, os.PathLike[str]]]" = None,
    *,
    mode: str = "int4",
    block_size: int = 32,
    symmetric: bool = False,
    accuracy_level: Optional[int] = None,
    algorithm: str = "rtn",
    exclude: Sequence[str] = (),
    calibration: Any = None,
    calibration_batch_size: Optional[int] = None,
    max_calibration_batches: Optional[int] = None,
    inputs: Any = None,
    dims: Any = None,
    allow_synthetic: bool = False,
    target: str = "cpu",
    rtol: Optional[float] = None,
    atol: Optional[Union[float, Mapping[str, float]]] = None,
    atol_fraction: Optional[float] = None,
    min_top1: Optional[float] = None,
    force: bool = False,
    measure: bool = True,
    latency_seconds: float = 1.0,
) -> StepResult:
    """Quantizes the MatMul weights of ``model`` to 4 or 8 bits (MatMulNBits).

    Args:
        path: where to write the result (None: not written).
        mode: ``"int4"`` or ``"int8_weight"``.
        block_size: values per quantization block (a power of two >= 16).
        symmetric: no zero points (scales only).
        accuracy_level: MatMulNBits' compute type (None: unset).
        algorithm: ``"rtn"``, ``"hqq"`` or ``"gptq"`` (needs ``calibration``).
        exclude: node names whose weights stay float.
        calibration: GPTQ's data (as :class:`fastort.prepare.quantize.ArrayCalibrationReader` takes).
        inputs: validation inputs (default: up to 256 calibration rows, else seeded random ones).
        target: the provider the result is for: its kernels are checked.
        rtol, atol, atol_fraction: tolerance against the float model (default
            per mode: :data:`DEFAULT_TOLERANCE`).
        min_top1: least top-1 agreement of score outputs.
        force: keep a result outside tolerance (with a warning).
        measure: time batch-1 latency before and after with :class:`fastort.Engine`.
    """
    from .calibration import ArrayCalibrationReader
    from .validate import validate

    cfg = WeightOnlyConfig(mode=mode, block_size=block_size, symmetric=symmetric, accuracy_level=accuracy_level,
                           algorithm=algorithm, exclude=tuple(exclude))
    cfg.check()
    default_rtol, default_fraction = DEFAULT_TOLERANCE[mode]
    rtol = default_rtol if rtol is None else rtol
    fraction = default_fraction if atol_fraction is None else atol_fraction
    source = load_model(model, what="model to quantize")
    notes: List[str] = []
    unknown = [n for n in cfg.exclude if n not in {node.name for node in source.graph.node}]
    if unknown:
        raise QuantizationError(f"exclude names nodes the model does not have: {unknown}")

    reader = None
    if algorithm == "gptq":
        if calibration is None:
            raise CalibrationError("algorithm 'gptq' needs calibration data (calibration=...): it minimizes each "
                                   "layer's output error on it")
        reader = ArrayCalibrationReader(source, calibration, calibration_batch_size, max_calibration_batches)
        batches = list(reader)  # reads (and checks) them all: GPTQ copies the reader
        if not batches:
            raise CalibrationError("no calibration batches")
    elif calibration is not None:
        notes.append(f"calibration data is not used by algorithm {algorithm!r}")

    prepared = copy.deepcopy(source)
    rewritten = _gemm_to_matmul(prepared, cfg.exclude)
    if rewritten:
        notes.append(f"{rewritten} Gemm node(s) rewritten as MatMul (+ Add) so that their weights can be quantized")
    candidates = [n for n in _candidates(prepared) if n not in cfg.exclude]
    if not candidates:
        ops = sorted({n.op_type for n in source.graph.node})
        raise QuantizationError(f"nothing to quantize: {mode} stores the constant weights of MatMul (and plain Gemm) "
                                f"nodes; the model's ops {ops} have none"
                                f"{' once ' + str(list(cfg.exclude)) + ' are excluded' if cfg.exclude else ''}")
    before = ModelStats.of(source)
    out = _run_quantizer(prepared, cfg, None if reader is None else _ListReader(batches))
    if algorithm == "hqq" and accuracy_level:
        _set_accuracy_level(out, accuracy_level)  # HQQ's quantizer does not set it
    prune_opsets(out)
    quantized = sum(1 for n in out.graph.node if n.op_type == "MatMulNBits")
    if not quantized:
        raise QuantizationError(f"onnxruntime's quantizer left every MatMul in float ({mode}, {algorithm}): "
                                f"nothing was quantized")
    notes += check_kernels(out, target, what=f"the {mode} model ({algorithm}, block {block_size})")
    after = ModelStats.of(out)

    head = reader.head(256) if inputs is None and reader is not None else None
    if head is not None:
        feeds: Dict[str, np.ndarray] = head
        notes.append("validated on the calibration data (give inputs= for held-out data)")
    else:
        feeds, _ = step_inputs(source, inputs, "quantize", dims, allow_synthetic)
    tol: Union[float, Mapping[str, float]] = _atol(source, feeds, fraction) if atol is None else atol
    try:
        report = validate(source, out, feeds, rtol=rtol, atol=tol, min_top1=min_top1, raise_on_failure=False)
    except Exception as e:
        raise QuantizationError(f"the {mode} model does not run: {type(e).__name__}: {e}") from e
    forced = check_force("quantize", report, out, force, notes)

    level_check = None
    if accuracy_level:
        unset = copy.deepcopy(out)
        _set_accuracy_level(unset, None)
        level_check = validate(unset, out, feeds, rtol=rtol, atol=_atol(unset, feeds, fraction) if atol is None
                               else atol, min_top1=min_top1, raise_on_failure=False)
        notes.append(f"accuracy_level {accuracy_level} against unset (same weights): max abs err "
                     f"{level_check.max_abs_error:.3g}, {'within' if level_check.passed else 'OUTSIDE'} tolerance")
        if not level_check.passed:
            forced = check_force(f"quantize (accuracy_level {accuracy_level} vs unset)", level_check, out, force,
                                 notes) or forced
    if measure:
        timings = measure_latency({"before": source, "after": out},
                                  {"before": first_row(source, feeds), "after": first_row(out, feeds)},
                                  seconds=latency_seconds, providers=(target,))
        before.latency_us = timings["before"].median_us
        after.latency_us = timings["after"].median_us
    settings: Dict[str, Any] = dict(asdict(cfg), bits=cfg.bits, exclude=list(cfg.exclude), format="MatMulNBits",
                                    target=target, quantized_nodes=quantized, gemm_rewritten=rewritten,
                                    matmul_weight_bytes={"before": matmul_weight_bytes(source),
                                                         "after": matmul_weight_bytes(out)},
                                    rtol=rtol, atol=tol, min_top1=min_top1)
    if reader is not None:
        settings.update(calibration_rows=reader.rows, calibration_batches=len(batches))
    if level_check is not None:
        settings["accuracy_level_check"] = level_check.to_dict()
    result = StepResult(step="quantize", model=out, settings=settings,
                        tools=tool_versions(*(["torch"] if algorithm == "hqq" else [])),
                        validation=report, before=before, after=after, notes=notes, forced=forced)
    if path is not None:
        result.path = save_model(out, path)
    return result
