"""The Open Inference Protocol (KServe v2) JSON body, decoded and encoded.

A small codec for the Ray Serve deployment's HTTP route until the shared one of
``fastort serve`` lands. Request::

    {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [...]}],
     "outputs": [{"name": "y"}]}          # optional: the outputs wanted

Response::

    {"model_name": "...", "outputs": [{"name": "y", "shape": [2, 3], "datatype": "FP32", "data": [...]}]}

``data`` is flat, row-major (a nested list of the right shape is accepted too).
BYTES tensors carry UTF-8 strings. Binary tensor extensions are not supported here.
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from fastort.errors import InvalidInputError

__all__ = ["DATATYPES", "decode_request", "encode_response", "datatype_of"]

#: OIP datatype -> numpy dtype (BYTES: object arrays of str).
DATATYPES: Dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}


def datatype_of(dtype: np.dtype) -> str:
    """The OIP datatype name of a numpy dtype (str/bytes/object -> BYTES)."""
    if dtype.kind in "OUS":
        return "BYTES"
    for name, candidate in DATATYPES.items():
        if candidate == dtype:
            return name
    raise InvalidInputError(f"dtype {dtype} has no Open Inference Protocol datatype")


def decode_request(body: bytes, max_bytes: int = 0) -> Tuple[Dict[str, np.ndarray], Optional[List[str]]]:
    """The input arrays and the requested output names (None: all) of a JSON body.

    Raises InvalidInputError naming what is wrong; never anything else.
    """
    if max_bytes and len(body) > max_bytes:
        raise InvalidInputError(f"request body of {len(body)} bytes exceeds the limit of {max_bytes}")
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"request body is not valid JSON: {e}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or not request["inputs"]:
        raise InvalidInputError('request must be a JSON object with a non-empty "inputs" list')
    arrays: Dict[str, np.ndarray] = {}
    for i, item in enumerate(request["inputs"]):
        name, array = _decode_tensor(item, i)
        if name in arrays:
            raise InvalidInputError(f"input {name!r} is given twice")
        arrays[name] = array
    outputs = request.get("outputs")
    names: Optional[List[str]] = None
    if outputs is not None:
        if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                    for o in outputs):
            raise InvalidInputError('"outputs" must be a list of {"name": str} objects')
        names = [o["name"] for o in outputs]
    return arrays, names


def _decode_tensor(item: Any, index: int) -> Tuple[str, np.ndarray]:
    if not isinstance(item, dict):
        raise InvalidInputError(f"inputs[{index}] must be an object")
    name, shape, datatype, data = item.get("name"), item.get("shape"), item.get("datatype"), item.get("data")
    where = f"input {name!r}" if isinstance(name, str) else f"inputs[{index}]"
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f'{where}: "name" must be a non-empty string')
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise InvalidInputError(f'{where}: "shape" must be a list of non-negative ints, got {shape!r}')
    if datatype not in DATATYPES:
        raise InvalidInputError(f'{where}: "datatype" must be one of {", ".join(DATATYPES)}, got {datatype!r}')
    if data is None:
        raise InvalidInputError(f'{where}: "data" is missing (binary tensor data is not supported here)')
    flat = _flatten(data if isinstance(data, list) else [data], where)
    count = math.prod(shape)
    if len(flat) != count:
        raise InvalidInputError(f"{where}: shape {shape} needs {count} elements, data has {len(flat)}")
    dtype = DATATYPES[datatype]
    try:
        if datatype == "BYTES":
            if not all(isinstance(v, str) for v in flat):
                raise InvalidInputError(f"{where}: BYTES data must be strings")
            array = np.empty(count, dtype=object)
            array[:] = flat
        elif datatype == "BOOL":
            if not all(isinstance(v, bool) for v in flat):
                raise InvalidInputError(f"{where}: BOOL data must be true/false")
            array = np.array(flat, dtype=dtype)
        else:
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat):
                raise InvalidInputError(f"{where}: {datatype} data must be numbers")
            if dtype.kind in "iu":
                if not all(isinstance(v, int) for v in flat):
                    raise InvalidInputError(f"{where}: {datatype} data must be integers")
                info = np.iinfo(dtype)
                if flat and (min(flat) < info.min or max(flat) > info.max):
                    raise InvalidInputError(f"{where}: a value is out of {datatype}'s range")
            array = np.array(flat, dtype=dtype)
    except (OverflowError, ValueError, TypeError) as e:
        raise InvalidInputError(f"{where}: data cannot be read as {datatype}: {e}") from None
    return name, array.reshape(shape)


def _flatten(data: List[Any], where: str, depth: int = 0) -> List[Any]:
    if depth > 32:
        raise InvalidInputError(f"{where}: data is nested too deeply")
    if not any(isinstance(v, list) for v in data):
        return data
    flat: List[Any] = []
    for v in data:
        flat.extend(_flatten(v, where, depth + 1) if isinstance(v, list) else [v])
    return flat


def encode_response(model_name: str, outputs: Mapping[str, Any]) -> Dict[str, Any]:
    """The JSON-ready OIP response of a run's outputs (tensors only)."""
    encoded = []
    for name, value in outputs.items():
        if not isinstance(value, np.ndarray):
            raise InvalidInputError(f"output {name!r} is a {type(value).__name__}, not a tensor: "
                                    "the JSON form carries tensors only")
        datatype = datatype_of(value.dtype)
        data = [str(v) for v in value.reshape(-1)] if datatype == "BYTES" else value.reshape(-1).tolist()
        encoded.append({"name": name, "shape": list(value.shape), "datatype": datatype, "data": data})
    return {"model_name": model_name, "outputs": encoded}


def metadata(model_name: str, inputs: Sequence[Any], outputs: Sequence[Any]) -> Dict[str, Any]:
    """OIP model metadata from the engine's IOSpecs (-1 for a free dim)."""

    def spec(s: Any) -> Dict[str, Any]:
        datatype = datatype_of(s.dtype) if s.dtype is not None else "BYTES"
        shape = [d if isinstance(d, int) else -1 for d in (s.shape or ())]
        return {"name": s.name, "datatype": datatype, "shape": shape}

    return {"name": model_name, "platform": "onnxruntime_onnx",
            "inputs": [spec(s) for s in inputs], "outputs": [spec(s) for s in outputs]}
