"""Bad input never crashes the process: each case raises the right exception, with
a message that names what was wrong (the input, what was expected, what came)."""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto

import fastort
from fastort import (
    ConfigError,
    EngineClosedError,
    FastortError,
    InvalidInputError,
    ModelLoadError,
    ModelNotFoundError,
    RunError,
)
import models

X = np.ones((1, 4), np.float32)


def test_error_hierarchy():
    assert issubclass(InvalidInputError, (FastortError, ValueError))
    assert issubclass(ModelLoadError, (FastortError, ValueError))
    assert issubclass(ModelNotFoundError, ModelLoadError) and issubclass(ModelNotFoundError, FileNotFoundError)
    assert issubclass(ConfigError, (FastortError, ValueError))
    assert issubclass(EngineClosedError, FastortError)
    assert issubclass(RunError, (FastortError, RuntimeError))
    assert issubclass(fastort.RuntimeLoadError, (FastortError, ImportError))


# -- inputs ---------------------------------------------------------------------

BAD_INPUTS = [
    ("float64", {"x": np.ones((1, 4), np.float64)}, r"^input 'x': expected dtype float32, got float64$"),
    ("int32", {"x": np.ones((1, 4), np.int32)}, r"^input 'x': expected dtype float32, got int32$"),
    ("float16", {"x": np.ones((1, 4), np.float16)}, r"input 'x': expected dtype float32, got float16"),
    ("bool", {"x": np.ones((1, 4), bool)}, r"input 'x': expected dtype float32, got bool"),
    ("str", {"x": np.array([["a"] * 4])}, r"input 'x': expected dtype float32, got string"),
    ("object numbers", {"x": np.ones((1, 4), object)}, r"input 'x': expected dtype float32, got object"),
    ("rank 3", {"x": np.ones((1, 1, 4), np.float32)},
     r"input 'x': expected rank 2 \(shape \[batch, 4\]\), got rank 3 \(shape \(1, 1, 4\)\)"),
    ("rank 1", {"x": np.ones(4, np.float32)}, r"input 'x': expected rank 2 \(shape \[batch, 4\]\), got rank 1"),
    ("rank 0", {"x": np.float32(1.0)}, r"input 'x': expected rank 2 .* got rank 0"),
    ("fixed dim", {"x": np.ones((1, 5), np.float32)},
     r"input 'x': dim 1 must be 4 \(shape \[batch, 4\]\), got shape \(1, 5\)"),
    ("empty fixed dim", {"x": np.ones((3, 0), np.float32)}, r"input 'x': dim 1 must be 4 .* got shape \(3, 0\)"),
    ("missing", {}, r"missing input 'x' \(model inputs: x\)"),
    ("unknown", {"x": X, "z": X}, r"unknown input 'z' \(model inputs: x\)"),
    ("misspelt", {"X": X}, r"missing input 'x'; unknown input 'X'"),
    ("non-str key", {"x": X, 0: X}, r"unknown input '0'"),
    ("list", {"x": [[1.0, 2.0, 3.0, 4.0]]}, r"input 'x': expected a numpy.ndarray, got list"),
    ("int", {"x": 3}, r"input 'x': expected a numpy.ndarray, got int"),
    ("None", {"x": None}, r"input 'x': got None, expected a numpy.ndarray of float32 \(it is not optional\)"),
    ("datetime64", {"x": np.ones((1, 4), "datetime64[s]")}, r"input 'x': numpy dtype datetime64\[s\] is not supported"),
    ("timedelta64", {"x": np.ones((1, 4), "timedelta64[s]")}, r"input 'x': numpy dtype timedelta64\[s\] is not supported"),
    ("structured", {"x": np.zeros((1, 4), dtype=[("a", "f4")])}, r"input 'x': numpy dtype .* is not supported"),
    ("longdouble", {"x": np.ones((1, 4), np.longdouble)}, 
     r"input 'x': (numpy dtype float(96|128) is not supported|expected dtype float32, got float64)"),
    ("two in a list", [X, X], r"the model takes 1 inputs \(x\), got 2"),
    ("empty list", [], r"the model takes 1 inputs \(x\), got 0"),
    ("str", "x", r"inputs must be a dict .* got str"),
    ("None inputs", None, r"inputs must be a dict .* got NoneType"),
    ("generator", (a for a in [X]), r"inputs must be a dict .* got generator"),
]


