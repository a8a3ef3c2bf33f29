"""Throughput and latency under concurrent clients: a sweep over client
counts (``fastort bench --clients 1,4,16,64``), fastort's Engine against one
onnxruntime InferenceSession shared by the same threads (the plain
alternative), side by side at each level."""

from __future__ import annotations

import csv
import io
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

__all__ = ["ConcurrencyPoint", "sweep", "to_csv", "plot"]


@dataclass
class ConcurrencyPoint:
    """One method at one client count: requests/s, rows/s and per-request latency (µs)."""

    method: str
    clients: int
    requests: int
    seconds: float
    requests_per_s: float
    rows_per_s: float
    p50_us: float
    p99_us: float
    errors: int = 0


def _drive(call: Callable[[], Any], clients: int, seconds: float, rows: int, method: str) -> ConcurrencyPoint:
    """``clients`` threads call ``call`` in a loop for ``seconds``; every latency is kept."""
    latencies: List[List[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    start = threading.Barrier(clients + 1)
    stop = threading.Event()

    def client(i: int) -> None:
        start.wait()
        clock = time.perf_counter_ns
        mine = latencies[i]
        while not stop.is_set():
            t0 = clock()
            try:
                call()
            except Exception:  # counted, not raised: one failing request must not end the sweep
                errors[i] += 1
            mine.append((clock() - t0) / 1e3)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    try:
        time.sleep(seconds)
    finally:  # Ctrl-C included: the clients stop before the engine closes
        stop.set()
        for t in threads:
            t.join()
    elapsed = time.perf_counter() - t0
    flat = np.concatenate([np.asarray(x) for x in latencies]) if any(latencies) else np.zeros(1)
    n = sum(len(x) for x in latencies)
    return ConcurrencyPoint(method, clients, n, elapsed, n / elapsed, n * rows / elapsed,
                            float(np.percentile(flat, 50)), float(np.percentile(flat, 99)), sum(errors))


def sweep(model_path: str, feeds: Mapping[str, np.ndarray], clients: Sequence[int], *, seconds: float = 2.0,
          threads: int = 1, max_batch_size: int = 0, replicas: int = 1, rows: int = 1,
          baseline: bool = True) -> List[ConcurrencyPoint]:
    """At each client count: fastort's Engine (``max_batch_size`` > 0: its
    batcher) and, with ``baseline``, one shared InferenceSession, each driven
    for ``seconds`` after a short warm-up."""
    from ..engine import Engine

    engine_kwargs: Dict[str, Any] = {"intra_op_threads": threads, "replicas": replicas}
    if max_batch_size:
        engine_kwargs["max_batch_size"] = max_batch_size
    label = f"fastort Engine (replicas={replicas}" + (f", max_batch_size={max_batch_size})" if max_batch_size
                                                        else ", unbatched)")
    points: List[ConcurrencyPoint] = []
    session: Optional[Any] = None
    if baseline:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    feed = dict(feeds)
    with Engine(model_path, **engine_kwargs) as engine:
        methods: Dict[str, Callable[[], Any]] = {label: lambda: engine.run(feed)}
        if session is not None:
            sess = session
            methods["InferenceSession.run (shared)"] = lambda: sess.run(None, feed)
        for fn in methods.values():  # warm-up
            fn()
        for n in clients:
            for name, fn in methods.items():
                points.append(_drive(fn, n, seconds, rows, name))
    return points


def to_csv(points: Sequence[ConcurrencyPoint]) -> str:
    """The points as CSV text (one row each, a header first)."""
    out = io.StringIO()
    fields = list(asdict(points[0])) if points else [f for f in ConcurrencyPoint.__dataclass_fields__]
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    for p in points:
        writer.writerow(asdict(p))
    return out.getvalue()


def plot(points: Sequence[ConcurrencyPoint], path: str, title: str = "") -> None:
    """Requests/s and p99 latency against clients, one line per method, as a
    PNG. Needs matplotlib (raises ImportError, naming it, when missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("the plot needs matplotlib: pip install matplotlib") from e
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for method in dict.fromkeys(p.method for p in points):
        mine = [p for p in points if p.method == method]
        left.plot([p.clients for p in mine], [p.rows_per_s for p in mine], marker="o", label=method)
        right.plot([p.clients for p in mine], [p.p99_us / 1e3 for p in mine], marker="o", label=method)
    for ax, ylabel in ((left, "rows/s"), (right, "p99 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    left.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
