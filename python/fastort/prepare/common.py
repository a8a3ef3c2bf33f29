"""What the model-preparation steps share: their errors, optional imports,
model loading, inputs, statistics, latency measurement and the step result.

The steps themselves live in :mod:`fastort.prepare.convert`,
:mod:`~fastort.prepare.optimize`, :mod:`~fastort.prepare.quantize`,
:mod:`~fastort.prepare.validate` and :mod:`~fastort.prepare.package`;
:mod:`~fastort.prepare.pipeline` chains them. Nothing here imports a framework (torch,
scikit-learn, TensorFlow) at import time.
"""

from __future__ import annotations

import importlib
import os
import platform
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .._format import format_bytes, format_table, format_us
from .._version import __version__
from ..bench import SyntheticInputs, compare, synthesize
from ..engine import Engine, IOSpec
from ..errors import InvalidInputError, MissingDependencyError, ModelLoadError, ModelNotFoundError, ValidationError

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from .validate import ValidationReport

__all__ = [
    "ModelStats",
    "StepResult",
    "EXTRAS",
]




# -- optional dependencies ---------------------------------------------------

#: extra -> the packages it installs (kept in step with pyproject.toml).
EXTRAS: Dict[str, Tuple[str, ...]] = {
    "torch": ("torch", "onnxscript"),
    "sklearn": ("scikit-learn", "skl2onnx"),
    "tf": ("tensorflow", "tf2onnx"),
    "prepare": ("onnxslim", "onnxoptimizer", "sympy"),
    "prune": ("torch-pruning",),
}


def require(module: str, extra: str, purpose: str) -> Any:
    """``import module``, or a MissingDependencyError that names the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        packages = ", ".join(EXTRAS.get(extra, (module,)))
        raise MissingDependencyError(
            f"{purpose} needs the Python package {module.split('.')[0]!r}, which is not installed ({e}); "
            f"install it with: pip install 'fastort[{extra}]'  (brings {packages})"
        ) from None


def available(module: str) -> bool:
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False


_DIST_NAMES = {"sklearn": "scikit-learn", "skl2onnx": "skl2onnx"}


def tool_versions(*names: str) -> Dict[str, str]:
    """Versions of fastort, python, numpy, onnx, onnxruntime and ``names``
    (distribution names; those not installed are left out)."""
    from importlib import metadata

    out = {"fastort": __version__, "python": platform.python_version()}
    for name in ("numpy", "onnx", "onnxruntime") + tuple(names):
        dist = _DIST_NAMES.get(name, name)
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            for candidate in ("onnxruntime-gpu",) if dist == "onnxruntime" else ():
                try:
                    out[candidate] = metadata.version(candidate)
                except metadata.PackageNotFoundError:
                    pass
    return out


def is_keras(model: Any) -> bool:
    """Whether ``model`` is a Keras model (called with a list and ``training=``)
    rather than a plain ``tf.function``."""
    return hasattr(model, "layers") or type(model).__module__.startswith(("keras", "tf_keras"))


def set_training(module: Any, training: bool) -> None:
    """``module.train(training)`` where the module allows it (a torch.export
    program's module does not)."""
    try:
        module.train(training)
    except (NotImplementedError, RuntimeError):
        pass


# -- models ---------------------------------------------------------------------

def load_model(model: Any, what: str = "model") -> "onnx.ModelProto":
    """An ``onnx.ModelProto`` of a path, bytes, ModelProto or StepResult.

    A missing file is a ModelNotFoundError, an unreadable or malformed one a
    ModelLoadError; both name the file."""
    import onnx

    if isinstance(model, StepResult):
        return model.model
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray, memoryview)):
        try:
            proto = onnx.load_from_string(bytes(model))
        except Exception as e:
            raise ModelLoadError(f"{what}: the bytes are not an ONNX model ({e})") from None
        if not proto.graph.node and not proto.graph.output:
            raise ModelLoadError(f"{what}: the bytes are not an ONNX model (no graph)")
        return proto
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.exists(path):
            raise ModelNotFoundError(f"{what} file not found: {path}")
        if os.path.isdir(path):
            raise ModelLoadError(f"{what}: {path} is a directory, not an ONNX model file")
        try:
            proto = onnx.load(path)
        except Exception as e:
            raise ModelLoadError(f"cannot read {what} file {path}: {type(e).__name__}: {e}") from None
        if not proto.graph.node and not proto.graph.output:
            raise ModelLoadError(f"cannot read {what} file {path}: it is not an ONNX model (no graph)")
        return proto
    raise ModelLoadError(
        f"{what} must be an .onnx path, model bytes or an onnx.ModelProto, got {type(model).__name__}"
    )