@pytest.mark.parametrize("inputs,pattern", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_inputs(tiny_engine, inputs, pattern):
    with pytest.raises(InvalidInputError, match=pattern):
        tiny_engine.run(inputs)
    assert tiny_engine.run({"x": X})["y"].shape == (1, 3)  # still serving


def test_bad_inputs_of_a_two_input_model():
    engine = fastort.Engine(models.add_mul())
    a = np.ones(3, np.float32)
    with pytest.raises(InvalidInputError, match=r"the model takes 2 inputs \(a, b\), got 1"):
        engine.run([a])
    with pytest.raises(InvalidInputError, match=r"the model takes 2 inputs \(a, b\), got 3"):
        engine.run((a, a, a))
    with pytest.raises(InvalidInputError, match=r"inputs must be a dict .*\(a, b\), got ndarray"):
        engine.run(a)  # a bare array only for one-input models
    with pytest.raises(InvalidInputError, match=r"missing input 'b' \(model inputs: a, b\)"):
        engine.run({"a": a})
    with pytest.raises(InvalidInputError, match=r"input 'b': expected dtype float32, got int64"):
        engine.run([a, np.ones(3, np.int64)])
    with pytest.raises(RunError, match=r"onnxruntime failed to run the model: .*broadcast"):
        engine.run([a, np.ones(4, np.float32)])  # a and b disagree on n: onnxruntime says so


def test_bad_string_elements():
    engine = fastort.Engine(models.identity(TensorProto.STRING, [None]))
    with pytest.raises(InvalidInputError, match=r"input 'x': string tensors take str or bytes elements, element 1 is int"):
        engine.run({"x": np.array(["a", 3], dtype=object)})
    with pytest.raises(InvalidInputError, match=r"element 2 is NoneType"):
        engine.run({"x": np.array(["a", b"b", None], dtype=object)})
    with pytest.raises(InvalidInputError, match=r"element 0 is list"):
        engine.run({"x": np.array([["a"], ["b", "c"]], dtype=object)})
    with pytest.raises(InvalidInputError, match=r"input 'x': element 0 cannot be encoded as UTF-8"):
        engine.run({"x": np.array(["\ud800"], dtype=object)})
    with pytest.raises(InvalidInputError, match=r"input 'x': expected dtype string, got float32"):
        engine.run({"x": np.ones(2, np.float32)})
    assert engine.run({"x": np.array(["ok"])})["y"].tolist() == ["ok"]


def test_non_tensor_input_takes_a_list_not_an_array():
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("SequenceLength", ["s"], ["n"])], "g",
        [onnx.helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None)],
        [models.tensor("n", TensorProto.INT64, [])])
    engine = fastort.Engine(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)],
                                                   ir_version=models.IR_VERSION))
    assert engine.inputs[0].type == "seq(tensor(float))"
    with pytest.raises(InvalidInputError, match=r"input 's' is a seq\(tensor\(float\)\): expected a list or tuple "
                                                 r"of numpy arrays of float32, got ndarray"):
        engine.run({"s": np.ones(3, np.float32)})
    assert engine.run({"s": [np.ones(3, np.float32)]})["n"] == 1  # tests/core/test_nontensor_inputs.py has the rest


# -- outputs and out= -----------------------------------------------------------


@pytest.mark.parametrize(
    "outputs,pattern",
    [
        (["nope"], r"unknown output 'nope' \(model outputs: y\)"),
        (["y", "Y"], r"unknown output 'Y' \(model outputs: y\)"),
        ([1], r"unknown output '1'"),
        ("y", r"outputs must be a list of output names, got str"),
        (b"y", r"outputs must be a list of output names, got bytes"),
        (3, r"outputs must be a list of output names, got int"),
    ],
)
def test_bad_output_names(tiny_engine, outputs, pattern):
    with pytest.raises(InvalidInputError, match=pattern):
        tiny_engine.run({"x": X}, outputs=outputs)


