"""``fastort bench [MODEL] [--batch N] [--dim NAME=N] [--seconds S] [--threads N] [--json]``:
per-call latency and throughput of fastort vs plain onnxruntime on one model
(the measuring itself is :mod:`fastort.bench`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict
from typing import Any, Callable

from .._version import __version__
from ..bench import BASELINE, FLOOR, format_table, native_binary, random_inputs, side_by_side
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
                    "overhead around onnxruntime. With MODEL: random inputs from the model's inputs, free dims "
                    "taking --dim, else --batch for the first dim, else 1.",
    )
    parser.add_argument("model", nargs="?", help="an .onnx file (default: the built-in tiny model)")
    parser.add_argument("--batch", type=_positive(int, 1), default=1,
                        help="rows per call for the first free dim (default 1); samples/s = rows x calls/s")
    parser.add_argument("--dim", action="append", default=[], metavar="NAME=N", help="size of a named dim (repeatable)")
    parser.add_argument("--threads", type=_positive(int, 0), default=1,
                        help="intra-op threads, 0 for onnxruntime's default (default 1)")
    parser.add_argument("--seconds", type=_positive(float, 0.1), default=8.0,
                        help="time the Python-side methods are measured, in all (default 8); the C++ program "
                             "takes about a third more")
    parser.add_argument("--no-native", action="store_true", help="skip the C++ benchmark program")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--providers", default=None, metavar="EP,EP",
                        help="compare execution providers side by side instead (e.g. openvino,cpu; fastort.bench.ep)")
    parser.add_argument("--precision", default="f32", metavar="P,P",
                        help="with --providers: precisions of the non-CPU providers (f32,bf16,fp16,auto; default f32)")
    parser.set_defaults(run=run, parser=parser)


def run(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    dims = {}
    for item in args.dim:
        name, _, value = item.partition("=")
        if not name or not value.isdigit():
            parser.error(f"--dim takes NAME=N, got {item!r}")
        dims[name] = int(value)
    if args.model is not None:
        if is_package(args.model):  # a model package: its model file, hashes checked
            args.model = load_package(args.model)[0]
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
            try:
                feeds = random_inputs(probe.inputs, args.batch, dims)
            except ValueError as e:
                print(f"fastort bench: {e}", file=sys.stderr)
                return 2
        if args.providers:
            from ..bench.ep import compare_eps, ep_cases, format_eps

            cases = ep_cases(args.providers.split(","), args.precision.split(","))
            results = compare_eps(path, feeds, cases, threads=args.threads, seconds=args.seconds,
                                  rows_per_call=args.batch)
            if args.json:
                print(json.dumps([dict(asdict(r.timing), case=r.case, max_abs_err=r.max_abs_err,
                                       runs_on=r.providers, precision=r.precision) for r in results], indent=2))
            else:
                print(format_eps(results, f"{label}: batch {args.batch}, {args.threads or 'default'} thread(s)"))
            return 0
        timings = side_by_side(path, feeds, threads=args.threads, seconds=args.seconds,
                               native=not args.no_native, rows_per_call=args.batch)
    info = runtime_info()
    by_name = {t.method: t for t in timings}
    if args.json:
        base, floor = by_name.get(BASELINE), by_name.get(FLOOR)
        rows = []
        for t in timings:
            row = asdict(t)
            row.update(calls_per_s=t.calls_per_s, samples_per_s=t.rows_per_s,
                       speedup_vs_session_run=base.median_us / t.median_us if base else None,
                       ratio_to_native_floor=t.median_us / floor.median_us if floor else None)
            rows.append(row)
        print(json.dumps({"model": label, "batch": args.batch, "threads": args.threads,
                          "inputs": {k: list(v.shape) for k, v in feeds.items()}, "fastort": __version__,
                          "onnxruntime": info["version"], "cores": os.cpu_count(), "timings": rows}, indent=2))
        return 0
    shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in feeds.items())
    title = (f"fastort {__version__} vs onnxruntime {info['version']}: {label}; inputs {shapes}; "
             f"{args.threads or 'default'} intra-op thread(s); {os.cpu_count()} cores")
    print(format_table(timings, title))
    if not args.no_native and not any(t.method.startswith("native") for t in timings):
        if native_binary() is None:
            print("(the C++ benchmark program was not found: build with FASTORT_BUILD_BENCH=ON and run from the "
                  "checkout, or set FASTORT_BENCH_BIN_DIR)", file=sys.stderr)
        else:
            print("(the C++ benchmark program takes models with one float32 input only)", file=sys.stderr)
    return 0
