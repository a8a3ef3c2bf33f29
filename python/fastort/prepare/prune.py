"""Structured pruning of torch models with torch-pruning, judged by measurement.

>>> import fastort
>>> result = fastort.prune(model, x[:8], ratio=0.3, fine_tune=lambda m: train(m, epochs=1),
...                        metric=lambda m: accuracy(m, x_val, y_val))
>>> print(result.table)          # parameters, file size, latency at batch 1 and batched, the metric
>>> result.save("pruned.onnx")

Whole channels, neurons (and heads, where torch-pruning knows the layer) are
removed, so that the exported model really is smaller and does less work. The
layers are ranked by ``importance`` (``"magnitude"``: L2 norm of each group's
weights; ``"l1"``; ``"lamp"``; ``"fpgm"``; ``"taylor"``: weight times gradient,
which needs ``loss_fn``; ``"random"``: a baseline), ``ratio`` of each layer's
channels are removed in ``steps`` iterative steps, and ``fine_tune(module)``
(your training loop) is called after each step so that accuracy can recover.
The layer that produces the output (the last one run) is never pruned, so the
outputs keep their shapes; name more in ``ignored``.

The pruned module is exported through fastort's converter (checked against
torch), then judged: by ``metric(module)`` (higher is better, e.g. accuracy on
your validation data) against the original's, or, without one, by comparing
its outputs with the original's on the inputs (top-1 agreement of score
outputs, mean relative error of the others). A result outside the tolerance
is refused with :class:`~fastort.errors.ValidationError` unless
``force=True``. Size and latency are measured, before and after, with
:class:`fastort.Engine` on the target provider: fewer parameters do not
always mean less time.

Needs ``pip install 'fastort[prune]'`` (torch-pruning; torch itself comes
from ``fastort[torch]``). The module you pass is not changed: a copy is pruned.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from .._format import format_bytes, format_table, format_us
from ..errors import PruningError, ValidationError
from .common import ModelStats, StepResult, measure_latency, normalize_feeds, require, save_model, tool_versions

if TYPE_CHECKING:  # pragma: no cover
    import os

    import onnx

    from .validate import ValidationReport

__all__ = ["prune", "PruneConfig", "PruneResult", "PruneStats", "IMPORTANCES"]

IMPORTANCES = ("magnitude", "l1", "lamp", "fpgm", "taylor", "random")


@dataclass
class PruneConfig:
    """How to prune (see :func:`prune`)."""

    ratio: float
    importance: str = "magnitude"
    round_to: Optional[int] = 8
    steps: int = 1
    global_pruning: bool = False
    min_top1: float = 0.9
    max_mean_rel_error: float = 0.1
    max_metric_drop: float = 0.01
    target: str = "cpu"
    batch_size: int = 32

    def check(self) -> None:
        r = self.ratio
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or not 0 < r < 1:
            raise PruningError(f"ratio is the share of channels to remove, strictly between 0 and 1, got {r!r}")
        if self.importance not in IMPORTANCES:
            raise PruningError(f"importance must be one of {IMPORTANCES}, got {self.importance!r}")
        if self.round_to is not None and (not isinstance(self.round_to, int) or self.round_to < 1):
            raise PruningError(f"round_to must be a positive int or None, got {self.round_to!r}")
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise PruningError(f"steps must be an int >= 1, got {self.steps!r}")
        if not 0 <= self.min_top1 <= 1:
            raise PruningError(f"min_top1 must be within [0, 1], got {self.min_top1!r}")
        if self.batch_size < 1:
            raise PruningError(f"batch_size must be >= 1, got {self.batch_size!r}")


@dataclass
class PruneStats:
    """One side of the before -> after report."""

    parameters: int
    bytes: int
    nodes: int
    latency_us: Optional[float] = None  # batch 1, per call
    batch_latency_us: Optional[float] = None  # ``batch_size`` rows, per call
    metric: Optional[float] = None

    def to_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class PruneResult:
    """What :func:`prune` made.

    Attributes:
        module: the pruned torch module (a copy; the original is unchanged).
        model: its ONNX export (``onnx.ModelProto``), checked against torch.
        original_model: the original module's ONNX export.
        before, after: parameters, file size, nodes, latency at batch 1 and at
            ``batch_size`` rows, and the metric.
        validation: the output comparison with the original (None when a
            metric decided).
        history: per step: parameters after it, and the metric after fine-tuning when given.
        settings, tools, notes, forced: as other steps record them.
    """

    module: Any
    model: "onnx.ModelProto"
    original_model: "onnx.ModelProto"
    before: PruneStats
    after: PruneStats
    settings: Dict[str, Any]
    validation: "Optional[ValidationReport]" = None
    history: List[Dict[str, Any]] = field(default_factory=list)
    tools: Dict[str, str] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    forced: bool = False
    path: Optional[str] = None

    @property
    def table(self) -> str:
        b, a = self.before, self.after
        bs = self.settings.get("batch_size", 32)

        def ratio(x: Optional[float], y: Optional[float], speed: bool = False) -> str:
            if not x or not y:
                return ""
            return f" ({(x / y):.2f}x)" if speed else f" ({y / x:.0%})"

        rows = [
            ["parameters", f"{b.parameters:,}", f"{a.parameters:,}" + ratio(b.parameters, a.parameters)],
            ["ONNX size", format_bytes(b.bytes), format_bytes(a.bytes) + ratio(b.bytes, a.bytes)],
            ["nodes", str(b.nodes), str(a.nodes)],
            ["latency batch 1", format_us(b.latency_us),
             format_us(a.latency_us) + ratio(b.latency_us, a.latency_us, True)],
            [f"latency batch {bs}", format_us(b.batch_latency_us),
             format_us(a.batch_latency_us) + ratio(b.batch_latency_us, a.batch_latency_us, True)],
            ["metric", "-" if b.metric is None else f"{b.metric:.4g}", "-" if a.metric is None else f"{a.metric:.4g}"],
        ]
        if self.validation is not None:
            rows.append(["outputs vs original", "-", f"max abs err {self.validation.max_abs_error:.3g}"
                         + ("" if self.validation.top1_agreement is None
                            else f", top-1 {self.validation.top1_agreement:.1%}")])
        return format_table(["", "before", f"after (ratio {self.settings['ratio']:g})"], rows)

    def save(self, path: "Union[str, os.PathLike[str]]") -> str:
        """Writes the pruned ONNX model."""
        self.path = save_model(self.model, path)
        return self.path

    def step_result(self) -> StepResult:
        """The pruning as a :class:`StepResult` (for a package's provenance)."""
        before = ModelStats(self.before.nodes, self.before.bytes, self.before.latency_us)
        after = ModelStats(self.after.nodes, self.after.bytes, self.after.latency_us)
        settings = dict(self.settings, before=self.before.to_dict(), after=self.after.to_dict(),
                        history=self.history)
        return StepResult(step="prune", model=self.model, path=self.path, settings=settings, tools=self.tools,
                          validation=self.validation, before=before, after=after, notes=list(self.notes),
                          forced=self.forced)

    def __str__(self) -> str:
        return self.table


def _importance(tp: Any, name: str) -> Any:
    imp = tp.importance
    if name == "magnitude":
        return imp.GroupMagnitudeImportance(p=2)
    if name == "l1":
        return imp.GroupMagnitudeImportance(p=1)
    if name == "lamp":
        return imp.LAMPImportance(p=2)
    if name == "fpgm":
        return imp.FPGMImportance(p=2)
    if name == "taylor":
        return imp.GroupTaylorImportance()
    return imp.RandomImportance()


def _tensors(example_inputs: Any, torch: Any) -> List[Any]:
    if isinstance(example_inputs, Mapping):
        values = list(example_inputs.values())
    elif isinstance(example_inputs, (list, tuple)):
        values = list(example_inputs)
    else:
        values = [example_inputs]
    out = []
    for v in values:
        if isinstance(v, torch.Tensor):
            out.append(v.detach())
        else:
            out.append(torch.from_numpy(np.ascontiguousarray(np.asarray(v))))
    if not out:
        raise PruningError("prune: give at least one example input")
    return out


def _outputs(module: Any, tensors: Sequence[Any], torch: Any) -> List[Any]:
    from .validate import _flatten

    with torch.no_grad():
        out = module(*tensors)
    return [o for o in _flatten(out) if isinstance(o, torch.Tensor)]


def _leaf_layers(module: Any, torch: Any, tp: Any, tensors: Sequence[Any]) -> "tuple[Any, List[str]]":
    """(the last layer with parameters run in the forward pass, names of leaf
    layers with parameters that torch-pruning has no pruner for)."""
    known = (tp.ops.TORCH_CONV, tp.ops.TORCH_LINEAR, tp.ops.TORCH_BATCHNORM, tp.ops.TORCH_LAYERNORM,
             tp.ops.TORCH_GROUPNORM, tp.ops.TORCH_INSTANCENORM, tp.ops.TORCH_PRELU, tp.ops.TORCH_EMBED,
             tp.ops.TORCH_MHA, tp.ops.TORCH_LSTM)
    unsupported = []
    for name, m in module.named_modules():
        if isinstance(m, tp.ops.TORCH_MHA):
            continue
        if not list(m.children()) and list(m.parameters(recurse=False)) and not isinstance(m, known):
            unsupported.append(f"{name} ({type(m).__name__})")
    order: List[Any] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: order.append(mod))
             for m in module.modules() if not list(m.children()) and list(m.parameters(recurse=False))]
    try:
        _outputs(module, tensors, torch)
    finally:
        for h in hooks:
            h.remove()
    return (order[-1] if order else None), unsupported


