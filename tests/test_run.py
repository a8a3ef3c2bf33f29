"""Engine.run on real onnxruntime: every data kind against InferenceSession, zero copy, out=."""

from __future__ import annotations

import pathlib
import threading
import time
import tracemalloc

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import fastort
import models


def reference(model: onnx.ModelProto, feeds, outputs=None):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = outputs or [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


NUMERIC = [
    (TensorProto.FLOAT, np.float32),
    (TensorProto.DOUBLE, np.float64),
    (TensorProto.FLOAT16, np.float16),
    (TensorProto.INT8, np.int8),
    (TensorProto.INT16, np.int16),
    (TensorProto.INT32, np.int32),
    (TensorProto.INT64, np.int64),
    (TensorProto.UINT8, np.uint8),
    (TensorProto.UINT16, np.uint16),
    (TensorProto.UINT32, np.uint32),
    (TensorProto.UINT64, np.uint64),
    (TensorProto.BOOL, np.bool_),
]


@pytest.mark.parametrize("elem_type,dtype", NUMERIC, ids=[np.dtype(d).name for _, d in NUMERIC])
def test_numeric_types_round_trip(elem_type, dtype):
    model = models.identity(elem_type, ["n", 3])
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((5, 3)) * 50).astype(dtype)
    engine = fastort.Engine(model)
    assert engine.inputs[0].dtype == np.dtype(dtype)
    got = engine.run({"x": x})["y"]
    want = reference(model, {"x": x})["y"]
    assert got.dtype == want.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, x)


@pytest.mark.parametrize("kind", ["U", "O", "S"])
def test_string_tensors(kind):
    model = models.identity(TensorProto.STRING, [None])
    words = ["", "héllo", "wörld 🌍", "a" * 1000, "x\x00y"]
    x = np.array([w.encode() for w in words], dtype="S") if kind == "S" else np.array(words, dtype=kind)
    got = fastort.Engine(model).run({"x": x})["y"]
    assert got.dtype == object
    if kind == "S":
        want = [w.decode() for w in x.tolist()]  # numpy 'S' strips trailing NULs
    else:
        want = reference(model, {"x": np.array(words, dtype=object)})["y"].tolist()
    assert got.tolist() == want


def test_string_matrix_keeps_shape():
    model = models.identity(TensorProto.STRING, ["a", "b"])
    x = np.array([["a", "bb", "ccc"], ["d", "", "f"]], dtype=object)
    got = fastort.Engine(model).run([x])["y"]
    assert got.shape == (2, 3) and got.tolist() == x.tolist()


ML_TYPES = [
    (TensorProto.BFLOAT16, "bfloat16"),
    (TensorProto.FLOAT8E4M3FN, "float8_e4m3fn"),
    (TensorProto.FLOAT8E4M3FNUZ, "float8_e4m3fnuz"),
    (TensorProto.FLOAT8E5M2, "float8_e5m2"),
    (TensorProto.FLOAT8E5M2FNUZ, "float8_e5m2fnuz"),
]


@pytest.mark.parametrize("elem_type,name", ML_TYPES, ids=[n for _, n in ML_TYPES])
def test_ml_dtypes(elem_type, name):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    dtype = np.dtype(getattr(ml_dtypes, name))
    model = models.identity(elem_type, ["n"], with_cast=True)
    x = np.array([0.0, 0.5, -1.5, 2.0, 3.25, -0.125], dtype=np.float32).astype(dtype)
    engine = fastort.Engine(model)
    assert engine.inputs[0].dtype == dtype
    out = engine.run({"x": x})
    assert out["y"].dtype == dtype
    np.testing.assert_array_equal(out["y"].view(np.uint8), x.view(np.uint8))
    # onnxruntime's own Cast gives the same float32 values as ml_dtypes' conversion
    np.testing.assert_array_equal(out["f"], x.astype(np.float32))


def test_rank0_scalar_and_zero_sized_dims():
    model = models.make_model(
        [helper.make_node("Add", ["a", "b"], ["c"])],
        [models.tensor("a", TensorProto.FLOAT, []), models.tensor("b", TensorProto.FLOAT, ["n", 2])],
        [models.tensor("c", TensorProto.FLOAT, ["n", 2])],
    )
    engine = fastort.Engine(model)
    a = np.array(1.5, np.float32)
    b = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.testing.assert_array_equal(engine.run({"a": a, "b": b})["c"], b + 1.5)
    np.testing.assert_array_equal(engine.run({"a": np.float32(1.5), "b": b})["c"], b + 1.5)  # numpy scalar
    empty = np.zeros((0, 2), np.float32)
    got = engine.run({"a": a, "b": empty})["c"]
    assert got.shape == (0, 2)
    assert reference(model, {"a": a, "b": empty})["c"].shape == (0, 2)