def readonly(shape):
    a = np.empty(shape, np.float32)
    a.flags.writeable = False
    return a


@pytest.mark.parametrize(
    "out,pattern",
    [
        ({"y": np.empty((1, 3), np.float64)}, r"output buffer for 'y': expected dtype float32, got float64"),
        ({"y": np.empty((1, 3), np.int32)}, r"output buffer for 'y': expected dtype float32, got int32"),
        ({"y": np.empty((1, 3, 1), np.float32)}, r"output buffer for 'y': expected rank 2 \(shape \[batch, 3\]\), got rank 3"),
        ({"y": np.empty((1, 4), np.float32)}, r"output buffer for 'y': dim 1 must be 3 .* got shape \(1, 4\)"),
        ({"y": np.empty((1, 6), np.float32)[:, ::2]}, r"output buffer for 'y' must be a writeable, C-contiguous"),
        ({"y": np.asfortranarray(np.empty((2, 3), np.float32))}, r"output buffer for 'y' must be a writeable, C-contiguous"),
        ({"y": readonly((1, 3))}, r"output buffer for 'y' must be a writeable"),
        ({"y": np.empty((1, 3), ">f4")}, r"output buffer for 'y' must be .* native byte order"),
        ({"y": [0.0, 0.0, 0.0]}, r"output buffer for 'y': expected a numpy.ndarray, got list"),
        ({"zz": np.empty((1, 3), np.float32)}, r"out has a buffer for 'zz', which is not a requested output"),
        ({"y": np.empty((2, 3), np.float32)}, r"an output buffer does not have the output's shape"),  # wrong batch
        ([np.empty((1, 3), np.float32)], r"out must be a dict"),
    ],
)
def test_bad_out_buffers(tiny_engine, out, pattern):
    with pytest.raises(InvalidInputError, match=pattern):
        tiny_engine.run({"x": X}, out=out)
    assert tiny_engine.run({"x": X})["y"].shape == (1, 3)


def test_out_buffer_for_an_unrequested_or_string_output():
    engine = fastort.Engine(models.add_mul())
    a = np.ones(2, np.float32)
    with pytest.raises(InvalidInputError, match=r"buffer for 'p', which is not a requested output \(requested: s\)"):
        engine.run([a, a], outputs=["s"], out={"p": np.empty(2, np.float32)})
    strings = fastort.Engine(models.identity(TensorProto.STRING, [None]))
    with pytest.raises(InvalidInputError, match=r"output buffer for 'y': string outputs cannot be written"):
        strings.run({"x": np.array(["a"])}, out={"y": np.empty(1, object)})
    seq = fastort.Engine(models.sequence())
    with pytest.raises(InvalidInputError, match=r"output buffer for 'seq' is of type seq\(tensor\(float\)\)"):
        seq.run([a, a], out={"seq": np.empty(2, np.float32)})


# -- loading --------------------------------------------------------------------


def test_bad_model_bytes(tiny_model):
    good = tiny_model.SerializeToString()
    corrupted = bytearray(good)
    for i in range(0, len(corrupted), 5):
        corrupted[i] ^= 0xA5
    for data, pattern in [
        (b"", r"cannot load model bytes: the model is empty \(0 bytes\)"),
        (bytearray(), r"the model is empty"),
        (b"this is not an onnx model" * 10, r"cannot load model bytes: .*protobuf parsing failed"),
        (good[: len(good) // 2], r"cannot load model bytes: "),
        (good[:20], r"cannot load model bytes: "),
        (bytes(corrupted), r"cannot load model bytes: "),
    ]:
        with pytest.raises(ModelLoadError, match=pattern):
            fastort.Engine(data)


def test_bad_model_files(tmp_path: pathlib.Path, tiny_model):
    missing = tmp_path / "missing.onnx"
    for source in (missing, str(missing)):
        with pytest.raises(ModelNotFoundError, match=r"model file not found: .*missing.onnx") as info:
            fastort.Engine(source)
        assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ModelLoadError)
    with pytest.raises(FileNotFoundError):
        fastort.Engine(str(missing))
    with pytest.raises(ModelLoadError, match=r"is a directory, not an ONNX model file"):
        fastort.Engine(tmp_path)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(tiny_model.SerializeToString()[:40])
    with pytest.raises(ModelLoadError, match=r"cannot load model file '.*truncated.onnx'"):
        fastort.Engine(truncated)
    text = tmp_path / "model.onnx"
    text.write_text("not a model\n" * 20)
    with pytest.raises(ModelLoadError, match=r"cannot load model file '.*model.onnx': .*"):
        fastort.Engine(str(text))
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"empty.onnx"):
        fastort.Engine(empty)


