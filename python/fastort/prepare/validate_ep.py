"""Validation of a model on an execution provider against the CPU EP in f32.

An EP may compute in reduced precision (OpenVINO's bf16/fp16, see
fastort.runtime.precision): ``fastort validate --target openvino`` and
``fastort prepare --target openvino`` measure the error of the chosen precision
against the CPU EP and refuse a result outside tolerance, as the other steps do.
"""

from __future__ import annotations

from typing import Any, Optional

from ..errors import ValidationError
from ..runtime import precision as ep_precision

__all__ = ["validate_on_ep", "TARGET_PROVIDERS"]

#: Targets whose provider computes differently from the CPU EP.
TARGET_PROVIDERS = {"openvino": "openvino"}


def validate_on_ep(model: Any, inputs: Any = None, target: str = "openvino", precision: str = "f32",
                   rtol: Optional[float] = None, atol: Optional[float] = None, *,
                   raise_on_failure: bool = True, dims: Any = None, allow_synthetic: bool = False) -> Any:
    """A :class:`fastort.validate.ValidationReport` of ``model`` on ``target``'s
    EP in ``precision`` against the CPU EP. Tolerances default to 1e-4 for f32
    and to the precision's own (fastort.runtime.precision.tolerance) otherwise. Raises
    ProviderUnavailableError when the EP cannot run here, ValidationError when
    outside tolerance (unless ``raise_on_failure`` is False)."""
    from ..engine import Engine
    from .validate import validate

    provider = TARGET_PROVIDERS.get(target)
    if provider is None:
        raise ValueError(f"no EP validation for target {target!r}: use one of {', '.join(TARGET_PROVIDERS)}")
    default = ep_precision.tolerance(ep_precision.check(precision)) or (1e-4, 1e-4)
    rtol = default[0] if rtol is None else rtol
    atol = default[1] if atol is None else atol
    if inputs is None:  # seeded random inputs from the model's input specs (free dims given or opted into)
        from .common import load_model, step_inputs

        inputs = step_inputs(load_model(model), None, "validate --target", dims, allow_synthetic)[1]
    reference = Engine(model, providers=["cpu"])
    candidate = Engine(model, providers=[provider], precision=precision, strict_providers=True)
    report = validate(reference, candidate, inputs, rtol=rtol, atol=atol, raise_on_failure=False)
    report.notes.append(f"{target} ({candidate.replica_providers[0]}) in precision "
                        f"{candidate.precision.get(candidate.providers[0], precision)} vs the CPU EP in f32")
    if raise_on_failure and not report.passed:
        raise ValidationError(f"the model on {target} in precision {precision} is outside tolerance against the "
                              f"CPU EP (rtol={rtol}, atol={atol}):\n{report}", report)
    return report
