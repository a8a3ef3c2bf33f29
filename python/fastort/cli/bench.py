"""``fastort bench [MODEL] [--batch N] [--dims NAME=N] [--inputs FILE] [--seconds S] [--threads N] [--json]
[--clients 1,4,16,64 [--csv FILE] [--plot FILE.png]]``: per-call latency and
throughput of fastort vs plain onnxruntime on one model, or a sweep over
concurrent clients (the measuring itself is :mod:`fastort.bench`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict
from typing import Any, Callable, Dict, List

from .._version import __version__
from ..bench import BASELINE, FLOOR, format_table, load_inputs, native_binary, parse_dims, side_by_side, synthesize
from ..bench.models import tiny_model
from ..engine import Engine
from ..engine.manifest import is_package, load_package
from ..runtime import runtime_info

__all__ = ["add_parser", "run"]


def _positive(kind: type, minimum: float) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
        return value

    return parse


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "bench",
        help="fastort vs plain onnxruntime on one model, side by side",
        description="Per-call latency and throughput of fastort vs plain onnxruntime on one model, side by side in "
                    "one process (alternating rounds), plus the C++ program on the same core when it was built. "
                    "Without MODEL: the built-in tiny model (MatMul 4x3 + Relu) at batch 1, which measures the "
                    "overhead around onnxruntime. With MODEL: --inputs FILE, else seeded random inputs whose free "
                    "dims take --dims, else --batch for dim 0, else 1 (said so in the output). --clients 1,4,16 "
                    "instead measures throughput and latency under that many concurrent clients.",
    )
    parser.add_argument("model", nargs="?", help="an .onnx file or a model package (default: the built-in tiny model)")
    parser.add_argument("--batch", type=_positive(int, 1), default=1,
                        help="rows per call for the first free dim (default 1); samples/s = rows x calls/s")
    parser.add_argument("--dims", "--dim", action="append", default=[], metavar="NAME=N", dest="dims",
                        help="size of a free dim, by name (height=224) or as INPUT:AXIS=N (x:2=224); repeatable "
                             "or comma-separated")
    parser.add_argument("--inputs", metavar="FILE", help="the inputs: an .npz file (input name -> array) or .npy "
                        "(one input), instead of random ones")
    parser.add_argument("--threads", type=_positive(int, 0), default=1,
                        help="intra-op threads, 0 for onnxruntime's default (default 1)")
    parser.add_argument("--seconds", type=_positive(float, 0.1), default=None,
                        help="time the Python-side methods are measured, in all (default 8; with --clients: per "
                             "method and client count, default 2); the C++ program takes about a third more")
    parser.add_argument("--no-native", action="store_true", help="skip the C++ benchmark program")
    parser.add_argument("--clients", type=_client_list, default=None, metavar="N[,N...]",
                        help="a concurrency sweep: fastort's Engine vs one shared InferenceSession under N client "
                             "threads each (e.g. 1,4,16,64)")
    parser.add_argument("--max-batch-size", type=_positive(int, 0), default=None,
                        help="with --clients: the engine's max_batch_size (default: a package's setting, else 32; "
                             "0: no batching)")
    parser.add_argument("--replicas", type=_positive(int, 1), default=1, help="with --clients: engine replicas")
    parser.add_argument("--csv", metavar="FILE", help="with --clients: also write the points as CSV ('-': stdout)")
    parser.add_argument("--plot", metavar="FILE.png", help="with --clients: also plot rows/s and p99 latency "
                        "(needs matplotlib)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--providers", default=None, metavar="EP,EP",
                        help="compare execution providers side by side instead (e.g. openvino,cpu; fastort.bench.ep)")
    parser.add_argument("--precision", default="f32", metavar="P,P",
                        help="with --providers: precisions of the non-CPU providers (f32,bf16,fp16,auto; default f32)")
    parser.set_defaults(run=run, parser=parser)


def _client_list(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--clients takes counts like 1,4,16,64, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"--clients takes counts >= 1 like 1,4,16,64, got {text!r}")
    return values


def run(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    try:
        dims = parse_dims(args.dims)
    except ValueError as e:
        parser.error(f"--dims: {e}")
    if args.clients is None:
        for flag, value in (("--csv", args.csv), ("--plot", args.plot), ("--max-batch-size", args.max_batch_size)):
            if value is not None:
                parser.error(f"{flag} goes with --clients")
    package_kwargs: Dict[str, Any] = {}
    if args.model is not None:
        if is_package(args.model):  # a model package: its model file, hashes checked
            args.model, package_kwargs = load_package(args.model)
        elif not os.path.isfile(args.model):
            parser.error(f"no such model file or package: {args.model}")

    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            import onnx

            path = os.path.join(tmp, "tiny.onnx")
            onnx.save(tiny_model(), path)
            label = "built-in tiny model (MatMul 4x3 + Relu)"
        else:
            path, label = args.model, args.model
        with Engine(path) as probe:
            specs = probe.inputs
        source: Dict[str, Any] = {"source": "given"}
        if args.inputs is not None:
            if dims:
                parser.error("--dims goes with synthetic inputs, not with --inputs")
            try:
                feeds = load_inputs(args.inputs, [s.name for s in specs])
            except (OSError, ValueError) as e:
                parser.error(f"--inputs: {e}")
            rows = max((v.shape[0] for v in feeds.values() if v.ndim), default=1)
            note = f"inputs from {args.inputs}: " + ", ".join(f"{k}{list(v.shape)}" for k, v in feeds.items())
        else:
            try:
                syn = synthesize(specs, args.batch, dims)
            except ValueError as e:
                parser.error(f"--dims: {e}" if dims else str(e))
            feeds, source, rows, note = syn.feeds, syn.provenance(), args.batch, syn.describe()
            if syn.guessed:
                note += " (--dims NAME=N or --inputs FILE to set them)"
        if args.providers:
            from ..bench.ep import compare_eps, ep_cases, format_eps

            cases = ep_cases(args.providers.split(","), args.precision.split(","))
            results = compare_eps(path, feeds, cases, threads=args.threads, seconds=8.0 if args.seconds is None else args.seconds,
                                  rows_per_call=rows)
            if args.json:
                print(json.dumps([dict(asdict(r.timing), case=r.case, max_abs_err=r.max_abs_err,
                                       runs_on=r.providers, precision=r.precision) for r in results], indent=2))
            else:
                print(format_eps(results, f"{label}: batch {args.batch}, {args.threads or 'default'} thread(s)"))
            return 0
        if args.clients is not None:
            return _sweep(args, path, label, feeds, rows, note, source, package_kwargs)
        timings = side_by_side(path, feeds, threads=args.threads, seconds=8.0 if args.seconds is None else args.seconds,
                               native=not args.no_native, rows_per_call=rows)
    info = runtime_info()
    by_name = {t.method: t for t in timings}
    if args.json:
        base, floor = by_name.get(BASELINE), by_name.get(FLOOR)
        out_rows = []
        for t in timings:
            row = asdict(t)
            row.update(calls_per_s=t.calls_per_s, samples_per_s=t.rows_per_s,
                       speedup_vs_session_run=base.median_us / t.median_us if base else None,
                       ratio_to_native_floor=t.median_us / floor.median_us if floor else None)
            out_rows.append(row)
        print(json.dumps({"model": label, "batch": rows, "threads": args.threads,
                          "inputs": {k: list(v.shape) for k, v in feeds.items()}, "input_source": source,
                          "fastort": __version__, "onnxruntime": info["version"], "cores": os.cpu_count(),
                          "timings": out_rows}, indent=2))
        return 0
    title = (f"fastort {__version__} vs onnxruntime {info['version']}: {label}; "
             f"{args.threads or 'default'} intra-op thread(s); {os.cpu_count()} cores")
    print(note)
    print(format_table(timings, title))
    if not args.no_native and not any(t.method.startswith("native") for t in timings):
        if native_binary() is None:
            print("(the C++ benchmark program was not found: build with FASTORT_BUILD_BENCH=ON and run from the "
                  "checkout, or set FASTORT_BENCH_BIN_DIR)", file=sys.stderr)
        else:
            print("(the C++ benchmark program takes models with one float32 input only)", file=sys.stderr)
    return 0


def _sweep(args: argparse.Namespace, path: str, label: str, feeds: Dict[str, Any], rows: int, note: str,
           source: Dict[str, Any], package_kwargs: Dict[str, Any]) -> int:
    """``--clients``: the concurrency sweep, as a table (or JSON), plus CSV and a plot on request."""
    from .._format import format_table as table
    from ..bench.concurrency import plot, sweep, to_csv

    max_batch = args.max_batch_size
    if max_batch is None:
        max_batch = int(package_kwargs.get("max_batch_size") or 0) or 32
    seconds = 2.0 if args.seconds is None else args.seconds
    points = sweep(path, feeds, args.clients, seconds=seconds, threads=args.threads, max_batch_size=max_batch,
                   replicas=args.replicas, rows=rows)
    if args.csv:
        text = to_csv(points)
        if args.csv == "-":
            sys.stdout.write(text)
        else:
            with open(args.csv, "w", encoding="utf-8") as f:
                f.write(text)
    if args.json:
        print(json.dumps({"model": label, "inputs": {k: list(v.shape) for k, v in feeds.items()},
                          "input_source": source, "threads": args.threads, "fastort": __version__,
                          "cores": os.cpu_count(), "points": [asdict(p) for p in points]}, indent=2))
    elif args.csv != "-":
        print(note)
        print(f"{label}: {args.threads or 'default'} intra-op thread(s); {os.cpu_count()} cores; "
              f"{seconds:g} s per method and client count")
        print(table(["method", "clients", "requests/s", "rows/s", "p50", "p99", "errors"],
                    [[p.method, p.clients, f"{p.requests_per_s:,.0f}", f"{p.rows_per_s:,.0f}",
                      f"{p.p50_us / 1e3:.3f} ms", f"{p.p99_us / 1e3:.3f} ms", p.errors] for p in points]))
    if args.plot:
        try:
            plot(points, args.plot, title=label)
        except ImportError as e:
            print(f"fastort bench: no plot written: {e}", file=sys.stderr)
        else:
            print(f"plot: {args.plot}", file=sys.stderr)
    return 1 if any(p.errors for p in points) else 0
