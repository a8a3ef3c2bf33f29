"""Batch scoring with Ray Data: a callable class for ``Dataset.map_batches``.

Each actor loads the model once into a fastort :class:`~fastort.Engine` and
scores Ray's batches (``dict[str, np.ndarray]``, read-only zero-copy views of
the object store) in place: no input column is copied. Outputs come back as new
columns next to the batch's own, rows in the same order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from fastort.engine import Engine
from fastort.errors import ConfigError, FastortError, InvalidInputError
from fastort.ray.threads import CpuBudget, cpu_budget

__all__ = ["Predictor", "PredictorConfig", "DEFAULT_PADDED_BATCH_SIZE", "MODEL_FETCH_TIMEOUT_S"]

#: Batching engine size used for variable-length columns when the caller gives
#: ``padding=`` but no ``max_batch_size``.
DEFAULT_PADDED_BATCH_SIZE = 64
#: Longest wait for a model handed over as a Ray object reference.
MODEL_FETCH_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class PredictorConfig:
    """How a :class:`Predictor` maps columns to the model and back.

    Attributes:
        input_columns: model input name -> column name (default: the column
            named like the input).
        output_columns: model output name -> column name (default: the output's name).
        outputs: the outputs to compute (default: all).
        keep_columns: pass the batch's columns through next to the outputs
            (no copy); False returns only the output columns.
        error_column: when set, a batch that fails is re-run row by row; a row
            that still fails gets the error message in this column ("" for rows
            that succeeded) and filler outputs (NaN for floats, 0 otherwise,
            None for non-tensor outputs) instead of failing the job.
        id_column: a column whose values name the rows in error messages.
        cast_inputs: cast a column whose dtype differs from the input's (a
            copy) instead of failing with InvalidInputError.
    """

    input_columns: Optional[Mapping[str, str]] = None
    output_columns: Optional[Mapping[str, str]] = None
    outputs: Optional[Sequence[str]] = None
    keep_columns: bool = True
    error_column: Optional[str] = None
    id_column: Optional[str] = None
    cast_inputs: bool = False


Batch = Dict[str, np.ndarray]


class Predictor:
    """``Dataset.map_batches`` callable: ``ds.map_batches(Predictor, fn_constructor_args=(model,),
    compute=ActorPoolStrategy(size=2), num_cpus=1)`` (or :func:`fastort.ray.score`).

    Args:
        model: what :class:`~fastort.Engine` accepts (a path or package directory
            visible on every node, model bytes, an ``onnx.ModelProto``) or a Ray
            object reference to model bytes.
        config: a :class:`PredictorConfig`.
        **engine_options: :class:`~fastort.Engine` keywords. ``intra_op_threads``
            defaults to the CPUs Ray assigned to the actor (see
            :mod:`fastort.ray.threads`). Give ``padding={"x": {1: 0.0}}`` to score
            variable-length columns through the batcher's padding.
    """

    def __init__(self, model: Any, config: Optional[PredictorConfig] = None, **engine_options: Any) -> None:
        self.config = config or PredictorConfig()
        if type(model).__name__ == "ObjectRef":
            import ray

            model = ray.get(model, timeout=MODEL_FETCH_TIMEOUT_S)
        options = dict(engine_options)
        self.cpu_budget: CpuBudget = cpu_budget()
        if options.get("intra_op_threads") is None:
            replicas = int(options.get("replicas", 1) or 1)
            options["intra_op_threads"] = max(1, self.cpu_budget.threads // max(1, replicas))
        if options.get("padding") and options.get("max_batch_size") is None and options.get("batching") is None:
            options["max_batch_size"] = DEFAULT_PADDED_BATCH_SIZE
        self.engine = Engine(model, **options)
        self._padded = frozenset(options.get("padding") or ())
        names = [i.name for i in self.engine.inputs]
        columns = dict(self.config.input_columns or {})
        unknown = sorted(set(columns) - set(names))
        if unknown:
            raise ConfigError(f"input_columns names {unknown}, which the model does not have (inputs: {names})")
        self._inputs = [(spec.name, columns.get(spec.name, spec.name), spec.dtype) for spec in self.engine.inputs]
        all_outputs = [o.name for o in self.engine.outputs]
        wanted = list(self.config.outputs) if self.config.outputs is not None else all_outputs
        missing = sorted(set(wanted) - set(all_outputs))
        if missing:
            raise ConfigError(f"outputs names {missing}, which the model does not have (outputs: {all_outputs})")
        renames = dict(self.config.output_columns or {})
        self._outputs = [(name, renames.get(name, name)) for name in wanted]
        self._specs = {o.name: o for o in self.engine.outputs}

    # -- the map_batches entry point ------------------------------------------

    def __call__(self, batch: Batch) -> Batch:
        n = _rows(batch)
        feeds = self.feeds(batch)
        try:
            results = self._score(feeds, n)
            errors: Optional[np.ndarray] = None
        except FastortError as e:
            if self.config.error_column is None:
                raise type(e)(f"{e} [{self._describe_rows(batch, n)}]") from e
            results, errors = self._score_rows(feeds, n)
        out: Batch = dict(batch) if self.config.keep_columns else {}
        for name, column in self._outputs:
            if self.config.keep_columns and column in batch:
                raise ConfigError(f"output column {column!r} would overwrite an input column: set output_columns")
            out[column] = results[name]
        if self.config.error_column is not None:
            out[self.config.error_column] = errors if errors is not None else np.full(n, "", dtype=object)
        return out

    def feeds(self, batch: Batch) -> Batch:
        """The model's inputs taken from ``batch``: the batch's own arrays, not copies
        (unless ``cast_inputs`` has to change a dtype)."""
        feeds: Batch = {}
        for name, column, dtype in self._inputs:
            if column not in batch:
                raise ConfigError(
                    f"the batch has no column {column!r} for model input {name!r} "
                    f"(columns: {sorted(batch)}); map it with PredictorConfig(input_columns=...)"
                )
            value: Any = batch[column]
            if not isinstance(value, np.ndarray):
                value = np.asarray(value)
            if _is_ragged(value, dtype):
                if name not in self._padded:
                    raise ConfigError(
                        f"column {column!r} holds rows of different lengths; give padding={{{name!r}: {{1: 0.0}}}} "
                        "so that the batcher pads them"
                    )
            elif dtype is not None and value.dtype != dtype and value.dtype != object:
                if not self.config.cast_inputs:
                    raise InvalidInputError(
                        f"column {column!r} is {value.dtype}, model input {name!r} wants {dtype}; "
                        "cast it, or set PredictorConfig(cast_inputs=True)"
                    )
                value = value.astype(dtype)
            feeds[name] = value
        return feeds

    def close(self) -> None:
        """Release the engine (Ray also does so when the actor exits)."""
        self.engine.close()

    # -- internals -------------------------------------------------------------

    def _score(self, feeds: Batch, n: int) -> Dict[str, Any]:
        names = [name for name, _ in self._outputs]
        ragged = [k for k, v in feeds.items() if _is_ragged(v, self._input_dtype(k))]
        if not ragged:
            raw = self.engine.run(feeds, outputs=names)
            return {name: _column(raw[name], n, name) for name in names}
        requests = [{k: _row(v, i, k in ragged) for k, v in feeds.items()} for i in range(n)]
        rows = list(self.engine.map(requests, outputs=names))
        return {name: _join_rows([r[name] for r in rows], n) for name in names}

    def _score_rows(self, feeds: Batch, n: int) -> "tuple[Dict[str, Any], np.ndarray]":
        """Row-by-row re-run of a failed batch: results with filler rows, and the error column."""
        names = [name for name, _ in self._outputs]
        ragged = {k for k, v in feeds.items() if _is_ragged(v, self._input_dtype(k))}
        per_row: List[Optional[Dict[str, Any]]] = []
        errors = np.full(n, "", dtype=object)
        for i in range(n):
            try:
                per_row.append(self.engine.run({k: _row(v, i, k in ragged) for k, v in feeds.items()}, outputs=names))
            except FastortError as e:
                per_row.append(None)
                errors[i] = f"{type(e).__name__}: {e}"
        good = next((r for r in per_row if r is not None), None)
        results: Dict[str, Any] = {}
        for name in names:
            filler = self._filler(name, None if good is None else good[name])
            values = [(r[name] if r is not None else filler) for r in per_row]
            results[name] = _join_rows(values, n)
        return results, errors

    def _filler(self, name: str, example: Any) -> Any:
        """What a failed row gets in output ``name``: NaN/0 of the output's row shape, or None."""
        spec = self._specs[name]
        if spec.dtype is None:
            return [None]
        if isinstance(example, np.ndarray):
            shape = example.shape
        else:
            shape = tuple(d if isinstance(d, int) else 1 for d in (spec.shape or (1,)))
        fill = math.nan if np.issubdtype(spec.dtype, np.floating) else 0
        return np.full(shape, fill, dtype=spec.dtype)

    def _input_dtype(self, name: str) -> Optional[np.dtype]:
        return next(d for n, _, d in self._inputs if n == name)

    def _describe_rows(self, batch: Batch, n: int) -> str:
        column = self.config.id_column
        if column is None or column not in batch:
            return f"a batch of {n} rows failed; set PredictorConfig(error_column=...) to keep the other rows"
        ids = np.asarray(batch[column])[:5].tolist()
        more = f" and {n - 5} more" if n > 5 else ""
        return f"batch of rows with {column} {ids}{more} failed"