def test_model_without_inputs():
    value = np.arange(4, dtype=np.int64)
    model = models.make_model(
        [helper.make_node("Constant", [], ["y"], value=onnx.numpy_helper.from_array(value))],
        [], [models.tensor("y", TensorProto.INT64, [4])],
    )
    engine = fastort.Engine(model)
    assert engine.inputs == ()
    np.testing.assert_array_equal(engine.run({})["y"], value)
    np.testing.assert_array_equal(engine.run([])["y"], value)


def test_several_inputs_outputs_in_any_form():
    model = models.make_model(
        [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Mul", ["a", "b"], ["p"])],
        [models.tensor("a", TensorProto.FLOAT, ["n"]), models.tensor("b", TensorProto.FLOAT, ["n"])],
        [models.tensor("s", TensorProto.FLOAT, ["n"]), models.tensor("p", TensorProto.FLOAT, ["n"])],
    )
    engine = fastort.Engine(model)
    a, b = np.array([1.0, 2.0], np.float32), np.array([3.0, 4.0], np.float32)
    by_name = engine.run({"b": b, "a": a})
    assert list(by_name) == ["s", "p"]
    np.testing.assert_array_equal(by_name["s"], a + b)
    np.testing.assert_array_equal(by_name["p"], a * b)
    by_order = engine.run((a, b))
    np.testing.assert_array_equal(by_order["p"], a * b)
    only = engine.run([a, b], outputs=["p", "s"])
    assert list(only) == ["p", "s"]
    only_p = engine.run({"a": a, "b": b}, outputs=["p"])
    assert list(only_p) == ["p"]


def test_bare_array_for_one_input_model():
    w = models.tiny_weights()
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(fastort.Engine(models.tiny()).run(x)["y"], np.maximum(x @ w, 0), rtol=1e-6)


def test_io_specs():
    engine = fastort.Engine(models.make_model(
        [helper.make_node("Identity", ["x"], ["y"])],
        [models.tensor("x", TensorProto.FLOAT, ["batch", None, 3])],
        [models.tensor("y", TensorProto.FLOAT, ["batch", None, 3])],
    ))
    (spec,) = engine.inputs
    assert spec.name == "x" and spec.type == "tensor(float)" and spec.dtype == np.float32
    assert spec.shape == ("batch", None, 3)
    assert engine.outputs[0].shape[0] == "batch" and engine.outputs[0].shape[2] == 3


def test_sequence_output():
    model = models.make_model(
        [helper.make_node("SequenceConstruct", ["a", "b"], ["seq"])],
        [models.tensor("a", TensorProto.FLOAT, [2]), models.tensor("b", TensorProto.FLOAT, [2])],
        [helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, None)],
    )
    engine = fastort.Engine(model)
    assert engine.outputs[0].type == "seq(tensor(float))" and engine.outputs[0].dtype is None
    a, b = np.array([1, 2], np.float32), np.array([3, 4], np.float32)
    got = engine.run({"a": a, "b": b})["seq"]
    want = reference(model, {"a": a, "b": b})["seq"]
    assert isinstance(got, list) and len(got) == len(want) == 2
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("labels", ["int64", "string"])
def test_zipmap_output_like_sklearn(labels):
    attrs = {"classlabels_int64s": [0, 1, 2]} if labels == "int64" else {"classlabels_strings": ["a", "b", "c"]}
    key = TensorProto.INT64 if labels == "int64" else TensorProto.STRING
    model = models.make_model(
        [helper.make_node("ZipMap", ["p"], ["probs"], domain="ai.onnx.ml", **attrs)],
        [models.tensor("p", TensorProto.FLOAT, ["n", 3])],
        [helper.make_value_info("probs", helper.make_sequence_type_proto(
            helper.make_map_type_proto(key, helper.make_tensor_type_proto(TensorProto.FLOAT, []))))],
        domains=[("ai.onnx.ml", 1)],
    )
    p = np.array([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]], np.float32)
    got = fastort.Engine(model).run({"p": p})["probs"]
    want = reference(model, {"p": p})["probs"]
    assert isinstance(got, list) and all(isinstance(d, dict) for d in got)
    assert len(got) == 2
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        for k in g:
            assert g[k] == pytest.approx(w[k])


def test_output_is_not_a_copy():
    """Outputs are handed over, never copied: a large one is a numpy array over
    onnxruntime's own buffer; a small one of a call shaped like the previous is
    allocated by numpy up front and written by onnxruntime in place."""
    engine = fastort.Engine(models.tiny())
    x = np.ones((8192, 4), np.float32)  # 96 KB out
    for _ in range(2):
        y = engine.run({"x": x})["y"]
        assert not y.flags.owndata and type(y.base).__name__ == "PyCapsule"  # owns onnxruntime's value
        assert y.flags.writeable and y.flags.c_contiguous
        y[:] = 7  # the memory is ours to use
        assert (y == 7).all()
    small = np.ones((2, 4), np.float32)
    first = engine.run({"x": small})["y"]
    assert type(first.base).__name__ == "PyCapsule"
    second = engine.run({"x": small})["y"]
    assert second.flags.owndata  # numpy's allocation, filled by onnxruntime
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(second, np.maximum(small @ models.tiny_weights(), 0), rtol=1e-6)


