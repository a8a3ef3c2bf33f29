"""fastort.package: model packages, their manifest, and refusing tampered files."""

from __future__ import annotations

import json
import os

import pytest

import fastort
from fastort.errors import ModelLoadError, ModelNotFoundError
from fastort.prepare.optimize import optimize
from fastort.prepare.package import MANIFEST, load_package, package, read_manifest, summary, verify_package
from fastort.prepare import PackageError, PackageIntegrityError
from fastort.prepare.quantize import quantize

import prep_models


@pytest.fixture
def made(tmp_path):
    x = prep_models.mlp_inputs(8)
    opt = optimize(prep_models.mlp(), inputs=x, measure=False)
    q = quantize(opt, mode="dynamic", inputs=x, measure=False)
    out = package(q, tmp_path / "pkg", steps=[opt, q], replicas=2, name="mlp")
    return out, x


def test_package_and_load(made):
    out, x = made
    assert sorted(os.listdir(out)) == [MANIFEST, "model.onnx"]
    manifest = json.load(open(os.path.join(out, MANIFEST)))
    assert manifest["format"] == "fastort-model-package" and manifest["name"] == "mlp"
    assert manifest["inputs"] == [{"name": "x", "type": "tensor(float)", "dtype": "float32", "shape": ["batch", 16]}]
    assert manifest["outputs"][0]["name"] == "y"
    assert [p["step"] for p in manifest["provenance"]] == ["optimize", "quantize"]
    step = manifest["provenance"][1]
    assert step["settings"]["mode"] == "dynamic" and "onnxruntime" in step["tools"]
    assert step["validation"]["passed"] is True and "max_abs_error" in step["validation"]
    assert step["before"]["bytes"] > step["after"]["bytes"]
    entry = manifest["files"]["model.onnx"]
    assert len(entry["sha256"]) == 64 and entry["bytes"] == os.path.getsize(os.path.join(out, "model.onnx"))
    assert manifest["runtime"] == {"providers": ["cpu"], "replicas": 2, "graph_optimization": "all",
                                   "max_batch_size": 32, "max_delay_us": 2000}
    model_path, kwargs = load_package(out)
    assert model_path == os.path.join(out, "model.onnx")
    assert kwargs == {"providers": ("cpu",), "replicas": 2, "graph_optimization": "all", "max_batch_size": 32,
                      "max_delay_us": 2000}
    with fastort.Engine(model_path, **kwargs) as engine:
        assert engine.replicas == 2 and engine.batching
        assert engine.run({"x": x})["y"].shape == (8, 8)
    assert load_package(os.path.join(out, MANIFEST))[0] == model_path  # the manifest's path works too
    assert "sha256 ok" in summary(out)


def test_engine_opens_a_package_with_its_settings(made):
    out, x = made
    expected = fastort.Engine(os.path.join(out, "model.onnx")).run({"x": x})["y"]
    with fastort.Engine(out) as engine:  # the directory itself
        assert engine.replicas == 2 and engine.batching and engine.batch_config.max_batch_size == 32
        assert (engine.run({"x": x})["y"] == expected).all()
    with fastort.Engine(os.path.join(out, MANIFEST), replicas=1, max_batch_size=4) as engine:  # given values win
        assert engine.replicas == 1 and engine.batch_config.max_batch_size == 4
    with fastort.Engine(out, use_package_settings=False) as engine:
        assert engine.replicas == 1 and not engine.batching
        assert (engine.run({"x": x})["y"] == expected).all()


def test_engine_refuses_a_tampered_package(made):
    out, _ = made
    with open(os.path.join(out, "model.onnx"), "ab") as f:
        f.write(b"\0")
    with pytest.raises(PackageIntegrityError, match="model.onnx"):
        fastort.Engine(out)
    os.remove(os.path.join(out, MANIFEST))
    with pytest.raises(ModelLoadError, match="directory"):  # no manifest: a plain directory
        fastort.Engine(out)


