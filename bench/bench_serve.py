"""fastort serve vs a peer Python server speaking the same protocol, same client, one run.

    .venv/bin/python bench/bench_serve.py --quick           # ~1 min: 1 and 8 clients, fastort only
    .venv/bin/python bench/bench_serve.py --peer mlserver   # + MLServer (venv made on first use)

Model: the MLP 512->2048->2048->512 float32 of bench_batching.py (dynamic batch
dim), batch-1 requests. Load: closed-loop tritonclient clients (asyncio tasks,
spread over --client-procs processes so that the load generator is not one
GIL) for a fixed time after a warm-up, at 1..64 concurrent clients; throughput
and p50/p99 latency per server and client count.

Servers, one at a time on loopback:
  - fastort serve (max_batch_size 32, max_delay_us 2000, 2 replicas)
  - the peer: MLServer with an onnxruntime runtime (bench/serve_peer/), adaptive
    batching at the same size and delay, installed in its own venv under
    .cache/bench-venvs/mlserver (never in the main venv: it pins many packages)
Baselines at 1 client: Engine.run in-process on the same model, and an empty
model (Identity on the same input) served by fastort serve: the protocol's own
cost. Target: p50(serve, 1 client) <= 1.5 x (p50(Engine.run) + p50(empty)).

Writes bench/out/serve.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER_VENV = os.path.join(ROOT, ".cache", "bench-venvs", "mlserver")
PEER_PACKAGES = ["mlserver>=1.6", "onnxruntime", "numpy"]
SIZES = (512, 2048, 2048, 512)
MAX_BATCH, MAX_DELAY_US, REPLICAS = 32, 2000, 2


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except Exception:
        return platform.processor()


def empty_model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", SIZES[0]])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", SIZES[0]])
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "empty", [x], [y])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


# -- load generator ---------------------------------------------------------------------


def _client_proc(url: str, protocol: str, model: str, clients: int, warmup: float, seconds: float,
                 queue: Any) -> None:
    """One load process: ``clients`` closed-loop asyncio clients; puts latencies (s)."""
    if protocol == "grpc":
        import tritonclient.grpc.aio as tc
    else:
        import tritonclient.http.aio as tc  # type: ignore[no-redef]

    x = np.random.default_rng(0).standard_normal((1, SIZES[0])).astype(np.float32)

    async def main() -> List[float]:
        client = tc.InferenceServerClient(url) if protocol == "grpc" else tc.InferenceServerClient(
            url, conn_limit=clients)
        latencies: List[float] = []
        errors = 0
        t_start = time.perf_counter()
        t_count, t_end = t_start + warmup, t_start + warmup + seconds

        async def one() -> None:
            nonlocal errors
            inp = tc.InferInput("x", [1, SIZES[0]], "FP32")
            inp.set_data_from_numpy(x)
            while True:
                t0 = time.perf_counter()
                if t0 >= t_end:
                    return
                try:
                    await client.infer(model, [inp])
                except Exception:
                    errors += 1
                    continue
                t1 = time.perf_counter()
                if t0 >= t_count:
                    latencies.append(t1 - t0)

        try:
            await asyncio.gather(*(one() for _ in range(clients)))
        finally:
            await client.close()
        if errors:
            print(f"  {errors} failed requests", file=sys.stderr)
        return latencies

    queue.put(asyncio.run(main()))


def load(url: str, protocol: str, model: str, clients: int, procs: int, warmup: float, seconds: float
         ) -> Dict[str, float]:
    procs = max(1, min(procs, clients))
    per = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    ps = [ctx.Process(target=_client_proc, args=(url, protocol, model, n, warmup, seconds, queue)) for n in per]
    for p in ps:
        p.start()
    lat: List[float] = []
    for _ in ps:
        lat.extend(queue.get(timeout=warmup + seconds + 120))
    for p in ps:
        p.join(30)
    a = np.array(lat) if lat else np.array([float("nan")])
    return {"clients": clients, "requests": len(lat), "rps": len(lat) / seconds,
            "p50_ms": float(np.percentile(a, 50) * 1e3), "p99_ms": float(np.percentile(a, 99) * 1e3)}


# -- servers ----------------------------------------------------------------------------


class Proc:
    def __init__(self, cmd: List[str], ready: str, log: str, env: Optional[Dict[str, str]] = None) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.ready = ready

    def wait_http_ready(self, port: int, path: str = "/v2/health/ready", timeout: float = 180) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {open(self.log).read()[-3000:]}")
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2).status == 200:
                    return
            except Exception:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready in {timeout}s: {open(self.log).read()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_fastort(repo: str, tmp: str) -> Dict[str, Any]:
    ready = os.path.join(tmp, "fastort-ready.json")
    cmd = [sys.executable, "-m", "fastort.serve", repo, "--http-port", "0", "--grpc-port", "0",
           "--metrics-port", "-1", "--ready-file", ready, "--log-level", "warning",
           "--max-batch-size", str(MAX_BATCH), "--max-delay-us", str(MAX_DELAY_US), "--replicas", str(REPLICAS),
           "--intra-op-threads", "1"]
    p = Proc(cmd, ready, os.path.join(tmp, "fastort.log"))
    deadline = time.monotonic() + 120
    while not os.path.exists(ready):
        if p.proc.poll() is not None or time.monotonic() > deadline:
            p.stop()
            raise RuntimeError(open(p.log).read()[-3000:])
        time.sleep(0.1)
    ports = json.load(open(ready))["ports"]
    return {"proc": p, "http": f"127.0.0.1:{ports['http']}", "grpc": f"127.0.0.1:{ports['grpc']}"}


def peer_python() -> str:
    """The peer's venv (made on first use, apart from the main one)."""
    py = os.path.join(PEER_VENV, "bin", "python")
    if not os.path.exists(os.path.join(PEER_VENV, ".complete")):
        print(f"creating {PEER_VENV} with {' '.join(PEER_PACKAGES)} (once) ...", flush=True)
        shutil.rmtree(PEER_VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", PEER_VENV], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
        open(os.path.join(PEER_VENV, ".complete"), "w").close()
    return py


def start_mlserver(model_path: str, tmp: str) -> Dict[str, Any]:
    py = peer_python()
    root = os.path.join(tmp, "mlserver")
    mdir = os.path.join(root, "mlp")
    os.makedirs(mdir, exist_ok=True)
    shutil.copy(os.path.join(ROOT, "bench", "serve_peer", "mlserver_onnx.py"), root)
    http, grpc_port = free_port(), free_port()
    with open(os.path.join(root, "settings.json"), "w") as f:
        json.dump({"host": "127.0.0.1", "http_port": http, "grpc_port": grpc_port, "metrics_port": free_port(),
                   "parallel_workers": 0, "debug": False}, f)
    with open(os.path.join(mdir, "model-settings.json"), "w") as f:
        json.dump({"name": "mlp", "implementation": "mlserver_onnx.OnnxModel", "max_batch_size": MAX_BATCH,
                   "max_batch_time": MAX_DELAY_US / 1e6,
                   "parameters": {"uri": model_path, "extra": {"threads": REPLICAS}}}, f)
    env = dict(os.environ, PYTHONPATH=root)
    p = Proc([os.path.join(os.path.dirname(py), "mlserver"), "start", root], "", os.path.join(tmp, "mlserver.log"),
             env=env)
    p.wait_http_ready(http, "/v2/models/mlp/ready")
    return {"proc": p, "http": f"127.0.0.1:{http}", "grpc": f"127.0.0.1:{grpc_port}"}


# -- the run ------------------------------------------------------------------------------


def engine_p50(model_path: str, seconds: float) -> Dict[str, float]:
    from fastort import Engine

    x = np.random.default_rng(0).standard_normal((1, SIZES[0])).astype(np.float32)
    with Engine(model_path, intra_op_threads=1) as e:
        for _ in range(50):
            e.run({"x": x})
        lat = []
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            e.run({"x": x})
            lat.append(time.perf_counter() - t0)
    a = np.array(lat)
    return {"clients": 1, "requests": len(lat), "rps": len(lat) / seconds,
            "p50_ms": float(np.percentile(a, 50) * 1e3), "p99_ms": float(np.percentile(a, 99) * 1e3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 s per point; 1 and 8 clients; no peer unless --peer")
    ap.add_argument("--clients", default=None, help="comma-separated client counts (default 1,4,16,64)")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--client-procs", type=int, default=2)
    ap.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    ap.add_argument("--peer", choices=["mlserver", "none"], default="mlserver")
    args = ap.parse_args()
    if args.quick:
        args.clients, args.seconds, args.warmup = args.clients or "1,8", 2.0, 0.5
        args.peer = "none" if "--peer" not in sys.argv else args.peer
    args.clients = args.clients or "1,4,16,64"
    clients = [int(c) for c in args.clients.split(",")]
    from fastort.bench.models import mlp_model

    results: Dict[str, Any] = {"machine": machine(), "command": " ".join(sys.argv), "protocol": args.protocol,
                               "model": f"MLP {'-'.join(map(str, SIZES))}", "seconds": args.seconds}
    with tempfile.TemporaryDirectory() as tmp:
        repo = os.path.join(tmp, "repo")
        os.makedirs(repo)
        model_path = os.path.join(repo, "mlp.onnx")
        onnx.save(mlp_model(SIZES), model_path)
        onnx.save(empty_model(), os.path.join(repo, "empty.onnx"))
        print(f"{results['model']}, batch-1 requests, {args.protocol}, {results['machine']}")
        results["engine_run"] = engine_p50(model_path, args.seconds)
        print(f"  Engine.run in-process      p50 {results['engine_run']['p50_ms']:.3f} ms")
        servers = {"fastort": lambda: start_fastort(repo, tmp)}
        if args.peer == "mlserver":
            servers["mlserver"] = lambda: start_mlserver(model_path, tmp)
        for name, starter in servers.items():
            s = starter()
            try:
                url = s[args.protocol]
                rows = []
                if name == "fastort":
                    results["empty"] = load(url, args.protocol, "empty", 1, 1, args.warmup, args.seconds)
                    print(f"  fastort serve, empty model p50 {results['empty']['p50_ms']:.3f} ms (protocol cost)")
                for n in clients:
                    r = load(url, args.protocol, "mlp", n, args.client_procs, args.warmup, args.seconds)
                    rows.append(r)
                    print(f"  {name:9s} {n:3d} clients: {r['rps']:8.1f} req/s  p50 {r['p50_ms']:7.2f} ms  "
                          f"p99 {r['p99_ms']:7.2f} ms", flush=True)
                results[name] = rows
            finally:
                s["proc"].stop()
    if "mlserver" in results:
        for f, m in zip(results["fastort"], results["mlserver"]):
            if not m["rps"]:
                print(f"  {f['clients']:3d} clients: mlserver answered nothing (see its log)")
                continue
            print(f"  {f['clients']:3d} clients: fastort/mlserver throughput {f['rps'] / m['rps']:.2f}x, "
                  f"p99 {f['p99_ms']:.2f} vs {m['p99_ms']:.2f} ms")
    one = next((r for r in results["fastort"] if r["clients"] == 1), None)
    if one is not None:
        bound = 1.5 * (results["engine_run"]["p50_ms"] + results["empty"]["p50_ms"])
        print(f"  1 client: p50 {one['p50_ms']:.3f} ms vs 1.5 x (Engine.run + empty) = {bound:.3f} ms: "
              f"{'met' if one['p50_ms'] <= bound else 'MISSED'}")
    os.makedirs(os.path.join(ROOT, "bench", "out"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "out", "serve.json"), "w") as f:
        json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
