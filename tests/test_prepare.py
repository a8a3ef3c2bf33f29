"""fastort.prepare (the chain) and the preparation subcommands of the CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import fastort
from fastort._prepare_cli import COMMANDS
from fastort.cli import main
from fastort.package import read_manifest
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


# -- the command line ------------------------------------------------------------------


def test_cli_commands_exist():
    assert set(COMMANDS) == {"convert", "optimize", "quantize", "validate", "package", "prepare"}
    assert main([]) == 2 and main(["--help"]) == 0
    assert main(["frobnicate"]) == 2


def test_cli_chain(tmp_path, capsys):
    import onnx

    src = tmp_path / "m.onnx"
    onnx.save(prep_models.mlp((32, 128, 16)), src)
    calib = tmp_path / "calib.npy"
    np.save(calib, prep_models.mlp_inputs(32, 32))
    assert main(["optimize", str(src), "-o", str(tmp_path / "o.onnx"), "--level", "basic", "--no-measure"]) == 0
    assert main(["quantize", str(tmp_path / "o.onnx"), "-o", str(tmp_path / "q.onnx"), "--mode", "static",
                 "--calibration", str(calib), "--method", "entropy", "--per-channel", "--no-measure"]) == 0
    out = capsys.readouterr().out
    assert "quantize" in out and "wrote" in out
    assert main(["validate", str(src), str(tmp_path / "q.onnx"), "--inputs", str(calib), "--rtol", "0.1",
                 "--atol", "0.1"]) == 0
    assert main(["validate", str(src), str(tmp_path / "q.onnx"), "--rtol", "0", "--atol", "0"]) == 1
    assert "FAILED" in capsys.readouterr().out
    assert main(["validate", str(src), str(src), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["passed"] is True
    assert main(["package", str(tmp_path / "q.onnx"), "-o", str(tmp_path / "pkg")]) == 0
    assert main(["package", str(tmp_path / "pkg"), "--verify"]) == 0
    with open(tmp_path / "pkg" / "model.onnx", "ab") as f:
        f.write(b"tampered")
    capsys.readouterr()
    assert main(["package", str(tmp_path / "pkg"), "--verify"]) == 1
    assert "PackageIntegrityError" in capsys.readouterr().err
    assert main(["prepare", str(src), "-o", str(tmp_path / "prep"), "--quantize", "dynamic", "--no-progress",
                 "--latency-seconds", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "dynamic int8" in out and "package:" in out
    assert os.path.isfile(tmp_path / "prep" / "fastort.json")
    assert main(["info", str(tmp_path / "prep"), "--json"]) == 0  # info and bench take a package too
    assert json.loads(capsys.readouterr().out)["path"] == str(tmp_path / "prep" / "model.onnx")
    assert main(["bench", str(tmp_path / "prep"), "--seconds", "0.2", "--no-native", "--json"]) == 0
    assert main(["info", str(tmp_path / "pkg")]) == 1  # the tampered one
    assert "PackageIntegrityError" in capsys.readouterr().err


def test_cli_failures_are_reported(tmp_path, capsys):
    import onnx

    src = tmp_path / "m.onnx"
    onnx.save(prep_models.mlp(), src)
    assert main(["quantize", str(src), "-o", str(tmp_path / "q.onnx"), "--mode", "static"]) == 1
    assert "CalibrationError" in capsys.readouterr().err
    assert main(["optimize", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "o.onnx")]) == 1
    assert "ModelNotFoundError" in capsys.readouterr().err
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    assert main(["prepare", str(bad), "-o", str(tmp_path / "p"), "--no-progress"]) == 1
    assert "ModelLoadError" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["optimize", str(src)])  # -o is required: argparse usage error


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_cli_convert_torch(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    TinyCNN = prep_models.torch_modules()[0]
    saved = tmp_path / "cnn.pt"
    torch.jit.trace(TinyCNN().eval(), torch.randn(1, 3, 8, 8)).save(str(saved))  # a TorchScript archive
    out = tmp_path / "cnn.onnx"
    assert main(["convert", str(saved), "-o", str(out)]) == 2  # no example inputs
    assert "--input-shape" in capsys.readouterr().err
    assert main(["convert", str(saved), "-o", str(out), "--input-shape", "2,3,8,8"]) == 0
    assert out.is_file() and "passed" in capsys.readouterr().out
    exported = tmp_path / "cnn.pt2"  # a torch.export program
    torch.export.save(torch.export.export(TinyCNN().eval(), (torch.randn(2, 3, 8, 8),)), str(exported))
    assert main(["convert", str(exported), "-o", str(out), "--input-shape", "2,3,8,8", "--no-dynamic-batch"]) == 0
