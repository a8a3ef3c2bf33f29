"""The compression benchmark: weight-only int4 on a small transformer encoder,
and structured pruning of the CIFAR-10 style CNN, each against float32 in one run.

    .venv/bin/python bench/bench_compress.py [--quick] [--seconds 2] [--out bench/out/compress.json]

1. A BERT-like encoder (d=512, 2 layers with --quick; d=768, 2 layers; --encoder DxL)
   (token + position embeddings, pre-norm layers of
   4-head self-attention and a GELU MLP, mean pooling, a classifier), built
   and trained briefly with torch on a synthetic task (find the class marker
   token in a sequence of random tokens). Variants: float32, int8 dynamic,
   int4 block 32, int4 block 128, int4 block 32 with accuracy_level 4. For
   each: file size, bytes of the MatMul weights, latency at batch 1 and batch
   32 through fastort.Engine (the variants timed in alternating rounds), max
   abs error of the logits and cosine of the pooled embedding against
   float32, top-1 agreement with float32, and accuracy on held-out data.
   Targets: int4 >= 5x smaller than float32 on the MatMul weights and faster
   than float32 at batch 1, within its validation tolerance.
2. The CIFAR-10 style CNN (examples/cifar_cnn.py), trained briefly on synthetic
   images, pruned 30 % and 50 % (fastort.prune, magnitude importance) with and
   without a short fine-tune: parameters, size, latency at batch 1 and 32,
   accuracy on held-out synthetic images, and whether the metric judgement
   (accuracy may drop by 0.02 at most) accepted it. Target: a measured latency
   gain, not only fewer MACs.

--quick shrinks the models, the training and the timing so that the whole run
takes a minute or two; the lead re-runs the full one on a quiet machine.
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

import fastort  # noqa: E402  (the installed package, before examples/ puts the source tree on the path)
from fastort._format import format_bytes, format_table  # noqa: E402
from fastort.prepare.common import measure_latency, model_size  # noqa: E402
from fastort.prepare.quantize import quantize  # noqa: E402
from fastort.prepare.validate import run_model  # noqa: E402
from fastort.prepare.wquant import matmul_weight_bytes  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "examples"))


# -- 1. a small transformer encoder -------------------------------------------------------


def encoder_module(vocab: int, seq: int, d: int, layers: int, classes: int) -> Any:
    import torch
    import torch.nn as nn

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.heads = 4
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv = nn.Linear(d, 3 * d)
            self.proj = nn.Linear(d, d)
            self.up = nn.Linear(d, 4 * d)
            self.down = nn.Linear(4 * d, d)

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            b, s, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
            x = x + self.proj((att @ v).transpose(1, 2).reshape(b, s, d))
            return x + self.down(torch.nn.functional.gelu(self.up(self.ln2(x))))

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok = nn.Embedding(vocab, d)
            self.pos = nn.Parameter(torch.randn(1, seq, d) * 0.02)
            self.layers = nn.ModuleList([Layer() for _ in range(layers)])
            self.ln = nn.LayerNorm(d)
            self.head = nn.Linear(d, classes)

        def forward(self, tokens: "torch.Tensor") -> "tuple[torch.Tensor, torch.Tensor]":
            x = self.tok(tokens) + self.pos
            for layer in self.layers:
                x = layer(x)
            embedding = self.ln(x).mean(dim=1)
            return self.head(embedding), embedding

    return Encoder()


def marker_task(n: int, vocab: int, seq: int, classes: int, seed: int) -> "tuple[np.ndarray, np.ndarray]":
    """Random tokens from [classes, vocab) with one marker token k < classes at
    a random place; the label is k."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(classes, vocab, size=(n, seq))
    labels = rng.integers(0, classes, size=n)
    tokens[np.arange(n), rng.integers(0, seq, size=n)] = labels
    return tokens.astype(np.int64), labels.astype(np.int64)


#: (d_model, layers, training steps). A batch-1 request is 32 tokens, so the
#: MatMuls are 32 rows: with float compute (accuracy level 0) int4 only pays once
#: the weights outgrow the caches, and int8 compute (accuracy level 4) pays sooner.
#: At d=128 every int4 variant was slower than float32 at batch 1 (bench/RESULTS.md).
ENCODER_QUICK = (512, 2, 25)
ENCODER_FULL = (768, 2, 60)


