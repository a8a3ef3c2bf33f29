"""fastort.quantize: dynamic and static int8, calibration data, exclusions, and
the failure paths (bad calibration data, nothing to quantize, broken tolerance)."""

from __future__ import annotations

import numpy as np
import pytest

import fastort
from fastort.prepare import CalibrationError, QuantizationError, ValidationError
from fastort.prepare.quantize import ArrayCalibrationReader, quantize

import prep_models

BIG = (64, 256, 256, 32)  # big enough that weights dominate the file


@pytest.fixture(scope="module")
def mlp():
    return prep_models.mlp(BIG)


@pytest.fixture(scope="module")
def calib():
    return prep_models.mlp_inputs(64, BIG[0], seed=3)


def _ops(model):
    return {n.op_type for n in model.graph.node}


def test_dynamic_int8(mlp, tmp_path):
    path = tmp_path / "dyn.onnx"
    result = quantize(mlp, path, mode="dynamic", inputs=prep_models.mlp_inputs(16, BIG[0]), measure=False)
    assert result.step == "quantize" and path.is_file()
    assert "MatMulInteger" in _ops(result.model)
    assert result.before.bytes / result.after.bytes > 3.5
    assert result.validation.passed
    assert result.settings["mode"] == "dynamic" and result.settings["weight_type"] == "int8"
    assert result.settings["op_types"] == ["MatMul"]


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_static_qdq_methods(mlp, calib, method):
    result = quantize(mlp, mode="static", calibration=calib, method=method, measure=False)
    ops = _ops(result.model)
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert result.validation.passed
    assert result.settings["method"] == method and result.settings["calibration_rows"] == 64
    assert result.before.bytes / result.after.bytes > 3.5


def test_static_per_channel_conv_and_data_forms(tmp_path):
    model = prep_models.conv()
    x = prep_models.conv_inputs(24)
    npz = tmp_path / "calib.npz"
    np.savez(npz, x=x)
    batches = [{"x": x[i:i + 8]} for i in range(0, 24, 8)]
    for data in ({"x": x}, x, str(npz), iter(batches), (b["x"] for b in batches)):
        result = quantize(model, mode="static", calibration=data, per_channel=True, measure=False)
        assert result.validation.passed and result.settings["calibration_rows"] == 24
        assert "QuantizeLinear" in _ops(result.model)
    with fastort.Engine(result.model) as engine:
        assert engine.run(x[:2])["y"].shape == (2, 5)


def test_exclusions(tmp_path):
    model = prep_models.conv()
    x = prep_models.conv_inputs(16)
    no_conv = quantize(model, mode="static", calibration=x, exclude_op_types=["Conv"], measure=False)
    quantized_convs = [n for n in no_conv.model.graph.node if n.op_type == "Conv"]
    # the float Conv stays: its weight is not fed through DequantizeLinear
    deq_outputs = {o for n in no_conv.model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert quantized_convs and quantized_convs[0].input[1] not in deq_outputs
    only_fc = quantize(model, mode="static", calibration=x, exclude_nodes=["conv"], measure=False)
    assert only_fc.settings["exclude_nodes"] == ["conv"]
    with pytest.raises(QuantizationError, match="does not have"):
        quantize(model, mode="static", calibration=x, exclude_nodes=["nope"])
    with pytest.raises(QuantizationError, match="op types the model does not have"):
        quantize(model, exclude_op_types=["LSTM"])
    # dynamic mode leaves Conv alone by default (ConvInteger is slow) and says so
    dyn = quantize(model, mode="dynamic", measure=False)
    assert "ConvInteger" not in _ops(dyn.model) and any("Conv" in n for n in dyn.notes)
    dyn_conv = quantize(model, mode="dynamic", op_types=["Conv", "Gemm"], measure=False)
    assert "ConvInteger" in _ops(dyn_conv.model)


def test_nothing_to_quantize_and_bad_settings(mlp):
    with pytest.raises(QuantizationError, match="nothing to quantize"):
        quantize(prep_models.relu_only(), mode="dynamic")
    with pytest.raises(QuantizationError, match="mode"):
        quantize(mlp, mode="int3")  # int4 is a weight-only mode (tests/test_wquant.py)
    with pytest.raises(QuantizationError, match="method"):
        quantize(mlp, mode="static", calibration=np.zeros((2, 64), np.float32), method="magic")
    with pytest.raises(QuantizationError, match="weight_type"):
        quantize(mlp, weight_type="int3")


@pytest.mark.parametrize("data, match", [
    (None, "needs calibration data"),
    ({"nope": np.zeros((4, 64), np.float32)}, "unknown input name"),
    (np.zeros((4, 8, 64), np.float32), "has 2 dims"),
    (np.zeros((4, 63), np.float32), "dim 1 must be 64"),
    (np.full((4, 64), np.nan, np.float32), "NaN or infinite"),
    (np.zeros((0, 64), np.float32), "no rows"),
    (np.array([["a"] * 64]), "numeric"),
    (iter([]), "gave no batches"),
    (iter([np.zeros((4, 64), np.float32), np.zeros((4, 65), np.float32)]), "calibration batch 1"),
    (42, "must be arrays"),
])
def test_bad_calibration_data(mlp, data, match):
    with pytest.raises(CalibrationError, match=match):
        quantize(mlp, mode="static", calibration=data, measure=False)


def test_unreadable_calibration_file(mlp, tmp_path):
    bad = tmp_path / "calib.npz"
    bad.write_bytes(b"garbage, not numpy")
    with pytest.raises(CalibrationError, match="cannot read calibration data"):
        quantize(mlp, mode="static", calibration=str(bad))
    with pytest.raises(CalibrationError, match="not found"):
        quantize(mlp, mode="static", calibration=str(tmp_path / "missing.npy"))


def test_reader_batches_and_fixed_batch():
    model = prep_models.fixed_batch_mlp(batch=4)
    reader = ArrayCalibrationReader(model, prep_models.mlp_inputs(12))
    assert [b["x"].shape for b in reader] == [(4, 16)] * 3
    reader.rewind()
    assert reader.get_next()["x"].shape == (4, 16)
    with pytest.raises(CalibrationError, match="do not split"):
        ArrayCalibrationReader(model, prep_models.mlp_inputs(10))
    sized = ArrayCalibrationReader(prep_models.mlp(), prep_models.mlp_inputs(10), batch_size=3)
    assert [b["x"].shape[0] for b in sized] == [3, 3, 3, 1]


def test_out_of_tolerance_is_refused_unless_forced(mlp, calib, tmp_path):
    path = tmp_path / "q.onnx"
    with pytest.raises(ValidationError, match="outside tolerance"):
        quantize(mlp, path, mode="dynamic", rtol=0, atol=0, measure=False)
    assert not path.exists()
    with pytest.warns(RuntimeWarning):
        result = quantize(mlp, path, mode="dynamic", rtol=0, atol=0, force=True, measure=False)
    assert result.forced and path.exists()


def test_latency_is_measured(mlp):
    result = quantize(mlp, mode="dynamic", latency_seconds=0.2)
    assert result.before.latency_us > 0 and result.after.latency_us > 0
