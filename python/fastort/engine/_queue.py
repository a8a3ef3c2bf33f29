"""Python side of the request queue: completions to futures, and map()'s chunks."""

from __future__ import annotations

import asyncio
import concurrent.futures
import warnings
from typing import Any, Iterator, List, Mapping, Optional, Tuple

import numpy as np

from .. import _core
from ..errors import ConfigError
from ..runtime.logs import flush_runtime_log


def deliver_completions(core: "_core.Engine") -> None:
    """Hands finished requests to their futures; ends when the engine closes."""
    while True:
        items = core.pop_completions(0.25)
        flush_runtime_log()  # onnxruntime's lines logged by worker threads
        if items is None:
            return
        for token, result, error, queue_us, compute_us in items:
            if isinstance(token, concurrent.futures.Future):
                if token.cancelled():
                    continue
                # Per-request timing (Triton's queue vs compute durations).
                token.timing = {"queue_us": queue_us, "compute_us": compute_us}  # type: ignore[attr-defined]
                try:
                    if error is not None:
                        token.set_exception(error)
                    else:
                        token.set_result(result)
                except concurrent.futures.InvalidStateError:
                    pass
            else:
                loop, future = token
                try:
                    loop.call_soon_threadsafe(settle, future, result, error)
                except RuntimeError:  # the loop is closed: nobody is waiting
                    pass


def settle(future: "asyncio.Future[Any]", result: Any, error: Optional[BaseException]) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def chunks(
    data: Any, batch_size: int, axis: int, names: List[str]
) -> Tuple[Iterator[Tuple[Any, int]], Optional[int]]:
    """Cuts ``data`` into requests; returns them with the total rows (if known)."""
    if isinstance(data, np.ndarray) or (isinstance(data, Mapping) and data and
                                        all(isinstance(v, np.ndarray) for v in data.values())):
        arrays = {names[0]: data} if isinstance(data, np.ndarray) else dict(data)
        if isinstance(data, np.ndarray) and len(names) != 1:
            raise ConfigError(f"map() got one array for a model with inputs {names}: pass a dict")
        rows = {a.shape[axis] if a.ndim > axis else -1 for a in arrays.values()}
        if len(rows) != 1 or -1 in rows:
            raise ConfigError(f"map(): the arrays disagree on the number of rows along axis {axis}")
        total = rows.pop()

        def gen() -> Iterator[Tuple[Any, int]]:
            for start in range(0, total, batch_size):
                stop = min(total, start + batch_size)
                chunk = {k: np.take(v, np.arange(start, stop), axis=axis) if axis else v[start:stop]
                         for k, v in arrays.items()}
                yield chunk, stop - start

        return gen(), total

    def items() -> Iterator[Tuple[Any, int]]:
        for request in data:
            yield request, 1

    total_requests = len(data) if hasattr(data, "__len__") else None
    return items(), total_requests


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: Optional[int], enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        warnings.warn("fastort: progress=True needs tqdm (pip install tqdm)", stacklevel=3)
        return _NoBar()
    return tqdm(total=total, unit="rows", unit_scale=True, dynamic_ncols=True)
