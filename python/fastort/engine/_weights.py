"""Weights shared by the replicas of one model (see Engine's ``replicas``)."""

from __future__ import annotations

import mmap
import os
import tempfile
from typing import Any, List, Tuple, Union

import numpy as np

from .. import _core


#: Initializers smaller than this stay inside the model (not worth sharing).
SHARED_WEIGHT_MIN_BYTES = 1024


def split_weights(model: Any, source: Union[str, bytes]) -> Tuple[Union[str, bytes], List[Tuple[str, np.ndarray]], Any]:
    """Takes the large initializers out of the model so that every replica uses
    one copy of them instead of its own.

    The weights go into an unlinked temporary file that is memory-mapped
    read-only; each replica gets them through onnxruntime's AddInitializer (no
    copy), and the replicas share the packed forms onnxruntime makes of them.
    Once the sessions exist the caller drops the mapping's pages
    (:func:`release_pages`): onnxruntime reads its packed copies from then on,
    and any page still needed is read back from the file on demand.

    Returns the model bytes without those weights' data, the weights, and the
    mapping. A model onnx cannot read here is returned as it was.
    """
    try:
        import onnx
        import onnx.external_data_helper
        from onnx import numpy_helper

        if isinstance(source, str):
            proto = onnx.load(source)  # with its external data, resolved next to it
        elif isinstance(model, onnx.ModelProto):
            proto = onnx.ModelProto()
            proto.CopyFrom(model)
        else:
            proto = onnx.load_from_string(source)
    except Exception:
        return source, [], None
    picked = []
    for tensor in proto.graph.initializer:
        if tensor.data_type == onnx.TensorProto.STRING:
            continue
        array = numpy_helper.to_array(tensor)
        if array.nbytes < SHARED_WEIGHT_MIN_BYTES or array.dtype.kind not in "biuf":
            continue
        picked.append((tensor, array))
    if not picked:
        return source, [], None

    fd, path = tempfile.mkstemp(prefix="fastort-weights-", dir=os.environ.get("FASTORT_WEIGHTS_DIR"))
    try:
        offsets = []
        with os.fdopen(fd, "wb") as f:
            for _, array in picked:
                f.seek(-f.tell() % 64, os.SEEK_CUR)  # 64-byte aligned
                offsets.append(f.tell())
                f.write(np.ascontiguousarray(array).data)
            size = f.tell()
        with open(path, "rb") as f:
            mapping = mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ)
    finally:
        os.unlink(path)
    weights: List[Tuple[str, np.ndarray]] = []
    for (tensor, array), offset in zip(picked, offsets):
        shared = np.frombuffer(mapping, dtype=array.dtype, count=array.size, offset=offset).reshape(array.shape)
        weights.append((tensor.name, shared))
        # Point the tensor at an in-memory "file" that is the shared buffer (see
        # shared_weight_file in the core): the model no longer carries the data.
        onnx.external_data_helper.set_external_data(
            tensor, location=_core.shared_weight_file(tensor.name), offset=0, length=array.nbytes
        )
        for name in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
            tensor.ClearField(name)
        tensor.data_location = onnx.TensorProto.EXTERNAL
    del picked
    return proto.SerializeToString(), weights, mapping


def release_pages(mapping: Any) -> None:
    """Drops the resident pages of the shared weights' mapping (they are re-read
    from the file if onnxruntime ever touches them again)."""
    if mapping is not None and hasattr(mapping, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)
