"""``fastort.tune``: find the fastest configuration of a model that meets
your targets, measured on this machine under your load, and write it as a
package that ``Engine(pkg)`` serves with.

>>> from fastort.tune import tune, Targets, Budget
>>> result = fastort.tune("model.onnx", inputs=x, clients=16,
...                       targets=Targets(p99_ms=20, max_error=1e-3), budget=Budget(minutes=2))
>>> print(result.table())
>>> result.save("models/tuned")            # Engine("models/tuned") applies the winner

See docs/TUNE.md.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from .config import Budget, Load, Targets
from .inputs import InputSet
from .load import Measurement, OrtTarget, measure
from .result import CandidateResult, TuneResult
from .search import DEFAULT_ALLOW, tune
from .space import Config

__all__ = ["tune", "Targets", "Budget", "Load", "TuneResult", "CandidateResult", "Config", "Measurement",
           "InputSet", "OrtTarget", "measure", "DEFAULT_ALLOW"]

class _CallablePackage(types.ModuleType):
    """``fastort.tune(...)`` calls :func:`tune`; ``fastort.tune.X`` is as usual."""

    def __call__(self, *args: Any, **kwargs: Any) -> TuneResult:
        return tune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
