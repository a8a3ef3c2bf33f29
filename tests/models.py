"""ONNX models built in code for the tests (no downloads)."""

from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 10  # the oldest runtime fastort supports (1.21) reads IR <= 10


def make_model(nodes, inputs, outputs, initializers=(), opset: int = OPSET, domains: Sequence = ()) -> onnx.ModelProto:
    graph = helper.make_graph(list(nodes), "test", list(inputs), list(outputs), list(initializers))
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in domains]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model


def tensor(name: str, elem_type: int, shape: Optional[List] = None):
    return helper.make_tensor_value_info(name, elem_type, shape)


def tiny(seed: int = 0) -> onnx.ModelProto:
    """MatMul 4x3 + Relu on x[batch, 4] -> y[batch, 3]."""
    w = np.random.default_rng(seed).standard_normal((4, 3)).astype(np.float32)
    return make_model(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        [tensor("x", TensorProto.FLOAT, ["batch", 4])],
        [tensor("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(w, "W")],
    )


def tiny_weights(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((4, 3)).astype(np.float32)


def identity(elem_type: int, shape: Optional[List] = None, with_cast: bool = False) -> onnx.ModelProto:
    """y = Identity(x); with_cast adds f = Cast(x, float32)."""
    nodes = [helper.make_node("Identity", ["x"], ["y"])]
    outputs = [tensor("y", elem_type, shape)]
    if with_cast:
        nodes.append(helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT))
        outputs.append(tensor("f", TensorProto.FLOAT, shape))
    return make_model(nodes, [tensor("x", elem_type, shape)], outputs, opset=21 if elem_type >= 17 else OPSET)


def mlp(sizes=(8, 16, 4), seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        inits.append(numpy_helper.from_array((rng.standard_normal((a, b)) * 0.1).astype(np.float32), f"W{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"W{i}"], [f"h{i}"]))
        prev = f"h{i}"
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"]))
            prev = f"r{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    return make_model(nodes, [tensor("x", TensorProto.FLOAT, ["batch", sizes[0]])],
                      [tensor("y", TensorProto.FLOAT, ["batch", sizes[-1]])], inits)


def scale_seq() -> onnx.ModelProto:
    """y[batch, seq] = 2 * x[batch, seq]; n[batch, 1] = number of nonzeros per row."""
    return make_model(
        [
            helper.make_node("Mul", ["x", "two"], ["y"]),
            helper.make_node("ReduceSum", ["x", "axes"], ["n"], keepdims=1),
        ],
        [tensor("x", TensorProto.FLOAT, ["batch", "seq"])],
        [tensor("y", TensorProto.FLOAT, ["batch", "seq"]), tensor("n", TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(np.array(2.0, np.float32), "two"),
         numpy_helper.from_array(np.array([1], np.int64), "axes")],
    )


def gather() -> onnx.ModelProto:
    """y = data[idx]: onnxruntime fails at run time on an out-of-range index."""
    data = np.arange(6, dtype=np.float32).reshape(3, 2)
    return make_model(
        [helper.make_node("Gather", ["data", "idx"], ["y"])],
        [tensor("idx", TensorProto.INT64, ["batch"])],
        [tensor("y", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(data, "data")],
    )


def slow(n: int = 256, loops: int = 64) -> onnx.ModelProto:
    """A model that takes a few milliseconds per row: a chain of MatMuls."""
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32)
    nodes, prev = [], "x"
    for i in range(loops):
        nodes.append(helper.make_node("MatMul", [prev, "W"], [f"h{i}"]))
        prev = f"h{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    return make_model(nodes, [tensor("x", TensorProto.FLOAT, ["batch", n])],
                      [tensor("y", TensorProto.FLOAT, ["batch", n])], [numpy_helper.from_array(w, "W")])
