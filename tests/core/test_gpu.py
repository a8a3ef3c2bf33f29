"""The CUDA execution provider and device IO (issue #5).

Everything that does not need a GPU runs everywhere, for real: provider names and
options, the fallback to CPU and its reasons, DLPack inputs from host producers
(torch CPU tensors, numpy) bound without copies, fastort.Tensor outputs exported
with DLPack, and the errors for device tensors a CPU engine cannot take.
Tests that need a CUDA device skip, saying why, where there is none.
"""

from __future__ import annotations

import ctypes
import gc
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import fastort
from fastort import _core
from fastort.errors import ConfigError, InvalidInputError, ModelLoadError

from models import mlp, tiny, tiny_weights

INFO = fastort.runtime_info()
CUDA_STATUS = INFO["provider_status"]["CUDAExecutionProvider"]
HAS_CUDA = bool(CUDA_STATUS["available"])
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason=f"no usable CUDA provider: {CUDA_STATUS['reason']}")

try:
    import torch
except ImportError:  # pragma: no cover - torch is optional
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed (pip install torch==2.13.0)")
needs_torch_cuda = pytest.mark.skipif(
    torch is None or not torch.cuda.is_available() or not HAS_CUDA,
    reason="needs torch with CUDA and a usable CUDA provider"
    + ("" if HAS_CUDA else f" ({CUDA_STATUS['reason']})"),
)


def expected(x: np.ndarray) -> np.ndarray:
    return np.maximum(x @ tiny_weights(), 0)


# ------------------------------------------------------------ providers ----


def test_runtime_info_says_what_is_available_and_why_not():
    status = INFO["provider_status"]
    assert status["CPUExecutionProvider"] == {"available": True, "reason": ""}
    for name, s in status.items():
        assert s["available"] == (s["reason"] == ""), name
    cuda = status["CUDAExecutionProvider"]
    if "CUDAExecutionProvider" not in INFO["providers"]:
        assert "CPU-only build" in cuda["reason"] or "overwrite each other" in cuda["reason"]
        assert "onnxruntime" in cuda["reason"] and INFO["version"] in cuda["reason"]


@pytest.mark.parametrize(
    "providers",
    [
        [("cuda", {"device_id": 0, "gpu_mem_limit": 1 << 30, "arena_extend_strategy": "kSameAsRequested",
                   "cudnn_conv_algo_search": "HEURISTIC", "enable_cuda_graph": False, "use_tf32": True}), "cpu"],
        [("CUDAExecutionProvider", {"arena_extend_strategy": "next_power_of_two",
                                    "cudnn_conv_algo_search": "exhaustive"}), ("cpu", {})],
        ["cuda", "CPUExecutionProvider"],
        ("cuda", {"device_id": 0}),
    ],
)
def test_cuda_providers_with_options_run_or_fall_back_with_a_reason(providers):
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine = fastort.Engine(tiny(), providers=providers)
    with engine:
        np.testing.assert_allclose(engine.run(x)["y"], expected(x), rtol=1e-5, atol=1e-6)
        if HAS_CUDA:
            assert engine.providers[0] == "CUDAExecutionProvider" and engine.device == "cuda:0"
        else:
            assert engine.providers == ("CPUExecutionProvider",) and engine.device == "cpu"
            messages = " | ".join(str(w.message) for w in caught)
            assert "CUDAExecutionProvider" in messages and CUDA_STATUS["reason"].split(":")[0] in messages


