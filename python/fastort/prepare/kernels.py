"""Whether a target execution provider can run every node of a model.

>>> from fastort.prepare.kernels import check_kernels
>>> check_kernels(model, "cpu")        # raises UnsupportedOnTargetError naming the node and op

A prepared variant (int4 weights, float16, a pruned export) is only worth
keeping when the provider it is meant for has a kernel for each of its nodes:
onnxruntime's CPU provider, for instance, has no bfloat16 MatMul and no
bfloat16 MatMulNBits. The check creates an onnxruntime session on the target
provider alone (for non-CPU targets with the CPU fallback disabled, so that a
node the GPU cannot run is reported instead of silently running on the CPU)
and turns onnxruntime's NOT_IMPLEMENTED into an
:class:`~fastort.errors.UnsupportedOnTargetError` that names the op, the node
and the provider.
"""

from __future__ import annotations

import re
from typing import Any, List

from ..errors import UnsupportedOnTargetError

__all__ = ["check_kernels", "provider_name", "UnsupportedOnTargetError"]

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
_MISSING = re.compile(r"Could not find an implementation for (\w+)\((\d+)\) node with name '([^']*)'")


def provider_name(target: str) -> str:
    """onnxruntime's name of a target: ``"cpu"`` -> ``CPUExecutionProvider``
    (full provider names pass through)."""
    if target in _PROVIDERS:
        return _PROVIDERS[target]
    if target.endswith("ExecutionProvider"):
        return target
    raise UnsupportedOnTargetError(f"unknown target {target!r}: use one of {sorted(_PROVIDERS)} or an onnxruntime "
                                   "provider name", provider=target)


def check_kernels(model: Any, target: str = "cpu", what: str = "the model") -> List[str]:
    """Creates a session for ``model`` (a path, bytes or ModelProto) on
    ``target`` alone; raises :class:`UnsupportedOnTargetError` when a node has no
    kernel there. Returns notes (e.g. that a target's provider is not installed,
    so nothing could be checked)."""
    import onnxruntime as ort

    from .common import load_model

    provider = provider_name(target)
    if provider not in ort.get_available_providers():
        return [f"kernels not checked for {provider}: the installed onnxruntime does not have it"]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if provider != "CPUExecutionProvider":
        options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    source = model if isinstance(model, str) else load_model(model, what=what).SerializeToString()
    try:
        ort.InferenceSession(source, options, providers=[provider])
    except Exception as e:  # onnxruntime raises its own NotImplemented / Fail / InvalidGraph classes
        message = str(e)
        found = _MISSING.search(message)
        if found is None and "NOT_IMPLEMENTED" not in message and "fallback" not in message.lower():
            raise
        op, version, node = (found.group(1), found.group(2), found.group(3)) if found else (None, None, None)
        detail = (f"no kernel for {op} (opset {version}) node {node!r}" if found else message.strip().splitlines()[0])
        raise UnsupportedOnTargetError(
            f"{what} cannot run on {provider}: {detail}. The provider has no implementation for this op with these "
            f"types, so this variant is refused; choose another variant (e.g. float32 or int8 on the CPU, or a "
            f"target that implements it).", provider=provider, op_type=op, node=node) from None
    return []

