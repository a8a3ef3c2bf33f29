"""Built-in models generated in code (no downloads), for benchmarks and demos."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import zipfile
from typing import TYPE_CHECKING, Any, Dict, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

if TYPE_CHECKING:  # onnx is imported only when a model is built
    import onnx

__all__ = ["tiny_model", "mlp_model", "relu_model", "cnn_model", "packaged_models"]

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


def cnn_model(channels: int = 16, size: int = 32, classes: int = 10, seed: int = 0) -> "onnx.ModelProto":
    """x float32[batch, 3, size, size] -> Conv3x3-Relu-MaxPool-Conv3x3-Relu-
    GlobalAvgPool-Gemm -> y float32[batch, classes]: the small CNN of the
    benchmarks and the execution-provider tests (seeded random weights)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def init(name: str, shape: Sequence[int], scale: float = 0.1) -> Any:
        return numpy_helper.from_array((rng.standard_normal(tuple(shape)) * scale).astype(np.float32), name)

    inits = [init("W1", (channels, 3, 3, 3)), init("B1", (channels,)),
             init("W2", (2 * channels, channels, 3, 3), 0.05), init("B2", (2 * channels,)),
             init("Wf", (classes, 2 * channels)), init("Bf", (classes,))]
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "W2", "B2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "Wf", "Bf"], ["y"], transB=1),
    ]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, size, size])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", classes])], inits)


def packaged_models(wheel: str, files: Mapping[str, str], cache: str) -> Dict[str, str]:
    """Real models shipped inside a PyPI package, for benchmarks: downloads
    ``wheel`` (a requirement such as ``"rapidocr-onnxruntime==1.4.4"``) once
    with ``pip download --no-deps`` into ``cache`` and unpacks the members whose
    base names ``files`` lists ({key: file name}). Returns {key: path} of those
    found; empty when the download fails (no index reachable), so a benchmark
    can leave them out and say so. Nothing here is ever committed."""
    os.makedirs(cache, exist_ok=True)
    paths = {k: os.path.join(cache, f) for k, f in files.items()}
    if not all(os.path.isfile(p) for p in paths.values()):
        project = wheel.split("=")[0].split("<")[0].split(">")[0].strip().replace("-", "_")
        if not glob.glob(os.path.join(cache, f"{project}-*.whl")):
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", wheel, "-d", cache],
                           check=False)
        wheels = sorted(glob.glob(os.path.join(cache, f"{project}-*.whl")))
        if not wheels:
            return {}
        with zipfile.ZipFile(wheels[-1]) as z:
            for member in z.namelist():
                if os.path.basename(member) in files.values():
                    with z.open(member) as src, open(os.path.join(cache, os.path.basename(member)), "wb") as dst:
                        dst.write(src.read())
    return {k: p for k, p in paths.items() if os.path.isfile(p)}
