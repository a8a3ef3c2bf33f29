"""``fastort tune MODEL ...``: the tuner from the command line.

    fastort tune model.onnx --clients 16 --p99-ms 20 --max-error 1e-3 --dims seq=128 -o models/tuned
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Optional, Sequence

from ..errors import ConfigError, FastortError


def _dims(items: Sequence[str]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--dims takes name=size, got {item!r}")
        try:
            out[name] = int(value)
        except ValueError:
            raise ConfigError(f"--dims {item!r}: the size must be an int") from None
    return out


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Adds the ``tune`` subcommand to an argparse ``subparsers`` object."""
    from .config import KNOBS
    from .search import DEFAULT_ALLOW

    p: argparse.ArgumentParser = subparsers.add_parser("tune", help="find the fastest configuration that meets your targets",
                              description="Measure configurations of MODEL under load on this machine and write "
                                          "the fastest that meets the targets as a fastort package (docs/TUNE.md).")
    p.add_argument("model", help="an .onnx file or a model package")
    load = p.add_mutually_exclusive_group()
    load.add_argument("--clients", type=int, help="closed-loop clients (default 1)")
    load.add_argument("--arrival-rate", type=float, help="open-loop arrivals, requests/s")
    p.add_argument("--p99-ms", type=float, help="target: most p99 latency, ms")
    p.add_argument("--max-error", type=float, help="target: most max-abs error of a model variant vs the original")
    p.add_argument("--max-size-mb", type=float, help="target: largest model file, MB")
    p.add_argument("--objective", choices=("throughput", "latency"),
                   help="most requests/s (default with --clients) or least p99 (default with --arrival-rate)")
    p.add_argument("--minutes", type=float, default=3.0, help="time budget (default 3)")
    p.add_argument("--trials", type=int, help="most candidates measured")
    p.add_argument("--inputs", help=".npy/.npz sample requests (default: synthesised from the declared shapes)")
    p.add_argument("--calibration", help=".npy/.npz calibration data for static int8")
    p.add_argument("--dims", action="append", default=[], metavar="NAME=SIZE",
                   help="size of a symbolic dim for synthetic inputs (repeatable)")
    p.add_argument("--allow-default-dims", action="store_true", help="accept 1 for symbolic dims not given")
    p.add_argument("--providers", help="comma-separated providers to try (default: every one available)")
    p.add_argument("--allow", default=",".join(DEFAULT_ALLOW),
                   help=f"comma-separated knobs to search, of {','.join(KNOBS)} (default: all)")
    p.add_argument("--no-baseline", action="store_true", help="skip the plain onnxruntime baseline")
    p.add_argument("-o", "--output", help="write the winner as a package into this directory")
    p.add_argument("--overwrite", action="store_true", help="replace the package in --output")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--plot", help="save throughput vs p99 as a PNG (needs matplotlib)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Runs ``fastort tune`` for parsed ``args``; 0 when the winner meets the
    targets, 3 when none does (the closest is still written), 1 on errors."""
    from .config import Budget, Targets
    from .search import tune

    try:
        result = tune(
            args.model,
            inputs=args.inputs,
            dims=_dims(args.dims),
            allow_default_dims=args.allow_default_dims,
            clients=args.clients,
            arrival_rate=args.arrival_rate,
            targets=Targets(p99_ms=args.p99_ms, max_error=args.max_error, max_size_mb=args.max_size_mb),
            budget=Budget(minutes=args.minutes, trials=args.trials),
            providers=args.providers.split(",") if args.providers else None,
            allow=[a for a in args.allow.split(",") if a],
            objective=args.objective,
            calibration=args.calibration,
            output=args.output,
            overwrite=args.overwrite,
            progress=not args.quiet and not args.json,
        )
    except FastortError as e:
        print(f"fastort tune: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(result.to_json())
    else:
        print(result.table())
        if result.package_dir:
            print(f"package: {result.package_dir} (Engine({result.package_dir!r}) applies the winner's settings)")
    if args.plot:
        saved = result.plot(args.plot)
        print(f"plot: {saved}" if saved else "plot skipped: matplotlib is not installed (pip install matplotlib)",
              file=sys.stderr if args.json else sys.stdout)
    return 0 if result.feasible else 3


def main(argv: Optional[List[str]] = None) -> int:
    """``fastort tune`` on its own (what fastort.cli calls)."""
    parser = argparse.ArgumentParser(prog="fastort")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["tune"] + list(sys.argv[1:] if argv is None else argv))
    return int(args.run(args))
