"""fastort on Ray vs plain onnxruntime on Ray, side by side on one local Ray cluster.

    .venv/bin/python bench/bench_ray.py            # a few minutes
    .venv/bin/python bench/bench_ray.py --quick    # ~3 min on a loaded 2-core machine: fewer rows, 1 round, 2 s serve runs

The cluster: a head node (no CPUs) and two worker nodes of 1 logical CPU each,
each with a custom resource naming it, started on this machine with
``ray.cluster_utils.Cluster`` (dashboard off, 1 GiB object store per node).

Ray Data batch scoring (rows/s, the scored dataset consumed to the end):
  - fastort: ``fastort.ray.score`` (Predictor actors, threads sized from the
    CPU Ray assigned: 1 each),
  - plain: the ``map_batches`` class Ray's docs show for onnxruntime (an
    ``InferenceSession`` made in ``__init__``, ``session.run`` in ``__call__``,
    onnxruntime's default threads) with Ray's default actor pool settings,
  - plain, pipelined: the same class with the 2 concurrent calls per actor that
    ``score`` asks Ray for (``max_concurrent_calls_per_actor=2``), to show how much
    of fastort's lead is that setting,
with the same actors (num_cpus=1), batch size and input blocks (materialized
first), for 1 actor on one node and 2 actors on the 2 nodes; MLP 256->512->512->16
and a small CNN (3x32x32, two conv blocks, global pool, 10 classes), built in code.

Ray Serve, 64 concurrent clients (threads, closed loop, one row per request)
over a ``DeploymentHandle`` for a fixed time, 1 replica of num_cpus=1:
  - fastort: ``fastort.ray.deployment`` (fastort's C++ batcher, max batch 32),
  - plain: ``@serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)`` around
    an ``InferenceSession`` (max_ongoing_requests=64, like fastort's default);
  - no-op: a deployment that returns its input, with fastort's Serve settings:
    the ceiling of any deployment with these clients on this cluster, and so the
    most any deployment could gain over plain here;
throughput, p50/p99 latency and the replica's CPU time per request (/proc).
Targets (issue #16): Data MLP >= 1.3x, 2 actors
on 2 nodes >= 1.7x one actor (where the machine has the cores), Serve >= 1.5x
throughput with a lower p99.

Writes bench/out/ray.json. Measured on a shared machine, numbers move: compare
the ratios of one run, not runs with each other.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OBJECT_STORE_BYTES = 1 << 30
MLP_SIZES = (256, 512, 512, 16)
BATCH_SIZE = 1024


class OrtMapBatches:
    """The onnxruntime class from Ray's batch-inference docs: a session per actor, run per batch."""

    def __init__(self, model: Any) -> None:
        import onnxruntime as ort
        import ray

        if isinstance(model, ray.ObjectRef):  # the same model object fastort's actors fetch
            model = ray.get(model, timeout=300)
        self.session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        (y,) = self.session.run(None, {self.input: batch["x"]})
        return {"predictions": y}


