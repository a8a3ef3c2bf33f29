"""The server's lifecycle: bind, load the repository, serve HTTP, gRPC and
metrics, and on SIGTERM/SIGINT drain (readiness false, new requests refused,
accepted ones finished) before exiting 0."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from typing import Any, Dict, Iterator, List, Optional

from .config import ServeConfig
from .deps import require

log = logging.getLogger("fastort.serve")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class Server:
    """One ``fastort serve`` process (use :func:`fastort.serve.serve`)."""

    def __init__(self, config: ServeConfig) -> None:
        require()
        from .metrics import Metrics
        from .repository import Repository
        from .service import Service

        self.config = config
        self.repository = Repository(config)
        self.metrics = Metrics(self.repository)
        self.service = Service(self.repository, self.metrics)
        self.ports: Dict[str, int] = {}
        self._stop: Optional[asyncio.Event] = None

    def request_stop(self) -> None:
        """Begins the drain (what SIGTERM does); safe from the loop's thread."""
        if self._stop is not None:
            self._stop.set()

    async def serve(self) -> int:
        import uvicorn

        from .grpc import add_to_server
        from .http import HttpApp, MetricsApp

        cfg = self.config
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)

        class _Uvicorn(uvicorn.Server):  # type: ignore[misc,unused-ignore]
            def capture_signals(self) -> Any:  # the drain handles the signals
                return contextlib.nullcontext()

        servers: List[Any] = []
        tasks: List["asyncio.Task[Any]"] = []

        def http_server(app: Any, port: int, name: str) -> None:
            if port < 0:
                return
            sock = _bind(cfg.host, port)
            self.ports[name] = sock.getsockname()[1]
            ucfg = uvicorn.Config(app, lifespan="off", access_log=cfg.access_log, log_level=cfg.log_level,
                                  http="httptools" if _has("httptools") else "h11", timeout_graceful_shutdown=5,
                                  h11_max_incomplete_event_size=cfg.max_request_bytes)
            server = _Uvicorn(ucfg)
            servers.append(server)
            tasks.append(asyncio.ensure_future(server.serve(sockets=[sock])))

        http_server(HttpApp(self.service, cfg.max_request_bytes), cfg.http_port, "http")
        http_server(MetricsApp(self.metrics), cfg.metrics_port, "metrics")
        grpc_server = None
        if cfg.grpc_port >= 0:
            import grpc

            limit = min(cfg.max_request_bytes, 2**31 - 1)
            grpc_server = grpc.aio.server(options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),
            ])
            add_to_server(grpc_server, self.service)
            self.ports["grpc"] = grpc_server.add_insecure_port(f"{cfg.host}:{cfg.grpc_port}")
            await grpc_server.start()

        await asyncio.to_thread(self.repository.load_all)
        self.service.models_loaded = True
        for entry in self.repository.index():
            if entry["state"] != "READY":
                log.warning("model %s failed to load: %s", entry["name"], entry["reason"])
        self._announce()

        stop = asyncio.ensure_future(self._stop.wait())
        done, _ = await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
        code = 0
        for t in tasks:  # a front end that died (e.g. a port in use) ends the server
            if t in done and t.exception() is not None:
                log.error("server failed: %s", t.exception())
                code = 1
        # drain: readiness false, new requests refused, accepted ones finished
        self.service.draining = True
        log.info("draining %d request(s)", self.service.in_flight)
        if not await self.service.wait_idle(cfg.drain_timeout_s):
            log.warning("drain timeout: %d request(s) still in flight", self.service.in_flight)
            code = code or 1
        for server in servers:
            server.should_exit = True
        if grpc_server is not None:
            await grpc_server.stop(grace=1.0)
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(self.repository.close)
        return code

    def _announce(self) -> None:
        ready = {"ports": self.ports, "pid": os.getpid(), "models": self.repository.index()}
        line = json.dumps(ready)
        if self.config.ready_file:
            tmp = self.config.ready_file + ".tmp"
            with open(tmp, "w") as f:
                f.write(line)
            os.replace(tmp, self.config.ready_file)
        print(f"fastort serve: ready {line}", file=sys.stderr, flush=True)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def run_server(config: ServeConfig) -> int:
    """Runs the server until SIGTERM/SIGINT; returns the exit code."""
    logging.basicConfig(level=getattr(logging, config.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server = Server(config)
    return asyncio.run(server.serve())


