"""Helpers of the serve tests: a real ``fastort serve`` in a subprocess on free
loopback ports, and the models it serves (built in code)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import List

import numpy as np
import onnx
from onnx import TensorProto, helper

import models  # tests/models.py

#: protocol datatype -> ONNX element type (every datatype fastort serves)
DATATYPES = {
    "BOOL": TensorProto.BOOL, "UINT8": TensorProto.UINT8, "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32, "UINT64": TensorProto.UINT64, "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16, "INT32": TensorProto.INT32, "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16, "FP32": TensorProto.FLOAT, "FP64": TensorProto.DOUBLE,
    "BF16": TensorProto.BFLOAT16, "BYTES": TensorProto.STRING,
}


def alltypes() -> onnx.ModelProto:
    """in_<DT>[batch, 3] -> out_<DT> = Identity, one pair per datatype."""
    nodes, ins, outs = [], [], []
    for dt, et in DATATYPES.items():
        nodes.append(helper.make_node("Identity", [f"in_{dt}"], [f"out_{dt}"]))
        ins.append(models.tensor(f"in_{dt}", et, ["batch", 3]))
        outs.append(models.tensor(f"out_{dt}", et, ["batch", 3]))
    return models.make_model(nodes, ins, outs, opset=21)


def slow(n: int = 256, steps: int = 60) -> onnx.ModelProto:
    """y = x @ x @ ... (``steps`` MatMuls of [n, n] per row): ~50-100 ms per row."""
    nodes, prev = [], "x"
    for i in range(steps):
        nodes.append(helper.make_node("MatMul", [prev, "x"], [f"h{i}"]))
        prev = f"h{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    return models.make_model(nodes, [models.tensor("x", TensorProto.FLOAT, ["batch", n, n])],
                             [models.tensor("y", TensorProto.FLOAT, ["batch", n, n])])


@dataclass
class Served:
    proc: "subprocess.Popen[bytes]"
    http: int
    grpc: int
    metrics: int
    log: str

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc}"

    def metrics_text(self) -> str:
        import urllib.request

        return urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=10).read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample of /metrics (0 when absent)."""
        for line in self.metrics_text().splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


def start(repo: str, tmp: str, *flags: str) -> Served:
    ready = os.path.join(tmp, f"ready-{time.monotonic_ns()}.json")
    log = ready.replace(".json", ".log")
    cmd = [sys.executable, "-m", "fastort.serve", repo, "--host", "127.0.0.1", "--http-port", "0",
           "--grpc-port", "0", "--metrics-port", "0", "--ready-file", ready, "--log-level", "warning", *flags]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while not os.path.exists(ready):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError(f"fastort serve did not start: {open(log).read()}")
        time.sleep(0.1)
    ports = json.load(open(ready))["ports"]
    return Served(proc, ports["http"], ports["grpc"], ports["metrics"], log)


def stop(proc: "subprocess.Popen[bytes]") -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return int(proc.returncode)


def rows(x: np.ndarray) -> List[np.ndarray]:
    return [x[i] for i in range(x.shape[0])]