@pytest.mark.parametrize("obj", [42, None, 3.5, {"graph": 1}, [b"abc"], object()], ids=lambda o: type(o).__name__)
def test_non_model_objects(obj):
    with pytest.raises(ModelLoadError, match=r"model must be a path, bytes or an onnx.ModelProto, got " + type(obj).__name__):
        fastort.Engine(obj)  # type: ignore[arg-type]


def test_unknown_op_is_a_load_error():
    with pytest.raises(ModelLoadError, match=r"cannot load .*NoSuchOp"):
        fastort.Engine(models.unknown_op())
    with pytest.raises(ModelLoadError, match=r"NoSuchOp"):
        fastort.Engine(models.unknown_op().SerializeToString())


def test_external_data_outside_the_model_folder_is_refused(tmp_path: pathlib.Path):
    inner = tmp_path / "inner"
    inner.mkdir()
    onnx.save(models.mlp((8, 512, 4)), str(inner / "m.onnx"), save_as_external_data=True, location="w.bin",
              size_threshold=0)
    (inner / "w.bin").rename(tmp_path / "w.bin")
    m = onnx.load(str(inner / "m.onnx"), load_external_data=False)
    for t in m.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = "../w.bin"
    onnx.save(m, str(inner / "m.onnx"))
    with pytest.raises(ModelLoadError, match=r"m.onnx"):
        fastort.Engine(inner / "m.onnx")


def test_external_data_missing(tmp_path: pathlib.Path):
    onnx.save(models.mlp((8, 512, 4)), str(tmp_path / "m.onnx"), save_as_external_data=True, location="w.bin",
              size_threshold=0)
    (tmp_path / "w.bin").unlink()
    with pytest.raises(ModelLoadError, match=r"cannot load model file '.*m.onnx'"):
        fastort.Engine(tmp_path / "m.onnx")


