"""The search space, cheapest first: provider and threads, then replicas (own
pools or onnxruntime's global pool), then dynamic batching, then the graph
optimization level, all on the original model; then model variants made by
fastort's own preparation steps, run with the best configuration found.

Each stage starts from the best configuration of the stages before it (a
coordinate search): the full product would not fit a budget of minutes.
"""

from __future__ import annotations

import itertools
import os
import sys
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

SPINNING_KEY = "session.intra_op.allow_spinning"
STAGES = ("threads", "replicas", "batching", "graph", "variants")


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Config:
    """One candidate: a model variant and the Engine settings it runs with."""

    variant: str = "original"
    provider: Any = "cpu"
    replicas: int = 1
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    execution_mode: str = "sequential"
    spinning: Optional[bool] = None
    use_global_thread_pool: bool = False
    max_batch_size: int = 0
    max_delay_us: int = 0
    graph_optimization: str = "all"

    def __post_init__(self) -> None:
        # (name, {options}) is kept as (name, ((key, value), ...)): configs are hashed
        p = self.provider
        if isinstance(p, (tuple, list)) and len(p) == 2 and isinstance(p[1], Mapping):
            object.__setattr__(self, "provider", (p[0], tuple(sorted(p[1].items()))))

    def provider_spec(self) -> Any:
        """The provider as Engine takes it: a name or (name, options dict)."""
        p = self.provider
        return (p[0], dict(p[1])) if isinstance(p, tuple) else p

    def engine_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments for :class:`fastort.Engine`."""
        kw: Dict[str, Any] = {
            "providers": (self.provider_spec(), "cpu") if self.provider != "cpu" else ("cpu",),
            "replicas": self.replicas,
            "graph_optimization": self.graph_optimization,
        }
        if self.use_global_thread_pool:
            kw["use_global_thread_pool"] = True
        else:
            kw["intra_op_threads"] = self.intra_op_threads
            kw["inter_op_threads"] = self.inter_op_threads
        if self.execution_mode != "sequential":
            kw["execution_mode"] = self.execution_mode
        if self.spinning is not None and not self.use_global_thread_pool:
            kw["session_config"] = {SPINNING_KEY: "1" if self.spinning else "0"}
        if self.max_batch_size:
            kw["max_batch_size"] = self.max_batch_size
            kw["max_delay_us"] = self.max_delay_us
        return kw

    def label(self) -> str:
        parts = [self.variant]
        if self.provider != "cpu":
            parts.append(provider_name(self.provider))
        if self.replicas > 1:
            parts.append(f"{self.replicas} replicas")
        if self.use_global_thread_pool:
            parts.append("global pool")
        else:
            parts.append(f"intra {self.intra_op_threads or 'default'}")
            if self.execution_mode != "sequential":
                parts.append(f"parallel, inter {self.inter_op_threads or 'default'}")
            if self.spinning is not None:
                parts.append(f"spin {'on' if self.spinning else 'off'}")
        if self.max_batch_size:
            parts.append(f"batch {self.max_batch_size}/{self.max_delay_us}us")
        if self.graph_optimization != "all":
            parts.append(f"opt {self.graph_optimization}")
        return ", ".join(parts)

    def to_dict(self) -> Dict[str, Any]:
        return {"variant": self.variant, "provider": provider_name(self.provider), "replicas": self.replicas,
                "intra_op_threads": self.intra_op_threads, "inter_op_threads": self.inter_op_threads,
                "execution_mode": self.execution_mode, "spinning": self.spinning,
                "use_global_thread_pool": self.use_global_thread_pool, "max_batch_size": self.max_batch_size,
                "max_delay_us": self.max_delay_us, "graph_optimization": self.graph_optimization}


def provider_name(provider: Any) -> str:
    if isinstance(provider, (tuple, list)) and provider:
        opts = provider[1] if len(provider) > 1 else {}
        return f"{provider[0]}" + (f"({', '.join(f'{k}={v}' for k, v in dict(opts).items())})" if opts else "")
    return str(provider)


def available_providers(requested: Optional[Sequence[Any]] = None) -> Tuple[List[Any], List[str]]:
    """Providers to try: the ones given, else the CPU plus every device that
    ``fastort.devices()`` reports (when this fastort has it) and the CUDA
    provider when the runtime has it. Returns (providers, notes)."""
    from .. import runtime

    notes: List[str] = []
    if requested:
        return list(requested), notes
    found: List[Any] = ["cpu"]
    # fastort.devices() (OpenVINO devices and more) where this fastort has it: in the
    # runtime layer, or on the facade (looked up, not imported: it imports this layer)
    devices = getattr(runtime, "devices", None) or getattr(sys.modules.get("fastort"), "devices", None)
    if callable(devices):
        try:
            for dev in devices():
                spec = _device_provider(dev)
                if spec is not None and spec not in found:
                    found.append(spec)
        except Exception as e:  # noqa: BLE001 - a device probe must not stop tuning
            notes.append(f"fastort.devices() failed ({type(e).__name__}: {e}); tried the CPU only")
    else:
        info = runtime.runtime_info()
        status = info.get("provider_status", {}).get("CUDAExecutionProvider", {})
        if status.get("available"):
            found.append("cuda")
    return found, notes


def _device_provider(dev: Any) -> Any:
    """A provider spec for one entry of ``fastort.devices()``: a provider
    string, a ``(name, options)`` pair, or an object/dict with ``provider``
    (and ``options``)."""
    if isinstance(dev, str):
        return None if dev.lower() in ("cpu", "cpuexecutionprovider") else dev
    if isinstance(dev, tuple) and len(dev) == 2:
        return dev
    get = dev.get if isinstance(dev, dict) else (lambda k, d=None: getattr(dev, k, d))
    name = get("provider")
    if not name or str(name).lower() in ("cpu", "cpuexecutionprovider"):
        return None
    opts = get("options") or get("provider_options")
    return (name, dict(opts)) if opts else name


def thread_stage(best: Config, providers: Sequence[Any], n_cores: int, allow: Sequence[str]) -> List[Config]:
    """Provider x intra-op threads x spinning, one replica, no batching."""
    out: List[Config] = []
    counts = sorted({1, max(1, n_cores // 2), n_cores}) if "threads" in allow else [0]
    for prov in providers:
        for n in counts:
            spins: Sequence[Optional[bool]] = (False, True) if "threads" in allow and n > 1 else (None,)
            for spin in spins:
                out.append(replace(best, provider=prov, intra_op_threads=n, spinning=spin))
        if "threads" in allow and n_cores >= 2 and prov == "cpu":
            out.append(replace(best, provider=prov, intra_op_threads=max(1, n_cores // 2), execution_mode="parallel",
                               inter_op_threads=2, spinning=False))
    return _unique(out)


def replica_stage(best: Config, n_cores: int, concurrency: int) -> List[Config]:
    """Replicas with cores/replicas threads each, own pools or the global pool."""
    out: List[Config] = []
    for r in sorted({2, 4, n_cores}):
        if r < 2 or r > concurrency or r > 2 * n_cores:
            continue
        out.append(replace(best, replicas=r, intra_op_threads=max(1, n_cores // r), spinning=False,
                           use_global_thread_pool=False, execution_mode="sequential", inter_op_threads=0))
        out.append(replace(best, replicas=r, intra_op_threads=0, spinning=None, use_global_thread_pool=True,
                           execution_mode="sequential", inter_op_threads=0))
    return _unique(out)


def batching_stage(best: Config, concurrency: int, rows_per_request: float) -> List[Config]:
    """Dynamic batching: most rows per batch x longest wait, sized by the load."""
    rows = max(1, int(round(rows_per_request)))
    sizes = sorted({min(s, concurrency * rows) for s in (8, 32)} | {concurrency * rows} if concurrency > 1 else set())
    sizes = [s for s in reversed(sizes) if 2 <= s <= 256]  # largest first: it pays most often under load
    return _unique([replace(best, max_batch_size=s, max_delay_us=d) for s in sizes for d in (200, 2000)])


def batching_stages(best: Config, default: Config, concurrency: int, rows_per_request: float) -> List[Config]:
    """Batching on the best configuration so far, interleaved with batching on
    fastort's default threads (same variant and provider): the thread setting
    that wins for unbatched runs (often 1 thread per run under load, so that
    runs overlap) is not the one that wins for batches, which one run at a time
    computes on every core."""
    on_best = batching_stage(best, concurrency, rows_per_request)
    base = replace(default, provider=best.provider, variant=best.variant)
    on_default = [c for c in batching_stage(base, concurrency, rows_per_request) if c not in on_best]
    pairs = itertools.zip_longest(on_best, on_default)
    return [c for pair in pairs for c in pair if c is not None]


def graph_stage(best: Config) -> List[Config]:
    return [replace(best, graph_optimization=level) for level in ("extended", "basic")]


def _unique(configs: List[Config]) -> List[Config]:
    seen, out = set(), []
    for c in configs:
        if c not in seen:
            seen.add(c)
            out.append(c)
    return out
