"""What a tuning run returns: every candidate with its numbers and, for the
infeasible ones, which target each missed by how much; the winner; and the
package writer that turns the winner into what services load."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

from .config import Budget, Load, Targets
from .load import Measurement
from .space import Config, provider_name


@dataclass
class CandidateResult:
    """One configuration: its measurement, error, size and memory, and the
    targets it missed (empty when feasible)."""

    config: Config
    stage: str
    measurement: Optional[Measurement] = None
    baseline_throughput: Optional[float] = None
    error: float = 0.0
    error_ok: bool = True
    error_detail: str = ""
    size_bytes: int = 0
    memory_mb: Optional[float] = None
    failed: Optional[str] = None
    misses: List[str] = field(default_factory=list)
    violation: float = 0.0
    notes: List[str] = field(default_factory=list)
    index: int = 0
    model_path: str = ""
    #: the confirmation runs of the leading candidates, and their ratios
    repeats: List[Measurement] = field(default_factory=list)
    repeat_ratios: List[float] = field(default_factory=list)

    @property
    def feasible(self) -> bool:
        return self.failed is None and not self.misses

    @property
    def ratio(self) -> Optional[float]:
        """Throughput over the plain-onnxruntime baseline measured next to it
        (the mean over the confirmation runs too, when it had them)."""
        m = self.measurement
        if m is None or not self.baseline_throughput:
            return None
        ratios = [m.throughput / self.baseline_throughput] + [r for r in self.repeat_ratios if math.isfinite(r)]
        return sum(ratios) / len(ratios)

    @property
    def worst_p99_ms(self) -> float:
        """The highest p99 of its runs (the one judged against the target)."""
        runs = ([self.measurement] if self.measurement else []) + self.repeats
        return max((r.p99_ms for r in runs), default=float("inf"))

    def judge(self, targets: Targets) -> None:
        """Fills ``misses`` and ``violation`` (sum of relative overshoots)."""
        self.misses, self.violation = [], 0.0
        if self.failed is not None:
            self.violation = float("inf")
            return
        m = self.measurement
        if targets.p99_ms is not None and m is not None and self.worst_p99_ms > targets.p99_ms:
            p99 = self.worst_p99_ms
            over = p99 / targets.p99_ms - 1
            self.misses.append(f"p99 {p99:.3g} ms > {targets.p99_ms:g} ms (+{over:.0%})")
            self.violation += min(over, 1e6)
        if m is not None and m.dropped:
            self.misses.append(f"dropped {m.dropped} request(s): overloaded at this arrival rate")
            self.violation += 1.0
        if targets.max_error is not None and self.error > targets.max_error:
            over = self.error / targets.max_error - 1 if targets.max_error > 0 else float("inf")
            what = "metric" if targets.metric is not None else "max abs error"
            self.misses.append(f"{what} {self.error:.3g} > {targets.max_error:g} (+{over:.0%})"
                               if over != float("inf") else f"{what} {self.error:.3g} > 0")
            self.violation += min(over, 1e6)
        if not self.error_ok:
            self.misses.append(self.error_detail or "outputs differ from the original")
            self.violation += 1.0
        size_mb = self.size_bytes / 1e6
        if targets.max_size_mb is not None and size_mb > targets.max_size_mb:
            over = size_mb / targets.max_size_mb - 1
            self.misses.append(f"size {size_mb:.3g} MB > {targets.max_size_mb:g} MB (+{over:.0%})")
            self.violation += over

    def to_dict(self) -> Dict[str, Any]:
        return {"index": self.index, "label": self.config.label(), "stage": self.stage,
                "config": self.config.to_dict(),
                "measurement": self.measurement.to_dict() if self.measurement else None,
                "baseline_throughput": self.baseline_throughput, "ratio": self.ratio, "error": self.error,
                "error_ok": self.error_ok, "size_bytes": self.size_bytes, "memory_mb": self.memory_mb,
                "feasible": self.feasible, "failed": self.failed, "misses": self.misses, "notes": self.notes,
                "repeats": [r.to_dict() for r in self.repeats], "repeat_ratios": self.repeat_ratios}


def rank_key(c: CandidateResult, objective: str) -> Tuple[float, float, float]:
    """Sort key, best first: feasible ones by the objective, then the others by
    how far they miss (the closest first), failed ones last."""
    m = c.measurement
    if c.failed is not None or m is None:
        return (2.0, 0.0, 0.0)
    score = c.ratio if c.ratio is not None else m.throughput
    if c.feasible:
        return (0.0, c.worst_p99_ms if objective == "latency" else -score, -score)
    return (1.0, c.violation, -score)


@dataclass
class TuneResult:
    """The outcome of :func:`fastort.tune`. ``winner`` is the best feasible
    candidate or, when none is feasible (``feasible`` False), the one that
    misses the targets by the least; ``candidates`` holds all of them."""

    model: str
    winner: Optional[CandidateResult]
    feasible: bool
    candidates: List[CandidateResult]
    baseline: List[Measurement]
    synthetic_inputs: bool
    inputs: str
    load: Load
    targets: Targets
    budget: Budget
    objective: str
    machine: Dict[str, Any]
    elapsed_s: float
    budget_exhausted: bool
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    variant_paths: Dict[str, str] = field(default_factory=dict)
    package_dir: Optional[str] = None
    _tmp: Any = None

    @property
    def default(self) -> Optional[CandidateResult]:
        """fastort's default configuration (the first candidate)."""
        return self.candidates[0] if self.candidates else None

    @property
    def baseline_throughput(self) -> Optional[float]:
        vals = [m.throughput for m in self.baseline if m.error is None and m.throughput > 0]
        return sum(vals) / len(vals) if vals else None

    def table(self) -> str:
        from .report import format_table

        return format_table(self)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "model": self.model, "feasible": self.feasible,
            "winner": self.winner.to_dict() if self.winner else None,
            "candidates": [c.to_dict() for c in self.candidates],
            "baseline": [m.to_dict() for m in self.baseline], "baseline_throughput": self.baseline_throughput,
            "synthetic_inputs": self.synthetic_inputs, "inputs": self.inputs, "load": self.load.to_dict(),
            "targets": self.targets.to_dict(), "objective": self.objective,
            "budget": {"minutes": self.budget.minutes, "trials": self.budget.trials},
            "machine": self.machine, "elapsed_s": self.elapsed_s, "budget_exhausted": self.budget_exhausted,
            "skipped": [{"candidate": k, "reason": r} for k, r in self.skipped], "notes": self.notes,
            "package": self.package_dir,
        }

    def to_json(self, indent: int = 2) -> str:
        from .report import jsonable

        return json.dumps(jsonable(self.to_dict()), indent=indent)

    def plot(self, path: Union[str, "os.PathLike[str]"]) -> Optional[str]:
        """Throughput vs p99, one point per candidate, the baseline marked; a
        PNG at ``path``. Returns the path, or None without matplotlib."""
        from .report import plot

        return plot(self, os.fspath(path))

    def engine_settings(self) -> Dict[str, Any]:
        """The winner's :class:`fastort.Engine` keyword arguments."""
        if self.winner is None:
            return {}
        return self.winner.config.engine_kwargs()

    def save(self, outdir: Union[str, "os.PathLike[str]"], overwrite: bool = False) -> str:
        """Writes the winner as a fastort package (its model file, and its
        settings in the manifest, which ``Engine(outdir)`` applies); the
        manifest records the machine it was tuned on. Returns the directory."""
        from .report import save_package

        self.package_dir = save_package(self, os.fspath(outdir), overwrite)
        return self.package_dir

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        w = self.winner.config.label() if self.winner else None
        return f"TuneResult(winner={w!r}, feasible={self.feasible}, candidates={len(self.candidates)})"


__all__ = ["CandidateResult", "TuneResult", "rank_key", "provider_name"]
