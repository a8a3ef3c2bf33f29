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


def unranked_identity(elem_type: int, with_cast: bool = False) -> onnx.ModelProto:
    """Like identity() with no shape at all (any rank, rank 0 included)."""
    nodes = [helper.make_node("Identity", ["x"], ["y"])]
    outputs = [tensor("y", elem_type, None)]
    if with_cast:
        nodes.append(helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT))
        outputs.append(tensor("f", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "test", [tensor("x", elem_type, None)], outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=IR_VERSION)


def cast_from_float(elem_type: int) -> onnx.ModelProto:
    """y = Cast(x[n] float32, elem_type)."""
    return make_model([helper.make_node("Cast", ["x"], ["y"], to=elem_type)],
                      [tensor("x", TensorProto.FLOAT, ["n"])], [tensor("y", elem_type, ["n"])], opset=21)


def add_mul() -> onnx.ModelProto:
    """s = a + b, p = a * b over a[n], b[n] (two inputs, two outputs)."""
    return make_model(
        [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Mul", ["a", "b"], ["p"])],
        [tensor("a", TensorProto.FLOAT, ["n"]), tensor("b", TensorProto.FLOAT, ["n"])],
        [tensor("s", TensorProto.FLOAT, ["n"]), tensor("p", TensorProto.FLOAT, ["n"])],
    )


def scalar_plus_matrix() -> onnx.ModelProto:
    """c[n, 2] = a (a rank-0 scalar) + b[n, 2]."""
    return make_model(
        [helper.make_node("Add", ["a", "b"], ["c"])],
        [tensor("a", TensorProto.FLOAT, []), tensor("b", TensorProto.FLOAT, ["n", 2])],
        [tensor("c", TensorProto.FLOAT, ["n", 2])],
    )


def constant(value: np.ndarray) -> onnx.ModelProto:
    """No inputs: y = Constant(value)."""
    return make_model(
        [helper.make_node("Constant", [], ["y"], value=numpy_helper.from_array(value))],
        [], [tensor("y", helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape))],
    )


def reduce_sum() -> onnx.ModelProto:
    """s = sum of all elements of x[n, m] (a rank-0 float32)."""
    return make_model(
        [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0)],
        [tensor("x", TensorProto.FLOAT, ["n", "m"])],
        [tensor("s", TensorProto.FLOAT, [])],
    )


def sequence(elem_type: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """seq = SequenceConstruct(a[n], b[n]): a sequence output."""
    return make_model(
        [helper.make_node("SequenceConstruct", ["a", "b"], ["seq"])],
        [tensor("a", elem_type, ["n"]), tensor("b", elem_type, ["n"])],
        [helper.make_tensor_sequence_value_info("seq", elem_type, None)],
    )


def zipmap(labels: str, classes: int = 3) -> onnx.ModelProto:
    """scikit-learn's classifier output: probs = ZipMap(p[n, classes]), a list of dicts
    keyed by int64 class labels or by string class labels."""
    if labels == "int64":
        attrs, key = {"classlabels_int64s": list(range(10, 10 + classes))}, TensorProto.INT64
    else:
        attrs, key = {"classlabels_strings": [f"class_{i}" for i in range(classes)]}, TensorProto.STRING
    return make_model(
        [helper.make_node("ZipMap", ["p"], ["probs"], domain="ai.onnx.ml", **attrs)],
        [tensor("p", TensorProto.FLOAT, ["n", classes])],
        [helper.make_value_info("probs", helper.make_sequence_type_proto(
            helper.make_map_type_proto(key, helper.make_tensor_type_proto(TensorProto.FLOAT, []))))],
        domains=[("ai.onnx.ml", 1)],
    )


def nonzero() -> onnx.ModelProto:
    """y = NonZero(x[n]): the output's shape depends on the input's values."""
    return make_model(
        [helper.make_node("NonZero", ["x"], ["y"])],
        [tensor("x", TensorProto.FLOAT, ["n"])],
        [tensor("y", TensorProto.INT64, [1, None])],
    )


def unknown_op() -> onnx.ModelProto:
    """A model onnxruntime must refuse: its only node is an op that does not exist."""
    graph = helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"])], "g",
                              [tensor("x", TensorProto.FLOAT, [1])], [tensor("y", TensorProto.FLOAT, [1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