def model_size(model: "onnx.ModelProto") -> int:
    """Bytes the model takes serialized (weights included)."""
    return int(model.ByteSize())


def save_model(model: "onnx.ModelProto", path: Union[str, "os.PathLike[str]"]) -> str:
    """Writes ``model`` to ``path`` (with external data next to it past 2 GB)."""
    import onnx

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    large = model_size(model) > 1_800_000_000
    onnx.save_model(model, path, save_as_external_data=large, all_tensors_to_one_file=True,
                    location=os.path.basename(path) + ".data" if large else None)
    return path


def serialized(model: "onnx.ModelProto") -> bytes:
    data: bytes = model.SerializeToString()
    return data


class TempDir:
    """A temporary folder removed on exit (ignoring errors)."""

    def __enter__(self) -> str:
        self._td = tempfile.TemporaryDirectory(prefix="fastort-prep-")
        return self._td.name

    def __exit__(self, *exc: object) -> None:
        try:
            self._td.cleanup()
        except OSError:  # pragma: no cover
            pass


# -- IO specs and inputs ------------------------------------------------------------

_ELEM_DTYPES = {
    1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
    8: np.object_, 9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64,
}


def _type_string(t: Any) -> str:
    import onnx

    which = t.WhichOneof("value")
    if which == "tensor_type":
        return f"tensor({onnx.helper.tensor_dtype_to_string(t.tensor_type.elem_type).split('.')[-1].lower()})"
    if which == "sequence_type":
        return f"seq({_type_string(t.sequence_type.elem_type)})"
    if which == "map_type":
        key = onnx.helper.tensor_dtype_to_string(t.map_type.key_type).split(".")[-1].lower()
        return f"map({key},{_type_string(t.map_type.value_type)})"
    return str(which)


def _spec(vi: Any) -> IOSpec:
    t = vi.type
    if t.WhichOneof("value") != "tensor_type":
        return IOSpec(vi.name, _type_string(t), None, None)
    tt = t.tensor_type
    dtype = _ELEM_DTYPES.get(tt.elem_type)
    shape: Optional[Tuple[Union[int, str, None], ...]] = None
    if tt.HasField("shape"):
        dims: List[Union[int, str, None]] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param"):
                dims.append(d.dim_param)
            else:
                dims.append(None)
        shape = tuple(dims)
    return IOSpec(vi.name, _type_string(t), None if dtype is None else np.dtype(dtype), shape)


def graph_inputs(model: "onnx.ModelProto") -> List[IOSpec]:
    """The graph's real inputs (initializers listed as inputs are left out)."""
    inits = {i.name for i in model.graph.initializer}
    return [_spec(vi) for vi in model.graph.input if vi.name not in inits]


def graph_outputs(model: "onnx.ModelProto") -> List[IOSpec]:
    return [_spec(vi) for vi in model.graph.output]


