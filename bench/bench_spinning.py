"""onnxruntime spinning on/off and the replicas thread split, side by side (short).

    .venv/bin/python bench/bench_spinning.py
"""
import sys, threading, time, tempfile, os
import numpy as np, onnx
from fastort import Engine
from fastort.bench.models import mlp_model
d = tempfile.mkdtemp(); p = os.path.join(d, "m.onnx"); onnx.save(mlp_model((256, 1024, 1024, 256)), p)
x = {"x": np.ones((1, 256), np.float32)}
def loop(e, c, s=1.0):
    stop = time.perf_counter() + s; n = [0]*c
    def f(k):
        while time.perf_counter() < stop:
            e.run(x); n[k] += 1
    ts = [threading.Thread(target=f, args=(k,)) for k in range(c)]
    [t.start() for t in ts]; [t.join() for t in ts]; return sum(n)/s
cfgs = {
 "r1 t2 spin": dict(replicas=1, intra_op_threads=2),
 "r1 t2 nospin": dict(replicas=1, intra_op_threads=2, session_config={"session.intra_op.allow_spinning": "0"}),
 "r2 t1": dict(replicas=2),
 "r2 t1 nospin": dict(replicas=2, session_config={"session.intra_op.allow_spinning": "0"}),
}
engines = {k: Engine(p, **v) for k, v in cfgs.items()}
for e in engines.values():
    for _ in range(20): e.run(x)
for c in (1, 4):
    tot = {k: 0.0 for k in engines}
    for r in range(3):
        for k in (list(engines) if r % 2 == 0 else list(reversed(engines))):
            tot[k] += loop(engines[k], c, 0.8)
    print(c, {k: round(v/3) for k, v in tot.items()}, flush=True)
