"""Timing methods side by side: alternating rounds after a warm-up, so that a
noisy machine disturbs them all alike; what counts is the ratio between methods
of one run. Used by ``fastort bench``, ``bench/`` and the preparation steps'
latency measurements.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping

import numpy as np

from .._version import __version__
from ..runtime import runtime_info

__all__ = ["Timing", "compare", "machine_info"]


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
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem_gb, "python": platform.python_version(),
            "numpy": np.__version__, "onnxruntime": runtime_info()["version"], "fastort": __version__}


