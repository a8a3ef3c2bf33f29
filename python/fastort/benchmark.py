"""Side-by-side benchmarks: fastort vs plain onnxruntime, in one process.

Used by ``fastort bench`` and by ``bench/bench_core.py``. Methods are timed in
alternating rounds after a warm-up, so that a noisy machine disturbs them all
alike; what counts is the ratio between methods of one run.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

__all__ = ["Timing", "compare", "native_binary", "run_native", "tiny_inputs", "random_inputs", "main"]


@dataclass
class Timing:
    """Per-call latency of one method, in microseconds."""

    method: str
    median_us: float
    p99_us: float
    mean_us: float
    calls: int
    rows_per_call: int = 1

    @property
    def calls_per_s(self) -> float:
        return 1e6 / self.median_us if self.median_us else 0.0

    @property
    def rows_per_s(self) -> float:
        return self.calls_per_s * self.rows_per_call


def _summary(method: str, samples: List[float], rows: int) -> Timing:
    arr = np.sort(np.asarray(samples))
    return Timing(method, float(np.median(arr)), float(arr[min(len(arr) - 1, int(len(arr) * 0.99))]),
                  float(arr.mean()), len(arr), rows)


def compare(methods: Mapping[str, Callable[[], Any]], *, seconds: float = 3.0, rounds: int = 10,
            warmup_s: float = 0.3, rows_per_call: int = 1) -> List[Timing]:
    """Times each callable per call, in ``rounds`` alternating rounds that share
    ``seconds`` between them. Returns one Timing per method, in order."""
    for fn in methods.values():  # warm-up, and a first estimate of the cost per call
        end = time.perf_counter() + warmup_s / max(1, len(methods))
        while time.perf_counter() < end:
            fn()
    samples: Dict[str, List[float]] = {name: [] for name in methods}
    budget = seconds / (rounds * max(1, len(methods)))
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for name, fn in methods.items():
            out = samples[name]
            end = clock() + int(budget * 1e9)
            while True:
                t0 = clock()
                fn()
                t1 = clock()
                out.append((t1 - t0) / 1e3)
                if t1 >= end:
                    break
    return [_summary(name, samples[name], rows_per_call) for name in methods]


def native_binary(name: str = "fastort_bench_native") -> Optional[str]:
    """The path of one of fastort's C++ benchmark programs, if it was built."""
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [os.path.join(here, "_bin", name)]
    for key in ("platlib", "purelib"):
        candidates.append(os.path.join(sysconfig.get_paths()[key], "fastort", "_bin", name))
    root = os.path.dirname(os.path.dirname(here))
    candidates += sorted(glob.glob(os.path.join(root, "build", "*", name)))
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def run_native(model_path: str, *, batch: int = 1, threads: int = 1, iters: int = 20000,
               binary: Optional[str] = None) -> List[Timing]:
    """Runs the C++ benchmark program on ``model_path``; [] when it is not built."""
    from ._runtime import runtime_info

    binary = binary or native_binary()
    if binary is None:
        return []
    cmd = [binary, model_path, "--lib", runtime_info()["library_path"], "--batch", str(batch),
           "--threads", str(threads), "--iters", str(iters), "--warmup", str(max(100, iters // 10))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{binary} failed: {proc.stderr.strip()}")
    timings = []
    for line in proc.stdout.splitlines():
        d = json.loads(line)
        timings.append(Timing("native: " + {"fastort_core": "fastort core (C++)",
                                            "iobinding_floor": "onnxruntime IoBinding (C++ floor)"}[d["method"]],
                              d["median_us"], d["p99_us"], d["mean_us"], d["iters"], batch))
    return timings


def tiny_inputs(batch: int = 1) -> Dict[str, np.ndarray]:
    return {"x": np.random.default_rng(0).standard_normal((batch, 4)).astype(np.float32)}


def random_inputs(specs: Sequence[Any], batch: int, dims: Mapping[str, int]) -> Dict[str, np.ndarray]:
    """Random inputs for ``engine.inputs``: named dims from ``dims``, the first
    free dim ``batch``, other free dims 1."""
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in specs:
        if spec.dtype is None or spec.shape is None:
            raise ValueError(f"input {spec.name!r} is a {spec.type}: fastort bench feeds tensors only")
        shape = []
        for i, d in enumerate(spec.shape):
            if isinstance(d, int):
                shape.append(d)
            elif isinstance(d, str) and d in dims:
                shape.append(dims[d])
            else:
                shape.append(batch if i == 0 else 1)
        dt = np.dtype(spec.dtype)
        if dt.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(dt)
        elif dt.kind in "iu":
            feeds[spec.name] = rng.integers(0, 2, size=shape).astype(dt)
        elif dt.kind == "b":
            feeds[spec.name] = rng.integers(0, 2, size=shape).astype(bool)
        elif dt == object:
            feeds[spec.name] = np.full(shape, "fastort", dtype=object)
        else:
            feeds[spec.name] = np.zeros(shape, dt)
    return feeds


def side_by_side(model_path: str, feeds: Mapping[str, np.ndarray], *, threads: int = 1, seconds: float = 4.0,
                 native: bool = True, rows_per_call: int = 1) -> List[Timing]:
    """fastort Engine.run vs InferenceSession.run vs run_with_iobinding (vs the
    C++ program) on one model, in one run."""
    import onnxruntime as ort

    from .engine import Engine

    engine = Engine(model_path, intra_op_threads=threads)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])
    feeds = dict(feeds)
    out_names = [o.name for o in sess.get_outputs()]
    binding = sess.io_binding()
    for name, value in feeds.items():
        binding.bind_cpu_input(name, value)
    for name in out_names:
        binding.bind_output(name, "cpu")
    sess.run_with_iobinding(binding)  # outputs allocated once, reused by later runs

    np.testing.assert_allclose(engine.run(feeds)[out_names[0]], sess.run(out_names, feeds)[0], rtol=1e-4, atol=1e-5)
    timings = compare(
        {
            "fastort Engine.run": lambda: engine.run(feeds),
            "onnxruntime InferenceSession.run": lambda: sess.run(out_names, feeds),
            "onnxruntime run_with_iobinding": lambda: sess.run_with_iobinding(binding),
        },
        seconds=seconds,
        rows_per_call=rows_per_call,
    )
    if native and len(feeds) == 1 and next(iter(feeds.values())).dtype == np.float32:
        timings += run_native(model_path, batch=rows_per_call, threads=threads)
    return timings


def format_table(timings: Sequence[Timing], title: str) -> str:
    by_name = {t.method: t for t in timings}
    base = by_name.get("onnxruntime InferenceSession.run")
    floor = by_name.get("native: onnxruntime IoBinding (C++ floor)")
    lines = [title, f"{'method':<40}{'median µs':>11}{'p99 µs':>10}{'calls/s':>11}{'rows/s':>11}"
                    f"{'vs session.run':>16}{'vs C++ floor':>14}"]
    for t in timings:
        speed = f"{base.median_us / t.median_us:.2f}x faster" if base else "-"
        fl = f"{t.median_us / floor.median_us:.2f}x" if floor else "-"
        lines.append(f"{t.method:<40}{t.median_us:>11.2f}{t.p99_us:>10.2f}{t.calls_per_s:>11,.0f}"
                     f"{t.rows_per_s:>11,.0f}{speed:>16}{fl:>14}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``fastort bench [MODEL]``: fastort vs plain onnxruntime, side by side."""
    parser = argparse.ArgumentParser(
        prog="fastort bench",
        description="Per-call latency and throughput of fastort vs plain onnxruntime on one model, side by side. "
                    "Without MODEL: the built-in tiny model (MatMul 4x3 + Relu) at batch 1, which measures the "
                    "overhead around onnxruntime.",
    )
    parser.add_argument("model", nargs="?", help="an .onnx file (default: the built-in tiny model)")
    parser.add_argument("--batch", type=int, default=1, help="rows per call for the first free dim (default 1)")
    parser.add_argument("--dim", action="append", default=[], metavar="NAME=N", help="size of a named dim")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument("--seconds", type=float, default=4.0, help="measuring time per run (default 4)")
    parser.add_argument("--no-native", action="store_true", help="skip the C++ benchmark program")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    dims = {}
    for item in args.dim:
        name, _, value = item.partition("=")
        if not value.isdigit():
            parser.error(f"--dim takes NAME=N, got {item!r}")
        dims[name] = int(value)

    from . import __version__
    from ._runtime import runtime_info
    from .engine import Engine

    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            from .models import tiny_model
            import onnx

            path = os.path.join(tmp, "tiny.onnx")
            onnx.save(tiny_model(), path)
            label = "built-in tiny model (MatMul 4x3 + Relu)"
        else:
            path, label = args.model, args.model
        with Engine(path) as probe:
            feeds = random_inputs(probe.inputs, args.batch, dims)
        timings = side_by_side(path, feeds, threads=args.threads, seconds=args.seconds,
                               native=not args.no_native, rows_per_call=args.batch)
    info = runtime_info()
    if args.json:
        print(json.dumps({"model": label, "batch": args.batch, "threads": args.threads,
                          "onnxruntime": info["version"], "timings": [asdict(t) for t in timings]}, indent=2))
        return 0
    title = (f"fastort {__version__} vs onnxruntime {info['version']}: {label}, batch {args.batch}, "
             f"{args.threads} intra-op thread(s), {os.cpu_count()} cores")
    print(format_table(timings, title))
    if not any(t.method.startswith("native") for t in timings) and not args.no_native:
        print("(the C++ benchmark program was not found: build with FASTORT_BUILD_BENCH=ON)", file=sys.stderr)
    return 0
