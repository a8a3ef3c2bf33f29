"""Inputs for a model's inputs when the caller gives no data: seeded random
values, with the free dims (symbolic or unknown: image height/width, sequence
length) taken from ``dims`` and, when not given, *guessed* and said so.

One place for this (bench, prepare, validate and the tuner use it):
:func:`parse_dims` reads ``name=value`` / ``input:axis=value`` (the CLI's
``--dims``), :func:`synthesize` makes the inputs and records what was
guessed, :func:`load_inputs` reads an ``.npz``/``.npy`` file (``--inputs``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["random_inputs", "tiny_inputs", "parse_dims", "synthesize", "SyntheticInputs", "load_inputs",
           "free_dims"]

DimsArg = Union[None, Mapping[str, int], Iterable[str]]


def parse_dims(items: DimsArg) -> Dict[str, int]:
    """``["height=224", "x:3=320"]`` (or ``"height=224,width=320"``, or a
    mapping) -> ``{"height": 224, "x:3": 320}``: a symbolic dim by name, or an
    input's axis as ``input:axis``. Sizes are ints >= 0."""
    if items is None:
        return {}
    pairs: List[Tuple[str, Any]]
    if isinstance(items, Mapping):
        pairs = [(str(k), v) for k, v in items.items()]
    else:
        texts = [items] if isinstance(items, str) else list(items)
        pairs = []
        for text in texts:
            for part in str(text).split(","):
                if not part.strip():
                    continue
                name, sep, value = part.partition("=")
                if not sep or not name.strip():
                    raise ValueError(f"dims take NAME=SIZE or INPUT:AXIS=SIZE, got {part.strip()!r}")
                pairs.append((name.strip(), value.strip()))
    out: Dict[str, int] = {}
    for name, value in pairs:
        try:
            size = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"dim {name!r}: size must be an int, got {value!r}") from None
        if size < 0 or value is True or value is False:
            raise ValueError(f"dim {name!r}: size must be >= 0, got {value!r}")
        if ":" in name:
            inp, _, axis = name.rpartition(":")
            if not inp or not axis.isdigit():
                raise ValueError(f"dim {name!r}: INPUT:AXIS takes an input name and an axis number")
        out[name] = size
    return out


@dataclass
class SyntheticInputs:
    """Seeded random inputs and where their shapes came from.

    Attributes:
        feeds: input name -> array.
        seed: the random seed.
        given: the free dims set from ``dims`` ("input:axis" -> size).
        batch: the free dims set to the batch size ("input:axis" -> size).
        guessed: the free dims nobody gave, set to 1 ("input:axis" -> symbolic name or "?").
    """

    feeds: Dict[str, np.ndarray]
    seed: int = 0
    given: Dict[str, int] = field(default_factory=dict)
    batch: Dict[str, int] = field(default_factory=dict)
    guessed: Dict[str, str] = field(default_factory=dict)

    def guessed_text(self) -> str:
        """``x:2 ('height'), x:3 ('width')``."""
        return ", ".join(f"{k} ({v!r})" if v != "?" else k for k, v in self.guessed.items())

    def describe(self) -> str:
        """One line for output: that the inputs are synthetic, and what was guessed."""
        shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in self.feeds.items())
        text = f"synthetic inputs (seeded random, seed {self.seed}): {shapes}"
        if self.guessed:
            text += f"; free dims set to 1 because none was given: {self.guessed_text()}"
        return text

    def provenance(self) -> Dict[str, Any]:
        """A JSON-able record (for a package manifest)."""
        return {"source": "synthetic", "seed": self.seed,
                "shapes": {k: list(v.shape) for k, v in self.feeds.items()},
                "given_dims": dict(self.given), "batch_dims": dict(self.batch), "guessed_dims": dict(self.guessed)}