def bench_encoder(quick: bool, seconds: float, size: "tuple[int, int] | None" = None) -> List[Dict[str, Any]]:
    import torch

    from fastort.prepare.convert import from_torch

    vocab, seq, classes = 1000, 32, 8
    d, layers, steps = ENCODER_QUICK if quick else ENCODER_FULL
    if size is not None:
        d, layers = size
    print(f"== encoder: d={d}, {layers} layers, seq {seq}; training {steps} steps")
    torch.manual_seed(0)
    model = encoder_module(vocab, seq, d, layers, classes)
    x_train, y_train = marker_task(4096, vocab, seq, classes, seed=0)
    x_test, y_test = marker_task(256, vocab, seq, classes, seed=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, len(xt), (32,))
        loss = torch.nn.functional.cross_entropy(model(xt[idx])[0], yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    print(f"  trained in {time.perf_counter() - t0:.0f} s, last loss {loss.item():.3f}")
    float32 = from_torch(model, torch.from_numpy(x_test[:4]), input_names=["tokens"],
                         output_names=["logits", "pooled"]).model
    held_out = {"tokens": x_test}
    t0 = time.perf_counter()
    variants: Dict[str, Any] = {"float32": (float32, None)}
    dyn = quantize(float32, mode="dynamic", inputs=held_out, measure=False, force=True)
    variants["int8 dynamic"] = (dyn.model, dyn)
    for label, kw in [("int4 block 32", {"block_size": 32}), ("int4 block 128", {"block_size": 128}),
                      ("int4 block 32, acc. level 4", {"block_size": 32, "accuracy_level": 4})]:
        r = quantize(float32, mode="int4", inputs=held_out, measure=False, force=True, **kw)
        variants[label] = (r.model, r)
    print(f"  quantized in {time.perf_counter() - t0:.0f} s")
    protos = {k: m for k, (m, _) in variants.items()}
    lat1 = measure_latency(protos, {k: {"tokens": x_test[:1]} for k in protos}, seconds=seconds)
    lat32 = measure_latency(protos, {k: {"tokens": x_test[:32]} for k in protos}, seconds=seconds, rows_per_call=32)
    ref = run_model(float32, held_out)
    rows = []
    for key, (proto, step) in variants.items():
        out = run_model(proto, held_out)
        e, er = out["pooled"], ref["pooled"]
        cos = np.sum(e * er, axis=1) / (np.linalg.norm(e, axis=1) * np.linalg.norm(er, axis=1))
        rows.append({
            "model": "encoder", "d_model": d, "layers": layers, "variant": key, "bytes": model_size(proto), "matmul_weight_bytes": matmul_weight_bytes(proto),
            "batch1_us": lat1[key].median_us, "batch32_us": lat32[key].median_us,
            "max_abs_err": float(np.abs(out["logits"] - ref["logits"]).max()),
            "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
            "top1_agreement": float(np.mean(out["logits"].argmax(1) == ref["logits"].argmax(1))),
            "accuracy": float(np.mean(out["logits"].argmax(1) == y_test)),
            "validation_passed": None if step is None else bool(step.validation.passed and not step.forced),
        })
    return rows


def print_encoder(rows: List[Dict[str, Any]]) -> None:
    b = rows[0]
    print(f"encoder d={b['d_model']}, {b['layers']} layers, sequence 32:")
    print(format_table(
        ["encoder variant", "size", "MatMul weights", "smaller", "batch 1", "faster", "batch 32", "faster",
         "max abs err", "cos (min)", "top-1 agree", "accuracy", "validation"],
        [[r["variant"], format_bytes(r["bytes"]), format_bytes(r["matmul_weight_bytes"]),
          f"{b['matmul_weight_bytes'] / r['matmul_weight_bytes']:.1f}x", f"{r['batch1_us']:.0f} us",
          f"{b['batch1_us'] / r['batch1_us']:.2f}x", f"{r['batch32_us'] / 1000:.2f} ms",
          f"{b['batch32_us'] / r['batch32_us']:.2f}x", f"{r['max_abs_err']:.3g}", f"{r['min_cosine']:.4f}",
          f"{r['top1_agreement']:.1%}", f"{r['accuracy']:.1%}",
          {None: "-", True: "pass", False: "FAIL"}[r["validation_passed"]]] for r in rows]))


# -- 2. pruning the CIFAR-style CNN ---------------------------------------------------------


def bench_cnn(quick: bool, seconds: float) -> List[Dict[str, Any]]:
    import torch
    from cifar_cnn import synthetic_cifar, train, trained_cnn

    n_train, epochs, ft_epochs = (600, 1, 1) if quick else (3000, 2, 1)
    print(f"== CNN: training on {n_train} synthetic images, {epochs} epoch(s)")
    torch.set_num_threads(os.cpu_count() or 1)
    model, x_train, y_train = trained_cnn(n_train=n_train, epochs=epochs)
    x_test, y_test = synthetic_cifar(256 if quick else 1000, seed=99)
    xt = torch.from_numpy(x_test)

    def accuracy(module: Any) -> float:
        with torch.no_grad():
            return float((module(xt).argmax(1).numpy() == y_test).mean())

    def fine_tune(module: Any) -> None:
        train(module, x_train, y_train, epochs=ft_epochs, seed=1)

    variants: Dict[str, Any] = {}
    base = None
    for ratio in (0.3, 0.5):
        for tuned in (False, True):
            label = f"pruned {ratio:.0%}" + (" + fine-tune" if tuned else "")
            print(f"  {label}")
            r = fastort.prune(model, torch.from_numpy(x_test[:8]), ratio, fine_tune=fine_tune if tuned else None,
                              metric=accuracy, max_metric_drop=0.02, measure=False, force=True)
            if base is None:
                base = r
                variants["float32"] = (r.original_model, r.before.parameters, r.before.metric, None)
            variants[label] = (r.model, r.after.parameters, r.after.metric, not r.forced)
    protos = {k: v[0] for k, v in variants.items()}
    name = protos["float32"].graph.input[0].name
    lat1 = measure_latency(protos, {k: {name: x_test[:1]} for k in protos}, seconds=seconds)
    lat32 = measure_latency(protos, {k: {name: x_test[:32]} for k in protos}, seconds=seconds, rows_per_call=32)
    rows = []
    for key, (proto, params, acc, accepted) in variants.items():
        onnx_acc = float(np.mean(run_model(proto, {name: x_test})[proto.graph.output[0].name].argmax(1) == y_test))
        rows.append({"model": "cnn", "variant": key, "parameters": params, "bytes": model_size(proto),
                     "batch1_us": lat1[key].median_us, "batch32_us": lat32[key].median_us,
                     "accuracy": onnx_acc, "torch_accuracy": acc, "accepted": accepted})
    return rows


def print_cnn(rows: List[Dict[str, Any]]) -> None:
    b = rows[0]
    print(format_table(
        ["CNN variant", "parameters", "size", "smaller", "batch 1", "faster", "batch 32", "faster", "accuracy",
         "accepted (drop <= 0.02)"],
        [[r["variant"], f"{r['parameters']:,}", format_bytes(r["bytes"]), f"{b['bytes'] / r['bytes']:.2f}x",
          f"{r['batch1_us']:.0f} us", f"{b['batch1_us'] / r['batch1_us']:.2f}x", f"{r['batch32_us'] / 1000:.2f} ms",
          f"{b['batch32_us'] / r['batch32_us']:.2f}x", f"{r['accuracy']:.1%}",
          {None: "-", True: "yes", False: "no"}[r["accepted"]]] for r in rows]))


def main(argv: "List[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small models, short training and timing")
    parser.add_argument("--seconds", type=float, default=None, help="timing per batch size (default 3, quick 0.5)")
    parser.add_argument("--out", default=os.path.join(HERE, "out", "compress.json"))
    parser.add_argument("--skip-encoder", action="store_true")
    parser.add_argument("--encoder", default=None, metavar="DxL",
                        help=f"encoder width and layers, e.g. 256x4 (default {ENCODER_QUICK[0]}x{ENCODER_QUICK[1]} "
                             f"with --quick, else {ENCODER_FULL[0]}x{ENCODER_FULL[1]})")
    parser.add_argument("--skip-cnn", action="store_true")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else (0.5 if args.quick else 3.0)
    size = None
    if args.encoder:
        try:
            d, layers = (int(v) for v in args.encoder.lower().split("x"))
        except ValueError:
            parser.error(f"--encoder takes DxL, e.g. 256x4, got {args.encoder!r}")
        if d % 4 or d < 4 or layers < 1:
            parser.error(f"--encoder: the width must be a multiple of the 4 heads and layers >= 1, got {args.encoder!r}")
        size = (d, layers)
    enc = [] if args.skip_encoder else bench_encoder(args.quick, seconds, size)
    cnn = [] if args.skip_cnn else bench_cnn(args.quick, seconds)
    print()
    checks = []
    if enc:
        print_encoder(enc)
        b = enc[0]
        for r in enc:
            if r["variant"].startswith("int4"):
                checks.append((f"encoder {r['variant']}: MatMul weights >= 5x smaller",
                               b["matmul_weight_bytes"] / r["matmul_weight_bytes"] >= 5))
                checks.append((f"encoder {r['variant']}: faster than float32 at batch 1", r["batch1_us"] < b["batch1_us"]))
                checks.append((f"encoder {r['variant']}: within its validation tolerance", bool(r["validation_passed"])))
        print()
    if cnn:
        print_cnn(cnn)
        b = cnn[0]
        for r in cnn[1:]:
            checks.append((f"cnn {r['variant']}: faster than float32 at batch 1", r["batch1_us"] < b["batch1_us"]))
            checks.append((f"cnn {r['variant']}: faster than float32 at batch 32", r["batch32_us"] < b["batch32_us"]))
        print()
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
                   "versions": fastort.runtime_info().get("version"), "quick": args.quick, "seconds": seconds,
                   "command": " ".join(["bench/bench_compress.py"] + list(argv if argv is not None else sys.argv[1:])),
                   "encoder": enc, "cnn": cnn, "checks": [{"check": t, "passed": ok} for t, ok in checks]}, f, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
