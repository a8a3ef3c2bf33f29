"""The GPU benchmark (issue #5): fastort with device-resident IO vs onnxruntime.

    .venv/bin/python bench/bench_gpu.py [--seconds 2] [--batches 1,2,4,...,256] [--clients 64]

Models, built in code: a ResNet-style CNN (3x224x224 in, stem + 4 stages of
residual blocks, global average pool, 1000 classes) and the MLP
512->2048->2048->512. For each batch size:

  fastort device IO     input already on the GPU (a torch CUDA tensor, read in
                        place through DLPack), output left on the GPU (fastort.Tensor)
  session.run           onnxruntime InferenceSession.run, numpy in, numpy out
  ort iobinding         onnxruntime's own IO binding: input OrtValue on the GPU,
                        output bound to the GPU, run_with_iobinding

Then dynamic batching under --clients concurrent clients, each sending batch-1
requests with numpy inputs: fastort (max_batch_size 64, 2 replicas on one GPU)
vs one InferenceSession called from every client thread.

Targets: fastort device IO >= 2x session.run at batch 1; >= 0.95x ort
iobinding (parity) at the largest batch. Writes bench/out/gpu.json.

Without a usable CUDA device it prints why ("no CUDA device: skipped") and
exits 0, so CI and CPU machines can run it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import sys
import threading
import time
from typing import Any, Callable, Dict, List

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import fastort

HERE = os.path.dirname(os.path.abspath(__file__))


def _conv(nodes: list, inits: list, x: str, cin: int, cout: int, k: int, stride: int, name: str,
          rng: np.random.Generator, relu: bool = True) -> str:
    w = (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)
    b = np.zeros(cout, np.float32)
    inits += [numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(b, f"{name}_b")]
    nodes.append(helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [f"{name}_y"], kernel_shape=[k, k],
                                  strides=[stride, stride], pads=[k // 2] * 4))
    if not relu:
        return f"{name}_y"
    nodes.append(helper.make_node("Relu", [f"{name}_y"], [f"{name}_r"]))
    return f"{name}_r"


def resnet_like(seed: int = 0) -> onnx.ModelProto:
    """ResNet-18-shaped CNN (batch-norm folded into the convolutions)."""
    rng = np.random.default_rng(seed)
    nodes: list = []
    inits: list = []
    x = _conv(nodes, inits, "x", 3, 64, 7, 2, "stem", rng)
    nodes.append(helper.make_node("MaxPool", [x], ["pool"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    x, cin = "pool", 64
    for stage, cout in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            name = f"s{stage}b{block}"
            h = _conv(nodes, inits, x, cin, cout, 3, stride, f"{name}c1", rng)
            h = _conv(nodes, inits, h, cout, cout, 3, 1, f"{name}c2", rng, relu=False)
            skip = x if stride == 1 and cin == cout else _conv(nodes, inits, x, cin, cout, 1, stride, f"{name}sk", rng,
                                                               relu=False)
            nodes.append(helper.make_node("Add", [h, skip], [f"{name}_sum"]))
            nodes.append(helper.make_node("Relu", [f"{name}_sum"], [f"{name}_out"]))
            x, cin = f"{name}_out", cout
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"]))
    fc = (rng.standard_normal((512, 1000)) * 0.02).astype(np.float32)
    inits += [numpy_helper.from_array(fc, "fc_w"), numpy_helper.from_array(np.zeros(1000, np.float32), "fc_b")]
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["y"]))
    graph = helper.make_graph(nodes, "resnet_like", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                    ["batch", 3, 224, 224])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1000])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def mlp(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    sizes = (512, 2048, 2048, 512)
    nodes, inits, x = [], [], "x"
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        inits += [numpy_helper.from_array((rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(np.zeros(b, np.float32), f"b{i}")]
        out = "y" if i == len(sizes) - 2 else f"h{i}"
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [out if i == len(sizes) - 2 else f"g{i}"]))
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [f"g{i}"], [out]))
        x = out
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 512])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 512])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def rate(fn: Callable[[], Any], seconds: float) -> float:
    """Calls per second of fn, after a warm-up."""
    for _ in range(5):
        fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - start)


def bench_model(name: str, model: onnx.ModelProto, shape: tuple, batches: List[int], seconds: float) -> List[Dict]:
    import onnxruntime as ort
    import torch

    data = model.SerializeToString()
    engine = fastort.Engine(data, providers=["cuda"], strict_providers=True, output_device="cuda")
    sess = ort.InferenceSession(data, providers=["CUDAExecutionProvider"])
    rows = []
    for b in batches:
        x = np.random.default_rng(b).standard_normal((b, *shape)).astype(np.float32)
        xt = torch.from_numpy(x).cuda()
        torch.cuda.synchronize()
        binding = sess.io_binding()
        xv = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
        binding.bind_ortvalue_input("x", xv)
        binding.bind_output("y", "cuda")
        ref = sess.run(None, {"x": x})[0]
        got = engine.run(xt)["y"].numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-2, atol=1e-2)
        r = {
            "model": name, "batch": b,
            "fastort_device_io": rate(lambda: engine.run(xt), seconds),
            "session_run": rate(lambda: sess.run(None, {"x": x}), seconds),
            "ort_iobinding": rate(lambda: sess.run_with_iobinding(binding), seconds),
        }
        rows.append(r)
        print(f"{name:8s} batch {b:4d}: fastort {r['fastort_device_io'] * b:12,.0f} samples/s   "
              f"session.run {r['session_run'] * b:12,.0f}   ort iobinding {r['ort_iobinding'] * b:12,.0f}   "
              f"fastort/run {r['fastort_device_io'] / r['session_run']:.2f}x   "
              f"fastort/iobinding {r['fastort_device_io'] / r['ort_iobinding']:.2f}x", flush=True)
    engine.close()
    return rows


def bench_clients(name: str, model: onnx.ModelProto, shape: tuple, clients: int, seconds: float) -> Dict:
    import onnxruntime as ort

    data = model.SerializeToString()
    x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)

    def drive(call: Callable[[], Any]) -> float:
        stop = time.perf_counter() + seconds
        counts = [0] * clients

        def client(i: int) -> None:
            while time.perf_counter() < stop:
                call()
                counts[i] += 1

        for _ in range(3):
            call()
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            list(pool.map(client, range(clients)))
        return sum(counts) / (time.perf_counter() - start)

    with fastort.Engine(data, providers=["cuda"], strict_providers=True, replicas=2, max_batch_size=64,
                        max_delay_us=500) as engine:
        fastort_rps = drive(lambda: engine.run(x))
        mean_batch = engine.stats()["mean_batch_size"]
    sess = ort.InferenceSession(data, providers=["CUDAExecutionProvider"])
    ort_rps = drive(lambda: sess.run(None, {"x": x}))
    print(f"{name:8s} {clients} clients, batch-1 requests: fastort batching {fastort_rps:10,.0f} req/s "
          f"(mean batch {mean_batch:.1f})   session.run {ort_rps:10,.0f} req/s   {fastort_rps / ort_rps:.2f}x", flush=True)
    return {"model": name, "clients": clients, "fastort_batching_rps": fastort_rps, "session_run_rps": ort_rps,
            "mean_batch": mean_batch}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--batches", default="1,2,4,8,16,32,64,128,256")
    parser.add_argument("--clients", type=int, default=64)
    args = parser.parse_args()

    info = fastort.runtime_info()
    status = info["provider_status"]["CUDAExecutionProvider"]
    if not status["available"]:
        print(f"no CUDA device: skipped ({status['reason']})")
        return 0
    try:
        import torch
    except ImportError:
        print("no CUDA device: skipped (torch is needed to make device-resident inputs: pip install torch)")
        return 0
    if not torch.cuda.is_available():
        print("no CUDA device: skipped (torch sees no CUDA device; install a CUDA build of torch)")
        return 0
    device = torch.cuda.get_device_name(0)
    print(f"device: {device}; onnxruntime {info['version']}; torch {torch.__version__}", flush=True)
    batches = [int(b) for b in args.batches.split(",")]
    rows: List[Dict] = []
    rows += bench_model("mlp", mlp(), (512,), batches, args.seconds)
    rows += bench_model("resnet", resnet_like(), (3, 224, 224), batches, args.seconds)
    clients = [bench_clients("mlp", mlp(), (512,), args.clients, args.seconds * 2),
               bench_clients("resnet", resnet_like(), (3, 224, 224), args.clients, args.seconds * 2)]
    print("targets:")
    for model in ("mlp", "resnet"):
        mine = [r for r in rows if r["model"] == model]
        first, last = mine[0], mine[-1]
        ok1 = first["fastort_device_io"] >= 2 * first["session_run"]
        ok2 = last["fastort_device_io"] >= 0.95 * last["ort_iobinding"]
        print(f"   {'PASS' if ok1 else 'FAIL'}  {model} batch {first['batch']}: fastort >= 2x session.run: "
              f"{first['fastort_device_io'] / first['session_run']:.2f}x")
        print(f"   {'PASS' if ok2 else 'FAIL'}  {model} batch {last['batch']}: fastort >= 0.95x ort iobinding: "
              f"{last['fastort_device_io'] / last['ort_iobinding']:.2f}x")
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    with open(os.path.join(HERE, "out", "gpu.json"), "w") as f:
        json.dump({"device": device, "onnxruntime": info["version"], "rows": rows, "clients": clients}, f, indent=1)
    print("wrote bench/out/gpu.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
