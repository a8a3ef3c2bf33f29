"""Small models for the model-preparation tests, built in code (no downloads):
ONNX graphs with onnx.helper, and (when torch is installed) tiny torch modules."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 10


def _model(nodes, inputs, outputs, inits=(), opset: int = OPSET) -> onnx.ModelProto:
    graph = helper.make_graph(list(nodes), "prep_test", list(inputs), list(outputs), list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model


def mlp(sizes: Sequence[int] = (16, 64, 64, 8), seed: int = 0, softmax: bool = False) -> onnx.ModelProto:
    """MatMul + Add (+ Relu between layers): x float32[batch, sizes[0]] -> y[batch, sizes[-1]]."""
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        inits.append(numpy_helper.from_array((rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32), f"W{i}"))
        inits.append(numpy_helper.from_array((rng.standard_normal(b) * 0.1).astype(np.float32), f"B{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"W{i}"], [f"m{i}"], name=f"matmul{i}"))
        last = i == len(sizes) - 2
        out = ("logits" if softmax else "y") if last else f"a{i}"
        nodes.append(helper.make_node("Add", [f"m{i}", f"B{i}"], [out], name=f"add{i}"))
        if not last:
            nodes.append(helper.make_node("Relu", [out], [f"r{i}"], name=f"relu{i}"))
            prev = f"r{i}"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["y"], axis=-1, name="softmax"))
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", sizes[0]])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", sizes[-1]])], inits)


def redundant(seed: int = 0) -> onnx.ModelProto:
    """y = relu((x @ W) + (c1 + c2)) with an Identity, an unused initializer, a
    duplicate of W, and a constant sub-graph: room for simplification."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((8, 8)).astype(np.float32)
    inits = [
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(w.copy(), "W_dup"),
        numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "unused"),
        numpy_helper.from_array(np.full(8, 0.5, np.float32), "c1"),
        numpy_helper.from_array(np.full(8, 0.25, np.float32), "c2"),
    ]
    nodes = [
        helper.make_node("Identity", ["x"], ["xi"], name="identity"),
        helper.make_node("MatMul", ["xi", "W"], ["h1"], name="mm1"),
        helper.make_node("MatMul", ["xi", "W_dup"], ["h2"], name="mm2"),
        helper.make_node("Add", ["c1", "c2"], ["c"], name="const_add"),
        helper.make_node("Add", ["h1", "h2"], ["h"], name="sum"),
        helper.make_node("Add", ["h", "c"], ["hc"], name="bias"),
        helper.make_node("Relu", ["hc"], ["y"], name="relu"),
    ]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])], inits)


def conv(seed: int = 0) -> onnx.ModelProto:
    """Conv(3->8, 3x3, pad 1) -> Relu -> MaxPool 2 -> Flatten -> Gemm(8*4*4 -> 5):
    x float32[batch, 3, 8, 8] -> y[batch, 5]."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "Wc"),
        numpy_helper.from_array((rng.standard_normal(8) * 0.1).astype(np.float32), "Bc"),
        numpy_helper.from_array((rng.standard_normal((5, 128)) * 0.1).astype(np.float32), "Wf"),
        numpy_helper.from_array((rng.standard_normal(5) * 0.1).astype(np.float32), "Bf"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "Wc", "Bc"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["f", "Wf", "Bf"], ["y"], transB=1, name="fc"),
    ]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5])], inits)


def relu_only() -> onnx.ModelProto:
    return _model([helper.make_node("Relu", ["x"], ["y"])],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])


def fixed_batch_mlp(batch: int = 1) -> onnx.ModelProto:
    """mlp() with the batch dim fixed."""
    model = mlp((16, 32, 8))
    for vi in list(model.graph.input) + list(model.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_value = batch
    return model


def mlp_inputs(rows: int = 32, features: int = 16, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, features)).astype(np.float32)


def conv_inputs(rows: int = 32, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 3, 8, 8)).astype(np.float32)


# -- torch (imported only by the tests that need it) -----------------------------------


def torch_modules():
    """(TinyCNN, TwoInTwoOut, Unsupported, Liar) classes; needs torch."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class TinyCNN(nn.Module):
        """conv(3->4) -> relu -> pool -> fc(4*4*4 -> 3) on 3x8x8."""

        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(4 * 4 * 4, 3)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(F.relu(self.conv(x))), 1))

    class TwoInTwoOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(1)
            self.lin = nn.Linear(4, 3)

        def forward(self, a, b):
            h = self.lin(a) * b
            return h, h.sum(dim=1)

    class Unsupported(nn.Module):
        """kthvalue has no ONNX conversion in either exporter."""

        def forward(self, x):
            return torch.kthvalue(x, 2, dim=1)[0]

    class Liar(nn.Module):
        """Computes something else while being exported: the ONNX model differs."""

        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(2)
            self.lin = nn.Linear(4, 3)

        def forward(self, x):
            y = self.lin(x)
            if torch.onnx.is_in_onnx_export():
                y = y + 0.5
            return y

    return TinyCNN, TwoInTwoOut, Unsupported, Liar