def _as_array(value: Any, what: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        return np.asarray(value.detach().cpu().numpy())
    if hasattr(value, "numpy") and callable(value.numpy):  # a TF tensor
        return np.asarray(value.numpy())
    if hasattr(value, "to_numpy") and callable(value.to_numpy):  # pandas
        return np.asarray(value.to_numpy())
    if isinstance(value, (list, tuple, int, float, bool, np.generic)):
        return np.asarray(value)
    raise TypeError(f"{what} must be an array, got {type(value).__name__}")


def normalize_feeds(model_or_specs: Any, inputs: Any, what: str = "inputs") -> Dict[str, np.ndarray]:
    """``inputs`` (a dict name -> array, a list/tuple in input order, or one array
    for a one-input model) as a dict name -> numpy array cast to the model's
    dtypes. Wrong names or counts are an InvalidInputError."""
    specs = model_or_specs if isinstance(model_or_specs, list) else graph_inputs(model_or_specs)
    names = [s.name for s in specs]
    if isinstance(inputs, Mapping):
        unknown = [k for k in inputs if k not in names]
        if unknown:
            raise InvalidInputError(f"{what}: unknown input name(s) {unknown}; the model takes {names}")
        missing = [n for n in names if n not in inputs]
        if missing:
            raise InvalidInputError(f"{what}: missing input(s) {missing}; the model takes {names}")
        items = [(n, inputs[n]) for n in names]
    elif isinstance(inputs, (list, tuple)) and not (len(specs) == 1 and _is_scalar_list(inputs)):
        if len(inputs) != len(names):
            raise InvalidInputError(f"{what}: {len(inputs)} arrays given, the model takes {len(names)} ({names})")
        items = list(zip(names, inputs))
    else:
        if len(names) != 1:
            raise InvalidInputError(f"{what}: one array given, the model takes {len(names)} inputs ({names}); "
                                    "give a dict name -> array")
        items = [(names[0], inputs)]
    feeds = {}
    for (name, value), spec in zip(items, specs):
        try:
            arr = _as_array(value, f"{what}[{name!r}]")
        except TypeError as e:
            raise InvalidInputError(str(e)) from None
        if spec.dtype is not None and arr.dtype != spec.dtype:
            if spec.dtype == np.object_:
                arr = arr.astype(object)
            else:
                try:
                    arr = arr.astype(spec.dtype)
                except (TypeError, ValueError) as e:
                    raise InvalidInputError(f"{what}[{name!r}]: cannot cast {arr.dtype} to {spec.dtype}: {e}") from None
        feeds[name] = np.ascontiguousarray(arr)
    return feeds


def _is_scalar_list(value: Sequence[Any]) -> bool:
    """A list of numbers/lists (one array written as a list), not a list of arrays."""
    return len(value) > 0 and all(isinstance(v, (int, float, list)) for v in value)


#: What a step's error says to do when it would validate on guessed shapes.
SYNTHETIC_HELP = ("give inputs= (real data), or the free dims' sizes with dims= (e.g. dims={'height': 224} or "
                  "{'x:2': 224}), or allow_synthetic=True to check with them set to 1")


def default_inputs(model: Any, what: str, dims: Any = None, allow_synthetic: bool = False,
                   batch: int = 8) -> SyntheticInputs:
    """Seeded random inputs for a step given no inputs (a ModelProto or input
    specs). A model is not called validated on shapes nobody gave: when a free
    dim other than the batch dim has no size in ``dims``, this raises
    :class:`ValidationError` naming the dims, unless ``allow_synthetic``."""
    specs = graph_inputs(model) if hasattr(model, "graph") else list(model)
    try:
        syn = synthesize(specs, batch, dims, seed=0)
    except ValueError as e:
        raise ValidationError(f"{what}: {e}") from e
    if syn.guessed and not allow_synthetic:
        raise ValidationError(f"{what}: no inputs were given, and the model's free dims {syn.guessed_text()} "
                              f"have no size: a model is not called validated on shapes nobody gave; "
                              f"{SYNTHETIC_HELP}")
    return syn


def step_inputs(model: "onnx.ModelProto", inputs: Any, what: str, dims: Any = None, allow_synthetic: bool = False,
                batch: int = 8) -> "Tuple[Dict[str, np.ndarray], Optional[SyntheticInputs]]":
    """A step's validation feeds: ``inputs`` normalized, or (None) :func:`default_inputs`,
    with the :class:`SyntheticInputs` record when synthesized."""
    if isinstance(inputs, SyntheticInputs):
        return inputs.feeds, inputs
    if inputs is None:
        syn = default_inputs(model, what, dims, allow_synthetic, batch)
        return syn.feeds, syn
    return normalize_feeds(model, inputs), None


def take_rows(feeds: Mapping[str, np.ndarray], n: int) -> Dict[str, np.ndarray]:
    """The first ``n`` rows of every input that has a first dim (the others as they are)."""
    return {k: np.ascontiguousarray(v[:n]) if v.ndim else v for k, v in feeds.items()}


def first_row(model: "onnx.ModelProto", feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Batch-1 inputs cut from ``feeds`` (the fixed batch's rows where the
    model's first dim is fixed)."""
    out = {}
    specs = {s.name: s for s in graph_inputs(model)}
    for k, v in feeds.items():
        spec = specs.get(k)
        if spec is None or not spec.shape or not v.ndim:
            out[k] = v
            continue
        d = spec.shape[0]
        rows = d if isinstance(d, int) and d > 0 else 1
        out[k] = np.ascontiguousarray(v[:rows])
    return out


# -- statistics and latency ----------------------------------------------------------


@dataclass
class ModelStats:
    """Nodes, serialized size and (when measured) batch-1 latency of a model."""

    nodes: int
    bytes: int
    latency_us: Optional[float] = None

    @classmethod
    def of(cls, model: "onnx.ModelProto") -> "ModelStats":
        return cls(nodes=count_nodes(model), bytes=model_size(model))

    def to_dict(self) -> Dict[str, Any]:
        return {"nodes": self.nodes, "bytes": self.bytes, "latency_us": self.latency_us}


def count_nodes(model: "onnx.ModelProto") -> int:
    def count(graph: Any) -> int:
        n = 0
        for node in graph.node:
            n += 1
            for attr in node.attribute:
                if attr.g.node:
                    n += count(attr.g)
                for g in attr.graphs:
                    n += count(g)
        return n

    return count(model.graph)


def prune_opsets(model: "onnx.ModelProto") -> "onnx.ModelProto":
    """Drops opset imports of domains no node uses (onnxruntime's saved models
    import every domain it knows), in place; returns the model."""
    used = {""}

    def walk(graph: Any) -> None:
        for node in graph.node:
            used.add(node.domain if node.domain != "ai.onnx" else "")
            for attr in node.attribute:
                if attr.g.node:
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(model.graph)
    for fn in model.functions:
        used.add(fn.domain)
        for node in fn.node:
            used.add(node.domain)
    keep = [o for o in model.opset_import if (o.domain if o.domain != "ai.onnx" else "") in used]
    if len(keep) != len(model.opset_import):
        del model.opset_import[:]
        model.opset_import.extend(keep)
    return model


def op_types(model: "onnx.ModelProto") -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for node in model.graph.node:
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def measure_latency(models: Mapping[str, Any], feeds: Mapping[str, Mapping[str, np.ndarray]],
                    seconds: float = 1.0, providers: Sequence[str] = ("cpu",), rows_per_call: int = 1,
                    **engine_kwargs: Any) -> Dict[str, Any]:
    """Per-call latency of each model through :class:`fastort.Engine`, timed in
    alternating rounds (:func:`fastort.bench.compare`) so that a noisy
    machine disturbs them alike. ``feeds`` maps each model's key to its inputs.
    Returns key -> :class:`fastort.bench.Timing`."""
    engines = {}
    try:
        for key, model in models.items():
            source = model.model if isinstance(model, StepResult) else model
            if not isinstance(source, (str, os.PathLike)):
                source = serialized(load_model(source))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                engines[key] = Engine(source, providers=providers, **engine_kwargs)
        methods = {key: (lambda e=engines[key], f=dict(feeds[key]): e.run(f)) for key in models}
        rounds = 6 if seconds < 1 else 10
        timings = compare(methods, seconds=seconds, rounds=rounds, warmup_s=min(0.3, seconds / 2),
                          rows_per_call=rows_per_call)
        return {t.method: t for t in timings}
    finally:
        for e in engines.values():
            e.close()


# -- step results ---------------------------------------------------------------


@dataclass
class StepResult:
    """What a model-changing step produced.

    Attributes:
        step: ``"convert"``, ``"optimize"`` or ``"quantize"``.
        model: the resulting ``onnx.ModelProto``.
        path: where it was written (None when not written).
        settings: the step's settings, as given and as resolved.
        tools: versions of the tools used.
        validation: the check of the result against the step's input.
        before, after: nodes, size and latency of the input and the result.
        notes: what the step decided on its own (a lowered level, a skipped pass).
        forced: the result was kept although it broke the tolerances.
    """

    step: str
    model: "onnx.ModelProto"
    path: Optional[str] = None
    settings: Dict[str, Any] = field(default_factory=dict)
    tools: Dict[str, str] = field(default_factory=dict)
    validation: "Optional[ValidationReport]" = None
    before: Optional[ModelStats] = None
    after: Optional[ModelStats] = None
    notes: List[str] = field(default_factory=list)
    forced: bool = False

    def save(self, path: Union[str, "os.PathLike[str]"]) -> str:
        """Writes the model (refused when validation failed and it was not forced)."""
        if self.validation is not None and not self.validation.passed and not self.forced:
            raise ValidationError(f"{self.step}: refusing to write a model outside tolerance "
                                  f"(pass force=True to keep it)\n{self.validation}", self.validation, self.model)
        self.path = save_model(self.model, path)
        return self.path

    def provenance(self) -> Dict[str, Any]:
        """A JSON-able record of the step, for a package manifest."""
        return {
            "step": self.step,
            "settings": _jsonable(self.settings),
            "tools": dict(self.tools),
            "before": None if self.before is None else self.before.to_dict(),
            "after": None if self.after is None else self.after.to_dict(),
            "validation": None if self.validation is None else self.validation.to_dict(),
            "notes": list(self.notes),
            "forced": self.forced,
        }

    def summary(self) -> str:
        parts = [self.step]
        if self.before is not None and self.after is not None:
            parts.append(f"nodes {self.before.nodes} -> {self.after.nodes}")
            parts.append(f"size {format_bytes(self.before.bytes)} -> {format_bytes(self.after.bytes)}")
            if self.before.latency_us is not None and self.after.latency_us is not None:
                parts.append(f"latency {format_us(self.before.latency_us)} -> {format_us(self.after.latency_us)}")
        elif self.after is not None:
            parts.append(f"nodes {self.after.nodes}, size {format_bytes(self.after.bytes)}")
        if self.validation is not None:
            parts.append(f"max abs err {self.validation.max_abs_error:.3g}"
                         + ("" if self.validation.passed else " (OUT OF TOLERANCE" + (", forced)" if self.forced else ")")))
        return ", ".join(parts)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return f"<StepResult {self.summary()}>"


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)) and not isinstance(value, bool):
        value = float(value)
        return value if np.isfinite(value) else str(value)
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return repr(value)


def check_force(step: str, report: "ValidationReport", model: "onnx.ModelProto", force: bool,
                notes: List[str]) -> bool:
    """Raises ValidationError for a failed report unless ``force``; with it,
    warns and records the fact. Returns whether the result was forced."""
    if report.passed:
        return False
    if not force:
        raise ValidationError(
            f"{step}: the result is outside tolerance against its input, so it was not written "
            f"(pass force=True to keep it anyway)\n{report}", report, model)
    warnings.warn(f"fastort {step}: keeping a result outside tolerance (force=True)\n{report}",
                  RuntimeWarning, stacklevel=3)
    notes.append("kept although outside tolerance (force=True)")
    return True


def load_arrays(path: Union[str, "os.PathLike[str]"], what: str = "data",
                error: type = ModelLoadError) -> Union[np.ndarray, Dict[str, np.ndarray]]:
    """Arrays from a file: ``.npy`` (one array) or ``.npz`` (name -> array).
    Pickled object arrays are refused. A missing or unreadable file raises ``error``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise error(f"{what} file not found: {path}")
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as e:
        raise error(f"cannot read {what} file {path} (expected .npy or .npz): {type(e).__name__}: {e}") from None
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        return {k: loaded[k] for k in loaded.files}
