"""The ``fastort`` command line: the dispatcher, ``python -m fastort``, and the
preparation, info and bench commands end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fastort.cli import main
from fastort.cli.dispatch import command_names
from fastort.cli.prepare import COMMANDS

import prep_models


def test_python_dash_m_fastort():
    out = subprocess.run([sys.executable, "-m", "fastort", "info", "--json"], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert "CPUExecutionProvider" in json.loads(out)["providers"]
    proc = subprocess.run([sys.executable, "-m", "fastort", "frobnicate"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown command 'frobnicate'" in proc.stderr


def test_cli_commands_exist():
    assert set(COMMANDS) == {"convert", "optimize", "quantize", "validate", "package", "prepare"}
    assert {"info", "bench"} | set(COMMANDS) <= set(command_names())
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
    assert main(["optimize", str(src)]) == 2  # -o is required: argparse usage error, as an exit status


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
