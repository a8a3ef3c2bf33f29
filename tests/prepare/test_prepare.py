"""fastort.prepare (the chain); its subcommands are tested in tests/cli."""

from __future__ import annotations

import numpy as np
import pytest

import fastort
from fastort.engine.manifest import read_manifest
from fastort.prepare import (
    CalibrationError,
    OptimizationError,
    PackageError,
    PrepareResult,
    QuantizationError,
    prepare,
)

import prep_models


def test_prepare_onnx_static_int8(tmp_path, capsys):
    x = prep_models.mlp_inputs(64, 64)
    result = prepare(prep_models.mlp((64, 256, 256, 32)), tmp_path / "pkg", quantize="static", calibration=x,
                     latency_seconds=0.2)
    assert isinstance(result, PrepareResult)
    assert [s.step for s in result.steps] == ["check", "optimize", "quantize"]
    assert result.steps[1].settings["level"] == "basic"  # before quantization
    assert result.end_to_end.passed
    assert [r.stage for r in result.rows] == ["original", "optimized (basic)", "static int8"]
    assert all(r.stats.latency_us and r.stats.latency_us > 0 for r in result.rows)
    assert result.rows[0].stats.bytes / result.rows[-1].stats.bytes > 3.5
    captured = capsys.readouterr()
    assert "static int8" in captured.out and "max abs err vs original" in captured.out  # the table
    assert "prepare" in captured.err  # the progress display
    manifest = read_manifest(result.package_dir)
    assert [p["step"] for p in manifest["provenance"]] == ["check", "optimize", "quantize"]
    assert manifest["validation"][0]["passed"] is True
    with fastort.Engine(result.model_path, **result.engine_kwargs) as engine:
        assert engine.run({"x": x[:3]})["y"].shape == (3, 32)


def test_prepare_torch_cnn_dynamic(tmp_path):
    torch = pytest.importorskip("torch")
    TinyCNN = prep_models.torch_modules()[0]
    x = torch.randn(8, 3, 8, 8)
    result = prepare(TinyCNN(), tmp_path / "cnn", example_inputs=x, quantize="dynamic",
                     convert_options={"exporter": "torchscript"}, progress=False, measure=False)
    assert [s.step for s in result.steps] == ["convert", "optimize", "quantize"]
    assert result.rows[0].stage == "torch -> onnx"
    assert result.end_to_end.reference.startswith("torch")
    assert result.end_to_end.passed
    assert "torch -> onnx" in result.table


def test_prepare_sklearn(tmp_path):
    pytest.importorskip("skl2onnx")
    from sklearn.ensemble import GradientBoostingClassifier

    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 5)).astype(np.float32)
    clf = GradientBoostingClassifier(n_estimators=5, max_depth=2).fit(X, (X[:, 0] > 0).astype(int))
    result = prepare(clf, tmp_path / "gbc", example_inputs=X, progress=False, measure=False)
    assert result.end_to_end.passed
    assert "max_batch_size" not in result.engine_kwargs  # probability maps are not tensors: no batching
    with fastort.Engine(result.model_path, **result.engine_kwargs) as engine:
        out = engine.run({"X": X[:2]})
    assert isinstance(out["output_probability"][0], dict)


def test_prepare_refusals(tmp_path):
    model = prep_models.mlp()
    with pytest.raises(CalibrationError):
        prepare(model, tmp_path / "a", quantize="static", progress=False)
    with pytest.raises(OptimizationError, match="fp16 and int8"):
        prepare(model, tmp_path / "b", quantize="dynamic", fp16=True, progress=False)
    with pytest.raises(QuantizationError, match="quantize must be"):
        prepare(model, tmp_path / "c", quantize="int4", progress=False)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("x")
    with pytest.raises(PackageError, match="not empty"):
        prepare(model, tmp_path / "d", progress=False)
    assert not (tmp_path / "a").exists()
