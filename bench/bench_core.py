"""The native-core benchmark: fastort vs plain onnxruntime, side by side, one run.

    .venv/bin/python bench/bench_core.py [--seconds 8] [--large-mb 256] [--large-seconds 12]

1. Tiny model (MatMul 4x3 + Relu, batch 1, 1 intra-op thread): fastort Engine.run
   vs InferenceSession.run vs run_with_iobinding (input and output bound once)
   vs the C++ program on the same core (fastort's core path, and onnxruntime's
   C++ API with a pre-bound IoBinding: the native floor). Python-side methods
   run in alternating rounds in one process; the C++ methods in alternating
   rounds in another.
2. Large tensors (Relu over 256 MB in, 256 MB out, float32, 2 intra-op threads):
   time per call side by side, and the peak memory of each method, each in a
   fresh process, to show that fastort makes no extra copy.

Prints the tables and the targets' PASS/FAIL, and writes bench/out/core.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict
from typing import Dict, List, Tuple

import numpy as np
import onnx

import fastort
from fastort.bench import (BASELINE, FLOOR, Timing, compare, format_table, machine_info, side_by_side,
                           tiny_inputs)
from fastort.bench.sidebyside import BOUND, COPIED, QUEUED
from fastort.bench.models import relu_model, tiny_model

HERE = os.path.dirname(os.path.abspath(__file__))
MB = 1024 * 1024

# Peak memory of one method, in a fresh process. Prints JSON: the bytes the
# input takes (`input`), and the peak resident set above the state before the
# calls, input and session in place (`calls`): what the calls themselves add.
# The peak is reset with /proc/self/clear_refs ("5": VmHWM := VmRSS) where the
# kernel allows it; else VmHWM counts from process start and `calls` is taken
# against the highest RSS seen before the calls (reported as `reset: false`).
PEAK_SCRIPT = r"""
import json, sys
import numpy as np
method, path, n, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024

rng = np.random.default_rng(0)
before_input = status("VmRSS")
x = rng.standard_normal(n, dtype=np.float32)
input_bytes = status("VmRSS") - before_input
if method.startswith("fastort"):
    import fastort
    engine = fastort.Engine(path, intra_op_threads=threads)
    if method == "fastort out=":
        out = np.empty(n, np.float32)
        out.fill(0.0)  # resident before the calls (np.zeros would map untouched pages)
        call = lambda: engine.run({"x": x}, out={"y": out})["y"]
    else:
        call = lambda: engine.run({"x": x})["y"]
else:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    if method == "session.run":
        call = lambda: sess.run(["y"], {"x": x})[0]
    else:
        binding = sess.io_binding()
        binding.bind_cpu_input("x", x)
        binding.bind_output("y", "cpu")
        def call():
            sess.run_with_iobinding(binding)
            return binding.get_outputs()[0].numpy()  # zero copy: a view of the bound output
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    reset = True
except OSError:
    reset = False
base = status("VmRSS") if reset else status("VmHWM")
for _ in range(4):
    y = call()
    assert y.shape == (n,)
    del y
