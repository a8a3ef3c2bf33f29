"""Plugin execution providers and the devices onnxruntime finds for them.

onnxruntime 1.22+ loads execution providers from plugin libraries (the "EP
ABI"). Installed packages that follow the plugin packaging convention (a
top-level module ``onnxruntime_ep_*`` with ``get_library_path()`` and
``get_ep_name()``/``get_ep_names()``, e.g. ``onnxruntime-ep-openvino``) are found
without configuration; ``FASTORT_EP_LIBRARIES`` (``name=path`` entries separated
by ``os.pathsep``) and :func:`register_ep_library` add others;
``FASTORT_EP_DISCOVERY=0`` turns off the search of installed packages (e.g. under
sanitizers, which cannot load OpenVINO's ``RTLD_DEEPBIND`` libraries). Registration is
once per process, thread-safe and never undone (a live session may use it).

Discovery runs only when something asks for a plugin EP or the device list, so
engines on the CPU or CUDA providers never pay for it.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .. import _core
from ..errors import ConfigError, EpLibraryError, FastortError, RuntimeLoadError

__all__ = ["EpDevice", "PluginLibrary", "devices", "register_ep_library", "plugin_libraries",
           "plugin_reason", "DEVICE_POLICIES", "ENV_VAR", "DISCOVERY_ENV_VAR"]

ENV_VAR = "FASTORT_EP_LIBRARIES"
#: "0" turns off the search of installed plugin packages (the ENV_VAR ones and
#: register_ep_library still count).
DISCOVERY_ENV_VAR = "FASTORT_EP_DISCOVERY"
#: fastort's names for onnxruntime's automatic EP selection policies.
DEVICE_POLICIES = ("prefer_cpu", "prefer_gpu", "prefer_npu", "max_performance", "max_efficiency",
                   "min_overall_power", "default")
#: Where a plugin EP comes from on PyPI, for "not installed" messages.
PLUGIN_PACKAGES: Dict[str, str] = {
    "OpenVINOExecutionProvider": "onnxruntime-ep-openvino",
    "NvTensorRTRTXExecutionProvider": "onnxruntime-ep-nv-tensorrt-rtx",
    "MLXExecutionProvider": "onnxruntime-ep-mlx",
    "WebGpuExecutionProvider": "onnxruntime-ep-webgpu",
}
_MODULE_PREFIX = "onnxruntime_ep_"


@dataclass(frozen=True)
class EpDevice:
    """One execution provider on one hardware device, as onnxruntime sees it."""

    ep_name: str
    ep_vendor: str
    device_type: str  # "cpu", "gpu", "npu" or "unknown"
    vendor: str
    vendor_id: int
    device_id: int
    ep_metadata: Dict[str, str] = field(default_factory=dict)  # e.g. OpenVINO's ov_device
    ep_options: Dict[str, str] = field(default_factory=dict)
    device_metadata: Dict[str, str] = field(default_factory=dict)
    library: str = ""  # registration name of its plugin library ("" for built-in EPs)

    @property
    def label(self) -> str:
        """``EPName(device)``: OpenVINO's ``ov_device`` or the device type."""
        return f"{self.ep_name}({self.ep_metadata.get('ov_device') or self.device_type})"


@dataclass
class PluginLibrary:
    """A plugin EP library fastort knows of, and what became of registering it."""

    name: str
    path: str
    ep_names: Tuple[str, ...]  # what the package says it provides (may be empty)
    source: str  # "package <module>", ENV_VAR, or "register_ep_library"
    registered: bool = False
    error: str = ""  # why registration failed ("" when it did not)
    provides: Tuple[str, ...] = ()  # EPs whose devices appeared when it was registered


_lock = threading.RLock()
_libraries: Dict[str, PluginLibrary] = {}
_discovered = False


def _support() -> Dict[str, Any]:
    # ``import fastort`` loads the runtime (runtime.library.load), which sits
    # above this module: library.runtime_info describes the devices found here.
    if not _core.runtime_loaded():
        raise RuntimeLoadError("onnxruntime is not loaded: import fastort first")
    return dict(_core.plugin_support())


def _discovery_off() -> bool:
    return os.environ.get(DISCOVERY_ENV_VAR, "1").strip() == "0"


def _installed_plugins() -> List[PluginLibrary]:
    """Plugin libraries of installed packages (a top-level ``onnxruntime_ep_*`` module)."""
    import importlib
    import pkgutil

    if _discovery_off():
        return []

    found: List[PluginLibrary] = []
    for info in sorted(pkgutil.iter_modules(), key=lambda m: m.name):
        if not info.name.startswith(_MODULE_PREFIX) or any(p.source == f"package {info.name}" for p in found):
            continue
        name = info.name[len(_MODULE_PREFIX):]
        try:
            module = importlib.import_module(info.name)
            path = str(module.get_library_path())
            eps: Tuple[str, ...] = ()
            if hasattr(module, "get_ep_names"):
                eps = tuple(str(n) for n in module.get_ep_names())
            elif hasattr(module, "get_ep_name"):
                eps = (str(module.get_ep_name()),)
            found.append(PluginLibrary(name, path, eps, f"package {info.name}"))
        except Exception as e:  # a broken package must not break the others
            found.append(PluginLibrary(name, "", (), f"package {info.name}",
                                       error=f"package {info.name} does not give its library: {e}"))
    return found


