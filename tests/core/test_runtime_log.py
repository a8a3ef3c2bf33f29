"""onnxruntime's own log lines go through Python logging (fastort.onnxruntime)."""

from __future__ import annotations

import logging

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import fastort
from fastort.runtime import flush_runtime_log
from models import make_model, tensor


def model_with_unused_initializer() -> bytes:
    unused = numpy_helper.from_array(np.ones((3,), np.float32), "never_used_weight")
    node = helper.make_node("Relu", ["x"], ["y"])
    return make_model([node], [tensor("x", TensorProto.FLOAT, ["batch", 4])],
                      [tensor("y", TensorProto.FLOAT, ["batch", 4])], [unused]).SerializeToString()


def test_onnxruntime_warnings_reach_the_logger(caplog, capfd):
    flush_runtime_log()
    capfd.readouterr()
    with caplog.at_level(logging.WARNING, logger="fastort.onnxruntime"):
        eng = fastort.Engine(model_with_unused_initializer())
        eng.close()
    records = [r for r in caplog.records if r.name == "fastort.onnxruntime"]
    assert any("never_used_weight" in r.getMessage() for r in records), [r.getMessage() for r in records]
    assert all(r.levelno >= logging.WARNING for r in records)
    # ... and not on stderr.
    assert "never_used_weight" not in capfd.readouterr().err


def test_flush_with_nothing_queued():
    flush_runtime_log()
    assert flush_runtime_log() == 0
