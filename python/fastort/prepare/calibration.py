"""Calibration data for quantization: :class:`ArrayCalibrationReader` reads
user arrays (or batches) in batches checked against the model's inputs.

Shared by static int8 (:mod:`fastort.prepare.quantize`) and GPTQ weight-only
quantization (:mod:`fastort.prepare.wquant`); ``fastort.prepare.quantize``
re-exports it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable as _IterableABC
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

import numpy as np

from ..errors import CalibrationError, InvalidInputError
from .common import graph_inputs, load_arrays, load_model, normalize_feeds, take_rows

__all__ = ["ArrayCalibrationReader"]


def _is_dataset(data: Any, n_inputs: int) -> bool:
    """Whether ``data`` is one data set of arrays (to cut in batches) rather
    than an iterable of batches."""
    if isinstance(data, (np.ndarray, Mapping)):
        return True
    if isinstance(data, (list, tuple)) and n_inputs > 1 and len(data) == n_inputs:
        return all(isinstance(a, np.ndarray) for a in data)
    return False


class ArrayCalibrationReader:
    """An onnxruntime ``CalibrationDataReader`` over user data, checked against
    the model's inputs as it is read.

    ``data`` is one data set, cut into batches of ``batch_size`` rows: a dict
    input name -> array, one array (one-input models), a tuple of arrays in
    input order (several inputs), or the path of an .npy/.npz file; or an
    iterable of batches, each a dict, a list of arrays or one array. Every
    batch must have the inputs' names, ranks and fixed dims, numeric values and
    no NaN or infinity; otherwise :class:`CalibrationError` says what is wrong.
    """

    def __init__(self, model: Any, data: Any, batch_size: Optional[int] = None,
                 max_batches: Optional[int] = None) -> None:
        self._specs = graph_inputs(load_model(model))
        if isinstance(data, (str, os.PathLike)):
            data = load_arrays(data, "calibration data", CalibrationError)
        if data is None:
            raise CalibrationError("static quantization needs calibration data (calibration=...)")
        self._batches: List[Dict[str, np.ndarray]] = []
        self._source: Optional[Iterator[Any]] = None
        self.batch_size = batch_size
        self.max_batches = max_batches
        if _is_dataset(data, len(self._specs)):
            feeds = self._check(data, "calibration data")
            self._batches = self._split(feeds, batch_size)
            if max_batches is not None:
                self._batches = self._batches[:max_batches]
        elif isinstance(data, _IterableABC) and not isinstance(data, (str, bytes)):
            self._source = iter(data)
        else:
            raise CalibrationError(f"calibration data must be arrays, a dict of arrays, an .npz/.npy path or an "
                                   f"iterable of batches, got {type(data).__name__}")
        self._pos = 0
        self.rows = sum(_rows(b) for b in self._batches)

    def _check(self, data: Any, what: str) -> Dict[str, np.ndarray]:
        try:
            raw = normalize_feeds([type(s)(s.name, s.type, None, s.shape) for s in self._specs], data, what)
        except InvalidInputError as e:
            raise CalibrationError(str(e)) from None
        feeds = {}
        for spec in self._specs:
            arr = raw[spec.name]
            if arr.dtype.kind not in "fiub":
                raise CalibrationError(f"{what}[{spec.name!r}]: values must be numeric, got dtype {arr.dtype}")
            if spec.dtype is not None and spec.dtype.kind in "fiub":
                arr = arr.astype(spec.dtype, copy=False)
            if spec.shape is not None:
                if arr.ndim != len(spec.shape):
                    raise CalibrationError(f"{what}[{spec.name!r}]: the input has {len(spec.shape)} dims "
                                           f"{_shape_str(spec.shape)}, got an array of shape {arr.shape}")
                for i, (d, n) in enumerate(zip(spec.shape, arr.shape)):
                    if isinstance(d, int) and d > 0 and d != n and i > 0:
                        raise CalibrationError(f"{what}[{spec.name!r}]: dim {i} must be {d} "
                                               f"{_shape_str(spec.shape)}, got shape {arr.shape}")
            if arr.ndim and arr.shape[0] == 0:
                raise CalibrationError(f"{what}[{spec.name!r}]: no rows (shape {arr.shape})")
            if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
                raise CalibrationError(f"{what}[{spec.name!r}]: {bad} NaN or infinite value(s); calibration "
                                       "ranges would be meaningless")
            feeds[spec.name] = np.ascontiguousarray(arr)
        rows = {a.shape[0] for a in feeds.values() if a.ndim}
        if len(rows) > 1:
            raise CalibrationError(f"{what}: inputs have different numbers of rows {sorted(rows)}")
        return feeds

    def _split(self, feeds: Dict[str, np.ndarray], batch_size: Optional[int]) -> List[Dict[str, np.ndarray]]:
        n = _rows(feeds)
        fixed = {s.shape[0] for s in self._specs if s.shape and isinstance(s.shape[0], int) and s.shape[0] > 0}
        if fixed:
            size = fixed.pop()
            if n % size:
                raise CalibrationError(f"calibration data: the model's batch dim is fixed to {size}; "
                                       f"{n} rows do not split into batches of {size}")
        else:
            size = batch_size or min(n, 32)
        if size < 1:
            raise CalibrationError(f"batch_size must be >= 1, got {size}")
        return [{k: v[i:i + size] for k, v in feeds.items()} for i in range(0, n, size)]

    # onnxruntime's CalibrationDataReader protocol
    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        if self.max_batches is not None and self._pos >= self.max_batches:
            return None
        if self._pos < len(self._batches):
            batch = self._batches[self._pos]
        elif self._source is not None:
            try:
                item = next(self._source)
            except StopIteration:
                self._source = None
                item = None
            if item is None:
                if not self._batches:
                    raise CalibrationError("the calibration data iterable gave no batches")
                return None
            batch = self._check(item, f"calibration batch {self._pos}")
            self._batches.append(batch)
            self.rows += _rows(batch)
        else:
            if not self._batches:
                raise CalibrationError("no calibration data")
            return None
        self._pos += 1
        return batch

    def rewind(self) -> None:
        self._pos = 0

    def set_range(self, start_index: int, end_index: int) -> None:  # pragma: no cover - onnxruntime API
        self._pos = start_index

    def __iter__(self) -> Iterator[Dict[str, np.ndarray]]:
        return iter(lambda: self.get_next(), None)

    def head(self, rows: int) -> Optional[Dict[str, np.ndarray]]:
        """Up to ``rows`` rows of the data read so far (for validation)."""
        if not self._batches:
            return None
        out: Dict[str, List[np.ndarray]] = {k: [] for k in self._batches[0]}
        total = 0
        for b in self._batches:
            for k, v in b.items():
                out[k].append(v)
            total += _rows(b)
            if total >= rows:
                break
        return take_rows({k: np.concatenate(v, axis=0) for k, v in out.items()}, rows)


def _rows(feeds: Mapping[str, np.ndarray]) -> int:
    return max((v.shape[0] for v in feeds.values() if v.ndim), default=1)


def _shape_str(shape: Sequence[Any]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
