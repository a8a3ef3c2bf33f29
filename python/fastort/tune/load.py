"""Measuring a configuration the way load-testing tools do: a warm-up that is
not counted, then closed-loop clients (threads; fastort and onnxruntime both
release the GIL while they run) or open-loop Poisson arrivals, timed in
repeated windows until throughput and p99 agree within the stability bound,
or the window budget ends (then the result says it is unstable).

Open-loop latency counts from each request's scheduled arrival, not from when
it was sent, so a slow system is not flattered (no coordinated omission).
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Protocol, Sequence, Tuple

import numpy as np

from .config import Budget, Load
from .inputs import InputSet

#: Open loop: most requests outstanding before the run is declared overloaded.
MAX_OUTSTANDING = 4096


class Target(Protocol):
    """What is measured: :class:`fastort.Engine` or :class:`OrtTarget`."""

    def run(self, inputs: Any) -> Any: ...

    def submit(self, inputs: Any) -> "concurrent.futures.Future[Any]": ...

    def close(self) -> None: ...


class OrtTarget:
    """One plain ``onnxruntime.InferenceSession`` shared by every client: the
    baseline (``submit`` goes through a thread pool, for open-loop runs)."""

    def __init__(self, model_path: str, intra_op_threads: int = 0, spinning: Optional[bool] = None,
                 workers: int = 32) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        if intra_op_threads:
            so.intra_op_num_threads = intra_op_threads
        if spinning is not None:
            so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self.session = ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])
        self._names = [o.name for o in self.session.get_outputs()]
        self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._workers = workers
        self.label = "onnxruntime InferenceSession" + (f", intra {intra_op_threads}" if intra_op_threads else "") + (
            "" if spinning is None else f", spinning {'on' if spinning else 'off'}")

    def run(self, inputs: Any) -> Any:
        return self.session.run(self._names, inputs)

    def submit(self, inputs: Any) -> "concurrent.futures.Future[Any]":
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(self._workers)
        return self._pool.submit(self.run, inputs)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


@dataclass
class Measurement:
    """One configuration under load: requests/s, rows/s, latency (ms)."""

    throughput: float
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    windows: int
    stable: bool
    requests: int
    spread: Dict[str, float] = field(default_factory=dict)
    dropped: int = 0
    error: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return {"throughput": self.throughput, "rows_per_s": self.rows_per_s, "p50_ms": self.p50_ms,
                "p99_ms": self.p99_ms, "windows": self.windows, "stable": self.stable, "requests": self.requests,
                "spread": self.spread, "dropped": self.dropped, "error": self.error}


class _Recorder:
    """Completion times and latencies, appended by many threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done: List[float] = []
        self.latency: List[float] = []
        self.errors: List[str] = []
        self.dropped = 0

    def add(self, t_done: float, latency: float) -> None:
        with self.lock:
            self.done.append(t_done)
            self.latency.append(latency)

    def window(self, start: float, end: float) -> Tuple[int, np.ndarray]:
        with self.lock:
            done = np.fromiter(self.done, float, len(self.done))
            lat = np.fromiter(self.latency, float, len(self.latency))
        mask = (done >= start) & (done < end)
        return int(mask.sum()), lat[mask]


def _closed_loop(target: Target, inputs: InputSet, clients: int, rec: _Recorder, stop: threading.Event) -> List[threading.Thread]:
    requests = inputs.requests

    def client(k: int) -> None:
        i = k
        try:
            while not stop.is_set():
                feeds = requests[i % len(requests)]
                i += 1
                t0 = time.perf_counter()
                target.run(feeds)
                t1 = time.perf_counter()
                rec.add(t1, t1 - t0)
        except Exception as e:  # noqa: BLE001 - reported as the candidate's failure
            rec.errors.append(f"{type(e).__name__}: {e}")
            stop.set()

    threads = [threading.Thread(target=client, args=(k,), daemon=True, name=f"fastort-tune-client-{k}")
               for k in range(clients)]
    for t in threads:
        t.start()
    return threads


