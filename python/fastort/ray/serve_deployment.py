"""Online serving with Ray Serve: replicas that hold a fastort Engine.

Requests are batched once, in fastort's C++ batcher (``Engine.run_async``):
no ``@serve.batch`` is stacked on top. Ray Serve caps the requests a replica
holds at ``max_ongoing_requests`` (5 by default), which would keep batches from
ever filling (ray-project/ray#43288), so :func:`deployment` raises it to what the
batcher needs and warns when settings contradict each other.

Requests: through a ``DeploymentHandle``, ``handle.remote(x)`` with a numpy
array (one-input models), a dict of arrays or a list of arrays; the answer is a
dict of output name -> numpy array. Over HTTP, ``POST`` an Open Inference
Protocol JSON body (see :mod:`fastort.ray.oip_json`) to the application's route;
``GET`` returns the model's metadata.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional

from ray import serve

from fastort.engine import Engine
from fastort.errors import (
    ConfigError,
    EngineClosedError,
    FastortError,
    InvalidInputError,
    QueueFullError,
    RequestTimeoutError,
    RequestTooLargeError,
)
from fastort.ray import oip_json
from fastort.ray.threads import cpu_budget

if TYPE_CHECKING:  # pragma: no cover
    from ray.serve import Application

__all__ = ["ServeConfig", "FastortDeployment", "deployment", "serve_options", "USER_CODE_THREAD_ENV"]


@dataclass(frozen=True)
class ServeConfig:
    """A fastort Ray Serve deployment's settings.

    Attributes:
        name: the deployment's (and the model's, in HTTP answers) name.
        num_replicas: Serve replicas (each holds one Engine); None: 1, or the
            autoscaler's choice when ``autoscaling_config`` is given.
        autoscaling_config: Ray Serve's autoscaling settings. Its
            ``target_ongoing_requests`` defaults here to ``max_batch_size``, so
            that the autoscaler does not add replicas before batches can fill.
        max_ongoing_requests: requests one replica holds at a time; default
            ``2 * max_batch_size * engine replicas`` (one batch running, one filling).
        max_batch_size, max_delay_us: the engine's batcher (see fastort.BatchConfig).
        request_timeout_s: most seconds a request waits in the batcher's queue.
        max_body_bytes: largest HTTP body accepted.
        ray_actor_options: Ray options of each replica (``num_cpus``, ``resources``...);
            the engine's threads are sized from the CPUs assigned.
        graceful_shutdown_timeout_s: how long a stopping replica may drain.
        access_log: write Ray Serve's access log line for every request. Off by
            default: it cost about a sixth of the replica's CPU time per request
            in ``bench/bench_ray.py``; errors are still logged, and
            ``handle.stats.remote()`` counts the requests.
        user_code_thread: run the replica's handler on Ray Serve's separate
            user-code event loop (Ray's default). Off by default: fastort's
            handler never blocks (the C++ batcher runs the model), so it runs on
            the replica's own loop and saves a thread hop per request (the
            replica's ``RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0``).
    """

    name: str = "fastort"
    num_replicas: Optional[int] = None
    autoscaling_config: Optional[Mapping[str, Any]] = None
    max_ongoing_requests: Optional[int] = None
    max_batch_size: int = 32
    max_delay_us: int = 2000
    request_timeout_s: float = 30.0
    max_body_bytes: int = 64 << 20
    ray_actor_options: Mapping[str, Any] = field(default_factory=dict)
    graceful_shutdown_timeout_s: float = 20.0
    access_log: bool = False
    user_code_thread: bool = False


#: Ray Serve's switch for the replica's separate user-code event loop.
USER_CODE_THREAD_ENV = "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"


def serve_options(config: ServeConfig, engine_options: Mapping[str, Any]) -> Dict[str, Any]:
    """The ``serve.deployment`` options for ``config``; warns when settings contradict each other."""
    batch = config.max_batch_size
    engine_replicas = int(engine_options.get("replicas", 1) or 1)
    if config.num_replicas is not None and config.autoscaling_config is not None:
        raise ConfigError("give num_replicas or autoscaling_config, not both")
    if batch < 1:
        raise ConfigError(f"max_batch_size must be >= 1, got {batch}")
    ongoing = config.max_ongoing_requests
    if ongoing is None:
        ongoing = 2 * batch * engine_replicas
    elif ongoing < batch:
        warnings.warn(
            f"fastort.ray: max_ongoing_requests={ongoing} < max_batch_size={batch}: Ray Serve never hands a "
            f"replica enough requests to fill a batch; raise it to at least {2 * batch}",
            RuntimeWarning, stacklevel=3,
        )
    options: Dict[str, Any] = {
        "name": config.name,
        "max_ongoing_requests": ongoing,
        "graceful_shutdown_timeout_s": config.graceful_shutdown_timeout_s,
        "logging_config": {"enable_access_log": bool(config.access_log)},
    }
    if config.autoscaling_config is not None:
        autoscaling = dict(config.autoscaling_config)
        target = autoscaling.setdefault("target_ongoing_requests", batch)
        if target < batch / 2:
            warnings.warn(
                f"fastort.ray: autoscaling target_ongoing_requests={target} is far below max_batch_size={batch}: "
                "the autoscaler adds replicas long before a batch can fill",
                RuntimeWarning, stacklevel=3,
            )
        if target > ongoing:
            warnings.warn(
                f"fastort.ray: autoscaling target_ongoing_requests={target} > max_ongoing_requests={ongoing}: "
                "a replica can never reach the target, so the autoscaler scales up on every check",
                RuntimeWarning, stacklevel=3,
            )
        options["autoscaling_config"] = autoscaling
    else:
        options["num_replicas"] = config.num_replicas if config.num_replicas is not None else 1
    actor_options = dict(config.ray_actor_options)
    if not config.user_code_thread:  # the user's own runtime_env and env_vars are kept
        runtime_env = dict(actor_options.get("runtime_env") or {})
        env_vars = dict(runtime_env.get("env_vars") or {})
        env_vars.setdefault(USER_CODE_THREAD_ENV, "0")
        runtime_env["env_vars"] = env_vars
        actor_options["runtime_env"] = runtime_env
    cpus = float(actor_options.setdefault("num_cpus", 1))
    threads = engine_options.get("intra_op_threads")
    if threads and cpus > 0 and threads * engine_replicas > cpus:
        warnings.warn(
            f"fastort.ray: intra_op_threads={threads} x replicas={engine_replicas} exceeds the "
            f"num_cpus={cpus:g} each Serve replica reserves: replicas on one node will oversubscribe it",
            RuntimeWarning, stacklevel=3,
        )
    options["ray_actor_options"] = actor_options
    return options


@serve.deployment
class FastortDeployment:
    """A Ray Serve replica holding one fastort Engine (batching on)."""

    def __init__(self, model: Any, config: ServeConfig, engine_options: Mapping[str, Any]) -> None:
        options = dict(engine_options)
        options.setdefault("max_batch_size", config.max_batch_size)
        options.setdefault("max_delay_us", config.max_delay_us)
        if options.get("intra_op_threads") is None:
            replicas = int(options.get("replicas", 1) or 1)
            options["intra_op_threads"] = max(1, cpu_budget().threads // replicas)
        self.config = config
        self.engine = Engine(model, **options)

    async def __call__(self, request: Any) -> Any:
        from starlette.requests import Request

        if isinstance(request, Request):
            return await self._http(request)
        return await self.predict(request)

    async def predict(self, inputs: Any, outputs: Optional[List[str]] = None) -> Dict[str, Any]:
        """numpy in, numpy out: what ``Engine.run`` returns, batched with other requests."""
        return await self.engine.run_async(inputs, outputs=outputs, timeout=self.config.request_timeout_s)

    def stats(self) -> Dict[str, Any]:
        """This replica's batcher counters (``Engine.stats``) and its pid."""
        return {**self.engine.stats(), "pid": os.getpid()}

    def check_health(self) -> None:
        if self.engine.closed:
            raise EngineClosedError("the replica's engine is closed")

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close(drain=True)  # queued requests still get their answers

    async def _http(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        if request.method == "GET":
            return JSONResponse(oip_json.metadata(self.config.name, self.engine.inputs, self.engine.outputs))
        if request.method != "POST":
            return JSONResponse({"error": f"method {request.method} not allowed; POST an inference request"}, 405)
        try:
            body = await request.body()
            inputs, names = oip_json.decode_request(body, self.config.max_body_bytes)
            result = await self.predict(inputs, names)
            return JSONResponse(oip_json.encode_response(self.config.name, result))
        except (InvalidInputError, RequestTooLargeError) as e:
            return JSONResponse({"error": str(e)}, 400)
        except (QueueFullError, EngineClosedError) as e:
            return JSONResponse({"error": str(e)}, 503)
        except RequestTimeoutError as e:
            return JSONResponse({"error": str(e)}, 504)
        except FastortError as e:
            return JSONResponse({"error": f"{type(e).__name__}: {e}"}, 500)


def deployment(
    model: Any,
    config: Optional[ServeConfig] = None,
    *,
    num_replicas: Optional[int] = None,
    autoscaling_config: Optional[Mapping[str, Any]] = None,
    **engine_options: Any,
) -> "Application":
    """A Ray Serve application serving ``model`` with fastort: ``serve.run(deployment(...))``.

    ``model`` is a path or package directory every node can read, model bytes or
    an ``onnx.ModelProto`` (sent to the replicas with the deployment's arguments).
    ``num_replicas`` / ``autoscaling_config`` override ``config``'s; the other
    keywords are :class:`~fastort.Engine` options.
    """
    import dataclasses

    config = config or ServeConfig()
    if num_replicas is not None or autoscaling_config is not None:
        config = dataclasses.replace(
            config,
            num_replicas=num_replicas if num_replicas is not None else config.num_replicas,
            autoscaling_config=autoscaling_config if autoscaling_config is not None else config.autoscaling_config,
        )
    if "max_batch_size" in engine_options or "batching" in engine_options:
        raise ConfigError("set the batch size with ServeConfig(max_batch_size=...), not an Engine keyword")
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    elif not isinstance(model, str):
        serialize = getattr(model, "SerializeToString", None)
        model = bytes(serialize()) if serialize is not None else bytes(model)
    options = serve_options(config, engine_options)
    bound: Any = FastortDeployment  # a serve.Deployment (Ray's decorator is typed as returning the class)
    app: "Application" = bound.options(**options).bind(model, config, dict(engine_options))
    return app
