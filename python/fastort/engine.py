"""The Engine: one ONNX model served by fastort's native core.

Inputs are numpy arrays handed to onnxruntime over their own memory; outputs
come back as numpy arrays that own onnxruntime's buffers. Neither is copied.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core, _runtime
from .errors import ConfigError, EngineClosedError, ModelLoadError, ModelNotFoundError

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["Engine", "IOSpec", "ModelLike", "Dim"]

ModelLike = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, "onnx.ModelProto"]
Dim = Union[int, str, None]

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


def _providers(providers: Union[str, Iterable[str]]) -> list:
    if isinstance(providers, str):
        providers = [providers]
    names = []
    for p in providers:
        if not isinstance(p, str):
            raise ConfigError(f"providers must be names (str), got {type(p).__name__}")
        names.append(PROVIDER_ALIASES.get(p.lower(), p))
    if not names:
        raise ConfigError("providers is empty: give at least one, e.g. ('cpu',)")
    available = _runtime.runtime_info()["providers"]
    for name in names:
        if name not in available:
            raise ConfigError(
                f"execution provider {name!r} is not available in this onnxruntime "
                f"(available: {', '.join(available)})"
            )
    return names


def _threads(value: Optional[int], what: str) -> int:
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{what} must be a non-negative int (0 = onnxruntime's default), got {value!r}")
    return value


class Engine:
    """Runs one ONNX model with onnxruntime through fastort's C++ core.

    Args:
        model: a path to an ``.onnx`` file (external data is resolved next to it),
            the serialized model as ``bytes``, or an ``onnx.ModelProto``.
        providers: execution providers in priority order; short names
            (``"cpu"``, ``"cuda"``) or onnxruntime's (``"CPUExecutionProvider"``).
        intra_op_threads: threads inside one operator (0: one per core).
        inter_op_threads: threads across operators in parallel mode (0: default).
        graph_optimization: ``"disable"``, ``"basic"``, ``"extended"``, ``"layout"`` or ``"all"``.
        execution_mode: ``"sequential"`` or ``"parallel"``.
        log_level: onnxruntime's log level for this session: ``"verbose"`` ... ``"fatal"``.
        session_config: extra onnxruntime session config entries, e.g.
            ``{"session.intra_op.allow_spinning": "0"}``.

    Thread-safe: several threads may call :meth:`run` at once.
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
    ) -> None:
        self._lock = threading.Lock()
        self._session: Optional[_core.Session] = None
        config = []
        for key, value in (session_config or {}).items():
            if not isinstance(key, str):
                raise ConfigError(f"session_config keys must be str, got {key!r}")
            config.append((key, value if isinstance(value, str) else str(value)))
        args = (
            _providers(providers),
            _threads(intra_op_threads, "intra_op_threads"),
            _threads(inter_op_threads, "inter_op_threads"),
            _choose(graph_optimization, GRAPH_OPTIMIZATION_LEVELS, "graph_optimization"),
            _choose(execution_mode, EXECUTION_MODES, "execution_mode"),
            _choose(log_level, LOG_LEVELS, "log_level"),
            config,
        )
        self._source = _describe(model)
        if isinstance(model, (str, os.PathLike)):
            path = os.fspath(model)
            if not os.path.exists(path):
                raise ModelNotFoundError(f"model file not found: {path}")
            if os.path.isdir(path):
                raise ModelLoadError(f"{path} is a directory, not an ONNX model file")
            self._session = _core.Session.open_file(path, *args)
        else:
            self._session = _core.Session.open_bytes(_model_bytes(model), *args)
        self.inputs: Tuple[IOSpec, ...] = tuple(IOSpec(*t) for t in self._session.inputs)
        self.outputs: Tuple[IOSpec, ...] = tuple(IOSpec(*t) for t in self._session.outputs)
        self.providers: Tuple[str, ...] = tuple(args[0])

    def run(
        self,
        inputs: Union[Mapping[str, Any], Sequence[Any], np.ndarray],
        *,
        outputs: Optional[Sequence[str]] = None,
        out: Optional[Mapping[str, np.ndarray]] = None,
    ) -> Dict[str, Any]:
        """Run the model once.

        Args:
            inputs: a dict of input name -> numpy array, a list/tuple of arrays in
                input order, or, for a one-input model, the array itself. An array
                that is C-contiguous and of the input's dtype is read in place;
                a non-contiguous or byte-swapped one is copied once. dtypes are
                never cast: a wrong dtype raises InvalidInputError.
            outputs: names of the outputs wanted (default: all).
            out: output name -> preallocated array (C-contiguous, writeable, the
                output's dtype and exact shape) that onnxruntime writes into.

        Returns:
            A dict of output name -> value, in the model's output order (or the
            order of ``outputs``). Tensors are numpy arrays that own onnxruntime's
            buffers (no copy); string tensors are object arrays of str; sequences
            come back as lists and maps as dicts.
        """
        session = self._session
        if session is None:
            raise EngineClosedError(f"engine for {self._source} is closed")
        return session.run(inputs, outputs, out)

    def close(self) -> None:
        """Release the onnxruntime session. Runs in flight on other threads finish
        first (they hold their own reference); later calls raise EngineClosedError."""
        with self._lock:
            self._session = None

    @property
    def closed(self) -> bool:
        return self._session is None

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ", ".join(self.providers)
        ins = ", ".join(f"{i.name}: {_spec_str(i)}" for i in self.inputs)
        outs = ", ".join(f"{o.name}: {_spec_str(o)}" for o in self.outputs)
        return f"<fastort.Engine {self._source} ({ins}) -> ({outs}) [{state}]>"


def _spec_str(spec: IOSpec) -> str:
    if spec.dtype is None or spec.shape is None:
        return spec.type
    dims = ", ".join("?" if d is None else str(d) for d in spec.shape)
    return f"{spec.dtype}[{dims}]"


def _describe(model: Any) -> str:
    if isinstance(model, (str, os.PathLike)):
        return repr(os.fspath(model))
    if isinstance(model, (bytes, bytearray, memoryview)):
        return f"<{len(model)} model bytes>"
    return f"<{type(model).__name__}>"


def _model_bytes(model: Any) -> bytes:
    if isinstance(model, bytes):
        return model
    if isinstance(model, (bytearray, memoryview)):
        return bytes(model)
    serialize = getattr(model, "SerializeToString", None)
    if serialize is None:
        raise ModelLoadError(
            f"model must be a path, bytes or an onnx.ModelProto, got {type(model).__name__}"
        )
    try:
        return serialize()
    except Exception as e:  # protobuf refuses models over 2 GB
        raise ModelLoadError(
            f"cannot serialize the ModelProto ({e}); save large models with external data "
            "(onnx.save(..., save_as_external_data=True)) and pass the path"
        ) from e
