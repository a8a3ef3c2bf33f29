"""padding= is exact only for models invariant to it: the start-up checks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from onnx import TensorProto, helper

import fastort
from fastort.errors import ConfigError
from models import make_model, tensor


def reduce_model(op: str) -> bytes:
    """x[batch, seq] -> op over seq -> y[batch] (no seq dim in the output)."""
    node = helper.make_node(op, ["x"], ["y"], axes=[1], keepdims=0)
    return make_model([node], [tensor("x", TensorProto.FLOAT, ["batch", "seq"])],
                      [tensor("y", TensorProto.FLOAT, ["batch"])], opset=17).SerializeToString()


def doubling_model() -> bytes:
    """x[batch, seq] -> 2x -> y[batch, seq]: invariant to padding, the output named like the input."""
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    node = helper.make_node("Mul", ["x", "two"], ["y"])
    return make_model([node], [tensor("x", TensorProto.FLOAT, ["batch", "seq"])],
                      [tensor("y", TensorProto.FLOAT, ["batch", "seq"])], [two]).SerializeToString()


def test_safe_model_passes_quietly():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        eng = fastort.Engine(doubling_model(), max_batch_size=8, padding={"x": {1: 0.0}})
    a, b = np.ones((1, 3), np.float32), np.ones((1, 5), np.float32)
    fa, fb = eng.submit({"x": a}), eng.submit({"x": b})
    assert fa.result(10)["y"].shape == (1, 3) and fb.result(10)["y"].shape == (1, 5)
    eng.close()


def test_length_dependent_model_is_refused():
    with pytest.warns(UserWarning, match="map to no output dim"):
        with pytest.raises(ConfigError, match="padding changes the results.*'y'"):
            fastort.Engine(reduce_model("ReduceMean"), max_batch_size=8, padding={"x": {1: 0.0}})


def test_warn_mode_serves_with_a_warning():
    with pytest.warns(UserWarning) as record:
        eng = fastort.Engine(reduce_model("ReduceMean"), max_batch_size=8, padding={"x": {1: 0.0}},
                             padding_check="warn")
    messages = [str(w.message) for w in record]
    assert any("padding changes the results" in m for m in messages), messages
    assert eng.run({"x": np.ones((1, 3), np.float32)})["y"].shape == (1,)
    eng.close()


def test_unlinked_but_invariant_warns_only_about_names():
    # ReduceMax with a very negative pad value ignores the padding: the check passes,
    # but the name warning stays (the engine cannot cut such an output back).
    with pytest.warns(UserWarning, match="map to no output dim") as record:
        eng = fastort.Engine(reduce_model("ReduceMax"), max_batch_size=8, padding={"x": {1: -1e30}})
    assert not any("padding changes" in str(w.message) for w in record)
    eng.close()


def test_check_off_and_bad_values():
    with pytest.warns(UserWarning, match="map to no output dim"):
        eng = fastort.Engine(reduce_model("ReduceMean"), max_batch_size=8, padding={"x": {1: 0.0}},
                             padding_check=False)
    eng.close()
    with pytest.raises(ConfigError, match="padding_check"):
        fastort.Engine(doubling_model(), max_batch_size=8, padding={"x": {1: 0.0}}, padding_check="sometimes")
