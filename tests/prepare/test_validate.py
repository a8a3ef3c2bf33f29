"""fastort.validate: reports, tolerances and the ways they fail."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import fastort
from fastort.errors import InvalidInputError, ModelLoadError, ModelNotFoundError
from fastort.prepare.validate import ValidationError, ValidationReport, run_model, validate

import prep_models


def _scaled(model: onnx.ModelProto, name: str, factor: float) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for init in out.graph.initializer:
        if init.name == name:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), name))
    return out


def test_identical_models_pass_with_zero_error():
    model = prep_models.mlp()
    x = prep_models.mlp_inputs(16)
    report = validate(model, model, {"x": x})
    assert isinstance(report, ValidationReport) and report.passed
    assert report.max_abs_error == 0.0 and report.samples == 16
    out = report.outputs[0]
    assert out.name == "y" and out.kind == "numeric" and out.shape == (16, 8) and out.mismatched == 0
    assert "passed" in str(report)
    json.dumps(report.to_dict())  # JSON-able, for manifests


def test_fastort_validate_is_callable_after_import_fastort_alone():
    import os
    import subprocess
    import sys

    code = ("import fastort, numpy as np, sys; sys.path.insert(0, '.'); import prep_models\n"
            "r = fastort.validate(prep_models.mlp(), prep_models.mlp(), {'x': prep_models.mlp_inputs(4)})\n"
            "assert r.passed and r is not None and callable(fastort.prepare)\n"
            "from fastort.prepare.validate import validate\n"
            "assert fastort.validate is validate and fastort.convert.from_torch is not None")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/, where prep_models is


def test_broken_tolerance_raises_with_the_numbers():
    model = prep_models.mlp()
    other = _scaled(model, "B2", 3.0)  # a different output bias
    x = prep_models.mlp_inputs(8)
    with pytest.raises(ValidationError) as info:
        validate(model, other, x, rtol=1e-3, atol=1e-5)
    err = info.value
    assert isinstance(err, fastort.FastortError) and isinstance(err, ValueError)
    assert err.report is not None and not err.report.passed
    text = str(err)
    assert "FAILED" in text and "max abs error" in text and "reference" in text and "candidate" in text
    worst = err.report.outputs[0].worst
    assert worst is not None and abs(worst[1] - worst[2]) == pytest.approx(err.report.max_abs_error)
    # without raising: the same report
    report = validate(model, other, x, rtol=1e-3, atol=1e-5, raise_on_failure=False)
    assert not report.passed and report.failures()[0].name == "y"
    # loose enough: passes
    assert validate(model, other, x, rtol=0, atol=report.max_abs_error * 1.01).passed


def test_top1_agreement_and_min_top1():
    model = prep_models.mlp((16, 32, 4), softmax=True)
    x = prep_models.mlp_inputs(64)
    noisy = _scaled(model, "W1", 1.3)
    report = validate(model, noisy, x, rtol=0, atol=1.0, raise_on_failure=False)
    assert report.passed and report.top1_agreement is not None
    assert 0.0 <= report.top1_agreement <= 1.0
    need = min(1.0, report.top1_agreement + 0.01)
    if report.top1_agreement < 1.0:
        with pytest.raises(ValidationError, match="top-1 agreement"):
            validate(model, noisy, x, rtol=0, atol=1.0, min_top1=need)
    assert validate(model, noisy, x, rtol=0, atol=1.0, min_top1=report.top1_agreement).passed
    assert validate(model, model, x, classifier=False).outputs[0].top1_agreement is None


def test_per_output_atol_and_nan():
    model = prep_models.mlp()
    x = prep_models.mlp_inputs(4)
    assert validate(model, model, x, atol={"y": 0.5}).outputs[0].atol == 0.5
    x_nan = x.copy()
    x_nan[0, 0] = np.nan
    # NaN on both sides is equal
    assert validate(model, model, x_nan).passed

    def nan_ref(feeds):
        y = run_model(model, feeds)["y"].copy()
        y[1, 1] = np.nan
        return [y]

    assert not validate(nan_ref, model, x, raise_on_failure=False).passed


def test_framework_and_callable_references():
    model = prep_models.mlp((16, 8))
    x = prep_models.mlp_inputs(5)
    w = numpy_helper.to_array(model.graph.initializer[0])
    b = numpy_helper.to_array(model.graph.initializer[1])
    assert validate(lambda feeds: feeds["x"] @ w + b, model, x, rtol=1e-5, atol=1e-5).passed
    assert validate(lambda feeds: {"y": feeds["x"] @ w + b}, model, x, rtol=1e-5, atol=1e-5).passed
    torch = pytest.importorskip("torch")
    lin = torch.nn.Linear(16, 8)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w.T.copy()))
        lin.bias.copy_(torch.from_numpy(b.copy()))
    report = validate(lin, model, {"x": x.astype(np.float64)}, rtol=1e-5, atol=1e-5)  # inputs are cast
    assert report.passed and report.reference.startswith("torch")


def test_engine_and_path_candidates(tmp_path):
    model = prep_models.mlp()
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    x = prep_models.mlp_inputs(4)
    assert validate(model, path, x).candidate == "m.onnx"
    with fastort.Engine(model) as engine:
        assert validate(path, engine, x).passed


def test_label_outputs_must_agree():
    from onnx import TensorProto, helper

    def argmax_model(w):
        return prep_models._model(
            [helper.make_node("MatMul", ["x", "W"], ["s"]), helper.make_node("ArgMax", ["s"], ["label"], axis=1, keepdims=0)],
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
            [helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"])],
            [numpy_helper.from_array(w, "W")])

    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    a, b = argmax_model(w), argmax_model(w[:, ::-1].copy())
    x = rng.standard_normal((50, 4)).astype(np.float32)
    report = validate(a, b, x, raise_on_failure=False)
    out = report.outputs[0]
    assert out.kind == "label" and not out.passed and out.top1_agreement < 1.0
    assert "labels differ" in out.reason
    assert validate(a, b, x, min_top1=0.0).passed


def test_mismatched_outputs_and_inputs():
    model = prep_models.mlp()
    x = prep_models.mlp_inputs(4)
    with pytest.raises(ValidationError, match="cannot be matched"):
        validate(lambda feeds: [], model, x)
    report = validate(lambda feeds: [np.zeros((4, 3), np.float32)], model, x, raise_on_failure=False)
    assert "shape" in report.outputs[0].reason
    with pytest.raises(InvalidInputError, match="unknown input"):
        validate(model, model, {"nope": x})
    with pytest.raises(ValueError, match="rtol"):
        validate(model, model, x, rtol=-1)


def test_unreadable_and_missing_files(tmp_path):
    model = prep_models.mlp()
    x = prep_models.mlp_inputs(2)
    with pytest.raises(ModelNotFoundError):
        validate(model, tmp_path / "missing.onnx", x)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not an onnx model at all\xff" * 10)
    with pytest.raises(ModelLoadError):
        validate(model, bad, x)
    with pytest.raises(ModelLoadError):
        validate(bad, model, x)


def test_sklearn_reference_with_probability_maps():
    pytest.importorskip("skl2onnx")
    from sklearn.linear_model import LogisticRegression

    from fastort.prepare.convert import from_sklearn

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3)).astype(np.float32)
    clf = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
    model = from_sklearn(clf, X).model
    report = validate(clf, model, X)
    assert [o.kind for o in report.outputs] == ["label", "numeric"]
    assert report.outputs[1].shape == (60, 2)
