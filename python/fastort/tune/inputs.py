"""The requests a tuning run sends: the user's own data (arrays, a file, a list
of requests, a generator), or inputs synthesised from the model's declared
shapes. Synthetic inputs are flagged, because latency depends on real shapes
(sequence lengths, image sizes) and sometimes on the values themselves.

A symbolic dim other than the leading batch dim is never guessed: it must be
given (``dims={"seq": 128}``, or ``{"x:2": 48}`` for axis 2 of input ``x``,
which also tells apart dims that share a name), unless ``allow_default_dims=True``
accepts 1.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from ..errors import ConfigError, InvalidInputError

#: Distinct requests synthesised (or taken from a generator) and cycled through.
DEFAULT_REQUESTS = 64
#: Rows used to validate model variants against the original.
VALIDATION_ROWS = 256


@dataclass
class InputSet:
    """Per-request feeds (input name -> array) the clients cycle through."""

    requests: List[Dict[str, np.ndarray]]
    synthetic: bool
    description: str
    notes: List[str] = field(default_factory=list)

    @property
    def rows_per_request(self) -> float:
        """Mean rows (dim 0 of the first input) per request."""
        rows = [next(iter(r.values())).shape[0] if r and next(iter(r.values())).ndim else 1 for r in self.requests]
        return float(np.mean(rows)) if rows else 1.0

    def validation_batches(self, batchable: bool) -> List[Dict[str, np.ndarray]]:
        """Feeds to validate variants on: the requests stacked into one batch
        when the model batches and their shapes agree, else up to 16 requests."""
        reqs = self.requests
        if batchable and len(reqs) > 1:
            shapes = {tuple((k, v.shape[1:], v.dtype.str) for k, v in r.items()) for r in reqs}
            if len(shapes) == 1:
                stacked = {k: np.concatenate([r[k] for r in reqs]) for k in reqs[0]}
                n = next(iter(stacked.values())).shape[0]
                if n > VALIDATION_ROWS:
                    stacked = {k: v[:VALIDATION_ROWS] for k, v in stacked.items()}
                return [stacked]
        return reqs[:16]


def _specs_text(specs: Sequence[Any]) -> str:
    return ", ".join(f"{s.name}: {s.dtype}[{', '.join('?' if d is None else str(d) for d in (s.shape or ()))}]"
                     for s in specs)


def _dim_keys(specs: Sequence[Any]) -> Tuple[Set[str], Set[str]]:
    names: Set[str] = set()
    positional: Set[str] = set()
    for s in specs:
        for i, d in enumerate(s.shape or ()):
            if isinstance(d, str):
                names.add(d)
            if not (isinstance(d, int) and d >= 0):
                positional.add(f"{s.name}:{i}")
    return names, positional


def check_dims(specs: Sequence[Any], dims: Optional[Mapping[str, Any]]) -> Dict[str, int]:
    """``dims`` checked against the model: every key a symbolic dim name (or
    ``"input:axis"`` for an unnamed dim), every value an int >= 1."""
    out: Dict[str, int] = {}
    if not dims:
        return out
    if not isinstance(dims, Mapping):
        raise ConfigError(f"dims must be a mapping of dim name -> size, got {type(dims).__name__}")
    names, positional = _dim_keys(specs)
    for key, value in dims.items():
        if key not in names and key not in positional:
            known = sorted(names) + sorted(positional)
            raise ConfigError(f"dims names {key!r}, which is not a symbolic dim of the model's inputs "
                              f"({_specs_text(specs)}); symbolic dims: {known or 'none'}")
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"dims[{key!r}] must be an int >= 1, got {value!r}")
        out[key] = int(value)
    return out


def synthesize(specs: Sequence[Any], dims: Mapping[str, int], allow_default_dims: bool = False,
               n: int = DEFAULT_REQUESTS, seed: int = 0) -> InputSet:
    """Seeded random requests from the declared shapes (dim 0, when free, is
    the request's rows: 1 unless ``dims`` names it)."""
    notes: List[str] = []
    shapes: Dict[str, List[int]] = {}
    missing: List[str] = []
    for s in specs:
        if s.dtype is None:
            raise InvalidInputError(f"input {s.name!r} is a {s.type}: inputs cannot be synthesised for it; "
                                    "give inputs= (sample requests)")
        shape: List[int] = []
        for i, d in enumerate(s.shape or ()):
            key = f"{s.name}:{i}" if f"{s.name}:{i}" in dims or not isinstance(d, str) else d
            if isinstance(d, int) and d >= 0:
                shape.append(d)
            elif key in dims:
                shape.append(dims[key])
            elif i == 0:
                shape.append(1)
            elif allow_default_dims:
                shape.append(1)
                notes.append(f"dim {key!r} of input {s.name!r} set to 1 (allow_default_dims): latencies "
                             "at real sizes will differ")
            else:
                missing.append(f"{key!r} (input {s.name!r}, axis {i}: key {key!r} or {s.name + ':' + str(i)!r})"
                               if key != f"{s.name}:{i}" else f"{key!r} (input {s.name!r}, axis {i})")
        shapes[s.name] = shape
    if missing:
        raise ConfigError(
            "cannot synthesise inputs: symbolic dim(s) " + ", ".join(missing) + " have no size. Give them "
            "with dims={'name': size} or {'input:axis': size} (command line: --dims name=size), give real "
            "inputs, or pass "
            "allow_default_dims=True to accept 1 (latencies at real sizes will differ)")
    rng = np.random.default_rng(seed)
    requests = []
    for _ in range(n):
        feeds: Dict[str, np.ndarray] = {}
        for s in specs:
            dt, shape = np.dtype(s.dtype), shapes[s.name]
            if dt.kind == "f":
                feeds[s.name] = rng.standard_normal(shape).astype(dt)
            elif dt.kind in "iu":
                feeds[s.name] = rng.integers(0, 2, size=shape).astype(dt)
            elif dt.kind == "b":
                feeds[s.name] = rng.integers(0, 2, size=shape).astype(bool)
            elif dt == object:
                feeds[s.name] = np.full(shape, "fastort", dtype=object)
            else:
                feeds[s.name] = np.zeros(shape, dt)
        requests.append(feeds)
    desc = "synthetic (seeded random values, shapes " + "; ".join(
        f"{k}[{', '.join(map(str, v))}]" for k, v in shapes.items()) + ")"
    notes.insert(0, "results rest on SYNTHETIC inputs (random values at declared shapes): give inputs= "
                    "(real requests) for numbers that hold in production")
    return InputSet(requests, True, desc, notes)


def _load_file(path: str) -> Any:
    if not os.path.isfile(path):
        raise InvalidInputError(f"inputs file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InvalidInputError(f"cannot read inputs from {path} (an .npy or .npz file is expected): {e}") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            return {k: data[k] for k in data.files}
    return data


def _as_feeds(value: Any, specs: Sequence[Any], what: str) -> Dict[str, Any]:
    names = [s.name for s in specs]
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (list, tuple)) and len(value) == len(names) and all(
            isinstance(v, np.ndarray) for v in value):
        return dict(zip(names, value))
    if len(names) == 1:
        return {names[0]: value}
    raise InvalidInputError(f"{what}: a model with inputs {names} needs a dict of input name -> array "
                            f"(or a list of arrays in that order), got {type(value).__name__}")


def _check_request(feeds: Mapping[str, Any], specs: Sequence[Any], what: str) -> Dict[str, np.ndarray]:
    names = [s.name for s in specs]
    unknown = [k for k in feeds if k not in names]
    missing = [n for n in names if n not in feeds]
    if unknown or missing:
        raise InvalidInputError(f"{what}: " + "; ".join(
            ([f"unknown input(s) {unknown}"] if unknown else []) + ([f"missing input(s) {missing}"] if missing else []))
            + f" (the model takes {_specs_text(specs)})")
    out: Dict[str, np.ndarray] = {}
    for s in specs:
        value = feeds[s.name]
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError) as e:
            raise InvalidInputError(f"{what}[{s.name!r}]: not an array: {e}") from None
        if s.dtype is not None and arr.dtype != s.dtype:
            target = np.dtype(s.dtype)
            if arr.dtype == object or not np.can_cast(arr.dtype, target, "same_kind"):
                raise InvalidInputError(f"{what}[{s.name!r}]: dtype {arr.dtype} cannot stand for the model's "
                                        f"{target} (input {s.name!r})")
            arr = arr.astype(target)
        if s.shape is not None:
            if arr.ndim != len(s.shape):
                raise InvalidInputError(f"{what}[{s.name!r}]: rank {arr.ndim} (shape {arr.shape}), the model "
                                        f"expects rank {len(s.shape)} ({_specs_text([s])})")
            for i, d in enumerate(s.shape):
                if isinstance(d, int) and d >= 0 and arr.shape[i] != d:
                    raise InvalidInputError(f"{what}[{s.name!r}]: dim {i} is {arr.shape[i]}, the model fixes it "
                                            f"at {d} ({_specs_text([s])})")
        out[s.name] = np.ascontiguousarray(arr)
    return out


