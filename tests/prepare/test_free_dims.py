"""Free dims (image height/width, sequence length) are never guessed silently:
synthetic inputs say so (output, report, manifest), take sizes from ``dims=`` /
``--dims``, and a model is not called validated on shapes nobody gave unless
the caller opts in (``allow_synthetic=True`` / ``--allow-synthetic-dims``)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import fastort
from fastort.bench import SyntheticInputs, parse_dims, synthesize
from fastort.errors import ValidationError


def image_model() -> onnx.ModelProto:
    """x float32[batch, 3, height, width] -> y float32[batch, 3] (mean over the image)."""
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])
    graph = helper.make_graph([helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=0)], "img",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], [axes])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "img.onnx"
    onnx.save(image_model(), path)
    return str(path)


def test_parse_dims():
    assert parse_dims(["height=224", "x:3=320"]) == {"height": 224, "x:3": 320}
    assert parse_dims("height=2,width=3") == {"height": 2, "width": 3}
    assert parse_dims({"seq": 7}) == {"seq": 7}
    for bad in (["height"], ["height=abc"], ["=3"], ["x:a=3"], ["h=-1"]):
        with pytest.raises(ValueError):
            parse_dims(bad)


def test_synthesize_records_given_batch_and_guessed():
    specs = fastort.Engine(image_model().SerializeToString()).inputs
    syn = synthesize(specs, batch=4, dims={"height": 32})
    assert syn.feeds["x"].shape == (4, 3, 32, 1)
    assert syn.given == {"x:2": 32} and syn.batch == {"x:0": 4} and syn.guessed == {"x:3": "width"}
    assert "width" in syn.describe() and "set to 1" in syn.describe()
    assert synthesize(specs, 2, {"x:3": 5, "height": 6}).feeds["x"].shape == (2, 3, 6, 5)
    with pytest.raises(ValueError, match="'hieght' name no free dim.*height"):
        synthesize(specs, 1, {"hieght": 3})


def test_validate_refuses_guessed_dims_and_names_them(model_path):
    with pytest.raises(ValidationError, match=r"x:2 \('height'\), x:3 \('width'\).*allow_synthetic=True"):
        fastort.validate(model_path, model_path)


def test_validate_with_dims_records_synthetic_inputs(model_path):
    report = fastort.validate(model_path, model_path, dims={"height": 32, "width": 48})
    assert report.passed
    assert report.inputs["source"] == "synthetic" and report.inputs["shapes"] == {"x": [8, 3, 32, 48]}
    assert report.inputs["given_dims"] == {"x:2": 32, "x:3": 48} and report.inputs["guessed_dims"] == {}
    assert "synthetic inputs" in str(report)


def test_validate_allow_synthetic_says_what_was_guessed(model_path):
    report = fastort.validate(model_path, model_path, allow_synthetic=True)
    assert report.inputs["guessed_dims"] == {"x:2": "height", "x:3": "width"}
    assert "set to 1" in str(report)
    given = fastort.validate(model_path, model_path, {"x": np.ones((2, 3, 5, 5), np.float32)})
    assert given.inputs == {"source": "given"}


def test_steps_and_pipeline_refuse_then_record_in_the_manifest(model_path, tmp_path):
    with pytest.raises(ValidationError, match="height"):
        fastort.optimize(model_path, measure=False)
    result = fastort.optimize(model_path, measure=False, dims={"height": 16, "width": 16})
    assert result.provenance()["validation"]["inputs"]["given_dims"] == {"x:2": 16, "x:3": 16}
    with pytest.raises(ValidationError, match="width"):
        fastort.prepare(model_path, tmp_path / "pkg0", progress=False, measure=False)
    out = fastort.prepare(model_path, tmp_path / "pkg", progress=False, measure=False, allow_synthetic=True)
    assert any("free dims set to 1" in n for n in out.notes)
    manifest = json.loads((tmp_path / "pkg" / "fastort.json").read_text())
    assert '"guessed_dims": {"x:2": "height", "x:3": "width"}' in json.dumps(manifest)


def _cli(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "fastort", *args], capture_output=True, text=True, timeout=timeout)


def test_cli_validate_names_flags(model_path, tmp_path):
    proc = _cli("validate", model_path, model_path)
    assert proc.returncode == 1
    assert "--allow-synthetic-dims" in proc.stderr and "--dims" in proc.stderr and "--inputs" in proc.stderr
    assert "allow_synthetic=" not in proc.stderr and "dims=" not in proc.stderr
    assert "height" in proc.stderr and "Traceback" not in proc.stderr
    ok = _cli("validate", model_path, model_path, "--dims", "height=8,width=12", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["inputs"]["shapes"] == {"x": [8, 3, 8, 12]}
    assert _cli("validate", model_path, model_path, "--allow-synthetic-dims").returncode == 0
    bad = _cli("validate", model_path, model_path, "--dims", "height")
    assert bad.returncode == 2 and "--dims" in bad.stderr
    np.savez(tmp_path / "in.npz", x=np.ones((2, 3, 4, 4), np.float32))
    assert _cli("validate", model_path, model_path, "--inputs", str(tmp_path / "in.npz")).returncode == 0


def test_cli_bench_says_inputs_are_synthetic(model_path, tmp_path):
    proc = _cli("bench", model_path, "--seconds", "0.2", "--no-native")
    assert proc.returncode == 0, proc.stderr
    assert "synthetic inputs" in proc.stdout and "x:2 ('height')" in proc.stdout
    proc = _cli("bench", model_path, "--seconds", "0.2", "--no-native", "--dims", "height=64", "--dims", "width=32",
                "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["inputs"] == {"x": [1, 3, 64, 32]} and data["input_source"]["guessed_dims"] == {}
    np.savez(tmp_path / "in.npz", x=np.ones((1, 3, 20, 30), np.float32))
    proc = _cli("bench", model_path, "--seconds", "0.2", "--no-native", "--inputs", str(tmp_path / "in.npz"), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["inputs"] == {"x": [1, 3, 20, 30]} and data["input_source"] == {"source": "given"}
