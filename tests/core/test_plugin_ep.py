"""Plugin execution providers: the real onnxruntime-ep-openvino package, device
discovery, precision, fallback and every error; and the C API floor on an older
onnxruntime library (scripts/fetch_ort_old.sh).

Where onnxruntime itself finds no OpenVINO device (e.g. AMD CPUs), the tests
that need one check the clear error instead and skip the rest with the reason.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import pathlib
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fastort
from fastort.runtime import plugin_eps
from fastort.errors import ConfigError, EpLibraryError, ProviderUnavailableError

import ep_models

OV = "OpenVINOExecutionProvider"
ROOT = pathlib.Path(__file__).resolve().parents[2]  # the checkout
F32_TOL = dict(rtol=1e-4, atol=1e-4)  # OpenVINO f32 vs the CPU EP: other kernels, other summation order

# scripts/sanitize.sh turns discovery off: OpenVINO dlopens its TBB with RTLD_DEEPBIND,
# which the sanitizer runtimes cannot load.
pytestmark = pytest.mark.skipif(os.environ.get(plugin_eps.DISCOVERY_ENV_VAR) == "0",
                                reason=f"{plugin_eps.DISCOVERY_ENV_VAR}=0: installed plugin EPs are not searched")


def _ov_reason() -> str:
    return plugin_eps.plugin_reason(OV)


@pytest.fixture(scope="module")
def ov() -> None:
    """Skips (with onnxruntime's reason) where OpenVINO cannot run here."""
    reason = _ov_reason()
    if "not installed" in reason:
        pytest.skip(f"onnxruntime-ep-openvino is not installed (pip install 'fastort[test]'): {reason}")
    if reason:
        # e.g. an AMD CPU: the clear error is test_no_device_is_a_clear_error's; the rest cannot run
        pytest.skip(f"no OpenVINO device on this machine: {reason}")


def _feeds(model, batch=4, seq=7, seed=0):
    rng = np.random.default_rng(seed)
    shape = {"cnn": (batch, 3, 32, 32), "mlp": (batch, 256), "transformer": (batch, seq, 64)}[model]
    return {"x": rng.standard_normal(shape).astype(np.float32)}


MODELS = {"cnn": ep_models.cnn, "mlp": ep_models.mlp, "transformer": ep_models.transformer}


# -- discovery ------------------------------------------------------------------


def test_runtime_info_reports_api_and_plugin_support():
    info = fastort.runtime_info()
    assert info["api_version_compiled"] >= 23
    assert 21 <= info["api_version"] <= info["api_version_compiled"]
    assert info["plugin_eps"] == {"available": True, "reason": ""}
    assert any(d["ep"] == "CPUExecutionProvider" for d in info["devices"])


def test_devices_list_the_cpu_ep_and_installed_plugins():
    found = fastort.devices()
    cpu = [d for d in found if d.ep_name == "CPUExecutionProvider"]
    assert cpu and cpu[0].device_type == "cpu" and cpu[0].library == ""
    libs = {lib.name: lib for lib in plugin_eps.plugin_libraries()}
    if "openvino" not in libs:
        pytest.skip("onnxruntime-ep-openvino is not installed")
    assert libs["openvino"].registered and libs["openvino"].source == "package onnxruntime_ep_openvino"
    ov_devices = [d for d in found if d.ep_name == OV]
    if not ov_devices:
        pytest.skip(f"no OpenVINO device here: {_ov_reason()}")
    d = ov_devices[0]
    assert d.library == "openvino" and d.vendor_id and d.ep_metadata["ov_device"] in ("CPU", "GPU", "NPU")
    assert d.label == f"{OV}({d.ep_metadata['ov_device']})"


def test_register_is_once_per_name(ov):
    lib = next(p for p in plugin_eps.plugin_libraries() if p.name == "openvino")
    again = fastort.register_ep_library("openvino", lib.path)  # same name, same path: nothing happens
    assert again.registered and again.path == lib.path
    with pytest.raises(EpLibraryError, match="already registered"):
        fastort.register_ep_library("openvino", str(ROOT / "other.so"))


def test_register_a_missing_library_names_the_path(tmp_path):
    missing = tmp_path / "libnope.so"
    with pytest.raises(EpLibraryError, match="libnope.so.*does not exist"):
        fastort.register_ep_library("nope", str(missing))


def test_register_a_non_library_gives_onnxruntimes_reason(tmp_path):
    bogus = tmp_path / "libbogus.so"
    bogus.write_bytes(b"not a shared library")
    with pytest.raises(EpLibraryError, match="cannot load plugin EP library 'bogus'"):
        fastort.register_ep_library("bogus", str(bogus))
    # a failed registration does not poison the name, and the process carries on
    assert fastort.Engine(ep_models.mlp()).run(_feeds("mlp"))["y"].shape == (4, 64)


def test_not_installed_plugin(recwarn):
    name = "NvTensorRTRTXExecutionProvider"
    with pytest.raises(ProviderUnavailableError, match="not installed.*pip install onnxruntime-ep-nv-tensorrt-rtx"):
        fastort.Engine(ep_models.mlp(), providers=[name, "cpu"], strict_providers=True)
    with pytest.warns(RuntimeWarning, match="not installed"):
        engine = fastort.Engine(ep_models.mlp(), providers=[name, "cpu"])
    assert engine.providers == ("CPUExecutionProvider",)


def test_no_device_is_a_clear_error():
    """An EP device type this machine lacks (or, on non-Intel CPUs, OpenVINO itself)."""
    reason = _ov_reason()
    if "not installed" in reason:
        pytest.skip("onnxruntime-ep-openvino is not installed")
    has = {d.ep_metadata.get("ov_device") for d in fastort.devices() if d.ep_name == OV}
    if reason:  # onnxruntime found no OpenVINO device here at all
        with pytest.raises(ProviderUnavailableError, match="no device"):
            fastort.Engine(ep_models.mlp(), providers=["openvino"], strict_providers=True)
        return
    if "NPU" in has:
        pytest.skip("this machine has an NPU: no missing device type to ask for")
    with pytest.raises(ProviderUnavailableError, match="no device of type 'NPU'.*it has: .*CPU"):
        fastort.Engine(ep_models.mlp(), providers=[("openvino", {"device_type": "NPU"})], strict_providers=True)
    with pytest.warns(RuntimeWarning, match="no device of type"):
        engine = fastort.Engine(ep_models.mlp(), providers=[("openvino", {"device_type": "NPU"}), "cpu"])
    assert engine.providers == ("CPUExecutionProvider",)


# -- running on OpenVINO ----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
def test_f32_equals_the_cpu_ep(ov, reference, name):
    model = MODELS[name]()
    engine = fastort.Engine(model, providers=["openvino", "cpu"])
    assert engine.providers[0] == OV and engine.precision[OV] == "f32"
    assert engine.replica_providers[0].startswith(f"{OV}(")
    for batch, seq in ((1, 5), (3, 9), (8, 16)):  # dynamic batch (and sequence) dims
        feeds = _feeds(name, batch, seq, seed=batch)
        np.testing.assert_allclose(engine.run(feeds)["y"], reference(model, feeds)["y"], **F32_TOL)


def test_reduced_precision_is_chosen_and_reported(ov, reference):
    model = ep_models.transformer()
    feeds = _feeds("transformer")
    want = reference(model, feeds)["y"]
    bf16 = fastort.Engine(model, providers=[("openvino", {"precision": "bf16"})])
    assert bf16.precision[OV] == "bf16"
    err = float(np.abs(bf16.run(feeds)["y"] - want).max())
    assert 1e-4 < err < 0.5, err  # measurably reduced, still the same function
    with pytest.warns(RuntimeWarning, match="own precision"):
        auto = fastort.Engine(model, providers=["openvino"], precision="auto")
    assert auto.precision[OV].startswith("auto (")
    with pytest.raises(ConfigError, match="precision must be one of"):
        fastort.Engine(model, providers=["openvino"], precision="int3")
    with pytest.raises(ConfigError, match="contradicts load_config"):
        fastort.Engine(model, providers=[("openvino", {"precision": "f32", "load_config": json.dumps(
            {"CPU": {"INFERENCE_PRECISION_HINT": "bf16"}})})])


def test_ep_options_pass_through(ov, reference):
    model = ep_models.mlp()
    feeds = _feeds("mlp")
    engine = fastort.Engine(model, providers=[("openvino", {"device_type": "CPU", "num_of_threads": 1,
                                                            "enable_qdq_optimizer": False})])
    np.testing.assert_allclose(engine.run(feeds)["y"], reference(model, feeds)["y"], **F32_TOL)


def test_replicas_batcher_map_and_run_async(ov, reference):
    model = ep_models.mlp()
    engine = fastort.Engine(model, providers=["openvino"], replicas=2, max_batch_size=8, max_delay_us=2000)
    assert len(engine.replica_providers) == 2 and all(p.startswith(OV) for p in engine.replica_providers)
    rows = [_feeds("mlp", 1, seed=i) for i in range(24)]
    want = [reference(model, r)["y"] for r in rows]
    futures = [engine.submit(r) for r in rows]
    for f, w in zip(futures, want):
        np.testing.assert_allclose(f.result(timeout=60)["y"], w, **F32_TOL)
    for got, w in zip(engine.map(rows), want):
        np.testing.assert_allclose(got["y"], w, **F32_TOL)

    async def many():
        return await asyncio.wait_for(asyncio.gather(*(engine.run_async(r) for r in rows[:8])), 60)

    for got, w in zip(asyncio.run(many()), want):
        np.testing.assert_allclose(got["y"], w, **F32_TOL)
    assert engine.stats()["batches"] < 24 + 24 + 8  # requests were batched
    engine.close()


def test_device_policy(ov, reference):
    model = ep_models.mlp()
    feeds = _feeds("mlp")
    engine = fastort.Engine(model, providers="auto", device_policy="prefer_cpu")
    # onnxruntime's choice, as it reports it per input; f32 handed to OpenVINO if it picked it
    assert engine.replica_providers[0]
    if OV in engine.providers:
        assert engine.precision[OV] == "f32"
    np.testing.assert_allclose(engine.run(feeds)["y"], reference(model, feeds)["y"], **F32_TOL)
    auto = fastort.Engine(model, providers="auto")  # max_performance
    np.testing.assert_allclose(auto.run(feeds)["y"], reference(model, feeds)["y"], **F32_TOL)
    with pytest.raises(ConfigError, match="device_policy must be one of"):
        fastort.Engine(model, providers="auto", device_policy="fastest")
    with pytest.raises(ConfigError, match="not both"):
        fastort.Engine(model, providers=["openvino"], device_policy="prefer_gpu")


def test_package_manifest_recommends_openvino(ov, tmp_path, reference):
    from fastort.prepare.package import package

    model = ep_models.mlp()
    path = tmp_path / "m.onnx"
    import onnx

    onnx.save(model, str(path))
    pkg = package(str(path), str(tmp_path / "pkg"), target="openvino")
    engine = fastort.Engine(pkg)
    assert engine.providers[0] == OV and engine.precision[OV] == "f32"
    feeds = _feeds("mlp")
    np.testing.assert_allclose(engine.run(feeds)["y"], reference(model, feeds)["y"], **F32_TOL)


# -- the C API floor ----------------------------------------------------------------

OLD = sorted(glob.glob(str(ROOT / ".cache" / "ort-old-lib" / "libonnxruntime.so.*")))

FLOOR_SCRIPT = r"""
import json, sys, warnings
import numpy as np
sys.path.insert(0, sys.argv[1])
import fastort, ep_models
from fastort.errors import EpLibraryError, ProviderUnavailableError
out = {}
info = fastort.runtime_info()
out["version"], out["api"], out["plugins"] = info["version"], info["api_version"], info["plugin_eps"]
out["devices"] = len(fastort.devices())
x = np.random.default_rng(0).standard_normal((3, 256)).astype(np.float32)
out["y"] = fastort.Engine(ep_models.mlp(), replicas=2).run({"x": x})["y"].tolist()
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    e = fastort.Engine(ep_models.mlp(), providers=["openvino", "cpu"])
    out["fallback"] = [list(e.providers), [str(i.message) for i in w]]
for call in (lambda: fastort.Engine(ep_models.mlp(), providers=["openvino"], strict_providers=True),
             lambda: fastort.register_ep_library("x", sys.argv[0]),
             lambda: fastort.Engine(ep_models.mlp(), providers="auto", strict_providers=True)):
    try:
        call(); out.setdefault("errors", []).append("no error")
    except (ProviderUnavailableError, EpLibraryError) as err:
        out.setdefault("errors", []).append(type(err).__name__ + ": " + str(err))
print("RESULT " + json.dumps(out))
"""


@pytest.mark.skipif(not OLD, reason="no older onnxruntime library: run scripts/fetch_ort_old.sh")
def test_older_runtime_runs_with_plugin_eps_off(tmp_path, reference):
    script = tmp_path / "floor.py"
    script.write_text(FLOOR_SCRIPT)
    env = dict(os.environ, FASTORT_ORT_LIBRARY=OLD[-1])
    proc = subprocess.run([sys.executable, str(script), str(ROOT / "tests")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert out["version"].startswith("1.21") and out["api"] == 21
    assert out["plugins"]["available"] is False and "too old for plugin execution providers" in out["plugins"]["reason"]
    assert out["devices"] == 0
    x = np.random.default_rng(0).standard_normal((3, 256)).astype(np.float32)
    np.testing.assert_allclose(np.array(out["y"], np.float32), reference(ep_models.mlp(), {"x": x})["y"],
                               rtol=1e-5, atol=1e-5)
    providers, messages = out["fallback"]
    assert providers == ["CPUExecutionProvider"] and any("too old" in m for m in messages)
    assert len(out["errors"]) == 3 and all("too old" in e for e in out["errors"]), out["errors"]


# -- validate / prepare --target openvino -------------------------------------------


def test_validate_and_prepare_target_openvino(ov, tmp_path):
    import onnx

    from fastort.errors import ValidationError
    from fastort.prepare.validate_ep import validate_on_ep

    model = ep_models.transformer()
    feeds = _feeds("transformer")
    report = validate_on_ep(model, feeds, "openvino", "f32")
    assert report.passed and any("precision f32" in n for n in report.notes)
    bf16 = validate_on_ep(model, feeds, "openvino", "bf16")  # its own, looser tolerance
    assert bf16.passed and max(o.max_abs_error for o in bf16.outputs) > 1e-4
    with pytest.raises(ValidationError, match="outside tolerance"):
        validate_on_ep(model, feeds, "openvino", "bf16", rtol=1e-6, atol=1e-6)
    path = tmp_path / "t.onnx"
    onnx.save(model, str(path))
    np.savez(tmp_path / "feeds.npz", **feeds)  # real shapes: free dims are never guessed silently
    cli = [sys.executable, "-m", "fastort", "validate", str(path), "--target", "openvino",
           "--inputs", str(tmp_path / "feeds.npz")]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert subprocess.run(cli + ["--precision", "bf16", "--atol", "1e-7", "--rtol", "0"],
                          capture_output=True, timeout=300).returncode == 1
    from fastort.prepare import prepare

    result = prepare(str(path), str(tmp_path / "pkg"), target="openvino", inputs=feeds, measure=False,
                     progress=False)
    assert any(n.startswith("on openvino") for n in result.notes)
    engine = fastort.Engine(str(tmp_path / "pkg"))
    assert engine.providers[0] == OV and engine.precision[OV] == "f32"