def _split(feeds: Dict[str, np.ndarray], specs: Sequence[Any], rows: int) -> List[Dict[str, np.ndarray]]:
    """A data set (N rows per input) cut into requests of ``rows`` rows."""
    by_name = {s.name: s for s in specs}
    free = all(by_name[k].shape and not (isinstance(by_name[k].shape[0], int) and by_name[k].shape[0] >= 0)
               for k in feeds)
    if not free or not feeds or any(v.ndim == 0 for v in feeds.values()):
        return [feeds]
    counts = {k: v.shape[0] for k, v in feeds.items()}
    if len(set(counts.values())) != 1:
        raise InvalidInputError(f"inputs: the arrays have different numbers of rows {counts}")
    n = next(iter(counts.values()))
    if n == 0:
        raise InvalidInputError("inputs: the arrays have no rows")
    return [{k: np.ascontiguousarray(v[i:i + rows]) for k, v in feeds.items()} for i in range(0, n - rows + 1, rows)] \
        or [feeds]


def from_user(inputs: Any, specs: Sequence[Any], rows: int = 1, limit: int = 1024) -> InputSet:
    """The user's inputs as requests: a dict/array/tuple data set (cut into
    ``rows``-row requests along dim 0), an .npy/.npz path, a list of request
    dicts (shapes may vary), a generator/iterable of requests, or a callable
    returning one request per call."""
    desc = type(inputs).__name__
    if isinstance(inputs, (str, os.PathLike)):
        desc = f"file {os.fspath(inputs)}"
        inputs = _load_file(os.fspath(inputs))
    requests: List[Dict[str, np.ndarray]]
    if isinstance(inputs, (Mapping, np.ndarray, tuple)) or (
            isinstance(inputs, list) and inputs and all(isinstance(v, np.ndarray) for v in inputs)):
        feeds = _check_request(_as_feeds(inputs, specs, "inputs"), specs, "inputs")
        requests = _split(feeds, specs, rows)
        desc += f", cut into {len(requests)} request(s)"
    elif isinstance(inputs, list):
        if not inputs:
            raise InvalidInputError("inputs: the list of requests is empty")
        requests = [_check_request(_as_feeds(r, specs, f"inputs[{i}]"), specs, f"inputs[{i}]")
                    for i, r in enumerate(inputs[:limit])]
        desc = f"{len(requests)} request(s) given as a list"
    elif callable(inputs):
        requests = [_check_request(_as_feeds(inputs(), specs, f"inputs() call {i}"), specs, f"inputs() call {i}")
                    for i in range(DEFAULT_REQUESTS)]
        desc = f"{len(requests)} request(s) from {getattr(inputs, '__name__', 'a callable')}()"
    elif isinstance(inputs, Iterable):
        taken = list(itertools.islice(iter(inputs), limit))
        if not taken:
            raise InvalidInputError("inputs: the generator gave no requests")
        requests = [_check_request(_as_feeds(r, specs, f"inputs item {i}"), specs, f"inputs item {i}")
                    for i, r in enumerate(taken)]
        desc = f"{len(requests)} request(s) from an iterable"
    else:
        raise InvalidInputError(f"inputs must be arrays (dict, list, tuple, array), an .npy/.npz path, a list of "
                                f"requests, a generator or a callable; got {type(inputs).__name__}")
    return InputSet(requests, False, desc)


def make_inputs(inputs: Any, specs: Sequence[Any], dims: Optional[Mapping[str, Any]] = None,
                allow_default_dims: bool = False) -> InputSet:
    """The request set of a tuning run (see the module docstring)."""
    checked = check_dims(specs, dims)
    if inputs is None:
        return synthesize(specs, checked, allow_default_dims)
    rows = 1
    for s in specs:
        if s.shape and isinstance(s.shape[0], str) and s.shape[0] in checked:
            rows = checked[s.shape[0]]
    result = from_user(inputs, specs, rows)
    if checked:
        result.notes.append("dims= only shapes synthetic inputs; the given inputs were used as they are")
    return result
