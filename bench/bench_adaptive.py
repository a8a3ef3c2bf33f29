"""Batching with defaults vs no batching, side by side (issue 13).

    .venv/bin/python bench/bench_adaptive.py --short     # ~1 min: MLP + CNN, 1/4/16 clients
    .venv/bin/python bench/bench_adaptive.py             # + tiny transformer (needs torch), longer points

Closed-loop clients (Python threads) send batch-1 requests to one of:
  - plain:     Engine(model, replicas=R)                       (no batching; engine.run)
  - adaptive:  Engine(model, replicas=R, max_batch_size=32)    (the default adaptive policy)
  - fixed:     the same with adaptive_batching=False           (wait for 32 rows or 2 ms)
Points alternate between the methods in rounds, so that a noisy neighbour
disturbs all alike. Prints requests/s and each batching engine's ratio to plain,
and the policy the adaptive engine learned (stats()['policy']).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fastort import Engine
from fastort.bench.models import mlp_model


def cnn_model(seed: int = 0) -> onnx.ModelProto:
    """x[batch, 3, 32, 32] -> conv 16 -> relu -> conv 32 -> relu -> global pool -> [batch, 32]."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array((rng.standard_normal((16, 3, 3, 3)) * 0.2).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((32, 16, 3, 3)) * 0.1).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 32])], [w1, w2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def transformer_model(path: str) -> Tuple[str, np.ndarray]:
    """A 2-layer encoder (d=128, seq 32) exported with torch."""
    import torch

    layer = torch.nn.TransformerEncoderLayer(128, 4, 256, batch_first=True)
    model = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    x = torch.randn(1, 32, 128)
    torch.onnx.export(model, (x,), path, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False)
    return path, x.numpy()


def closed_loop(call: Callable[[], Any], clients: int, seconds: float) -> float:
    """Requests per second of `clients` threads calling `call` for `seconds`."""
    stop = time.perf_counter() + seconds
    counts = [0] * clients

    def client(k: int) -> None:
        n = 0
        while time.perf_counter() < stop:
            call()
            n += 1
        counts[k] = n

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


def run_model(name: str, path: str, x: np.ndarray, clients: List[int], seconds: float, rounds: int,
              replicas: int) -> Dict[str, Any]:
    feed = {"x": x}
    engines = {
        "plain": Engine(path, replicas=replicas),
        "adaptive": Engine(path, replicas=replicas, max_batch_size=32, max_delay_us=2000),
        "fixed": Engine(path, replicas=replicas, max_batch_size=32, max_delay_us=2000, adaptive_batching=False),
    }
    out: Dict[str, Any] = {"model": name, "replicas": replicas, "points": []}
    try:
        for e in engines.values():
            for _ in range(20):
                e.run(feed)
        for c in clients:
            totals = {k: 0.0 for k in engines}
            for r in range(rounds):
                order = list(engines) if r % 2 == 0 else list(reversed(engines))
                for k in order:
                    e = engines[k]
                    totals[k] += closed_loop(lambda e=e: e.run(feed), c, seconds / rounds)
            rps = {k: v / rounds for k, v in totals.items()}
            point = {"clients": c, "rps": rps, "adaptive_vs_plain": rps["adaptive"] / rps["plain"],
                     "fixed_vs_plain": rps["fixed"] / rps["plain"]}
            out["points"].append(point)
            print(f"{name:12s} clients={c:3d}  plain {rps['plain']:8.0f}/s  adaptive {rps['adaptive']:8.0f}/s "
                  f"({point['adaptive_vs_plain']:.2f}x)  fixed {rps['fixed']:8.0f}/s ({point['fixed_vs_plain']:.2f}x)",
                  flush=True)
        policy = engines["adaptive"].stats().get("policy", {})
        out["policy"] = policy
        print(f"{name:12s} learned: {json.dumps(policy, default=str)}", flush=True)
    finally:
        for e in engines.values():
            e.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="MLP + CNN only, 1.5 s per point")
    parser.add_argument("--seconds", type=float, default=None, help="per point per method, all rounds (default 3; short 1.5)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--models", default=None, help="comma list of mlp,cnn,transformer")
    args = parser.parse_args()
    seconds = args.seconds or (1.5 if args.short else 3.0)
    clients = [int(c) for c in args.clients.split(",")]
    names = args.models.split(",") if args.models else (["mlp", "cnn"] if args.short else ["mlp", "cnn", "transformer"])
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            path = os.path.join(tmp, name + ".onnx")
            if name == "mlp":
                onnx.save(mlp_model((256, 1024, 1024, 256)), path)
                x = np.random.default_rng(0).standard_normal((1, 256)).astype(np.float32)
            elif name == "cnn":
                onnx.save(cnn_model(), path)
                x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
            elif name == "transformer":
                path, x = transformer_model(path)
            else:
                raise SystemExit(f"unknown model {name!r}")
            results.append(run_model(name, path, x, clients, seconds, args.rounds, args.replicas))
    os.makedirs(os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"), exist_ok=True)
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "adaptive.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
