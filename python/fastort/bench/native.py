"""fastort's C++ benchmark programs: finding them and running one on a model."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sysconfig
from typing import List, Optional, Sequence

from ..runtime import runtime_info
from .timing import Timing

__all__ = ["NATIVE_LABELS", "FLOOR", "native_binary", "run_native"]


NATIVE_LABELS = {
    "fastort_core": "native: fastort core (C++)",
    "fastort_core_into": "native: fastort core, into buffers (C++)",
    "iobinding_floor": "native: onnxruntime IoBinding (C++ floor)",
}
FLOOR = NATIVE_LABELS["iobinding_floor"]


def native_binary(name: str = "fastort_bench_native") -> Optional[str]:
    """The path of one of fastort's C++ programs (benchmarks, core checks), if built.

    The wheel leaves them out unless built with
    ``-C cmake.define.FASTORT_INSTALL_NATIVE_PROGRAMS=ON`` (then they are in the
    package's ``_bin/``). Looked for in ``$FASTORT_BENCH_BIN_DIR``, the package's
    ``_bin/``, the ``_bin/`` of fastort in site-packages, then the newest CMake
    build folder ``build/*/`` of the source checkout the package lives in
    (editable installs) or of the current directory (a checkout's root, where
    the tests and bench/ run).
    """
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the fastort package
    candidates = []
    override = os.environ.get("FASTORT_BENCH_BIN_DIR")
    if override:
        candidates.append(os.path.join(override, name))
    candidates.append(os.path.join(here, "_bin", name))
    for key in ("platlib", "purelib"):
        candidates.append(os.path.join(sysconfig.get_paths()[key], "fastort", "_bin", name))
    built: List[str] = []
    for root in (os.path.dirname(os.path.dirname(here)), os.getcwd()):  # python/fastort's checkout; the cwd
        built += glob.glob(os.path.join(root, "build", "*", name)) + glob.glob(os.path.join(root, "build", name))
    candidates += sorted(set(built), key=os.path.getmtime, reverse=True)
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def run_native(model_path: str, *, shape: Optional[Sequence[int]] = None, batch: int = 1, threads: int = 1,
               iters: int = 20000, rounds: int = 10, binary: Optional[str] = None,
               timeout: float = 600.0) -> List[Timing]:
    """Runs the C++ benchmark program on ``model_path`` (one float32 input of
    ``shape``, else the model's with ``batch`` for the first free dim); [] when
    the program was not built. ``batch`` is also the rows per call reported."""
    binary = binary or native_binary()
    if binary is None:
        return []
    cmd = [binary, model_path, "--lib", runtime_info()["library_path"], "--threads", str(threads),
           "--iters", str(iters), "--warmup", str(max(100, iters // 10)), "--rounds", str(rounds)]
    cmd += ["--shape", ",".join(str(int(d)) for d in shape)] if shape is not None else ["--batch", str(batch)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{binary} failed: {proc.stderr.strip()}")
    timings = []
    for line in proc.stdout.splitlines():
        d = json.loads(line)
        if "method" not in d:
            continue
        label = NATIVE_LABELS.get(d["method"], "native: " + d["method"])
        timings.append(Timing(label, d["median_us"], d["p99_us"], d["mean_us"], d["iters"], batch))
    return timings


