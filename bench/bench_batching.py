"""Pool + dynamic batching under concurrent clients, side by side, one run.

    .venv/bin/python bench/bench_batching.py [--seconds 3] [--clients 1,4,16,64]

MLP 512->2048->2048->512 float32, dynamic batch dim. Closed-loop clients (Python
threads) each send batch-1 requests for a fixed time, against:
  - fastort: Engine(replicas=2, max_batch_size=32, max_delay_us=2000), engine.run
  - one onnxruntime InferenceSession shared by the threads (sess.run)
  - a hand-rolled Python queue batcher in front of one InferenceSession
plus the offline single-call throughput of InferenceSession at batch 1, 32 and
128, and the C++ program driving fastort's pool + batcher without Python.
Writes bench/out/batching.json and bench/batching.png (needs matplotlib).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, List

import numpy as np
import onnx
import onnxruntime as ort

import fastort
from fastort.benchmark import native_binary
from fastort.models import mlp_model

HERE = os.path.dirname(os.path.abspath(__file__))
DIM_IN = 512


def closed_loop(call: Callable[[np.ndarray], np.ndarray], clients: int, seconds: float) -> Dict[str, float]:
    """`clients` threads call `call` with their own batch-1 input until time is up."""
    stop = threading.Event()
    latencies: List[List[float]] = [[] for _ in range(clients)]
    errors: List[BaseException] = []

    def client(k: int) -> None:
        x = np.full((1, DIM_IN), 0.001 * (k + 1), np.float32)
        out = latencies[k]
        try:
            while not stop.is_set():
                t0 = time.perf_counter()
                y = call(x)
                out.append(time.perf_counter() - t0)
                assert y.shape == (1, 512)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    lat = np.sort(np.concatenate([np.asarray(x) for x in latencies])) * 1e6
    return {"samples_per_s": len(lat) / elapsed, "p50_us": float(np.percentile(lat, 50)),
            "p99_us": float(np.percentile(lat, 99))}


class PythonBatcher:
    """What people write by hand: a queue, a thread that concatenates up to
    max_batch requests (waiting at most max_delay for more), one sess.run, and
    results handed back through events."""

    def __init__(self, sess: ort.InferenceSession, max_batch: int = 32, max_delay: float = 0.002) -> None:
        self.sess, self.max_batch, self.max_delay = sess, max_batch, max_delay
        self.q: "queue.Queue" = queue.Queue()
        self.stop = False
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        slot = {"x": x, "event": threading.Event()}
        self.q.put(slot)
        slot["event"].wait()
        return slot["y"]

    def loop(self) -> None:
        while not self.stop:
            try:
                first = self.q.get(timeout=0.1)
            except queue.Empty:
                continue
            batch = [first]
            deadline = time.perf_counter() + self.max_delay
            while len(batch) < self.max_batch:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    batch.append(self.q.get(timeout=remaining))
                except queue.Empty:
                    break
            y = self.sess.run(["y"], {"x": np.concatenate([s["x"] for s in batch])})[0]
            for i, s in enumerate(batch):
                s["y"] = y[i : i + 1]
                s["event"].set()

    def close(self) -> None:
        self.stop = True
        self.thread.join()


def offline(sess: ort.InferenceSession, batch: int, seconds: float) -> float:
    x = np.random.default_rng(0).standard_normal((batch, DIM_IN)).astype(np.float32)
    sess.run(["y"], {"x": x})
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        sess.run(["y"], {"x": x})
        n += 1
    return n * batch / (time.perf_counter() - start)


def plot(results: dict, path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot; pip install matplotlib)")
        return False
    clients = results["clients"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, series in results["concurrent"].items():
        a.plot(clients, [p["samples_per_s"] for p in series], marker="o", label=name)
        b.plot(clients, [p["p99_us"] / 1000 for p in series], marker="o", label=name)
    for label, value in results["offline"].items():
        a.axhline(value, linestyle=":", linewidth=1, color="gray")
        a.annotate(f"offline {label}", (clients[0], value), fontsize=7, color="gray", va="bottom")
    for ax, title, ylabel in ((a, "throughput", "samples/s"), (b, "p99 latency", "ms")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(clients, [str(c) for c in clients])
        ax.set_xlabel("concurrent clients (batch-1 requests)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"MLP 512-2048-2048-512: {title}")
        ax.grid(alpha=0.3)
    b.set_yscale("log")
    a.legend(fontsize=8)
    fig.suptitle(f"fastort {fastort.__version__} vs onnxruntime {ort.__version__}, {os.cpu_count()} cores", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="time per point")
    parser.add_argument("--clients", default="1,4,16,64")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--intra-threads", type=int, default=1, help="intra-op threads per fastort replica")
    parser.add_argument("--max-delay-us", type=int, default=2000)
    parser.add_argument("--global-pool", action="store_true", help="replicas share onnxruntime's global thread pool")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    results: dict = {"clients": clients, "concurrent": {}, "offline": {}, "config": vars(args)}

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mlp.onnx")
        onnx.save(mlp_model((512, 2048, 2048, 512)), path)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])  # default threads: all cores
        for b in (1, 32, 128):
            results["offline"][f"batch {b}"] = offline(sess, b, args.seconds)
            print(f"offline InferenceSession.run, batch {b:>3}: {results['offline'][f'batch {b}']:>9,.0f} samples/s")

        if args.global_pool:
            fastort.configure_global_threads(intra_op_threads=os.cpu_count() or 1)
        engine = fastort.Engine(path, replicas=args.replicas, intra_op_threads=args.intra_threads,
                                use_global_thread_pool=args.global_pool,
                                max_batch_size=32, max_delay_us=args.max_delay_us, max_queue=4096)
        hand = PythonBatcher(sess)
        methods = {
            f"fastort (replicas={args.replicas}, batching 32)": lambda x: engine.run({"x": x})["y"],
            "shared InferenceSession": lambda x: sess.run(["y"], {"x": x})[0],
            "Python queue batcher": hand,
        }
        for name in methods:
            results["concurrent"][name] = []
        print(f"\n{'clients':>8} " + "".join(f"{name:>42}" for name in methods))
        for n in clients:
            cells = []
            for name, call in methods.items():
                point = closed_loop(call, n, args.seconds)
                results["concurrent"][name].append(point)
                cells.append(f"{point['samples_per_s']:>10,.0f}/s p50 {point['p50_us'] / 1e3:>6.2f} ms "
                             f"p99 {point['p99_us'] / 1e3:>6.2f} ms")
            print(f"{n:>8} " + "".join(f"{c:>42}" for c in cells))
        hand.close()
        mean_batch = engine.stats()["mean_batch_size"]
        engine.close()

        binary = native_binary("fastort_bench_batcher")
        if binary:
            proc = subprocess.run(
                [binary, path, "--lib", fastort.runtime_info()["library_path"], "--replicas", str(args.replicas),
                 "--max-batch", "32", "--max-delay-us", str(args.max_delay_us), "--clients", args.clients,
                 "--seconds", str(args.seconds), "--intra-threads", str(args.intra_threads)],
                capture_output=True, text=True, timeout=600)
            if proc.returncode == 0:
                native = [json.loads(line) for line in proc.stdout.splitlines()]
                results["concurrent"]["fastort C++ clients (no Python)"] = native
                print("\nC++ program, pool + batcher without Python:")
                for p in native:
                    print(f"{p['clients']:>8} {p['samples_per_s']:>10,.0f}/s p50 {p['p50_us'] / 1e3:>6.2f} ms "
                          f"p99 {p['p99_us'] / 1e3:>6.2f} ms  mean batch {p['mean_batch']:.1f}")
            else:
                print(f"(the C++ program failed: {proc.stderr.strip()})")

    top = clients.index(max(clients))
    ours = results["concurrent"][next(iter(methods))][top]["samples_per_s"]
    shared = results["concurrent"]["shared InferenceSession"][top]["samples_per_s"]
    b32 = results["offline"]["batch 32"]
    checks = [
        (f"{max(clients)} clients: fastort >= 0.8x offline batch-32 throughput: {ours / b32:.2f}x", ours >= 0.8 * b32),
        (f"{max(clients)} clients: fastort >= 3x the shared session: {ours / shared:.2f}x", ours >= 3 * shared),
    ]
    print(f"\nfastort mean batch size over the run: {mean_batch:.1f}\ntargets:")
    for text, ok in checks:
        print(f"   {'PASS' if ok else 'FAIL'}  {text}")
    results["targets"] = [{"check": c, "pass": ok} for c, ok in checks]
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    with open(os.path.join(HERE, "out", "batching.json"), "w") as f:
        json.dump(results, f, indent=2)
    if plot(results, os.path.join(HERE, "batching.png")):
        print("plot: bench/batching.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
