"""The Engine: one ONNX model served by fastort's native core.

Inputs are numpy arrays handed to onnxruntime over their own memory; outputs
come back as numpy arrays that own onnxruntime's buffers. Neither is copied.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import dataclasses
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

from .. import _core
from .. import runtime as _runtime
from ..errors import (ConfigError, EngineClosedError, InvalidInputError, ModelLoadError, ModelNotFoundError,
                      ProviderUnavailableError)
from ..runtime import precision as _precision
from ..runtime import providers as _prov
from ..runtime.logs import flush_runtime_log
from ._padding import check_padding
from ._process import disown, inherited_note, pickle_source
from ._queue import chunks, deliver_completions, progress_bar
from ._source import check_external_data, check_no_external_data, describe, model_bytes
from ._weights import release_pages, split_weights
from .manifest import is_package, load_package

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["Engine", "EngineOptions", "IOSpec", "BatchConfig", "ModelLike", "Dim", "Inputs", "InputValue", "MapValue"]

ModelLike = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, "onnx.ModelProto"]
Dim = Union[int, str, None]
#: A map input's dict: int or str keys (numpy integers too), number or str values.
MapValue = Mapping[Union[int, str, bytes, np.integer], Union[int, float, str, bytes, np.number]]
#: One input's value: for a tensor a numpy array (or numpy scalar, or any DLPack /
#: ``__cuda_array_interface__`` object, hence Any); for ``seq(tensor(T))`` a list or
#: tuple of arrays (``seq(map(...))``: of dicts); for ``map(K, V)`` a dict; for
#: ``optional(X)`` None (empty) or a value of X.
InputValue = Union[np.ndarray, Sequence[np.ndarray], Sequence[MapValue], MapValue, None, Any]
#: A request's inputs: name -> value, values in input order, or the one input's array.
Inputs = Union[Mapping[str, InputValue], Sequence[InputValue], np.ndarray]

OUTPUT_DEVICES = ("cpu", "cuda")
OUTPUT_FORMATS = ("numpy", "dlpack", "torch", "cupy")

GRAPH_OPTIMIZATION_LEVELS: Dict[str, int] = {"disable": 0, "basic": 1, "extended": 2, "layout": 3, "all": 99}
EXECUTION_MODES: Dict[str, int] = {"sequential": 0, "parallel": 1}
LOG_LEVELS: Dict[str, int] = {"verbose": 0, "info": 1, "warning": 2, "error": 3, "fatal": 4}


@dataclass(frozen=True)
class IOSpec:
    """One model input or output.

    ``dtype`` and ``shape`` are None for non-tensor values (sequences, maps,
    optionals); ``type`` says what they hold, e.g. ``"optional(seq(tensor(float)))"``.
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

    def to_dict(self) -> Dict[str, Any]:
        """JSON-able: dtype as its name, shape as a list."""
        return {"name": self.name, "type": self.type,
                "dtype": None if self.dtype is None else str(self.dtype),
                "shape": None if self.shape is None else list(self.shape)}


