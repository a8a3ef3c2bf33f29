"""What the user asks of a tuning run: the targets a configuration must meet
(hard constraints), the time it may take, and the load it is measured under."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from ..errors import ConfigError

#: What ``allow=`` may name: the dimensions of the search.
KNOBS = ("threads", "replicas", "batching", "precision", "quantize", "optimize")
OBJECTIVES = ("throughput", "latency")

#: ``metric(reference_outputs, candidate_outputs) -> float | bool``: an error
#: (lower is better, compared with ``max_error``) or pass/fail.
Metric = Callable[[Mapping[str, Any], Mapping[str, Any]], Any]


def _positive(value: Any, what: str, allow_zero: bool = False) -> Optional[float]:
    if value is None:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{what} must be a finite number {bound}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Targets:
    """Hard constraints: a candidate outside any of them is infeasible.

    Attributes:
        p99_ms: most 99th-percentile request latency (queueing included), ms.
        max_error: most max-abs error of a model variant's outputs against the
            original's on the tuning inputs (or, with ``metric``, most metric value).
        max_size_mb: largest model file, MB (10**6 bytes).
        metric: ``metric(reference_outputs, candidate_outputs)`` giving an error
            (float, compared with ``max_error``) or pass/fail (bool), e.g.
            top-1 disagreement. Replaces max-abs error.
    """

    p99_ms: Optional[float] = None
    max_error: Optional[float] = None
    max_size_mb: Optional[float] = None
    metric: Optional[Metric] = None

    def __post_init__(self) -> None:
        _positive(self.p99_ms, "Targets.p99_ms")
        _positive(self.max_error, "Targets.max_error", allow_zero=True)
        _positive(self.max_size_mb, "Targets.max_size_mb")
        if self.metric is not None and not callable(self.metric):
            raise ConfigError(f"Targets.metric must be callable (reference, candidate) -> float | bool, "
                              f"got {type(self.metric).__name__}")

    def to_dict(self) -> Dict[str, Any]:
        return {"p99_ms": self.p99_ms, "max_error": self.max_error, "max_size_mb": self.max_size_mb,
                "metric": getattr(self.metric, "__name__", repr(self.metric)) if self.metric else None}


@dataclass(frozen=True)
class Budget:
    """How long tuning may take, and how each candidate is measured.

    Attributes:
        minutes: wall-clock budget of the whole run (model variants included).
        trials: most candidates measured (None: as many as the time allows).
        warmup_s: load applied before a candidate's first counted window.
        window_s: shortest measurement window (lengthened so that one holds
            about 100 requests, up to 4x).
        min_windows, max_windows: windows per candidate; measurement stops
            once the last ``min_windows`` agree within ``stability``, else at
            ``max_windows`` and the result is marked unstable.
        stability: relative spread allowed between windows (0.10: 10 %).
        baseline_every: re-measure the plain-onnxruntime baseline after this
            many candidates (0: only at the start and the end).
        confirm: re-measure this many leading candidates at the end, in the
            last 15 % of the time budget (0 or 1: no confirmation).
    """

    minutes: float = 3.0
    trials: Optional[int] = None
    warmup_s: float = 0.3
    window_s: float = 0.5
    min_windows: int = 3
    max_windows: int = 8
    stability: float = 0.10
    baseline_every: int = 4
    confirm: int = 3

    def __post_init__(self) -> None:
        _positive(self.minutes, "Budget.minutes")
        if self.trials is not None and (not isinstance(self.trials, int) or isinstance(self.trials, bool)
                                        or self.trials < 1):
            raise ConfigError(f"Budget.trials must be an int >= 1 or None, got {self.trials!r}")
        _positive(self.warmup_s, "Budget.warmup_s", allow_zero=True)
        _positive(self.window_s, "Budget.window_s")
        _positive(self.stability, "Budget.stability")
        for name in ("min_windows", "max_windows", "baseline_every", "confirm"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < (0 if name in ("baseline_every", "confirm") else 1):
                raise ConfigError(f"Budget.{name} must be a positive int, got {v!r}")
        if self.max_windows < self.min_windows:
            raise ConfigError(f"Budget.max_windows ({self.max_windows}) is below min_windows ({self.min_windows})")

    @property
    def seconds(self) -> float:
        return self.minutes * 60.0


@dataclass(frozen=True)
class Load:
    """The load a candidate is measured under: ``clients`` closed-loop clients
    (each sends its next request when the last returns), or open-loop arrivals
    at ``arrival_rate`` requests/s (Poisson), which shows queueing honestly."""

    clients: Optional[int] = None
    arrival_rate: Optional[float] = None

    def __post_init__(self) -> None:
        if (self.clients is None) == (self.arrival_rate is None):
            raise ConfigError("give exactly one of clients= (closed loop) or arrival_rate= (open loop, requests/s)")
        if self.clients is not None and (not isinstance(self.clients, int) or isinstance(self.clients, bool)
                                         or not 1 <= self.clients <= 4096):
            raise ConfigError(f"clients must be an int within [1, 4096], got {self.clients!r}")
        _positive(self.arrival_rate, "arrival_rate")

    @property
    def concurrency(self) -> int:
        """Requests in flight that batching can merge (closed loop: the clients)."""
        return self.clients if self.clients is not None else 64

    def describe(self) -> str:
        if self.clients is not None:
            return f"{self.clients} closed-loop client{'s' if self.clients != 1 else ''}"
        return f"open-loop arrivals at {self.arrival_rate:g} requests/s"

    def to_dict(self) -> Dict[str, Any]:
        return {"clients": self.clients, "arrival_rate": self.arrival_rate}


def check_allow(allow: Any) -> Tuple[str, ...]:
    if isinstance(allow, str):
        allow = (allow,)
    try:
        names = tuple(allow)
    except TypeError:
        raise ConfigError(f"allow must be a sequence of {KNOBS}, got {allow!r}") from None
    unknown = [a for a in names if a not in KNOBS]
    if unknown:
        raise ConfigError(f"allow names unknown knobs {unknown}; known: {list(KNOBS)}")
    return names


def check_objective(objective: Any) -> str:
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    return str(objective)