def test_tampered_file_is_refused(made):
    out, _ = made
    path = os.path.join(out, "model.onnx")
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
    open(path, "wb").write(bytes(data))
    with pytest.raises(PackageIntegrityError, match="sha256") as info:
        load_package(out)
    assert isinstance(info.value, ModelLoadError) and "refusing" in str(info.value)


def test_truncated_replaced_or_missing_files_are_refused(made):
    out, _ = made
    path = os.path.join(out, "model.onnx")
    with open(path, "ab") as f:
        f.write(b"\0")
    with pytest.raises(PackageIntegrityError, match="bytes"):
        verify_package(out)
    os.remove(path)
    with pytest.raises(PackageIntegrityError, match="missing"):
        load_package(out)


def test_malformed_manifests(made, tmp_path):
    out, _ = made
    mpath = os.path.join(out, MANIFEST)
    original = json.load(open(mpath))

    def write(m):
        with open(mpath, "w") as f:
            json.dump(m, f)

    write({**original, "files": {**original["files"], "../escape.onnx": {"sha256": "0" * 64}}})
    with pytest.raises(PackageError, match="not a plain name"):
        load_package(out)
    write({**original, "format_version": 99})
    with pytest.raises(PackageError, match="newer"):
        load_package(out)
    write({**original, "format": "something else"})
    with pytest.raises(PackageError, match="not a fastort package manifest"):
        load_package(out)
    write({**original, "model": "other.onnx"})
    with pytest.raises(PackageIntegrityError, match="no hash"):
        load_package(out)
    with open(mpath, "w") as f:
        f.write("{ not json")
    with pytest.raises(PackageError, match="cannot read"):
        read_manifest(out)
    with pytest.raises(ModelNotFoundError):
        load_package(tmp_path / "nowhere")
    os.makedirs(tmp_path / "empty")
    with pytest.raises(PackageError, match="without fastort.json"):
        load_package(tmp_path / "empty")


def test_writing_rules(made, tmp_path):
    out, _ = made
    model = prep_models.mlp()
    with pytest.raises(PackageError, match="not empty"):
        package(model, out)
    assert package(model, out, overwrite=True) == out
    assert read_manifest(out)["provenance"] == []
    other = tmp_path / "stuff"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    with pytest.raises(PackageError, match="not a package"):
        package(model, other, overwrite=True)
    assert (other / "precious.txt").exists()
    with pytest.raises(PackageError, match="unknown Engine settings"):
        package(model, tmp_path / "p2", runtime={"turbo": True})
    custom = package(model, tmp_path / "p3", runtime={"intra_op_threads": 1, "max_batch_size": 8}, target="cuda")
    _, kwargs = load_package(custom)
    assert kwargs["providers"] == ("cuda", "cpu") and kwargs["max_batch_size"] == 8 and kwargs["intra_op_threads"] == 1


def test_refuses_a_failed_step(tmp_path):
    x = prep_models.mlp_inputs(4)
    with pytest.warns(RuntimeWarning):
        forced = optimize(prep_models.mlp(), fp16=True, inputs=x, rtol=0, atol=0, force=True, measure=False)
    assert package(forced, tmp_path / "forced")  # forced results may be packaged: the manifest says so
    assert read_manifest(tmp_path / "forced")["provenance"][0]["forced"] is True
    forced.forced = False
    with pytest.raises(PackageError, match="failed validation"):
        package(forced, tmp_path / "refused")


def test_unbatchable_models_get_no_batching(tmp_path):
    fixed = prep_models.fixed_batch_mlp(1)
    out = package(fixed, tmp_path / "fixed")
    runtime = read_manifest(out)["runtime"]
    assert "max_batch_size" not in runtime and "batch" in runtime["batching_off_because"]
    with pytest.raises(PackageError, match="does not suit"):
        package(fixed, tmp_path / "fixed2", max_batch_size=16)
    path, kwargs = load_package(out)
    with fastort.Engine(path, **kwargs) as engine:
        assert engine.run(prep_models.mlp_inputs(1))["y"].shape == (1, 8)
