"""Weight-only int4 / int8 quantization (MatMulNBits) through fastort.quantize,
and the refusal of variants the target provider cannot run."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import fastort
from fastort.errors import CalibrationError, QuantizationError, UnsupportedOnTargetError, ValidationError
from fastort.cli import main
from fastort.prepare.kernels import check_kernels
from fastort.prepare.quantize import quantize
from fastort.prepare.wquant import matmul_weight_bytes

import prep_models
from conftest import ort_session

SIZES = (64, 256, 256, 32)


@pytest.fixture(scope="module")
def mlp():
    return prep_models.mlp(SIZES)


@pytest.fixture(scope="module")
def x():
    return prep_models.mlp_inputs(64, SIZES[0], seed=5)


def _nbits(model):
    return [n for n in model.graph.node if n.op_type == "MatMulNBits"]


def _attr(node, name):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return None


def test_int4_rtn(mlp, x, tmp_path):
    path = tmp_path / "int4.onnx"
    result = quantize(mlp, path, mode="int4", inputs=x, measure=False)
    assert path.is_file() and result.step == "quantize"
    nodes = _nbits(result.model)
    assert len(nodes) == 3 and not [n for n in result.model.graph.node if n.op_type == "MatMul"]
    assert {_attr(n, "bits") for n in nodes} == {4} and {_attr(n, "block_size") for n in nodes} == {32}
    # the MatMul weights: 4 bits + a float scale and a 4-bit zero point per 32 values
    w = result.settings["matmul_weight_bytes"]
    assert w["before"] == matmul_weight_bytes(mlp) and w["before"] / w["after"] > 5
    assert result.before.bytes / result.after.bytes > 4
    assert result.validation.passed
    # independently: onnxruntime's own session of the written file against the float model
    ref = ort_session(mlp).run(None, {"x": x})[0]
    got = ort_session(path).run(None, {"x": x})[0]
    assert np.abs(got - ref).max() < 0.25 * np.abs(ref).max()
    assert result.settings["mode"] == "int4" and result.settings["bits"] == 4


def test_int8_weight_is_closer_than_int4(mlp, x):
    int8 = quantize(mlp, mode="int8_weight", inputs=x, measure=False)
    int4 = quantize(mlp, mode="int4", inputs=x, measure=False)
    assert {_attr(n, "bits") for n in _nbits(int8.model)} == {8}
    assert int8.validation.max_abs_error < int4.validation.max_abs_error
    assert matmul_weight_bytes(int8.model) > matmul_weight_bytes(int4.model)


@pytest.mark.filterwarnings("ignore:fastort quantize")  # block 128 on random weights: outside tolerance, forced
def test_block_size_and_symmetric(mlp, x):
    r = quantize(mlp, mode="int4", block_size=128, symmetric=True, inputs=x, measure=False, force=True)
    nodes = _nbits(r.model)
    assert {_attr(n, "block_size") for n in nodes} == {128}
    assert all(len(n.input) < 4 or n.input[3] == "" for n in nodes)  # no zero points
    asym = quantize(mlp, mode="int4", block_size=128, inputs=x, measure=False, force=True)
    assert all(len(n.input) >= 4 and n.input[3] for n in _nbits(asym.model))


def test_gptq_needs_and_uses_calibration(mlp, x):
    with pytest.raises(CalibrationError, match="gptq"):
        quantize(mlp, mode="int4", algorithm="gptq", measure=False)
    r = quantize(mlp, mode="int4", algorithm="gptq", calibration={"x": x}, measure=False)
    assert len(_nbits(r.model)) == 3
    assert r.settings["algorithm"] == "gptq" and r.settings["calibration_rows"] == 64
    assert r.validation.passed
    assert any("calibration data" in n for n in r.notes)  # validated on it, and says so


def test_hqq(mlp, x):
    pytest.importorskip("torch")
    r = quantize(mlp, mode="int4", algorithm="hqq", accuracy_level=4, inputs=x, measure=False)
    nodes = _nbits(r.model)
    assert len(nodes) == 3 and {_attr(n, "accuracy_level") for n in nodes} == {4}
    assert r.validation.passed


def test_accuracy_level_checked_against_unset(mlp, x):
    r = quantize(mlp, mode="int4", accuracy_level=4, inputs=x, measure=False)
    assert {_attr(n, "accuracy_level") for n in _nbits(r.model)} == {4}
    check = r.settings["accuracy_level_check"]
    assert check["passed"] and check["outputs"][0]["max_abs_error"] > 0  # int8 activations change something
    assert any("accuracy_level 4 against unset" in n for n in r.notes)


def _outlier_model():
    """y = x @ W where input column 0 carries huge values that W ignores: at
    accuracy level 4 (int8 activations per block) the outlier takes the whole
    int8 range of its block and the small values round to zero."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 16)).astype(np.float32)
    w[0] = 0.0
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], "outlier",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])],
                              [numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    x = rng.standard_normal((16, 64)).astype(np.float32)
    x[:, 0] = 5000.0
    return model, x


def test_accuracy_level_refused_on_outlier_activations():
    model, x = _outlier_model()
    unset = quantize(model, mode="int8_weight", inputs=x, measure=False)  # weights alone are fine
    assert unset.validation.passed
    with pytest.raises(ValidationError) as e:
        quantize(model, mode="int8_weight", accuracy_level=4, inputs=x, measure=False)
    assert "outside tolerance" in str(e.value)
    with pytest.warns(RuntimeWarning):
        forced = quantize(model, mode="int8_weight", accuracy_level=4, inputs=x, measure=False, force=True)
    assert forced.forced and not forced.settings["accuracy_level_check"]["passed"]
    assert any("OUTSIDE tolerance" in n for n in forced.notes)


def test_exclude_keeps_a_matmul_float(mlp, x):
    r = quantize(mlp, mode="int4", exclude_nodes=["matmul2"], inputs=x, measure=False)
    assert [n.name for n in r.model.graph.node if n.op_type == "MatMul"] == ["matmul2"]
    assert len(_nbits(r.model)) == 2
    with pytest.raises(QuantizationError, match="nope"):
        quantize(mlp, mode="int4", exclude_nodes=["nope"], measure=False)


def test_gemm_is_rewritten_and_quantized(x):
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((32, 64)) / 8).astype(np.float32)  # [out, in]: transB=1, as torch exports Linear
    b = rng.standard_normal(32).astype(np.float32)
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "W", "B"], ["y"], transB=1, name="fc")], "gemm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 32])],
                              [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    r = quantize(model, mode="int4", inputs=x, measure=False)
    assert len(_nbits(r.model)) == 1 and r.settings["gemm_rewritten"] == 1
    assert r.validation.passed and not [i for i in r.model.graph.initializer if i.name == "W"]


@pytest.mark.parametrize("kwargs, match", [
    ({"block_size": 48}, "power of two"),
    ({"block_size": 8}, "power of two"),
    ({"accuracy_level": 7}, "accuracy_level"),
    ({"algorithm": "awq"}, "algorithm"),
    ({"algorithm": "hqq", "symmetric": True}, "asymmetric"),
])
def test_bad_settings(mlp, kwargs, match):
    with pytest.raises(QuantizationError, match=match):
        quantize(mlp, mode="int4", measure=False, **kwargs)


def test_gptq_is_4_bit_only(mlp, x):
    with pytest.raises(QuantizationError, match="4-bit"):
        quantize(mlp, mode="int8_weight", algorithm="gptq", calibration=x, measure=False)


def test_nothing_to_quantize():
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    with pytest.raises(QuantizationError, match="nothing to quantize"):
        quantize(model, mode="int4", measure=False)


def _bf16_matmul():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 32)).astype(np.float32)
    bits = (w.view(np.uint32) >> 16).astype(np.uint16)  # float32 -> bfloat16 by truncation
    init = helper.make_tensor("W", TensorProto.BFLOAT16, w.shape, bits.tobytes(), raw=True)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm_bf16")], "bf16",
                              [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, ["batch", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, ["batch", 32])], [init])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_kernel_check_names_node_and_op():
    with pytest.raises(UnsupportedOnTargetError) as e:
        check_kernels(_bf16_matmul(), "cpu")
    assert e.value.op_type == "MatMul" and e.value.node == "mm_bf16" and e.value.provider == "CPUExecutionProvider"
    assert "mm_bf16" in str(e.value) and "CPUExecutionProvider" in str(e.value)
    assert check_kernels(prep_models.mlp(SIZES), "cpu") == []


