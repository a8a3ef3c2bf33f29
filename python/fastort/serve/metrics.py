"""Prometheus metrics with Triton's names, types and labels, so that existing
dashboards work: ``nv_inference_request_success{model="m",version="1"}`` etc.

The counters are the per-model statistics the server keeps anyway (the
statistics extension reports the same numbers), written out when Prometheus
scrapes; the batcher's own counters (batches run, queue depth) are read from
``Engine.stats()`` then. A latency histogram is added under fastort's name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List

if TYPE_CHECKING:  # pragma: no cover
    from .repository import Repository, ServedModel

#: Latency histogram buckets, seconds (100 µs .. 10 s).
BUCKETS = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class Metrics:
    """The server's metrics in a registry of their own."""

    def __init__(self, repository: "Repository") -> None:
        import prometheus_client
        from prometheus_client import CollectorRegistry, Histogram

        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call,unused-ignore]  # Triton has no *_created series
        self.registry = CollectorRegistry(auto_describe=False)
        self.latency = Histogram("fastort_inference_request_duration_seconds",
                                 "Inference request latency, arrival to response", ("model", "version", "protocol"),
                                 buckets=BUCKETS, registry=self.registry)
        self.repository = repository

    def finished(self, model: "ServedModel", protocol: str, error_kind: str, rows: int, total_s: float,
                 input_s: float, queue_s: float, infer_s: float, output_s: float) -> None:
        if not error_kind:
            self.latency.labels(model.name, model.version, protocol).observe(total_s)

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return triton_text(self.repository).encode() + bytes(generate_latest(self.registry))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


#: Triton's families: (name, type, help); counters keep Triton's names (no ``_total``)
FAMILIES = (
    ("nv_inference_request_success", "counter", "Number of successful inference requests, all batch sizes"),
    ("nv_inference_request_failure", "counter", "Number of failed inference requests, all batch sizes"),
    ("nv_inference_count", "counter", "Number of inferences performed (a request of N rows counts N)"),
    ("nv_inference_exec_count", "counter", "Number of model executions (batches) performed"),
    ("nv_inference_request_duration_us", "counter", "Cumulative inference request duration in microseconds "
     "(arrival to response)"),
    ("nv_inference_queue_duration_us", "counter", "Cumulative time requests waited in the engine's queue "
     "in microseconds"),
    ("nv_inference_compute_input_duration_us", "counter", "Cumulative time decoding request inputs in microseconds"),
    ("nv_inference_compute_infer_duration_us", "counter", "Cumulative time running the model in microseconds "
     "(a batched request counts its batch's run)"),
    ("nv_inference_compute_output_duration_us", "counter", "Cumulative time encoding outputs in microseconds"),
    ("nv_inference_pending_request_count", "gauge", "Requests accepted by the server and not yet answered"),
    ("fastort_queue_requests", "gauge", "Requests waiting in the engine's batching queue"),
)


def triton_text(repository: "Repository") -> str:
    """Triton's metric families in Prometheus' text format (0.0.4), as Triton
    writes them. prometheus_client would rename counters to ``*_total``."""
    samples: Dict[str, List[str]] = {name: [] for name, _, _ in FAMILIES}

    def add(name: str, labels: Dict[str, str], value: float) -> None:
        text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        samples[name].append(f"{name}{{{text}}} {float(value)!r}")

    for m in repository.loaded():
        labels = {"model": m.name, "version": m.version}
        add("nv_inference_request_success", labels, m.success)
        for reason, n in sorted(m.failure_reasons.items()):
            add("nv_inference_request_failure", dict(labels, reason=reason), n)
        add("nv_inference_count", labels, m.inference_count)
        add("nv_inference_request_duration_us", labels, m.success_ns // 1000)
        add("nv_inference_queue_duration_us", labels, m.queue_ns // 1000)
        add("nv_inference_compute_input_duration_us", labels, m.compute_input_ns // 1000)
        add("nv_inference_compute_infer_duration_us", labels, m.compute_infer_ns // 1000)
        add("nv_inference_compute_output_duration_us", labels, m.compute_output_ns // 1000)
        add("nv_inference_pending_request_count", labels, m.pending)
        try:
            stats = m.engine.stats()
        except Exception:  # closed between the listing and now
            stats = {}
        add("nv_inference_exec_count", labels, stats.get("batches", 0))
        add("fastort_queue_requests", labels, stats.get("queue_requests", 0))
    lines = []
    for name, kind, doc in FAMILIES:
        lines.append(f"# HELP {name} {doc}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(samples[name])
    return "\n".join(lines) + "\n"
