"""Convert a trained framework model to ONNX, and prove the conversion right.

>>> from fastort.prepare.convert import from_torch, from_sklearn   # also fastort.convert.from_torch
>>> result = from_torch(module, torch.randn(1, 3, 32, 32), "cnn.onnx")
>>> result = from_sklearn(classifier, X[:64], "gbc.onnx")

Every converter checks the ONNX model it made (``onnx.checker`` with full
shape inference), runs it with :class:`fastort.Engine` and compares its
outputs with the framework's own on the example inputs; a mismatch raises
:class:`ConversionMismatchError` with the numbers (``force=True`` keeps the
model anyway, with a warning). Frameworks are imported only when used; a
missing one raises :class:`MissingDependencyError` naming the extra to install
(``fastort[torch]``, ``fastort[sklearn]``, ``fastort[tf]``).
"""

from __future__ import annotations

import inspect
import io
import os
import re
import warnings
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from ..errors import ConversionError, ConversionMismatchError, MissingDependencyError, ValidationError
from .common import (
    ModelStats,
    StepResult,
    _as_array,
    is_keras,
    load_model,
    require,
    save_model,
    set_training,
    tool_versions,
)
from .validate import _flatten, _is_onnx, _kind_of, validate

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = [
    "from_torch",
    "from_sklearn",
    "from_tensorflow",
    "convert",
    "check_onnx",
    "load_framework_model",
    "framework_of",
    "ConversionError",
    "ConversionMismatchError",
    "MissingDependencyError",
]

#: Opset of models exported from torch (the dynamo exporter implements 18 and up).
TORCH_OPSET = 18
#: Default opset of the main domain for scikit-learn models.
SKLEARN_OPSET = 17


def check_onnx(model: "onnx.ModelProto", what: str = "the converted model") -> "onnx.ModelProto":
    """``onnx.checker`` (full check) and strict shape inference; a failure is a
    ConversionError that says which. Returns the model unchanged."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:
        raise ConversionError(f"{what} fails the ONNX checker: {e}") from None
    try:
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as e:
        raise ConversionError(f"{what} fails ONNX shape inference: {e}") from None
    return model


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _export_error(e: BaseException) -> str:
    """The useful part of an exporter's error: its summary when it has one."""
    text = _strip_ansi(str(e)).strip()
    if "## Exception summary" in text:
        text = text.split("## Exception summary", 1)[1].split("(Refer to the full stack trace", 1)[0]
        text = " <- ".join(line.strip() for line in text.splitlines() if line.strip() and line.strip() != "⬆️")
    lines = text.splitlines()
    return f"{type(e).__name__}: " + (" ".join(lines[:6]) if lines else repr(e))


def _finish(step_model: "onnx.ModelProto", reference: Any, inputs: Any, path: Optional[str], settings: Dict[str, Any],
            tools: Dict[str, str], rtol: float, atol: float, force: bool, min_top1: Optional[float] = None) -> StepResult:
    """Check, validate against the framework, write: what every converter ends with."""
    check_onnx(step_model)
    result = StepResult(step="convert", model=step_model, settings=settings, tools=tools,
                        after=ModelStats.of(step_model))
    try:
        report = validate(reference, step_model, inputs, rtol=rtol, atol=atol, min_top1=min_top1,
                          raise_on_failure=False)
    except ValidationError:
        raise
    except Exception as e:  # onnxruntime refuses the model, or cannot run it on these inputs
        raise ConversionError(f"the converted model could not be run on the example inputs: "
                              f"{type(e).__name__}: {e}") from e
    result.validation = report
    if not report.passed:
        if not force:
            raise ConversionMismatchError(
                f"convert: the ONNX model's outputs differ from the {settings.get('framework', 'framework')} "
                f"model's on the example inputs (pass force=True to keep it anyway)\n{report}", report, step_model)
        warnings.warn(f"fastort convert: keeping a model whose outputs differ from the framework's (force=True)"
                      f"\n{report}", RuntimeWarning, stacklevel=3)
        result.forced = True
        result.notes.append("kept although outside tolerance (force=True)")
    if path is not None:
        result.path = save_model(step_model, path)
    return result


# -- torch ------------------------------------------------------------------------