def free_dims(specs: Sequence[Any]) -> Dict[str, str]:
    """Every dim that is not a fixed size: ``"input:axis"`` -> symbolic name (or "?")."""
    out: Dict[str, str] = {}
    for spec in specs:
        for i, d in enumerate(spec.shape or ()):
            if not (isinstance(d, int) and d >= 0):
                out[f"{spec.name}:{i}"] = d if isinstance(d, str) and d else "?"
    return out


def synthesize(specs: Sequence[Any], batch: int = 1, dims: DimsArg = None, seed: int = 0,
               strict: bool = True) -> SyntheticInputs:
    """Seeded random inputs for ``engine.inputs`` (or any specs with name, type,
    dtype and shape): standard normal floats, 0/1 ints and bools. A free dim
    takes, in order: ``dims["input:axis"]``, ``dims[symbolic name]``, ``batch``
    when it is dim 0, else 1 (recorded in ``guessed``). ``strict``: a ``dims``
    key naming no free dim is an error (a typo would otherwise be ignored)."""
    sizes = parse_dims(dims)
    free = free_dims(specs)
    if strict:
        unknown = [k for k in sizes if k not in free and k not in set(free.values())]
        if unknown:
            listing = ", ".join(f"{k} ({v!r})" if v != "?" else k for k, v in free.items()) or "none"
            raise ValueError(f"dims {', '.join(repr(k) for k in unknown)} name no free dim of the model's inputs "
                             f"(free dims: {listing})")
    rng = np.random.default_rng(seed)
    result = SyntheticInputs(feeds={}, seed=seed)
    for spec in specs:
        if spec.dtype is None:
            raise ValueError(f"input {spec.name!r} is a {spec.type}: random inputs are for tensors only; "
                             "give inputs explicitly")
        shape = []
        for i, d in enumerate(spec.shape or ()):
            key = f"{spec.name}:{i}"
            if isinstance(d, int) and d >= 0:
                shape.append(d)
            elif key in sizes:
                shape.append(sizes[key])
                result.given[key] = sizes[key]
            elif isinstance(d, str) and d in sizes:
                shape.append(sizes[d])
                result.given[key] = sizes[d]
            elif i == 0:
                shape.append(batch)
                result.batch[key] = batch
            else:
                shape.append(1)
                result.guessed[key] = free[key]
        dt = np.dtype(spec.dtype)
        if dt.kind == "f":
            value = rng.standard_normal(shape).astype(dt)
        elif dt.kind in "iu":
            value = rng.integers(0, 2, size=shape).astype(dt)
        elif dt.kind == "b":
            value = rng.integers(0, 2, size=shape).astype(bool)
        elif dt == object:
            value = np.full(shape, "fastort", dtype=object)
        else:
            value = np.zeros(shape, dt)
        result.feeds[spec.name] = value
    return result


def random_inputs(specs: Sequence[Any], batch: int, dims: Optional[Mapping[str, int]] = None,
                  seed: int = 0) -> Dict[str, np.ndarray]:
    """:func:`synthesize`'s arrays alone (``dims`` keys naming no free dim are ignored)."""
    return synthesize(specs, batch, dims, seed, strict=False).feeds


def load_inputs(path: Union[str, "os.PathLike[str]"], names: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
    """Arrays from an ``.npz`` (input name -> array) or ``.npy`` file (one
    input: ``names[0]``, or "input")."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such inputs file: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as e:  # numpy raises ValueError/OSError/zipfile errors for bad files
        raise ValueError(f"cannot read inputs file {path}: {type(e).__name__}: {e}") from e
    if isinstance(data, np.ndarray):
        return {(names[0] if names else "input"): data}
    with data:
        return {k: data[k] for k in data.files}


def tiny_inputs(batch: int = 1) -> Dict[str, np.ndarray]:
    """Seeded random inputs for :func:`fastort.bench.models.tiny_model`: x float32[batch, 4]."""
    return {"x": np.random.default_rng(0).standard_normal((batch, 4)).astype(np.float32)}
