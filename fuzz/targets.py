"""Small models the fuzz targets work against (built in code, no downloads)."""

from __future__ import annotations

import os
import sys
from typing import Dict, List

import onnx
from onnx import TensorProto, helper

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import models  # noqa: E402


def two_outputs() -> onnx.ModelProto:
    """y = Identity(x), z = Neg(x) over x[n] float32."""
    return models.make_model(
        [helper.make_node("Identity", ["x"], ["y"]), helper.make_node("Neg", ["x"], ["z"])],
        [models.tensor("x", TensorProto.FLOAT, ["n"])],
        [models.tensor("y", TensorProto.FLOAT, ["n"]), models.tensor("z", TensorProto.FLOAT, ["n"])],
    )


def reshape() -> onnx.ModelProto:
    """y = Reshape(x, shape): the output's shape comes from input values."""
    return models.make_model(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        [models.tensor("x", TensorProto.FLOAT, ["a", "b"]), models.tensor("shape", TensorProto.INT64, ["r"])],
        [models.tensor("y", TensorProto.FLOAT, ["c", "d"])],
    )


def seed_models() -> Dict[str, onnx.ModelProto]:
    return {
        "tiny": models.tiny(),
        "mlp": models.mlp(),
        "gather": models.gather(),
        "add_mul": models.add_mul(),
        "two_outputs": two_outputs(),
        "scalar_plus_matrix": models.scalar_plus_matrix(),
        "string_identity": models.identity(TensorProto.STRING, ["n"]),
        "unranked": models.unranked_identity(TensorProto.FLOAT),
        "int8_identity": models.identity(TensorProto.INT8, ["n", 2]),
        "f16_identity": models.identity(TensorProto.FLOAT16, ["batch", 3], with_cast=True),
        "reshape": reshape(),
        "sequence": models.sequence(),
        "scale_seq": models.scale_seq(),
    }


def seed_bytes() -> List[bytes]:
    return [m.SerializeToString() for m in seed_models().values()]
