"""Engine on real onnxruntime: input forms, output selection, non-tensor outputs,
IO specs, zero copy, out=, model sources, options and threads."""

from __future__ import annotations

import pathlib
import sys
import threading
import time
import tracemalloc

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import fastort
import models

# -- input forms and output selection -------------------------------------------


def test_model_without_inputs(reference):
    value = np.arange(12, dtype=np.int64).reshape(3, 4)
    model = models.constant(value)
    engine = fastort.Engine(model)
    assert engine.inputs == ()
    want = reference(model, {})["y"]
    for inputs in ({}, [], ()):
        got = engine.run(inputs)["y"]
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_several_inputs_and_outputs_in_every_form(reference, rng):
    model = models.add_mul()
    engine = fastort.Engine(model)
    a, b = rng.standard_normal(5).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    want = reference(model, {"a": a, "b": b})
    for inputs in ({"a": a, "b": b}, {"b": b, "a": a}, [a, b], (a, b)):
        got = engine.run(inputs)
        assert list(got) == ["s", "p"]  # the model's output order
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])


@pytest.mark.parametrize("outputs", [["p"], ["s"], ["p", "s"], ["s", "p"], ("p",)])
def test_output_subset_and_order(outputs, reference, rng):
    model = models.add_mul()
    a, b = rng.standard_normal(4).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    want = reference(model, {"a": a, "b": b}, outputs=outputs)
    engine = fastort.Engine(model)
    for _ in range(3):  # first call, then calls shaped like the previous one
        got = engine.run({"a": a, "b": b}, outputs=outputs)
        assert list(got) == list(outputs)
        for name in outputs:
            np.testing.assert_array_equal(got[name], want[name])


