"""Prometheus metrics with Triton's names, types and labels, so that existing
dashboards work: ``nv_inference_request_success{model="m",version="1"}`` etc.

The counters are the per-model statistics the server keeps anyway (the
statistics extension reports the same numbers), written out when Prometheus
scrapes; the batcher's own counters (batches run, queue depth) are read from
``Engine.stats()`` then. A latency histogram is added under fastort's name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:  # pragma: no cover
    from .repository import Repository, ServedModel

#: Latency histogram buckets, seconds (100 µs .. 10 s).
BUCKETS = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class Metrics:
    """The server's metrics in a registry of their own."""

    def __init__(self, repository: "Repository") -> None:
        import prometheus_client
        from prometheus_client import CollectorRegistry, Histogram

        prometheus_client.disable_created_metrics()  # Triton has no *_created series
        self.registry = CollectorRegistry(auto_describe=False)
        self.latency = Histogram("fastort_inference_request_duration_seconds",
                                 "Inference request latency, arrival to response", ("model", "version", "protocol"),
                                 buckets=BUCKETS, registry=self.registry)
        self.registry.register(_TritonCollector(repository))  # type: ignore[arg-type]

    def finished(self, model: "ServedModel", protocol: str, error_kind: str, rows: int, total_s: float,
                 input_s: float, infer_s: float, output_s: float) -> None:
        if not error_kind:
            self.latency.labels(model.name, model.version, protocol).observe(total_s)

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


def _family(name: str, doc: str, kind: str) -> Any:
    from prometheus_client.metrics_core import Metric

    return Metric(name, doc, kind)


class _TritonCollector:
    """Triton's metric families from the models' statistics."""

    def __init__(self, repository: "Repository") -> None:
        self.repository = repository

    def collect(self) -> Iterator[Any]:
        f = {
            "success": _family("nv_inference_request_success", "Number of successful inference requests, all batch "
                               "sizes", "counter"),
            "failure": _family("nv_inference_request_failure", "Number of failed inference requests, all batch sizes",
                               "counter"),
            "count": _family("nv_inference_count", "Number of inferences performed (a request of N rows counts N)",
                             "counter"),
            "exec": _family("nv_inference_exec_count", "Number of model executions (batches) performed", "counter"),
            "request": _family("nv_inference_request_duration_us", "Cumulative inference request duration in "
                               "microseconds (arrival to response)", "counter"),
            "input": _family("nv_inference_compute_input_duration_us", "Cumulative time decoding request inputs, "
                             "microseconds", "counter"),
            "infer": _family("nv_inference_compute_infer_duration_us", "Cumulative time in the engine, batcher "
                             "queue and model run together, microseconds", "counter"),
            "output": _family("nv_inference_compute_output_duration_us", "Cumulative time encoding outputs, "
                              "microseconds", "counter"),
            "pending": _family("nv_inference_pending_request_count", "Requests accepted by the server and not yet "
                               "answered", "gauge"),
            "queued": _family("fastort_queue_requests", "Requests waiting in the engine's batching queue", "gauge"),
        }
        for m in self.repository.loaded():
            labels = {"model": m.name, "version": m.version}
            f["success"].add_sample("nv_inference_request_success", labels, m.success)
            for reason, n in sorted(m.failure_reasons.items()):
                f["failure"].add_sample("nv_inference_request_failure", dict(labels, reason=reason), n)
            f["count"].add_sample("nv_inference_count", labels, m.inference_count)
            f["request"].add_sample("nv_inference_request_duration_us", labels, m.success_ns // 1000)
            f["input"].add_sample("nv_inference_compute_input_duration_us", labels, m.compute_input_ns // 1000)
            f["infer"].add_sample("nv_inference_compute_infer_duration_us", labels, m.compute_infer_ns // 1000)
            f["output"].add_sample("nv_inference_compute_output_duration_us", labels, m.compute_output_ns // 1000)
            f["pending"].add_sample("nv_inference_pending_request_count", labels, m.pending)
            try:
                stats = m.engine.stats()
            except Exception:  # closed between the listing and now
                stats = {}
            f["exec"].add_sample("nv_inference_exec_count", labels, float(stats.get("batches", 0)))
            f["queued"].add_sample("fastort_queue_requests", labels, float(stats.get("queue_requests", 0)))
        yield from f.values()
