"""Fuzzing: a short smoke run of each atheris target (fuzz/), and the inputs the
long runs found, kept as regression tests. The long run is documented in
docs/RELIABILITY.md."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import fastort
from fastort import InvalidInputError, ModelLoadError
import models

FUZZ = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "fuzz")


@pytest.mark.parametrize("target,runs", [("fuzz_load.py", 1500), ("fuzz_run.py", 1500)])
def test_fuzz_smoke(target: str, runs: int, tmp_path):
    pytest.importorskip("atheris")
    proc = subprocess.run(
        [sys.executable, os.path.join(FUZZ, target), f"-runs={runs}", "-seed=1", "-rss_limit_mb=4096",
         "-timeout=60", f"-artifact_prefix={tmp_path}{os.sep}"],
        cwd=FUZZ, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"Done {runs} runs" in proc.stderr
    assert not list(tmp_path.iterdir())  # no crash, leak or timeout artifact


def patched(model: onnx.ModelProto, marker: bytes, replacement: bytes) -> bytes:
    """The serialized model with `marker` replaced by bytes of the same length
    (protobuf's Python API cannot write strings that are not UTF-8)."""
    blob = model.SerializeToString()
    assert len(marker) == len(replacement) and blob.count(marker) >= 1
    return blob.replace(marker, replacement)


def test_found_input_name_not_utf8():
    # fuzz_load: a model whose input name is not UTF-8 raised UnicodeDecodeError.
    model = models.identity(TensorProto.FLOAT, ["n"])
    model.graph.input[0].name = "QQQQ"
    model.graph.node[0].input[0] = "QQQQ"
    with pytest.raises(ModelLoadError, match=r"not valid UTF-8"):
        fastort.Engine(patched(model, b"QQQQ", b"\xc4888"))


def test_found_dim_name_not_utf8():
    # fuzz_load: the same for a symbolic dim name.
    model = models.identity(TensorProto.FLOAT, ["DDDD"])
    with pytest.raises(ModelLoadError, match=r"not valid UTF-8"):
        fastort.Engine(patched(model, b"DDDD", b"\xd0\xe8\xe8\xe8"))


def test_found_onnxruntime_message_not_utf8():
    # fuzz_load: onnxruntime's message quoted bytes of the model that are not
    # UTF-8, and turning it into a Python exception raised UnicodeDecodeError.
    graph = helper.make_graph([helper.make_node("OOOO", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    with pytest.raises(ModelLoadError, match=r"\\xd0"):
        fastort.Engine(patched(model, b"OOOO", b"\xd0\xe8\xe8\xe8"), log_level="fatal")


@pytest.mark.parametrize("batching", [False, True])
def test_found_surrogate_names_in_inputs_outputs_and_out(batching: bool):
    # fuzz_run: a dict key, output name or out= key with a lone surrogate raised
    # UnicodeEncodeError while the error message was built.
    engine = fastort.Engine(models.tiny(), **({"max_batch_size": 4} if batching else {}))
    x = np.ones((1, 4), np.float32)
    with pytest.raises(InvalidInputError, match=r"unknown input '\\ud800'"):
        engine.run({"x": x, "\ud800": x})
    with pytest.raises(InvalidInputError, match=r"unknown output '\\ud800'"):
        engine.run({"x": x}, outputs=["\ud800"])
    with pytest.raises(InvalidInputError, match=r"'\\udc80'"):
        engine.run({"x": x}, out={"\udc80": np.empty((1, 3), np.float32)})
    if batching:
        with pytest.raises(InvalidInputError, match=r"unknown input"):
            engine.submit({"\ud800": x})
    assert engine.run({"x": x})["y"].shape == (1, 3)


def test_found_str_array_with_invalid_code_points():
    # fuzz_run (under ASan, from a guided run's corpus): a numpy str array whose
    # memory holds a code point past U+10FFFF raised SystemError from numpy.
    engine = fastort.Engine(models.identity(TensorProto.STRING, ["n"]))
    bad = np.frombuffer(b"\x9e\x9e\x9e\x9e" * 2, "U1")
    with pytest.raises(InvalidInputError, match=r"input 'x': its string elements cannot be read"):
        engine.run({"x": bad})
    assert engine.run({"x": np.array(["ok"])})["y"][0] == "ok"


def test_native_core_checks(tmp_path):
    # fuzz/check_core.cpp: overflowing shapes given straight to the C++ core,
    # overlapping buffers, and a model-bytes mutation loop (the rank-0 scan on
    # every mutant, onnxruntime's loader on some).
    from fastort.bench import native_binary

    binary = native_binary("fastort_check_core")
    if binary is None:
        pytest.skip("the native programs were not found (built with FASTORT_BUILD_BENCH=OFF, or not run from the checkout)")
    paths = []
    for name, model in [("mlp", models.mlp((64, 128, 16))), ("scalar", models.scalar_plus_matrix()),
                        ("strings", models.identity(TensorProto.STRING, ["n"]))]:
        paths.append(str(tmp_path / f"{name}.onnx"))
        onnx.save(model, paths[-1])
    lib = fastort.runtime_info()["library_path"]
    proc = subprocess.run([binary, lib, *paths, "--iters", "20000"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "check_core: ok" in proc.stdout and "4 overflowing shapes refused" in proc.stdout
    assert "20000 mutants scanned" in proc.stdout