def test_bare_array_for_one_input_model(tiny_model, tiny_engine, reference, rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    want = reference(tiny_model, {"x": x})["y"]
    np.testing.assert_array_equal(tiny_engine.run(x)["y"], want)
    np.testing.assert_array_equal(tiny_engine.run([x])["y"], want)
    np.testing.assert_array_equal(tiny_engine.run({"x": x})["y"], want)


def test_results_follow_each_call(tiny_model, tiny_engine, reference, rng):
    """Many calls with changing and repeating shapes: every result is the right one."""
    for rows in (1, 1, 1, 2, 2, 7, 1, 300, 300, 2):
        x = rng.standard_normal((rows, 4)).astype(np.float32)
        np.testing.assert_array_equal(tiny_engine.run({"x": x})["y"], reference(tiny_model, {"x": x})["y"])


def test_value_dependent_output_shapes(reference):
    model = models.nonzero()
    engine = fastort.Engine(model)
    for values in ([1, 0, 2, 0], [0, 0, 0, 3], [1, 1, 1, 1], [0, 0, 0, 0], [5, 0, 0, 1], [1, 2, 0, 0], [0, 9, 9, 0]):
        x = np.array(values, np.float32)
        got = engine.run({"x": x})["y"]
        want = reference(model, {"x": x})["y"]
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def test_rank0_output(reference):
    model = models.reduce_sum()
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    got = fastort.Engine(model).run({"x": x})["s"]
    want = reference(model, {"x": x})["s"]
    assert got.shape == want.shape == () and got.dtype == np.float32
    assert got == want
    buf = np.zeros((), np.float32)
    assert fastort.Engine(model).run({"x": x}, out={"s": buf})["s"] is buf
    assert buf == want


# -- non-tensor outputs ----------------------------------------------------------


def test_sequence_output(reference, ort_sess):
    model = models.sequence()
    engine = fastort.Engine(model)
    (spec,) = engine.outputs
    assert spec.type == ort_sess(model).get_outputs()[0].type == "seq(tensor(float))"
    assert spec.dtype is None and spec.shape is None and not spec.is_tensor
    a, b = np.array([1, 2, 3], np.float32), np.array([4, 5, 6], np.float32)
    got = engine.run({"a": a, "b": b})["seq"]
    want = reference(model, {"a": a, "b": b})["seq"]
    assert isinstance(got, list) and len(got) == len(want) == 2
    for g, w in zip(got, want):
        assert isinstance(g, np.ndarray) and g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("labels", ["int64", "string"])
def test_zipmap_output_like_sklearn(labels, reference, ort_sess, rng):
    model = models.zipmap(labels)
    engine = fastort.Engine(model)
    assert engine.outputs[0].type == ort_sess(model).get_outputs()[0].type
    for rows in (5, 1, 0):
        p = rng.dirichlet(np.ones(3), size=rows).astype(np.float32)
        got = engine.run({"p": p})["probs"]
        want = reference(model, {"p": p})["probs"]
        assert isinstance(got, list) and len(got) == len(want) == rows
        assert all(type(d) is dict for d in got)
        assert got == want  # same keys (int or str), same float values
        for g, w in zip(got, want):
            assert [type(k) for k in g] == [type(k) for k in w]
            assert [type(v) for v in g.values()] == [type(v) for v in w.values()]


# -- IO specs -------------------------------------------------------------------


def test_io_specs_match_onnxruntime(ort_sess):
    model = models.make_model(
        [helper.make_node("Identity", ["x"], ["y"]), helper.make_node("Cast", ["n"], ["m"], to=TensorProto.DOUBLE)],
        [models.tensor("x", TensorProto.FLOAT, ["batch", None, 3]), models.tensor("n", TensorProto.INT64, [2, "k"])],
        [models.tensor("y", TensorProto.FLOAT, ["batch", None, 3]), models.tensor("m", TensorProto.DOUBLE, [2, "k"])],
    )
    engine = fastort.Engine(model)
    sess = ort_sess(model)
    for specs, refs in ((engine.inputs, sess.get_inputs()), (engine.outputs, sess.get_outputs())):
        assert [s.name for s in specs] == [r.name for r in refs]
        assert [s.type for s in specs] == [r.type for r in refs]
        assert [list(s.shape) for s in specs] == [r.shape for r in refs]
        assert all(isinstance(s, fastort.IOSpec) and s.is_tensor for s in specs)
    x, n = engine.inputs
    assert x == fastort.IOSpec("x", "tensor(float)", np.dtype(np.float32), ("batch", None, 3))
    assert n.shape == (2, "k") and n.dtype == np.int64
    assert engine.outputs[1].dtype == np.float64
    assert "x: float32[batch, ?, 3]" in repr(engine)


# -- zero copy ------------------------------------------------------------------


def test_output_is_onnxruntime_buffer_not_a_copy(tiny_model, tiny_engine, reference):
    x = np.ones((8192, 4), np.float32)  # 96 KB of output
    for _ in range(3):
        y = tiny_engine.run({"x": x})["y"]
        assert not y.flags.owndata  # numpy did not allocate it ...
        assert type(y.base).__name__ == "PyCapsule"  # ... it is onnxruntime's value, held by a capsule
        assert y.flags.writeable and y.flags.c_contiguous
        np.testing.assert_array_equal(y, reference(tiny_model, {"x": x})["y"])
        y[:] = 7  # the memory is the caller's to use
        assert (y == 7).all()
    # the buffer outlives the engine
    engine = fastort.Engine(tiny_model)
    y = engine.run({"x": x})["y"]
    engine.close()
    del engine
    np.testing.assert_array_equal(y, reference(tiny_model, {"x": x})["y"])


def test_input_is_read_in_place():
    """A 64 MB C-contiguous input allocates nothing of its size; a non-contiguous
    one (documented: converted once) allocates one copy."""
    engine = fastort.Engine(models.reduce_sum())
    x = np.ones((4096, 4096), np.float32)  # 64 MB
    strided = np.ones((4096, 8192), np.float32)[:, ::2]  # the same shape, not contiguous
    engine.run({"x": x[:2]})  # warm-up
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        assert engine.run({"x": x})["s"] == x.size
        _, peak_contiguous = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        assert engine.run({"x": strided})["s"] == x.size
        _, peak_strided = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_contiguous < 1 << 20, peak_contiguous
    assert peak_strided >= x.nbytes, peak_strided  # numpy's allocations are traced: the test can fail


def test_gil_is_released_while_running():
    """A second Python thread keeps running while onnxruntime computes."""
    engine = fastort.Engine(models.slow(256, 64), intra_op_threads=1)
    x = np.ones((256, 256), np.float32)
    engine.run({"x": x})  # warm-up
    ticks = 0
    running = threading.Event()
    stop = threading.Event()

    def count() -> None:
        nonlocal ticks
        running.set()
        while not stop.is_set():
            ticks += 1
            time.sleep(0)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    t = threading.Thread(target=count)
    t.start()
    running.wait()
    try:
        runs, during = 0, 0
        deadline = time.perf_counter() + 2.0  # ends as soon as the counter got far enough
        while time.perf_counter() < deadline and during < 1000:
            before = ticks
            engine.run({"x": x})
            during += ticks - before
            runs += 1
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(old)
    # with the GIL held through a run the counter could move only at its edges
    assert during >= 1000 or during > 50 * runs, (during, runs)


# -- out= -----------------------------------------------------------------------


def test_out_writes_into_caller_buffer(tiny_model, tiny_engine, reference, rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    want = reference(tiny_model, {"x": x})["y"]
    buf = np.full((3, 3), -1, np.float32)
    for _ in range(2):
        result = tiny_engine.run({"x": x}, out={"y": buf})
        assert result["y"] is buf
        np.testing.assert_array_equal(buf, want)
        buf[:] = -1


def test_out_for_some_outputs(reference, rng):
    model = models.add_mul()
    engine = fastort.Engine(model)
    a, b = rng.standard_normal(6).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    want = reference(model, {"a": a, "b": b})
    p = np.zeros(6, np.float32)
    got = engine.run({"a": a, "b": b}, out={"p": p})
    assert got["p"] is p and list(got) == ["s", "p"]
    np.testing.assert_array_equal(p, want["p"])
    np.testing.assert_array_equal(got["s"], want["s"])
    s = np.zeros(6, np.float32)
    got = engine.run({"a": a, "b": b}, outputs=["s"], out={"s": s})
    assert list(got) == ["s"] and got["s"] is s
    np.testing.assert_array_equal(s, want["s"])
    s[:] = 0
    got = engine.run([a, b], outputs=["p", "s"], out={"s": s})
    assert list(got) == ["p", "s"] and got["s"] is s and got["p"] is not p
    np.testing.assert_array_equal(got["p"], want["p"])
    np.testing.assert_array_equal(s, want["s"])


# -- model sources and options ----------------------------------------------------


def test_model_sources(tmp_path: pathlib.Path, tiny_model, reference):
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_model, str(path))
    data = tiny_model.SerializeToString()
    x = np.ones((2, 4), np.float32)
    want = reference(tiny_model, {"x": x})["y"]
    for source in (str(path), path, data, bytearray(data), memoryview(data), tiny_model):
        with fastort.Engine(source) as engine:
            np.testing.assert_array_equal(engine.run({"x": x})["y"], want)


def test_external_data_loads_from_path(tmp_path: pathlib.Path, ort_sess, rng):
    model = models.mlp((8, 512, 4))
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    assert (tmp_path / "weights.bin").stat().st_size >= (8 * 512 + 512 * 4) * 4
    assert path.stat().st_size < 8 * 512 * 4  # the weights are not inside the model file
    x = rng.standard_normal((3, 8)).astype(np.float32)
    want = ort_sess(path).run(None, {"x": x})[0]
    for source in (path, str(path), onnx.load(str(path))):  # the last has its weights in memory
        np.testing.assert_array_equal(fastort.Engine(source).run({"x": x})["y"], want)
    with fastort.Engine(path, replicas=2) as engine:  # weights shared by the replicas
        np.testing.assert_array_equal(engine.run({"x": x})["y"], want)


def test_external_data_in_a_subfolder_and_unicode_path(tmp_path: pathlib.Path, ort_sess, rng):
    folder = tmp_path / "modèle ü"
    (folder / "data").mkdir(parents=True)
    path = folder / "réseau.onnx"
    onnx.save(models.mlp((8, 256, 4)), str(path), save_as_external_data=True, location="data/weights.bin",
              size_threshold=0)
    x = rng.standard_normal((2, 8)).astype(np.float32)
    want = ort_sess(path).run(None, {"x": x})[0]
    np.testing.assert_array_equal(fastort.Engine(path).run({"x": x})["y"], want)


def test_options_are_accepted(tiny_model, reference):
    x = np.ones((2, 4), np.float32)
    want = reference(tiny_model, {"x": x})["y"]
    for kwargs in (
        dict(providers=["CPUExecutionProvider"], intra_op_threads=1, inter_op_threads=1,
             graph_optimization="basic", execution_mode="parallel", log_level="error",
             session_config={"session.intra_op.allow_spinning": "0"}),
        dict(providers="cpu", intra_op_threads=2, inter_op_threads=0, graph_optimization="disable",
             execution_mode="sequential", log_level="fatal", session_config={"session.use_env_allocators": 1}),
        dict(intra_op_threads=None, graph_optimization="extended", log_level="warning"),
        dict(graph_optimization="layout", log_level=3, execution_mode=0),
        dict(graph_optimization=99),
    ):
        with fastort.Engine(tiny_model, **kwargs) as engine:
            np.testing.assert_array_equal(engine.run({"x": x})["y"], want, err_msg=str(kwargs))
            assert engine.providers == ("CPUExecutionProvider",)


@pytest.mark.parametrize("provider", fastort.runtime_info()["providers"])
def test_every_available_provider_can_be_used(provider, tiny_model, reference):
    """Each provider the runtime lists is registered under the name onnxruntime
    reports (no fallback: strict_providers), and gives onnxruntime's results."""
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    with fastort.Engine(tiny_model, providers=[provider], strict_providers=True) as engine:
        assert engine.providers[0] == provider and engine.providers[-1] == "CPUExecutionProvider"
        np.testing.assert_allclose(engine.run({"x": x})["y"], reference(tiny_model, {"x": x})["y"], rtol=1e-5)


def test_unavailable_provider_falls_back_to_cpu(tiny_model, reference):
    x = np.ones((2, 4), np.float32)
    missing = "NoSuchExecutionProvider"
    assert missing not in fastort.runtime_info()["providers"]
    with pytest.warns(RuntimeWarning, match=r"'NoSuchExecutionProvider' is not available .* using the next provider"):
        engine = fastort.Engine(tiny_model, providers=[missing, "cpu"])
    assert engine.providers == ("CPUExecutionProvider",)
    np.testing.assert_array_equal(engine.run({"x": x})["y"], reference(tiny_model, {"x": x})["y"])


def test_close_and_context_manager(tiny_model):
    with fastort.Engine(tiny_model) as engine:
        assert not engine.closed
        engine.run({"x": np.ones((1, 4), np.float32)})
    assert engine.closed
    engine.close()  # idempotent
    assert "closed" in repr(engine)


# -- threads --------------------------------------------------------------------


def test_concurrent_runs_from_threads(tiny_model, reference):
    engine = fastort.Engine(tiny_model, intra_op_threads=1)
    w = models.tiny_weights()
    errors = []
    barrier = threading.Barrier(8)

    def work(k: int) -> None:
        try:
            barrier.wait()
            for i in range(200):
                rows = 1 + (k + i) % 3  # shapes change between calls and threads
                x = np.full((rows, 4), k * 1000 + i, np.float32) * np.arange(1, 5, dtype=np.float32)
                np.testing.assert_allclose(engine.run({"x": x})["y"], np.maximum(x @ w, 0), rtol=1e-5)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(engine.run({"x": x})["y"], reference(tiny_model, {"x": x})["y"])


# -- Engine.run's native method ----------------------------------------------------------


def test_run_is_a_native_method_with_the_python_methods_arguments(tiny_model, reference, rng):
    # Engine.run is installed as a native method (it skips the Python frame on the
    # numpy path); every other call goes to the method written in Python.
    x = rng.standard_normal((2, 4)).astype(np.float32)
    want = reference(tiny_model, {"x": x})["y"]
    assert "Run the model once and wait for the result" in (fastort.Engine.run.__doc__ or "")
    np.testing.assert_allclose(fastort.Engine(tiny_model).run({"x": x})["y"], want, rtol=1e-6)  # a temporary engine
    engine = fastort.Engine(tiny_model)
    for kwargs in ({}, {"outputs": ["y"]}, {"timeout": None}, {"timeout": 1}, {"priority": 0},
                   {"output_format": "numpy"}, {"out": None}):
        np.testing.assert_allclose(engine.run({"x": x}, **kwargs)["y"], want, rtol=1e-6)
    out = np.empty((2, 3), np.float32)
    assert engine.run([x], out={"y": out})["y"] is out
    assert isinstance(engine.run({"x": x}, output_format="dlpack")["y"], fastort.Tensor)
    with pytest.raises(fastort.errors.ConfigError, match="output_format must be one of"):
        engine.run({"x": x}, output_format="bogus")
    with pytest.raises(TypeError):
        engine.run({"x": x}, timeout="soon")
    with pytest.raises(TypeError):
        engine.run({"x": x}, ["y"])  # the keywords stay keyword-only
    with pytest.raises(fastort.errors.InvalidInputError, match="'x'"):
        engine.run({"x": x.astype(np.float64)})
    call = engine.run
    engine.close()
    for run in (engine.run, call):
        with pytest.raises(fastort.errors.EngineClosedError, match="is closed"):
            run({"x": x})

    class Logged(fastort.Engine):
        calls = 0

        def run(self, inputs, **kwargs):  # type: ignore[override]
            Logged.calls += 1
            return super().run(inputs, **kwargs)

    logged = Logged(tiny_model)
    np.testing.assert_allclose(logged.run({"x": x})["y"], want, rtol=1e-6)
    assert Logged.calls == 1
    logged.close()
