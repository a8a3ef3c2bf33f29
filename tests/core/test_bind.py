"""Engine.bind(): the bound call for latency-critical loops, against Engine.run
and onnxruntime on real models."""

from __future__ import annotations

import threading

import numpy as np

import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from fastort import Engine
from fastort.bench.models import tiny_model
from fastort.errors import EngineClosedError, InvalidInputError


def _nonzero_model() -> bytes:
    """An output whose shape depends on the data (NonZero)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [1, None])
    m = helper.make_model(helper.make_graph([helper.make_node("NonZero", ["x"], ["y"])], "nz", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 17)])
    return m.SerializeToString()


def test_bound_call_equals_run_and_onnxruntime() -> None:
    model = tiny_model().SerializeToString()
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    with Engine(model) as engine:
        call = engine.bind()
        rng = np.random.default_rng(0)
        for rows in (1, 1, 3, 3, 1):  # same shapes reuse buffers; new shapes rebind
            x = rng.standard_normal((rows, 4)).astype(np.float32)
            (y,) = call(x)
            expected = sess.run(None, {"x": x})[0]
            np.testing.assert_allclose(y, expected, rtol=1e-6)
            np.testing.assert_allclose(y, engine.run(x)[engine.outputs[0].name], rtol=1e-6)
        x = np.ones((2, 4), np.float32)
        first = call(x)[0]
        x[:] = 2  # same buffer, new contents: not rebound, still read
        second = call(x)[0]
        np.testing.assert_allclose(second, sess.run(None, {"x": x})[0], rtol=1e-6)
        assert not np.shares_memory(first, second)  # copy=True: fresh arrays


def test_bound_call_copy_false_reuses_buffers() -> None:
    with Engine(tiny_model().SerializeToString()) as engine:
        call = engine.bind(copy=False)
        x = np.ones((1, 4), np.float32)
        a = call(x)[0]
        b = call(x * 2)[0]
        assert np.shares_memory(a, b)


def test_bound_call_data_dependent_shapes() -> None:
    model = _nonzero_model()
    with Engine(model) as engine:
        call = engine.bind()
        for x in ([0, 1, 2], [1, 1, 1], [0, 0, 0], [5, 0, 5]):
            arr = np.array(x, np.float32)
            np.testing.assert_array_equal(call(arr)[0], np.array(np.nonzero(arr)))


def test_bound_call_errors_and_threads() -> None:
    engine = Engine(tiny_model().SerializeToString())
    call = engine.bind()
    with pytest.raises(InvalidInputError, match="expected dtype float32"):
        call(np.ones((1, 4), np.int64))
    with pytest.raises(InvalidInputError, match="takes 1 inputs"):
        call()
    with pytest.raises(InvalidInputError, match="unknown output"):
        engine.bind(["nope"])
    x = np.ones((1, 4), np.float32)
    expected = engine.run(x)[engine.outputs[0].name]
    errors = []

    def loop() -> None:
        try:
            for _ in range(300):
                np.testing.assert_allclose(call(x)[0], expected)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=loop) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    engine.close()
    with pytest.raises(EngineClosedError):
        engine.bind()
    np.testing.assert_allclose(call(x)[0], expected)  # a bound call keeps its session


