"""What both front ends (HTTP and gRPC) do: look models up, run requests through
the engine's batcher from the event loop, keep statistics (with the engine's
per-request queue / compute split), and describe models (metadata,
Triton-shaped configuration, statistics) as plain dicts."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .protocol import ProtocolError, datatype_of, error_for, model_dims
from .repository import Repository, ServedModel

SERVER_NAME = "fastort"
EXTENSIONS = ["binary_tensor_data", "model_configuration", "statistics", "model_repository"]

#: error kind (protocol.STATUS) -> Triton's failure ``reason`` label
FAILURE_REASONS = {"unavailable": "REJECTED", "timeout": "REJECTED", "cancelled": "CANCELED",
                   "internal": "BACKEND"}

#: protocol datatype -> Triton's model-config data type
CONFIG_TYPES = {"BYTES": "TYPE_STRING"}


@dataclass(frozen=True)
class EngineTime:
    """One request's time in the engine, split as Triton's statistics split it:
    waiting in the queue, then running (a batched request: its batch's run)."""

    queue_s: float
    compute_s: float

    @classmethod
    def of(cls, future: "concurrent.futures.Future[Any]", elapsed_s: float) -> "EngineTime":
        """From the ``timing`` the engine sets on a completed future; without
        one (a run that had no queue) queue time is 0 and all of it is compute."""
        timing = getattr(future, "timing", None)
        if timing is None:
            return cls(0.0, elapsed_s)
        return cls(float(timing["queue_us"]) * 1e-6, float(timing["compute_us"]) * 1e-6)


class Service:
    """The server's state shared by its front ends."""

    def __init__(self, repository: Repository, metrics: Any = None) -> None:
        from fastort._version import __version__

        self.repository = repository
        self.metrics = metrics
        self.version = __version__
        self.models_loaded = False
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # -- health ------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.models_loaded and not self.draining

    def metadata(self) -> Dict[str, Any]:
        return {"name": SERVER_NAME, "version": self.version, "extensions": EXTENSIONS}

    async def wait_idle(self, timeout: float) -> bool:
        """Waits until no request is in flight; False if ``timeout`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    # -- inference -----------------------------------------------------------------

    def model(self, name: str, version: str = "") -> ServedModel:
        try:
            return self.repository.get(name, version)
        except LookupError as e:
            raise error_for(e) from None

    def begin(self, model: ServedModel) -> None:
        """Admits one request (refused while draining)."""
        if self.draining:
            raise ProtocolError("server is shutting down; not accepting new requests", "unavailable")
        self.in_flight += 1
        self._idle.clear()
        model.pending += 1

    def end(self, model: ServedModel, protocol: str, error: Optional[ProtocolError], rows: int,
            t0: float, t_infer: float, t_out: float, t_end: float, engine: Optional[EngineTime] = None) -> None:
        """Accounts one finished request (statistics and metrics); ``engine`` is
        what :meth:`run` returned (None: queue 0, the engine's whole time compute)."""
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()
        model.pending -= 1
        ns = int((t_end - t0) * 1e9)
        if engine is None:
            engine = EngineTime(0.0, t_out - t_infer)
        if error is None:
            model.success += 1
            model.success_ns += ns
            model.inference_count += rows
            model.compute_input_ns += int((t_infer - t0) * 1e9)
            model.queue_ns += int(engine.queue_s * 1e9)
            model.compute_infer_ns += int(engine.compute_s * 1e9)
            model.compute_output_ns += int((t_end - t_out) * 1e9)
            model.last_inference_ms = int(time.time() * 1000)
        else:
            model.failure += 1
            model.failure_ns += ns
            reason = FAILURE_REASONS.get(error.kind, "OTHER")
            model.failure_reasons[reason] = model.failure_reasons.get(reason, 0) + 1
        if self.metrics is not None:
            self.metrics.finished(model, protocol, "" if error is None else error.kind, rows, t_end - t0,
                                  t_infer - t0, engine.queue_s, engine.compute_s, t_end - t_out)

    @staticmethod
    def check_inputs(model: ServedModel, inputs: Dict[str, np.ndarray]) -> None:
        names = [s.name for s in model.engine.inputs]
        missing = [n for n in names if n not in inputs]
        if missing:
            raise ProtocolError(f"model '{model.name}': missing input(s) {', '.join(missing)} "
                                f"(expects {', '.join(names)})")

    def input_spec(self, model: ServedModel, name: str) -> Any:
        for s in model.engine.inputs:
            if s.name == name:
                return s
        names = ", ".join(s.name for s in model.engine.inputs)
        raise ProtocolError(f"model '{model.name}' has no input '{name}' (inputs: {names})")

    def check_outputs(self, model: ServedModel, names: Optional[Sequence[str]]) -> None:
        if names is None:
            return
        known = [s.name for s in model.engine.outputs]
        for n in names:
            if n not in known:
                raise ProtocolError(f"model '{model.name}' has no output '{n}' (outputs: {', '.join(known)})")

    @staticmethod
    def rows(model: ServedModel, inputs: Dict[str, np.ndarray]) -> int:
        if model.max_batch_size and inputs:
            first = next(iter(inputs.values()))
            return int(first.shape[0]) if first.ndim else 1
        return 1

    @staticmethod
    async def run(model: ServedModel, inputs: Dict[str, np.ndarray], outputs: Optional[List[str]],
                  priority: int, timeout: Optional[float]) -> Tuple[Dict[str, Any], EngineTime]:
        """The request through the engine's C++ batcher, awaited on the event loop
        (no thread per request), with its queue / compute split. Cancelling the
        awaiting task cancels the engine's future (``asyncio.wrap_future`` passes
        the cancel on), which removes the request from the queue."""
        t = time.perf_counter()
        try:
            future = model.engine.submit(inputs, outputs=outputs, timeout=timeout, priority=priority)
            result = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            raise error_for(e) from None
        return result, EngineTime.of(future, time.perf_counter() - t)

    # -- descriptions --------------------------------------------------------------

    def model_metadata(self, model: ServedModel) -> Dict[str, Any]:
        def tensor(s: Any) -> Dict[str, Any]:
            return {"name": s.name, "datatype": datatype_of(s.dtype), "shape": model_dims(s)}

        return {
            "name": model.name,
            "versions": [model.version],
            "platform": model.platform,
            "inputs": [tensor(s) for s in model.engine.inputs if s.is_tensor],
            "outputs": [tensor(s) for s in model.engine.outputs if s.is_tensor],
        }

    def model_config(self, model: ServedModel) -> Dict[str, Any]:
        """A Triton-shaped model configuration derived from the engine: with
        batching, ``max_batch_size`` > 0 and dims without the batch dim."""
        batched = model.max_batch_size > 0

        def tensor(s: Any) -> Dict[str, Any]:
            dims = model_dims(s)
            if batched:
                dims = dims[1:]
            dt = datatype_of(s.dtype)
            return {"name": s.name, "data_type": CONFIG_TYPES.get(dt, "TYPE_" + dt), "dims": dims}

        engine = model.engine
        config: Dict[str, Any] = {
            "name": model.name,
            "platform": model.platform,
            "backend": "fastort",
            "max_batch_size": model.max_batch_size,
            "input": [tensor(s) for s in engine.inputs if s.is_tensor],
            "output": [tensor(s) for s in engine.outputs if s.is_tensor],
            "instance_group": [{"name": model.name, "count": engine.replicas,
                                "kind": "KIND_CPU" if engine.device == "cpu" else "KIND_GPU"}],
            "version_policy": {"latest": {"num_versions": 1}},
        }
        batch = engine.batch_config
        if batched and batch is not None:
            config["dynamic_batching"] = {
                "max_queue_delay_microseconds": batch.max_delay_us,
                "priority_levels": batch.priority_levels,
                "default_queue_policy": {"max_queue_size": batch.max_queue},
            }
        return config

    def priority_levels(self, model: ServedModel) -> int:
        batch = model.engine.batch_config
        return batch.priority_levels if batch is not None else 1

    def statistics(self, models: List[ServedModel]) -> Dict[str, Any]:
        """Triton's statistics extension for ``models``."""
        out = []
        for m in models:
            try:
                stats = m.engine.stats()
            except Exception:
                stats = {}
            hist = stats.get("batch_size_histogram", {}) or {}

            def d(count: int, ns: int) -> Dict[str, int]:
                return {"count": count, "ns": ns}

            out.append({
                "name": m.name,
                "version": m.version,
                "last_inference": m.last_inference_ms,
                "inference_count": m.inference_count,
                "execution_count": int(stats.get("batches", 0)),
                "inference_stats": {
                    "success": d(m.success, m.success_ns),
                    "fail": d(m.failure, m.failure_ns),
                    "queue": d(m.success, m.queue_ns),
                    "compute_input": d(m.success, m.compute_input_ns),
                    "compute_infer": d(m.success, m.compute_infer_ns),
                    "compute_output": d(m.success, m.compute_output_ns),
                    "cache_hit": d(0, 0),
                    "cache_miss": d(0, 0),
                },
                "batch_stats": [{"batch_size": int(k), "compute_input": d(0, 0), "compute_infer": d(int(v), 0),
                                 "compute_output": d(0, 0)} for k, v in sorted(hist.items())],
            })
        return {"model_stats": out}

    def models_for_stats(self, name: str, version: str) -> List[ServedModel]:
        if not name:
            return self.repository.loaded()
        return [self.model(name, version)]
