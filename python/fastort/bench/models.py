"""Built-in models generated in code (no downloads), for benchmarks and demos."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence, Union

import numpy as np

if TYPE_CHECKING:  # onnx is imported only when a model is built
    import onnx

__all__ = ["tiny_model", "mlp_model", "relu_model"]

_OPSET = 17
_IR_VERSION = 10  # readable by every onnxruntime fastort supports (1.21+)


def _model(nodes: Iterable[Any], inputs: Iterable[Any], outputs: Iterable[Any],
           initializers: Iterable[Any] = ()) -> "onnx.ModelProto":
    from onnx import helper

    graph = helper.make_graph(list(nodes), "fastort_builtin", list(inputs), list(outputs), list(initializers))
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", _OPSET)], ir_version=_IR_VERSION, producer_name="fastort"
    )


def tiny_model(seed: int = 0) -> "onnx.ModelProto":
    """MatMul 4x3 + Relu: x float32[batch, 4] -> y float32[batch, 3].

    So small that a call costs only the overhead around onnxruntime: the model
    that shows what a binding adds per call. ``W`` (4x3) is seeded random.
    """
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(seed).standard_normal((4, 3)).astype(np.float32)
    return _model(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(w, "W")],
    )


def mlp_model(sizes: Sequence[int] = (512, 2048, 2048, 512), seed: int = 0) -> "onnx.ModelProto":
    """A float32 MLP (MatMul + Add + Relu per layer, no Relu after the last) with
    a dynamic batch dim: x[batch, sizes[0]] -> y[batch, sizes[-1]].

    Weights are seeded random, scaled by 1/sqrt(fan-in) so activations stay O(1).
    """
    from onnx import TensorProto, helper, numpy_helper

    if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
        raise ValueError(f"sizes must be at least two positive layer widths, got {tuple(sizes)}")

    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        inits.append(numpy_helper.from_array((rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32), f"W{i}"))
        inits.append(numpy_helper.from_array((rng.standard_normal(b) * 0.01).astype(np.float32), f"B{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"W{i}"], [f"m{i}"]))
        last = i == len(sizes) - 2
        nodes.append(helper.make_node("Add", [f"m{i}", f"B{i}"], ["y" if last else f"a{i}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"a{i}"], [f"r{i}"]))
            prev = f"r{i}"
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", sizes[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", sizes[-1]])],
        inits,
    )


def relu_model(n_elements: Optional[int] = None) -> "onnx.ModelProto":
    """y = Relu(x) on float32[n]: one pass over memory, for large-tensor transfer
    tests (64M elements: 256 MB in, 256 MB out).

    ``n_elements`` fixes the length; by default it is a dynamic dim named "n".
    """
    from onnx import TensorProto, helper

    dim: Union[int, str] = "n" if n_elements is None else int(n_elements)
    return _model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [dim])],
    )
