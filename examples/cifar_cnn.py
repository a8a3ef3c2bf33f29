"""End to end: a CIFAR-10 style CNN from training to serving, offline.

    python examples/cifar_cnn.py [--out DIR] [--epochs 2] [--quantize static|dynamic|none] [--quick]

1. trains the classic small CNN (conv32 -> pool -> conv64 -> pool -> fc128 -> fc10
   on 3x32x32 images) for a moment on synthetic data: ten classes of images,
   each with its own colour cast and stripe pattern plus noise (no downloads);
2. converts it to ONNX (checked, and compared with torch's outputs);
3. optimizes the graph; 4. quantizes it to int8 (static QDQ, calibrated on
   training images); 5. validates the int8 model against torch on held-out
   images; 6. writes a model package; 7. serves it with fastort.Engine.

Needs torch: pip install 'fastort[torch]' (and fastort installed: the examples
run against the installed package). Takes a minute or two on 2 cores;
``--quick`` (small data, one epoch: seconds) is what CI runs.

Note on the flatten size: with 3x32x32 input, two 2x2 poolings leave 64
channels of 8x8, so fc1 takes 64*8*8 = 4096 features. (The widely copied
version of this example says 64*28*28, which is wrong for 32x32 input.)
"""

from __future__ import annotations

# example-requires: torch onnxscript

import argparse
import os
import sys
import tempfile
import time

import numpy as np

import torch
import torch.nn as nn
import torch.nn.functional as F


class CifarCNN(nn.Module):
    """conv(3->32, 3x3) -> relu -> pool -> conv(32->64, 3x3) -> relu -> pool ->
    fc(64*8*8 -> 128) -> relu -> fc(128 -> 10)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2, 2)
        self.fc1 = nn.Linear(64 * 8 * 8, 128)  # 32x32 -> 16x16 -> 8x8 after two poolings
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


def synthetic_cifar(n: int, seed: int = 0, num_classes: int = 10) -> "tuple[np.ndarray, np.ndarray]":
    """``n`` float32 images [n, 3, 32, 32] (roughly normalized) and int64 labels.
    Class k has its own colour cast and a stripe pattern of its own frequency
    and orientation; noise and random brightness make it a (small) task."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=n)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32) / 32.0
    class_rng = np.random.default_rng(1234)
    colours = class_rng.normal(0, 0.6, size=(num_classes, 3)).astype(np.float32)
    freqs = class_rng.uniform(1.0, 4.0, size=num_classes).astype(np.float32)
    angles = class_rng.uniform(0, np.pi, size=num_classes).astype(np.float32)
    images = np.empty((n, 3, 32, 32), np.float32)
    for i, k in enumerate(labels):
        phase = rng.uniform(0, 2 * np.pi)
        stripes = np.sin(2 * np.pi * freqs[k] * (xx * np.cos(angles[k]) + yy * np.sin(angles[k])) + phase)
        brightness = rng.uniform(0.7, 1.3)
        images[i] = brightness * (colours[k][:, None, None] + 0.5 * stripes[None]) \
            + rng.normal(0, 1.2, size=(3, 32, 32))
    return images, labels.astype(np.int64)


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int = 2, batch_size: int = 64,
          seed: int = 0) -> None:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(xt))
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(xt), batch_size):
            idx = perm[i:i + batch_size]
            logits = model(xt[idx])
            loss = F.cross_entropy(logits, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yt[idx]).sum())
            total += len(idx)
        print(f"  epoch {epoch + 1}: loss {loss_sum / total:.3f}, train accuracy {correct / total:.1%}")
    model.eval()


def trained_cnn(n_train: int = 3000, epochs: int = 2, seed: int = 0) -> "tuple[CifarCNN, np.ndarray, np.ndarray]":
    """A CifarCNN trained on synthetic data; also returns (x_train, y_train)."""
    torch.manual_seed(seed)
    model = CifarCNN()
    x, y = synthetic_cifar(n_train, seed=seed)
    train(model, x, y, epochs=epochs, seed=seed)
    return model, x, y


def accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(outputs, axis=1) == labels))


def main(argv: "list[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="where to write the files (default: a temporary folder)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-size", type=int, default=3000)
    parser.add_argument("--quantize", default="static", choices=["static", "dynamic", "none"])
    parser.add_argument("--quick", action="store_true", help="600 training images, one epoch (for CI)")
    args = parser.parse_args(argv)
    if args.quick:
        args.train_size, args.epochs = min(args.train_size, 600), 1

    import fastort
    from fastort.prepare.convert import from_torch
    from fastort.prepare.optimize import optimize
    from fastort.prepare.package import package
    from fastort.prepare.quantize import quantize
    from fastort.prepare.validate import validate

    out = args.out or tempfile.mkdtemp(prefix="fastort-cifar-")
    os.makedirs(out, exist_ok=True)
    t0 = time.perf_counter()

    print(f"1. training the CNN on {args.train_size} synthetic images")
    model, x_train, _ = trained_cnn(args.train_size, args.epochs)
    x_test, y_test = synthetic_cifar(512, seed=99)
    with torch.no_grad():
        torch_acc = accuracy(model(torch.from_numpy(x_test)).numpy(), y_test)
    print(f"   torch accuracy on 512 held-out images: {torch_acc:.1%}")

    print("2. converting to ONNX")
    converted = from_torch(model, torch.from_numpy(x_test[:4]), os.path.join(out, "cnn.onnx"), input_names=["image"],
                           output_names=["logits"])
    print(f"   {converted}")

    print("3. optimizing")
    optimized = optimize(converted, os.path.join(out, "cnn.opt.onnx"), level="basic" if args.quantize != "none"
                         else "extended", inputs=x_test[:64])
    print(f"   {optimized}")

    steps = [converted, optimized]
    final = optimized
    if args.quantize != "none":
        print(f"4. quantizing ({args.quantize} int8)")
        final = quantize(optimized, os.path.join(out, f"cnn.{args.quantize}.onnx"), mode=args.quantize,
                         calibration={"image": x_train[:256]} if args.quantize == "static" else None,
                         per_channel=True, inputs=x_test[:256], min_top1=0.95)
        print(f"   {final}")
        steps.append(final)

    print("5. validating the final model against torch on held-out images")
    report = validate(model, final.model, {"image": x_test}, rtol=0.1, atol=0.25, min_top1=0.95)
    print("   " + str(report).replace("\n", "\n   "))

    print("6. packaging")
    pkg = package(final, os.path.join(out, "package"), steps=steps, validation=[report], replicas=1,
                  max_batch_size=32, name="cifar-cnn", overwrite=True)
    print(f"   {pkg}: " + ", ".join(sorted(os.listdir(pkg))))

    print("7. serving with fastort.Engine")
    with fastort.Engine(pkg) as engine:  # verifies the sha256 of every file, applies the recommended settings
        print(f"   {engine}")
        logits = np.concatenate([r["logits"] for r in engine.map({"image": x_test}, batch_size=64)])
        served_acc = accuracy(logits, y_test)
        single = engine.run({"image": x_test[:1]})["logits"]
    print(f"   accuracy served: {served_acc:.1%} (torch: {torch_acc:.1%}); first image -> class {int(single.argmax())}")
    print(f"done in {time.perf_counter() - t0:.0f} s; files in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
