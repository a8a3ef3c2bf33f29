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
import platform
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

__all__ = ["Timing", "compare", "native_binary", "run_native", "side_by_side", "format_table", "tiny_inputs",
           "random_inputs", "main"]


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
    ``seconds`` between them (the order flips every round), after a warm-up of
    ``warmup_s`` in all. Returns one Timing per method, in the given order."""
    for fn in methods.values():  # warm-up, and a first estimate of the cost per call
        end = time.perf_counter() + warmup_s / max(1, len(methods))
        while time.perf_counter() < end:
            fn()
    samples: Dict[str, List[float]] = {name: [] for name in methods}
    budget = seconds / (rounds * max(1, len(methods)))
    clock = time.perf_counter_ns
    order = list(methods.items())
    for r in range(rounds):
        for name, fn in (order if r % 2 == 0 else order[::-1]):  # no method always first
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


NATIVE_LABELS = {
    "fastort_core": "native: fastort core (C++)",
    "fastort_core_into": "native: fastort core, into buffers (C++)",
    "iobinding_floor": "native: onnxruntime IoBinding (C++ floor)",
}
FLOOR = NATIVE_LABELS["iobinding_floor"]
BASELINE = "onnxruntime InferenceSession.run"


def native_binary(name: str = "fastort_bench_native") -> Optional[str]:
    """The path of one of fastort's C++ benchmark programs, if it was built.

    Looked for in the package's ``_bin/`` (a regular install), the ``_bin/`` of
    fastort in site-packages (where an editable install puts it), then the
    newest CMake build folder ``build/*/`` of a source checkout.
    ``$FASTORT_BENCH_BIN_DIR`` names a folder to look in first.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = []
    override = os.environ.get("FASTORT_BENCH_BIN_DIR")
    if override:
        candidates.append(os.path.join(override, name))
    candidates.append(os.path.join(here, "_bin", name))
    for key in ("platlib", "purelib"):
        candidates.append(os.path.join(sysconfig.get_paths()[key], "fastort", "_bin", name))
    root = os.path.dirname(os.path.dirname(here))  # the checkout, when fastort lives in python/fastort
    built = glob.glob(os.path.join(root, "build", "*", name)) + glob.glob(os.path.join(root, "build", name))
    candidates += sorted(built, key=os.path.getmtime, reverse=True)
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def run_native(model_path: str, *, shape: Optional[Sequence[int]] = None, batch: int = 1, threads: int = 1,
               iters: int = 20000, rounds: int = 10, binary: Optional[str] = None,
               timeout: float = 600.0) -> List[Timing]:
    """Runs the C++ benchmark program on ``model_path`` (one float32 input of
    ``shape``, else the model's with ``batch`` for the first free dim); [] when
    the program was not built. ``batch`` is also the rows per call reported."""
    from ._runtime import runtime_info

    binary = binary or native_binary()
    if binary is None:
        return []
    cmd = [binary, model_path, "--lib", runtime_info()["library_path"], "--threads", str(threads),
           "--iters", str(iters), "--warmup", str(max(100, iters // 10)), "--rounds", str(rounds)]
    cmd += ["--shape", ",".join(str(int(d)) for d in shape)] if shape is not None else ["--batch", str(batch)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{binary} failed: {proc.stderr.strip()}")
    timings = []
    for line in proc.stdout.splitlines():
        d = json.loads(line)
        if "method" not in d:
            continue
        label = NATIVE_LABELS.get(d["method"], "native: " + d["method"])
        timings.append(Timing(label, d["median_us"], d["p99_us"], d["mean_us"], d["iters"], batch))
    return timings


def tiny_inputs(batch: int = 1) -> Dict[str, np.ndarray]:
    """Seeded random inputs for :func:`fastort.models.tiny_model`: x float32[batch, 4]."""
    return {"x": np.random.default_rng(0).standard_normal((batch, 4)).astype(np.float32)}


def machine_info() -> Dict[str, Any]:
    """The machine and versions a benchmark ran on, for its JSON and tables."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gb = None
    try:
        with open("/proc/meminfo") as f:
            mem_gb = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    from . import __version__
    from ._runtime import runtime_info

    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem_gb, "python": platform.python_version(),
            "numpy": np.__version__, "onnxruntime": runtime_info()["version"], "fastort": __version__}


def random_inputs(specs: Sequence[Any], batch: int, dims: Optional[Mapping[str, int]] = None,
                  seed: int = 0) -> Dict[str, np.ndarray]:
    """Seeded random inputs for ``engine.inputs`` (or any specs with name, type,
    dtype and shape): standard normal floats, 0/1 ints and bools; named dims
    from ``dims``, the first free dim ``batch``, other free dims 1."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        if spec.dtype is None:
            raise ValueError(f"input {spec.name!r} is a {spec.type}: random inputs are for tensors only; "
                             "give inputs explicitly")
        shape = []
        for i, d in enumerate(spec.shape or ()):
            if isinstance(d, int) and d >= 0:
                shape.append(d)
            elif isinstance(d, str) and dims and d in dims:
                shape.append(int(dims[d]))
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
    C++ program) on one model, in one process, in alternating rounds.

    ``run_with_iobinding`` has its input bound once (bind_cpu_input) and its
    outputs bound once to CPU (bind_output), so later runs reuse the output
    buffers and nothing crosses into Python: the least Python-side work
    onnxruntime offers. Getting the results as numpy arrays costs more on top
    (``copy_outputs_to_cpu``, timed as its own method).
    """
    import onnxruntime as ort

    from .engine import Engine

    engine = Engine(model_path, intra_op_threads=threads)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])
    feeds = dict(feeds)
    out_names = [o.name for o in sess.get_outputs()]
    methods: Dict[str, Callable[[], Any]] = {
        "fastort Engine.run": lambda: engine.run(feeds),
        BASELINE: lambda: sess.run(out_names, feeds),
    }
    try:
        binding = sess.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)
        for name in out_names:
            binding.bind_output(name, "cpu")
        sess.run_with_iobinding(binding)  # outputs allocated once, reused by later runs
    except Exception as e:  # e.g. string, sequence or map values
        print(f"(onnxruntime's IoBinding does not take this model's values, left out: {e})", file=sys.stderr)
        binding = None
    else:

        def iobinding_to_numpy() -> Any:
            sess.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()

        methods["onnxruntime run_with_iobinding"] = lambda: sess.run_with_iobinding(binding)
        methods["onnxruntime iobinding + copy_outputs_to_cpu"] = iobinding_to_numpy

    ours, theirs = engine.run(feeds), sess.run(out_names, feeds)
    for name, value in zip(out_names, theirs):
        if isinstance(value, np.ndarray) and value.dtype.kind in "fc":
            np.testing.assert_allclose(ours[name], value, rtol=1e-4, atol=1e-5)

    timings = compare(methods, seconds=seconds, rows_per_call=rows_per_call)
    engine.close()
    del sess, binding
    if native and len(feeds) == 1 and next(iter(feeds.values())).dtype == np.float32:
        # About a third of the Python side's time, at the cost per call it measured.
        per_call_s = max(1e-7, min(t.median_us for t in timings) * 1e-6)
        iters = int(min(200_000, max(200, seconds / 3 / per_call_s)))
        shape = next(iter(feeds.values())).shape
        try:
            timings += run_native(model_path, shape=shape, batch=rows_per_call, threads=threads, iters=iters)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            print(f"(the C++ benchmark program failed, left out: {e})", file=sys.stderr)
    return timings


def format_table(timings: Sequence[Timing], title: str) -> str:
    """A readable table: per method the median and p99 µs per call, calls/s,
    samples/s (rows per call x calls/s) and the ratios to InferenceSession.run
    and to the C++ IoBinding floor."""
    by_name = {t.method: t for t in timings}
    base = by_name.get(BASELINE)
    floor = by_name.get(FLOOR)
    width = max([44] + [len(t.method) + 2 for t in timings])
    lines = [title, f"{'method':<{width}}{'median µs':>11}{'p99 µs':>10}{'calls/s':>11}{'samples/s':>12}"
                    f"{'vs session.run':>16}{'vs C++ floor':>14}"]
    for t in timings:
        speed = "-"
        if t is base:
            speed = "(baseline)"
        elif base and t.median_us:
            r = base.median_us / t.median_us
            speed = "same" if abs(r - 1) < 0.005 else f"{r:.2f}x faster" if r > 1 else f"{1 / r:.2f}x slower"
        fl = f"{t.median_us / floor.median_us:.2f}x" if floor and floor.median_us else "-"
        lines.append(f"{t.method:<{width}}{t.median_us:>11.2f}{t.p99_us:>10.2f}{t.calls_per_s:>11,.0f}"
                     f"{t.rows_per_s:>12,.0f}{speed:>16}{fl:>14}")
    return "\n".join(lines)


def _positive(kind: type, minimum: float) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
        return value

    return parse


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``fastort bench [MODEL] [--batch N] [--dim NAME=N] [--seconds S] [--threads N] [--json]``.

    ``argv`` is what follows ``bench`` on the command line. Returns the exit status.
    """
    parser = argparse.ArgumentParser(
        prog="fastort bench",
        description="Per-call latency and throughput of fastort vs plain onnxruntime on one model, side by side in "
                    "one process (alternating rounds), plus the C++ program on the same core when it was built. "
                    "Without MODEL: the built-in tiny model (MatMul 4x3 + Relu) at batch 1, which measures the "
                    "overhead around onnxruntime. With MODEL: random inputs from the model's inputs, free dims "
                    "taking --dim, else --batch for the first dim, else 1.",
    )
    parser.add_argument("model", nargs="?", help="an .onnx file (default: the built-in tiny model)")
    parser.add_argument("--batch", type=_positive(int, 1), default=1,
                        help="rows per call for the first free dim (default 1); samples/s = rows x calls/s")
    parser.add_argument("--dim", action="append", default=[], metavar="NAME=N", help="size of a named dim (repeatable)")
    parser.add_argument("--threads", type=_positive(int, 0), default=1,
                        help="intra-op threads, 0 for onnxruntime's default (default 1)")
    parser.add_argument("--seconds", type=_positive(float, 0.1), default=8.0,
                        help="time the Python-side methods are measured, in all (default 8); the C++ program "
                             "takes about a third more")
    parser.add_argument("--no-native", action="store_true", help="skip the C++ benchmark program")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--providers", default=None, metavar="EP,EP",
                        help="compare execution providers side by side instead (e.g. openvino,cpu; fastort.ep_bench)")
    parser.add_argument("--precision", default="f32", metavar="P,P",
                        help="with --providers: precisions of the non-CPU providers (f32,bf16,fp16,auto; default f32)")
    args = parser.parse_args(argv)
    dims = {}
    for item in args.dim:
        name, _, value = item.partition("=")
        if not name or not value.isdigit():
            parser.error(f"--dim takes NAME=N, got {item!r}")
        dims[name] = int(value)
    if args.model is not None:
        from .package import is_package, load_package

        if is_package(args.model):  # a model package: its model file, hashes checked
            args.model = load_package(args.model)[0]
        elif not os.path.isfile(args.model):
            parser.error(f"no such model file or package: {args.model}")

    from . import __version__
    from ._runtime import runtime_info
    from .engine import Engine

    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            import onnx

            from .models import tiny_model

            path = os.path.join(tmp, "tiny.onnx")
            onnx.save(tiny_model(), path)
            label = "built-in tiny model (MatMul 4x3 + Relu)"
        else:
            path, label = args.model, args.model
        with Engine(path) as probe:
            try:
                feeds = random_inputs(probe.inputs, args.batch, dims)
            except ValueError as e:
                print(f"fastort bench: {e}", file=sys.stderr)
                return 2
        if args.providers:
            from .ep_bench import compare_eps, ep_cases, format_eps

            cases = ep_cases(args.providers.split(","), args.precision.split(","))
            results = compare_eps(path, feeds, cases, threads=args.threads, seconds=args.seconds,
                                  rows_per_call=args.batch)
            if args.json:
                print(json.dumps([dict(asdict(r.timing), case=r.case, max_abs_err=r.max_abs_err,
                                       runs_on=r.providers, precision=r.precision) for r in results], indent=2))
            else:
                print(format_eps(results, f"{label}: batch {args.batch}, {args.threads or 'default'} thread(s)"))
            return 0
        timings = side_by_side(path, feeds, threads=args.threads, seconds=args.seconds,
                               native=not args.no_native, rows_per_call=args.batch)
    info = runtime_info()
    by_name = {t.method: t for t in timings}
    if args.json:
        base, floor = by_name.get(BASELINE), by_name.get(FLOOR)
        rows = []
        for t in timings:
            row = asdict(t)
            row.update(calls_per_s=t.calls_per_s, samples_per_s=t.rows_per_s,
                       speedup_vs_session_run=base.median_us / t.median_us if base else None,
                       ratio_to_native_floor=t.median_us / floor.median_us if floor else None)
            rows.append(row)
        print(json.dumps({"model": label, "batch": args.batch, "threads": args.threads,
                          "inputs": {k: list(v.shape) for k, v in feeds.items()}, "fastort": __version__,
                          "onnxruntime": info["version"], "cores": os.cpu_count(), "timings": rows}, indent=2))
        return 0
    shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in feeds.items())
    title = (f"fastort {__version__} vs onnxruntime {info['version']}: {label}; inputs {shapes}; "
             f"{args.threads or 'default'} intra-op thread(s); {os.cpu_count()} cores")
    print(format_table(timings, title))
    if not args.no_native and not any(t.method.startswith("native") for t in timings):
        if native_binary() is None:
            print("(the C++ benchmark program was not found: build with FASTORT_BUILD_BENCH=ON)", file=sys.stderr)
        else:
            print("(the C++ benchmark program takes models with one float32 input only)", file=sys.stderr)
    return 0
