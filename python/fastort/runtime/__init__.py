"""The runtime layer: finding and loading libonnxruntime into the native core,
describing it (:func:`runtime_info`), sizing its global thread pools, and the
execution providers (names, options, why one cannot be used).

Imports only :mod:`fastort.errors` and the native ``fastort._core``.
"""

from __future__ import annotations

from .library import configure_global_threads, find_library, load, preload_cuda_libraries, runtime_info
from .logs import flush_runtime_log

__all__ = ["configure_global_threads", "find_library", "flush_runtime_log", "load", "preload_cuda_libraries",
           "runtime_info"]
