"""Bad input never crashes the process: each case raises an exception that names what was wrong."""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import fastort
from fastort import (
    ConfigError,
    EngineClosedError,
    FastortError,
    InvalidInputError,
    ModelLoadError,
    ModelNotFoundError,
)
import models


@pytest.fixture(scope="module")
def engine():
    return fastort.Engine(models.tiny())


def test_error_hierarchy():
    assert issubclass(InvalidInputError, (FastortError, ValueError))
    assert issubclass(ModelLoadError, (FastortError, ValueError))
    assert issubclass(ModelNotFoundError, (ModelLoadError, FileNotFoundError))
    assert issubclass(fastort.RunError, RuntimeError)
    assert issubclass(fastort.RuntimeLoadError, ImportError)
    assert issubclass(fastort.RequestTimeoutError, TimeoutError)


@pytest.mark.parametrize(
    "inputs,pattern",
    [
        ({"x": np.ones((1, 4), np.float64)}, r"input 'x': expected dtype float32, got float64"),
        ({"x": np.ones((1, 4), np.int32)}, r"input 'x': expected dtype float32, got int32"),
        ({"x": np.ones((1, 1, 4), np.float32)}, r"input 'x': expected rank 2 \(shape \[batch, 4\]\), got rank 3"),
        ({"x": np.ones(4, np.float32)}, r"expected rank 2"),
        ({"x": np.ones((1, 5), np.float32)}, r"input 'x': dim 1 must be 4 \(shape \[batch, 4\]\), got shape \(1, 5\)"),
        ({}, r"missing input 'x' \(model inputs: x\)"),
        ({"x": np.ones((1, 4), np.float32), "z": np.ones(1)}, r"unknown input 'z'"),
        ({"X": np.ones((1, 4), np.float32)}, r"missing input 'x'; unknown input 'X'"),
        ({"x": [[1.0, 2.0, 3.0, 4.0]]}, r"input 'x': expected a numpy.ndarray, got list"),
        ({"x": 3}, r"input 'x': expected a numpy.ndarray, got int"),
        ({"x": np.array(["a"] * 4).reshape(1, 4)}, r"expected dtype float32, got string"),
        ({"x": np.ones((1, 4), "datetime64[s]")}, r"input 'x': numpy dtype datetime64\[s\] is not supported"),
        ({"x": np.zeros((1, 4), dtype=[("a", "f4")])}, r"is not supported"),
        ([np.ones((1, 4), np.float32)] * 2, r"the model takes 1 inputs \(x\), got 2"),
        ("x", r"inputs must be a dict .* got str"),
        (None, r"inputs must be a dict"),
    ],
)
def test_bad_inputs(engine, inputs, pattern):
    with pytest.raises(InvalidInputError, match=pattern):
        engine.run(inputs)


def test_bad_string_elements():
    engine = fastort.Engine(models.identity(TensorProto.STRING, [None]))
    with pytest.raises(InvalidInputError, match=r"input 'x': string tensors take str or bytes elements, element 1 is int"):
        engine.run({"x": np.array(["a", 3], dtype=object)})
    with pytest.raises(InvalidInputError, match=r"element 0 cannot be encoded as UTF-8"):
        engine.run({"x": np.array(["\ud800"], dtype=object)})


def test_bad_output_requests(engine):
    x = np.ones((1, 4), np.float32)
    with pytest.raises(InvalidInputError, match=r"unknown output 'nope' \(model outputs: y\)"):
        engine.run({"x": x}, outputs=["nope"])
    with pytest.raises(InvalidInputError, match=r"outputs must be a list of output names, got str"):
        engine.run({"x": x}, outputs="y")
    for buf, pattern in [
        (np.empty((1, 3), np.float64), r"output buffer for 'y': expected dtype float32, got float64"),
        (np.empty((1, 3, 1), np.float32), r"output buffer for 'y': expected rank 2"),
        (np.empty((1, 6), np.float32)[:, ::2], r"writeable, C-contiguous"),
        ([0.0, 0.0, 0.0], r"expected a numpy.ndarray, got list"),
    ]:
        with pytest.raises(InvalidInputError, match=pattern):
            engine.run({"x": x}, out={"y": buf})
    readonly = np.empty((1, 3), np.float32)
    readonly.flags.writeable = False
    with pytest.raises(InvalidInputError, match=r"writeable"):
        engine.run({"x": x}, out={"y": readonly})
    with pytest.raises(InvalidInputError, match=r"not a requested output"):
        engine.run({"x": x}, out={"zz": np.empty((1, 3), np.float32)})
    with pytest.raises(InvalidInputError, match=r"an output buffer does not have the output's shape"):
        engine.run({"x": x}, out={"y": np.empty((2, 3), np.float32)})  # wrong batch: onnxruntime says so
    assert engine.run({"x": x})["y"].shape == (1, 3)  # still serving


