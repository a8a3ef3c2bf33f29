"""The ``fastort`` command line: a dispatcher over command groups.

    fastort info [MODEL] [--json]            what a model takes and gives (or, alone, the runtime)
    fastort bench [MODEL] ...                fastort vs plain onnxruntime, side by side
    fastort convert MODEL -o OUT.onnx ...    PyTorch, scikit-learn, TensorFlow to ONNX
    fastort optimize MODEL -o OUT.onnx ...   graph optimization and simplification, fixed dims, float16
    fastort quantize MODEL -o OUT.onnx ...   dynamic or static int8
    fastort validate REFERENCE CANDIDATE ... compare outputs within tolerances
    fastort package MODEL -o DIR ...         a model directory with a hashed manifest
    fastort prepare MODEL -o DIR ...         all of the above, with a before/after table
    fastort serve MODEL_REPO ...             an Open Inference Protocol server (HTTP, gRPC, metrics)
    fastort tune MODEL --clients N ... -o DIR  the fastest configuration meeting your targets (docs/TUNE.md)

A command group is a module of this package with ``add_parser(subparsers)``,
which adds its subcommands to the ``fastort`` parser, each with
``set_defaults(run=function)``: ``function(args) -> exit status``. Adding a
group (``serve``, ``tune``, ...) is one module and one line in
:data:`GROUPS`. Groups import their layers' heavy parts when a command runs,
so that ``fastort --help`` stays quick.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import List, Optional, Sequence

from .._version import __version__
from ..errors import FastortError
from .messages import cli_message

__all__ = ["GROUPS", "build_parser", "command_names", "main"]

#: The command groups (modules of fastort.cli), in the order --help lists them.
GROUPS = (
    "info",
    "bench",
    "prepare",
    "serve",
    "tune",
)


def build_parser() -> "tuple[argparse.ArgumentParser, argparse._SubParsersAction[argparse.ArgumentParser]]":
    """The ``fastort`` parser with every group's subcommands, and its subparsers."""
    parser = argparse.ArgumentParser(prog="fastort", description="Fast, dependable ONNX model serving.",
                                     epilog="fastort COMMAND --help for details")
    parser.add_argument("--version", action="version", version=f"fastort {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in GROUPS:
        importlib.import_module(f"{__package__}.{group}").add_parser(subparsers)
    return parser, subparsers


def command_names() -> List[str]:
    """The subcommands, in --help order."""
    return list(build_parser()[1].choices)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``fastort`` console script and ``python -m fastort``.
    Returns the exit status: 0 done, 1 failed (the error on stderr), 2 usage,
    130 interrupted (Ctrl-C). A closed stdout (``fastort -h | head``) ends
    quietly."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("fastort: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away: point stdout at devnull so the interpreter's
        # final flush does not fail again, and end as a pipe writer does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141


def _main(argv: Optional[Sequence[str]]) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser, subparsers = build_parser()
    if not args:
        print(parser.format_usage().strip() + "\nfastort: a command is required (fastort --help lists them)",
              file=sys.stderr)
        return 2
    if args[0] in ("-h", "--help"):
        print(parser.format_help().strip())
        sys.stdout.flush()
        return 0
    command = args[0]
    if command not in subparsers.choices and not command.startswith("-"):
        print(f"fastort: unknown command {command!r}\n{parser.format_usage().strip()}", file=sys.stderr)
        return 2
    try:
        parsed = parser.parse_args(args)
        status: int = parsed.run(parsed)
        sys.stdout.flush()
        return status
    except SystemExit as e:  # argparse: --version, --help, usage errors (also a command's parser.error)
        sys.stdout.flush()
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except FastortError as e:
        print(f"fastort {command}: {type(e).__name__}: {cli_message(str(e))}", file=sys.stderr)
        return 1
