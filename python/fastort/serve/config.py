"""Settings of ``fastort serve``: the one place their defaults live."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence

#: The extra that brings the server's libraries.
EXTRA = "serve"


@dataclass(frozen=True)
class EngineOverrides:
    """Engine settings that override a model package's manifest (None: the
    manifest's value, or fastort's default for a plain ``.onnx`` file)."""

    providers: Optional[Sequence[str]] = None
    replicas: Optional[int] = None
    intra_op_threads: Optional[int] = None
    max_batch_size: Optional[int] = None
    max_delay_us: Optional[int] = None
    max_queue: Optional[int] = None
    priority_levels: Optional[int] = None

    def as_kwargs(self) -> Dict[str, Any]:
        """The overrides that are set, as :class:`fastort.Engine` keywords."""
        out = {k: v for k, v in self.__dict__.items() if v is not None}
        if "providers" in out:
            out["providers"] = list(out["providers"])
        return out


@dataclass(frozen=True)
class ServeConfig:
    """How ``fastort serve`` runs.

    Attributes:
        model_repository: a folder of models (one per sub-folder or ``.onnx``
            file, optional numbered version folders), a model package, or one
            ``.onnx`` file.
        host: address the servers bind (loopback by default: expose on purpose).
        http_port, grpc_port, metrics_port: 0 asks the OS for a free port;
            a negative port turns that endpoint off.
        max_request_bytes: largest request body (HTTP) or message (gRPC);
            larger ones get 413 / RESOURCE_EXHAUSTED before they are decoded.
        drain_timeout_s: on SIGTERM/SIGINT, how long accepted requests may take
            to finish before the server exits anyway.
        engine: settings applied to every model (see :class:`EngineOverrides`).
        default_max_batch_size: batching for a plain ``.onnx`` file without a
            manifest (its model must have a dynamic batch dim to be batched).
        ready_file: when set, the bound ports are written there as JSON once the
            server is ready (tests and supervisors read it).
        access_log: log every HTTP request (off: it costs throughput).
    """

    model_repository: str
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_request_bytes: int = 64 << 20
    drain_timeout_s: float = 30.0
    engine: EngineOverrides = field(default_factory=EngineOverrides)
    default_max_batch_size: int = 32
    ready_file: Optional[str] = None
    access_log: bool = False
    log_level: str = "info"