def make_features(shape: tuple) -> Any:
    def features(batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        ids = batch["id"]
        rng = np.random.default_rng(int(ids[0]))
        return {"id": ids, "x": rng.standard_normal((len(ids), *shape)).astype(np.float32)}

    return features


def consume(ds: Any) -> "tuple[int, float]":
    """Rows of ``ds`` and rows/s from its first batch on (actor start-up is not counted)."""
    rows, counted, first = 0, 0, 0.0
    for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
        n = len(next(iter(batch.values())))
        if rows == 0:
            first = time.perf_counter()
        else:
            counted += n
        rows += n
    elapsed = time.perf_counter() - first
    return rows, counted / elapsed if elapsed > 0 else 0.0


def bench_data(name: str, model_bytes: bytes, shape: tuple, rows: int, rounds: int) -> List[Dict[str, Any]]:
    import ray
    from ray.data import ActorPoolStrategy

    import fastort.ray as fr

    blocks = max(8, rows // BATCH_SIZE // 2)
    source = ray.data.range(rows, override_num_blocks=blocks).map_batches(make_features(shape)).materialize()
    ref = ray.put(model_bytes)
    results = []
    for actors, placement in ((1, {"node_w0": 1}), (2, {"worker": 1})):
        timings = {}
        for method in ("plain", "plain_pipelined", "fastort") * rounds:  # alternate: a noisy neighbour hits all
            if method == "fastort":
                ds = fr.score(source, ref, fr.ScoreConfig(actors=actors, resources=placement, batch_size=BATCH_SIZE),
                              fr.PredictorConfig(keep_columns=False, outputs=["y"]))
            else:
                calls = fr.ScoreConfig().max_concurrent_calls_per_actor if method == "plain_pipelined" else None
                ds = source.map_batches(OrtMapBatches, fn_constructor_args=(ref,), batch_size=BATCH_SIZE,
                                        compute=ActorPoolStrategy(size=actors, max_concurrent_calls_per_actor=calls),
                                        num_cpus=1, resources=placement, batch_format="numpy")
            n, rate = consume(ds)
            assert n == rows, (method, n, rows)
            timings[method] = max(timings.get(method, 0.0), rate)  # best of the rounds
        results.append({"model": name, "actors": actors, "plain_rows_s": timings["plain"],
                        "plain_pipelined_rows_s": timings["plain_pipelined"],
                        "fastort_rows_s": timings["fastort"], "ratio": timings["fastort"] / timings["plain"],
                        "ratio_vs_pipelined": timings["fastort"] / timings["plain_pipelined"]})
        print(f"  data {name:4s} {actors} actor(s): plain {timings['plain']:8.0f} rows/s   "
              f"plain pipelined {timings['plain_pipelined']:8.0f}   fastort {timings['fastort']:8.0f}   "
              f"{timings['fastort'] / timings['plain']:.2f}x ({timings['fastort'] / timings['plain_pipelined']:.2f}x "
              "vs pipelined)", flush=True)
    return results


def make_plain_serve(model_bytes: bytes) -> Any:
    from ray import serve

    @serve.deployment(name="plain", num_replicas=1, max_ongoing_requests=64, ray_actor_options={"num_cpus": 1})
    class PlainServe:
        def __init__(self, model: bytes) -> None:
            import onnxruntime as ort

            self.session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])

        @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
        async def __call__(self, xs: List[np.ndarray]) -> List[Dict[str, np.ndarray]]:
            (y,) = self.session.run(None, {"x": np.concatenate(xs)})
            return [{"y": row[None]} for row in y]

    return PlainServe.bind(model_bytes)


def make_noop_serve() -> Any:
    """The ceiling: a deployment that returns its input, with fastort's Serve
    settings. No deployment that runs a model can serve more requests per second
    with the same clients on the same cluster: what is left is Ray Serve's own
    work per request (the clients' handles, the router, the replica)."""
    from ray import serve

    from fastort.ray.serve_deployment import ServeConfig, serve_options

    options = serve_options(ServeConfig(name="noop", max_batch_size=32, ray_actor_options={"num_cpus": 1}), {})

    @serve.deployment
    class NoOp:
        async def __call__(self, x: np.ndarray) -> Dict[str, np.ndarray]:
            return {"y": x}

    return NoOp.options(**options).bind()


def drive(handle: Any, x: np.ndarray, clients: int, seconds: float) -> Dict[str, float]:
    """Closed-loop clients for ``seconds``: requests/s and latency percentiles (ms)."""
    stop = time.monotonic() + seconds
    latencies: List[List[float]] = [[] for _ in range(clients)]
    errors: List[str] = []

    def client(i: int) -> None:
        while time.monotonic() < stop:
            t = time.perf_counter()
            try:
                handle.remote(x).result(timeout_s=60)
            except Exception as e:  # counted and reported
                errors.append(repr(e))
                continue
            latencies[i].append(time.perf_counter() - t)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 90)
    elapsed = time.perf_counter() - started
    flat = np.array([v for lat in latencies for v in lat])
    if errors:
        print(f"    {len(errors)} failed requests, e.g. {errors[0]}", file=sys.stderr)
    return {"requests": len(flat), "requests_s": len(flat) / elapsed, "p50_ms": float(np.percentile(flat, 50) * 1e3),
            "p99_ms": float(np.percentile(flat, 99) * 1e3), "errors": len(errors)}


