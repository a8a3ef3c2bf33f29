"""The model-preparation benchmark: float32 vs optimized vs dynamic int8 vs
static int8, on the MLP 512->2048->2048->512 and the CIFAR-10 style CNN, one run.

    .venv/bin/python bench/bench_prepare.py [--seconds 4] [--out bench/out/prepare.json]

For each model and variant: file size, latency at batch 1 (median per call),
throughput at batch 32 (rows/s) through fastort.Engine, with onnxruntime's
default threads (one per core) and with one thread (less disturbed by other
work on a shared machine); the four variants are timed in alternating rounds
so that a noisy machine disturbs them alike; max abs error and top-1 agreement against float32 on held-out
inputs, and whether the variant passed the validation its step applies
(optimize: rtol 1e-3, atol 1e-4; int8: rtol 0.1, atol 5% of the output's
largest magnitude). The CNN is trained briefly on synthetic images first
(examples/cifar_cnn.py; needs torch). Targets: int8 >= 3.5x smaller; int8
faster than float32 at batch 32.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any, Dict, List

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "examples"))

import fastort  # noqa: E402
from fastort._format import format_bytes, format_table  # noqa: E402
from fastort.prepare.common import measure_latency, model_size  # noqa: E402
from fastort.bench.models import mlp_model  # noqa: E402
from fastort.prepare.optimize import optimize  # noqa: E402
from fastort.prepare.quantize import quantize  # noqa: E402
from fastort.prepare.validate import validate  # noqa: E402

VARIANTS = ("float32", "optimized", "dynamic int8", "static int8")


def variants(float_model: Any, calibration: Dict[str, np.ndarray], held_out: Dict[str, np.ndarray]) -> Dict[str, Any]:
    """The four variants of a model, each validated by its step."""
    t0 = time.perf_counter()
    optimized = optimize(float_model, level="extended", inputs=held_out, measure=False)
    base = optimize(float_model, level="basic", inputs=held_out, measure=False)  # quantization input
    dynamic = quantize(base, mode="dynamic", inputs=held_out, measure=False)
    static = quantize(base, mode="static", calibration=calibration, per_channel=True, inputs=held_out, measure=False)
    print(f"  prepared in {time.perf_counter() - t0:.1f} s")
    return {"float32": (float_model, None), "optimized": (optimized.model, optimized.validation),
            "dynamic int8": (dynamic.model, dynamic.validation), "static int8": (static.model, static.validation)}


def bench_model(name: str, float_model: Any, calibration: Dict[str, np.ndarray], held_out: Dict[str, np.ndarray],
                seconds: float) -> List[Dict[str, Any]]:
    print(f"== {name}")
    models = variants(float_model, calibration, held_out)
    b1 = {k: {n: v[:1] for n, v in held_out.items()} for k in models}
    b32 = {k: {n: v[:32] for n, v in held_out.items()} for k in models}
    protos = {k: m for k, (m, _) in models.items()}
    lat1 = measure_latency(protos, b1, seconds=seconds)
    lat32 = measure_latency(protos, b32, seconds=seconds, rows_per_call=32)
    lat32_1t = measure_latency(protos, b32, seconds=seconds, rows_per_call=32, intra_op_threads=1)
    rows = []
    for key, (model, step_report) in models.items():
        vs_float = validate(float_model, model, held_out, rtol=0.1, atol=0.1, raise_on_failure=False)
        rows.append({
            "model": name, "variant": key, "bytes": model_size(model), "nodes": len(model.graph.node),
            "batch1_us": lat1[key].median_us, "batch32_us": lat32[key].median_us,
            "batch32_rows_per_s": lat32[key].rows_per_s,
            "batch32_1thread_us": lat32_1t[key].median_us, "batch32_1thread_rows_per_s": lat32_1t[key].rows_per_s,
            "max_abs_err": vs_float.max_abs_error, "top1_agreement": vs_float.top1_agreement,
            "validation_passed": None if step_report is None else step_report.passed,
            "step_tolerance": None if step_report is None else {"rtol": step_report.rtol, "atol": step_report.atol},
        })
    return rows


def print_table(rows: List[Dict[str, Any]]) -> None:
    base = {r["model"]: r for r in rows if r["variant"] == "float32"}
    table = []
    for r in rows:
        b = base[r["model"]]
        table.append([
            f"{r['model']}: {r['variant']}", format_bytes(r["bytes"]), f"{b['bytes'] / r['bytes']:.2f}x",
            f"{r['batch1_us']:.0f}", f"{b['batch1_us'] / r['batch1_us']:.2f}x",
            f"{r['batch32_rows_per_s']:.0f}", f"{r['batch32_rows_per_s'] / b['batch32_rows_per_s']:.2f}x",
            f"{r['batch32_1thread_rows_per_s']:.0f}",
            f"{r['batch32_1thread_rows_per_s'] / b['batch32_1thread_rows_per_s']:.2f}x",
            f"{r['max_abs_err']:.3g}", "-" if r["top1_agreement"] is None else f"{r['top1_agreement']:.1%}",
            {None: "-", True: "pass", False: "FAIL"}[r["validation_passed"]],
        ])
    print(format_table(["model: variant", "size", "smaller", "batch 1 (us)", "faster", "batch 32 (rows/s)", "faster",
                        "b32, 1 thread", "faster", "max abs err", "top-1", "validation"], table))


def main(argv: "List[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="timing per batch size and model")
    parser.add_argument("--out", default=os.path.join(HERE, "out", "prepare.json"))
    parser.add_argument("--skip-cnn", action="store_true", help="only the MLP (no torch needed)")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    rows: List[Dict[str, Any]] = []
    mlp = mlp_model((512, 2048, 2048, 512))
    rows += bench_model("MLP 512-2048-2048-512", mlp, {"x": rng.standard_normal((256, 512)).astype(np.float32)},
                        {"x": rng.standard_normal((256, 512)).astype(np.float32)}, args.seconds)
    if not args.skip_cnn:
        from cifar_cnn import synthetic_cifar, trained_cnn

        import torch

        from fastort.prepare.convert import from_torch

        print("== training the CNN briefly on synthetic images")
        torch.set_num_threads(os.cpu_count() or 1)
        model, x_train, _ = trained_cnn(n_train=2000, epochs=1)
        x_test, _ = synthetic_cifar(256, seed=99)
        cnn = from_torch(model, torch.from_numpy(x_test[:4]), input_names=["image"], output_names=["logits"]).model
        rows += bench_model("CNN (CIFAR-10 style)", cnn, {"image": x_train[:256]}, {"image": x_test}, args.seconds)

    print()
    print_table(rows)
    checks = []
    for r in rows:
        if "int8" not in r["variant"]:
            continue
        b = next(x for x in rows if x["model"] == r["model"] and x["variant"] == "float32")
        checks.append((f"{r['model']} {r['variant']}: >= 3.5x smaller", b["bytes"] / r["bytes"] >= 3.5))
        checks.append((f"{r['model']} {r['variant']}: faster than float32 at batch 32",
                       r["batch32_rows_per_s"] > b["batch32_rows_per_s"]))
        checks.append((f"{r['model']} {r['variant']}: faster than float32 at batch 32, 1 thread",
                       r["batch32_1thread_rows_per_s"] > b["batch32_1thread_rows_per_s"]))
        checks.append((f"{r['model']} {r['variant']}: within its validation tolerance", bool(r["validation_passed"])))
    print()
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    info = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "onnxruntime": fastort.runtime_info()["version"], "seconds": args.seconds}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"info": info, "rows": rows, "checks": [{"check": t, "pass": ok} for t, ok in checks]}, f, indent=2,
                  default=str)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