def test_model_load_errors(tmp_path: pathlib.Path):
    good = models.tiny().SerializeToString()
    with pytest.raises(ModelLoadError, match=r"empty"):
        fastort.Engine(b"")
    with pytest.raises(ModelLoadError, match=r"cannot load model bytes"):
        fastort.Engine(b"this is not an onnx model" * 10)
    with pytest.raises(ModelLoadError, match=r"cannot load model bytes"):
        fastort.Engine(good[: len(good) // 2])
    corrupted = bytearray(good)
    for i in range(10, len(corrupted), 7):
        corrupted[i] ^= 0x5A
    with pytest.raises(ModelLoadError):
        fastort.Engine(bytes(corrupted))
    with pytest.raises(ModelNotFoundError, match=r"model file not found: .*missing.onnx") as info:
        fastort.Engine(tmp_path / "missing.onnx")
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(ModelLoadError, match=r"is a directory"):
        fastort.Engine(tmp_path)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good[:40])
    with pytest.raises(ModelLoadError, match=r"truncated.onnx"):
        fastort.Engine(truncated)
    with pytest.raises(ModelLoadError, match=r"must be a path, bytes or an onnx.ModelProto, got int"):
        fastort.Engine(42)  # type: ignore[arg-type]


def test_unknown_op_is_a_load_error():
    node = helper.make_node("NoSuchOp", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [models.tensor("x", TensorProto.FLOAT, [1])],
                              [models.tensor("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    with pytest.raises(ModelLoadError, match=r"NoSuchOp"):
        fastort.Engine(model)


def test_external_data_outside_the_model_folder_is_refused(tmp_path: pathlib.Path):
    model = models.mlp((8, 512, 4))
    inner = tmp_path / "inner"
    inner.mkdir()
    onnx.save(model, str(inner / "m.onnx"), save_as_external_data=True, location="w.bin", size_threshold=0)
    (inner / "w.bin").rename(tmp_path / "w.bin")
    m = onnx.load(str(inner / "m.onnx"), load_external_data=False)
    for t in m.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = "../w.bin"
    onnx.save(m, str(inner / "m.onnx"))
    with pytest.raises(ModelLoadError):
        fastort.Engine(inner / "m.onnx")


def test_bad_options():
    model = models.tiny()
    for kwargs, pattern in [
        ({"providers": ["nope"]}, r"unknown execution provider 'nope'"),
        ({"providers": ["cuda"], "strict_providers": True}, r"'CUDAExecutionProvider' is not available .*onnxruntime-gpu"),
        ({"providers": []}, r"providers is empty"),
        ({"intra_op_threads": -1}, r"intra_op_threads must be a non-negative int"),
        ({"graph_optimization": "max"}, r"graph_optimization must be one of"),
        ({"execution_mode": "fast"}, r"execution_mode must be one of"),
        ({"log_level": "loud"}, r"log_level must be one of"),
        ({"replicas": 0}, r"replicas must be an int >= 1"),
        ({"max_batch_size": 0}, r"max_batch_size must be an int >= 1"),
        ({"max_batch_size": 4, "padding": {"nope": {1: 0}}}, r"padding names input 'nope'"),
        ({"max_batch_size": 4, "padding": {"x": {1: 0}}}, r"cannot be padded along dim 1"),
    ]:
        with pytest.raises(ConfigError, match=pattern):
            fastort.Engine(model, **kwargs)


def test_closed_engine():
    engine = fastort.Engine(models.tiny())
    x = np.ones((1, 4), np.float32)
    with engine:
        engine.run({"x": x})
    assert engine.closed
    with pytest.raises(EngineClosedError, match=r"closed"):
        engine.run({"x": x})
    with pytest.raises(EngineClosedError):
        engine.submit({"x": x})
    engine.close()  # idempotent


def test_runtime_failure_keeps_engine_serving():
    engine = fastort.Engine(models.gather())
    with pytest.raises(FastortError, match=r"Gather"):
        engine.run({"idx": np.array([7], np.int64)})
    np.testing.assert_array_equal(engine.run({"idx": np.array([1], np.int64)})["y"], [[2.0, 3.0]])


def test_unavailable_provider_falls_back_to_cpu_with_a_warning():
    if "CUDAExecutionProvider" in fastort.runtime_info()["providers"]:
        pytest.skip("this runtime has CUDA: the fallback for a missing provider cannot be seen")
    with pytest.warns(RuntimeWarning, match=r"'CUDAExecutionProvider' is not available .*using the next provider"):
        engine = fastort.Engine(models.tiny(), providers=["cuda", "cpu"])
    assert engine.providers == ("CPUExecutionProvider",)
    x = np.ones((1, 4), np.float32)
    np.testing.assert_allclose(engine.run({"x": x})["y"], np.maximum(x @ models.tiny_weights(), 0), rtol=1e-6)
    with pytest.warns(RuntimeWarning):
        assert fastort.Engine(models.tiny(), providers="CUDAExecutionProvider").providers == ("CPUExecutionProvider",)
