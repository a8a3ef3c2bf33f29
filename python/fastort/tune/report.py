"""Presenting a tuning result: a table, JSON, a throughput-vs-p99 plot, and
the winner written as a fastort package."""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .result import CandidateResult, TuneResult


def jsonable(value: Any) -> Any:
    """Plain JSON types (inf/NaN -> None, numpy scalars -> Python)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _table(header: Sequence[str], rows: List[List[str]]) -> str:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i in (0, 1, len(widths) - 1) else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def _num(v: Optional[float], fmt: str = ".3g") -> str:
    return "-" if v is None or not math.isfinite(v) else format(v, fmt)


def _status(c: "CandidateResult", winner: Optional["CandidateResult"]) -> str:
    if c.failed is not None:
        return "failed: " + c.failed
    s = ("WINNER" if c is winner else "ok") if c.feasible else ("closest, misses: " if c is winner else "misses: ") \
        + "; ".join(c.misses)
    if c.measurement is not None and not c.measurement.stable:
        s += " (unstable)"
    return s


def format_table(result: "TuneResult") -> str:
    """Every candidate, the baseline, the winner, what was skipped and why."""
    lines = [f"fastort tune {result.model}: {result.load.describe()}, inputs: {result.inputs}"]
    if result.synthetic_inputs:
        lines.append("NOTE: results rest on SYNTHETIC inputs; give real requests (inputs=, --inputs) for "
                     "numbers that hold in production")
    base = result.baseline_throughput
    if base:
        b = result.baseline[-1]
        lines.append(f"baseline: one shared onnxruntime InferenceSession, {base:,.1f} req/s "
                     f"(p99 {_num(b.p99_ms)} ms), measured {len(result.baseline)}x between the candidates")
    rows = []
    for c in result.candidates:
        m = c.measurement
        rows.append([str(c.index), c.config.label(), c.stage,
                     "-" if m is None else f"{m.throughput:,.1f}",
                     "-" if c.ratio is None else f"{c.ratio:.2f}x",
                     "-" if m is None else _num(m.p50_ms), "-" if m is None else _num(c.worst_p99_ms),
                     str(1 + len(c.repeats)) if m is not None else "0",
                     f"{c.error:.3g}", f"{c.size_bytes / 1e6:.3g}", _num(c.memory_mb, ".0f"),
                     _status(c, result.winner)])
    lines.append(_table(["#", "candidate", "stage", "req/s", "vs ort", "p50 ms", "p99 ms", "runs", "error", "MB",
                         "mem MB", "status"], rows))
    lines.append("req/s, p50: first run; vs ort: mean ratio over the runs; p99: the worst run")
    for name, reason in result.skipped:
        lines.append(f"skipped {name}: {reason}")
    w = result.winner
    if w is None:
        lines.append("no candidate could run")
    else:
        verdict = "meets every target" if result.feasible else "NO candidate meets the targets; closest"
        lines.append(f"winner ({verdict}): {w.config.label()}" +
                     (f", {w.ratio:.2f}x the plain onnxruntime baseline" if w.ratio is not None else ""))
    if result.budget_exhausted:
        lines.append("the budget ran out before the whole space was measured")
    for n in result.notes:
        lines.append("note: " + n)
    lines.append(f"tuned in {result.elapsed_s:.0f} s on {result.machine.get('cpu')} ({result.machine.get('cores')} cores)")
    return "\n".join(lines)


def plot(result: "TuneResult", path: str) -> Optional[str]:
    """Saves the throughput-vs-p99 scatter; None (and nothing written) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c in result.candidates:
        m = c.measurement
        if m is None or c.failed is not None or not math.isfinite(c.worst_p99_ms):
            continue
        color = "tab:green" if c.feasible else "tab:gray"
        marker = "*" if c is result.winner else "o"
        ax.scatter(c.worst_p99_ms, m.throughput, c=color, marker=marker, s=160 if marker == "*" else 30, zorder=3)
        ax.annotate(str(c.index), (c.worst_p99_ms, m.throughput), fontsize=7, xytext=(3, 3), textcoords="offset points")
    for b in result.baseline:
        if b.error is None and math.isfinite(b.p99_ms):
            ax.scatter(b.p99_ms, b.throughput, c="tab:red", marker="x", s=50, zorder=4)
    ax.scatter([], [], c="tab:red", marker="x", label="onnxruntime InferenceSession (baseline)")
    ax.scatter([], [], c="tab:green", label="feasible")
    ax.scatter([], [], c="tab:gray", label="misses a target")
    ax.scatter([], [], c="tab:green", marker="*", s=160, label="winner")
    if result.targets.p99_ms is not None:
        ax.axvline(result.targets.p99_ms, color="tab:orange", linestyle="--", label="p99 target")
    ax.set_xlabel("p99 latency (ms)")
    ax.set_ylabel("throughput (requests/s)")
    ax.set_title(f"{os.path.basename(result.model)}: {result.load.describe()}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def save_package(result: "TuneResult", outdir: str, overwrite: bool) -> str:
    """The winner's model and settings as a fastort package."""
    from ..prepare.package import package

    w = result.winner
    if w is None:
        from ..errors import PackageError

        raise PackageError("nothing to package: no candidate could run")
    cfg = w.config
    runtime: Dict[str, Any] = dict(cfg.engine_kwargs())
    runtime["providers"] = [list(p) if isinstance(p, tuple) else p for p in runtime["providers"]]
    batch = runtime.pop("max_batch_size", 0)
    delay = runtime.pop("max_delay_us", 2000)
    summary = {
        "winner": w.to_dict(), "feasible": result.feasible, "load": result.load.to_dict(),
        "targets": result.targets.to_dict(), "objective": result.objective,
        "baseline_throughput": result.baseline_throughput, "synthetic_inputs": result.synthetic_inputs,
        "inputs": result.inputs,
        "fastort_default": result.default.to_dict() if result.default else None,
    }
    if cfg.use_global_thread_pool:
        summary["note"] = ("use_global_thread_pool: measured with onnxruntime's global pools at their defaults "
                           "(one thread per core, no spinning); fastort.configure_global_threads changes them")
    machine = {"cpu": result.machine.get("cpu"), "cores": result.machine.get("cores")}
    return package(
        result.variant_paths[cfg.variant], outdir, replicas=cfg.replicas, max_batch_size=batch or 0,
        max_delay_us=delay, runtime=runtime, source=result.model,
        description=f"tuned by fastort tune for {result.load.describe()}",
        extra={"tuned_on": machine, "tune": jsonable(summary)}, overwrite=overwrite)