def _env_plugins() -> List[PluginLibrary]:
    out: List[PluginLibrary] = []
    for entry in filter(None, os.environ.get(ENV_VAR, "").split(os.pathsep)):
        name, sep, path = entry.partition("=")
        if not sep:  # a bare path: named after the file
            name, path = os.path.basename(entry).split(".")[0].removeprefix("lib"), entry
        out.append(PluginLibrary(name.strip(), path.strip(), (), ENV_VAR))
    return out


def _register(lib: PluginLibrary) -> None:
    """Registers ``lib`` (caller holds the lock); records the outcome on it."""
    _libraries.setdefault(lib.name, lib)
    if lib.error:
        return
    if not os.path.isfile(lib.path):
        lib.error = f"plugin EP library {lib.path!r} ({lib.source}) does not exist"
        return
    try:
        _core.register_ep_library(lib.name, lib.path)
        lib.registered = True
        lib.provides = next((tuple(eps) for n, _, eps in _core.ep_registrations() if n == lib.name), ())
    except FastortError as e:
        lib.error = str(e)


def _discover() -> None:
    """Registers every installed and configured plugin library, once per process."""
    global _discovered
    with _lock:
        if _discovered:
            return
        _discovered = True
        if not _support()["plugin_eps"]:
            return
        for lib in _installed_plugins() + _env_plugins():
            if lib.name not in _libraries:
                _register(lib)


def register_ep_library(name: str, path: str) -> PluginLibrary:
    """Registers the plugin EP library at ``path`` under ``name`` (once per
    process; again with the same path is a no-op). Raises :class:`EpLibraryError`
    naming the reason: runtime too old, missing file, or onnxruntime's loader error."""
    if not isinstance(name, str) or not name or not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"register_ep_library needs a name (str) and a path, got {name!r}, {path!r}")
    path = os.path.abspath(os.fspath(path))
    support = _support()
    if not support["plugin_eps"]:
        raise EpLibraryError(support["reason"])
    _discover()
    with _lock:
        known = _libraries.get(name)
        if known is not None and known.registered:
            if known.path != path:
                raise EpLibraryError(f"plugin EP library name {name!r} is already registered for {known.path} "
                                     f"(asked for {path}); libraries stay registered for the life of the process")
            return known
        lib = PluginLibrary(name, path, (), "register_ep_library")
        _libraries.pop(name, None)
        _register(lib)
        if not lib.registered:
            _libraries.pop(name, None)  # a failed attempt may be retried with another path
            raise EpLibraryError(lib.error)
        return lib


def plugin_libraries() -> List[PluginLibrary]:
    """Every plugin library fastort found or was given, with its outcome."""
    _discover()
    with _lock:
        return list(_libraries.values())


def devices() -> List[EpDevice]:
    """Every EP device onnxruntime sees (after registering the installed plugin
    libraries): built-in ones (the CPU EP's) and the plugins'. Empty when the
    runtime is too old for plugin EPs (``runtime_info()`` says why)."""
    _discover()
    return [EpDevice(**d) for d in _core.ep_devices()]


def is_plugin_name(ep_name: str) -> bool:
    """Whether ``ep_name`` is a known plugin EP (PLUGIN_PACKAGES) or one that a
    plugin library fastort found or was given provides."""
    if ep_name in PLUGIN_PACKAGES:
        return True
    if not _support()["plugin_eps"]:
        return False
    _discover()
    with _lock:
        return any(ep_name in lib.ep_names or ep_name in lib.provides for lib in _libraries.values())


def plugin_reason(ep_name: str) -> str:
    """"" when plugin EP ``ep_name`` has a device here, else why it cannot be used."""
    support = _support()
    package = PLUGIN_PACKAGES.get(ep_name)
    if not support["plugin_eps"]:
        return f"{ep_name} is a plugin execution provider, but {support['reason']}"
    _discover()
    with _lock:
        libs = list(_libraries.values())
    for lib in libs:
        if ep_name in lib.ep_names or ep_name in lib.provides:
            if lib.error:
                return f"plugin library for {ep_name} ({lib.source}) fails to load: {lib.error}"
            if ep_name not in lib.provides or not any(d.ep_name == ep_name for d in devices()):
                return (f"plugin library for {ep_name} is registered ({lib.path}), but onnxruntime found no "
                        "device for it on this machine (e.g. OpenVINO on a non-Intel CPU)")
            return ""
    hint = f"pip install {package}" if package else f"install its plugin package or set {ENV_VAR}"
    if _discovery_off():
        hint += f"; {DISCOVERY_ENV_VAR}=0 turns off the search of installed plugin packages"
    return f"execution provider {ep_name!r} is not installed: no plugin library provides it ({hint})"


def device_for(ep_name: str, options: Mapping[str, str]) -> Optional[EpDevice]:
    """The device fastort's core picks for ``ep_name`` with ``options`` (same rule
    as cpp/ep_devices.cpp: ``device_type`` matches ``ov_device`` or the type)."""
    wanted = str(options.get("device_type", "")).lower()
    for d in devices():
        if d.ep_name != ep_name:
            continue
        if not wanted or wanted in (d.ep_metadata.get("ov_device", "").lower(), d.device_type):
            return d
    return None


def describe_devices() -> List[Dict[str, Any]]:
    """Plain dicts for ``fastort info`` and ``runtime_info()``."""
    out = []
    for d in devices():
        out.append({"ep": d.ep_name, "device_type": d.device_type, "vendor": d.vendor,
                    "vendor_id": d.vendor_id, "device_id": d.device_id,
                    "ov_device": d.ep_metadata.get("ov_device", ""), "library": d.library})
    return out