@pytest.mark.skipif(HAS_CUDA, reason="checks the strict failure where CUDA is not usable; CUDA works here")
def test_strict_providers_fail_with_the_reason():
    with pytest.raises((ConfigError, ModelLoadError)) as info:
        fastort.Engine(tiny(), providers=[("cuda", {"device_id": 0}), "cpu"], strict_providers=True)
    assert "CUDAExecutionProvider" in str(info.value)
    if "CUDAExecutionProvider" not in INFO["providers"]:
        assert "onnxruntime-gpu[cuda,cudnn]" in str(info.value)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"device": 0}, r"unknown CUDA option 'device': fastort takes device_id, gpu_mem_limit"),
        ({"device_id": -1}, r"'device_id' must be an int >= 0, got -1"),
        ({"device_id": "0"}, r"'device_id' must be an int >= 0, got '0'"),
        ({"gpu_mem_limit": 0}, r"'gpu_mem_limit' must be an int >= 1"),
        ({"arena_extend_strategy": "grow"}, r"'arena_extend_strategy' must be one of kNextPowerOfTwo, kSameAsRequested"),
        ({"cudnn_conv_algo_search": "fast"}, r"must be one of DEFAULT, EXHAUSTIVE, HEURISTIC, got 'fast'"),
        ({"enable_cuda_graph": "yes"}, r"'enable_cuda_graph' must be True or False"),
        ({"use_tf32": 2}, r"'use_tf32' must be True or False, got 2"),
        ([("device_id", 0)], r"options of CUDAExecutionProvider must be a dict"),
    ],
)
def test_bad_cuda_options_are_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        fastort.Engine(tiny(), providers=[("cuda", options), "cpu"])


def test_output_device_and_format_are_checked():
    with pytest.raises(ConfigError, match=r"output_device must be one of cpu, cuda, got 'gpu'"):
        fastort.Engine(tiny(), output_device="gpu")
    with pytest.raises(ConfigError, match=r"output_device='cuda' needs the CUDA provider"):
        fastort.Engine(tiny(), providers=["cpu"], output_device="cuda")
    x = np.ones((1, 4), np.float32)
    with fastort.Engine(tiny()) as engine:
        with pytest.raises(ConfigError, match=r"output_format must be one of numpy, dlpack, torch, cupy, got 'jax'"):
            engine.run(x, output_format="jax")
        with pytest.raises(ConfigError, match=r"out= buffers are numpy arrays"):
            engine.run(x, out={"y": np.empty((1, 3), np.float32)}, output_format="dlpack")


# The real fallback of a CUDA-enabled onnxruntime whose CUDA libraries are missing:
# the libonnxruntime.so of an onnxruntime-gpu wheel, unpacked by scripts/setup.sh
# (scripts/fetch_ort_gpu.sh) into .cache/onnxruntime-gpu, or the one named by
# FASTORT_TEST_GPU_ORT_LIBRARY.
def _gpu_runtime_library() -> str:
    named = os.environ.get("FASTORT_TEST_GPU_ORT_LIBRARY", "")
    if named:
        return named
    import glob

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    found = sorted(glob.glob(os.path.join(root, ".cache", "onnxruntime-gpu", "libonnxruntime.so.*")))
    return found[-1] if found else ""


GPU_LIB = _gpu_runtime_library()


@pytest.mark.skipif(not GPU_LIB, reason="no onnxruntime-gpu library: run scripts/fetch_ort_gpu.sh "
                    "(scripts/setup.sh does) or set FASTORT_TEST_GPU_ORT_LIBRARY")
def test_gpu_runtime_without_cuda_libraries_falls_back_with_the_loader_reason(tmp_path):
    model = tmp_path / "tiny.onnx"
    model.write_bytes(tiny().SerializeToString())
    script = textwrap.dedent(f"""
        import warnings, numpy as np, fastort
        info = fastort.runtime_info()
        assert "CUDAExecutionProvider" in info["providers"], info["providers"]
        status = info["provider_status"]["CUDAExecutionProvider"]
        if status["available"]:
            print("CUDA-AVAILABLE"); raise SystemExit(0)
        print("REASON", status["reason"])
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            e = fastort.Engine({str(model)!r}, providers=[("cuda", {{"device_id": 0}}), "cpu"])
        print("WARNING", " | ".join(str(m.message) for m in w))
        print("DEVICE", e.device, e.providers)
        print("RESULT", e.run(np.ones((2, 4), np.float32))["y"].shape)
        try:
            fastort.Engine({str(model)!r}, providers=["cuda"], strict_providers=True)
        except fastort.ModelLoadError as err:
            print("STRICT", err)
    """)
    env = dict(os.environ, FASTORT_ORT_LIBRARY=GPU_LIB)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    if "CUDA-AVAILABLE" in out:
        pytest.skip("CUDA works with this runtime: there is no fallback to see")
    assert "REASON the CUDA provider's libraries" in out and "cannot open shared object file" in out
    assert "WARNING fastort: CUDAExecutionProvider could not be used (the CUDA provider's libraries" in out
    assert "running on CPU" in out
    assert "DEVICE cpu ('CPUExecutionProvider',)" in out and "RESULT (2, 3)" in out
    assert "STRICT CUDAExecutionProvider could not be used (strict_providers)" in out