def _open_loop(target: Target, inputs: InputSet, rate: float, rec: _Recorder, stop: threading.Event) -> List[threading.Thread]:
    requests = inputs.requests
    outstanding = [0]
    lock = threading.Lock()

    def finished(fut: "concurrent.futures.Future[Any]", scheduled: float) -> None:
        t1 = time.perf_counter()
        with lock:
            outstanding[0] -= 1
        exc = fut.exception() if not fut.cancelled() else None
        if exc is not None:
            from ..errors import QueueFullError

            if isinstance(exc, QueueFullError):
                with rec.lock:
                    rec.dropped += 1
                return
            rec.errors.append(f"{type(exc).__name__}: {exc}")
            stop.set()
            return
        rec.add(t1, t1 - scheduled)

    def dispatcher() -> None:
        rng = np.random.default_rng(0)
        t_next = time.perf_counter()
        i = 0
        while not stop.is_set():
            t_next += rng.exponential(1.0 / rate)
            delay = t_next - time.perf_counter()
            if delay > 0:
                stop.wait(delay)
                if stop.is_set():
                    break
            with lock:
                if outstanding[0] >= MAX_OUTSTANDING:
                    with rec.lock:
                        rec.dropped += 1
                    continue
                outstanding[0] += 1
            scheduled = t_next
            try:
                fut = target.submit(requests[i % len(requests)])
            except Exception as e:  # noqa: BLE001 - queue full: a drop; anything else: the failure
                from ..errors import QueueFullError

                with lock:
                    outstanding[0] -= 1
                if isinstance(e, QueueFullError):
                    with rec.lock:
                        rec.dropped += 1
                    continue
                rec.errors.append(f"{type(e).__name__}: {e}")
                stop.set()
                break
            i += 1

            def done(f: "concurrent.futures.Future[Any]", s: float = scheduled) -> None:
                finished(f, s)

            fut.add_done_callback(done)

    t = threading.Thread(target=dispatcher, daemon=True, name="fastort-tune-arrivals")
    t.start()
    return [t]


def _spread(values: Sequence[float]) -> float:
    mean = float(np.mean(values))
    return float((max(values) - min(values)) / mean) if mean > 0 else 0.0


def measure(target: Target, inputs: InputSet, load: Load, budget: Budget,
            deadline: Optional[float] = None) -> Measurement:
    """Puts ``target`` under ``load`` and returns the measurement of its last
    ``budget.min_windows`` windows (all of them when it did not stabilise).
    ``deadline`` (a ``time.perf_counter()`` value) cuts the windows short."""
    rec = _Recorder()
    stop = threading.Event()
    start = time.perf_counter()
    if load.clients is not None:
        threads = _closed_loop(target, inputs, load.clients, rec, stop)
    else:
        assert load.arrival_rate is not None
        threads = _open_loop(target, inputs, load.arrival_rate, rec, stop)
    counts: List[int] = []
    lats: List[np.ndarray] = []
    lengths: List[float] = []
    try:
        stop.wait(budget.warmup_s)
        t = time.perf_counter()
        n_warm, _ = rec.window(start, t)
        rate = n_warm / max(t - start, 1e-9)
        # about 100 requests a window, up to 4x the configured length
        window = budget.window_s if rate <= 0 else min(max(budget.window_s, 100.0 / rate), 4 * budget.window_s)
        while len(counts) < budget.max_windows and not stop.is_set():
            if deadline is not None and len(counts) >= 1 and time.perf_counter() + window > deadline:
                break
            w0 = time.perf_counter()
            stop.wait(window)
            w1 = time.perf_counter()
            n, lat = rec.window(w0, w1)
            counts.append(n)
            lats.append(lat)
            lengths.append(w1 - w0)
            k = budget.min_windows
            if len(counts) >= k:
                tput = [c / ln for c, ln in zip(counts[-k:], lengths[-k:])]
                p99s = [float(np.percentile(x, 99)) if len(x) else float("inf") for x in lats[-k:]]
                if all(np.isfinite(p99s)) and _spread(tput) <= budget.stability and _spread(p99s) <= budget.stability:
                    break
    finally:
        stop.set()
        for th in threads:
            th.join(timeout=60)
    if rec.errors:
        return Measurement(0.0, 0.0, float("inf"), float("inf"), len(counts), False, sum(counts),
                           error=rec.errors[0], dropped=rec.dropped)
    k = min(budget.min_windows, len(counts))
    use_counts, use_lats, use_len = counts[-k:], lats[-k:], lengths[-k:]
    all_lat = np.concatenate(use_lats) if use_lats else np.zeros(0)
    tputs = [c / ln for c, ln in zip(use_counts, use_len)]
    p99s = [float(np.percentile(x, 99)) * 1e3 for x in use_lats if len(x)]
    spread = {"throughput": _spread(tputs) if tputs else 0.0, "p99": _spread(p99s) if p99s else 0.0}
    stable = len(counts) >= budget.min_windows and spread["throughput"] <= budget.stability \
        and spread["p99"] <= budget.stability and len(p99s) == len(use_lats)
    throughput = float(sum(use_counts) / sum(use_len)) if use_len else 0.0
    if not len(all_lat):
        return Measurement(0.0, 0.0, float("inf"), float("inf"), len(counts), False, 0, spread, rec.dropped,
                           error="no request completed within the measurement windows")
    return Measurement(
        throughput=throughput,
        rows_per_s=throughput * inputs.rows_per_request,
        p50_ms=float(np.percentile(all_lat, 50)) * 1e3,
        p99_ms=float(np.percentile(all_lat, 99)) * 1e3,
        windows=len(counts),
        stable=stable,
        requests=int(sum(use_counts)),
        spread=spread,
        dropped=rec.dropped,
    )
