"""The Engine: one ONNX model served by fastort's native core.

Inputs are numpy arrays handed to onnxruntime over their own memory; outputs
come back as numpy arrays that own onnxruntime's buffers. Neither is copied.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import functools
import inspect
import os
import threading
import warnings
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Deque,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
    cast,
)

import numpy as np

from . import _core, _runtime
from . import _providers as _prov
from . import ep_precision as _precision
from ._queue import chunks, deliver_completions, progress_bar
from ._source import check_external_data, check_no_external_data, describe, model_bytes
from ._weights import release_pages, split_weights
from .package import is_package, load_package
from .errors import (ConfigError, EngineClosedError, InvalidInputError, ModelLoadError, ModelNotFoundError,
                     ProviderUnavailableError)

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["Engine", "IOSpec", "BatchConfig", "ModelLike", "Dim", "Inputs"]

ModelLike = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, "onnx.ModelProto"]
Dim = Union[int, str, None]
Inputs = Union[Mapping[str, Any], Sequence[Any], np.ndarray]

PROVIDER_ALIASES = _prov.PROVIDER_ALIASES
OUTPUT_DEVICES = ("cpu", "cuda")
#: Host inputs of CUDA engines at least this large are staged through pinned memory.
PINNED_STAGING_MIN_BYTES = 64 * 1024
OUTPUT_FORMATS = ("numpy", "dlpack", "torch", "cupy")

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


def _providers(providers: Any, strict: bool, precision: str = _precision.DEFAULT_PRECISION
               ) -> Tuple[List[str], List[List[Tuple[str, str]]], Dict[str, str]]:
    """onnxruntime provider names and options for ``providers``, and the precision
    each runs. One this runtime lacks is skipped with a warning that says why (an
    error with ``strict``); the CPU provider, which every runtime has, always
    comes last. Names the runtime does not build in are looked for among plugin
    EP libraries (fastort.devices)."""
    parsed = _prov.parse(providers)
    info = _runtime.runtime_info(probe=False)
    names: List[str] = []
    options: List[List[Tuple[str, str]]] = []
    precisions: Dict[str, str] = {}
    for name, opts in parsed:
        if name in info["providers"]:
            if name == _prov.CUDA:
                _runtime.preload_cuda_libraries()
            opts, precisions[name] = _precision.apply(name, opts, precision)
            names.append(name)
            options.append(opts)
            continue
        reason = _plugin_ep(name, opts, precision, names, options, precisions)
        if not reason:
            continue
        if reason is _NOT_A_PLUGIN:
            reason = _prov.missing_reason(name, info["version"], info["providers"])
        if strict:
            raise ProviderUnavailableError(reason)
        warnings.warn(f"fastort: {reason}; using the next provider instead", RuntimeWarning, stacklevel=4)
    if "CPUExecutionProvider" not in names:
        names.append("CPUExecutionProvider")
        options.append([])
        precisions["CPUExecutionProvider"] = "model"
    if _precision.check(precision) in ("bf16", "fp16") and precision not in precisions.values():
        warnings.warn(f"fastort: precision={precision!r} applies to none of {', '.join(names)} (they run the "
                      "model's own precision)", RuntimeWarning, stacklevel=4)
    return names, options, precisions


_NOT_A_PLUGIN = "not a plugin EP"  # _plugin_ep's answer for names no plugin library claims


def _plugin_ep(name: str, opts: List[Tuple[str, str]], precision: str, names: List[str],
               options: List[List[Tuple[str, str]]], precisions: Dict[str, str]) -> str:
    """Adds plugin EP ``name`` when it can run here; else returns why not."""
    from . import plugin_eps as devices

    if not devices.is_plugin_name(name):
        return _NOT_A_PLUGIN
    reason = devices.plugin_reason(name)
    if reason:
        return reason
    device = devices.device_for(name, dict(opts))
    if device is None:
        have = ", ".join(d.label for d in devices.devices() if d.ep_name == name)
        return f"{name} has no device of type {dict(opts).get('device_type')!r} here (it has: {have})"
    opts, precisions[name] = _precision.apply(
        name, opts, precision, device.ep_metadata.get("ov_device", device.device_type),
        device.ep_metadata.get("OPTIMIZATION_CAPABILITIES", ""))
    if precisions[name].startswith("auto"):
        warnings.warn(f"fastort: {name} runs in its own precision on {device.label}: {precisions[name]}; "
                      "outputs may differ from f32 (pass precision='f32' for the CPU EP's results)",
                      RuntimeWarning, stacklevel=5)
    names.append(name)
    options.append(opts)
    return ""


def _policy(providers: Any, device_policy: Optional[str], strict: bool) -> str:
    """onnxruntime's selection policy for ``providers="auto"`` / ``device_policy``
    ("" when providers are given). Without plugin support: a warning and "" (CPU),
    or with ``strict`` an error."""
    auto = isinstance(providers, str) and providers.lower() == "auto"
    if device_policy is None and not auto:
        return ""
    from . import plugin_eps as devices

    policy = (device_policy or "max_performance")
    if not isinstance(policy, str) or policy.lower() not in devices.DEVICE_POLICIES:
        raise ConfigError(f"device_policy must be one of {', '.join(devices.DEVICE_POLICIES)}, got {device_policy!r}")
    if device_policy is not None and not auto and tuple(_prov.parse(providers)) != (("CPUExecutionProvider", []),):
        raise ConfigError("give either providers=[...] or device_policy (with providers='auto'), not both")
    support = _core.plugin_support()
    if not support["plugin_eps"]:
        reason = f"automatic device selection needs plugin EP support: {support['reason']}"
        if strict:
            raise ProviderUnavailableError(reason)
        warnings.warn(f"fastort: {reason}; running on CPU", RuntimeWarning, stacklevel=4)
        return ""
    devices.plugin_libraries()  # register the installed plugins, so that onnxruntime can pick them
    return policy.lower()


def _chosen(replica: str) -> Tuple[str, ...]:
    """EP names of a replica_providers entry: "A(CPU), B(cpu)" -> ("A", "B")."""
    return tuple(dict.fromkeys(p.strip().split("(")[0] for p in replica.split(",") if p.strip())) or (
        "CPUExecutionProvider",)


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


_F = TypeVar("_F", bound=Callable[..., None])


def _note_explicit_kwargs(init: _F) -> _F:
    """Records which keywords a caller gave, so that a model package's settings
    fill in only the others (a default value given explicitly still wins)."""

    @functools.wraps(init)
    def wrapper(self: Any, model: Any, **kwargs: Any) -> None:
        self._explicit_kwargs = frozenset(kwargs)
        init(self, model, **kwargs)

    return cast(_F, wrapper)


class Engine:
    """Runs one ONNX model with onnxruntime through fastort's C++ core.

    Args:
        model: a path to an ``.onnx`` file (external data is resolved next to it),
            the serialized model as ``bytes``, an ``onnx.ModelProto``, or a model
            package directory made by :func:`fastort.package.package` or
            ``fastort prepare`` (its files' hashes are checked first).
        providers: execution providers in priority order; short names
            (``"cpu"``, ``"cuda"``), onnxruntime's (``"CPUExecutionProvider"``), or
            ``(name, options)`` tuples, e.g. ``("cuda", {"device_id": 0,
            "gpu_mem_limit": 2 << 30, "arena_extend_strategy": "kSameAsRequested",
            "cudnn_conv_algo_search": "HEURISTIC", "enable_cuda_graph": False,
            "use_tf32": True})``. See docs/GPU.md. Plugin EPs (``"openvino"``, with
            ``pip install onnxruntime-ep-openvino``) take their own option names,
            plus ``device_type`` (``"CPU"``/``"GPU"``/``"NPU"``: which of its
            devices). ``"auto"``: onnxruntime picks by ``device_policy``. See docs/DEVICES.md.
        device_policy: onnxruntime's automatic EP selection (``"prefer_gpu"``,
            ``"prefer_npu"``, ``"prefer_cpu"``, ``"max_performance"``,
            ``"max_efficiency"``, ``"min_overall_power"``) instead of ``providers``.
        precision: ``"f32"`` (default: the CPU EP's results), ``"bf16"``, ``"fp16"``
            or ``"auto"`` (the EP's own choice, reported) for EPs that choose a
            precision themselves (OpenVINO); ``engine.precision`` says what each got.
        output_device: where :meth:`run` leaves outputs when it returns tensors
            (``output_format`` other than numpy): ``"cpu"`` or ``"cuda"`` (the
            engine's GPU; needs the CUDA provider). With ``"cuda"`` the default
            output format becomes ``"dlpack"``.
        pinned_staging: CUDA engines copy host inputs of 64 KiB or more into
            onnxruntime's pinned host memory before the run, so that the copy to
            the GPU is a DMA transfer (off where the runtime has no pinned allocator).
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
        use_package_settings: for a package, take its recommended settings
            (providers, replicas, batching, ...) for every keyword not given;
            keywords given always win.

    Thread-safe: any number of threads may call :meth:`run` and :meth:`submit`.
    """

    @_note_explicit_kwargs
    def __init__(
        self,
        model: ModelLike,
        *,
        providers: Union[str, Sequence[Any]] = ("cpu",),
        device_policy: Optional[str] = None,
        precision: str = _precision.DEFAULT_PRECISION,
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
        output_device: str = "cpu",
        pinned_staging: bool = True,
        max_request_bytes: int = 0,
        max_request_rows: int = 0,
        use_package_settings: bool = True,
    ) -> None:
        self._lock = threading.Lock()
        self._core: Optional[_core.Engine] = None
        self._completion_thread: Optional[threading.Thread] = None
        if isinstance(model, (str, os.PathLike)) and is_package(model):
            model_path, recommended = load_package(model)
            settings = {k: v for k, v in locals().items() if k in _INIT_KEYWORDS}
            if use_package_settings:
                explicit: frozenset = getattr(self, "_explicit_kwargs", frozenset())
                settings.update({k: v for k, v in recommended.items() if k not in explicit})
            self.__init__(model_path, **settings)  # type: ignore[misc]
            return
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
        if output_device not in OUTPUT_DEVICES:
            raise ConfigError(f"output_device must be one of {', '.join(OUTPUT_DEVICES)}, got {output_device!r}")
        ep_policy = _policy(providers, device_policy, strict_providers)
        if ep_policy:
            provider_names: List[str] = ["CPUExecutionProvider"]
            provider_options: List[List[Tuple[str, str]]] = [[]]
            providers = ("cpu",)
            from . import plugin_eps as devices

            ov = {d.ep_metadata.get("ov_device", ""): d.ep_metadata.get("OPTIMIZATION_CAPABILITIES", "")
                  for d in devices.devices() if d.ep_name == _precision.OPENVINO}
            extra, precisions = _precision.policy_config(precision, ov)
            config += [kv for kv in extra if kv[0] not in dict(config)]
        else:
            provider_names, provider_options, precisions = _providers(providers, strict_providers, precision)
        if output_device == "cuda" and _prov.CUDA not in [n for n, _ in _prov.parse(providers)]:
            raise ConfigError("output_device='cuda' needs the CUDA provider: providers=['cuda', 'cpu']")
        options: Dict[str, Any] = {
            "providers": provider_names,
            "provider_options": provider_options,
            "intra_op_threads": intra,
            "inter_op_threads": _threads(inter_op_threads, "inter_op_threads"),
            "use_global_thread_pools": bool(use_global_thread_pool),
            "graph_optimization": _choose(graph_optimization, GRAPH_OPTIMIZATION_LEVELS, "graph_optimization"),
            "execution_mode": _choose(execution_mode, EXECUTION_MODES, "execution_mode"),
            "log_level": _choose(log_level, LOG_LEVELS, "log_level"),
            "config": config,
            "replicas": replicas,
            "share_weights": bool(share_weights),
            "pinned_staging_min_bytes": PINNED_STAGING_MIN_BYTES if pinned_staging else 0,
            "max_request_bytes": _int_option(max_request_bytes, "max_request_bytes", 0),
            "max_request_rows": _int_option(max_request_rows, "max_request_rows", 0),
            "ep_policy": ep_policy,
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
            if not accelerators:
                raise
            # e.g. onnxruntime-gpu without a GPU or without its CUDA libraries
            library = _runtime.runtime_info(probe=False)["library_path"]
            reason = "; ".join(_prov.explain_load_failure(p, str(e), library) for p in accelerators)
            if strict_providers:
                raise ModelLoadError(f"{', '.join(accelerators)} could not be used (strict_providers): {reason}") from None
            options["providers"] = ["CPUExecutionProvider"]
            options["provider_options"] = [[]]
            options["ep_policy"] = ""
            precisions = {"CPUExecutionProvider": "model"}
            core = _core.Engine.open(source, options, weights)
            warnings.warn(f"fastort: {', '.join(accelerators)} could not be used ({reason}); running on CPU",
                          RuntimeWarning, stacklevel=2)
        del weights
        release_pages(self._weights_mapping)
        self._core = core
        self.inputs: Tuple[IOSpec, ...] = tuple(IOSpec(*t) for t in core.inputs)
        self.outputs: Tuple[IOSpec, ...] = tuple(IOSpec(*t) for t in core.outputs)
        #: What each replica runs on, as onnxruntime reports it for plugin EPs and
        #: automatic selection ("OpenVINOExecutionProvider(CPU)"), else the provider list.
        self.replica_providers: Tuple[str, ...] = tuple(core.replica_providers)
        self.providers: Tuple[str, ...] = (
            _chosen(self.replica_providers[0]) if options["ep_policy"] else tuple(options["providers"]))
        #: The precision each provider computes in: "f32", "bf16", "fp16", "auto (...)",
        #: or "model" (the model's own types: EPs without a precision setting).
        self.precision: Dict[str, str] = {p: precisions.get(p, "model") for p in self.providers}
        self.replicas: int = replicas
        self.batch_config: Optional[BatchConfig] = batching
        #: Where the model runs: "cpu" or "cuda:N".
        self.device: str = core.device
        self._device_out = output_device == "cuda" and self.device != "cpu"
        if output_device == "cuda" and not self._device_out:
            warnings.warn("fastort: output_device='cuda' but the engine runs on the CPU; outputs stay in host memory",
                          RuntimeWarning, stacklevel=2)
        self.output_device: str = "cuda" if self._device_out else "cpu"
        if self._device_out:  # run() leaves tensors on the device by default (no cost to other engines)
            self.__class__ = _DeviceOutEngine
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
        output_format: Optional[str] = None,
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
            output_format: ``"numpy"`` (host arrays; the default unless the
                engine was made with ``output_device="cuda"``), ``"dlpack"``
                (:class:`fastort.Tensor` objects left in onnxruntime's buffers, on
                the engine's ``output_device``, exported with ``__dlpack__`` and on
                CUDA ``__cuda_array_interface__``), ``"torch"`` or ``"cupy"``
                (those tensors handed to ``torch.from_dlpack`` / ``cupy.from_dlpack``:
                no copy). Tensor formats run unbatched.

        Inputs may also be any DLPack producer (torch and CuPy tensors, JAX
        arrays...) or ``__cuda_array_interface__`` object: host tensors are read
        in place like numpy arrays; CUDA tensors in place on the device (CUDA
        engines only, on the engine's device).

        Returns:
            A dict of output name -> value, in the model's output order (or the
            order of ``outputs``). Tensors are numpy arrays over onnxruntime's
            buffers (no copy; a batched request gets a view of its rows); string
            tensors are object arrays of str; sequences are lists, maps dicts.
        """
        core = self._core
        if core is None:
            raise EngineClosedError(f"engine for {self._source} is closed")
        if output_format is None:  # the fast path: numpy out (output_device="cuda" engines override run)
            return core.run(inputs, outputs, out, timeout or 0.0, priority)
        return self._run_formatted(core, inputs, outputs, out, timeout, priority, output_format)

    def _run_formatted(self, core: "_core.Engine", inputs: Inputs, outputs: Optional[Sequence[str]],
                       out: Optional[Mapping[str, np.ndarray]], timeout: Optional[float], priority: int,
                       fmt: str) -> Dict[str, Any]:
        if fmt == "numpy":
            return core.run(inputs, outputs, out, timeout or 0.0, priority)
        if fmt not in OUTPUT_FORMATS:
            raise ConfigError(f"output_format must be one of {', '.join(OUTPUT_FORMATS)}, got {fmt!r}")
        if out is not None:
            raise ConfigError("out= buffers are numpy arrays: use output_format='numpy' with out=")
        result = core.run_tensors(inputs, outputs, self._device_out)
        if fmt == "dlpack":
            return result
        convert = _from_dlpack(fmt)
        return {k: convert(v) if isinstance(v, _core.Tensor) else v for k, v in result.items()}

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


class _DeviceOutEngine(Engine):
    """An Engine made with output_device="cuda" (see Engine.__init__)."""

    def run(  # type: ignore[override]
        self,
        inputs: Inputs,
        *,
        outputs: Optional[Sequence[str]] = None,
        out: Optional[Mapping[str, np.ndarray]] = None,
        timeout: Optional[float] = None,
        priority: int = 0,
        output_format: Optional[str] = None,
    ) -> Dict[str, Any]:
        """:meth:`run` of an engine made with output_device="cuda": tensors stay on the device."""
        core = self._core
        if core is None:
            raise EngineClosedError(f"engine for {self._source} is closed")
        return self._run_formatted(core, inputs, outputs, out, timeout, priority, output_format or "dlpack")


#: Engines not closed yet; closed at interpreter exit, before Python stops its
#: threads, so that no thread is left waiting inside the native core.
_live_engines: "weakref.WeakSet[Engine]" = weakref.WeakSet()


#: Engine's keyword arguments (the settings a model package may recommend).
_INIT_KEYWORDS = frozenset(
    name for name, p in inspect.signature(Engine.__init__).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "use_package_settings"
)


@atexit.register
def _close_all_engines() -> None:
    for engine in list(_live_engines):
        try:
            engine.close(drain=False)
        except Exception:  # pragma: no cover - best effort at exit
            pass


def _from_dlpack(fmt: str) -> Any:
    """torch.from_dlpack or cupy.from_dlpack, imported on first use."""
    import importlib

    try:
        module = importlib.import_module("torch" if fmt == "torch" else "cupy")
    except ImportError:
        raise ConfigError(f"output_format={fmt!r} needs the {fmt} package, which is not installed") from None
    return module.from_dlpack


def _spec_str(spec: IOSpec) -> str:
    if spec.dtype is None or spec.shape is None:
        return spec.type
    dims = ", ".join("?" if d is None else str(d) for d in spec.shape)
    return f"{spec.dtype}[{dims}]"