# ------------------------------------------------------- host DLPack in ----


@needs_torch
def test_torch_cpu_tensors_are_bound_without_a_copy():
    t = torch.randn(5, 4)
    address, device, shape = _core._bound_view(t)
    assert address == t.data_ptr() and device == "cpu" and shape == [5, 4]
    with fastort.Engine(tiny()) as engine:
        np.testing.assert_allclose(engine.run(t)["y"], expected(t.numpy()), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(engine.run({"x": t})["y"], expected(t.numpy()), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(engine.run([t])["y"], expected(t.numpy()), rtol=1e-5, atol=1e-6)


@needs_torch
def test_non_contiguous_torch_tensors_are_copied_once_and_give_the_right_result():
    base = torch.randn(4, 6)
    t = base[:, ::2].t().t()[:, :3]  # strided view
    t = torch.randn(4, 5).t()  # (5, 4), column-major
    assert not t.is_contiguous()
    address, _, _ = _core._bound_view(t)
    assert address != t.data_ptr()
    with fastort.Engine(tiny()) as engine:
        np.testing.assert_allclose(engine.run(t)["y"], expected(t.contiguous().numpy()), rtol=1e-5, atol=1e-6)


def test_numpy_dlpack_producers_are_bound_without_a_copy():
    class Producer:  # only the DLPack protocol, as a foreign library would offer
        def __init__(self, a):
            self.a = a

        def __dlpack__(self, **kwargs):
            return self.a.__dlpack__(**kwargs)

        def __dlpack_device__(self):
            return self.a.__dlpack_device__()

    a = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    address, device, _ = _core._bound_view(Producer(a))
    assert address == a.ctypes.data and device == "cpu"
    with fastort.Engine(tiny()) as engine:
        np.testing.assert_allclose(engine.run(Producer(a))["y"], expected(a), rtol=1e-5, atol=1e-6)


@needs_torch
def test_wrong_dtype_from_torch_names_the_input():
    with fastort.Engine(tiny()) as engine:
        with pytest.raises(InvalidInputError, match=r"input 'x': expected dtype float32, got float64"):
            engine.run(torch.zeros(2, 4, dtype=torch.float64))
        with pytest.raises(InvalidInputError, match=r"input 'x'.*cannot be read through DLPack"):
            engine.run(torch.zeros(2, 4, requires_grad=True))


# ------------------------------------------------------------ outputs ----


def test_dlpack_outputs_are_zero_copy_on_the_cpu():
    x = np.random.default_rng(2).standard_normal((6, 4)).astype(np.float32)
    with fastort.Engine(tiny()) as engine:
        out = engine.run(x, output_format="dlpack")["y"]
    assert isinstance(out, fastort.Tensor)
    assert out.shape == (6, 3) and out.dtype == np.float32 and out.device == "cpu" and out.nbytes == 72
    assert out.__dlpack_device__() == (1, 0)
    assert not hasattr(out, "__cuda_array_interface__")
    a = np.from_dlpack(out)
    assert a.ctypes.data == out.data_ptr
    np.testing.assert_allclose(a, expected(x), rtol=1e-5, atol=1e-6)
    host = out.numpy()
    assert host.ctypes.data == out.data_ptr and np.shares_memory(host, a)
    np.testing.assert_array_equal(np.asarray(out), a)
    assert "fastort.Tensor shape=(6, 3) dtype=float32 device=cpu" in repr(out)
    with pytest.raises(BufferError, match="cannot be exported to another device"):
        out.__dlpack__(dl_device=(2, 0))
    with pytest.raises(BufferError, match="copy=True"):
        out.__dlpack__(copy=True)


def test_dlpack_outputs_outlive_the_engine_and_the_tensor_object():
    x = np.ones((2, 4), np.float32)
    engine = fastort.Engine(tiny())
    out = engine.run(x, output_format="dlpack")["y"]
    engine.close()
    del engine
    a = np.from_dlpack(out)
    del out
    gc.collect()
    np.testing.assert_allclose(a, expected(x), rtol=1e-5, atol=1e-6)
    # an export that nobody consumes frees itself
    with fastort.Engine(tiny()) as engine:
        capsule = engine.run(x, output_format="dlpack")["y"].__dlpack__()
    del capsule
    gc.collect()


@needs_torch
def test_torch_outputs_are_zero_copy_on_the_cpu():
    x = torch.randn(7, 4)
    with fastort.Engine(tiny(), max_batch_size=8) as engine:  # tensor formats run unbatched
        out = engine.run(x, output_format="dlpack")["y"]
        y = engine.run(x, output_format="torch")["y"]
    t = torch.from_dlpack(out)
    assert t.data_ptr() == out.data_ptr
    assert isinstance(y, torch.Tensor) and y.shape == (7, 3) and y.device.type == "cpu"
    np.testing.assert_allclose(y.numpy(), expected(x.numpy()), rtol=1e-5, atol=1e-6)


def test_output_format_cupy_needs_cupy():
    try:
        import cupy  # noqa: F401
    except ImportError:
        with fastort.Engine(tiny()) as engine:
            with pytest.raises(ConfigError, match=r"output_format='cupy' needs the cupy package"):
                engine.run(np.ones((1, 4), np.float32), output_format="cupy")
    else:  # pragma: no cover - machines with CuPy
        pytest.skip("cupy is installed: covered by the GPU tests")


def test_dlpack_outputs_of_several_outputs_and_a_selection():
    x = np.random.default_rng(3).standard_normal((2, 8)).astype(np.float32)
    with fastort.Engine(mlp()) as engine:
        want = engine.run(x)
        got = engine.run(x, output_format="dlpack", outputs=list(want))
    assert list(got) == list(want)
    for name in want:
        np.testing.assert_array_equal(np.from_dlpack(got[name]), want[name])


# ------------------------------------------------- device tensors, no GPU ----


class FakeCudaArray:
    """A __cuda_array_interface__ producer over a pointer that is never read:
    an engine must refuse it before touching its memory."""

    def __init__(self, shape=(2, 4), typestr="<f4", stream=None):
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "data": (0xDEAD0000, False),
                                         "strides": None, "version": 3, "stream": stream}


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32), ("dtype", _DLDataType),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("strides", ctypes.POINTER(ctypes.c_int64)),
                ("byte_offset", ctypes.c_uint64)]


