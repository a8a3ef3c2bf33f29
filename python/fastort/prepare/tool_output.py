"""What the tools fastort calls (onnxruntime's quantization, ...) write, routed
into fastort's loggers instead of the process's streams.

Some tools print to stdout unconditionally (onnxruntime's histogram
calibrators) or log through the *root* logger's module functions
(``logging.warning(...)`` in onnxruntime.quantization). Silencing them by
redirecting ``sys.stdout`` or raising the root logger's level while a step runs
silences every other thread of the process too. Instead, the tool's modules
get their own ``print`` and ``logging`` names (module globals, shadowing the
builtins for those modules only), set once and never undone: the tool's prints
become DEBUG records and its log calls records of the same level, all on
``fastort.tools.<module>`` loggers. Global streams and the root logger are
never touched.
"""

from __future__ import annotations

import builtins
import logging
import sys
import threading
import types
from typing import Any, Optional, Set

__all__ = ["LOGGER", "route_tool_output"]

#: The preparation layer's logger (``fastort.prepare``); tools log under ``fastort.tools``.
LOGGER = logging.getLogger("fastort.prepare")

_LOCK = threading.Lock()
_ROUTED: Set[str] = set()


class _ToolLogging:
    """Stands in for the ``logging`` module inside one tool module: the
    module-level ``logging.info(...)`` style calls go to a named logger; every
    other attribute is the real ``logging``'s."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def __getattr__(self, name: str) -> Any:
        return getattr(logging, name)

    def debug(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._logger.debug(msg, *args, **kwargs)

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._logger.info(msg, *args, **kwargs)

    def warning(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._logger.warning(msg, *args, **kwargs)

    warn = warning

    def error(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._logger.error(msg, *args, **kwargs)

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        self._logger.exception(msg, *args, exc_info=exc_info, **kwargs)

    def critical(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._logger.critical(msg, *args, **kwargs)

    fatal = critical

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        self._logger.log(level, msg, *args, **kwargs)


def _printer(logger: logging.Logger) -> Any:
    """A ``print`` for one tool module: to stdout (the default) -> a DEBUG
    record; to any other file -> the real print."""

    def tool_print(*values: object, sep: Optional[str] = " ", end: Optional[str] = "\n", file: Any = None,
                   flush: bool = False) -> None:
        if file is None or file is sys.stdout or file is sys.__stdout__:
            logger.debug("%s", (" " if sep is None else sep).join(str(v) for v in values))
        else:
            builtins.print(*values, sep=sep, end=end, file=file, flush=flush)

    return tool_print


def route_tool_output(package: str) -> None:
    """Route the prints and root-logger calls of every loaded module of
    ``package`` (e.g. ``"onnxruntime.quantization"``) to ``fastort.tools.*``
    loggers. Idempotent and cheap after the first call per module; call it after
    importing the tool, before running it."""
    with _LOCK:
        for name, module in list(sys.modules.items()):
            if name in _ROUTED or not isinstance(module, types.ModuleType):
                continue
            if name != package and not name.startswith(package + "."):
                continue
            logger = logging.getLogger(f"fastort.tools.{name}")
            module_dict = vars(module)
            if module_dict.get("logging") is logging:
                module_dict["logging"] = _ToolLogging(logger)
            module_dict.setdefault("print", _printer(logger))
            _ROUTED.add(name)
