"""Model variants made by fastort's own preparation steps (optimize, float16,
int8 dynamic and static quantization), and their error against the original
on the tuning inputs (max abs error, or the user's metric).

The steps' own tolerance checks are bypassed (``force=True``): the tuner
judges every variant by the user's ``max_error`` instead, and keeps the
numbers of the ones that miss it for the report.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .config import Targets

#: Providers that run float16 kernels (the CPU EP has almost none: casts only).
FP16_PROVIDERS = ("cuda", "CUDAExecutionProvider", "openvino", "OpenVINOExecutionProvider", "tensorrt",
                  "TensorrtExecutionProvider", "dml", "DmlExecutionProvider")


@dataclass
class Variant:
    """A model file and how far its outputs are from the original's."""

    name: str
    path: str
    size_bytes: int
    error: float = 0.0
    error_ok: bool = True
    error_detail: str = ""
    notes: List[str] = field(default_factory=list)


def _cpu_has_vnni() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return "vnni" in line
    except OSError:
        pass
    return True  # unknown: no warning


def plan(allow: Sequence[str], provider: Any, synthetic: bool, calibration: Any) -> List[Tuple[str, Optional[str]]]:
    """The variants to try, in order, each with the reason it is skipped (None: tried)."""
    name = provider[0] if isinstance(provider, (tuple, list)) else provider
    out: List[Tuple[str, Optional[str]]] = []
    if "optimize" in allow:
        out.append(("optimized", None))
    if "precision" in allow:
        out.append(("fp16", None if name in FP16_PROVIDERS else
                    f"provider {name} has no float16 kernels (onnxruntime's CPU EP casts float16 to float32)"))
    if "quantize" in allow:
        out.append(("int8-dynamic", None))
        if calibration is None and synthetic:
            out.append(("int8-static", "no calibration data (give calibration= or real inputs=)"))
        else:
            out.append(("int8-static", None))
    return out


def build(name: str, source: str, folder: str, batches: List[Dict[str, np.ndarray]], calibration: Any,
          provider: Any) -> Tuple[str, List[str]]:
    """Makes variant ``name`` of the model at ``source`` in ``folder``; returns
    (path, notes). Preparation errors propagate (the caller records them)."""
    from ..prepare.optimize import optimize
    from ..prepare.quantize import quantize

    path = os.path.join(folder, f"{name}.onnx")
    feeds = batches[0] if len(batches) == 1 else None
    notes: List[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "optimized":
            step = optimize(source, path, level="extended", inputs=feeds, force=True, measure=False)
        elif name == "fp16":
            pname = provider[0] if isinstance(provider, (tuple, list)) else provider
            target = "cuda" if "cuda" in str(pname).lower() else "cpu"
            step = optimize(source, path, level="basic", target=target, fp16=True, inputs=feeds,
                                             force=True, measure=False)
        elif name == "int8-dynamic":
            step = quantize(source, path, mode="dynamic", inputs=feeds, force=True, measure=False)
        elif name == "int8-static":
            cal = calibration if calibration is not None else _stack(batches)
            if calibration is None:
                notes.append("calibrated on the tuning inputs")
            step = quantize(source, path, mode="static", calibration=cal, inputs=feeds,
                                             force=True, measure=False)
        else:  # pragma: no cover - plan() names only the above
            raise ValueError(f"unknown variant {name!r}")
    notes.extend(step.notes)
    if name.startswith("int8") and not _cpu_has_vnni():
        notes.append("this CPU has no VNNI: int8 is often slower than float32 here")
    return path, notes


def _stack(batches: List[Dict[str, np.ndarray]]) -> Any:
    if len(batches) == 1:
        return batches[0]
    return list(batches)


def error_of(reference: str, candidate: str, batches: List[Dict[str, np.ndarray]],
             targets: Targets) -> Tuple[float, bool, str]:
    """(error, ok, detail) of ``candidate`` against ``reference``: the largest
    max-abs error (or the user's metric) over the validation batches; ``ok``
    False when labels differ or the metric says fail."""
    from ..prepare.validate import run_model, validate

    if targets.metric is not None:
        metric: Callable[[Mapping[str, Any], Mapping[str, Any]], Any] = targets.metric
        worst = 0.0
        ok = True
        for feeds in batches:
            ref = run_model(reference, feeds)
            cand = run_model(candidate, feeds)
            value = metric(ref, cand)
            if isinstance(value, (bool, np.bool_)):
                ok = ok and bool(value)
            else:
                worst = max(worst, float(value))
        return worst, ok, "metric " + ("passed" if ok else "failed")
    atol = targets.max_error if targets.max_error is not None else 1e30
    worst, ok, detail = 0.0, True, ""
    for feeds in batches:
        rep = validate(reference, candidate, feeds, rtol=0.0, atol=atol, raise_on_failure=False)
        worst = max(worst, rep.max_abs_error)
        labels = [o for o in rep.outputs if o.kind != "numeric" and not o.passed]
        if labels:
            ok = False
            detail = "label outputs differ: " + ", ".join(o.name for o in labels)
    return worst, ok, detail
