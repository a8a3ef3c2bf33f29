"""Optimize an ONNX model offline: simplify the graph, optionally fix symbolic
dims and convert to float16, then save onnxruntime's own graph optimizations.

>>> from fastort.prepare.optimize import optimize   # also fastort.optimize
>>> result = optimize("model.onnx", "model.opt.onnx", level="extended", target="cpu")
>>> print(result)      # nodes, size and latency before -> after, max abs error

The order is: simplification (onnxslim, else onnxoptimizer: constant folding,
dead nodes, unused and duplicate initializers), fixed dims, float16, then
onnxruntime's offline optimization at ``level`` for the ``target`` provider
(``SessionOptions.optimized_model_filepath``). The result is validated against
the input model and refused when outside tolerance (unless ``force=True``).

Levels: ``basic`` (provider-independent rewrites: constant folding, redundant
nodes), ``extended`` (fusions for the target provider; the default), ``all``
(also layout changes specific to this machine's CPU: the saved model is meant
for this kind of machine). A model optimized offline runs with the same
optimizations online anyway; what the saved form buys is a shorter load and a
file that shows what runs.
"""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from ..errors import OptimizationError
from .common import (
    ModelStats,
    StepResult,
    TempDir,
    available,
    check_force,
    first_row,
    load_model,
    measure_latency,
    prune_opsets,
    require,
    save_model,
    serialized,
    step_inputs,
    tool_versions,
)
from .validate import validate

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["optimize", "simplify", "fix_dims", "to_float16", "ort_optimize", "OptimizationError", "LEVELS", "TARGETS"]

#: onnxruntime's GraphOptimizationLevel values by name.
LEVELS = {"disable": 0, "basic": 1, "extended": 2, "layout": 3, "all": 99}
#: targets -> onnxruntime providers.
TARGETS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}

#: onnxoptimizer passes used when onnxslim is not installed.
ONNXOPTIMIZER_PASSES = (
    "eliminate_deadend", "eliminate_identity", "eliminate_nop_dropout", "eliminate_nop_cast",
    "eliminate_nop_transpose", "eliminate_nop_pad", "eliminate_nop_reshape", "eliminate_unused_initializer",
    "eliminate_duplicate_initializer", "eliminate_common_subexpression", "extract_constant_to_initializer",
    "fuse_bn_into_conv", "fuse_add_bias_into_conv", "fuse_consecutive_transposes", "fuse_transpose_into_gemm",
    "fuse_pad_into_conv",
)


def _level(level: Union[str, int]) -> int:
    if isinstance(level, int) and level in LEVELS.values():
        return level
    if isinstance(level, str) and level.lower() in LEVELS:
        return LEVELS[level.lower()]
    raise OptimizationError(f"level must be one of {sorted(LEVELS)}, got {level!r}")


