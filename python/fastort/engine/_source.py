"""Where a model comes from: paths, bytes and ModelProtos, checked before loading."""

from __future__ import annotations

import mmap
import os
from typing import Any

from ..errors import ModelLoadError


def check_external_data(path: str) -> None:
    """Refuses a model whose external-data files lie outside its folder
    (``../``, absolute paths, links out): a model file must not make fastort read
    arbitrary files. Models without external data are not parsed here."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data.find(b"location") < 0:  # the key of every external-data entry
                return
    except (OSError, ValueError) as e:  # unreadable, or empty (mmap refuses 0 bytes)
        if isinstance(e, OSError) and not isinstance(e, ValueError):
            raise ModelLoadError(f"cannot read model file {path}: {e}") from None
        return
    try:
        import onnx
        from onnx.external_data_helper import _get_all_tensors, uses_external_data

        proto = onnx.load(path, load_external_data=False)
    except Exception:
        return  # not a model onnx can read: onnxruntime says why
    folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    for tensor in _get_all_tensors(proto):
        if not uses_external_data(tensor):
            continue
        for entry in tensor.external_data:
            if entry.key != "location":
                continue
            target = os.path.realpath(os.path.join(folder, entry.value))
            if os.path.isabs(entry.value) or os.path.commonpath([folder, target]) != folder:
                raise ModelLoadError(
                    f"model file {path}: tensor {tensor.name!r} keeps its data in {entry.value!r}, outside the "
                    "model's folder; fastort refuses to read files outside it"
                )


def check_no_external_data(blob: bytes) -> None:
    """Refuses serialized model bytes that refer to external data files: bytes
    have no folder, and onnxruntime would look for such files relative to the
    process's working directory. Pass the model's path instead."""
    if blob.find(b"location") < 0:  # the key of every external-data entry
        return
    try:
        import onnx
        from onnx.external_data_helper import _get_all_tensors, uses_external_data

        proto = onnx.load_from_string(blob)
    except Exception:
        return  # not a model onnx can read: onnxruntime says why
    for tensor in _get_all_tensors(proto):
        if uses_external_data(tensor):
            where = next((e.value for e in tensor.external_data if e.key == "location"), "?")
            raise ModelLoadError(
                f"the model (given as bytes or a ModelProto) keeps tensor {tensor.name!r} in the external file "
                f"{where!r}; bytes have no folder to bound where data may be read from: save the model and "
                "pass its path"
            )


def describe(model: Any) -> str:
    if isinstance(model, (str, os.PathLike)):
        return repr(os.fspath(model))
    if isinstance(model, (bytes, bytearray, memoryview)):
        return f"<{len(model)} model bytes>"
    return f"<{type(model).__name__}>"


def model_bytes(model: Any) -> bytes:
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
        data: bytes = serialize()
        return data
    except Exception as e:  # protobuf refuses models over 2 GB
        raise ModelLoadError(
            f"cannot serialize the ModelProto ({e}); save large models with external data "
            "(onnx.save(..., save_as_external_data=True)) and pass the path"
        ) from e
