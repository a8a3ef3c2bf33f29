"""Memory of replicas: RSS with 1, 2 and 4 replicas of a model with over 100 MB of
float32 weights, with and without weight sharing, each in a fresh process.

    .venv/bin/python bench/bench_replica_memory.py

Target: 4 replicas <= 1.3x the RSS of 1 replica.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import onnx

from fastort.bench.models import mlp_model

CHILD = r"""
import sys, time, numpy as np
import fastort
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
path, replicas, share = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
base = rss()
engine = fastort.Engine(path, replicas=replicas, share_weights=share, intra_op_threads=1)
x = np.ones((32, 1024), np.float32)
for _ in range(3):
    engine.run({"x": x})
start = time.perf_counter()
for _ in range(20):
    engine.run({"x": x})
print(rss() - base, (time.perf_counter() - start) / 20 * 1e3)
"""


def main() -> int:
    mb = 1024 * 1024
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mlp.onnx")
        onnx.save(mlp_model((1024, 4096, 4096, 1536)), path)
        weights = os.path.getsize(path)
        print(f"model: MLP 1024-4096-4096-1536, {weights / mb:.0f} MB of float32 weights\n")
        print(f"{'replicas':>9}{'sharing':>9}{'RSS added':>12}{'vs 1 replica':>14}{'batch-32 ms':>13}")
        rows = {}
        for replicas, share in ((1, True), (2, True), (4, True), (4, False)):
            proc = subprocess.run([sys.executable, "-c", CHILD, path, str(replicas), "1" if share else "0"],
                                  capture_output=True, text=True, timeout=600)
            if proc.returncode != 0:
                print(proc.stderr)
                return 1
            added, ms = proc.stdout.split()
            rows[(replicas, share)] = int(added)
            ratio = int(added) / rows[(1, True)]
            print(f"{replicas:>9}{'yes' if share else 'no':>9}{int(added) / mb:>10.0f} MB{ratio:>13.2f}x"
                  f"{float(ms):>13.2f}")
    ratio = rows[(4, True)] / rows[(1, True)]
    print(f"\n{'PASS' if ratio <= 1.3 else 'FAIL'}  4 replicas <= 1.3x the RSS of 1 replica: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