def replica_cpu_seconds(app: str) -> float:
    """CPU seconds used so far by the Serve replica processes of ``app`` on this machine (from /proc)."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f"ServeReplica:{app}:".encode() not in f.read():
                    continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return total


def bench_serve(name: str, model_bytes: bytes, shape: tuple, clients: int, seconds: float) -> Dict[str, Any]:
    from ray import serve

    import fastort.ray as fr

    x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    apps = {
        "plain": lambda: make_plain_serve(model_bytes),
        "fastort": lambda: fr.deployment(model_bytes, fr.ServeConfig(name="fastort", max_batch_size=32,
                                                                    ray_actor_options={"num_cpus": 1})),
        "noop": make_noop_serve,
    }
    out: Dict[str, Any] = {"model": name, "clients": clients}
    for method in ("plain", "fastort", "noop"):
        handle = serve.run(apps[method](), name=method, route_prefix=f"/{method}")
        drive(handle, x, clients, min(2.0, seconds / 2))  # warm-up
        cpu = replica_cpu_seconds(method)
        out[method] = drive(handle, x, clients, seconds)
        out[method]["replica_cpu_ms_per_request"] = ((replica_cpu_seconds(method) - cpu) * 1e3
                                                     / max(out[method]["requests"], 1))
        serve.delete(method)
    out["throughput_ratio"] = out["fastort"]["requests_s"] / out["plain"]["requests_s"]
    # the most any deployment could gain over plain here: the no-op's rate over plain's
    out["ceiling_ratio"] = out["noop"]["requests_s"] / out["plain"]["requests_s"]
    print(f"  serve {name:4s} {clients} clients: plain {out['plain']['requests_s']:7.0f} req/s "
          f"p99 {out['plain']['p99_ms']:6.1f} ms, replica CPU {out['plain']['replica_cpu_ms_per_request']:.2f} ms/req   "
          f"fastort {out['fastort']['requests_s']:7.0f} req/s p99 {out['fastort']['p99_ms']:6.1f} ms, replica CPU "
          f"{out['fastort']['replica_cpu_ms_per_request']:.2f} ms/req   {out['throughput_ratio']:.2f}x   "
          f"no-op ceiling {out['noop']['requests_s']:7.0f} req/s, replica CPU "
          f"{out['noop']['replica_cpu_ms_per_request']:.2f} ms/req (at most {out['ceiling_ratio']:.2f}x plain)",
          flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rows and shorter serve runs")
    parser.add_argument("--rows", type=int, default=None, help="rows per Ray Data run")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per Ray Serve run")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--parts", default="data,serve", help="what to run: data, serve or both (comma-separated)")
    args = parser.parse_args()
    rows = args.rows or (40_000 if args.quick else 200_000)
    parts = set(args.parts.split(","))
    if not parts or not parts <= {"data", "serve"}:
        parser.error(f"--parts takes data, serve or data,serve, got {args.parts!r}")
    seconds = args.seconds or (2.0 if args.quick else 10.0)

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from fastort.bench.timing import machine_info
    from fastort.bench.models import cnn_model, mlp_model

    models = {"mlp": (mlp_model(MLP_SIZES).SerializeToString(), (MLP_SIZES[0],)),
              "cnn": (cnn_model().SerializeToString(), (3, 32, 32))}
    temp_dir = tempfile.mkdtemp(prefix="frb")
    # Ray writes the cluster's address under RAY_TMPDIR/ray (else /tmp/ray, absent on a fresh machine).
    os.environ["RAY_TMPDIR"] = temp_dir
    os.makedirs(os.path.join(temp_dir, "ray"))
    common = dict(object_store_memory=OBJECT_STORE_BYTES, temp_dir=temp_dir, include_dashboard=False)
    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=0, **common))
    report: Dict[str, Any] = {"machine": machine_info(), "command": " ".join(sys.argv), "rows": rows,
                              "serve_seconds": seconds, "data": [], "serve": []}
    try:
        for name in ("w0", "w1"):
            cluster.add_node(num_cpus=1, resources={f"node_{name}": 1, "worker": 1}, **common)
        ray.init(address=cluster.address, log_to_driver=False)
        print(f"cluster: head + 2 worker nodes of 1 CPU; machine: {report['machine']['cpu']}, "
              f"{os.cpu_count()} cores", flush=True)
        if "data" in parts:
            for name, (model, shape) in models.items():
                # a CNN row is 12 KB: half the rows keep the materialized input within the object stores
                report["data"] += bench_data(name, model, shape, rows if name == "mlp" else rows // 2,
                                             1 if args.quick else 2)
        if "serve" in parts:
            serve.start(http_options={"host": "127.0.0.1", "port": 0}, proxy_location="Disabled")
            for name, (model, shape) in models.items():
                report["serve"].append(bench_serve(name, model, shape, args.clients, seconds))
    finally:
        try:
            serve.shutdown()
        except Exception:
            pass
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
    by = {(r["model"], r["actors"]): r for r in report["data"]}
    for name in models if report["data"] else ():
        scaling = by[(name, 2)]["fastort_rows_s"] / by[(name, 1)]["fastort_rows_s"]
        report.setdefault("scaling_2_vs_1", {})[name] = scaling
        print(f"  fastort {name}: 2 actors on 2 nodes / 1 actor = {scaling:.2f}x "
              f"({os.cpu_count()} cores on this machine)")
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    path = os.path.join(HERE, "out", "ray.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
