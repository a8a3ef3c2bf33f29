"""Loading libonnxruntime at run time, next to the onnxruntime Python module."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import fastort
import fastort._core


def run_python(code: str, prelude: str = "", **env: str) -> subprocess.CompletedProcess:
    environ = dict(os.environ)
    environ.update(env)
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          env=environ, timeout=120)


def test_runtime_info():
    info = fastort.runtime_info()
    assert info["version"].count(".") >= 1
    assert info["api_version"] >= 21
    assert os.path.isfile(info["library_path"])
    assert "libonnxruntime" in os.path.basename(info["library_path"])
    assert "CPUExecutionProvider" in info["providers"]


MODEL = """
import numpy as np, onnx
from onnx import helper, TensorProto
w = np.arange(12, dtype=np.float32).reshape(4, 3)
g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
    [onnx.numpy_helper.from_array(w, "W")])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=10).SerializeToString()
x = np.ones((2, 4), np.float32)
"""


def test_both_runtimes_in_one_process_either_order():
    for first, second in (("onnxruntime", "fastort"), ("fastort", "onnxruntime")):
        proc = run_python(f"""
            import {first}, {second}
            import fastort, onnxruntime
            exec(MODEL)
            a = fastort.Engine(m).run({{"x": x}})["y"]
            b = onnxruntime.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, {{"x": x}})[0]
            c = fastort.Engine(m).run({{"x": x}})["y"]
            assert (a == b).all() and (a == c).all() and (a == x @ w).all()
            print("ok", fastort.runtime_info()["version"], onnxruntime.__version__)
        """, prelude=f"MODEL = {MODEL!r}\n")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("ok"), proc.stdout


def test_library_override_missing_file():
    proc = run_python("import fastort", FASTORT_ORT_LIBRARY="/nonexistent/libonnxruntime.so")
    assert proc.returncode != 0
    assert "RuntimeLoadError" in proc.stderr
    assert "FASTORT_ORT_LIBRARY=/nonexistent/libonnxruntime.so does not name a file" in proc.stderr
    assert "pip install onnxruntime" in proc.stderr


def test_library_override_not_onnxruntime():
    proc = run_python(
        """
        try:
            import fastort
        except ImportError as e:
            print(type(e).__name__, e)
        """,
        FASTORT_ORT_LIBRARY=fastort._core.__file__,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("RuntimeLoadError"), proc.stdout
    assert "does not export OrtGetApiBase" in proc.stdout
    assert "pip install -U onnxruntime" in proc.stdout


def test_library_override_is_used():
    path = fastort.runtime_info()["library_path"]
    proc = run_python("import fastort; print(fastort.runtime_info()['library_path'])", FASTORT_ORT_LIBRARY=path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == path


def test_global_thread_pools():
    proc = run_python(f"""
        import fastort
        fastort.configure_global_threads(intra_op_threads=2, allow_spinning=False)
        exec(MODEL)
        e = fastort.Engine(m, replicas=2, use_global_thread_pool=True)
        assert (e.run({{"x": x}})["y"] == x @ w).all()
        try:
            fastort.configure_global_threads(intra_op_threads=1)
        except fastort.FastortError as err:
            print("late:", err)
        print(fastort.runtime_info()["global_intra_op_threads"])
    """, prelude=f"MODEL = {MODEL!r}\n")
    assert proc.returncode == 0, proc.stderr
    assert "late: onnxruntime's global thread pools already exist" in proc.stdout
    assert proc.stdout.strip().endswith("2")
