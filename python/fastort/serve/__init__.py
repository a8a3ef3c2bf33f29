"""``fastort serve``: models over the Open Inference Protocol (KServe v2 /
Triton), HTTP/REST and gRPC, with Prometheus metrics. Needs ``fastort[serve]``.

>>> import fastort.serve
>>> fastort.serve.serve("models/", http_port=8000, grpc_port=8001)   # blocks until SIGTERM
"""

from __future__ import annotations

from typing import Any

from .config import EngineOverrides, ServeConfig

__all__ = ["serve", "ServeConfig", "EngineOverrides"]


def serve(model_repository: str, **settings: Any) -> int:
    """Serves ``model_repository`` until SIGTERM/SIGINT, then drains and returns
    the exit code (0: every accepted request was answered). ``settings`` are
    :class:`ServeConfig` fields; ``engine=EngineOverrides(...)`` sets engine options."""
    from .server import run_server

    return run_server(ServeConfig(model_repository=model_repository, **settings))
