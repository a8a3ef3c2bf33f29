"""Models for the execution-provider tests and bench/bench_ep.py, built in code:
a small CNN, an MLP, and a transformer encoder block, all with a dynamic batch
(and, for the transformer, a dynamic sequence length)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fastort.bench.models import cnn_model
from models import make_model, tensor


def _init(rng: np.random.Generator, name: str, shape, scale: float = 0.1) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def cnn(channels: int = 16, size: int = 32, classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    """x[batch, 3, size, size] -> Conv3x3-Relu-MaxPool-Conv3x3-Relu-GlobalAvgPool-Gemm -> y[batch, classes]."""
    return cnn_model(channels, size, classes, seed)


def mlp(sizes=(256, 512, 512, 64), seed: int = 0) -> onnx.ModelProto:
    """x[batch, sizes[0]] -> (MatMul+Add+Relu)* -> y[batch, sizes[-1]]."""
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        inits += [_init(rng, f"W{i}", (a, b), 1 / np.sqrt(a)), _init(rng, f"B{i}", (b,))]
        nodes += [helper.make_node("MatMul", [prev, f"W{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"B{i}"], [f"a{i}"])]
        prev = f"a{i}"
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"]))
            prev = f"r{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    return make_model(nodes, [tensor("x", TensorProto.FLOAT, ["batch", sizes[0]])],
                      [tensor("y", TensorProto.FLOAT, ["batch", sizes[-1]])], inits)


def transformer(d: int = 64, heads: int = 4, ff: int = 256, layers: int = 1, seed: int = 0) -> onnx.ModelProto:
    """x[batch, seq, d] -> `layers` post-norm encoder blocks (multi-head
    self-attention + LayerNorm + GELU feed-forward + LayerNorm) -> y[batch, seq, d]."""
    rng = np.random.default_rng(seed)
    hd = d // heads
    nodes, inits = [], [
        numpy_helper.from_array(np.array([0, 0, heads, hd], np.int64), "split_heads"),
        numpy_helper.from_array(np.array([0, 0, d], np.int64), "merge_heads"),
        numpy_helper.from_array(np.array(1 / np.sqrt(hd), np.float32), "scale"),
        numpy_helper.from_array(np.array(1 / np.sqrt(2), np.float32), "inv_sqrt2"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
    ]
    prev = "x"
    for l in range(layers):
        p = f"l{l}_"
        for n, shape in (("Wq", (d, d)), ("Wk", (d, d)), ("Wv", (d, d)), ("Wo", (d, d)), ("W1", (d, ff)), ("W2", (ff, d))):
            inits.append(_init(rng, p + n, shape, 1 / np.sqrt(shape[0])))
        for n, size in (("g1", d), ("g2", d)):
            inits.append(numpy_helper.from_array(np.ones(size, np.float32), p + n))
        for n, size in (("b1", d), ("b2", d), ("bf1", ff), ("bf2", d)):
            inits.append(_init(rng, p + n, (size,), 0.02))
        for t in ("q", "k", "v"):
            nodes += [helper.make_node("MatMul", [prev, p + "W" + t], [p + t]),
                      helper.make_node("Reshape", [p + t, "split_heads"], [p + t + "h"]),
                      helper.make_node("Transpose", [p + t + "h"], [p + t + "t"],
                                       perm=[0, 2, 3, 1] if t == "k" else [0, 2, 1, 3])]
        nodes += [
            helper.make_node("MatMul", [p + "qt", p + "kt"], [p + "s"]),
            helper.make_node("Mul", [p + "s", "scale"], [p + "ss"]),
            helper.make_node("Softmax", [p + "ss"], [p + "a"], axis=-1),
            helper.make_node("MatMul", [p + "a", p + "vt"], [p + "o"]),
            helper.make_node("Transpose", [p + "o"], [p + "ot"], perm=[0, 2, 1, 3]),
            helper.make_node("Reshape", [p + "ot", "merge_heads"], [p + "om"]),
            helper.make_node("MatMul", [p + "om", p + "Wo"], [p + "proj"]),
            helper.make_node("Add", [prev, p + "proj"], [p + "res1"]),
            helper.make_node("LayerNormalization", [p + "res1", p + "g1", p + "b1"], [p + "n1"], axis=-1),
            helper.make_node("MatMul", [p + "n1", p + "W1"], [p + "f1"]),
            helper.make_node("Add", [p + "f1", p + "bf1"], [p + "f1b"]),
            # exact GELU: 0.5 x (1 + erf(x / sqrt 2))
            helper.make_node("Mul", [p + "f1b", "inv_sqrt2"], [p + "gs"]),
            helper.make_node("Erf", [p + "gs"], [p + "ge"]),
            helper.make_node("Add", [p + "ge", "one"], [p + "g1p"]),
            helper.make_node("Mul", [p + "f1b", p + "g1p"], [p + "gm"]),
            helper.make_node("Mul", [p + "gm", "half"], [p + "gelu"]),
            helper.make_node("MatMul", [p + "gelu", p + "W2"], [p + "f2"]),
            helper.make_node("Add", [p + "f2", p + "bf2"], [p + "f2b"]),
            helper.make_node("Add", [p + "n1", p + "f2b"], [p + "res2"]),
            helper.make_node("LayerNormalization", [p + "res2", p + "g2", p + "b2"], [p + "out"], axis=-1),
        ]
        prev = p + "out"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    return make_model(nodes, [tensor("x", TensorProto.FLOAT, ["batch", "seq", d])],
                      [tensor("y", TensorProto.FLOAT, ["batch", "seq", d])], inits)