def _count(module: Any) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def _batched(feeds: Mapping[str, np.ndarray], rows: int) -> Dict[str, np.ndarray]:
    """``rows`` rows cut from (or repeated out of) ``feeds``."""
    return {k: np.ascontiguousarray(np.resize(v, (rows,) + v.shape[1:])) if v.ndim else v for k, v in feeds.items()}


def _judge_outputs(original: Any, candidate: "onnx.ModelProto", feeds: Mapping[str, np.ndarray],
                   cfg: PruneConfig) -> "ValidationReport":
    """Top-1 agreement of score outputs (``min_top1``) and the mean relative
    error of the others (``max_mean_rel_error``): pruning changes every value a
    little, so an element-wise tolerance says nothing."""
    from .validate import validate

    report = validate(original, candidate, feeds, rtol=0.0, atol=1e300, min_top1=cfg.min_top1,
                      raise_on_failure=False)
    for out in report.outputs:
        if out.kind == "numeric" and out.top1_agreement is None and out.mean_rel_error > cfg.max_mean_rel_error:
            out.passed = False
            out.reason = (f"mean relative error {out.mean_rel_error:.3g} is above {cfg.max_mean_rel_error:g} "
                          "(max_mean_rel_error)")
    return report


def prune(
    module: Any,
    example_inputs: Any,
    ratio: float,
    *,
    importance: str = "magnitude",
    ignored: Sequence[Any] = (),
    round_to: Optional[int] = 8,
    steps: int = 1,
    fine_tune: Optional[Callable[[Any], Any]] = None,
    metric: Optional[Callable[[Any], float]] = None,
    loss_fn: Optional[Callable[[Any], Any]] = None,
    inputs: Any = None,
    global_pruning: bool = False,
    max_metric_drop: float = 0.01,
    min_top1: float = 0.9,
    max_mean_rel_error: float = 0.1,
    target: str = "cpu",
    batch_size: int = 32,
    measure: bool = True,
    latency_seconds: float = 1.0,
    force: bool = False,
    path: "Optional[Union[str, os.PathLike[str]]]" = None,
    convert_options: Optional[Mapping[str, Any]] = None,
) -> PruneResult:
    """Prunes a copy of ``module`` and reports what it gained and lost.

    Args:
        module: a torch ``nn.Module``.
        example_inputs: a tensor/array, a tuple of them, or a dict name ->
            tensor: traced by torch-pruning, used to export and check.
        ratio: share of each layer's channels to remove, in (0, 1).
        importance: how channels are ranked (:data:`IMPORTANCES`).
        ignored: modules (or their names) never pruned; the last layer run is
            always added, so that outputs keep their shapes.
        round_to: keep channel counts multiples of this (None: any count).
        steps: reach ``ratio`` in this many steps, calling ``fine_tune`` after each.
        fine_tune: ``fine_tune(module)``, your training loop on the pruned module.
        metric: ``metric(module) -> float``, higher is better; the result is
            refused when it falls by more than ``max_metric_drop``.
        loss_fn: ``loss_fn(module) -> scalar tensor`` on your data: the
            gradients ``"taylor"`` importance needs.
        inputs: judging and timing inputs (default: the example inputs).
        global_pruning: rank channels across layers rather than per layer.
        min_top1, max_mean_rel_error: without a metric, the least top-1
            agreement of score outputs and the largest mean relative error of
            other outputs, against the original.
        target: the provider latency is measured on.
        batch_size: rows of the batched latency measurement.
        measure: time batch 1 and ``batch_size`` through :class:`fastort.Engine`.
        force: keep a result outside tolerance (with a warning).
        path: write the pruned ONNX model here.
        convert_options: extra arguments for :func:`fastort.convert.from_torch`.
    """
    torch = require("torch", "torch", "pruning")
    tp = require("torch_pruning", "prune", "structured pruning")
    from .convert import from_torch
    from .kernels import check_kernels

    cfg = PruneConfig(ratio=ratio, importance=importance, round_to=round_to, steps=steps,
                      global_pruning=global_pruning, min_top1=min_top1, max_mean_rel_error=max_mean_rel_error,
                      max_metric_drop=max_metric_drop, target=target, batch_size=batch_size)
    cfg.check()
    if not isinstance(module, torch.nn.Module):
        raise PruningError(f"prune takes a torch nn.Module, got {type(module).__name__}")
    if importance == "taylor" and loss_fn is None:
        raise PruningError("importance 'taylor' ranks channels by weight x gradient: give loss_fn(module) -> loss "
                           "on your data")
    tensors = _tensors(example_inputs, torch)
    notes: List[str] = []
    was_training = module.training
    module.eval()
    try:
        original_outputs = [o.shape for o in _outputs(module, tensors, torch)]
        pruned = copy.deepcopy(module)
    finally:
        module.train(was_training)
    names = dict(pruned.named_modules())
    ignored_layers = []
    for item in ignored:
        if isinstance(item, str):
            if item not in names:
                raise PruningError(f"ignored names a module the model does not have: {item!r}")
            ignored_layers.append(names[item])
        else:  # a module of the original: find its copy by name
            found = [n for n, m in module.named_modules() if m is item]
            if not found:
                raise PruningError(f"ignored holds a {type(item).__name__} that is not part of the module")
            ignored_layers.append(names[found[0]])
    head, unsupported = _leaf_layers(pruned, torch, tp, tensors)
    ignored_names = {n for n, m in pruned.named_modules() if any(m is x for x in ignored_layers)}
    unsupported = [u for u in unsupported if u.split(" ")[0] not in ignored_names]
    if unsupported:
        raise PruningError(f"torch-pruning has no pruner for layer(s) {unsupported}: pruning around them would "
                           "leave their weights inconsistent; list them in ignored=[...] to keep them whole")
    if head is not None and not any(head is m for m in ignored_layers):
        ignored_layers.append(head)
        head_name = next(n for n, m in pruned.named_modules() if m is head)
        notes.append(f"the output layer {head_name!r} is kept whole (outputs keep their shapes)")

    before_params = _count(module)
    before_metric = None if metric is None else float(metric(module))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pruner = tp.pruner.MetaPruner(
                pruned, tuple(tensors) if len(tensors) > 1 else tensors[0], importance=_importance(tp, importance),
                pruning_ratio=float(ratio), iterative_steps=steps, ignored_layers=ignored_layers, round_to=round_to,
                global_pruning=global_pruning)
    except Exception as e:
        raise PruningError(f"torch-pruning could not trace the module: {type(e).__name__}: {e}") from e
    history: List[Dict[str, Any]] = []
    for step in range(steps):
        pruned.eval()
        if importance == "taylor":
            assert loss_fn is not None
            pruned.zero_grad()
            loss = loss_fn(pruned)
            loss.backward()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pruner.step()
        except Exception as e:
            raise PruningError(f"torch-pruning failed at step {step + 1}: {type(e).__name__}: {e}") from e
        if importance == "taylor":
            pruned.zero_grad()
        pruned.eval()
        try:
            shapes = [o.shape for o in _outputs(pruned, tensors, torch)]
        except Exception as e:
            raise PruningError(f"the pruned module no longer runs ({type(e).__name__}: {e}); a layer it has is not "
                               "pruned consistently: list it in ignored=[...]") from e
        if shapes != original_outputs:
            raise PruningError(f"pruning changed the output shapes from {original_outputs} to {shapes}: list the "
                               "layers that produce the outputs in ignored=[...]")
        entry: Dict[str, Any] = {"step": step + 1, "parameters": _count(pruned)}
        if fine_tune is not None:
            fine_tune(pruned)
            pruned.eval()
            entry["fine_tuned"] = True
        if metric is not None and steps > 1:
            entry["metric"] = float(metric(pruned))
        history.append(entry)
    pruned.eval()
    if _count(pruned) >= before_params:
        raise PruningError(f"nothing was pruned at ratio {ratio:g}: every prunable layer is ignored, or too small "
                           f"for round_to={round_to}")
    after_metric = None if metric is None else float(metric(pruned))

    # export both, checked against torch, and judge
    options = dict(convert_options or {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        original_onnx = from_torch(module, tuple(tensors), **options)
        pruned_onnx = from_torch(pruned, tuple(tensors), **options)
    notes += check_kernels(pruned_onnx.model, target, what="the pruned model")
    feeds = normalize_feeds(pruned_onnx.model, inputs if inputs is not None else [t.numpy() for t in tensors])
    report = None
    passed = True
    if metric is not None:
        assert before_metric is not None and after_metric is not None
        passed = after_metric >= before_metric - max_metric_drop
        reason = (f"metric {before_metric:.4g} -> {after_metric:.4g} (allowed drop {max_metric_drop:g})")
        notes.append(reason)
    else:
        was_training = module.training
        module.eval()
        try:
            report = _judge_outputs(module, pruned_onnx.model, feeds, cfg)
        finally:
            module.train(was_training)
        passed = report.passed
        reason = str(report)
    forced = False
    if not passed:
        if not force:
            raise ValidationError(f"prune: the pruned model is outside tolerance against the original, so it was not "
                                  f"kept (fine-tune it, lower the ratio, or pass force=True)\n{reason}", report,
                                  pruned_onnx.model)
        warnings.warn(f"fastort prune: keeping a result outside tolerance (force=True)\n{reason}", RuntimeWarning,
                      stacklevel=2)
        notes.append("kept although outside tolerance (force=True)")
        forced = True

    before = PruneStats(before_params, ModelStats.of(original_onnx.model).bytes, ModelStats.of(original_onnx.model).nodes,
                        metric=before_metric)
    after = PruneStats(_count(pruned), ModelStats.of(pruned_onnx.model).bytes, ModelStats.of(pruned_onnx.model).nodes,
                       metric=after_metric)
    if measure:
        models = {"before": original_onnx.model, "after": pruned_onnx.model}
        one = {k: {n: v[:1] for n, v in feeds.items()} for k in models}
        many = {k: _batched(feeds, batch_size) for k in models}
        t1 = measure_latency(models, one, seconds=latency_seconds, providers=(target,))
        tn = measure_latency(models, many, seconds=latency_seconds, providers=(target,), rows_per_call=batch_size)
        before.latency_us, after.latency_us = t1["before"].median_us, t1["after"].median_us
        before.batch_latency_us, after.batch_latency_us = tn["before"].median_us, tn["after"].median_us
    settings: Dict[str, Any] = {
        "ratio": float(ratio), "importance": importance, "round_to": round_to, "steps": steps,
        "global_pruning": global_pruning, "ignored": sorted(n for n, m in pruned.named_modules()
                                                            if any(m is x for x in ignored_layers)),
        "fine_tune": None if fine_tune is None else getattr(fine_tune, "__name__", type(fine_tune).__name__),
        "metric": None if metric is None else getattr(metric, "__name__", type(metric).__name__),
        "max_metric_drop": max_metric_drop if metric is not None else None,
        "min_top1": min_top1 if metric is None else None,
        "max_mean_rel_error": max_mean_rel_error if metric is None else None,
        "target": target, "batch_size": batch_size,
    }
    result = PruneResult(module=pruned, model=pruned_onnx.model, original_model=original_onnx.model, before=before,
                         after=after, settings=settings, validation=report, history=history,
                         tools=tool_versions("torch", "torch-pruning"), notes=notes, forced=forced)
    if path is not None:
        result.save(path)
    return result