def simplify(model: Any, method: str = "auto") -> "tuple[onnx.ModelProto, str]":
    """Simplifies the graph with onnxslim (``"onnxslim"``), onnxoptimizer
    (``"onnxoptimizer"``), whichever is installed (``"auto"``: onnxslim first),
    or not at all (``"none"``). Returns (model, what was used or why nothing was)."""
    proto = load_model(model)
    if method == "none":
        return proto, "none"
    if method not in ("auto", "onnxslim", "onnxoptimizer"):
        raise OptimizationError(f"simplifier must be 'auto', 'onnxslim', 'onnxoptimizer' or 'none', got {method!r}")
    order = ["onnxslim", "onnxoptimizer"] if method == "auto" else [method]
    errors = []
    for name in order:
        if method == "auto" and not available(name):
            errors.append(f"{name} not installed")
            continue
        lib = require(name, "prepare", f"simplifying with {name}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if name == "onnxslim":
                    out = lib.slim(proto)
                else:
                    passes = [p for p in ONNXOPTIMIZER_PASSES if p in lib.get_available_passes()]
                    out = lib.optimize(proto, passes)
            if out is None or not hasattr(out, "graph"):
                raise OptimizationError(f"{name} returned no model")
            _keep_io(proto, out, name)
            import onnx

            onnx.checker.check_model(out)
            return out, name
        except Exception as e:
            if method != "auto":
                raise OptimizationError(f"{name} failed to simplify the model: {type(e).__name__}: {e}") from e
            errors.append(f"{name} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    return proto, "skipped (" + "; ".join(errors) + "; pip install 'fastort[prepare]')"


def _keep_io(original: "onnx.ModelProto", simplified: "onnx.ModelProto", tool: str) -> None:
    """Puts the original input/output declarations back (a simplifier may drop
    or mangle non-tensor types such as a classifier's sequence of maps)."""
    for kind in ("input", "output"):
        before = {vi.name: vi for vi in getattr(original.graph, kind)}
        after = getattr(simplified.graph, kind)
        inits = {i.name for i in simplified.graph.initializer}
        names = [vi.name for vi in after if vi.name not in inits]
        wanted = [n for n in before if n not in {i.name for i in original.graph.initializer}]
        if names != wanted:
            raise OptimizationError(f"{tool} changed the model's {kind}s from {wanted} to {names}")
        for vi in after:
            if vi.name in before and vi.type != before[vi.name].type:
                vi.type.CopyFrom(before[vi.name].type)


def fix_dims(model: Any, dims: Mapping[str, Union[int, Sequence[int]]]) -> "onnx.ModelProto":
    """Fixes symbolic dims: ``{"batch": 1}`` sets every dim named ``batch``
    (inputs, outputs and intermediate shapes); ``{"x": [1, 3, 32, 32]}`` sets
    the whole shape of input ``x``. Unknown names are an OptimizationError."""
    import onnx

    proto = onnx.ModelProto()
    proto.CopyFrom(load_model(model))
    graph = proto.graph
    inputs = {i.name: i for i in graph.input}
    infos = [vi for vi in list(graph.input) + list(graph.output) + list(graph.value_info)
             if vi.type.WhichOneof("value") == "tensor_type"]
    params = {d.dim_param for vi in infos for d in vi.type.tensor_type.shape.dim if d.dim_param}
    for name, value in dims.items():
        if isinstance(value, (list, tuple)):
            vi = inputs.get(name)
            if vi is None or vi.type.WhichOneof("value") != "tensor_type":
                raise OptimizationError(f"fix_dims: {name!r} is not a tensor input of the model "
                                        f"(inputs: {sorted(inputs)})")
            shape = vi.type.tensor_type.shape
            if len(shape.dim) != len(value):
                raise OptimizationError(f"fix_dims: input {name!r} has {len(shape.dim)} dims, got shape {list(value)}")
            for d, v in zip(shape.dim, value):
                if d.HasField("dim_value") and d.dim_value != int(v):
                    raise OptimizationError(f"fix_dims: input {name!r} has a fixed dim {d.dim_value}, not {v}")
                d.dim_value = int(v)
        elif name in params:
            if not isinstance(value, (int, np.integer)) or int(value) < 1:
                raise OptimizationError(f"fix_dims: dim {name!r} must be an int >= 1, got {value!r}")
            for vi in infos:
                for d in vi.type.tensor_type.shape.dim:
                    if d.dim_param == name:
                        d.dim_value = int(value)
        else:
            raise OptimizationError(f"fix_dims: no symbolic dim or input named {name!r} "
                                    f"(dims: {sorted(params) or 'none'}; inputs: {sorted(inputs)})")
    return proto


def to_float16(model: Any, keep_io_types: bool = True,
               op_block_list: Optional[Sequence[str]] = None) -> "onnx.ModelProto":
    """float32 -> float16 weights and compute, with onnxruntime's converter
    (``onnxruntime.transformers.float16``); ``keep_io_types`` keeps the inputs
    and outputs float32 (casts at the edges)."""
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError:  # pragma: no cover - onnxruntime builds without the transformers tools
        converter = require("onnxconverter_common", "prepare", "float16 conversion")
        convert_float_to_float16 = converter.float16.convert_float_to_float16
    proto = load_model(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kwargs: Dict[str, Any] = {"keep_io_types": keep_io_types}
            if op_block_list is not None:
                kwargs["op_block_list"] = list(op_block_list)
            converted: "onnx.ModelProto" = convert_float_to_float16(proto, **kwargs)
            return converted
    except Exception as e:
        raise OptimizationError(f"float16 conversion failed: {type(e).__name__}: {e}") from e


def _ort_level(ort: Any, value: int) -> Any:
    levels = ort.GraphOptimizationLevel
    table = {0: levels.ORT_DISABLE_ALL, 1: levels.ORT_ENABLE_BASIC, 2: levels.ORT_ENABLE_EXTENDED,
             3: getattr(levels, "ORT_ENABLE_LAYOUT", levels.ORT_ENABLE_ALL), 99: levels.ORT_ENABLE_ALL}
    return table[value]


def ort_optimize(model: Any, level: Union[str, int] = "extended", providers: Sequence[str] = ("CPUExecutionProvider",),
                 ) -> "onnx.ModelProto":
    """The model as onnxruntime optimizes it at ``level`` for ``providers``
    (saved through ``SessionOptions.optimized_model_filepath``)."""
    import onnx
    import onnxruntime as ort

    proto = load_model(model)
    with TempDir() as tmp:
        out = os.path.join(tmp, "optimized.onnx")
        so = ort.SessionOptions()
        so.graph_optimization_level = _ort_level(ort, _level(level))
        so.optimized_model_filepath = out
        so.log_severity_level = 3
        if proto.ByteSize() > 1_800_000_000:  # pragma: no cover - large models go through files
            src = os.path.join(tmp, "input.onnx")
            save_model(proto, src)
            so.add_session_config_entry("session.optimized_model_external_initializers_file_name", "optimized.onnx.data")
            source: Any = src
        else:
            source = serialized(proto)
        try:
            ort.InferenceSession(source, so, providers=list(providers))
        except Exception as e:
            raise OptimizationError(f"onnxruntime could not optimize the model at level {level!r}: {e}") from e
        return prune_opsets(onnx.load(out))


def optimize(
    model: Any,
    path: Optional[Union[str, "os.PathLike[str]"]] = None,
    *,
    level: Union[str, int] = "extended",
    target: str = "cpu",
    providers: Optional[Sequence[str]] = None,
    simplifier: str = "auto",
    fixed_dims: Optional[Mapping[str, Union[int, Sequence[int]]]] = None,
    fp16: bool = False,
    keep_io_types: bool = True,
    inputs: Any = None,
    dims: Any = None,
    allow_synthetic: bool = False,
    rtol: Optional[float] = None,
    atol: Optional[float] = None,
    min_top1: Optional[float] = None,
    force: bool = False,
    measure: bool = True,
    latency_seconds: float = 1.0,
) -> StepResult:
    """Optimizes ``model`` (an .onnx path, bytes, ModelProto or step result).

    Args:
        path: where to write the result (None: not written).
        level: onnxruntime's offline optimization level: ``"disable"``,
            ``"basic"``, ``"extended"`` (default), ``"all"``.
        target: ``"cpu"`` or ``"cuda"``: the provider the saved optimizations
            are for. Without a CUDA-enabled onnxruntime, ``cuda`` lowers the level
            to ``basic`` (provider-independent), with a note.
        providers: onnxruntime providers to optimize (and measure) with,
            instead of the target's.
        simplifier: ``"auto"`` (onnxslim, else onnxoptimizer, else none),
            ``"onnxslim"``, ``"onnxoptimizer"`` or ``"none"``.
        fixed_dims: ``{dim name: size}`` or ``{input name: shape}`` to fix.
        fp16: convert weights and compute to float16 (for GPU targets).
        keep_io_types: with ``fp16``, keep inputs and outputs float32.
        inputs: validation inputs (default: seeded random ones, 8 rows).
        dims, allow_synthetic: with no inputs, the free dims' sizes and whether
            guessing them (1) is accepted: see :func:`fastort.validate`.
        rtol, atol: validation tolerance (default 1e-3/1e-4; 1e-2/1e-2 with fp16).
        min_top1: least top-1 agreement of score outputs, when given.
        force: keep a result outside tolerance (with a warning).
        measure: time batch-1 latency before and after with :class:`fastort.Engine`.
        latency_seconds: time spent measuring.
    """
    import onnxruntime as ort

    source = load_model(model, what="model to optimize")
    level_value = _level(level)
    if target not in TARGETS:
        raise OptimizationError(f"target must be one of {sorted(TARGETS)}, got {target!r}")
    notes: List[str] = []
    chosen = list(providers) if providers else list(TARGETS[target])
    available_providers = ort.get_available_providers()
    missing = [p for p in chosen if p not in available_providers]
    if missing:
        chosen = [p for p in chosen if p in available_providers] or ["CPUExecutionProvider"]
        if level_value > LEVELS["basic"]:
            notes.append(f"{', '.join(missing)} not available in this onnxruntime: level lowered from "
                         f"{level!r} to 'basic' (provider-independent) so the saved model suits the target")
            level_value = LEVELS["basic"]
    if rtol is None:
        rtol = 1e-2 if fp16 else 1e-3
    if atol is None:
        atol = 1e-2 if fp16 else 1e-4
    if fp16 and target == "cpu":
        notes.append("float16 on a CPU target: onnxruntime's CPU kernels are mostly float32, expect casts and no speed-up")

    before = ModelStats.of(source)
    out, simplified_with = simplify(source, simplifier)
    if simplified_with.startswith("skipped"):
        notes.append(f"graph simplification {simplified_with}")
    if fixed_dims:
        out = fix_dims(out, fixed_dims)
    if fp16:
        out = to_float16(out, keep_io_types=keep_io_types)
    level_name = next(k for k, v in LEVELS.items() if v == level_value)
    if level_value > 0:
        out = ort_optimize(out, level_value, chosen)
    after = ModelStats.of(out)

    if inputs is None and dims is None and fixed_dims:
        dims = {k: v for k, v in fixed_dims.items() if isinstance(v, int)}
    feeds, synthetic = step_inputs(source, inputs, "optimize", dims, allow_synthetic)
    report = validate(source, out, synthetic or feeds, rtol=rtol, atol=atol, min_top1=min_top1, raise_on_failure=False,
                      providers=["cpu"])
    forced = check_force("optimize", report, out, force, notes)
    if measure:
        timings = measure_latency({"before": source, "after": out},
                                  {"before": first_row(source, feeds), "after": first_row(out, feeds)},
                                  seconds=latency_seconds)
        before.latency_us = timings["before"].median_us
        after.latency_us = timings["after"].median_us
    tools = tool_versions(*(n for n in ("onnxslim", "onnxoptimizer") if simplified_with == n))
    settings = {"level": level_name, "level_requested": level if isinstance(level, str) else str(level),
                "target": target, "providers": chosen, "simplifier": simplified_with,
                "fixed_dims": {k: v for k, v in (fixed_dims or {}).items()}, "fp16": fp16,
                "keep_io_types": keep_io_types if fp16 else None, "rtol": rtol, "atol": atol, "min_top1": min_top1}
    result = StepResult(step="optimize", model=out, settings=settings, tools=tools, validation=report,
                        before=before, after=after, notes=notes, forced=forced)
    if path is not None:
        result.path = save_model(out, path)
    return result
