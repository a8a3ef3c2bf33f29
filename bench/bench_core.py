"""The native-core benchmark: fastort vs plain onnxruntime, side by side, one run.

    .venv/bin/python bench/bench_core.py [--seconds 6] [--large-mb 256]

1. Tiny model (MatMul 4x3 + Relu, batch 1, 1 intra-op thread): fastort Engine.run
   vs InferenceSession.run vs run_with_iobinding vs the C++ program on the same
   core (fastort's core path, and onnxruntime's C++ API with a pre-bound
   IoBinding: the native floor).
2. Large tensors (Relu over 256 MB in, 256 MB out): time per call, and the peak
   memory of each method measured in a fresh process, to show no extra copy.

Writes bench/out/core.json and prints the tables and the targets' PASS/FAIL.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import asdict

import numpy as np
import onnx

import fastort
from fastort.benchmark import Timing, compare, format_table, side_by_side, tiny_inputs
from fastort.models import relu_model, tiny_model

HERE = os.path.dirname(os.path.abspath(__file__))

PEAK_SCRIPT = r"""
import sys, numpy as np
method, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
if method == "fastort":
    import fastort
    engine = fastort.Engine(path, intra_op_threads=2)
    call = lambda: engine.run({"x": x})["y"]
else:
    import onnxruntime as ort
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    if method == "session.run":
        call = lambda: sess.run(["y"], {"x": x})[0]
    else:
        binding = sess.io_binding()
        binding.bind_cpu_input("x", x)
        binding.bind_output("y", "cpu")
        def call():
            sess.run_with_iobinding(binding)
            return binding.get_outputs()[0]
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")           # reset the peak (VmHWM) to the current RSS: input and session exist
base = status("VmRSS")
for _ in range(4):
    y = call()
    del y
print(status("VmHWM") - base)
"""


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = fastort.runtime_info()
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "onnxruntime": info["version"], "fastort": fastort.__version__}


def tiny(seconds: float, tmp: str) -> list:
    path = os.path.join(tmp, "tiny.onnx")
    onnx.save(tiny_model(), path)
    return side_by_side(path, tiny_inputs(1), threads=1, seconds=seconds)


def large(n: int, tmp: str) -> tuple:
    import onnxruntime as ort

    path = os.path.join(tmp, "relu.onnx")
    onnx.save(relu_model(), path)
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    engine = fastort.Engine(path, intra_op_threads=2)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    binding = sess.io_binding()
    binding.bind_cpu_input("x", x)
    binding.bind_output("y", "cpu")
    np.testing.assert_array_equal(engine.run({"x": x})["y"], sess.run(["y"], {"x": x})[0])
    timings = compare(
        {
            "fastort Engine.run": lambda: engine.run({"x": x}),
            "onnxruntime InferenceSession.run": lambda: sess.run(["y"], {"x": x}),
            "onnxruntime run_with_iobinding": lambda: sess.run_with_iobinding(binding),
        },
        seconds=12.0, rounds=6, warmup_s=1.0,
    )
    del engine, sess, binding
    peaks = {}
    for method in ("fastort", "session.run", "iobinding"):
        proc = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, method, path, str(n)],
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr)
        peaks[method] = int(proc.stdout.strip())
    return timings, peaks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0, help="measuring time for the tiny model")
    parser.add_argument("--large-mb", type=int, default=256, help="input (and output) size of the large test")
    args = parser.parse_args()
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores; onnxruntime {info['onnxruntime']}; "
          f"fastort {info['fastort']}; python {info['python']}\n")
    with tempfile.TemporaryDirectory() as tmp:
        small = tiny(args.seconds, tmp)
        print(format_table(small, "1. tiny model (MatMul 4x3 + Relu), batch 1, 1 intra-op thread"))
        by = {t.method: t for t in small}
        ours = by["fastort Engine.run"]
        session = by["onnxruntime InferenceSession.run"]
        floor = by.get("native: onnxruntime IoBinding (C++ floor)")
        checks = [(f"fastort run >= 3x faster than InferenceSession.run: {session.median_us / ours.median_us:.2f}x",
                   session.median_us / ours.median_us >= 3.0)]
        if floor:
            checks.append((f"fastort run <= 1.6x the native floor: {ours.median_us / floor.median_us:.2f}x",
                           ours.median_us / floor.median_us <= 1.6))
        n = args.large_mb * 1024 * 1024 // 4
        big, peaks = large(n, tmp)
    print()
    print(format_table(big, f"2. large tensors: Relu on {args.large_mb} MB in, {args.large_mb} MB out (2 threads)"))
    best_ort = min(t.median_us for t in big if t.method.startswith("onnxruntime"))
    ours_big = next(t for t in big if t.method == "fastort Engine.run")
    checks.append((f"large: fastort within 10% of the best onnxruntime path: {ours_big.median_us / best_ort:.3f}x",
                   ours_big.median_us <= 1.10 * best_ort))
    mb = 1024 * 1024
    print("   peak memory above input + session over 4 calls (one output alive at a time: ~1 output is the "
          f"minimum, {args.large_mb} MB; a copy would add {args.large_mb} MB more):")
    for method, peak in peaks.items():
        print(f"   {method:<14}{peak / mb:>8.0f} MB")
    checks.append((f"large: fastort peak {peaks['fastort'] / mb:.0f} MB, no extra copy (< 1.5x the output)",
                   peaks["fastort"] < 1.5 * args.large_mb * mb))
    print("\ntargets:")
    for text, ok in checks:
        print(f"   {'PASS' if ok else 'FAIL'}  {text}")
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    with open(os.path.join(HERE, "out", "core.json"), "w") as f:
        json.dump({"machine": info, "tiny": [asdict(t) for t in small], "large": [asdict(t) for t in big],
                   "large_peak_bytes": peaks, "targets": [{"check": c, "pass": ok} for c, ok in checks]}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
