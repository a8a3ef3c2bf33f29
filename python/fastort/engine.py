"""The Engine: one ONNX model served by fastort's native core.

Inputs are numpy arrays handed to onnxruntime over their own memory; outputs
come back as numpy arrays that own onnxruntime's buffers. Neither is copied.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import threading
import warnings
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    Deque,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import numpy as np

from . import _core, _runtime
from ._queue import chunks, deliver_completions, progress_bar
from ._source import check_external_data, check_no_external_data, describe, model_bytes
from ._weights import release_pages, split_weights
from .errors import ConfigError, EngineClosedError, InvalidInputError, ModelLoadError, ModelNotFoundError

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["Engine", "IOSpec", "BatchConfig", "ModelLike", "Dim", "Inputs"]

ModelLike = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, "onnx.ModelProto"]
Dim = Union[int, str, None]
Inputs = Union[Mapping[str, Any], Sequence[Any], np.ndarray]

#: Short provider names accepted next to onnxruntime's full ones.
PROVIDER_ALIASES: Dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dnnl": "DnnlExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}

GRAPH_OPTIMIZATION_LEVELS: Dict[str, int] = {"disable": 0, "basic": 1, "extended": 2, "layout": 3, "all": 99}
EXECUTION_MODES: Dict[str, int] = {"sequential": 0, "parallel": 1}
LOG_LEVELS: Dict[str, int] = {"verbose": 0, "info": 1, "warning": 2, "error": 3, "fatal": 4}


@dataclass(frozen=True)
class IOSpec:
    """One model input or output.

    ``dtype`` and ``shape`` are None for non-tensor values (sequences, maps).
    A dim of ``shape`` is an int when fixed, the dim's symbolic name (str) when
    the model names it, or None when it is free and unnamed.
    """

    name: str
    type: str
    dtype: Optional[np.dtype]
    shape: Optional[Tuple[Dim, ...]]

    @property
    def is_tensor(self) -> bool:
        return self.type.startswith("tensor(")


def _choose(value: Union[str, int], table: Mapping[str, int], what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value in table.values():
        return value
    if isinstance(value, str) and value.lower() in table:
        return table[value.lower()]
    raise ConfigError(f"{what} must be one of {sorted(table)}, got {value!r}")


def _provider_hint(name: str) -> str:
    if name == "CUDAExecutionProvider":
        return "; install a CUDA-enabled runtime with `pip install onnxruntime-gpu` (in place of onnxruntime)"
    return ""


def _providers(providers: Union[str, Iterable[str]], strict: bool) -> list:
    """onnxruntime provider names for ``providers``. One this runtime lacks is
    skipped with a warning that says why (an error with ``strict``); the CPU
    provider, which every runtime has, always comes last."""
    if isinstance(providers, str):
        providers = [providers]
    names: List[str] = []
    for p in providers:
        if not isinstance(p, str):
            raise ConfigError(f"providers must be names (str), got {type(p).__name__}")
        name = PROVIDER_ALIASES.get(p.lower(), p)
        if name not in PROVIDER_ALIASES.values() and not name.endswith("ExecutionProvider"):
            raise ConfigError(
                f"unknown execution provider {p!r}: use a short name ({', '.join(PROVIDER_ALIASES)}) "
                "or onnxruntime's full name (e.g. 'CUDAExecutionProvider')"
            )
        if name not in names:
            names.append(name)
    if not names:
        raise ConfigError("providers is empty: give at least one, e.g. ('cpu',)")
    info = _runtime.runtime_info()
    chosen = []
    for name in names:
        if name in info["providers"]:
            chosen.append(name)
            continue
        reason = (f"execution provider {name!r} is not available in onnxruntime {info['version']} "
                  f"(it offers {', '.join(info['providers'])}){_provider_hint(name)}")
        if strict:
            raise ConfigError(reason)
        warnings.warn(f"fastort: {reason}; using the next provider instead", RuntimeWarning, stacklevel=4)
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


#: Most threads a pool may have (onnxruntime takes the count as a C int).
MAX_THREADS = 2**31 - 1


def _threads(value: Optional[int], what: str) -> int:
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_THREADS:
        raise ConfigError(
            f"{what} must be a non-negative int (0 = onnxruntime's default) up to {MAX_THREADS}, got {value!r}"
        )
    return value


@dataclass(frozen=True)
class BatchConfig:
    """Dynamic batching settings (see :class:`Engine`).

    Attributes:
        max_batch_size: most rows in one batch.
        max_delay_us: longest time the oldest queued request waits for a batch
            to fill. A request is dispatched at once when no batch is running.
        max_queue: most queued requests; beyond it ``QueueFullError`` (0: no limit).
        max_queue_rows: most queued rows (0: no limit).
        batch_axis: the axis requests are stacked along.
        priority_levels: number of priority levels; 0 is the most urgent.
        padding: ``{input name: {dim: pad value}}``: requests that differ in that
            dim are batched together, padded to the longest; outputs whose dim
            has the same symbolic name are cut back to each request's length.
    """

    max_batch_size: int = 32
    max_delay_us: int = 2000
    max_queue: int = 1024
    max_queue_rows: int = 0
    batch_axis: int = 0
    priority_levels: int = 1
    padding: Mapping[str, Mapping[int, float]] = field(default_factory=dict)


def _int_option(value: Any, what: str, minimum: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{what} must be an int >= {minimum}, got {value!r}")
    return int(value)


class Engine:
    """Runs one ONNX model with onnxruntime through fastort's C++ core.

    Args:
        model: a path to an ``.onnx`` file (external data is resolved next to it),
            the serialized model as ``bytes``, or an ``onnx.ModelProto``.
        providers: execution providers in priority order; short names
            (``"cpu"``, ``"cuda"``) or onnxruntime's (``"CPUExecutionProvider"``).
        intra_op_threads: threads inside one operator, per replica (0: onnxruntime's
            default of one per core; with several replicas, cores / replicas).
        inter_op_threads: threads across operators in parallel mode (0: default).
        graph_optimization: ``"disable"``, ``"basic"``, ``"extended"``, ``"layout"`` or ``"all"``.
        execution_mode: ``"sequential"`` or ``"parallel"``.
        log_level: onnxruntime's log level for this session: ``"verbose"`` ... ``"fatal"``.
        session_config: extra onnxruntime session config entries, e.g.
            ``{"session.intra_op.allow_spinning": "0"}``.
        strict_providers: fail when a requested provider cannot be used,
            instead of falling back (with a warning) to the next one and CPU.
        replicas: onnxruntime sessions of the model that serve requests in
            parallel; they share onnxruntime's prepacked weights.
        use_global_thread_pool: run every replica on onnxruntime's process-wide
            thread pools (see :func:`fastort.configure_global_threads`) instead of
            pools of their own.
        max_batch_size, max_delay_us, max_queue, max_queue_rows, batch_axis,
        priority_levels, padding: giving ``max_batch_size`` (or ``batching``)
            turns dynamic batching on; see :class:`BatchConfig`.
        batching: a :class:`BatchConfig` instead of the separate keywords.
        max_request_bytes: most input bytes one request may carry (string
            tensors: their UTF-8 bytes + 16 per element); a larger one fails with
            RequestTooLargeError before fastort copies or allocates anything
            for it. 0: no bound.
        max_request_rows: most rows (dim ``batch_axis`` of its inputs) one
            request may carry; 0: no bound.

    Thread-safe: any number of threads may call :meth:`run` and :meth:`submit`.
    """

    def __init__(
        self,
        model: ModelLike,
        *,
        providers: Union[str, Sequence[str]] = ("cpu",),
        intra_op_threads: Optional[int] = 0,
        inter_op_threads: Optional[int] = 0,
        graph_optimization: Union[str, int] = "all",
        execution_mode: Union[str, int] = "sequential",
        log_level: Union[str, int] = "warning",
        session_config: Optional[Mapping[str, str]] = None,
        strict_providers: bool = False,
        replicas: int = 1,
        use_global_thread_pool: bool = False,
        share_weights: bool = True,
        max_batch_size: Optional[int] = None,
        max_delay_us: int = 2000,
        max_queue: int = 1024,
        max_queue_rows: int = 0,
        batch_axis: int = 0,
        priority_levels: int = 1,
        padding: Optional[Mapping[str, Mapping[int, float]]] = None,
        batching: Optional[BatchConfig] = None,
        max_request_bytes: int = 0,
        max_request_rows: int = 0,
    ) -> None:
        self._lock = threading.Lock()
        self._core: Optional[_core.Engine] = None
        self._completion_thread: Optional[threading.Thread] = None
        self._source = describe(model)
        replicas = _int_option(replicas, "replicas", 1)
        config = []
        for key, value in (session_config or {}).items():
            if not isinstance(key, str):
                raise ConfigError(f"session_config keys must be str, got {key!r}")
            config.append((key, value if isinstance(value, str) else str(value)))
        intra = _threads(intra_op_threads, "intra_op_threads")
        if intra == 0 and replicas > 1 and not use_global_thread_pool:
            intra = max(1, (os.cpu_count() or 1) // replicas)
        options: Dict[str, Any] = {
            "providers": _providers(providers, strict_providers),
            "intra_op_threads": intra,
            "inter_op_threads": _threads(inter_op_threads, "inter_op_threads"),
            "use_global_thread_pools": bool(use_global_thread_pool),
            "graph_optimization": _choose(graph_optimization, GRAPH_OPTIMIZATION_LEVELS, "graph_optimization"),
            "execution_mode": _choose(execution_mode, EXECUTION_MODES, "execution_mode"),
            "log_level": _choose(log_level, LOG_LEVELS, "log_level"),
            "config": config,
            "replicas": replicas,
            "share_weights": bool(share_weights),
            "max_request_bytes": _int_option(max_request_bytes, "max_request_bytes", 0),
            "max_request_rows": _int_option(max_request_rows, "max_request_rows", 0),
        }
        if batching is None and max_batch_size is not None:
            batching = BatchConfig(
                max_batch_size=max_batch_size,
                max_delay_us=max_delay_us,
                max_queue=max_queue,
                max_queue_rows=max_queue_rows,
                batch_axis=batch_axis,
                priority_levels=priority_levels,
                padding=dict(padding or {}),
            )
        elif batching is not None and max_batch_size is not None:
            raise ConfigError("give either batching=BatchConfig(...) or max_batch_size=..., not both")
        options["row_axis"] = _int_option(batching.batch_axis if batching is not None else batch_axis,
                                          "batch_axis", 0)
        # Settings of the request queue behind submit()/run_async() when batching is off.
        self._queue_config = batching or BatchConfig(
            max_batch_size=1, max_delay_us=0, max_queue=max_queue, max_queue_rows=max_queue_rows,
            priority_levels=priority_levels,
        )

        source: Union[str, bytes]
        if isinstance(model, (str, os.PathLike)):
            path = os.fspath(model)
            if not os.path.exists(path):
                raise ModelNotFoundError(f"model file not found: {path}")
            if os.path.isdir(path):
                raise ModelLoadError(f"{path} is a directory, not an ONNX model file")
            check_external_data(path)
            source = path
        else:
            source = model_bytes(model)
            check_no_external_data(source)
        weights: List[Tuple[str, np.ndarray]] = []
        self._weights_mapping: Any = None
        if replicas > 1 and share_weights:
            source, weights, self._weights_mapping = split_weights(model, source)
        try:
            core = _core.Engine.open(source, options, weights)
        except ModelLoadError as e:
            accelerators = [p for p in options["providers"] if p != "CPUExecutionProvider"]
            if strict_providers or not accelerators:
                raise
            # e.g. onnxruntime-gpu without a GPU or without its CUDA libraries
            options["providers"] = ["CPUExecutionProvider"]
            core = _core.Engine.open(source, options, weights)
            warnings.warn(f"fastort: {', '.join(accelerators)} could not be used ({e}); running on CPU",
                          RuntimeWarning, stacklevel=2)
        del weights
        release_pages(self._weights_mapping)
        self._core = core
        self.inputs: Tuple[IOSpec, ...] = tuple(IOSpec(*t) for t in core.inputs)
        self.outputs: Tuple[IOSpec, ...] = tuple(IOSpec(*t) for t in core.outputs)
        self.providers: Tuple[str, ...] = tuple(options["providers"])
        self.replicas: int = replicas
        self.batch_config: Optional[BatchConfig] = batching
        _live_engines.add(self)
        if batching is not None:
            self._start_queue(batching, route_runs=True)
            if not core.batching and batching.max_batch_size > 1:
                warnings.warn(
                    f"fastort: {self._source} cannot be batched ({core.unbatchable_reason}); "
                    "requests are queued and served one at a time",
                    stacklevel=2,
                )

    # -- running -------------------------------------------------------------

    def run(
        self,
        inputs: Inputs,
        *,
        outputs: Optional[Sequence[str]] = None,
        out: Optional[Mapping[str, np.ndarray]] = None,
        timeout: Optional[float] = None,
        priority: int = 0,
    ) -> Dict[str, Any]:
        """Run the model once and wait for the result.

        Args:
            inputs: a dict of input name -> numpy array, a list/tuple of arrays in
                input order, or, for a one-input model, the array itself. An array
                that is C-contiguous and of the input's dtype is read in place;
                a non-contiguous or byte-swapped one is copied once. dtypes are
                never cast: a wrong dtype raises InvalidInputError.
            outputs: names of the outputs wanted (default: all).
            out: output name -> preallocated array (C-contiguous, writeable, the
                output's dtype and exact shape) that onnxruntime writes into.
                Such a call bypasses the batcher.
            timeout: seconds the request may wait in the batching queue before
                it fails with RequestTimeoutError (batching engines only).
            priority: the request's priority level, 0 most urgent (batching only).

        Returns:
            A dict of output name -> value, in the model's output order (or the
            order of ``outputs``). Tensors are numpy arrays over onnxruntime's
            buffers (no copy; a batched request gets a view of its rows); string
            tensors are object arrays of str; sequences are lists, maps dicts.
        """
        core = self._core
        if core is None:
            raise EngineClosedError(f"engine for {self._source} is closed")
        return core.run(inputs, outputs, out, timeout or 0.0, priority)

    def submit(
        self,
        inputs: Inputs,
        *,
        outputs: Optional[Sequence[str]] = None,
        timeout: Optional[float] = None,
        priority: int = 0,
    ) -> "concurrent.futures.Future[Dict[str, Any]]":
        """Queue a request; returns a Future of what :meth:`run` would return.

        Cancelling the future while the request is queued removes it. Raises
        QueueFullError at once when the queue is full (backpressure).
        """
        core = self._queue()
        future: "concurrent.futures.Future[Dict[str, Any]]" = concurrent.futures.Future()
        rid = core.submit(inputs, outputs, future, timeout or 0.0, priority)
        future.add_done_callback(lambda f: f.cancelled() and core.cancel(rid))
        return future

    async def run_async(
        self,
        inputs: Inputs,
        *,
        outputs: Optional[Sequence[str]] = None,
        timeout: Optional[float] = None,
        priority: int = 0,
    ) -> Dict[str, Any]:
        """:meth:`run` for asyncio: queues the request and awaits it, with no
        thread per request. Cancelling the awaiting task removes a queued request."""
        core = self._queue()
        loop = asyncio.get_running_loop()
        future: "asyncio.Future[Dict[str, Any]]" = loop.create_future()
        rid = core.submit(inputs, outputs, (loop, future), timeout or 0.0, priority)
        try:
            return await future
        except asyncio.CancelledError:
            core.cancel(rid)
            raise

    def map(
        self,
        data: Union[np.ndarray, Mapping[str, np.ndarray], Iterable[Inputs]],
        *,
        batch_size: Optional[int] = None,
        outputs: Optional[Sequence[str]] = None,
        progress: bool = False,
        max_in_flight: Optional[int] = None,
    ) -> Iterator[Dict[str, Any]]:
        """Score a data set; yields one result dict per chunk or request, in order.

        ``data`` is a large array (one-input models) or a dict of arrays, cut
        into chunks of ``batch_size`` rows along the batch axis, or an iterable
        of requests. At most ``max_in_flight`` requests are queued at a time,
        so memory stays bounded however large the data. ``progress`` shows a
        tqdm bar in rows (or requests) per second.
        """
        core = self._queue()
        config = self.batch_config or self._queue_config
        if batch_size is None:
            batch_size = config.max_batch_size if config.max_batch_size > 1 else 64
        batch_size = _int_option(batch_size, "batch_size", 1)
        window = _int_option(max_in_flight or max(4, 4 * self.replicas), "max_in_flight", 1)
        requests, total = chunks(data, batch_size, config.batch_axis, [i.name for i in self.inputs])
        bar = progress_bar(total, progress)
        pending: Deque[Tuple["concurrent.futures.Future[Dict[str, Any]]", int]] = deque()
        try:
            for request, rows in requests:
                while len(pending) >= window:
                    future, n = pending.popleft()
                    yield future.result()
                    bar.update(n)
                pending.append((self.submit(request, outputs=outputs), rows))
            while pending:
                future, n = pending.popleft()
                yield future.result()
                bar.update(n)
        finally:
            for future, _ in pending:
                future.cancel()
            bar.close()
        del core

    # -- stats and lifecycle -------------------------------------------------

    def stats(self, reset: bool = False) -> Dict[str, Any]:
        """Counters of the request queue: requests, rows, batches, a batch-size
        histogram, queue depth, latency p50/p90/p99 (µs, queue to result) and
        throughput since the engine started or the last reset."""
        core = self._core
        if core is None:
            raise EngineClosedError(f"engine for {self._source} is closed")
        stats = dict(core.stats()) if core.has_batcher else {}
        if reset:
            core.reset_stats()
        return stats

    def reset_stats(self) -> None:
        self.stats(reset=True)

    def close(self, *, drain: bool = True) -> None:
        """Stop accepting requests and release the sessions. With ``drain`` every
        queued request still runs; without, each fails with EngineClosedError.
        Runs in flight finish first. Idempotent."""
        with self._lock:
            core, self._core = self._core, None
            thread, self._completion_thread = self._completion_thread, None
        if core is None:
            return
        core.close(drain)
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    @property
    def closed(self) -> bool:
        return self._core is None

    @property
    def batching(self) -> bool:
        """Whether requests are merged into batches."""
        core = self._core
        return bool(core is not None and core.batching)

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter teardown
            pass

    def __repr__(self) -> str:
        state = "closed" if self.closed else ", ".join(self.providers)
        ins = ", ".join(f"{i.name}: {_spec_str(i)}" for i in self.inputs)
        outs = ", ".join(f"{o.name}: {_spec_str(o)}" for o in self.outputs)
        extra = f", replicas={self.replicas}" if self.replicas > 1 else ""
        if self.batch_config is not None:
            extra += f", max_batch_size={self.batch_config.max_batch_size}"
        return f"<fastort.Engine {self._source} ({ins}) -> ({outs}) [{state}{extra}]>"

    # -- internals -------------------------------------------------------------

    def _queue(self) -> "_core.Engine":
        """The core, with its request queue (and completion thread) running."""
        core = self._core
        if core is None:
            raise EngineClosedError(f"engine for {self._source} is closed")
        if not core.has_batcher:
            with self._lock:
                if self._core is None:
                    raise EngineClosedError(f"engine for {self._source} is closed")
                if not core.has_batcher:
                    self._start_queue(self._queue_config, route_runs=False)
        return core

    def _start_queue(self, config: BatchConfig, route_runs: bool) -> None:
        core = self._core
        assert core is not None
        names = [i.name for i in self.inputs]
        padding = []
        for name, dims in (config.padding or {}).items():
            if name not in names:
                raise ConfigError(f"padding names input {name!r}, which the model does not have ({', '.join(names)})")
            for dim, value in dims.items():
                padding.append((names.index(name), _int_option(dim, "padding dim", 0), float(value)))
        try:
            core.start_batcher(
                _int_option(config.max_batch_size, "max_batch_size", 1),
                float(_int_option(config.max_delay_us, "max_delay_us", 0)),
                _int_option(config.max_queue, "max_queue", 0),
                _int_option(config.max_queue_rows, "max_queue_rows", 0),
                _int_option(config.batch_axis, "batch_axis", 0),
                _int_option(config.priority_levels, "priority_levels", 1),
                padding,
                route_runs,
            )
        except InvalidInputError as e:  # the model and these settings do not fit
            raise ConfigError(str(e)) from None
        thread = threading.Thread(
            target=deliver_completions, args=(core,), name=f"fastort-completions-{id(self):x}", daemon=True
        )
        thread.start()
        self._completion_thread = thread


#: Engines not closed yet; closed at interpreter exit, before Python stops its
#: threads, so that no thread is left waiting inside the native core.
_live_engines: "weakref.WeakSet[Engine]" = weakref.WeakSet()


@atexit.register
def _close_all_engines() -> None:
    for engine in list(_live_engines):
        try:
            engine.close(drain=False)
        except Exception:  # pragma: no cover - best effort at exit
            pass


def _spec_str(spec: IOSpec) -> str:
    if spec.dtype is None or spec.shape is None:
        return spec.type
    dims = ", ".join("?" if d is None else str(d) for d in spec.shape)
    return f"{spec.dtype}[{dims}]"
