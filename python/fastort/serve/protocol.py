"""Open Inference Protocol (KServe v2) tensors <-> numpy, shared by HTTP and gRPC.

Binary tensors (HTTP's binary extension, gRPC's ``raw_input_contents``) become
input arrays over the request's own buffer (``np.frombuffer``: no copy); JSON
``data`` is checked element by element so that nothing is silently truncated
or cast. Every check names the model, the tensor and what was wrong.
"""

from __future__ import annotations

import struct
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

# -- errors -------------------------------------------------------------------

#: error kind -> (HTTP status, gRPC status code name)
STATUS = {
    "invalid": (400, "INVALID_ARGUMENT"),
    "not_found": (404, "NOT_FOUND"),
    "too_large": (413, "RESOURCE_EXHAUSTED"),
    "unavailable": (503, "UNAVAILABLE"),
    "timeout": (504, "DEADLINE_EXCEEDED"),
    "internal": (500, "INTERNAL"),
    "cancelled": (499, "CANCELLED"),  # the client went away; nobody reads the answer
}


class ProtocolError(Exception):
    """A request the server refuses; ``kind`` picks the HTTP / gRPC status."""

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.kind = kind

    @property
    def http_status(self) -> int:
        return STATUS[self.kind][0]

    @property
    def grpc_code(self) -> str:
        return STATUS[self.kind][1]


def error_for(exc: BaseException) -> ProtocolError:
    """The protocol error for an exception of the engine or the repository."""
    from fastort.errors import (EngineClosedError, InvalidInputError, QueueFullError, RequestTimeoutError,
                                RequestTooLargeError)

    from .repository import ModelNotFound

    if isinstance(exc, ProtocolError):
        return exc
    if isinstance(exc, ModelNotFound):
        return ProtocolError(str(exc.args[0] if exc.args else exc), "not_found")
    if isinstance(exc, RequestTooLargeError):
        return ProtocolError(str(exc), "too_large")
    if isinstance(exc, InvalidInputError):
        return ProtocolError(str(exc), "invalid")
    if isinstance(exc, QueueFullError):
        return ProtocolError(f"queue full, retry later: {exc}", "unavailable")
    if isinstance(exc, EngineClosedError):
        return ProtocolError(f"model unavailable (unloading or server shutting down): {exc}", "unavailable")
    if isinstance(exc, RequestTimeoutError):
        return ProtocolError(f"request timeout expired: {exc}", "timeout")
    return ProtocolError(f"{type(exc).__name__}: {exc}", "internal")


# -- datatypes ----------------------------------------------------------------

_NUMERIC = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8), "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
}
_BY_DTYPE = {v: k for k, v in _NUMERIC.items()}


def _bfloat16() -> Optional[np.dtype]:
    try:
        import ml_dtypes
    except ImportError:  # pragma: no cover - ml_dtypes is a dependency of the serve extra
        return None
    bf16: np.dtype[Any] = np.dtype(ml_dtypes.bfloat16)
    return bf16


BF16 = _bfloat16()


def datatype_of(dtype: Optional[np.dtype]) -> str:
    """The protocol's name for a numpy dtype (``BYTES`` for strings)."""
    if dtype is None:
        raise ProtocolError("not a tensor", "internal")
    if dtype.kind in "OSU":
        return "BYTES"
    if BF16 is not None and dtype == BF16:
        return "BF16"
    name = _BY_DTYPE.get(dtype)
    if name is None:
        raise ProtocolError(f"dtype {dtype} has no Open Inference Protocol datatype", "internal")
    return name


def dtype_of(datatype: str) -> np.dtype:
    if datatype == "BF16" and BF16 is not None:
        return BF16
    if datatype == "BYTES":
        return np.dtype(object)
    try:
        return _NUMERIC[datatype]
    except KeyError:
        known = ", ".join(list(_NUMERIC) + ["BF16", "BYTES"])
        raise ProtocolError(f"unknown datatype {datatype!r} (one of {known})") from None


# -- shapes -------------------------------------------------------------------


