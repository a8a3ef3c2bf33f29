"""fastort.convert: torch and scikit-learn models to checked, validated ONNX."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest

import fastort
from fastort import convert as fconvert
from fastort.prepare.convert import check_onnx, from_sklearn, from_tensorflow, from_torch, load_framework_model
from fastort.prepare import ConversionError, ConversionMismatchError, MissingDependencyError, ValidationError

import prep_models


@pytest.fixture(scope="module")
def torch_mods():
    pytest.importorskip("torch", reason="needs the torch extra: pip install 'fastort[torch]'")
    return prep_models.torch_modules()


@pytest.fixture(scope="module")
def converted_cnn(torch_mods, tmp_path_factory):
    import torch

    TinyCNN = torch_mods[0]
    module = TinyCNN()
    path = tmp_path_factory.mktemp("convert") / "cnn.onnx"
    x = torch.randn(2, 3, 8, 8)
    return module, from_torch(module, x, path), path


def test_torch_cnn_converts_checks_and_validates(converted_cnn):
    import torch

    module, result, path = converted_cnn
    assert result.step == "convert"
    assert result.path == os.fspath(path) and os.path.isfile(path)
    assert result.validation is not None and result.validation.passed
    assert result.validation.max_abs_error < 1e-4
    assert result.settings["framework"] == "torch" and result.settings["exporter"] in ("dynamo", "torchscript")
    assert "torch" in result.tools and "onnx" in result.tools and "onnxruntime" in result.tools
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    # dynamic batch by default: dim 0 is named "batch" on the input and the output
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    # another batch size runs and matches torch
    x = np.random.default_rng(0).standard_normal((5, 3, 8, 8)).astype(np.float32)
    with fastort.Engine(os.fspath(path)) as engine:
        got = engine.run(x)["output"]
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_torch_named_inputs_several_outputs_torchscript(torch_mods):
    import torch

    _, TwoInTwoOut, _, _ = torch_mods
    a, b = torch.randn(3, 4), torch.randn(3, 3)
    result = from_torch(TwoInTwoOut(), {"a": a, "b": b}, output_names=["h", "s"], exporter="torchscript")
    assert result.settings["exporter"] == "torchscript"
    assert [i.name for i in result.model.graph.input] == ["a", "b"]
    assert [o.name for o in result.model.graph.output] == ["h", "s"]
    assert [o.name for o in result.validation.outputs] == ["h", "s"]
    assert result.validation.passed


def test_torch_unsupported_op_is_a_conversion_error(torch_mods):
    import torch

    Unsupported = torch_mods[2]
    with pytest.raises(ConversionError, match="kthvalue") as info:
        from_torch(Unsupported(), torch.randn(3, 4), exporter="torchscript")
    assert "cannot convert Unsupported" in str(info.value)


def test_torch_mismatch_shows_the_numbers_and_force_keeps_it(torch_mods, tmp_path):
    import torch

    Liar = torch_mods[3]
    x = torch.randn(3, 4)
    path = tmp_path / "liar.onnx"
    with pytest.raises(ConversionMismatchError) as info:
        from_torch(Liar(), x, path, exporter="torchscript")
    err = info.value
    assert isinstance(err, ValidationError) and isinstance(err, ConversionError)
    assert not path.exists()  # refused: nothing written
    message = str(err)
    assert "max abs error 0.5" in message and "reference" in message and "candidate" in message
    assert err.report is not None and not err.report.passed
    assert err.report.outputs[0].max_abs_error == pytest.approx(0.5, abs=1e-5)
    with pytest.warns(RuntimeWarning, match="force=True"):
        kept = from_torch(Liar(), x, path, exporter="torchscript", force=True)
    assert kept.forced and path.exists()


def test_torch_bad_arguments(torch_mods):
    import torch

    with pytest.raises(ConversionError, match="nn.Module"):
        from_torch(lambda x: x, torch.randn(1, 4))
    TinyCNN = torch_mods[0]
    with pytest.raises(ConversionError, match="fails on the example inputs"):
        from_torch(TinyCNN(), torch.randn(1, 3, 5))  # wrong rank for Conv2d
    with pytest.raises(ConversionError, match="input names"):
        from_torch(TinyCNN(), torch.randn(1, 3, 8, 8), input_names=["a", "b"])


def test_missing_torch_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(MissingDependencyError, match=r"fastort\[torch\]") as info:
        from_torch(object(), np.zeros((1, 4), np.float32))
    assert isinstance(info.value, ImportError) and isinstance(info.value, fastort.FastortError)


def test_tensorflow_needs_the_tf_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import tensorflow -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'fastort\[tf\]'"):
        from_tensorflow(object(), np.zeros((1, 4), np.float32))


def test_tensorflow_keras_model(tmp_path):
    tf = pytest.importorskip("tensorflow", reason="needs the tf extra: pip install 'fastort[tf]'")
    pytest.importorskip("tf2onnx", reason="needs the tf extra: pip install 'fastort[tf]'")
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input((6,)), tf.keras.layers.Dense(16, activation="relu"),
                                 tf.keras.layers.Dense(3, activation="softmax")])
    x = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    result = from_tensorflow(model, x, tmp_path / "keras.onnx")
    assert result.validation.passed and (tmp_path / "keras.onnx").exists()
    with fastort.Engine(result.path, max_batch_size=8) as engine:  # dim 0 is a dynamic "batch": batchable
        assert engine.inputs[0].shape == ("batch", 6) and engine.batching
        got = engine.run({engine.inputs[0].name: x[:2]})[engine.outputs[0].name]
    np.testing.assert_allclose(got, model(x[:2]).numpy(), rtol=1e-4, atol=1e-5)

    class Scaled(tf.Module):  # a plain tf.function, not Keras
        @tf.function
        def __call__(self, a):
            return tf.sqrt(a) * 2.0

    converted = from_tensorflow(Scaled().__call__, np.full((2, 3), 4.0, np.float32))
    assert converted.validation.passed


def test_importing_fastort_needs_no_framework():
    code = ("import sys, fastort, fastort.prepare, fastort.prepare.convert, fastort.cli.dispatch, fastort.cli.prepare\n"
            "assert fastort.convert.from_torch and fastort.optimize and fastort.quantize and fastort.validate\n"
            "assert fastort.package and fastort.cli.dispatch.command_names()\n"
            "bad = [m for m in ('torch', 'sklearn', 'skl2onnx', 'tensorflow', 'onnxslim') if m in sys.modules]\n"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# -- scikit-learn ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def gbc():
    pytest.importorskip("skl2onnx", reason="needs the sklearn extra: pip install 'fastort[sklearn]'")
    from sklearn.ensemble import GradientBoostingClassifier

    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 6)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 0.8)
    return GradientBoostingClassifier(n_estimators=10, max_depth=2, random_state=0).fit(X, y), X


def test_sklearn_classifier_with_probability_maps(gbc):
    clf, X = gbc
    result = from_sklearn(clf, X[:64])
    assert result.validation.passed
    assert [o.name for o in result.validation.outputs] == ["output_label", "output_probability"]
    assert result.validation.outputs[0].kind == "label"
    assert result.validation.outputs[0].top1_agreement == 1.0
    with fastort.Engine(result.model) as engine:
        out = engine.run({"X": X[:3]})
    assert isinstance(out["output_probability"], list) and isinstance(out["output_probability"][0], dict)
    np.testing.assert_array_equal(out["output_label"], clf.predict(X[:3]))
    probs = np.array([[row[k] for k in sorted(row)] for row in out["output_probability"]])
    np.testing.assert_allclose(probs, clf.predict_proba(X[:3]), rtol=1e-4, atol=1e-5)


def test_sklearn_classifier_without_zipmap_and_float64_sample(gbc):
    clf, X = gbc
    result = from_sklearn(clf, X[:32].astype(np.float64), zipmap=False)
    assert result.model.graph.output[1].type.WhichOneof("value") == "tensor_type"
    assert result.settings["input_dtype"] == "float32"
    assert result.validation.passed


def test_sklearn_regressor():
    pytest.importorskip("skl2onnx")
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(1)
    X = rng.standard_normal((50, 3)).astype(np.float32)
    reg = Ridge().fit(X, X @ np.array([1.0, -2.0, 0.5]))
    result = from_sklearn(reg, X)
    assert result.validation.passed and result.validation.outputs[0].kind == "numeric"


def test_sklearn_unsupported_model_is_a_conversion_error(gbc):
    from sklearn.base import BaseEstimator, ClassifierMixin

    class Custom(ClassifierMixin, BaseEstimator):
        def fit(self, X, y):
            self.classes_ = np.unique(y)
            return self

        def predict(self, X):
            return np.zeros(len(X), dtype=np.int64)

    _, X = gbc
    with pytest.raises(ConversionError, match="skl2onnx cannot convert Custom"):
        from_sklearn(Custom().fit(X, np.arange(len(X)) % 2), X[:4])
    with pytest.raises(ConversionError, match="fitted scikit-learn estimator"):
        from_sklearn(object(), X[:4])
    with pytest.raises(ConversionError, match="rows"):
        from_sklearn(gbc[0], np.zeros((0, 6), np.float32))


# -- checks and loading -----------------------------------------------------------------


def test_check_onnx_refuses_a_broken_graph():
    model = prep_models.mlp()
    model.graph.node[0].input[1] = "no_such_tensor"
    with pytest.raises(ConversionError, match="checker"):
        check_onnx(model)


def test_convert_an_onnx_model_only_checks_it(tmp_path):
    model = prep_models.mlp()
    result = fconvert.convert(model, path=tmp_path / "m.onnx")
    assert result.step == "check" and (tmp_path / "m.onnx").is_file()


def test_load_framework_model_failures(tmp_path):
    from fastort.errors import ModelLoadError, ModelNotFoundError

    with pytest.raises(ModelNotFoundError):
        load_framework_model(tmp_path / "missing.pt")
    odd = tmp_path / "model.xyz"
    odd.write_bytes(b"hello")
    with pytest.raises(ModelLoadError, match="unknown model format"):
        load_framework_model(odd)
    pytest.importorskip("sklearn")
    garbage = tmp_path / "model.pkl"
    garbage.write_bytes(b"this is not a pickle")
    with pytest.raises(ModelLoadError, match="cannot load model file"):
        load_framework_model(garbage)
