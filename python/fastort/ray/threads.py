"""How many onnxruntime threads a Ray actor may use.

onnxruntime sizes its intra-op pool from the host's cores (onnxruntime#29510),
not from the CPUs Ray assigned to the actor nor from the container's cgroup
quota: N actors on a 16-core node would each start 16 spinning threads. Here
the budget is the smallest of Ray's assignment, the process's CPU affinity and
the cgroup CPU quota; the host's core count is never used.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

__all__ = ["CpuBudget", "cpu_budget", "ray_assigned_cpus", "affinity_cpus", "cgroup_cpu_quota"]


@dataclass(frozen=True)
class CpuBudget:
    """The CPUs this process may use, and where each limit came from.

    Attributes:
        threads: the intra-op thread count to use (>= 1).
        ray_cpus: CPUs Ray assigned to this actor/task (None outside Ray or when
            Ray assigned none).
        affinity: CPUs in the process's affinity mask (None where unknown).
        cgroup: CPUs allowed by the cgroup quota (None: no quota).
        limited_by: which of "ray", "affinity", "cgroup" set ``threads``.
    """

    threads: int
    ray_cpus: Optional[float]
    affinity: Optional[int]
    cgroup: Optional[float]
    limited_by: str


def ray_assigned_cpus() -> Optional[float]:
    """CPUs Ray assigned to the current actor or task; None outside a Ray worker."""
    try:
        import ray
    except ImportError:
        return None
    if not ray.is_initialized():
        return None
    context = ray.get_runtime_context()
    if context.worker.mode != ray.WORKER_MODE:  # the driver has no assignment
        return None
    cpus = context.get_assigned_resources().get("CPU")  # type: ignore[no-untyped-call,unused-ignore]
    return float(cpus) if cpus else None


def affinity_cpus() -> Optional[int]:
    """CPUs in this process's affinity mask (taskset, cpusets); None where the OS cannot say."""
    getter = getattr(os, "sched_getaffinity", None)
    if getter is None:  # pragma: no cover - macOS, Windows
        return None
    return len(getter(0))


def _cgroup_dirs() -> List[Tuple[str, str]]:
    """(version, directory) of this process's CPU cgroup, most specific first."""
    dirs: List[Tuple[str, str]] = []
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        path = path.lstrip("/")
        if controllers == "":
            dirs.append(("v2", os.path.join("/sys/fs/cgroup", path)))
        elif "cpu" in controllers.split(","):
            for mount in ("/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu"):
                dirs.append(("v1", os.path.join(mount, path)))
    return dirs


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def cgroup_cpu_quota() -> Optional[float]:
    """CPUs the cgroup quota allows (cgroup v2 ``cpu.max``, v1 ``cfs_quota_us``);
    None when there is no quota."""
    for version, directory in _cgroup_dirs():
        if version == "v2":
            text = _read(os.path.join(directory, "cpu.max"))
            if text:
                quota, _, period = text.partition(" ")
                if quota != "max" and period:
                    return int(quota) / int(period)
        else:
            quota_text = _read(os.path.join(directory, "cpu.cfs_quota_us"))
            period_text = _read(os.path.join(directory, "cpu.cfs_period_us"))
            if quota_text and period_text and int(quota_text) > 0:
                return int(quota_text) / int(period_text)
    return None


def cpu_budget(ray_cpus: Optional[float] = None) -> CpuBudget:
    """The thread budget of this process: floor of the smallest limit, at least 1.

    ``ray_cpus`` overrides what Ray reports (e.g. the ``num_cpus`` an actor
    will get, computed before it starts).
    """
    assigned = ray_cpus if ray_cpus is not None else ray_assigned_cpus()
    affinity = affinity_cpus()
    quota = cgroup_cpu_quota()
    limits: Dict[str, float] = {
        name: float(value) for name, value in (("ray", assigned), ("affinity", affinity), ("cgroup", quota))
        if value is not None and value > 0
    }
    if not limits:
        return CpuBudget(1, assigned, affinity, quota, "none")
    limited_by = min(limits, key=limits.__getitem__)
    threads = max(1, math.floor(limits[limited_by] + 1e-9))
    return CpuBudget(threads, assigned, affinity, quota, limited_by)
