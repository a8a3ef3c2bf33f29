"""Leak check: resident memory stays flat over many calls, requests and engines.

    .venv/bin/python bench/leaks.py [--scale 1.0] [--tolerance-mb 5]

Three phases, each after a warm-up (which lets onnxruntime's arenas, numpy's
caches and the allocator reach their steady state):
  run      200,000 Engine.run calls (good ones, out= buffers, output subsets,
           and refused ones: wrong dtype, wrong rank, unknown names);
  batched  20,000 requests through the dynamic batcher with 2 replicas, one in
           ten failing inside onnxruntime, some timing out, some cancelled;
  engines  200 create/run/close cycles of an Engine with 2 replicas and batching.
RSS is read from /proc/self/statm after gc.collect() and malloc_trim(0) (freed
heap handed back to the system: allocator caching is not a leak). Prints the
figures per phase and a final PASS or FAIL line (exit status 0 or 1): FAIL
when any phase grows by more than --tolerance-mb after its warm-up.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ctypes
import gc
import os
import sys
import time
from typing import Callable, List, Optional

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import fastort  # noqa: E402
import models  # noqa: E402

_libc: Optional[ctypes.CDLL]
try:
    _libc = ctypes.CDLL("libc.so.6")
except OSError:  # pragma: no cover - not glibc
    _libc = None


def rss_mb() -> float:
    gc.collect()
    if _libc is not None:
        _libc.malloc_trim(0)
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def phase(name: str, warmup: int, total: int, step: Callable[[int], None], tolerance: float) -> bool:
    t0 = time.perf_counter()
    for i in range(warmup):
        step(i)
    base = rss_mb()
    samples: List[float] = []
    chunk = max(1, total // 10)
    for i in range(total):
        step(warmup + i)
        if (i + 1) % chunk == 0:
            samples.append(rss_mb())
    growth = samples[-1] - base
    ok = growth <= tolerance
    print(f"{name:8s} {total:>7d} iterations in {time.perf_counter() - t0:6.1f} s: RSS after warm-up "
          f"{base:7.1f} MB, end {samples[-1]:7.1f} MB, growth {growth:+6.2f} MB "
          f"(samples: {' '.join(f'{s:.1f}' for s in samples)}) -> {'ok' if ok else 'LEAK?'}", flush=True)
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every count (e.g. 0.1 for a quick look)")
    ap.add_argument("--tolerance-mb", type=float, default=5.0)
    args = ap.parse_args()
    n = lambda k: max(10, int(k * args.scale))  # noqa: E731
    tol = args.tolerance_mb
    results = []

    # -- run: 200,000 calls on one engine --------------------------------------
    engine = fastort.Engine(models.tiny(), intra_op_threads=1)
    x = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    out = {"y": np.empty((8, 3), np.float32)}
    bad = [{"x": x.astype(np.float64)}, {"x": x[0]}, {"nope": x}, {"x": "text"}]

    def run_step(i: int) -> None:
        k = i % 10
        if k < 6:
            engine.run({"x": x})
        elif k == 6:
            engine.run({"x": x}, out=out)
        elif k == 7:
            engine.run([x[: 1 + i % 8]], outputs=["y"])
        else:
            try:
                engine.run(bad[i % len(bad)])
            except fastort.InvalidInputError:
                pass

    results.append(phase("run", n(20_000), n(200_000), run_step, tol))
    engine.close()

    # -- batched: 20,000 requests, some failing ----------------------------------
    batched = fastort.Engine(models.gather(), replicas=2, intra_op_threads=1, max_batch_size=16,
                             max_delay_us=200, log_level="fatal")
    window = 256

    def batched_step(i: int) -> None:
        if i % window:
            return
        futures = []
        for j in range(window):
            r = i + j
            idx = np.array([7 if r % 10 == 3 else r % 3], np.int64)  # one in ten fails inside onnxruntime
            timeout = 1e-6 if r % 50 == 7 else None
            futures.append(batched.submit({"idx": idx}, timeout=timeout))
            if r % 40 == 11:
                futures[-1].cancel()
        for f in futures:
            if f.cancelled():
                continue
            try:
                f.result(timeout=60)
            except fastort.FastortError:
                pass
            except concurrent.futures.CancelledError:
                pass

    results.append(phase("batched", n(2_048), n(20_480), batched_step, tol))
    stats = batched.stats()
    print(f"         batcher stats: requests {stats['requests']}, failed {stats['failed']}, "
          f"timed out {stats['timed_out']}, cancelled {stats['cancelled']}", flush=True)
    batched.close()

    # -- engines: 200 create/close cycles with replicas -----------------------
    proto = models.mlp((64, 128, 16)).SerializeToString()
    xin = np.ones((4, 64), np.float32)

    def engine_step(i: int) -> None:
        e = fastort.Engine(proto, replicas=2, intra_op_threads=1, max_batch_size=8)
        e.run({"x": xin})
        f = e.submit({"x": xin})
        f.result(timeout=60)
        e.close()

    results.append(phase("engines", n(20), n(200), engine_step, tol))

    ok = all(results)
    print(f"{'PASS' if ok else 'FAIL'}: RSS growth after warm-up within {tol} MB in "
          f"{sum(results)}/{len(results)} phases", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
