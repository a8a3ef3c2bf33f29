"""fastort on Ray: batch scoring with Ray Data and online serving with Ray Serve.

>>> import fastort.ray
>>> scored = fastort.ray.score(ds, "model.onnx", fastort.ray.ScoreConfig(actors=2))
>>> app = fastort.ray.deployment("model.onnx", num_replicas=2)

Ray is imported on first use of a name here, so ``import fastort`` stays light.
Inside this package ``import ray`` is the real Ray (absolute imports only).
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module of this package that defines it
_NAMES = {
    "Predictor": "predictor",
    "PredictorConfig": "predictor",
    "score": "scoring",
    "ScoreConfig": "scoring",
    "deployment": "serve_deployment",
    "ServeConfig": "serve_deployment",
    "FastortDeployment": "serve_deployment",
    "CpuBudget": "threads",
    "cpu_budget": "threads",
}


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'fastort.ray' has no attribute {name!r}")
    return getattr(importlib.import_module(f"fastort.ray.{module}"), name)


__all__ = sorted(_NAMES)
