"""The model-preparation subcommands of the ``fastort`` command line.

    fastort convert MODEL -o OUT.onnx [--input-shape 1,3,32,32 | --sample DATA]
    fastort optimize MODEL -o OUT.onnx [--level extended] [--target cpu|cuda] [--fp16] [--fix-dim batch=1]
    fastort quantize MODEL -o OUT.onnx [--mode dynamic|static --calibration DATA] [--method minmax|entropy|percentile]
    fastort quantize MODEL -o OUT.onnx --mode int4 [--block-size 32] [--accuracy-level 4] [--algorithm rtn|hqq|gptq]
    fastort validate REFERENCE CANDIDATE [--inputs DATA] [--rtol R] [--atol A]
    fastort validate REFERENCE.onnx --target openvino [--precision f32|bf16|fp16|auto]
    fastort package MODEL -o DIR [--target cpu|cuda] [--replicas N]   |   fastort package DIR --verify
    fastort prepare MODEL -o OUTDIR --target cpu|cuda|openvino [--precision P] [--quantize dynamic|static --calibration DATA] [--fp16]
                    [--prune 0.3]   (torch models: structured pruning first)

MODEL is an .onnx file, or for convert/prepare a saved framework model: a
whole torch module (.pt/.pth, TorchScript too), a pickled scikit-learn
estimator (.pkl/.joblib) or a Keras model (.keras/.h5). Loading a pickle runs
code from the file: use only files you trust. DATA is an .npy file (one input)
or an .npz file (input name -> array).

:func:`fastort.cli.main` adds them with :func:`add_parser`; each command's
function takes the parsed arguments and returns the exit status: 0 done,
1 failed (the message on stderr), 2 usage. The preparation layer is imported
when a command runs, not when the command line starts.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np


__all__ = ["add_parser", "COMMANDS"]

#: The subcommands this group adds.
COMMANDS = ("convert", "optimize", "quantize", "validate", "package", "prepare")


def _shape(text: str) -> List[int]:
    try:
        dims = [int(d) for d in text.replace("x", ",").split(",") if d.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"a shape is comma-separated ints like 1,3,32,32, got {text!r}") from None
    if not dims or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"a shape is positive ints like 1,3,32,32, got {text!r}")
    return dims


def _fix_dim(text: str) -> "tuple[str, Any]":
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--fix-dim takes NAME=SIZE (a dim) or INPUT=1,3,32,32 (a shape), got {text!r}")
    if "," in value:
        return name, _shape(value)
    try:
        return name, int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--fix-dim {name}: size must be an int, got {value!r}") from None


def _data(path: Optional[str], what: str) -> Any:
    if path is None:
        return None
    from ..prepare.common import load_arrays

    return load_arrays(path, what)


def _example_inputs(model: Any, args: argparse.Namespace) -> Any:
    """Example inputs for a framework model: --sample DATA, else random
    float32 data of --input-shape."""
    sample = _data(getattr(args, "sample", None) or getattr(args, "inputs", None), "sample")
    if sample is not None:
        return sample
    shapes = getattr(args, "input_shape", None)
    if shapes:
        rng = np.random.default_rng(0)
        arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        return arrays[0] if len(arrays) == 1 else tuple(arrays)
    return None


def _dims_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dims", action="append", default=[], metavar="NAME=SIZE",
                   help="without --inputs: the size of a free dim of the inputs, by name (height=224) or as "
                        "INPUT:AXIS=SIZE (x:2=224); repeatable or comma-separated")
    p.add_argument("--allow-synthetic-dims", action="store_true",
                   help="without --inputs: accept free dims no --dims gave, set to 1 (else an error naming them)")


def _dims(args: argparse.Namespace) -> Optional[Dict[str, int]]:
    from ..bench import parse_dims

    try:
        return parse_dims(args.dims) or None
    except ValueError as e:
        args.parser.error(f"--dims: {e}")
        raise  # not reached: error() exits


def _tolerance_args(p: argparse.ArgumentParser, rtol: Optional[float], atol: Optional[float]) -> None:
    p.add_argument("--rtol", type=float, default=rtol, help=f"relative tolerance (default: {rtol or 'the step default'})")
    p.add_argument("--atol", type=float, default=atol, help=f"absolute tolerance (default: {atol or 'the step default'})")
    p.add_argument("--min-top1", type=float, default=None, help="least top-1 agreement of classifier outputs (0-1)")
    p.add_argument("--force", action="store_true", help="write the result even when it is outside tolerance")


def _print_result(result: Any) -> None:
    print(result.summary())
    for note in result.notes:
        print(f"note: {note}")
    if result.validation is not None:
        print(result.validation)
    if result.path:
        print(f"wrote {result.path}")


def _convert(args: argparse.Namespace) -> int:
    from ..prepare.convert import convert, framework_of, load_framework_model

    model = load_framework_model(args.model)
    kind = framework_of(model)
    kwargs: Dict[str, Any] = {}
    if kind != "onnx":
        kwargs["force"] = args.force
        if args.rtol is not None:
            kwargs["rtol"] = args.rtol
        if args.atol is not None:
            kwargs["atol"] = args.atol
        if args.opset is not None:
            kwargs["opset"] = args.opset
        if kind in ("torch", "tf") and args.no_dynamic_batch:
            kwargs["dynamic_batch"] = False
        if kind == "sklearn":
            kwargs["zipmap"] = not args.no_zipmap
            if args.min_top1 is not None:
                kwargs["min_agreement"] = args.min_top1
    example = _example_inputs(model, args)
    if kind != "onnx" and example is None:
        print(f"fastort convert: a {kind} model needs example inputs: --input-shape 1,3,32,32 or --sample DATA",
              file=sys.stderr)
        return 2
    _print_result(convert(model, example, args.output, **kwargs))
    return 0


def _optimize(args: argparse.Namespace) -> int:
    from ..prepare.optimize import optimize

    result = optimize(args.model, args.output, level=args.level, target=args.target, simplifier=args.simplifier,
                      fixed_dims=dict(args.fix_dim) or None, fp16=args.fp16, keep_io_types=not args.fp16_io,
                      inputs=_data(args.inputs, "inputs"), dims=_dims(args),
                      allow_synthetic=args.allow_synthetic_dims, rtol=args.rtol, atol=args.atol, min_top1=args.min_top1,
                      force=args.force, measure=not args.no_measure)
    _print_result(result)
    return 0


def _quantize(args: argparse.Namespace) -> int:
    from ..prepare.quantize import quantize

    result = quantize(args.model, args.output, mode=args.mode, calibration=args.calibration, method=args.method,
                      percentile=args.percentile, per_channel=args.per_channel, reduce_range=args.reduce_range,
                      weight_type=args.weight_type, activation_type=args.activation_type,
                      exclude_op_types=args.exclude_op_type, exclude_nodes=args.exclude_node, op_types=args.op_type,
                      preprocess=not args.no_preprocess, inputs=_data(args.inputs, "inputs"), dims=_dims(args),
                      allow_synthetic=args.allow_synthetic_dims, rtol=args.rtol,
                      atol=args.atol, min_top1=args.min_top1, force=args.force, measure=not args.no_measure,
                      block_size=args.block_size, symmetric=args.symmetric, accuracy_level=args.accuracy_level,
                      algorithm=args.algorithm, target=args.target)
    _print_result(result)
    return 0


def _validate(args: argparse.Namespace) -> int:
    p: argparse.ArgumentParser = args.parser
    from ..prepare.convert import load_framework_model
    from ..prepare.validate import validate

    if args.target is not None:
        from ..prepare.validate_ep import validate_on_ep

        report = validate_on_ep(args.reference, _data(args.inputs, "inputs"), args.target, args.precision,
                                args.rtol, args.atol, raise_on_failure=False, dims=_dims(args),
                                allow_synthetic=args.allow_synthetic_dims)
        print(json.dumps(report.to_dict(), indent=2) if args.json else report)
        return 0 if report.passed else 1
    if args.candidate is None:
        p.error("give a candidate model, or --target to check the reference on an execution provider")
    reference = load_framework_model(args.reference)
    report = validate(reference, args.candidate, _data(args.inputs, "inputs"),
                      rtol=1e-3 if args.rtol is None else args.rtol, atol=1e-5 if args.atol is None else args.atol,
                      min_top1=args.min_top1, raise_on_failure=False, dims=_dims(args),
                      allow_synthetic=args.allow_synthetic_dims)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report)
    return 0 if report.passed else 1


def _package(args: argparse.Namespace) -> int:
    p: argparse.ArgumentParser = args.parser
    from ..engine.manifest import summary
    from ..prepare.package import package

    if args.verify:
        print(summary(args.model))
        return 0
    if not args.output:
        p.error("-o/--output is required (or --verify)")
    out = package(args.model, args.output, target=args.target, replicas=args.replicas,
                  max_batch_size=args.max_batch_size, name=args.name, source=args.model, overwrite=args.overwrite)
    print(summary(out))
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from ..prepare.convert import framework_of, load_framework_model
    from ..prepare.pipeline import prepare

    model = load_framework_model(args.model)
    kind = framework_of(model)
    convert_options: Dict[str, Any] = {}
    if args.no_dynamic_batch:
        if kind not in ("torch", "tf"):
            args.parser.error(f"--no-dynamic-batch is for torch and TensorFlow models; this is a {kind} model")
        convert_options["dynamic_batch"] = False
    if args.no_zipmap:
        if kind != "sklearn":
            args.parser.error(f"--no-zipmap is for scikit-learn classifiers; this is a {kind} model")
        convert_options["zipmap"] = False
    if args.opset is not None:
        if kind == "onnx":
            args.parser.error("--opset is for framework models (the ONNX model keeps its opset)")
        convert_options["opset"] = args.opset
    example = None
    if kind != "onnx":
        example = _example_inputs(model, args)
        if example is None:
            print("fastort prepare: a framework model needs example inputs: --input-shape 1,3,32,32 or --inputs DATA",
                  file=sys.stderr)
            return 2
    result = prepare(model, args.output, target=args.target, precision=args.precision, example_inputs=example,
                     inputs=_data(args.inputs, "inputs"), dims=_dims(args), allow_synthetic=args.allow_synthetic_dims,
                     quantize=args.quantize, calibration=args.calibration,
                     method=args.method, per_channel=args.per_channel, exclude_op_types=args.exclude_op_type,
                     fp16=args.fp16, level=args.level, fixed_dims=dict(args.fix_dim) or None,
                     replicas=args.replicas, max_batch_size=args.max_batch_size, min_top1=args.min_top1,
                     force=args.force, progress=not args.no_progress, verbose=False,
                     overwrite=args.overwrite, latency_seconds=args.latency_seconds,
                     convert_options=convert_options or None, op_types=args.op_type, rtol=args.rtol, atol=args.atol,
                     prune=args.prune, prune_options={"importance": args.prune_importance, "steps": args.prune_steps})
    if args.json:
        print(json.dumps({"package_dir": result.package_dir, "model_path": result.model_path,
                          "engine_kwargs": result.engine_kwargs, "notes": list(result.notes),
                          "end_to_end": result.end_to_end.to_dict(),
                          "steps": [step.provenance() for step in result.steps]}, indent=2, default=str))
        return 0
    print(result.table)
    for note in result.notes:
        print(f"note: {note}")
    print(f"package: {result.package_dir}   Engine settings: {result.engine_kwargs}")
    return 0


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Adds convert, optimize, quantize, validate, package and prepare."""
    p = subparsers.add_parser(
        "convert", help="framework model (torch, scikit-learn, TensorFlow) to checked ONNX",
        description="Convert a framework model to ONNX, checked "
        "and compared with the framework's outputs.")
    p.add_argument("model", help="a saved model: .pt/.pth (torch), .pkl/.joblib (scikit-learn), .keras/.h5, .onnx")
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    p.add_argument("--input-shape", type=_shape, action="append", help="example input shape (repeat per input), "
                   "filled with random float32 data")
    p.add_argument("--sample", help="example inputs: an .npy or .npz file")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset")
    p.add_argument("--no-dynamic-batch", action="store_true", help="keep dim 0 fixed (torch, TF)")
    p.add_argument("--no-zipmap", action="store_true", help="scikit-learn classifiers: probabilities as a tensor")
    _tolerance_args(p, None, None)
    p.set_defaults(run=_convert, parser=p)

    p = subparsers.add_parser(
        "optimize", help="graph optimization and simplification, fixed dims, float16",
        description="Simplify the graph and save onnxruntime's "
        "optimizations, validated against the input model.")
    p.add_argument("model", help="an .onnx file")
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    p.add_argument("--level", default="extended", choices=["disable", "basic", "extended", "all"])
    p.add_argument("--target", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--simplifier", default="auto", choices=["auto", "onnxslim", "onnxoptimizer", "none"])
    p.add_argument("--fix-dim", type=_fix_dim, action="append", default=[], metavar="NAME=SIZE",
                   help="fix a symbolic dim (batch=1) or an input's shape (x=1,3,32,32); repeatable")
    p.add_argument("--fp16", action="store_true", help="convert to float16 (GPU targets)")
    p.add_argument("--fp16-io", action="store_true", help="with --fp16: make inputs and outputs float16 too")
    p.add_argument("--inputs", help="validation inputs: an .npy or .npz file")
    _dims_args(p)
    p.add_argument("--no-measure", action="store_true", help="do not time latency")
    _tolerance_args(p, None, None)
    p.set_defaults(run=_optimize, parser=p)

    p = subparsers.add_parser(
        "quantize", help="dynamic or static int8, or weight-only int4/int8 (MatMulNBits)",
        description="Quantize to int8 with onnxruntime's tools, "
        "validated against the float model.")
    p.add_argument("model", help="an .onnx file")
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    p.add_argument("--mode", default="dynamic", choices=["dynamic", "static", "int4", "int8_weight"],
                   help="int8 dynamic/static, or weight-only 4/8-bit MatMul weights (MatMulNBits)")
    p.add_argument("--calibration", help="static mode, --algorithm gptq: calibration data, an .npy or .npz file")
    p.add_argument("--block-size", type=int, default=32, help="int4/int8_weight: values per block (32, 64, 128...)")
    p.add_argument("--symmetric", action="store_true", help="int4/int8_weight: scales only, no zero points")
    p.add_argument("--accuracy-level", type=int, default=None, choices=[0, 1, 2, 3, 4],
                   help="int4/int8_weight: MatMulNBits compute type (4: int8 activations, fastest on CPU)")
    p.add_argument("--algorithm", default="rtn", choices=["rtn", "hqq", "gptq"], help="int4: how weights are rounded")
    p.add_argument("--target", default="cpu", choices=["cpu", "cuda"], help="the provider whose kernels must exist")
    p.add_argument("--method", default="minmax", choices=["minmax", "entropy", "percentile"])
    p.add_argument("--percentile", type=float, default=99.999)
    p.add_argument("--per-channel", action="store_true")
    p.add_argument("--reduce-range", action="store_true", help="7-bit weights (CPUs without VNNI)")
    p.add_argument("--weight-type", default="int8", choices=["int8", "uint8"])
    p.add_argument("--activation-type", default="uint8", choices=["int8", "uint8"])
    p.add_argument("--exclude-op-type", action="append", default=[], help="leave this op type in float; repeatable")
    p.add_argument("--exclude-node", action="append", default=[], help="leave this node in float; repeatable")
    p.add_argument("--op-type", action="append", default=None, help="quantize only this op type; repeatable")
    p.add_argument("--no-preprocess", action="store_true", help="skip onnxruntime's quantization pre-processing")
    p.add_argument("--inputs", help="validation inputs: an .npy or .npz file")
    _dims_args(p)
    p.add_argument("--no-measure", action="store_true", help="do not time latency")
    _tolerance_args(p, None, None)
    p.set_defaults(run=_quantize, parser=p)

    p = subparsers.add_parser(
        "validate", help="compare a candidate's outputs with a reference's",
        description="Compare a candidate model's outputs with a "
        "reference's; exit status 1 when outside tolerance.")
    p.add_argument("reference", help="the reference: an .onnx file or a saved framework model")
    p.add_argument("candidate", nargs="?", help="the candidate .onnx file (omit with --target)")
    p.add_argument("--inputs", help="inputs: an .npy or .npz file (default: seeded random inputs)")
    p.add_argument("--target", choices=["openvino"], default=None,
                   help="check the reference .onnx on this EP against the CPU EP in f32 instead")
    p.add_argument("--precision", default="f32", choices=["f32", "bf16", "fp16", "auto"],
                   help="with --target: the EP's precision (default f32)")
    _dims_args(p)
    p.add_argument("--rtol", type=float, default=None, help="default 1e-3 (with --target: the precision's own)")
    p.add_argument("--atol", type=float, default=None, help="default 1e-5 (with --target: the precision's own)")
    p.add_argument("--min-top1", type=float, default=None, help="least top-1 agreement of classifier outputs (0-1)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=_validate, parser=p)

    p = subparsers.add_parser(
        "package", help="a model directory with a hashed manifest (or --verify one)",
        description="Write a model package (ONNX file + "
        "fastort.json manifest), or verify one with --verify.")
    p.add_argument("model", help="an .onnx file (or, with --verify, a package directory)")
    p.add_argument("-o", "--output", help="the package directory to write")
    p.add_argument("--verify", action="store_true", help="verify the package's hashes and describe it")
    p.add_argument("--target", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--max-batch-size", type=int, default=None, help="recommended batching (0: off; default 32 "
                   "when the model has a dynamic batch dim)")
    p.add_argument("--name", default=None)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(run=_package, parser=p)

    p = subparsers.add_parser(
        "prepare", help="all of the above, with a before/after table",
        description="Convert, optimize, quantize, validate and "
        "package a model; ends with a before/after table.")
    p.add_argument("model", help="an .onnx file or a saved framework model (.pt/.pth, .pkl/.joblib, .keras/.h5)")
    p.add_argument("-o", "--output", required=True, help="the package directory to write")
    p.add_argument("--target", default="cpu", choices=["cpu", "cuda", "openvino"])
    p.add_argument("--precision", default="f32", choices=["f32", "bf16", "fp16", "auto"],
                   help="--target openvino: OpenVINO's inference precision, checked against the CPU EP (default f32)")
    p.add_argument("--quantize", choices=["dynamic", "static"], default=None)
    p.add_argument("--calibration", help="static quantization: calibration data, an .npy or .npz file")
    p.add_argument("--method", default="minmax", choices=["minmax", "entropy", "percentile"])
    p.add_argument("--per-channel", action="store_true")
    p.add_argument("--exclude-op-type", action="append", default=[], help="leave this op type in float; repeatable")
    p.add_argument("--op-type", action="append", default=None, help="quantize only this op type; repeatable")
    p.add_argument("--fp16", action="store_true", help="float16 (GPU targets; not with --quantize)")
    p.add_argument("--level", default=None, choices=["disable", "basic", "extended", "all"])
    p.add_argument("--fix-dim", type=_fix_dim, action="append", default=[], metavar="NAME=SIZE")
    p.add_argument("--inputs", help="validation (and, for framework models, example) inputs: .npy or .npz")
    _dims_args(p)
    p.add_argument("--input-shape", type=_shape, action="append", help="framework models: example input shape, "
                   "random float32 data (repeat per input)")
    p.add_argument("--replicas", type=int, default=1, help="recommended replicas")
    p.add_argument("--max-batch-size", type=int, default=None, help="recommended batching (0: off)")
    p.add_argument("--opset", type=int, default=None, help="framework models: the ONNX opset")
    p.add_argument("--no-dynamic-batch", action="store_true", help="torch/TF models: keep dim 0 fixed")
    p.add_argument("--no-zipmap", action="store_true", help="scikit-learn classifiers: probabilities as a tensor")
    p.add_argument("--rtol", type=float, default=None, help="relative tolerance of every step and the end-to-end "
                   "check (default: each step's own)")
    p.add_argument("--atol", type=float, default=None, help="absolute tolerance (default: each step's own)")
    p.add_argument("--min-top1", type=float, default=None, help="least top-1 agreement of classifier outputs (0-1)")
    p.add_argument("--force", action="store_true", help="write the package even when outside tolerance")
    p.add_argument("--overwrite", action="store_true", help="replace an existing package in the output directory")
    p.add_argument("--json", action="store_true", help="print the result (steps, validation, settings) as JSON")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--latency-seconds", type=float, default=1.0)
    p.add_argument("--prune", type=float, default=None, metavar="RATIO",
                   help="torch models: remove this share of channels first (structured, torch-pruning), judged by "
                   "top-1 agreement with the original on the inputs")
    p.add_argument("--prune-importance", default="magnitude", choices=["magnitude", "l1", "lamp", "fpgm", "random"])
    p.add_argument("--prune-steps", type=int, default=1)
    p.set_defaults(run=_prepare, parser=p)