# -- options --------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        ({"providers": ["nope"]}, r"unknown execution provider 'nope': use a short name \(cpu, cuda, .*\) or onnxruntime's full name"),
        ({"providers": ["cpu", "gpu"]}, r"unknown execution provider 'gpu'"),
        ({"providers": "NoSuchExecutionProvider", "strict_providers": True},
         r"execution provider 'NoSuchExecutionProvider' is not available in onnxruntime .* \(it offers .*CPUExecutionProvider"),
        ({"providers": []}, r"providers is empty"),
        ({"providers": [1]}, r"providers must be names \(str\), got int"),
        ({"intra_op_threads": -1}, r"intra_op_threads must be a non-negative int .* got -1"),
        ({"inter_op_threads": -3}, r"inter_op_threads must be a non-negative int .* got -3"),
        ({"intra_op_threads": 1.5}, r"intra_op_threads must be a non-negative int .* got 1.5"),
        ({"intra_op_threads": "2"}, r"intra_op_threads must be a non-negative int .* got '2'"),
        ({"intra_op_threads": True}, r"intra_op_threads must be a non-negative int .* got True"),
        ({"inter_op_threads": 2**40}, r"inter_op_threads must be a non-negative int .* got 1099511627776"),
        ({"graph_optimization": "max"}, r"graph_optimization must be one of \['all', 'basic', 'disable', 'extended', 'layout'\], got 'max'"),
        ({"graph_optimization": 7}, r"graph_optimization must be one of .* got 7"),
        ({"graph_optimization": None}, r"graph_optimization must be one of .* got None"),
        ({"execution_mode": "fast"}, r"execution_mode must be one of \['parallel', 'sequential'\], got 'fast'"),
        ({"log_level": "loud"}, r"log_level must be one of .* got 'loud'"),
        ({"session_config": {1: "0"}}, r"session_config keys must be str, got 1"),
        ({"replicas": 0}, r"replicas must be an int >= 1, got 0"),
    ],
)
def test_bad_options(tiny_model, kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        fastort.Engine(tiny_model, **kwargs)


# -- closed engines and run-time failures ----------------------------------------


def test_closed_engine(tiny_model):
    engine = fastort.Engine(tiny_model)
    engine.close()
    assert engine.closed
    with pytest.raises(EngineClosedError, match=r"engine for <ModelProto> is closed"):
        engine.run({"x": X})
    with pytest.raises(EngineClosedError):
        engine.run({"x": np.ones(3)})  # closed comes first, whatever the inputs
    with pytest.raises(EngineClosedError):
        engine.submit({"x": X})
    engine.close()  # idempotent

    with fastort.Engine(tiny_model.SerializeToString()) as engine:
        engine.run({"x": X})
    with pytest.raises(EngineClosedError, match=r"engine for <\d+ model bytes> is closed"):
        engine.run({"x": X})


def test_context_manager_closes_on_error(tiny_model):
    with pytest.raises(InvalidInputError):
        with fastort.Engine(tiny_model) as engine:
            engine.run({"x": np.ones((1, 5), np.float32)})
    assert engine.closed
    with pytest.raises(EngineClosedError):
        engine.run({"x": X})


def test_run_time_failures_keep_engine_serving(reference):
    """onnxruntime's failures inside a run: an index out of range (onnxruntime calls
    it an invalid argument) and a shape that cannot be (a failure of the run)."""
    gather = models.gather()
    engine = fastort.Engine(gather)
    for bad, good in (([7], [1]), ([1, -9], [2, 0]), ([3], [0, 0, 2])):
        with pytest.raises(InvalidInputError, match=r"onnxruntime rejected the inputs: .*Gather.*out of data bounds"):
            engine.run({"idx": np.array(bad, np.int64)})
        idx = np.array(good, np.int64)
        np.testing.assert_array_equal(engine.run({"idx": idx})["y"], reference(gather, {"idx": idx})["y"])

    reshape = models.make_model(
        [onnx.helper.make_node("Reshape", ["x", "shape"], ["y"])],
        [models.tensor("x", TensorProto.FLOAT, ["n"]), models.tensor("shape", TensorProto.INT64, [2])],
        [models.tensor("y", TensorProto.FLOAT, ["a", "b"])],
    )
    engine = fastort.Engine(reshape)
    shape = np.array([2, 3], np.int64)
    for n in (5, 7, 0):
        with pytest.raises(RunError, match=r"onnxruntime failed to run the model: .*Reshape"):
            engine.run({"x": np.ones(n, np.float32), "shape": shape})
        x = np.arange(6, dtype=np.float32)
        np.testing.assert_array_equal(engine.run({"x": x, "shape": shape})["y"],
                                      reference(reshape, {"x": x, "shape": shape})["y"])
    # with a caller buffer: a failing run is still a failing run, not a bad buffer ...
    with pytest.raises(RunError, match=r"Reshape.*cannot be reshaped"):
        engine.run({"x": np.ones(5, np.float32), "shape": shape}, out={"y": np.empty((2, 3), np.float32)})
    # ... and a buffer of another shape than the one computed is the caller's error
    with pytest.raises(InvalidInputError, match=r"an output buffer does not have the output's shape"):
        engine.run({"x": np.ones(6, np.float32), "shape": shape}, out={"y": np.empty((3, 2), np.float32)})
