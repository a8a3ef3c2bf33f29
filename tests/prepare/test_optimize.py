"""fastort.optimize: simplification, onnxruntime's offline optimization, fixed
dims, float16, and the validation that guards them."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import fastort
from fastort.errors import ModelLoadError, ModelNotFoundError
from fastort.prepare.optimize import fix_dims, optimize, simplify, to_float16
from fastort.prepare import OptimizationError, ValidationError

import prep_models


def _ops(model):
    return [n.op_type for n in model.graph.node]


def test_optimize_simplifies_validates_and_writes(tmp_path):
    model = prep_models.redundant()
    x = np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32)
    path = tmp_path / "opt.onnx"
    result = optimize(model, path, inputs={"x": x}, measure=False)
    assert result.step == "optimize" and result.path == str(path) and path.is_file()
    assert result.validation.passed and result.validation.max_abs_error < 1e-4
    assert result.after.nodes < result.before.nodes
    assert "Identity" not in _ops(result.model)
    names = {i.name for i in result.model.graph.initializer}
    assert "unused" not in names
    assert result.settings["level"] == "extended" and result.settings["simplifier"] in ("onnxslim", "onnxoptimizer")
    with fastort.Engine(str(path)) as engine:
        np.testing.assert_allclose(engine.run(x)["y"], fastort.Engine(model).run(x)["y"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("simplifier", ["onnxslim", "onnxoptimizer", "none"])
def test_each_simplifier(simplifier):
    if simplifier != "none":
        pytest.importorskip(simplifier)
    model = prep_models.redundant()
    out, used = simplify(model, simplifier)
    assert used == simplifier
    if simplifier != "none":
        assert len(out.graph.node) < len(model.graph.node)
        assert "unused" not in {i.name for i in out.graph.initializer}


@pytest.mark.parametrize("level", ["disable", "basic", "all"])
def test_levels(level):
    result = optimize(prep_models.conv(), level=level, simplifier="none", inputs=prep_models.conv_inputs(4),
                      measure=False)
    assert result.validation.passed and result.settings["level"] == level


def test_measure_reports_latency_before_and_after():
    result = optimize(prep_models.mlp(), measure=True, latency_seconds=0.2)
    assert result.before.latency_us > 0 and result.after.latency_us > 0
    assert "latency" in result.summary() and "nodes" in result.summary()


def test_fix_dims():
    model = prep_models.mlp()
    fixed = fix_dims(model, {"batch": 1})
    assert fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    assert fixed.graph.output[0].type.tensor_type.shape.dim[0].dim_value == 1
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"  # the input is untouched
    shaped = fix_dims(model, {"x": [4, 16]})
    assert [d.dim_value for d in shaped.graph.input[0].type.tensor_type.shape.dim] == [4, 16]
    with pytest.raises(OptimizationError, match="no symbolic dim or input named 'seq'"):
        fix_dims(model, {"seq": 3})
    with pytest.raises(OptimizationError, match="has 2 dims"):
        fix_dims(model, {"x": [1, 2, 3]})
    with pytest.raises(OptimizationError, match="fixed dim 16"):
        fix_dims(model, {"x": [1, 15]})
    # through optimize; validation runs a fixed-batch model row by row
    result = optimize(model, fixed_dims={"batch": 1}, inputs=prep_models.mlp_inputs(5), latency_seconds=0.1)
    assert result.validation.passed and result.validation.samples == 5
    assert result.model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1


def test_fp16_keeps_io_float32_or_not():
    model = prep_models.mlp()
    x = prep_models.mlp_inputs(8)
    result = optimize(model, fp16=True, inputs=x, measure=False)
    assert result.validation.passed
    assert result.settings["rtol"] == 1e-2
    assert result.model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in result.model.graph.initializer)
    assert result.after.bytes < 0.7 * result.before.bytes
    half = to_float16(model, keep_io_types=False)
    assert half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    with fastort.Engine(half) as engine:
        assert engine.run(x.astype(np.float16))["y"].dtype == np.float16


def test_out_of_tolerance_is_refused_unless_forced(tmp_path):
    model = prep_models.mlp()
    x = prep_models.mlp_inputs(8)
    path = tmp_path / "half.onnx"
    with pytest.raises(ValidationError, match="outside tolerance") as info:
        optimize(model, path, fp16=True, inputs=x, rtol=0, atol=0, measure=False)
    assert not path.exists() and info.value.report.max_abs_error > 0
    assert info.value.model is not None
    with pytest.warns(RuntimeWarning, match="force=True"):
        result = optimize(model, path, fp16=True, inputs=x, rtol=0, atol=0, force=True, measure=False)
    assert result.forced and path.exists() and not result.validation.passed


def test_cuda_target_without_cuda_lowers_the_level():
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():  # pragma: no cover - GPU builds
        pytest.skip("this onnxruntime has CUDA")
    result = optimize(prep_models.mlp(), target="cuda", measure=False)
    assert result.settings["level"] == "basic"
    assert any("CUDAExecutionProvider not available" in n for n in result.notes)


def test_bad_arguments_and_unreadable_files(tmp_path):
    with pytest.raises(OptimizationError, match="level"):
        optimize(prep_models.mlp(), level="turbo")
    with pytest.raises(OptimizationError, match="target"):
        optimize(prep_models.mlp(), target="tpu")
    with pytest.raises(OptimizationError, match="simplifier"):
        optimize(prep_models.mlp(), simplifier="magic")
    with pytest.raises(ModelNotFoundError):
        optimize(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model")
    with pytest.raises(ModelLoadError, match="bad.onnx"):
        optimize(bad)
    with pytest.raises(ModelLoadError, match="directory"):
        optimize(tmp_path)


def test_sklearn_probability_maps_survive_simplification():
    pytest.importorskip("skl2onnx")
    from sklearn.ensemble import GradientBoostingClassifier

    from fastort.prepare.convert import from_sklearn

    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 4)).astype(np.float32)
    clf = GradientBoostingClassifier(n_estimators=5, max_depth=2).fit(X, (X[:, 0] > 0).astype(int))
    converted = from_sklearn(clf, X)
    result = optimize(converted, inputs=X, measure=False)
    assert result.validation.passed
    assert result.model.graph.output[1].type.WhichOneof("value") == "sequence_type"
