"""``fastort serve MODEL_REPO``: the command line of the server."""

from __future__ import annotations

import argparse
import sys
from typing import Any, List, Optional, Sequence

from .config import EngineOverrides, ServeConfig

DEFAULTS = ServeConfig(model_repository="")
ENGINE_DEFAULTS = EngineOverrides()


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Adds the ``serve`` command to an argparse subparsers object; its
    ``set_defaults(run=run)`` is what fastort.cli's dispatcher calls."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve", help="serve models over the Open Inference Protocol (HTTP and gRPC)",
        description="Serve a model repository (a folder of fastort packages or .onnx files, one model per "
                    "sub-folder, optional numbered versions), a package, or one .onnx file over the Open "
                    "Inference Protocol (KServe v2 / Triton): HTTP/REST, gRPC and Prometheus metrics.")
    configure(parser)
    parser.set_defaults(run=run)
    return parser


def configure(parser: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    parser.add_argument("model_repository", metavar="MODEL_REPO", help="model repository folder, package or .onnx")
    parser.add_argument("--host", default=d.host, help=f"address to bind (default {d.host})")
    parser.add_argument("--http-port", type=int, default=d.http_port,
                        help=f"HTTP port (default {d.http_port}; 0: any free port; -1: off)")
    parser.add_argument("--grpc-port", type=int, default=d.grpc_port,
                        help=f"gRPC port (default {d.grpc_port}; 0: any free port; -1: off)")
    parser.add_argument("--metrics-port", type=int, default=d.metrics_port,
                        help=f"Prometheus /metrics port (default {d.metrics_port}; 0: any free port; -1: off)")
    parser.add_argument("--max-request-bytes", type=int, default=d.max_request_bytes,
                        help=f"largest request body / gRPC message (default {d.max_request_bytes})")
    parser.add_argument("--drain-timeout", type=float, default=d.drain_timeout_s,
                        help=f"seconds accepted requests may take to finish on SIGTERM (default {d.drain_timeout_s})")
    parser.add_argument("--default-max-batch-size", type=int, default=d.default_max_batch_size,
                        help="batching of .onnx files without a manifest (default "
                             f"{d.default_max_batch_size})")
    g = parser.add_argument_group("engine settings for every model (override the packages' manifests)")
    g.add_argument("--providers", help="comma-separated execution providers, e.g. cuda,cpu")
    g.add_argument("--replicas", type=int, help="sessions per model")
    g.add_argument("--intra-op-threads", type=int, help="onnxruntime threads per replica")
    g.add_argument("--max-batch-size", type=int, help="most rows per batch")
    g.add_argument("--max-delay-us", type=int, help="longest wait for a batch to fill")
    g.add_argument("--max-queue", type=int, help="most queued requests per model (then 503 / UNAVAILABLE)")
    g.add_argument("--priority-levels", type=int, help="priority levels of the batcher")
    parser.add_argument("--ready-file", help="write the bound ports as JSON here once ready")
    parser.add_argument("--access-log", action="store_true", help="log every HTTP request")
    parser.add_argument("--log-level", default=d.log_level, choices=["debug", "info", "warning", "error"])


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    engine = EngineOverrides(
        providers=args.providers.split(",") if args.providers else None,
        replicas=args.replicas, intra_op_threads=args.intra_op_threads, max_batch_size=args.max_batch_size,
        max_delay_us=args.max_delay_us, max_queue=args.max_queue, priority_levels=args.priority_levels)
    return ServeConfig(
        model_repository=args.model_repository, host=args.host, http_port=args.http_port,
        grpc_port=args.grpc_port, metrics_port=args.metrics_port, max_request_bytes=args.max_request_bytes,
        drain_timeout_s=args.drain_timeout, engine=engine, default_max_batch_size=args.default_max_batch_size,
        ready_file=args.ready_file, access_log=args.access_log, log_level=args.log_level)


def run(args: argparse.Namespace) -> int:
    """Runs ``fastort serve`` with parsed arguments; returns the exit code."""
    from fastort.errors import FastortError

    from .server import run_server

    try:
        return run_server(config_from_args(args))
    except FastortError as e:
        print(f"fastort serve: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``fastort serve ...`` as a stand-alone entry (``python -m fastort.serve``)."""
    parser = argparse.ArgumentParser(prog="fastort")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args: List[str] = list(sys.argv[1:] if argv is None else argv)
    return run(parser.parse_args(["serve", *args]))
