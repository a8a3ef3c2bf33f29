"""fastort vs plain onnxruntime on one model, in one process: Engine.run,
InferenceSession.run, run_with_iobinding and (when built) the C++ program on
the same core, timed in alternating rounds, and the table of their ratios.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any, Callable, Dict, List, Mapping, Sequence

import numpy as np

from ..engine import Engine
from .native import FLOOR, run_native
from .timing import Timing, compare

__all__ = ["BASELINE", "side_by_side", "format_table"]

BASELINE = "onnxruntime InferenceSession.run"
BOUND = "fastort engine.bind() call"
QUEUED = "fastort Engine.run, queued (max_batch_size=8)"
COPIED = "onnxruntime iobinding + copy_outputs_to_cpu"


def side_by_side(model_path: str, feeds: Mapping[str, np.ndarray], *, threads: int = 1, seconds: float = 4.0,
                 native: bool = True, rows_per_call: int = 1) -> List[Timing]:
    """fastort Engine.run vs InferenceSession.run vs run_with_iobinding (vs the
    C++ program) on one model, in one process, in alternating rounds.

    ``run_with_iobinding`` has its input bound once (bind_cpu_input) and its
    outputs bound once to CPU (bind_output), so later runs reuse the output
    buffers and nothing crosses into Python: the least Python-side work
    onnxruntime offers. Getting the results as numpy arrays costs more on top
    (``copy_outputs_to_cpu``, timed as its own method).
    """
    import onnxruntime as ort

    engine = Engine(model_path, intra_op_threads=threads)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])
    feeds = dict(feeds)
    out_names = [o.name for o in sess.get_outputs()]
    queued = Engine(model_path, intra_op_threads=threads, max_batch_size=8)  # a lone client through the queue
    bound = engine.bind()
    args = [feeds[spec.name] for spec in engine.inputs] if set(feeds) == {s.name for s in engine.inputs} else []
    methods: Dict[str, Callable[[], Any]] = {
        "fastort Engine.run": lambda: engine.run(feeds),
        BASELINE: lambda: sess.run(out_names, feeds),
    }
    methods[QUEUED] = lambda: queued.run(feeds)
    if args:
        methods[BOUND] = lambda: bound(*args)
    try:
        binding = sess.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)
        for name in out_names:
            binding.bind_output(name, "cpu")
        sess.run_with_iobinding(binding)  # outputs allocated once, reused by later runs
    except Exception as e:  # e.g. string, sequence or map values
        print(f"(onnxruntime's IoBinding does not take this model's values, left out: {e})", file=sys.stderr)
        binding = None
    else:

        def iobinding_to_numpy() -> Any:
            sess.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()

        methods["onnxruntime run_with_iobinding"] = lambda: sess.run_with_iobinding(binding)
        methods[COPIED] = iobinding_to_numpy

    ours, theirs = engine.run(feeds), sess.run(out_names, feeds)
    for name, value in zip(out_names, theirs):
        if isinstance(value, np.ndarray) and value.dtype.kind in "fc":
            np.testing.assert_allclose(ours[name], value, rtol=1e-4, atol=1e-5)

    timings = compare(methods, seconds=seconds, rows_per_call=rows_per_call)
    engine.close()
    queued.close()
    del sess, binding
    if native and len(feeds) == 1 and next(iter(feeds.values())).dtype == np.float32:
        # About a third of the Python side's time, at the cost per call it measured.
        per_call_s = max(1e-7, min(t.median_us for t in timings) * 1e-6)
        iters = int(min(200_000, max(200, seconds / 3 / per_call_s)))
        shape = next(iter(feeds.values())).shape
        try:
            timings += run_native(model_path, shape=shape, batch=rows_per_call, threads=threads, iters=iters)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            print(f"(the C++ benchmark program failed, left out: {e})", file=sys.stderr)
    return timings


def format_table(timings: Sequence[Timing], title: str) -> str:
    """A readable table: per method the median and p99 µs per call, calls/s,
    samples/s (rows per call x calls/s) and the ratios to InferenceSession.run
    and to the C++ IoBinding floor."""
    by_name = {t.method: t for t in timings}
    base = by_name.get(BASELINE)
    floor = by_name.get(FLOOR)
    width = max([44] + [len(t.method) + 2 for t in timings])
    lines = [title, f"{'method':<{width}}{'median µs':>11}{'p99 µs':>10}{'calls/s':>11}{'samples/s':>12}"
                    f"{'vs session.run':>16}{'vs C++ floor':>14}"]
    for t in timings:
        speed = "-"
        if t is base:
            speed = "(baseline)"
        elif base and t.median_us:
            r = base.median_us / t.median_us
            speed = "same" if abs(r - 1) < 0.005 else f"{r:.2f}x faster" if r > 1 else f"{1 / r:.2f}x slower"
        fl = f"{t.median_us / floor.median_us:.2f}x" if floor and floor.median_us else "-"
        lines.append(f"{t.method:<{width}}{t.median_us:>11.2f}{t.p99_us:>10.2f}{t.calls_per_s:>11,.0f}"
                     f"{t.rows_per_s:>12,.0f}{speed:>16}{fl:>14}")
    return "\n".join(lines)
