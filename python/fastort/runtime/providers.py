"""Execution providers: names, per-provider options, and why one cannot be used.

``providers`` entries are short names (``"cuda"``), onnxruntime's names
(``"CUDAExecutionProvider"``) or onnxruntime-Python-style ``(name, options)``
tuples. CUDA options are validated here, so that a typo fails with a clear
:class:`ConfigError` instead of deep inside onnxruntime.
"""

from __future__ import annotations

import threading
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from ..errors import ConfigError, FastortError

#: Short provider names accepted next to onnxruntime's full ones.
PROVIDER_ALIASES: Dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dnnl": "DnnlExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}

ProviderSpec = Union[str, Tuple[str, Mapping[str, Any]]]

CUDA = "CUDAExecutionProvider"
GPU_INSTALL = "pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'onnxruntime-gpu[cuda,cudnn]' (see docs/GPU.md)"

_ARENA = {"knextpoweroftwo": "kNextPowerOfTwo", "next_power_of_two": "kNextPowerOfTwo",
          "ksameasrequested": "kSameAsRequested", "same_as_requested": "kSameAsRequested"}
_ALGO = {"exhaustive": "EXHAUSTIVE", "heuristic": "HEURISTIC", "default": "DEFAULT"}


def _int(key: str, value: Any, minimum: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"CUDA option {key!r} must be an int >= {minimum}, got {value!r}")
    return str(value)


def _bool(key: str, value: Any) -> str:
    if not isinstance(value, (bool, int)) or value not in (0, 1):
        raise ConfigError(f"CUDA option {key!r} must be True or False, got {value!r}")
    return "1" if value else "0"


def _choice(key: str, value: Any, choices: Dict[str, str]) -> str:
    if not isinstance(value, str) or value.lower() not in choices:
        allowed = sorted(set(choices.values()))
        raise ConfigError(f"CUDA option {key!r} must be one of {', '.join(allowed)}, got {value!r}")
    return choices[value.lower()]


#: CUDA provider options fastort validates, and how.
CUDA_OPTIONS = {
    "device_id": lambda k, v: _int(k, v, 0),
    "gpu_mem_limit": lambda k, v: _int(k, v, 1),
    "arena_extend_strategy": lambda k, v: _choice(k, v, _ARENA),
    "cudnn_conv_algo_search": lambda k, v: _choice(k, v, _ALGO),
    "enable_cuda_graph": _bool,
    "use_tf32": _bool,
    "do_copy_in_default_stream": _bool,
    "cudnn_conv_use_max_workspace": _bool,
    "prefer_nhwc": _bool,
}


def _options(name: str, options: Any) -> List[Tuple[str, str]]:
    if options is None:
        return []
    if not isinstance(options, Mapping):
        raise ConfigError(f"options of {name} must be a dict, got {type(options).__name__}")
    out: List[Tuple[str, str]] = []
    for key, value in options.items():
        if not isinstance(key, str):
            raise ConfigError(f"option names of {name} must be str, got {key!r}")
        if name == CUDA:
            check = CUDA_OPTIONS.get(key)
            if check is None:
                raise ConfigError(f"unknown CUDA option {key!r}: fastort takes {', '.join(CUDA_OPTIONS)}")
            out.append((key, check(key, value)))
        elif isinstance(value, (str, int, float)):
            out.append((key, str(int(value)) if isinstance(value, bool) else str(value)))
        else:
            raise ConfigError(f"option {key!r} of {name} must be a str, int, float or bool, got {value!r}")
    return out


def parse(providers: Union[ProviderSpec, Iterable[ProviderSpec]]) -> List[Tuple[str, List[Tuple[str, str]]]]:
    """[(onnxruntime name, [(key, value)])] for the ``providers`` argument, validated."""
    items: List[Any] = [providers] if isinstance(providers, str) or _is_pair(providers) else list(providers)
    out: List[Tuple[str, List[Tuple[str, str]]]] = []
    for item in items:
        p: Any = item
        options: Any = None
        if _is_pair(item):
            p, options = item
        if not isinstance(p, str):
            raise ConfigError(
                f"providers must be names (str), got {type(p).__name__} (or (name, options dict) tuples)")
        name = PROVIDER_ALIASES.get(p.lower(), p)
        if name not in PROVIDER_ALIASES.values() and not name.endswith("ExecutionProvider"):
            raise ConfigError(
                f"unknown execution provider {p!r}: use a short name ({', '.join(PROVIDER_ALIASES)}) "
                "or onnxruntime's full name (e.g. 'CUDAExecutionProvider')"
            )
        parsed = _options(name, options)
        if all(name != n for n, _ in out):
            out.append((name, parsed))
    if not out:
        raise ConfigError("providers is empty: give at least one, e.g. ('cpu',)")
    return out


