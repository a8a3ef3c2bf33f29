"""``fastort.ray.score``: a Ray Data dataset scored by an actor pool of Predictors."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Optional, Type

from fastort.errors import ConfigError
from fastort.ray.predictor import Predictor, PredictorConfig

if TYPE_CHECKING:  # pragma: no cover
    import ray.data

__all__ = ["ScoreConfig", "score"]


@dataclass(frozen=True)
class ScoreConfig:
    """How :func:`score` runs the Predictors.

    Attributes:
        actors: actors in the pool (each loads the model once).
        max_actors: with a value above ``actors``, the pool autoscales between them.
        num_cpus_per_actor: Ray CPUs each actor asks for; its onnxruntime
            threads are sized from it (see :mod:`fastort.ray.threads`).
        batch_size: rows per batch handed to an actor.
        resources: custom Ray resources per actor (e.g. to pin actors to nodes).
        max_tasks_in_flight_per_actor: batches queued per actor (Ray's default
            when None); 2 or more hides the gap between batches.
        max_concurrent_calls_per_actor: batches an actor handles at a time (Ray's
            ``ActorPoolStrategy`` argument). The default, 2, lets Ray fetch and
            format the next batch and write out the last one while the model runs
            (fastort releases the GIL); the model itself still runs one batch at
            a time (Ray's ``enable_true_multi_threading`` stays off), so the
            actor's threads stay within its CPUs. 1 is Ray's own default.
        ray_remote_args: more ``map_batches`` remote arguments (``memory``,
            ``max_restarts``, ``runtime_env``...).
        predictor_class: a :class:`Predictor` subclass to use instead (e.g. one
            that adds pre- or post-processing); it must be importable on the workers.
    """

    actors: int = 1
    max_actors: Optional[int] = None
    num_cpus_per_actor: float = 1.0
    batch_size: int = 1024
    resources: Optional[Mapping[str, float]] = None
    max_tasks_in_flight_per_actor: Optional[int] = None
    max_concurrent_calls_per_actor: int = 2
    ray_remote_args: Mapping[str, Any] = field(default_factory=dict)
    predictor_class: Optional[Type[Predictor]] = None


def score(
    dataset: "ray.data.Dataset",
    model: Any,
    config: Optional[ScoreConfig] = None,
    predictor: Optional[PredictorConfig] = None,
    **engine_options: Any,
) -> "ray.data.Dataset":
    """``dataset`` with the model's outputs as new columns (lazy, like any Ray Data transform).

    ``model`` is a path or package directory every node can read, or model bytes
    / an ``onnx.ModelProto`` (put once into Ray's object store and fetched by each
    actor). A model that cannot be loaded fails the job when its actors start,
    with onnxruntime's reason.
    """
    import ray
    from ray.data import ActorPoolStrategy

    config = config or ScoreConfig()
    if config.actors < 1 or (config.max_actors is not None and config.max_actors < config.actors):
        raise ConfigError(f"need 1 <= actors <= max_actors, got actors={config.actors}, max_actors={config.max_actors}")
    if config.batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {config.batch_size}")
    if config.max_concurrent_calls_per_actor < 1:
        raise ConfigError(f"max_concurrent_calls_per_actor must be >= 1, got {config.max_concurrent_calls_per_actor}")
    if not isinstance(model, (str, os.PathLike)) and type(model).__name__ != "ObjectRef":
        model = ray.put(_model_bytes(model))
    elif isinstance(model, os.PathLike):
        model = os.fspath(model)
    autoscaling = config.max_actors is not None and config.max_actors > config.actors
    compute = ActorPoolStrategy(
        size=None if autoscaling else config.actors,
        min_size=config.actors if autoscaling else None,
        max_size=config.max_actors if autoscaling else None,
        max_tasks_in_flight_per_actor=config.max_tasks_in_flight_per_actor,
        max_concurrent_calls_per_actor=config.max_concurrent_calls_per_actor,
    )
    remote_args = dict(config.ray_remote_args)
    if config.resources:
        remote_args["resources"] = dict(config.resources)
    return dataset.map_batches(
        config.predictor_class or Predictor,
        fn_constructor_args=(model, predictor),
        fn_constructor_kwargs=engine_options,
        compute=compute,
        batch_size=config.batch_size,
        batch_format="numpy",
        zero_copy_batch=True,
        num_cpus=config.num_cpus_per_actor,
        **remote_args,
    )


def _model_bytes(model: Any) -> bytes:
    """Serialized model bytes of bytes-like or ``onnx.ModelProto`` input."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    serialize = getattr(model, "SerializeToString", None)
    if serialize is None:
        raise ConfigError(f"model must be a path, bytes or an onnx.ModelProto, got {type(model).__name__}")
    return bytes(serialize())