def test_int4_variant_the_cpu_cannot_run_is_refused():
    """bfloat16 weights give a bfloat16 MatMulNBits, which onnxruntime's CPU provider does not implement."""
    with pytest.raises(UnsupportedOnTargetError) as e:
        quantize(_bf16_matmul(), mode="int4", measure=False)
    assert e.value.op_type == "MatMulNBits" and "CPUExecutionProvider" in str(e.value)
    assert "int4" in str(e.value)


def test_cuda_target_without_cuda_is_noted(mlp, x):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the note is for CPU-only installs")
    r = quantize(mlp, mode="int4", inputs=x, measure=False, target="cuda")
    assert any("kernels not checked for CUDAExecutionProvider" in n for n in r.notes)


def test_cli_int4(mlp, tmp_path, capsys):
    src = tmp_path / "m.onnx"
    onnx.save(mlp, src)
    out = tmp_path / "q.onnx"
    assert main(["quantize", str(src), "-o", str(out), "--mode", "int4", "--block-size", "64", "--accuracy-level",
                 "4", "--algorithm", "rtn", "--no-measure"]) == 0
    text = capsys.readouterr().out
    assert "accuracy_level 4 against unset" in text and out.is_file()
    q = onnx.load(out)
    assert {_attr(n, "block_size") for n in _nbits(q)} == {64}


def test_lazy_module_attribute():
    assert fastort.prepare.wquant.WEIGHT_ONLY_MODES == {"int4": 4, "int8_weight": 8}
