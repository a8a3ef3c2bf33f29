"""Loading libonnxruntime at run time, next to the onnxruntime Python module.

The cases that change how the runtime is loaded run in fresh subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import fastort
import fastort._core


def run_python(code: str, prelude: str = "", **env: str) -> subprocess.CompletedProcess:
    environ = dict(os.environ)
    environ.pop("FASTORT_ORT_LIBRARY", None)
    environ.update(env)
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          env=environ, timeout=120)


def test_runtime_info():
    import onnxruntime

    info = fastort.runtime_info()
    assert info["version"] == onnxruntime.__version__
    assert isinstance(info["api_version"], int) and info["api_version"] >= 21
    assert os.path.isfile(info["library_path"])
    assert "onnxruntime" in os.path.basename(info["library_path"])
    assert "CPUExecutionProvider" in info["providers"]
    assert info["providers"] == onnxruntime.get_available_providers()
    assert fastort.runtime_info() == info  # loaded once


MODEL = """
import numpy as np, onnx
from onnx import helper, TensorProto
rng = np.random.default_rng(7)
w = rng.standard_normal((4, 3)).astype(np.float32)
g = helper.make_graph(
    [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Tanh", ["h"], ["y"])], "g",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
    [onnx.numpy_helper.from_array(w, "W")])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=10).SerializeToString()
x = rng.standard_normal((5, 4)).astype(np.float32)
"""


@pytest.mark.parametrize("first,second", [("onnxruntime", "fastort"), ("fastort", "onnxruntime")])
def test_both_runtimes_in_one_process(first, second):
    proc = run_python(f"""
        import {first}
        import {second}
        import fastort, onnxruntime
        exec(MODEL)
        ours = fastort.Engine(m)
        theirs = onnxruntime.InferenceSession(m, providers=["CPUExecutionProvider"])
        for _ in range(3):
            a = ours.run({{"x": x}})["y"]
            b = theirs.run(None, {{"x": x}})[0]
            assert a.dtype == b.dtype and a.shape == b.shape == (5, 3), (a, b)
            assert (a == b).all(), (a, b)
        assert fastort.runtime_info()["version"] == onnxruntime.__version__
        print("ok")
    """, prelude=f"MODEL = {MODEL!r}\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok", proc.stdout


IMPORT_AND_REPORT = """
try:
    import fastort
except ImportError as e:
    print(type(e).__name__, isinstance(e, ImportError))
    print(e)
else:
    print("imported")
"""


def assert_import_fails_with_fix(proc: subprocess.CompletedProcess, *expected: str) -> str:
    assert proc.returncode == 0, proc.stderr
    first, _, message = proc.stdout.partition("\n")
    assert first == "RuntimeLoadError True", proc.stdout  # an ImportError
    assert "pip install" in message and "onnxruntime" in message, message  # how to fix it ...
    assert "FASTORT_ORT_LIBRARY" in message, message  # ... or where to point fastort instead
    for part in expected:
        assert part in message, message
    return message


def test_library_override_missing_file(tmp_path):
    missing = str(tmp_path / "libonnxruntime.so.1")
    proc = run_python(IMPORT_AND_REPORT, FASTORT_ORT_LIBRARY=missing)
    assert_import_fails_with_fix(proc, f"FASTORT_ORT_LIBRARY={missing} does not name a file")


def test_library_override_is_a_directory(tmp_path):
    proc = run_python(IMPORT_AND_REPORT, FASTORT_ORT_LIBRARY=str(tmp_path))
    assert_import_fails_with_fix(proc, "does not name a file")


def loaded_libm() -> str:
    """The path of the C math library this process has loaded (a real .so without OrtGetApiBase)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if os.path.basename(path).startswith("libm.so") or os.path.basename(path).startswith("libm-"):
                return path
    raise AssertionError("libm is not mapped into this process")


@pytest.mark.parametrize("which", ["fastort-core", "libm"])
def test_library_override_not_onnxruntime(which):
    path = fastort._core.__file__ if which == "fastort-core" else loaded_libm()
    proc = run_python(IMPORT_AND_REPORT, FASTORT_ORT_LIBRARY=path)
    assert_import_fails_with_fix(proc, f"{path} does not export OrtGetApiBase", "not a libonnxruntime")


def test_library_override_not_a_shared_library(tmp_path):
    fake = tmp_path / "libonnxruntime.so"
    fake.write_bytes(b"\x7fELF but not really" + bytes(100))
    proc = run_python(IMPORT_AND_REPORT, FASTORT_ORT_LIBRARY=str(fake))
    assert_import_fails_with_fix(proc, f"cannot load onnxruntime from {fake}")


def test_library_override_is_used():
    path = fastort.runtime_info()["library_path"]
    proc = run_python("import fastort; print(fastort.runtime_info()['library_path'])", FASTORT_ORT_LIBRARY=path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == path


def test_global_thread_pools():
    proc = run_python("""
        import fastort, onnxruntime
        fastort.configure_global_threads(intra_op_threads=2, allow_spinning=False)
        exec(MODEL)
        want = onnxruntime.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        e = fastort.Engine(m, replicas=2, use_global_thread_pool=True)
        assert (e.run({"x": x})["y"] == want).all()
        try:
            fastort.configure_global_threads(intra_op_threads=1)
        except fastort.FastortError as err:
            print("late:", err)
        print(fastort.runtime_info()["global_intra_op_threads"])
    """, prelude=f"MODEL = {MODEL!r}\n")
    assert proc.returncode == 0, proc.stderr
    assert "late: onnxruntime's global thread pools already exist" in proc.stdout
    assert proc.stdout.strip().endswith("2")
