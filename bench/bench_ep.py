"""Execution providers side by side: the CPU EP vs OpenVINO in f32 vs OpenVINO
in its own default precision, fastort vs onnxruntime's own Python API with the
same plugin (register_execution_provider_library + add_provider_for_devices),
batch 1 and batched, in one run per model; with each method's max abs error
against the CPU EP in f32.

Models: a CNN, an MLP and a transformer encoder built in code
(tests/ep_models.py), and PP-OCRv4 detection/recognition from the
rapidocr-onnxruntime wheel (downloaded with pip into .cache/, never committed).

    python bench/bench_ep.py --quick          # a few seconds per model (a check that it runs)
    python bench/bench_ep.py --seconds 8      # the numbers for bench/RESULTS.md (quiet machine)
    python bench/bench_ep.py --memory         # RSS per replica with OpenVINO vs the CPU EP
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Dict, List, Tuple

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
CACHE = os.path.join(ROOT, ".cache", "rapidocr")


def feeds_for(model: str, batch: int, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    shapes = {"cnn": (batch, 3, 32, 32), "mlp": (batch, 256), "transformer": (batch, 32, 64),
              "ppocr-det": (batch, 3, 320, 320), "ppocr-rec": (batch, 3, 48, 320)}
    return {"x": rng.standard_normal(shapes[model]).astype(np.float32)}


def build_models(tmp: str) -> Dict[str, str]:
    import onnx

    import ep_models

    paths = {}
    for name, fn in (("cnn", ep_models.cnn), ("mlp", ep_models.mlp), ("transformer", ep_models.transformer)):
        paths[name] = os.path.join(tmp, f"{name}.onnx")
        onnx.save(fn(layers=2) if name == "transformer" else fn(), paths[name])
    return paths


def input_name(path: str) -> str:
    import onnx

    model = onnx.load(path, load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    return next(i.name for i in model.graph.input if i.name not in inits)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def memory(paths: Dict[str, str], replicas: Tuple[int, ...] = (1, 2, 4)) -> List[dict]:
    """RSS growth per engine with 1/2/4 replicas, OpenVINO vs the CPU EP, each in a fresh process."""
    rows = []
    for model, path in paths.items():
        for providers in (["cpu"], ["openvino", "cpu"]):
            for n in replicas:
                code = (f"import sys, numpy as np; sys.path.insert(0, {os.path.join(ROOT, 'bench')!r});"
                        "import bench_ep, fastort; fastort.devices(); base = bench_ep.rss_mb();"
                        f"e = fastort.Engine({path!r}, providers={providers!r}, replicas={n});"
                        f"f = bench_ep.feeds_for({model!r}, 1, np.random.default_rng(0));"
                        f"f = {{bench_ep.input_name({path!r}): f['x']}}; e.run(f);"
                        "print(bench_ep.rss_mb() - base)")
                out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
                mb = float(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else float("nan")
                rows.append({"model": model, "providers": ",".join(providers), "replicas": n, "rss_mb": mb})
                print(f"{model:12} {','.join(providers):13} replicas={n}: +{mb:7.1f} MB")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs, batch 1 and 8, built-in models + OCR rec")
    parser.add_argument("--seconds", type=float, default=6.0, help="time per (model, batch), in all")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: onnxruntime's default)")
    parser.add_argument("--batches", default="1,16", help="batch sizes (default 1,16)")
    parser.add_argument("--models", default=None, help="comma-separated subset (cnn,mlp,transformer,ppocr-det,ppocr-rec)")
    parser.add_argument("--memory", action="store_true", help="measure RSS per replica instead")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()

    import fastort
    from fastort.bench.ep import compare_eps, ep_cases, format_eps
    from fastort.bench.models import packaged_models
    from fastort.runtime import plugin_eps

    reason = plugin_eps.plugin_reason("OpenVINOExecutionProvider")
    if reason:
        print(f"OpenVINO cannot run here: {reason}")
        return 0
    tmp = tempfile.mkdtemp()
    paths = build_models(tmp)
    ocr = packaged_models("rapidocr-onnxruntime==1.4.4", {"ppocr-det": "ch_PP-OCRv4_det_infer.onnx",
                                                          "ppocr-rec": "ch_PP-OCRv4_rec_infer.onnx"}, CACHE)
    if not ocr:
        print("(rapidocr-onnxruntime could not be downloaded: the OCR models are left out)")
    paths.update(ocr)
    if args.quick:
        args.seconds, args.batches = 1.0, "1,8"
        paths = {k: v for k, v in paths.items() if k != "ppocr-det"}
    if args.models:
        paths = {k: v for k, v in paths.items() if k in args.models.split(",")}
    if args.memory:
        rows = memory(paths)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=2)
        return 0
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model_name = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "?")
    print(f"CPU: {model_name}; {os.cpu_count()} cores; onnxruntime {fastort.runtime_info(probe=False)['version']}")
    cases = ep_cases(["cpu", "openvino"], ["f32", "auto"])
    results = []
    rng = np.random.default_rng(0)
    for model, path in paths.items():
        name = input_name(path)
        for batch in (int(b) for b in args.batches.split(",")):
            feeds = {name: feeds_for(model, batch, rng)["x"]}
            res = compare_eps(path, feeds, cases, threads=args.threads, seconds=args.seconds, rows_per_call=batch)
            print(format_eps(res, f"\n{model}, batch {batch}"))
            results += [{"model": model, "batch": batch, "method": r.case, "median_us": r.timing.median_us,
                         "p99_us": r.timing.p99_us, "rows_per_s": r.timing.rows_per_s,
                         "max_abs_err": r.max_abs_err, "runs_on": r.providers, "precision": r.precision}
                        for r in res]
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": model_name, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
