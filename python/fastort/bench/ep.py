"""Execution providers side by side: fastort on each EP vs onnxruntime's own
Python API with the same plugin, in one process, with each one's error against
the CPU EP in f32.

Used by ``fastort bench --providers openvino,cpu`` and ``bench/bench_ep.py``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .timing import Timing, compare

__all__ = ["EpCase", "EpResult", "ep_cases", "compare_eps", "format_eps"]


@dataclass(frozen=True)
class EpCase:
    """One way to run the model: a label, fastort's providers and precision."""

    label: str
    providers: Tuple[Any, ...]
    precision: str = "f32"


@dataclass
class EpResult:
    case: str
    timing: Timing
    max_abs_err: float  # against the CPU EP in f32 (onnxruntime's InferenceSession)
    providers: str  # what the engine / session really ran on
    precision: str


def ep_cases(providers: Sequence[str], precisions: Sequence[str] = ("f32",)) -> List[EpCase]:
    """fastort cases for ``providers`` (e.g. ["openvino", "cpu"]): each non-CPU
    provider once per precision (with the CPU EP behind it), and the CPU EP."""
    cases: List[EpCase] = []
    for p in providers:
        if p.lower() in ("cpu", "cpuexecutionprovider"):
            cases.append(EpCase("fastort cpu", ("cpu",)))
            continue
        for prec in precisions:
            cases.append(EpCase(f"fastort {p} {prec}", (p, "cpu"), prec))
    return cases


def _ort_plugin_session(model: str, ep_name: str, precision: str, threads: int) -> Any:
    """onnxruntime's own Python API with the same plugin library (registered
    there once per process), its device, and the same precision option."""
    import json

    import onnxruntime as ort

    from ..runtime import plugin_eps

    lib = next((p for p in plugin_eps.plugin_libraries() if ep_name in (p.provides or p.ep_names)), None)
    if lib is None or not lib.registered:
        raise RuntimeError(f"no registered plugin library provides {ep_name}")
    name = f"ort-{lib.name}"
    if not any(d.ep_name == ep_name for d in ort.get_ep_devices()):
        ort.register_execution_provider_library(name, lib.path)
    devices = [d for d in ort.get_ep_devices() if d.ep_name == ep_name][:1]
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    options: Dict[str, str] = {}
    if precision != "auto" and ep_name == "OpenVINOExecutionProvider":
        hint = {"f32": "f32", "bf16": "bf16", "fp16": "f16"}[precision]
        options["load_config"] = json.dumps({devices[0].ep_metadata.get("ov_device", "CPU"):
                                             {"INFERENCE_PRECISION_HINT": hint}})
    so.add_provider_for_devices(devices, options)
    return ort.InferenceSession(model, so)


def _outputs(engine: Any, feeds: Mapping[str, np.ndarray], names: Sequence[str]) -> List[np.ndarray]:
    out = engine.run(feeds)
    return [out[n] for n in names]


def compare_eps(model: str, feeds: Mapping[str, np.ndarray], cases: Sequence[EpCase], *, threads: int = 0,
                seconds: float = 4.0, onnxruntime_too: bool = True, rows_per_call: int = 1,
                replicas: int = 1) -> List[EpResult]:
    """Times every case (and, with ``onnxruntime_too``, onnxruntime's
    InferenceSession on the CPU EP and on each plugin EP) in alternating rounds."""
    import warnings

    import onnxruntime as ort

    from ..engine import Engine

    feeds = dict(feeds)
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    reference = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    out_names = [o.name for o in reference.get_outputs()]
    want = reference.run(out_names, feeds)
    methods: Dict[str, Callable[[], Any]] = {}
    runs: Dict[str, Callable[[], List[np.ndarray]]] = {}
    info: Dict[str, Tuple[str, str]] = {}
    engines: List[Any] = []
    for case in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "auto" precision warns by design; reported below
            engine = Engine(model, providers=list(case.providers), precision=case.precision,
                            intra_op_threads=threads, replicas=replicas)
        engines.append(engine)
        methods[case.label] = functools.partial(engine.run, feeds)
        runs[case.label] = functools.partial(_outputs, engine, feeds, out_names)
        info[case.label] = (engine.replica_providers[0], ",".join(f"{k}={v}" for k, v in engine.precision.items()))
    if onnxruntime_too:
        methods["onnxruntime cpu"] = lambda: reference.run(out_names, feeds)
        runs["onnxruntime cpu"] = lambda: reference.run(out_names, feeds)
        info["onnxruntime cpu"] = ("CPUExecutionProvider", "model")
        for case in cases:
            names = [p if isinstance(p, str) else p[0] for p in case.providers]
            plugin = next((n for n in names if n.lower() not in ("cpu", "cpuexecutionprovider")), None)
            if plugin is None:
                continue
            from ..runtime.providers import PROVIDER_ALIASES

            ep_name = PROVIDER_ALIASES.get(plugin.lower(), plugin)
            label = f"onnxruntime {plugin} {case.precision}"
            try:
                sess = _ort_plugin_session(model, ep_name, case.precision, threads)
            except Exception as e:  # e.g. no device: fastort's case says why too
                print(f"({label} left out: {e})")
                continue
            methods[label] = functools.partial(sess.run, out_names, feeds)
            runs[label] = functools.partial(sess.run, out_names, feeds)
            info[label] = (", ".join(sess.get_providers()), case.precision)
    errors = {}
    for label, run in runs.items():
        got = run()
        errors[label] = max((float(np.max(np.abs(np.asarray(g, np.float64) - np.asarray(w, np.float64))))
                             for g, w in zip(got, want) if np.asarray(w).dtype.kind == "f" and np.asarray(w).size),
                            default=0.0)
    timings = compare(methods, seconds=seconds, rows_per_call=rows_per_call)
    for engine in engines:
        engine.close()
    return [EpResult(t.method, t, errors[t.method], *info[t.method]) for t in timings]


def format_eps(results: Sequence[EpResult], title: str, baseline: Optional[str] = "onnxruntime cpu") -> str:
    base = next((r.timing.median_us for r in results if r.case == baseline), None)
    lines = [title, f"{'method':34} {'median us':>10} {'p99 us':>10} {'rows/s':>10} {'vs ort cpu':>10} "
                    f"{'max|err|':>9}  runs on"]
    for r in results:
        ratio = f"{base / r.timing.median_us:.2f}x" if base else "-"
        lines.append(f"{r.case:34} {r.timing.median_us:10.1f} {r.timing.p99_us:10.1f} {r.timing.rows_per_s:10.0f} "
                     f"{ratio:>10} {r.max_abs_err:9.2e}  {r.providers} [{r.precision}]")
    return "\n".join(lines)