def _torch_inputs(example_inputs: Any, torch: Any) -> "tuple[List[Any], Optional[List[str]]]":
    """(tensors, names from a dict or None)."""
    names = None
    if isinstance(example_inputs, Mapping):
        names = [str(k) for k in example_inputs]
        values = list(example_inputs.values())
    elif isinstance(example_inputs, (list, tuple)):
        values = list(example_inputs)
    else:
        values = [example_inputs]
    tensors = []
    for i, v in enumerate(values):
        if isinstance(v, torch.Tensor):
            tensors.append(v.detach())
        else:
            try:
                tensors.append(torch.from_numpy(np.ascontiguousarray(_as_array(v, f"example input {i}"))))
            except TypeError as e:
                raise ConversionError(str(e)) from None
    if not tensors:
        raise ConversionError("from_torch: give at least one example input")
    return tensors, names


def _forward_names(module: Any, n: int) -> List[str]:
    try:
        params = [p for p in inspect.signature(module.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    if len(params) >= n:
        return [p.name for p in params[:n]]
    return ["input" if n == 1 else f"input_{i}" for i in range(n)]


def _count_outputs(out: Any) -> int:
    return len(_flatten(out))


def from_torch(
    module: Any,
    example_inputs: Any,
    path: Optional[Union[str, "os.PathLike[str]"]] = None,
    *,
    input_names: Optional[Sequence[str]] = None,
    output_names: Optional[Sequence[str]] = None,
    dynamic_batch: bool = True,
    dynamic_axes: Optional[Mapping[str, Any]] = None,
    opset: int = TORCH_OPSET,
    exporter: str = "auto",
    rtol: float = 1e-4,
    atol: float = 1e-5,
    force: bool = False,
) -> StepResult:
    """Exports a torch ``nn.Module`` to ONNX with ``torch.onnx.export``.

    Args:
        module: the model (put in eval mode for the export; its mode is restored).
        example_inputs: a tensor or array, a tuple of them (the forward's
            positional arguments), or a dict name -> tensor (names the inputs).
        path: where to write the .onnx file (None: not written).
        input_names, output_names: ONNX names (default: the forward's parameter
            names; ``output`` or ``output_0``, ``output_1``...).
        dynamic_batch: make dim 0 of every input and output a dynamic ``batch``
            dim (ignored when ``dynamic_axes`` is given).
        dynamic_axes: ``{name: {axis: dim name}}`` (or ``{name: [axes]}``).
        opset: the ONNX opset.
        exporter: ``"dynamo"`` (torch.export-based), ``"torchscript"`` (legacy)
            or ``"auto"``: dynamo, then torchscript if dynamo fails.
        rtol, atol: tolerance of the check against the module's own outputs.
        force: keep (and write) a model whose outputs differ, with a warning.

    The check runs the ONNX model on the example inputs and, with a dynamic
    batch, on them repeated twice along dim 0 (another batch size).
    """
    torch = require("torch", "torch", "fastort.convert.from_torch")
    if not isinstance(module, torch.nn.Module):
        raise ConversionError(f"from_torch needs a torch.nn.Module, got {type(module).__name__}")
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise ValueError(f"exporter must be 'auto', 'dynamo' or 'torchscript', got {exporter!r}")
    tensors, dict_names = _torch_inputs(example_inputs, torch)
    names = list(input_names or dict_names or _forward_names(module, len(tensors)))
    if len(names) != len(tensors):
        raise ConversionError(f"from_torch: {len(names)} input names for {len(tensors)} example inputs")
    training = module.training
    set_training(module, False)
    try:
        with torch.no_grad():
            try:
                out = module(*tensors)
            except Exception as e:
                raise ConversionError(f"the module fails on the example inputs: {type(e).__name__}: {e}") from e
        n_out = _count_outputs(out)
        outs = list(output_names or (["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]))
        if len(outs) != n_out:
            raise ConversionError(f"from_torch: {len(outs)} output names for {n_out} outputs")
        if dynamic_axes is None and dynamic_batch:
            batch_axes: Dict[str, Any] = {n: {0: "batch"} for n, t in zip(names, tensors) if t.dim() > 0}
            batch_axes.update({n: {0: "batch"} for n in outs})
            axes: Optional[Dict[str, Any]] = batch_axes
        else:
            axes = {k: (dict(v) if isinstance(v, Mapping) else {int(a): f"{k}_dim{a}" for a in v})
                    for k, v in (dynamic_axes or {}).items()}
        unknown = [k for k in (axes or {}) if k not in names and k not in outs]
        if unknown:
            raise ConversionError(f"dynamic_axes names {unknown}, which are neither inputs {names} nor outputs {outs}")
        errors = []
        model = None
        used = None
        for kind in (["dynamo", "torchscript"] if exporter == "auto" else [exporter]):
            try:
                model = _export(torch, module, tensors, names, outs, axes, opset, kind)
                used = kind
                break
            except MissingDependencyError:
                raise
            except Exception as e:
                errors.append(f"{kind} exporter: {_export_error(e)}")
        if model is None:
            raise ConversionError(f"torch.onnx.export cannot convert {type(module).__name__} "
                                  "(an operator without an ONNX conversion?):\n  " + "\n  ".join(errors))
    finally:
        set_training(module, training)

    feeds = {n: t.cpu().numpy() for n, t in zip(names, tensors)}
    if axes and all(n in axes and 0 in {int(a) for a in axes[n]} for n in names):
        feeds = {n: np.concatenate([v, v], axis=0) for n, v in feeds.items()}
    settings = {"framework": "torch", "exporter": used, "opset": opset, "input_names": names,
                "output_names": outs, "dynamic_axes": axes or {}, "example_shapes": {n: list(t.shape) for n, t in zip(names, tensors)},
                "rtol": rtol, "atol": atol}
    if errors:
        settings["exporter_fallback"] = errors
    tools = tool_versions("torch", "onnxscript")
    return _finish(model, module, feeds, None if path is None else os.fspath(path), settings, tools, rtol, atol, force)


def _export(torch: Any, module: Any, tensors: List[Any], names: List[str], outs: List[str],
            axes: Optional[Dict[str, Any]], opset: int, kind: str) -> "onnx.ModelProto":
    import onnx

    # verbose=False keeps torch.onnx's exporter quiet (its "[torch.onnx] ..."
    # progress lines); stdout itself is never redirected: other threads print too.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "dynamo":
            require("onnxscript", "torch", "torch's dynamo ONNX exporter")
            dynamic_shapes = None
            if axes:
                from torch.export import Dim

                dims: Dict[str, Any] = {}
                shapes = []
                for n, t in zip(names, tensors):
                    spec = {}
                    for a, dim_name in dict(axes.get(n, {})).items():
                        key = re.sub(r"\W", "_", str(dim_name)) or f"d{a}"
                        if key[0].isdigit():
                            key = "d" + key
                        spec[int(a)] = dims.setdefault(key, Dim(key))
                    shapes.append(spec or None)
                dynamic_shapes = tuple(shapes)
            program = torch.onnx.export(module, tuple(tensors), None, input_names=names, output_names=outs,
                                        opset_version=opset, dynamo=True, dynamic_shapes=dynamic_shapes,
                                        verbose=False, optimize=True)
            model: "onnx.ModelProto" = program.model_proto
        else:
            buf = io.BytesIO()
            torch.onnx.export(module, tuple(tensors), buf, input_names=names, output_names=outs,
                              opset_version=opset, dynamo=False, dynamic_axes=axes or None,
                              do_constant_folding=True, verbose=False)
            model = onnx.load_from_string(buf.getvalue())
    if axes:
        _name_dims(model, axes)
    return model


def _name_dims(model: "onnx.ModelProto", axes: Mapping[str, Any]) -> None:
    """Gives the graph's dynamic IO dims the names asked for (exporters may
    name them after their own symbols)."""
    for vi in list(model.graph.input) + list(model.graph.output):
        want = axes.get(vi.name)
        if not want or vi.type.WhichOneof("value") != "tensor_type":
            continue
        dims = vi.type.tensor_type.shape.dim
        for a, dim_name in dict(want).items():
            a = int(a)
            if a < len(dims) and not dims[a].HasField("dim_value"):
                dims[a].dim_param = str(dim_name)


# -- scikit-learn ------------------------------------------------------------------


def from_sklearn(
    estimator: Any,
    sample: Any,
    path: Optional[Union[str, "os.PathLike[str]"]] = None,
    *,
    input_name: str = "X",
    zipmap: bool = True,
    opset: Optional[int] = SKLEARN_OPSET,
    options: Optional[Mapping[Any, Any]] = None,
    dtype: Any = np.float32,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    min_agreement: Optional[float] = None,
    force: bool = False,
) -> StepResult:
    """Converts a fitted scikit-learn estimator (or pipeline) with skl2onnx.

    Args:
        estimator: the fitted estimator.
        sample: example rows ``[N, features]``; their dtype is cast to ``dtype``
            (float32 by default; ints stay int64, strings stay strings).
        path: where to write the .onnx file (None: not written).
        input_name: the ONNX input's name.
        zipmap: classifiers give their probabilities as a list of ``{label: p}``
            maps (skl2onnx's ZipMap); False gives a ``[N, classes]`` tensor.
        opset: the main domain's opset (None: skl2onnx's latest).
        options: skl2onnx conversion options (merged over ``zipmap``).
        rtol, atol: tolerance of the check against the estimator's own
            ``predict`` / ``predict_proba`` on ``sample``.
        min_agreement: share of predicted labels that must agree (default all;
            float32 rounding can flip rows that sit on a split threshold).
        force: keep (and write) a model whose outputs differ, with a warning.
    """
    skl2onnx = require("skl2onnx", "sklearn", "fastort.convert.from_sklearn")
    from skl2onnx.common.data_types import (
        DoubleTensorType,
        FloatTensorType,
        Int64TensorType,
        StringTensorType,
    )

    if not (hasattr(estimator, "get_params") and (hasattr(estimator, "predict") or hasattr(estimator, "transform"))):
        raise ConversionError(f"from_sklearn needs a fitted scikit-learn estimator, got {type(estimator).__name__}")
    try:
        x = _as_array(sample, "sample")
    except TypeError as e:
        raise ConversionError(str(e)) from None
    if x.ndim == 1:
        x = x.reshape(1, -1)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ConversionError(f"sample must be rows [N, features] with N >= 1, got shape {x.shape}")
    if x.dtype.kind == "f":
        x = x.astype(dtype)
        tensor_type = DoubleTensorType if x.dtype == np.float64 else FloatTensorType
    elif x.dtype.kind in "iub":
        x = x.astype(np.int64)
        tensor_type = Int64TensorType
    elif x.dtype.kind in "OUS":
        x = x.astype(object)
        tensor_type = StringTensorType
    else:
        raise ConversionError(f"sample of dtype {x.dtype} is not supported (floats, ints or strings)")
    opts: Dict[Any, Any] = {}
    is_classifier = getattr(estimator, "_estimator_type", None) == "classifier" or hasattr(estimator, "classes_")
    if is_classifier:
        opts["zipmap"] = bool(zipmap)
    opts.update(options or {})
    target = None if opset is None else {"": int(opset)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = skl2onnx.convert_sklearn(estimator, initial_types=[(input_name, tensor_type([None, x.shape[1]]))],
                                             options=opts or None, target_opset=target)
    except Exception as e:
        raise ConversionError(f"skl2onnx cannot convert {type(estimator).__name__}: {type(e).__name__}: "
                              f"{_strip_ansi(str(e)).strip().splitlines()[0] if str(e).strip() else repr(e)}") from e
    settings = {"framework": "sklearn", "estimator": type(estimator).__name__, "opset": opset,
                "input_name": input_name, "input_dtype": str(x.dtype), "zipmap": bool(zipmap) if is_classifier else None,
                "options": {str(k): v for k, v in opts.items()}, "rtol": rtol, "atol": atol}
    tools = tool_versions("sklearn", "skl2onnx")
    return _finish(model, estimator, {input_name: x}, None if path is None else os.fspath(path), settings, tools,
                   rtol, atol, force, min_top1=min_agreement)


# -- TensorFlow ---------------------------------------------------------------------


def from_tensorflow(
    model: Any,
    example_inputs: Any,
    path: Optional[Union[str, "os.PathLike[str]"]] = None,
    *,
    input_names: Optional[Sequence[str]] = None,
    dynamic_batch: bool = True,
    opset: int = 17,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    force: bool = False,
) -> StepResult:
    """Converts a Keras model (or a ``tf.function``) with tf2onnx.

    Needs ``pip install 'fastort[tf]'`` (tensorflow and tf2onnx).
    ``example_inputs``: an array or a list of arrays in the model's input order.
    """
    tf = require("tensorflow", "tf", "fastort.convert.from_tensorflow")
    tf2onnx = require("tf2onnx", "tf", "fastort.convert.from_tensorflow")
    arrays = list(example_inputs.values()) if isinstance(example_inputs, Mapping) else (
        list(example_inputs) if isinstance(example_inputs, (list, tuple)) else [example_inputs])
    arrays = [_as_array(a, "example input") for a in arrays]
    if input_names is None and isinstance(example_inputs, Mapping):
        input_names = [str(k) for k in example_inputs]
    names = list(input_names or (["input"] if len(arrays) == 1 else [f"input_{i}" for i in range(len(arrays))]))
    signature = [tf.TensorSpec(((None,) if dynamic_batch else a.shape[:1]) + tuple(a.shape[1:]), tf.as_dtype(a.dtype),
                               name=n) for n, a in zip(names, arrays)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            function = model
            if is_keras(model):
                # Traced as a tf.function: tf2onnx's from_keras does not understand Keras 3 models.
                function = tf.function(lambda *xs: model(xs[0] if len(xs) == 1 else list(xs), training=False))
            proto, _ = tf2onnx.convert.from_function(function, input_signature=signature, opset=opset)
    except Exception as e:
        raise ConversionError(f"tf2onnx cannot convert {type(model).__name__}: {type(e).__name__}: {e}") from e
    if dynamic_batch:  # tf2onnx names dim 0 "unk__N", differently per tensor: one name says they are the same
        for value in list(proto.graph.input) + list(proto.graph.output):
            dims = value.type.tensor_type.shape.dim
            if len(dims) and not dims[0].HasField("dim_value"):
                dims[0].dim_param = "batch"
    feeds = {vi.name: a for vi, a in zip([i for i in proto.graph.input
                                           if i.name not in {t.name for t in proto.graph.initializer}], arrays)}
    settings = {"framework": "tf", "opset": opset, "input_names": names, "dynamic_batch": dynamic_batch,
                "rtol": rtol, "atol": atol}
    tools = tool_versions("tensorflow", "tf2onnx")
    return _finish(proto, model, feeds, None if path is None else os.fspath(path), settings, tools, rtol, atol, force)


# -- dispatch -----------------------------------------------------------------------


def framework_of(model: Any) -> str:
    """``"onnx"``, ``"torch"``, ``"sklearn"`` or ``"tf"`` (a ConversionError when none)."""
    if isinstance(model, StepResult) or type(model).__name__ == "ModelProto":
        return "onnx"
    kind = _kind_of(model)
    if kind:
        return kind
    if _is_onnx(model):
        return "onnx"
    raise ConversionError(f"cannot tell which framework a {type(model).__name__} comes from: give a torch "
                          "nn.Module, a scikit-learn estimator, a Keras model or an ONNX model")


def convert(model: Any, example_inputs: Any = None, path: Optional[Union[str, "os.PathLike[str]"]] = None,
            **kwargs: Any) -> StepResult:
    """Converts a torch, scikit-learn or Keras model (see :func:`from_torch`,
    :func:`from_sklearn`, :func:`from_tensorflow`). An ONNX model is checked
    (checker and shape inference) and returned as the step's result."""
    kind = framework_of(model)
    if kind == "onnx":
        proto = check_onnx(load_model(model), "the model")
        result = StepResult(step="check", model=proto, settings={"framework": "onnx"},
                            tools=tool_versions(), after=ModelStats.of(proto))
        if path is not None:
            result.path = save_model(proto, path)
        return result
    if example_inputs is None:
        raise ConversionError(f"converting a {kind} model needs example inputs")
    if kind == "torch":
        return from_torch(model, example_inputs, path, **kwargs)
    if kind == "sklearn":
        return from_sklearn(model, example_inputs, path, **kwargs)
    return from_tensorflow(model, example_inputs, path, **kwargs)


def load_framework_model(path: Union[str, "os.PathLike[str]"]) -> Any:
    """Loads a saved framework model: ``.onnx`` (returned as the path), a torch
    module saved whole (``.pt``/``.pth``; TorchScript archives too), a
    ``torch.export`` program (``.pt2``), a pickled
    scikit-learn estimator (``.pkl``/``.joblib``), or a Keras model
    (``.keras``/``.h5``/SavedModel folder).

    Loading a pickle (torch's or scikit-learn's) runs code from the file: load
    only files you trust."""
    from ..errors import ModelLoadError, ModelNotFoundError

    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelNotFoundError(f"model file not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".onnx":
            return path
        if ext == ".pt2":
            torch = require("torch", "torch", f"loading {path}")
            return torch.export.load(path).module()
        if ext in (".pt", ".pth", ".ts"):
            torch = require("torch", "torch", f"loading {path}")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    return torch.jit.load(path, map_location="cpu")
                except Exception:
                    return torch.load(path, map_location="cpu", weights_only=False)
        if ext in (".pkl", ".pickle", ".joblib"):
            require("sklearn", "sklearn", f"loading {path}")
            try:
                import joblib

                return joblib.load(path)
            except ImportError:  # pragma: no cover - scikit-learn brings joblib
                import pickle

                with open(path, "rb") as f:
                    return pickle.load(f)
        if ext in (".keras", ".h5") or os.path.isdir(path):
            tf = require("tensorflow", "tf", f"loading {path}")
            return tf.keras.models.load_model(path)
    except (MissingDependencyError, ModelLoadError):
        raise
    except Exception as e:
        raise ModelLoadError(f"cannot load model file {path}: {type(e).__name__}: {e}") from None
    raise ModelLoadError(f"{path}: unknown model format {ext or '(no extension)'!r}: expected .onnx, .pt/.pth "
                         "/.pt2 (torch), .pkl/.joblib (scikit-learn) or .keras/.h5 (Keras)")