def test_value_dependent_output_shapes():
    """Outputs whose shape depends on input values (not only shapes) stay right."""
    model = models.make_model(
        [helper.make_node("NonZero", ["x"], ["y"])],
        [models.tensor("x", TensorProto.FLOAT, ["n"])],
        [models.tensor("y", TensorProto.INT64, [1, None])],
    )
    engine = fastort.Engine(model)
    for x in ([1, 0, 2, 0], [0, 0, 0, 3], [1, 1, 1, 1], [0, 0, 0, 0], [5, 0, 0, 1], [1, 2, 0, 0]):
        arr = np.array(x, np.float32)
        np.testing.assert_array_equal(engine.run({"x": arr})["y"], np.array(np.nonzero(arr)))


def test_input_is_read_in_place():
    """A 64 MB C-contiguous input is not copied; a non-contiguous one is, once."""
    model = models.make_model(
        [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0)],
        [models.tensor("x", TensorProto.FLOAT, ["n", "m"])],
        [models.tensor("s", TensorProto.FLOAT, [])],
    )
    engine = fastort.Engine(model)
    x = np.ones((4096, 4096), np.float32)  # 64 MB
    engine.run({"x": x[:2]})  # warm-up
    strided = np.ones((4096, 8192), np.float32)[:, ::2]  # same shape, not contiguous
    tracemalloc.start()
    try:
        assert engine.run({"x": x})["s"] == pytest.approx(4096 * 4096)
        _, peak_contiguous = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        assert engine.run({"x": strided})["s"] == pytest.approx(4096 * 4096)
        _, peak_strided = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_contiguous < 1 << 20, peak_contiguous  # no numpy allocation of the input's size
    assert peak_strided >= x.nbytes  # the documented one copy


def test_out_writes_into_caller_buffer():
    engine = fastort.Engine(models.tiny())
    x = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)
    buf = np.full((3, 3), -1, np.float32)
    result = engine.run({"x": x}, out={"y": buf})
    assert result["y"] is buf
    np.testing.assert_allclose(buf, np.maximum(x @ models.tiny_weights(), 0), rtol=1e-6)


def test_model_sources(tmp_path: pathlib.Path):
    model = models.tiny()
    path = tmp_path / "tiny.onnx"
    onnx.save(model, str(path))
    x = np.ones((1, 4), np.float32)
    want = reference(model, {"x": x})["y"]
    for source in (str(path), path, model.SerializeToString(), bytearray(model.SerializeToString()), model):
        np.testing.assert_allclose(fastort.Engine(source).run({"x": x})["y"], want, rtol=1e-6)


def test_external_data_loads_from_path(tmp_path: pathlib.Path):
    model = models.mlp((8, 512, 4))
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    assert (tmp_path / "weights.bin").stat().st_size > 8 * 512 * 4
    x = np.random.default_rng(3).standard_normal((2, 8)).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(fastort.Engine(path).run({"x": x})["y"], want, rtol=1e-6)
    np.testing.assert_allclose(fastort.Engine(path, replicas=2).run({"x": x})["y"], want, rtol=1e-6)


def test_options_are_accepted():
    engine = fastort.Engine(
        models.tiny(), providers=["CPUExecutionProvider"], intra_op_threads=1, inter_op_threads=1,
        graph_optimization="basic", execution_mode="parallel", log_level="error",
        session_config={"session.intra_op.allow_spinning": "0"},
    )
    x = np.ones((1, 4), np.float32)
    np.testing.assert_allclose(engine.run({"x": x})["y"], np.maximum(x @ models.tiny_weights(), 0), rtol=1e-6)
    assert "float32[batch, 4]" in repr(engine)


def test_concurrent_runs_from_threads():
    engine = fastort.Engine(models.tiny(), intra_op_threads=1)
    w = models.tiny_weights()
    errors = []

    def work(k: int) -> None:
        try:
            for i in range(300):
                x = np.full((1, 4), k * 1000 + i, np.float32)
                np.testing.assert_allclose(engine.run({"x": x})["y"], np.maximum(x @ w, 0), rtol=1e-5)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_gil_is_released_while_running():
    engine = fastort.Engine(models.slow(256, 200), intra_op_threads=1)
    x = np.ones((512, 256), np.float32)
    start = time.perf_counter()
    engine.run({"x": x})
    one_run = time.perf_counter() - start
    ticks = []
    stop = threading.Event()

    def count() -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=count)
    t.start()
    try:
        time.sleep(0.01)
        before = len(ticks)
        engine.run({"x": x})
        during = len(ticks) - before
    finally:
        stop.set()
        t.join()
    # the counting thread kept running while onnxruntime held the only Python thread
    assert one_run > 0.02, "the model is too fast to tell"
    assert during >= 5, (during, one_run)
