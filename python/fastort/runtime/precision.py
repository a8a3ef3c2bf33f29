"""Inference precision of execution providers that choose one themselves.

OpenVINO compiles a model for the precision its device prefers: on CPUs with
bf16 units (AMX, AVX512-BF16) that is bf16, on its GPU and NPU f16. The outputs
then differ from the CPU EP's f32 ones by ~1e-2. fastort never lets that happen
silently: the default is ``"f32"`` (results match the CPU EP's; still faster
than it on Intel CPUs), reduced precision is the caller's choice
(``"bf16"``/``"fp16"``), and ``"auto"`` (the EP's own choice) is reported in
``engine.precision`` and with a warning.

The OpenVINO plugin ignores the ``precision`` provider option of the built-in
EP (it logs that it does); its precision goes through ``load_config``:
``{"CPU": {"INFERENCE_PRECISION_HINT": "f32"}}``.
"""

from __future__ import annotations

import json
from typing import Dict, List, Optional, Tuple

from ..errors import ConfigError

PRECISIONS = ("f32", "bf16", "fp16", "auto")
#: The single source of the default.
DEFAULT_PRECISION = "f32"
OPENVINO = "OpenVINOExecutionProvider"
_OV_HINT = {"f32": "f32", "bf16": "bf16", "fp16": "f16"}
#: EPs with a precision knob fastort maps (the others run the model's own precision).
PRECISION_EPS = (OPENVINO,)


def check(precision: str) -> str:
    if not isinstance(precision, str) or precision.lower() not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision.lower()


def openvino_auto(ov_device: str, capabilities: str) -> str:
    """What OpenVINO picks on its own (its documented defaults): bf16 on CPUs
    that list BF16 among their OPTIMIZATION_CAPABILITIES, f16 on GPU/NPU, else f32."""
    dev = ov_device.upper()
    if dev.startswith("CPU"):
        return "bf16" if "BF16" in capabilities.split() else "f32"
    if dev.startswith(("GPU", "NPU")):
        return "fp16"
    return "unknown"


def apply(ep_name: str, options: List[Tuple[str, str]], precision: str, ov_device: str = "CPU",
          capabilities: str = "") -> Tuple[List[Tuple[str, str]], str]:
    """(options with the EP's own precision setting, the precision it will run).

    ``options`` may carry ``precision`` (fastort's, per provider; wins over the
    engine-wide ``precision``); a ``load_config`` with an INFERENCE_PRECISION_HINT
    of the caller's own is kept, and conflicts with an explicit one raise."""
    per_ep = [v for k, v in options if k == "precision"]
    rest = [(k, v) for k, v in options if k != "precision"]
    chosen = check(per_ep[-1]) if per_ep else check(precision)
    if ep_name != OPENVINO:
        if per_ep and chosen not in ("f32", "auto"):
            raise ConfigError(f"{ep_name} has no precision setting fastort knows: it runs the model's own "
                              f"precision (convert the model with `fastort optimize --fp16` for fp16)")
        return rest, "model"
    user_config: Dict[str, Dict[str, str]] = {}
    for k, v in rest:
        if k == "load_config":
            try:
                user_config = json.loads(v)
            except ValueError as e:
                raise ConfigError(f"OpenVINO option load_config must be JSON, got {v!r}: {e}") from None
    device_key = ov_device.upper() or "CPU"
    user_hint = (user_config.get(device_key) or {}).get("INFERENCE_PRECISION_HINT")
    if user_hint is not None:
        hint = str(user_hint).lower()
        as_fastort = {"f32": "f32", "bf16": "bf16", "f16": "fp16"}.get(hint, hint)
        if per_ep and as_fastort != chosen:
            raise ConfigError(f"OpenVINO precision={chosen!r} contradicts load_config's INFERENCE_PRECISION_HINT="
                              f"{user_hint!r}; give one of them")
        return rest, as_fastort
    if chosen == "auto":
        return rest, f"auto ({openvino_auto(device_key, capabilities)})"
    config = dict(user_config)
    config[device_key] = {**config.get(device_key, {}), "INFERENCE_PRECISION_HINT": _OV_HINT[chosen]}
    rest = [(k, v) for k, v in rest if k != "load_config"] + [("load_config", json.dumps(config))]
    return rest, chosen


def tolerance(precision: str) -> Optional[Tuple[float, float]]:
    """Default (rtol, atol) for outputs of ``precision`` against f32 (None: same precision)."""
    p = precision.split(" ")[0]
    if p in ("f32", "model"):
        return None
    if p == "fp16":
        return (1e-2, 1e-2)
    return (5e-2, 5e-2)  # bf16, auto: 8 bits of mantissa


def policy_config(precision: str, ov_devices: Dict[str, str]) -> Tuple[List[Tuple[str, str]], Dict[str, str]]:
    """Session config entries that give ``precision`` to the EPs onnxruntime may
    pick by itself (``device_policy``), and the precision each would run.
    ``ov_devices``: OpenVINO's devices here, ov_device -> OPTIMIZATION_CAPABILITIES.
    onnxruntime hands config entries ``ep.<lower-case EP name>.<option>`` to an
    automatically selected EP as its options."""
    chosen = check(precision)
    if not ov_devices:
        return [], {}
    if chosen == "auto":
        picks = sorted({openvino_auto(d, caps) for d, caps in ov_devices.items()})
        return [], {OPENVINO: f"auto ({'/'.join(picks)})"}
    config = {dev.upper(): {"INFERENCE_PRECISION_HINT": _OV_HINT[chosen]} for dev in ov_devices}
    return [(f"ep.{OPENVINO.lower()}.load_config", json.dumps(config))], {OPENVINO: chosen}