def _choose(value: Union[str, int], table: Mapping[str, int], what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value in table.values():
        return value
    if isinstance(value, str) and value.lower() in table:
        return table[value.lower()]
    raise ConfigError(f"{what} must be one of {sorted(table)}, got {value!r}")


def _providers(parsed: List[Tuple[str, List[Tuple[str, str]]]], strict: bool,
               precision: str = _precision.DEFAULT_PRECISION
               ) -> Tuple[List[str], List[List[Tuple[str, str]]], Dict[str, str]]:
    """onnxruntime provider names and options for the parsed ``providers``, and
    the precision each runs. One this runtime lacks is skipped with a warning
    that says why (an error with ``strict``); the CPU provider, which every
    runtime has, always comes last. Names the runtime does not build in are
    looked for among plugin EP libraries (fastort.devices)."""
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
        warnings.warn(f"fastort: {reason}; using the next provider instead", RuntimeWarning, stacklevel=5)
    if "CPUExecutionProvider" not in names:
        names.append("CPUExecutionProvider")
        options.append([])
        precisions["CPUExecutionProvider"] = "model"
    if _precision.check(precision) in ("bf16", "fp16") and precision not in precisions.values():
        warnings.warn(f"fastort: precision={precision!r} applies to none of {', '.join(names)} (they run the "
                      "model's own precision)", RuntimeWarning, stacklevel=5)
    return names, options, precisions


_NOT_A_PLUGIN = "not a plugin EP"  # _plugin_ep's answer for names no plugin library claims


def _plugin_ep(name: str, opts: List[Tuple[str, str]], precision: str, names: List[str],
               options: List[List[Tuple[str, str]]], precisions: Dict[str, str]) -> str:
    """Adds plugin EP ``name`` when it can run here; else returns why not."""
    from ..runtime import plugin_eps as devices

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
                      RuntimeWarning, stacklevel=6)
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
    from ..runtime import plugin_eps as devices

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
        warnings.warn(f"fastort: {reason}; running on CPU", RuntimeWarning, stacklevel=5)
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
        adaptive: learn the cost per row by batch size and the arrival rate;
            a free replica runs what is queued at once unless one more row is
            expected sooner than the time it saves, and batches stop at the
            size whose cost per row is lowest (``stats()['policy']``). Callers
            waiting on ``run()`` are served batched or directly on the least
            busy replica, whichever measured more requests per second under the
            current load (probed now and then; ``stats()['policy']['route']``;
            not with ``priority_levels > 1``). Off: wait for ``max_batch_size``
            rows or ``max_delay_us`` while a batch runs; always batched.
    """

    max_batch_size: int = 32
    max_delay_us: int = 2000
    max_queue: int = 1024
    max_queue_rows: int = 0
    batch_axis: int = 0
    priority_levels: int = 1
    padding: Mapping[str, Mapping[int, float]] = field(default_factory=dict)
    adaptive: bool = True


def _int_option(value: Any, what: str, minimum: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{what} must be an int >= {minimum}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class EngineOptions:
    """Every :class:`Engine` keyword with its default: the one place they are set.

    ``Engine(model, **keywords)`` builds one of these; ``Engine(model, options)``
    takes it whole (keywords given as well replace its fields). It is converted
    once into the native core's ``EngineConfig`` and ``BatchConfig`` structs.

    Attributes:
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
        output_device: where :meth:`Engine.run` leaves outputs when it returns
            tensors (``output_format`` other than numpy): ``"cpu"`` or ``"cuda"``
            (the engine's GPU; needs the CUDA provider). With ``"cuda"`` the
            default output format becomes ``"dlpack"``.
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
        allow_spinning: let onnxruntime's intra/inter-op threads spin while
            waiting for work. ``None`` (default): on with one replica
            (onnxruntime's own default, so a lone session is never slower than
            plain onnxruntime), off with several (their spinning pools fight for
            the cores the other replicas' runs need). ``fastort tune`` measures
            both. A ``session_config`` entry for it wins.
        use_global_thread_pool: run every replica on onnxruntime's process-wide
            thread pools (see :func:`fastort.configure_global_threads`) instead of
            pools of their own.
        share_weights: replicas hold the model's weights (and onnxruntime's
            prepacked forms of them) once.
        max_batch_size, max_delay_us, max_queue, max_queue_rows, batch_axis,
        priority_levels, padding: giving ``max_batch_size`` (or ``batching``)
            turns dynamic batching on; see :class:`BatchConfig`.
        adaptive_batching: :attr:`BatchConfig.adaptive` (on by default).
        padding_check: with ``padding``, run one request alone and padded at
            start and refuse (ConfigError) a model whose results differ;
            ``"warn"`` warns instead, False skips it. Padding is exact only for
            models invariant to it (see README, "When padding is safe").
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
    """

    providers: Union[str, Sequence[Any]] = ("cpu",)
    device_policy: Optional[str] = None
    precision: str = _precision.DEFAULT_PRECISION
    intra_op_threads: Optional[int] = 0
    inter_op_threads: Optional[int] = 0
    graph_optimization: Union[str, int] = "all"
    execution_mode: Union[str, int] = "sequential"
    log_level: Union[str, int] = "warning"
    session_config: Optional[Mapping[str, str]] = None
    strict_providers: bool = False
    replicas: int = 1
    allow_spinning: Optional[bool] = None
    use_global_thread_pool: bool = False
    share_weights: bool = True
    max_batch_size: Optional[int] = None
    max_delay_us: int = BatchConfig.max_delay_us
    max_queue: int = BatchConfig.max_queue
    max_queue_rows: int = BatchConfig.max_queue_rows
    batch_axis: int = BatchConfig.batch_axis
    priority_levels: int = BatchConfig.priority_levels
    padding: Optional[Mapping[str, Mapping[int, float]]] = None
    adaptive_batching: bool = BatchConfig.adaptive
    padding_check: Union[bool, str] = True
    batching: Optional[BatchConfig] = None
    output_device: str = "cpu"
    pinned_staging: bool = True
    max_request_bytes: int = 0
    max_request_rows: int = 0
    use_package_settings: bool = True

    @classmethod
    def build(cls, options: Optional["EngineOptions"] = None, **keywords: Any) -> "EngineOptions":
        """``options`` (or the defaults) with ``keywords`` replacing its fields;
        an unknown keyword is a TypeError, as for any function."""
        unknown = sorted(set(keywords) - _OPTION_NAMES)
        if unknown:
            raise TypeError(f"Engine() got an unexpected keyword argument {unknown[0]!r}")
        return dataclasses.replace(options, **keywords) if options is not None else cls(**keywords)

    def batch_config(self) -> Optional[BatchConfig]:
        """The batching settings: ``batching``, or the separate keywords when
        ``max_batch_size`` is given; None when batching is off."""
        if self.batching is not None and self.max_batch_size is not None:
            raise ConfigError("give either batching=BatchConfig(...) or max_batch_size=..., not both")
        if self.batching is not None or self.max_batch_size is None:
            return self.batching
        return BatchConfig(max_batch_size=self.max_batch_size, max_delay_us=self.max_delay_us,
                           max_queue=self.max_queue, max_queue_rows=self.max_queue_rows,
                           batch_axis=self.batch_axis, priority_levels=self.priority_levels,
                           padding=dict(self.padding or {}), adaptive=bool(self.adaptive_batching))

    def queue_config(self) -> BatchConfig:
        """Settings of the request queue behind submit()/run_async() when batching is off."""
        return BatchConfig(max_batch_size=1, max_delay_us=0, max_queue=self.max_queue,
                           max_queue_rows=self.max_queue_rows, priority_levels=self.priority_levels)


_OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(EngineOptions))


def _engine_config(o: EngineOptions, batching: Optional[BatchConfig]) -> Tuple["_core.EngineConfig", Dict[str, str]]:
    """The core's EngineConfig for ``o`` (validated; providers parsed once) and
    the precision each provider computes in."""
    config = _core.EngineConfig()
    config.replicas = replicas = _int_option(o.replicas, "replicas", 1)
    entries = []
    for key, value in (o.session_config or {}).items():
        if not isinstance(key, str):
            raise ConfigError(f"session_config keys must be str, got {key!r}")
        entries.append((key, value if isinstance(value, str) else str(value)))
    spin = replicas <= 1 if o.allow_spinning is None else o.allow_spinning
    for key in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning"):
        if key not in (o.session_config or {}):
            entries.append((key, "1" if spin else "0"))
    config.session_config = entries
    intra = _threads(o.intra_op_threads, "intra_op_threads")
    if intra == 0 and replicas > 1 and not o.use_global_thread_pool:
        intra = max(1, (os.cpu_count() or 1) // replicas)
    config.intra_op_threads = intra
    config.inter_op_threads = _threads(o.inter_op_threads, "inter_op_threads")
    config.use_global_thread_pools = bool(o.use_global_thread_pool)
    config.graph_optimization = _choose(o.graph_optimization, GRAPH_OPTIMIZATION_LEVELS, "graph_optimization")
    config.execution_mode = _choose(o.execution_mode, EXECUTION_MODES, "execution_mode")
    config.log_level = _choose(o.log_level, LOG_LEVELS, "log_level")
    config.share_weights = bool(o.share_weights)
    if not o.pinned_staging:
        config.pinned_staging_min_bytes = 0
    config.max_request_bytes = _int_option(o.max_request_bytes, "max_request_bytes", 0)
    config.max_request_rows = _int_option(o.max_request_rows, "max_request_rows", 0)
    config.row_axis = _int_option(batching.batch_axis if batching is not None else o.batch_axis, "batch_axis", 0)
    if o.output_device not in OUTPUT_DEVICES:
        raise ConfigError(f"output_device must be one of {', '.join(OUTPUT_DEVICES)}, got {o.output_device!r}")
    _precision.check(o.precision)
    providers = o.providers
    config.ep_policy = _policy(providers, o.device_policy, o.strict_providers)
    precisions: Dict[str, str]
    if config.ep_policy:  # onnxruntime picks the devices; fastort sets the precision it may pick
        from ..runtime import plugin_eps as devices

        providers = ("cpu",)
        config.providers, config.provider_options = ["CPUExecutionProvider"], [[]]
        ov = {d.ep_metadata.get("ov_device", ""): d.ep_metadata.get("OPTIMIZATION_CAPABILITIES", "")
              for d in devices.devices() if d.ep_name == _precision.OPENVINO}
        extra, precisions = _precision.policy_config(o.precision, ov)
        config.session_config = entries + [kv for kv in extra if kv[0] not in dict(entries)]
    requested = _prov.parse(providers)
    if o.output_device == "cuda" and _prov.CUDA not in [name for name, _ in requested]:
        raise ConfigError("output_device='cuda' needs the CUDA provider: providers=['cuda', 'cpu']")
    if not config.ep_policy:
        config.providers, config.provider_options, precisions = _providers(requested, o.strict_providers, o.precision)
    return config, precisions


def _batch_config(config: BatchConfig, input_names: Sequence[str]) -> "_core.BatchConfig":
    """The core's BatchConfig for ``config`` (validated; padding by input index)."""
    core = _core.BatchConfig()
    core.max_batch_size = _int_option(config.max_batch_size, "max_batch_size", 1)
    core.max_delay_us = _int_option(config.max_delay_us, "max_delay_us", 0)
    core.max_queue = _int_option(config.max_queue, "max_queue", 0)
    core.max_queue_rows = _int_option(config.max_queue_rows, "max_queue_rows", 0)
    core.batch_axis = _int_option(config.batch_axis, "batch_axis", 0)
    core.priority_levels = _int_option(config.priority_levels, "priority_levels", 1)
    core.adaptive = bool(config.adaptive)
    padding = []
    for name, dims in (config.padding or {}).items():
        if name not in input_names:
            raise ConfigError(
                f"padding names input {name!r}, which the model does not have ({', '.join(input_names)})")
        for dim, value in dims.items():
            padding.append((list(input_names).index(name), _int_option(dim, "padding dim", 0), float(value)))
    core.padding = padding
    return core


def _model_source(model: ModelLike) -> Union[str, bytes]:
    """A model file's path (checked) or the model's serialized bytes."""
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.exists(path):
            raise ModelNotFoundError(f"model file not found: {path}")
        if os.path.isdir(path):
            raise ModelLoadError(f"{path} is a directory, not an ONNX model file")
        check_external_data(path)
        return path
    source = model_bytes(model)
    check_no_external_data(source)
    return source


def package_options(path: Union[str, "os.PathLike[str]"], options: Optional[EngineOptions] = None,
                    **keywords: Any) -> Tuple[str, EngineOptions]:
    """The model file of a package (its hashes checked) and the engine options:
    the package's recommended settings for every keyword not given (unless
    ``use_package_settings=False`` or a whole ``options`` is given)."""
    model_path, recommended = load_package(path)
    given = EngineOptions.build(options, **keywords)
    if options is None and given.use_package_settings:
        given = EngineOptions.build(**{**recommended, **keywords})
    return model_path, given


class Engine:
    """Runs one ONNX model with onnxruntime through fastort's C++ core.

    Args:
        model: a path to an ``.onnx`` file (external data is resolved next to it),
            the serialized model as ``bytes``, an ``onnx.ModelProto``, or a model
            package directory made by :func:`fastort.package` or
            ``fastort prepare`` (its files' hashes are checked first; see
            :meth:`from_package`).
        options: an :class:`EngineOptions`; the defaults when not given.
        **keywords: fields of :class:`EngineOptions` (``providers``,
            ``replicas``, ``max_batch_size``, ``output_device``, ...), which
            replace those of ``options``.

    Thread-safe: any number of threads may call :meth:`run` and :meth:`submit`.
    """

    def __init__(self, model: ModelLike, options: Optional[EngineOptions] = None, **keywords: Any) -> None:
        self._model_ref: Any = model  # what pickling sends (see _process.pickle_source)
        if isinstance(model, (str, os.PathLike)) and is_package(model):
            model, options = package_options(model, options, **keywords)
        else:
            options = EngineOptions.build(options, **keywords)
        self._open(model, options)

    @classmethod
    def from_package(cls, path: Union[str, "os.PathLike[str]"], options: Optional[EngineOptions] = None,
                     **keywords: Any) -> "Engine":
        """An engine for a model package: its model file (hashes checked) with
        the package's recommended settings for every keyword not given."""
        return cls(*package_options(path, options, **keywords))

    def __reduce__(self) -> Tuple[Any, Tuple[Union[str, bytes], EngineOptions]]:
        """Pickled by reconstruction: the model's path (file or package: its
        weights are not sent) or, for an engine made from bytes or a ModelProto,
        the model bytes, with the engine's options; unpickling opens a new engine."""
        return (Engine, (pickle_source(self._model_ref), self.options))

    def _open(self, model: ModelLike, options: EngineOptions) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._core: Optional[_core.Engine] = None
        self._completion_thread: Optional[threading.Thread] = None
        self._source = describe(model)
        self.options = options
        batching = options.batch_config()
        config, precisions = _engine_config(options, batching)
        self._queue_config = options.queue_config()
        source = _model_source(model)
        weights: List[Tuple[str, np.ndarray]] = []
        self._weights_mapping: Any = None
        if config.replicas > 1 and config.share_weights:
            source, weights, self._weights_mapping = split_weights(model, source)
        try:
            core = self._open_core(source, config, weights, options.strict_providers)
        finally:
            flush_runtime_log()  # what onnxruntime said while loading the model
        del weights
        release_pages(self._weights_mapping)
        self._core = core
        self.inputs: Tuple[IOSpec, ...] = tuple(IOSpec(*t) for t in core.inputs)
        self.outputs: Tuple[IOSpec, ...] = tuple(IOSpec(*t) for t in core.outputs)
        #: What each replica runs on, as onnxruntime reports it for plugin EPs and
        #: automatic selection ("OpenVINOExecutionProvider(CPU)"), else the provider list.
        self.replica_providers: Tuple[str, ...] = tuple(core.replica_providers)
        self.providers: Tuple[str, ...] = (
            _chosen(self.replica_providers[0]) if config.ep_policy else tuple(config.providers))
        #: The precision each provider computes in: "f32", "bf16", "fp16", "auto (...)",
        #: or "model" (the model's own types: EPs without a precision setting).
        self.precision: Dict[str, str] = {p: precisions.get(p, "model") for p in self.providers}
        self.replicas: int = config.replicas
        self.batch_config: Optional[BatchConfig] = batching
        #: Where the model runs: "cpu" or "cuda:N".
        self.device: str = core.device
        device_out = options.output_device == "cuda" and self.device != "cpu"
        if options.output_device == "cuda" and not device_out:
            warnings.warn("fastort: output_device='cuda' but the engine runs on the CPU; outputs stay in host memory",
                          RuntimeWarning, stacklevel=3)
        self.output_device: str = "cuda" if device_out else "cpu"
        self._device_out = device_out
        #: run()'s output format when none is given: None is numpy (the fast path).
        self._output_format: Optional[str] = "dlpack" if device_out else None
        _live_engines.add(self)
        if batching is not None:
            if batching.padding:
                check_padding(core, self.inputs, self.outputs, batching.padding, batching.batch_axis,
                              options.padding_check, self._source)
            self._start_queue(batching, route_runs=True)
            if not core.batching and batching.max_batch_size > 1:
                warnings.warn(
                    f"fastort: {self._source} cannot be batched ({core.unbatchable_reason}); "
                    "requests are queued and served one at a time",
                    stacklevel=3,
                )

    def _open_core(self, source: Union[str, bytes], config: "_core.EngineConfig",
                   weights: List[Tuple[str, np.ndarray]], strict: bool) -> "_core.Engine":
        """Opens the sessions; when an accelerator cannot be used (e.g.
        onnxruntime-gpu without a GPU or its CUDA libraries), on the CPU instead
        (with a warning) unless ``strict``."""
        try:
            return _core.Engine.open(source, config, weights)
        except ModelLoadError as e:
            accelerators = [p for p in config.providers if p != "CPUExecutionProvider"]
            if not accelerators:
                raise
            library = _runtime.runtime_info(probe=False)["library_path"]
            reason = "; ".join(_prov.explain_load_failure(p, str(e), library) for p in accelerators)
            if strict:
                raise ModelLoadError(f"{', '.join(accelerators)} could not be used (strict_providers): {reason}") from None
            config.providers = ["CPUExecutionProvider"]
            config.provider_options = [[]]
            config.ep_policy = ""
            core = _core.Engine.open(source, config, weights)
            warnings.warn(f"fastort: {', '.join(accelerators)} could not be used ({reason}); running on CPU",
                          RuntimeWarning, stacklevel=4)
            return core

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
                never cast: a wrong dtype raises InvalidInputError. Inputs
                declared as sequences take a list/tuple of arrays (empty too),
                maps a dict, optionals None or the value (see :data:`InputValue`);
                each element is checked against the declared type.
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
            tensors are object arrays of str; sequences are lists, maps dicts,
            empty optionals None.
        """
        core = self._core
        if core is None:
            raise EngineClosedError(f"engine for {self._source} is closed")
        if output_format is None:
            output_format = self._output_format
            if output_format is None:  # the fast path: numpy out
                return core.run(inputs, outputs, out, timeout or 0.0, priority)
        return self._run_formatted(core, inputs, outputs, out, timeout, priority, output_format)

    def bind(self, outputs: Optional[Sequence[str]] = None, *, copy: bool = True) -> "_core.BoundCall":
        """A callable for a latency-critical loop: ``call = engine.bind()``, then
        ``y, = call(x)`` with the inputs as positional host numpy arrays in input
        order, returning a tuple of the ``outputs`` (default: all) in that order.

        It keeps one onnxruntime IoBinding on one replica, names resolved once:
        an input passed again in the same buffer with the same shape is not bound
        again, and tensor outputs are written into buffers allocated once per
        input-shape signature. With ``copy=True`` each call returns fresh arrays
        (copies of those buffers); ``copy=False`` returns the buffers themselves,
        which the next call overwrites. Unbatched; calls on one bound callable
        are serialized (thread-safe, not parallel): make one per thread. Device
        (CUDA) and string inputs go through :meth:`run`.
        """
        core = self._core
        if core is None:
            raise EngineClosedError(f"engine for {self._source} is closed")
        return core.bind(None if outputs is None else list(outputs), copy)

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
        """What the engine does and counted since it started or the last reset.

        Always: ``batching`` (whether requests are merged), ``max_batch_size``
        (1 when not), ``direct`` (runs that went straight to a replica: requests,
        failed, latency_mean_us, compute_us_total). With a request queue also its
        requests, rows, batches, batch-size histogram, queue depth, latency
        p50/p90/p99 (µs, queue to result), throughput, ``queue_us_total`` /
        ``compute_us_total`` and ``policy`` (what the adaptive batcher learned);
        without one (every run direct) ``queue_us_total`` is 0 and
        ``compute_us_total`` the run time, so both keys are always there;
        ``unbatchable_reason`` when batching was asked for but the model cannot."""
        core = self._core
        if core is None:
            raise EngineClosedError(f"engine for {self._source} is closed")
        stats = dict(core.stats())
        stats.setdefault("queue_us_total", 0.0)  # no queue: nothing waited
        batching = bool(core.batching)
        stats["batching"] = batching
        stats["max_batch_size"] = self.batch_config.max_batch_size if batching and self.batch_config else 1
        if self.batch_config is not None and not batching:
            stats["unbatchable_reason"] = core.unbatchable_reason
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
            core = self._core
            if core is None or core.batching:
                extra += f", max_batch_size={self.batch_config.max_batch_size}"
            else:
                extra += ", unbatched (queued one at a time)"
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
        try:
            core.start_batcher(_batch_config(config, [i.name for i in self.inputs]), route_runs)
        except InvalidInputError as e:  # the model and these settings do not fit
            raise ConfigError(str(e)) from None
        thread = threading.Thread(
            target=deliver_completions, args=(core,), name=f"fastort-completions-{id(self):x}", daemon=True
        )
        thread.start()
        self._completion_thread = thread


# Engine.run as a native method of the class: a call with numpy results on an
# open engine skips the Python frame of the method above (about 1,400 of the
# 31,000 instructions of a call on a tiny model); every other call (another
# output_format, a closed engine, device outputs) runs the method above, kept
# as Engine._python_run.
setattr(Engine, "_python_run", Engine.run)
setattr(Engine, "run", _core.engine_run_method(Engine.run, Engine.run.__doc__ or ""))


#: Engines not closed yet; closed at interpreter exit, before Python stops its
#: threads, so that no thread is left waiting inside the native core.
_live_engines: "weakref.WeakSet[Engine]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """Engines inherited through fork() refuse to run (EngineClosedError saying
    why): onnxruntime's thread pools and fastort's workers stay in the parent."""
    for engine in list(_live_engines):
        core, engine._core = getattr(engine, "_core", None), None
        disown(core)
        engine._completion_thread = None
        engine._lock = threading.Lock()  # may have been held by a parent thread at the fork
        engine._source = inherited_note(engine._source, engine._pid)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


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