def check_shape(model: str, spec: Any, datatype: str, shape: Any, batched: bool) -> Tuple[int, ...]:
    """``shape`` as a tuple, checked against the model's input ``spec``."""
    where = f"model '{model}' input '{spec.name}'"
    if not isinstance(shape, (list, tuple)) or not all(
            isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ProtocolError(f"{where}: shape must be a list of non-negative ints, got {shape!r}")
    expected = datatype_of(spec.dtype)
    if datatype != expected:
        raise ProtocolError(f"{where}: datatype {datatype} does not match the model's {expected}")
    dims = tuple(int(d) for d in shape)
    if spec.shape is not None:
        if len(dims) != len(spec.shape):
            raise ProtocolError(f"{where}: expected rank {len(spec.shape)} (shape {_dims(spec.shape, batched)}), "
                                f"got shape {list(dims)}")
        for i, (want, got) in enumerate(zip(spec.shape, dims)):
            if isinstance(want, int) and want != got:
                raise ProtocolError(f"{where}: dim {i} must be {want} (shape {_dims(spec.shape, batched)}), "
                                    f"got shape {list(dims)}")
    return dims


def _dims(shape: Sequence[Any], batched: bool = False) -> List[int]:
    return [d if isinstance(d, int) else -1 for d in shape]


def model_dims(spec: Any) -> List[int]:
    """A tensor's dims as the protocol writes them: -1 for a free dim."""
    return [] if spec.shape is None else _dims(spec.shape)


# -- decoding -----------------------------------------------------------------


def _count(dims: Sequence[int]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def from_raw(where: str, dtype: np.dtype, dims: Tuple[int, ...], buf: Any) -> np.ndarray:
    """An array over ``buf`` (bytes/memoryview) with no copy; BYTES elements are
    4-byte little-endian lengths followed by their bytes."""
    count = _count(dims)
    if dtype.kind == "O":
        return decode_bytes(where, buf, count).reshape(dims)
    nbytes = count * dtype.itemsize
    size = memoryview(buf).nbytes
    if size != nbytes:
        raise ProtocolError(f"{where}: binary data is {size} bytes, but shape {list(dims)} of "
                            f"{datatype_of(dtype)} needs {nbytes}")
    return np.frombuffer(buf, dtype=dtype, count=count).reshape(dims)


def decode_bytes(where: str, buf: Any, count: int) -> np.ndarray:
    view = memoryview(buf).cast("B")
    out = np.empty(count, dtype=object)
    pos, end = 0, view.nbytes
    for i in range(count):
        if pos + 4 > end:
            raise ProtocolError(f"{where}: BYTES data ends after {i} of {count} elements")
        (n,) = struct.unpack_from("<I", view, pos)
        pos += 4
        if pos + n > end:
            raise ProtocolError(f"{where}: BYTES element {i} declares {n} bytes, only {end - pos} left")
        out[i] = bytes(view[pos:pos + n])
        pos += n
    if pos != end:
        raise ProtocolError(f"{where}: {end - pos} bytes left over after {count} BYTES elements")
    return out


def from_json(where: str, dtype: np.dtype, dims: Tuple[int, ...], data: Any) -> np.ndarray:
    """An array from JSON ``data`` (flat or nested, row-major); values must fit
    the datatype exactly (no silent rounding, truncation or wrap-around)."""
    count = _count(dims)
    flat = _flatten(where, data)
    kind = dtype.kind
    if kind == "O":
        if not all(isinstance(v, str) for v in flat):
            raise ProtocolError(f"{where}: BYTES data must be strings")
        arr = np.empty(len(flat), dtype=object)
        arr[:] = [v.encode("utf-8") for v in flat]
    elif kind == "b":
        if not all(type(v) is bool for v in flat):
            raise ProtocolError(f"{where}: BOOL data must be true/false")
        arr = np.array(flat, dtype=dtype)
    elif kind in "iu":
        if not all(type(v) is int for v in flat):
            raise ProtocolError(f"{where}: {datatype_of(dtype)} data must be integers")
        info = np.iinfo(dtype)
        if flat and (min(flat) < info.min or max(flat) > info.max):
            raise ProtocolError(f"{where}: values out of range for {datatype_of(dtype)}")
        arr = np.array(flat, dtype=dtype)
    else:
        if not all(type(v) in (int, float) for v in flat):
            raise ProtocolError(f"{where}: {datatype_of(dtype)} data must be numbers")
        with np.errstate(over="ignore"):
            arr = np.array(flat, dtype=np.float64).astype(dtype)
    if arr.size != count:
        raise ProtocolError(f"{where}: data has {arr.size} elements, shape {list(dims)} needs {count}")
    return arr.reshape(dims)


def _flatten(where: str, data: Any) -> List[Any]:
    if not isinstance(data, list):
        return [data]
    out: List[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def parse_parameters(where: str, params: Any, levels: int) -> Tuple[int, Optional[float]]:
    """Request ``priority`` and ``timeout`` (µs) -> the batcher's level (0 most
    urgent) and deadline in seconds. Triton's convention: priority 1 is the most
    urgent, 0 the default (the most urgent level here)."""
    priority, timeout = 0, None
    if not params:
        return priority, timeout
    p = params.get("priority")
    if p is not None:
        if not isinstance(p, int) or isinstance(p, bool) or p < 0:
            raise ProtocolError(f"{where}: parameter 'priority' must be a non-negative int, got {p!r}")
        if p > levels:
            raise ProtocolError(f"{where}: priority {p} is beyond the model's {levels} priority level(s)")
        priority = max(0, p - 1)
    t = params.get("timeout")
    if t is not None:
        if not isinstance(t, int) or isinstance(t, bool) or t < 0:
            raise ProtocolError(f"{where}: parameter 'timeout' must be a non-negative int (microseconds), got {t!r}")
        timeout = t / 1e6 if t else None
    return priority, timeout


# -- encoding -----------------------------------------------------------------


def encode_bytes(arr: np.ndarray) -> bytes:
    """BYTES elements as 4-byte little-endian lengths + bytes (str as UTF-8)."""
    parts = []
    for v in arr.ravel():
        b = v.encode("utf-8") if isinstance(v, str) else bytes(v)
        parts.append(struct.pack("<I", len(b)))
        parts.append(b)
    return b"".join(parts)


def raw_bytes(arr: np.ndarray) -> Any:
    """The tensor's bytes as the wire carries them (a buffer, no copy when contiguous)."""
    if arr.dtype.kind == "O":
        return encode_bytes(arr)
    flat: Any = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    return memoryview(flat)


def json_data(arr: np.ndarray) -> List[Any]:
    """The tensor's elements as a flat JSON list."""
    if arr.dtype.kind == "O":
        return [v if isinstance(v, str) else bytes(v).decode("utf-8", "replace") for v in arr.ravel()]
    if BF16 is not None and arr.dtype == BF16:
        arr = arr.astype(np.float32)
    flat: List[Any] = arr.ravel().tolist()
    return flat


def output_arrays(model: str, result: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """Engine outputs as arrays; a non-tensor output is an error the client can read."""
    out = {}
    for name, value in result.items():
        if not isinstance(value, np.ndarray):
            raise ProtocolError(f"model '{model}' output '{name}' is a {type(value).__name__}, not a tensor; "
                                "the protocol carries tensors only", "invalid")
        out[name] = value
    return out
