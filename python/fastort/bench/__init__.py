"""The measuring layer: timing methods side by side (:func:`compare`), fastort
vs plain onnxruntime on one model (:func:`side_by_side`), the C++ benchmark
programs (:func:`run_native`), seeded inputs, and built-in models
(:mod:`fastort.bench.models`).

Sits above the engine (it times engines) and below the preparation steps,
which time their results with it. ``fastort bench`` (:mod:`fastort.cli.bench`)
is its command line.
"""

from __future__ import annotations

from .inputs import SyntheticInputs, load_inputs, parse_dims, random_inputs, synthesize, tiny_inputs
from .native import FLOOR, NATIVE_LABELS, native_binary, run_native
from .sidebyside import BASELINE, format_table, side_by_side
from .timing import Timing, compare, machine_info

__all__ = ["Timing", "compare", "machine_info", "native_binary", "run_native", "NATIVE_LABELS", "FLOOR", "BASELINE",
           "side_by_side", "format_table", "random_inputs", "tiny_inputs",
           "SyntheticInputs", "synthesize", "parse_dims", "load_inputs"]