def _is_pair(p: Any) -> bool:
    # ("cuda", {...}) is one provider with options; ("cuda", "cpu") two names.
    return isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) and not isinstance(p[1], str)


def _installed(dist: str) -> Optional[str]:
    import importlib.metadata  # only when a reason is needed: slow to import

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _loader_error(library_path: Optional[str]) -> str:
    """The dynamic loader's words for why the CUDA provider library next to
    ``library_path`` does not load ("" when it loads or is not there).
    onnxruntime only logs them; its error says "Failed to load shared library"."""
    if not library_path:
        return ""
    import ctypes
    import os

    provider = os.path.join(os.path.dirname(library_path), "libonnxruntime_providers_cuda.so")
    if not os.path.isfile(provider):
        return f"{provider} is missing"
    try:
        ctypes.CDLL(provider, mode=getattr(os, "RTLD_LAZY", 1) | getattr(os, "RTLD_LOCAL", 0))
    except OSError as e:
        return str(e)
    return ""


def explain_load_failure(name: str, message: str, library_path: Optional[str] = None) -> str:
    """A reason, in words a user can act on, for onnxruntime's error when a
    session with provider ``name`` could not be created."""
    if name != CUDA:
        return message
    low = message.lower()
    if "failed to load shared library" in low:
        detail = _loader_error(library_path)
        if detail:
            message = f"{message} ({detail})"
            low = message.lower()
    if "no cuda-capable device" in low or "cuda failure 100" in low or "cudaerrornodevice" in low:
        return f"no CUDA device is visible (check the driver and CUDA_VISIBLE_DEVICES); onnxruntime said: {message}"
    if "invalid device ordinal" in low or "cuda failure 101" in low:
        return f"the requested CUDA device does not exist; onnxruntime said: {message}"
    if "shared library" in low or "cannot open shared object" in low or ".so" in low or "dll" in low:
        return ("the CUDA provider's libraries (CUDA runtime, cuBLAS, cuDNN) could not be loaded: "
                "install them with `pip install 'onnxruntime-gpu[cuda,cudnn]'` or a matching CUDA toolkit; "
                f"onnxruntime said: {message}")
    if "insufficient driver" in low or "driver version" in low or "cuda failure 35" in low:
        return f"the NVIDIA driver is too old for this onnxruntime-gpu build; onnxruntime said: {message}"
    return message


def missing_reason(name: str, version: str, available: List[str]) -> str:
    """Why ``name`` is not among this runtime's providers."""
    base = f"execution provider {name!r} is not available in onnxruntime {version} (it offers {', '.join(available)})"
    if name != CUDA:
        return base
    cpu, gpu = _installed("onnxruntime"), _installed("onnxruntime-gpu")
    if cpu and gpu:
        return (f"{base}: both onnxruntime {cpu} and onnxruntime-gpu {gpu} are installed and overwrite each other's "
                "files; keep only the GPU one: pip uninstall -y onnxruntime onnxruntime-gpu && "
                "pip install 'onnxruntime-gpu[cuda,cudnn]'")
    return f"{base}: this is a CPU-only build; install the CUDA one: {GPU_INSTALL}"


_probe_lock = threading.Lock()
_probe_cache: Dict[str, str] = {}


def probe(name: str, open_engine: Any, library_path: Optional[str] = None) -> str:
    """"" when a session with provider ``name`` opens, else why not (cached).
    ``open_engine(providers)`` opens a tiny engine with those providers, strictly."""
    with _probe_lock:
        if name not in _probe_cache:
            try:
                open_engine(name)
                _probe_cache[name] = ""
            except FastortError as e:
                _probe_cache[name] = explain_load_failure(name, str(e), library_path)
        return _probe_cache[name]
