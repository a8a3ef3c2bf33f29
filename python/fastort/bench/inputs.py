"""Seeded random inputs for a model's inputs, for benchmarks and checks."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

__all__ = ["random_inputs", "tiny_inputs"]


def random_inputs(specs: Sequence[Any], batch: int, dims: Optional[Mapping[str, int]] = None,
                  seed: int = 0) -> Dict[str, np.ndarray]:
    """Seeded random inputs for ``engine.inputs`` (or any specs with name, type,
    dtype and shape): standard normal floats, 0/1 ints and bools; named dims
    from ``dims``, the first free dim ``batch``, other free dims 1."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        if spec.dtype is None:
            raise ValueError(f"input {spec.name!r} is a {spec.type}: random inputs are for tensors only; "
                             "give inputs explicitly")
        shape = []
        for i, d in enumerate(spec.shape or ()):
            if isinstance(d, int) and d >= 0:
                shape.append(d)
            elif isinstance(d, str) and dims and d in dims:
                shape.append(int(dims[d]))
            else:
                shape.append(batch if i == 0 else 1)
        dt = np.dtype(spec.dtype)
        if dt.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(dt)
        elif dt.kind in "iu":
            feeds[spec.name] = rng.integers(0, 2, size=shape).astype(dt)
        elif dt.kind == "b":
            feeds[spec.name] = rng.integers(0, 2, size=shape).astype(bool)
        elif dt == object:
            feeds[spec.name] = np.full(shape, "fastort", dtype=object)
        else:
            feeds[spec.name] = np.zeros(shape, dt)
    return feeds


def tiny_inputs(batch: int = 1) -> Dict[str, np.ndarray]:
    """Seeded random inputs for :func:`fastort.bench.models.tiny_model`: x float32[batch, 4]."""
    return {"x": np.random.default_rng(0).standard_normal((batch, 4)).astype(np.float32)}
