"""onnxruntime's own log lines through Python ``logging``.

The native core hands onnxruntime a logging callback that only queues each line
(it never takes the GIL, so no onnxruntime thread can deadlock on it, even at
interpreter shutdown). :func:`flush_runtime_log` moves the queued lines to the
``fastort.onnxruntime`` logger; fastort calls it after opening an engine, from
its completion thread, on close and at exit, so services can route or silence
onnxruntime with ordinary logging configuration.
"""

from __future__ import annotations

import atexit
import logging

from .. import _core

LOGGER = logging.getLogger("fastort.onnxruntime")
_LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)


def flush_runtime_log() -> int:
    """Logs the queued onnxruntime lines to ``fastort.onnxruntime``; returns how many."""
    lines, dropped = _core.drain_runtime_log()
    for severity, category, logid, location, message in lines:
        level = _LEVELS[min(max(severity, 0), len(_LEVELS) - 1)]
        if LOGGER.isEnabledFor(level):
            LOGGER.log(level, "%s", message,
                       extra={"ort_category": category, "ort_logid": logid, "ort_location": location})
    if dropped:
        LOGGER.warning("%d onnxruntime log lines were dropped (more than the queue holds between flushes)", dropped)
    return len(lines)


atexit.register(flush_runtime_log)
