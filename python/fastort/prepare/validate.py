"""Check that a candidate model still gives the reference's answers.

>>> from fastort.prepare.validate import validate   # also fastort.validate
>>> report = validate(torch_module, "model.onnx", {"x": x}, rtol=1e-3, atol=1e-5)
>>> print(report)                # per output: max abs / mean rel error, top-1 agreement

The reference is a framework model (a torch ``nn.Module``, a scikit-learn
estimator, a Keras model), a plain callable ``fn(feeds) -> outputs``, or an
ONNX model (path, bytes, ``onnx.ModelProto``, :class:`fastort.Engine`); the
candidate is an ONNX model. Both are run on the same inputs and compared
output by output: an output passes when every element satisfies
``|candidate - reference| <= atol + rtol * |reference|`` (numpy's ``isclose``),
label outputs (ints, strings) when they agree, and, if ``min_top1`` is given,
when the top-1 agreement of score outputs ``[N, classes]`` reaches it.
Broken tolerances raise :class:`ValidationError`, whose ``report`` holds the numbers.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .._format import format_table
from ..engine import Engine
from ..errors import ValidationError
from ..bench import SyntheticInputs
from .common import (
    StepResult,
    _as_array,
    graph_inputs,
    graph_outputs,
    load_model,
    normalize_feeds,
    serialized,
    is_keras,
    set_training,
    default_inputs,
)

__all__ = ["validate", "ValidationReport", "OutputReport", "ValidationError", "run_model"]


@dataclass
class OutputReport:
    """How one output of the candidate compares with the reference's.

    Attributes:
        name: the candidate's output name.
        kind: ``"numeric"`` (compared with rtol/atol) or ``"label"`` (compared for equality).
        shape: the output's shape.
        max_abs_error: largest ``|candidate - reference|`` (0 for labels).
        mean_abs_error: mean ``|candidate - reference|``.
        mean_rel_error: mean ``|candidate - reference|`` over mean ``|reference|``.
        mismatched: elements outside tolerance (labels: that differ).
        total: elements compared.
        worst: (index, reference value, candidate value) of the largest error.
        top1_agreement: share of rows whose arg-max (labels: value) agrees;
            None where it does not apply.
        passed: whether the output is within tolerance.
        reason: why not, in words.
    """

    name: str
    kind: str
    shape: Tuple[int, ...]
    max_abs_error: float = 0.0
    mean_abs_error: float = 0.0
    mean_rel_error: float = 0.0
    mismatched: int = 0
    total: int = 0
    worst: Optional[Tuple[Tuple[int, ...], Any, Any]] = None
    top1_agreement: Optional[float] = None
    passed: bool = True
    reason: str = ""
    atol: Optional[float] = None

    def to_dict(self) -> Dict[str, Any]:
        worst = None
        if self.worst is not None:
            worst = {"index": list(self.worst[0]), "reference": _scalar(self.worst[1]),
                     "candidate": _scalar(self.worst[2])}
        return {"name": self.name, "kind": self.kind, "shape": list(self.shape),
                "max_abs_error": self.max_abs_error, "mean_abs_error": self.mean_abs_error,
                "mean_rel_error": self.mean_rel_error, "mismatched": self.mismatched, "total": self.total,
                "worst": worst, "top1_agreement": self.top1_agreement, "passed": self.passed,
                "reason": self.reason, "atol": self.atol}


def _scalar(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


@dataclass
class ValidationReport:
    """The comparison of a candidate model with its reference, output by output."""

    outputs: List[OutputReport]
    rtol: float
    atol: Union[float, Dict[str, float]]
    min_top1: Optional[float] = None
    samples: int = 0
    reference: str = ""
    candidate: str = ""
    notes: List[str] = field(default_factory=list)
    #: where the inputs came from: {"source": "given"} or a synthetic record
    #: (seed, shapes, and the free dims given, set to the batch, or guessed).
    inputs: Dict[str, Any] = field(default_factory=lambda: {"source": "given"})

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    @property
    def max_abs_error(self) -> float:
        """The largest abs error over the numeric outputs (0.0 when none)."""
        return max((o.max_abs_error for o in self.outputs if o.kind == "numeric"), default=0.0)

    @property
    def mean_rel_error(self) -> float:
        return max((o.mean_rel_error for o in self.outputs if o.kind == "numeric"), default=0.0)

    @property
    def top1_agreement(self) -> Optional[float]:
        """The lowest top-1 agreement over the outputs where it applies (None: none)."""
        values = [o.top1_agreement for o in self.outputs if o.top1_agreement is not None]
        return min(values) if values else None

    def failures(self) -> List[OutputReport]:
        return [o for o in self.outputs if not o.passed]

    def to_dict(self) -> Dict[str, Any]:
        return {"passed": self.passed, "rtol": self.rtol, "atol": self.atol, "min_top1": self.min_top1,
                "samples": self.samples, "reference": self.reference, "candidate": self.candidate,
                "max_abs_error": self.max_abs_error, "top1_agreement": self.top1_agreement,
                "outputs": [o.to_dict() for o in self.outputs], "notes": list(self.notes),
                "inputs": dict(self.inputs)}

    def __str__(self) -> str:
        atol = (f"{self.atol:g}" if isinstance(self.atol, (int, float))
                else "{" + ", ".join(f"{k}: {v:.3g}" for k, v in self.atol.items()) + "}")
        head = (f"validation of {self.candidate or 'candidate'} against {self.reference or 'reference'} "
                f"on {self.samples} sample(s), rtol={self.rtol:g}, atol={atol}"
                + (f", min top-1 {self.min_top1:g}" if self.min_top1 is not None else "")
                + (": passed" if self.passed else ": FAILED"))
        rows = []
        for o in self.outputs:
            top1 = "-" if o.top1_agreement is None else f"{o.top1_agreement:.2%}"
            if o.kind == "numeric":
                rows.append([o.name, f"{o.max_abs_error:.3g}", f"{o.mean_rel_error:.3g}",
                             f"{o.mismatched}/{o.total}", top1, "ok" if o.passed else "FAIL"])
            else:
                rows.append([o.name, "-", "-", f"{o.mismatched}/{o.total}", top1, "ok" if o.passed else "FAIL"])
        text = head + "\n" + format_table(
            ["output", "max abs err", "mean rel err", "out of tol", "top-1 agree", ""], rows)
        for o in self.failures():
            text += f"\n  {o.name}: {o.reason}"
        for note in self.notes:
            text += f"\n  note: {note}"
        return text

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # pragma: no cover - IPython
        p.text(str(self))


# -- running the two sides --------------------------------------------------------


def _flatten(out: Any) -> List[Any]:
    """Framework outputs as a flat list (tuples, lists and dicts unpacked)."""
    if isinstance(out, Mapping):
        return [v for value in out.values() for v in _flatten(value)]
    if isinstance(out, (list, tuple)) and out and not isinstance(out[0], (dict, int, float, str)):
        return [v for value in out for v in _flatten(value)]
    return [out]


def _kind_of(obj: Any) -> str:
    module = type(obj).__module__ or ""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.nn.Module):
        return "torch"
    if module.startswith(("keras", "tensorflow", "tf_keras")):
        return "tf"
    if hasattr(obj, "get_params") and (hasattr(obj, "predict") or hasattr(obj, "transform")):
        return "sklearn"
    return ""


def _is_onnx(obj: Any) -> bool:
    if isinstance(obj, (str, os.PathLike, bytes, bytearray, memoryview, StepResult, Engine)):
        return True
    return type(obj).__name__ == "ModelProto"


def describe(obj: Any) -> str:
    kind = _kind_of(obj)
    if kind:
        return f"{kind} {type(obj).__name__}"
    if isinstance(obj, (str, os.PathLike)):
        return os.path.basename(os.fspath(obj))
    if isinstance(obj, StepResult):
        return f"{obj.step} result"
    if isinstance(obj, Engine):
        return "Engine"
    if _is_onnx(obj):
        return "ONNX model"
    return getattr(obj, "__name__", type(obj).__name__)


def _framework_feeds(candidate_specs: Sequence[Any], inputs: Any) -> Dict[str, np.ndarray]:
    """Inputs for the framework side: the candidate's dtypes, but float32 where
    the candidate takes float16 (its own inputs are float32)."""
    return normalize_feeds(_framework_specs(candidate_specs), inputs)


def _run_torch(module: Any, feeds: Mapping[str, np.ndarray]) -> List[Any]:
    import torch

    training = module.training
    set_training(module, False)
    try:
        with torch.no_grad():
            out = module(*[torch.from_numpy(np.ascontiguousarray(v)) for v in feeds.values()])
    finally:
        set_training(module, training)
    return [o.detach().cpu().numpy() if hasattr(o, "detach") else o for o in _flatten(out)]


def _run_sklearn(est: Any, feeds: Mapping[str, np.ndarray]) -> List[Any]:
    if len(feeds) != 1:
        raise ValidationError(f"a scikit-learn reference takes one input array; the candidate has {len(feeds)} "
                              "inputs: pass a callable reference fn(feeds) -> outputs instead")
    (x,) = feeds.values()
    is_classifier = getattr(est, "_estimator_type", None) == "classifier" or hasattr(est, "classes_")
    if hasattr(est, "predict"):
        if is_classifier and hasattr(est, "predict_proba"):
            return [est.predict(x), est.predict_proba(x)]
        if hasattr(est, "decision_function") and is_classifier:
            return [est.predict(x), est.decision_function(x)]
        return [est.predict(x)]
    return [est.transform(x)]


def _run_tf(model: Any, feeds: Mapping[str, np.ndarray]) -> List[Any]:
    args = list(feeds.values())
    if is_keras(model):
        out = model(args[0] if len(args) == 1 else args, training=False)
    else:  # a tf.function takes its inputs as arguments
        out = model(*args)
    return [np.asarray(o.numpy() if hasattr(o, "numpy") else o) for o in _flatten(out)]


def _fixed_batch(model: Any) -> Optional[int]:
    """The first dim shared by every input when it is fixed (None: free)."""
    dims = set()
    for spec in graph_inputs(model):
        if not spec.shape:
            return None
        d = spec.shape[0]
        if not isinstance(d, int) or d <= 0:
            return None
        dims.add(d)
    return dims.pop() if len(dims) == 1 else None


def _concat(parts: List[Dict[str, Any]]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for name in parts[0]:
        values = [p[name] for p in parts]
        if isinstance(values[0], np.ndarray) and values[0].ndim:
            out[name] = np.concatenate(values, axis=0)
        elif isinstance(values[0], list):
            out[name] = [v for value in values for v in value]
        else:
            out[name] = values
    return out


def run_model(model: Any, inputs: Any, providers: Sequence[str] = ("cpu",)) -> Dict[str, Any]:
    """Runs an ONNX model (path, bytes, ModelProto, StepResult or Engine) with
    :class:`fastort.Engine` on ``inputs`` cast to its input dtypes. A model with a
    fixed batch dim is run row-chunk by row-chunk when ``inputs`` hold more rows."""
    if isinstance(model, Engine):
        specs = list(model.inputs)
        return dict(model.run(normalize_feeds(specs, inputs)))
    proto = load_model(model)
    feeds = normalize_feeds(proto, inputs)
    source: Any = os.fspath(model) if isinstance(model, (str, os.PathLike)) else serialized(proto)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = Engine(source, providers=providers)
    with engine:
        batch = _fixed_batch(proto)
        rows = {v.shape[0] for v in feeds.values() if v.ndim}
        if batch is not None and len(rows) == 1 and (n := rows.pop()) > batch and n % batch == 0:
            parts = [dict(engine.run({k: v[i:i + batch] for k, v in feeds.items()})) for i in range(0, n, batch)]
            return _concat(parts)
        return dict(engine.run(feeds))


def _runner(obj: Any, side: str, candidate_specs: Sequence[Any],
            providers: Sequence[str]) -> Tuple[Callable[[Any], Any], Optional[List[str]]]:
    """fn(inputs) -> outputs (a dict for ONNX models, a list for frameworks), and
    the output names when known."""
    kind = _kind_of(obj)
    if kind == "torch":
        return (lambda inputs: _run_torch(obj, _framework_feeds(candidate_specs, inputs))), None
    if kind == "sklearn":
        return (lambda inputs: _run_sklearn(obj, _framework_feeds(candidate_specs, inputs))), None
    if kind == "tf":
        return (lambda inputs: _run_tf(obj, _framework_feeds(candidate_specs, inputs))), None
    if _is_onnx(obj):
        if isinstance(obj, Engine):
            names = [o.name for o in obj.outputs]
        else:
            obj = load_model(obj, what=f"{side} model") if not isinstance(obj, (str, os.PathLike)) else obj
            names = [o.name for o in graph_outputs(load_model(obj, what=f"{side} model"))]
        return (lambda inputs: run_model(obj, inputs, providers)), names
    if callable(obj):
        return (lambda inputs: obj(_framework_feeds(candidate_specs, inputs))), None
    raise ValidationError(f"{side}: cannot run a {type(obj).__name__}: give an ONNX model, a torch module, "
                          "a scikit-learn estimator, a Keras model or a callable fn(feeds) -> outputs")


def _comparable(value: Any) -> np.ndarray:
    """An output value as an array: a list of {label: p} maps (a classifier's
    ZipMap output) becomes [rows, labels] with the labels sorted."""
    if isinstance(value, list) and value and isinstance(value[0], Mapping):
        keys = sorted(value[0].keys(), key=lambda k: (str(type(k)), k))
        return np.asarray([[row[k] for k in keys] for row in value], dtype=np.float64)
    if isinstance(value, list) and value and isinstance(value[0], np.ndarray):
        try:
            return np.stack(value)
        except ValueError:
            pass
    return _as_array(value, "output")


def _compare(name: str, ref: Any, cand: Any, rtol: float, atol: float, min_top1: Optional[float],
             classifier: Optional[bool]) -> OutputReport:
    r = _comparable(ref)
    c = _comparable(cand)
    if r.shape != c.shape and r.size == c.size:
        r = r.reshape(c.shape)  # e.g. scikit-learn's [N] against ONNX's [N, 1]
    label = r.dtype.kind in "iubOSU" and c.dtype.kind in "iubOSU"
    rep = OutputReport(name=name, kind="label" if label else "numeric", shape=tuple(c.shape), total=int(c.size),
                       atol=None if label else atol)
    if r.shape != c.shape:
        rep.passed = False
        rep.mismatched = rep.total
        rep.reason = f"shape {c.shape} differs from the reference's {r.shape}"
        return rep
    if label:
        if r.dtype.kind in "OSU" or c.dtype.kind in "OSU":
            r, c = r.astype(str), c.astype(str)
        equal = r == c
        rep.mismatched = int(equal.size - np.count_nonzero(equal))
        rows = equal.reshape(equal.shape[0], -1).all(axis=1) if equal.ndim else equal.reshape(1)
        rep.top1_agreement = float(rows.mean()) if rows.size else 1.0
        need = 1.0 if min_top1 is None else min_top1
        if rep.top1_agreement < need:
            rep.passed = False
            bad = np.argwhere(~equal)[0] if equal.ndim else ()
            rep.worst = (tuple(int(i) for i in bad), r[tuple(bad)].item(), c[tuple(bad)].item())
            rep.reason = (f"{rep.mismatched} of {rep.total} labels differ (agreement {rep.top1_agreement:.2%}, "
                          f"needed {need:.2%}); first at {rep.worst[0]}: reference {rep.worst[1]!r}, "
                          f"candidate {rep.worst[2]!r}")
        return rep
    r64 = r.astype(np.float64)
    c64 = c.astype(np.float64)
    if r64.size == 0:
        return rep
    diff = np.abs(c64 - r64)
    nan_mismatch = np.isnan(c64) != np.isnan(r64)
    diff = np.where(np.isnan(diff), np.where(nan_mismatch, np.inf, 0.0), diff)
    close = np.isclose(c64, r64, rtol=rtol, atol=atol, equal_nan=True)
    rep.mismatched = int(close.size - np.count_nonzero(close))
    flat = int(np.argmax(diff))
    idx = tuple(int(i) for i in np.unravel_index(flat, diff.shape))
    rep.max_abs_error = float(diff.flat[flat])
    rep.mean_abs_error = float(diff.mean())
    scale = float(np.nanmean(np.abs(r64)))
    rep.mean_rel_error = rep.mean_abs_error / scale if scale > 0 else (0.0 if rep.mean_abs_error == 0 else float("inf"))
    rep.worst = (idx, float(r64[idx]), float(c64[idx]))
    if classifier is not False and r64.ndim == 2 and r64.shape[1] >= 2:
        rep.top1_agreement = float(np.mean(np.argmax(r64, axis=1) == np.argmax(c64, axis=1)))
    reasons = []
    if rep.mismatched:
        reasons.append(
            f"{rep.mismatched} of {rep.total} values outside atol={atol:g} + rtol={rtol:g}*|reference|; "
            f"max abs error {rep.max_abs_error:.6g} at {idx}: reference {r64[idx]:.9g}, candidate {c64[idx]:.9g}")
    if min_top1 is not None and rep.top1_agreement is not None and rep.top1_agreement < min_top1:
        reasons.append(f"top-1 agreement {rep.top1_agreement:.2%} is below {min_top1:.2%}")
    if reasons:
        rep.passed = False
        rep.reason = "; ".join(reasons)
    return rep


def validate(
    reference: Any,
    candidate: Any,
    inputs: Any = None,
    rtol: float = 1e-3,
    atol: Union[float, Mapping[str, float]] = 1e-5,
    *,
    min_top1: Optional[float] = None,
    classifier: Optional[bool] = None,
    raise_on_failure: bool = True,
    providers: Sequence[str] = ("cpu",),
    dims: Any = None,
    allow_synthetic: bool = False,
) -> ValidationReport:
    """Runs ``reference`` and ``candidate`` on ``inputs`` and compares their outputs.

    Args:
        reference: a torch ``nn.Module``, a scikit-learn estimator (classifiers
            give ``[predict, predict_proba]``), a Keras model, a callable
            ``fn(feeds: dict) -> outputs``, or an ONNX model (path, bytes,
            ``onnx.ModelProto``, :class:`fastort.Engine`, a step result).
        candidate: the ONNX model to check.
        inputs: a dict input name -> array, a list of arrays in input order or,
            for one input, the array; cast to the models' dtypes. None: seeded
            random inputs from the candidate's input specs (8 rows), said so in
            the report (``report.inputs``, a note).
        dims: with no inputs, sizes of the free dims: ``{"height": 224}`` (by
            symbolic name) or ``{"x:2": 224}`` (input:axis), or ``["height=224"]``.
        allow_synthetic: with no inputs, accept free dims nobody gave a size
            (set to 1). Without it that is a :class:`ValidationError` naming them:
            a model is not called validated on shapes nobody gave.
        rtol, atol: per element, ``|candidate - reference| <= atol + rtol * |reference|``;
            ``atol`` may be a dict output name -> atol (outputs left out: 0).
        min_top1: when given, the least top-1 agreement of score outputs
            ``[N, classes]`` (and of label outputs, which otherwise must all agree).
        classifier: False: never compute top-1 agreement (default: for every
            2-D float output with at least 2 columns).
        raise_on_failure: raise :class:`ValidationError` when a tolerance is
            broken (default); else only return the report.
        providers: execution providers for the ONNX side(s).

    Outputs are matched by name when both sides are ONNX models with the same
    output names, else by position.
    """
    if _is_onnx(candidate):
        if isinstance(candidate, Engine):
            cand_specs = list(candidate.inputs)
        else:
            candidate_proto = load_model(candidate, what="candidate model")
            cand_specs = graph_inputs(candidate_proto)
            if not isinstance(candidate, (str, os.PathLike)):
                candidate = candidate_proto
    else:
        raise ValidationError(f"candidate must be an ONNX model (path, bytes, ModelProto, Engine), "
                              f"got {type(candidate).__name__}")
    if inputs is None:
        if not _is_onnx(reference) or isinstance(candidate, Engine):
            raise ValidationError("validate: give inputs (example data for the model)")
        inputs = default_inputs(load_model(candidate), "validate", dims, allow_synthetic)
    synthetic = inputs if isinstance(inputs, SyntheticInputs) else None
    if synthetic is not None:
        inputs = synthetic.feeds
    atols = dict(atol) if isinstance(atol, Mapping) else None
    scalar_atol = 0.0 if isinstance(atol, Mapping) else float(atol)
    for value, name in [(rtol, "rtol")] + ([(v, f"atol[{k!r}]") for k, v in atols.items()] if atols else [(atol, "atol")]):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0 or value != value:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    if min_top1 is not None and not 0 <= min_top1 <= 1:
        raise ValueError(f"min_top1 must be within [0, 1], got {min_top1!r}")

    run_ref, ref_names = _runner(reference, "reference", cand_specs, providers)
    run_cand, cand_names = _runner(candidate, "candidate", cand_specs, providers)
    feeds_for_count = normalize_feeds(_framework_specs(cand_specs), inputs)
    samples = max((v.shape[0] for v in feeds_for_count.values() if v.ndim), default=1)
    cand_out = run_cand(inputs)
    ref_out = run_ref(inputs)
    assert cand_names is not None
    cand_values = [cand_out[n] for n in cand_names]
    report = ValidationReport(outputs=[], rtol=float(rtol),
                              atol={k: float(v) for k, v in atols.items()} if atols is not None else scalar_atol,
                              min_top1=min_top1, samples=samples,
                              reference=describe(reference), candidate=describe(candidate))
    if synthetic is not None:
        report.inputs = synthetic.provenance()
        report.notes.append(synthetic.describe())
    if isinstance(ref_out, Mapping):
        if set(ref_out) == set(cand_names):
            ref_values = [ref_out[n] for n in cand_names]
        else:
            ref_values = list(ref_out.values())
    elif isinstance(ref_out, (list, tuple)):
        ref_values = list(ref_out)
    else:
        ref_values = [ref_out]
    if len(ref_values) != len(cand_values):
        if len(ref_values) > len(cand_values):
            report.notes.append(f"the reference gives {len(ref_values)} outputs, the candidate "
                                f"{len(cand_values)}: compared the first {len(cand_values)}")
            ref_values = ref_values[:len(cand_values)]
        else:
            raise ValidationError(
                f"the reference gives {len(ref_values)} output(s), the candidate {len(cand_values)} "
                f"({', '.join(cand_names)}): they cannot be matched", report)
    for name, r, c in zip(cand_names, ref_values, cand_values):
        out_atol = float(atols.get(name, 0.0)) if atols is not None else scalar_atol
        report.outputs.append(_compare(name, r, c, float(rtol), out_atol, min_top1, classifier))
    if raise_on_failure and not report.passed:
        raise ValidationError(f"{report.candidate} does not match {report.reference}:\n{report}", report)
    return report


def _framework_specs(specs: Sequence[Any]) -> List[Any]:
    out = []
    for s in specs:
        if s.dtype is not None and s.dtype == np.float16:
            s = type(s)(s.name, s.type, np.dtype(np.float32), s.shape)
        out.append(s)
    return out

