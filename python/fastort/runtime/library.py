"""Finds libonnxruntime and loads it into fastort's native core.

fastort links no onnxruntime at build time. At import it loads the shared
library that the installed ``onnxruntime`` (or ``onnxruntime-gpu``) wheel ships,
privately (RTLD_LOCAL), so the same build works with either, and with the
``onnxruntime`` Python module imported in the same process.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
from typing import Any, Dict, List

from .. import _core
from ..errors import NATIVE_ERRORS, RuntimeLoadError
from . import providers as prov

ENV_VAR = "FASTORT_ORT_LIBRARY"
_HOW_TO_FIX = (
    "install a runtime with `pip install onnxruntime` (CPU) or `pip install onnxruntime-gpu` (CUDA), "
    f"or set {ENV_VAR} to the path of a libonnxruntime shared library"
)

_core._set_error_types(dict(NATIVE_ERRORS))


def _version_key(path: str) -> List[int]:
    return [int(x) for x in re.findall(r"\d+", os.path.basename(path))]


def find_library() -> str:
    """Path of the libonnxruntime to load: ``$FASTORT_ORT_LIBRARY``, else the one
    inside the installed onnxruntime package (found without importing it)."""
    override = os.environ.get(ENV_VAR)
    if override:
        if not os.path.isfile(override):
            raise RuntimeLoadError(f"{ENV_VAR}={override} does not name a file; {_HOW_TO_FIX}")
        return override
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeLoadError(f"the onnxruntime package is not installed; {_HOW_TO_FIX}")
    found: List[str] = []
    for location in spec.submodule_search_locations:
        capi = os.path.join(location, "capi")
        for pattern in ("libonnxruntime.so*", "libonnxruntime*.dylib", "onnxruntime.dll"):
            found += glob.glob(os.path.join(capi, pattern))
    if not found:
        raise RuntimeLoadError(
            f"the installed onnxruntime package ({list(spec.submodule_search_locations)}) has no "
            f"libonnxruntime shared library in capi/; {_HOW_TO_FIX}"
        )
    return max(found, key=_version_key)


def load() -> None:
    """Load the runtime once per process (idempotent)."""
    if not _core.runtime_loaded():
        _core.load_runtime(find_library())


def runtime_info(probe: bool = True) -> Dict[str, Any]:
    """What fastort runs on.

    Returns a dict with ``version`` (onnxruntime's), ``api_version`` (the C API
    version in use: the headers' ``api_version_compiled``, or the runtime's own
    when it is older), ``plugin_eps`` (``{"available", "reason"}``), with
    ``probe`` also ``devices`` and ``plugin_libraries`` (fastort.devices), ``library_path``, ``providers`` (the
    execution providers this runtime offers, in onnxruntime's names), and
    ``provider_status``: for the CPU and CUDA providers and every offered one,
    ``{"available": bool, "reason": str}``, where ``reason`` says why one cannot
    be used ("" when it can). With ``probe`` (the default), an offered CUDA
    provider is tried once per process on a tiny model, so that missing CUDA
    libraries or a missing GPU show up here.
    """
    load()
    info = dict(_core.runtime_info())
    status: Dict[str, Dict[str, Any]] = {}
    for name in dict.fromkeys(["CPUExecutionProvider", prov.CUDA] + list(info["providers"])):
        if name not in info["providers"]:
            status[name] = {"available": False,
                            "reason": prov.missing_reason(name, info["version"], info["providers"])}
        elif name == prov.CUDA and probe:
            preload_cuda_libraries()
            why = prov.probe(name, _open_probe, info["library_path"])
            status[name] = {"available": not why, "reason": why}
        else:
            status[name] = {"available": True, "reason": ""}  # offered (CUDA: not probed when probe=False)
    info["provider_status"] = status
    support = _core.plugin_support()  # the negotiated C API and plugin EP support
    info["api_version"] = support["api_version"]
    info["api_version_compiled"] = support["api_version_compiled"]
    info["plugin_eps"] = {"available": support["plugin_eps"], "reason": support["reason"]}
    if probe:  # registers the installed plugin EP libraries (fastort.devices)
        from . import plugin_eps as devices

        info["devices"] = devices.describe_devices()
        info["plugin_libraries"] = [
            {"name": p.name, "path": p.path, "source": p.source, "registered": p.registered,
             "eps": list(p.provides or p.ep_names), "error": p.error}
            for p in devices.plugin_libraries()]
    return info


_cuda_preloaded = False


def preload_cuda_libraries() -> None:
    """Makes the NVIDIA libraries that ``onnxruntime-gpu[cuda,cudnn]`` installs
    from PyPI findable by onnxruntime's CUDA provider. fastort loads
    libonnxruntime without importing the ``onnxruntime`` module, whose import
    normally does this; here its documented ``onnxruntime.preload_dlls()`` is
    called once, before the first CUDA session. Does nothing for a CPU runtime,
    with ``FASTORT_PRELOAD_CUDA=0``, or when the module is not there."""
    global _cuda_preloaded
    if _cuda_preloaded or os.environ.get("FASTORT_PRELOAD_CUDA", "1") == "0":
        return
    _cuda_preloaded = True
    if importlib.util.find_spec("onnxruntime") is None:
        return
    try:
        import onnxruntime

        preload = getattr(onnxruntime, "preload_dlls", None)
        if preload is not None:
            preload()
    except Exception:  # pragma: no cover - best effort: the provider then reports what is missing
        pass


def _open_probe(provider: str) -> None:
    """Opens a one-node model with ``provider`` only (no fallback); raises on failure."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    config = _core.EngineConfig()  # the core's defaults, but for these
    config.providers = [provider, "CPUExecutionProvider"]
    config.provider_options = [[], []]
    config.intra_op_threads = config.inter_op_threads = 1
    config.graph_optimization = 0
    config.log_level = 3
    config.share_weights = False
    _core.Engine.open(model.SerializeToString(), config, [])


def configure_global_threads(
    intra_op_threads: int = 0, inter_op_threads: int = 0, allow_spinning: bool = False
) -> None:
    """Size onnxruntime's process-wide thread pools, which engines created with
    ``use_global_thread_pool=True`` share (one pool for all replicas instead of
    one per replica). Call it before the first Engine; 0 means one per core.
    Spinning is off by default: idle pool threads sleep instead of burning a core."""
    load()
    _core.configure_global_threads(int(intra_op_threads), int(inter_op_threads), bool(allow_spinning))