print(json.dumps({"input": input_bytes, "calls": status("VmHWM") - base, "reset": reset}))
"""


def tiny(seconds: float, tmp: str) -> List[Timing]:
    path = os.path.join(tmp, "tiny.onnx")
    onnx.save(tiny_model(), path)
    return side_by_side(path, tiny_inputs(1), threads=1, seconds=seconds)


def large(n: int, seconds: float, tmp: str, threads: int = 2) -> Tuple[List[Timing], Dict[str, dict]]:
    import onnxruntime as ort

    path = os.path.join(tmp, "relu.onnx")
    onnx.save(relu_model(), path)
    x = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
    out = np.zeros(n, np.float32)
    engine = fastort.Engine(path, intra_op_threads=threads)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    binding = sess.io_binding()
    binding.bind_cpu_input("x", x)
    binding.bind_output("y", "cpu")
    np.testing.assert_array_equal(engine.run({"x": x})["y"], sess.run(["y"], {"x": x})[0])
    timings = compare(
        {
            "fastort Engine.run": lambda: engine.run({"x": x}),
            "fastort Engine.run(out=preallocated)": lambda: engine.run({"x": x}, out={"y": out}),
            BASELINE: lambda: sess.run(["y"], {"x": x}),
            "onnxruntime run_with_iobinding": lambda: sess.run_with_iobinding(binding),
        },
        seconds=seconds, rounds=6, warmup_s=1.0,
    )
    np.testing.assert_array_equal(out, np.maximum(x, 0))
    engine.close()
    del engine, sess, binding, x, out
    peaks = {}
    for method in ("fastort", "fastort out=", "session.run", "iobinding"):
        proc = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, method, path, str(n), str(threads)],
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"peak-memory run of {method} failed:\n{proc.stderr}")
        peaks[method] = json.loads(proc.stdout.strip().splitlines()[-1])
    return timings, peaks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="measuring time of the tiny model's Python side")
    parser.add_argument("--large-mb", type=int, default=256, help="input (and output) size of the large test, MB")
    parser.add_argument("--large-seconds", type=float, default=12.0, help="measuring time of the large test")
    args = parser.parse_args()
    info = machine_info()
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB; onnxruntime {info['onnxruntime']}; "
          f"fastort {info['fastort']}; python {info['python']}; numpy {info['numpy']}\n")
    checks = []
    with tempfile.TemporaryDirectory() as tmp:
        small = tiny(args.seconds, tmp)
        print(format_table(small, "1. tiny model (MatMul 4x3 + Relu), batch 1, 1 intra-op thread"))
        by = {t.method: t for t in small}
        # issue #11's targets
        ours, session, floor = by["fastort Engine.run"], by[BASELINE], by.get(FLOOR)
        bound, queued = by.get(BOUND), by.get(QUEUED)
        copied = by.get(COPIED)
        speedup = session.median_us / ours.median_us
        checks.append((f"tiny: Engine.run >= 1.5x faster than InferenceSession.run: {speedup:.2f}x", speedup >= 1.5))
        if copied:
            checks.append((f"tiny: Engine.run no slower than IoBinding with its outputs copied out: "
                           f"{ours.median_us / copied.median_us:.2f}x its time", ours.median_us <= copied.median_us))
        if bound:
            b = session.median_us / bound.median_us
            checks.append((f"tiny: bound call >= 2x faster than InferenceSession.run: {b:.2f}x", b >= 2.0))
            if floor:
                r = bound.median_us / floor.median_us
                checks.append((f"tiny: bound call <= 1.6x the native floor (C++ IoBinding): {r:.2f}x", r <= 1.6))
            else:
                print("   (the C++ program was not found: the native-floor target is not checked)")
        if queued:
            q = queued.median_us / ours.median_us
            checks.append((f"tiny: a lone queued request <= 1.2x the unbatched run: {q:.2f}x", q <= 1.2))
        n = args.large_mb * MB // 4
        big, peaks = large(n, args.large_seconds, tmp)
    print()
    print(format_table(big, f"2. large tensors: Relu on {args.large_mb} MB in, {args.large_mb} MB out, "
                            "float32, 2 intra-op threads"))
    best_ort = min((t for t in big if t.method.startswith("onnxruntime")), key=lambda t: t.median_us)
    ours_big = next(t for t in big if t.method == "fastort Engine.run")
    checks.append((f"large: fastort run within 10% of the best onnxruntime path ({best_ort.method}): "
                   f"{ours_big.median_us / best_ort.median_us:.3f}x", ours_big.median_us <= 1.10 * best_ort.median_us))
    reset = all(p["reset"] for p in peaks.values())
    how = "peak reset via /proc/self/clear_refs" if reset else "no clear_refs: peak since process start"
    print(f"\n   peak memory, each method in a fresh process over 4 calls ({how});\n"
          f"   input {args.large_mb} MB; one output alive at a time, so the least a call can add is one output "
          f"({args.large_mb} MB) unless it writes into a buffer that exists before; a copy of the input or output "
          f"would add {args.large_mb} MB more:")
    print(f"   {'method':<16}{'input MB':>10}{'calls add MB':>14}{'input+calls MB':>16}")
    for method, p in peaks.items():
        print(f"   {method:<16}{p['input'] / MB:>10.0f}{p['calls'] / MB:>14.0f}{(p['input'] + p['calls']) / MB:>16.0f}")
    fp = peaks["fastort"]
    checks.append((f"large: fastort peak = input + {fp['calls'] / MB:.0f} MB (one output is {args.large_mb} MB): "
                   "no extra copy (< 1.25x input+output)",
                   fp["input"] + fp["calls"] < 1.25 * 2 * args.large_mb * MB))
    checks.append((f"large: fastort out= adds {peaks['fastort out=']['calls'] / MB:.0f} MB (< 10% of the output)",
                   peaks["fastort out="]["calls"] < 0.1 * args.large_mb * MB))
    print("\ntargets:")
    for text, ok in checks:
        print(f"   {'PASS' if ok else 'FAIL'}  {text}")
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    out_path = os.path.join(HERE, "out", "core.json")
    with open(out_path, "w") as f:
        json.dump({"machine": info, "tiny": [asdict(t) for t in small], "large_mb": args.large_mb,
                   "large": [asdict(t) for t in big], "large_peak_bytes": peaks,
                   "targets": [{"check": c, "pass": ok} for c, ok in checks]}, f, indent=2)
    print(f"\nwrote {os.path.relpath(out_path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