class _DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p)]


_capsule_new = ctypes.pythonapi.PyCapsule_New
_capsule_new.restype = ctypes.py_object
_capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
_DLTENSOR_NAME = b"dltensor"  # module-level: the capsule keeps a pointer to these bytes


class FakeCudaDLPack:
    """A DLPack producer that says its (never read) buffer is on cuda:<device_id>."""

    def __init__(self, device_id=0, shape=(2, 4), strides=None, code=2, bits=32, lanes=1, device_type=2):
        self.shape = (ctypes.c_int64 * len(shape))(*shape)
        self.strides = (ctypes.c_int64 * len(shape))(*strides) if strides else None
        self.device = (device_type, device_id)
        self.managed = _DLManagedTensor()
        t = self.managed.dl_tensor
        t.data = 0xDEAD0000
        t.device = _DLDevice(device_type, device_id)
        t.ndim = len(shape)
        t.dtype = _DLDataType(code, bits, lanes)
        t.shape = self.shape
        t.strides = self.strides
        t.byte_offset = 0

    def __dlpack_device__(self):
        return self.device

    def __dlpack__(self, **kwargs):
        return _capsule_new(ctypes.addressof(self.managed), _DLTENSOR_NAME, None)


@pytest.mark.parametrize("make", [FakeCudaArray, FakeCudaDLPack], ids=["cuda_array_interface", "dlpack"])
def test_a_cpu_engine_refuses_cuda_tensors_with_a_clear_error(make):
    with fastort.Engine(tiny()) as engine:
        for inputs in (make(), {"x": make()}, [make()]):
            with pytest.raises(InvalidInputError, match=r"input 'x' is on cuda(:0)?, but this engine runs on the CPU "
                                                        r"\(CPUExecutionProvider\): pass host data"):
                engine.run(inputs)
        with pytest.raises(InvalidInputError, match=r"runs on the CPU"):
            engine.run(make(), output_format="dlpack")
        # the engine still works
        np.testing.assert_allclose(engine.run(np.ones((1, 4), np.float32))["y"], expected(np.ones((1, 4), np.float32)),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(HAS_CUDA, reason="a CUDA runtime is loaded here: the producer's stream would be waited on")
def test_a_cpu_engine_refuses_a_cuda_array_with_a_stream_without_touching_it():
    with fastort.Engine(tiny()) as engine:
        with pytest.raises(InvalidInputError, match=r"input 'x' is on cuda, but this engine runs on the CPU"):
            engine.run(FakeCudaArray(stream=12345))
        with pytest.raises(InvalidInputError, match=r"'stream' must be an int or None"):
            engine.run(FakeCudaArray(stream="default"))


def test_a_batching_engine_refuses_cuda_tensors_clearly():
    with fastort.Engine(tiny(), max_batch_size=4) as engine:
        with pytest.raises(InvalidInputError, match=r"input 'x' is on cuda:1, but this engine runs on the CPU"):
            engine.run(FakeCudaDLPack(device_id=1))
        with pytest.raises(InvalidInputError, match=r"input 'x' is on cuda:0: the request queue takes host arrays"):
            engine.submit(FakeCudaDLPack())


def test_device_tensor_layouts_onnxruntime_cannot_take_are_refused():
    with fastort.Engine(tiny()) as engine:
        with pytest.raises(InvalidInputError, match=r"strides \(1, 2\) elements\) is not C-contiguous"):
            engine.run(FakeCudaDLPack(strides=(1, 2)))
        with pytest.raises(InvalidInputError, match=r"vector dtypes \(DLPack lanes 4\)"):
            engine.run(FakeCudaDLPack(lanes=4))
        with pytest.raises(InvalidInputError, match=r"DLPack dtype \(code 2, 8 bits\) is not supported"):
            engine.run(FakeCudaDLPack(bits=8))
        with pytest.raises(InvalidInputError, match=r"is on a rocm:0 device; fastort takes host \(CPU\) and CUDA"):
            engine.run(FakeCudaDLPack(device_type=10))
        with pytest.raises(InvalidInputError, match=r"expected dtype float32, got int64"):
            engine.run(FakeCudaDLPack(code=0, bits=64))
        with pytest.raises(InvalidInputError, match=r"expected dtype float32, got float64"):
            engine.run(FakeCudaArray(typestr="<f8"))
        with pytest.raises(InvalidInputError, match=r"dim 1 must be 4"):
            engine.run(FakeCudaArray(shape=(2, 5)))


def test_a_broken_dlpack_producer_is_an_input_error():
    class Broken:
        def __dlpack_device__(self):
            raise RuntimeError("device query failed")

    class NotACapsule:
        def __dlpack_device__(self):
            return (2, 0)

        def __dlpack__(self, **kwargs):
            return "nope"

    class BadDevice:
        def __dlpack_device__(self):
            return 2

    class BadInterface:
        def __init__(self, cai):
            self.__cuda_array_interface__ = cai

    with fastort.Engine(tiny()) as engine:
        with pytest.raises(InvalidInputError, match=r"__dlpack_device__ failed: device query failed"):
            engine.run(Broken())
        with pytest.raises(InvalidInputError, match=r"__dlpack_device__ must return \(device_type, device_id\), got 2"):
            engine.run(BadDevice())
        with pytest.raises(InvalidInputError, match=r"unreadable __cuda_array_interface__"):
            engine.run(BadInterface({"shape": 3, "typestr": "<f4", "data": (1, False), "version": 3}))
        with pytest.raises(InvalidInputError, match=r"unreadable __cuda_array_interface__: .*KeyError|unreadable"):
            engine.run(BadInterface({"typestr": "<f4", "data": (1, False), "version": 3}))
        with pytest.raises(InvalidInputError, match=r"masked __cuda_array_interface__ arrays are not supported"):
            engine.run(BadInterface({"shape": (2, 4), "typestr": "<f4", "data": (1, False), "version": 3,
                                     "mask": object()}))
        with pytest.raises(InvalidInputError, match=r"did not return a DLPack 'dltensor' capsule"):
            engine.run(NotACapsule())


# ------------------------------------------------------------- on a GPU ----


@needs_torch_cuda
def test_cuda_in_cuda_out_with_torch():  # pragma: no cover - GPU machines
    x = torch.randn(16, 4, device="cuda")
    with fastort.Engine(tiny(), providers=["cuda", "cpu"], output_device="cuda", strict_providers=True) as engine:
        assert engine.device == "cuda:0" and engine.output_device == "cuda"
        assert _core._bound_view(x)[:2] == (x.data_ptr(), "cuda:0")
        out = engine.run(x)["y"]
        assert isinstance(out, fastort.Tensor) and out.device == "cuda:0"
        cai = out.__cuda_array_interface__
        assert cai["shape"] == (16, 3) and cai["typestr"] == "<f4" and cai["data"][0] == out.data_ptr
        y = torch.from_dlpack(out)
        assert y.device.type == "cuda" and y.data_ptr() == out.data_ptr
        want = expected(x.cpu().numpy())
        np.testing.assert_allclose(y.cpu().numpy(), want, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(out.numpy(), want, rtol=1e-4, atol=1e-5)
        t = engine.run(x, output_format="torch")["y"]
        assert t.is_cuda
        np.testing.assert_allclose(engine.run(x, output_format="numpy")["y"], want, rtol=1e-4, atol=1e-5)
        # host inputs on a CUDA engine
        np.testing.assert_allclose(engine.run(x.cpu().numpy(), output_format="numpy")["y"], want, rtol=1e-4, atol=1e-5)


@needs_torch_cuda
def test_cuda_engine_errors_for_other_devices_and_cpu_engine_for_cuda():  # pragma: no cover - GPU machines
    x = torch.randn(2, 4, device="cuda")
    with fastort.Engine(tiny()) as cpu_engine:
        with pytest.raises(InvalidInputError, match=r"input 'x' is on cuda:0, but this engine runs on the CPU"):
            cpu_engine.run(x)
    if torch.cuda.device_count() < 2:
        pytest.skip("one GPU: cannot test a tensor on another device")
    with fastort.Engine(tiny(), providers=[("cuda", {"device_id": 0})], strict_providers=True) as engine:
        with pytest.raises(InvalidInputError, match=r"is on cuda:1, but this engine runs on cuda:0"):
            engine.run(x.to("cuda:1"))


@needs_torch_cuda
def test_gpu_replicas_and_batching():  # pragma: no cover - GPU machines
    import concurrent.futures

    xs = [np.random.default_rng(i).standard_normal((1, 4)).astype(np.float32) for i in range(64)]
    with fastort.Engine(tiny(), providers=["cuda"], strict_providers=True, replicas=2, max_batch_size=16) as engine:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            outs = list(pool.map(lambda x: engine.run(x)["y"], xs))
        for x, y in zip(xs, outs):
            np.testing.assert_allclose(y, expected(x), rtol=1e-4, atol=1e-5)
        # device inputs bypass the batcher and still run
        x = torch.from_numpy(xs[0]).cuda()
        np.testing.assert_allclose(engine.run(x)["y"], expected(xs[0]), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(HAS_CUDA, reason="checks the fallback of output_device='cuda' where CUDA is not usable")
def test_output_device_cuda_falls_back_to_host_outputs_with_a_warning():
    x = np.random.default_rng(4).standard_normal((2, 4)).astype(np.float32)
    with pytest.warns(RuntimeWarning) as caught:
        engine = fastort.Engine(tiny(), providers=["cuda", "cpu"], output_device="cuda", pinned_staging=False)
    assert any("outputs stay in host memory" in str(w.message) for w in caught)
    with engine:
        assert engine.device == "cpu" and engine.output_device == "cpu"
        y = engine.run(x)["y"]
        assert isinstance(y, np.ndarray)
        np.testing.assert_allclose(y, expected(x), rtol=1e-5, atol=1e-6)
        t = engine.run(x, output_format="dlpack")["y"]
        assert isinstance(t, fastort.Tensor) and t.device == "cpu"


def test_fastort_info_shows_each_providers_status(capsys):
    from fastort.cli import main

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "  CPUExecutionProvider: available" in out
    if HAS_CUDA:
        assert "  CUDAExecutionProvider: available" in out
    else:
        assert f"  CUDAExecutionProvider: unavailable: {CUDA_STATUS['reason']}" in out