def _rows(batch: Mapping[str, Any]) -> int:
    lengths = {len(v) for v in batch.values()}
    if len(lengths) > 1:
        raise InvalidInputError(f"batch columns have different lengths: { {k: len(v) for k, v in batch.items()} }")
    return lengths.pop() if lengths else 0


def _is_ragged(value: np.ndarray, dtype: Optional[np.dtype]) -> bool:
    """A Ray variable-shaped tensor column: an object array of per-row arrays."""
    return value.dtype == object and dtype != np.dtype(object) and len(value) > 0 and isinstance(value[0], np.ndarray)


def _row(value: np.ndarray, i: int, ragged: bool) -> np.ndarray:
    """Row ``i`` as a one-row request (a view, not a copy)."""
    if ragged:
        return np.asarray(value[i])[np.newaxis]
    return value[i:i + 1]


def _column(value: Any, n: int, name: str) -> Any:
    """A model output as a batch column of ``n`` rows."""
    if isinstance(value, np.ndarray):
        if value.ndim == 0 or value.shape[0] != n:
            raise InvalidInputError(
                f"output {name!r} has shape {value.shape}, not one row per input row ({n}); "
                "leave it out with PredictorConfig(outputs=...)"
            )
        return value
    if isinstance(value, (list, tuple)) and len(value) == n:  # sequences, e.g. ZipMap's list of dicts
        column = np.empty(n, dtype=object)
        for i, item in enumerate(value):
            column[i] = item
        return column
    raise InvalidInputError(f"output {name!r} is a {type(value).__name__} that does not have one item per row ({n})")


def _join_rows(values: Sequence[Any], n: int) -> Any:
    """One-row results joined into a column: stacked when the rows agree in shape,
    an object array of per-row arrays (Ray's variable-shaped tensors) otherwise."""
    if all(isinstance(v, np.ndarray) for v in values):
        if len({v.shape[1:] for v in values}) == 1 and all(v.shape[:1] == (1,) for v in values):
            return np.concatenate(values) if values else np.empty((0,))
        column = np.empty(n, dtype=object)
        for i, v in enumerate(values):
            column[i] = v[0] if v.shape[:1] == (1,) else v
        return column
    column = np.empty(n, dtype=object)
    for i, v in enumerate(values):
        column[i] = v[0] if isinstance(v, (list, tuple)) and len(v) == 1 else v
    return column
