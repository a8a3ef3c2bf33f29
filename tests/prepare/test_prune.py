"""fastort.prune: structured pruning of small torch models with torch-pruning,
fine-tuning per step, the metric and output judgements, the before/after
report, the failure paths, and `fastort prepare --prune`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")
nn = torch.nn

import fastort  # noqa: E402
from fastort.cli import main  # noqa: E402
from fastort.errors import MissingDependencyError, PruningError, ValidationError  # noqa: E402
from fastort.prepare.prune import prune  # noqa: E402

import conftest  # noqa: E402


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc1 = nn.Linear(32 * 4, 64)
        self.fc2 = nn.Linear(64, 5)

    def forward(self, x: "torch.Tensor") -> "torch.Tensor":
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


def _mlp() -> "nn.Module":
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return SmallCNN().eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def _convs(model):
    import onnx

    return [tuple(i.dims) for i in model.graph.initializer if len(i.dims) == 4]


def test_prune_cnn_shapes_export_and_report(cnn, images, tmp_path):
    calls = []
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    path = tmp_path / "pruned.onnx"
    result = prune(cnn, images, 0.5, fine_tune=calls.append, path=path, force=True, latency_seconds=0.2)
    assert calls == [result.module]  # called once, with the pruned module
    # the original is untouched, the copy is smaller, and the output keeps its shape
    assert all(torch.equal(before[k], v) for k, v in cnn.state_dict().items())
    pruned = result.module
    assert pruned.conv1.out_channels == 8 and pruned.bn1.num_features == 8 and pruned.conv2.in_channels == 8
    assert pruned.conv2.out_channels == 16 and pruned.fc1.in_features == 16 * 4
    assert pruned.fc2.out_features == 5  # the output layer is kept whole
    assert pruned(images).shape == (8, 5)
    # the export is checked against torch by the converter, and is really smaller
    assert result.after.parameters < result.before.parameters / 2
    assert result.after.bytes < result.before.bytes
    assert (8, 3, 3, 3) in _convs(result.model) and (16, 3, 3, 3) in _convs(result.original_model)
    got = conftest.ort_session(path).run(None, {conftest.ort_session(path).get_inputs()[0].name: images.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, pruned(images).numpy(), rtol=1e-4, atol=1e-5)
    # latency measured on both sides, at batch 1 and batched
    for side in (result.before, result.after):
        assert side.latency_us > 0 and side.batch_latency_us > side.latency_us
    assert "latency batch 32" in result.table and "parameters" in result.table
    step = result.step_result()
    assert step.step == "prune" and step.provenance()["settings"]["ratio"] == 0.5


def test_fine_tune_per_step_and_history(cnn, images):
    seen = []

    def fine_tune(module):
        seen.append(sum(p.numel() for p in module.parameters()))

    r = prune(cnn, images, 0.5, steps=3, fine_tune=fine_tune, metric=lambda m: 1.0, measure=False)
    assert len(seen) == 3 and seen[0] > seen[1] > seen[2]
    assert [h["parameters"] for h in r.history] == seen
    assert all(h["metric"] == 1.0 and h["fine_tuned"] for h in r.history)


def test_fine_tune_recovers_metric():
    """A trained MLP, pruned hard: the metric (accuracy) decides, and a short fine-tune recovers it."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 16, generator=g)
    y = (x[:, :4].argmax(1)).long()
    model = _mlp()

    def train(module, epochs=30):
        module.train()
        opt = torch.optim.Adam(module.parameters(), lr=1e-2)
        for _ in range(epochs):
            opt.zero_grad()
            nn.functional.cross_entropy(module(x), y).backward()
            opt.step()
        module.eval()

    def accuracy(module):
        with torch.no_grad():
            return float((module(x).argmax(1) == y).float().mean())

    train(model, 100)
    assert accuracy(model) > 0.9
    tuned = prune(model, x[:32], 0.5, fine_tune=train, metric=accuracy, max_metric_drop=0.05, measure=False)
    assert tuned.after.metric >= tuned.before.metric - 0.05
    assert tuned.module[0].out_features == 32


def test_metric_refusal_and_force(images, cnn):
    scores = iter([0.9, 0.5])  # before, after
    with pytest.raises(ValidationError, match="metric 0.9 -> 0.5"):
        prune(cnn, images, 0.5, metric=lambda m: next(scores), measure=False)
    scores = iter([0.9, 0.5])
    with pytest.warns(RuntimeWarning, match="force=True"):
        r = prune(cnn, images, 0.5, metric=lambda m: next(scores), measure=False, force=True)
    assert r.forced and r.before.metric == 0.9 and r.after.metric == 0.5
    assert r.step_result().provenance()["forced"] is True


def test_output_judgement(cnn, images):
    r = prune(cnn, images, 0.25, min_top1=0.0, max_mean_rel_error=100.0, measure=False)
    assert r.validation is not None and r.validation.passed and r.validation.top1_agreement is not None
    with pytest.raises(ValidationError, match="top-1 agreement"):
        prune(cnn, images, 0.75, importance="random", min_top1=1.0, measure=False)


@pytest.mark.parametrize("ratio", [0, 0.0, 1, 1.0, -0.2, 1.5, math.nan, "0.3", True])
def test_bad_ratio(cnn, images, ratio):
    with pytest.raises(PruningError, match="ratio"):
        prune(cnn, images, ratio, measure=False)


def test_bad_settings(cnn, images):
    with pytest.raises(PruningError, match="importance"):
        prune(cnn, images, 0.3, importance="psychic", measure=False)
    with pytest.raises(PruningError, match="loss_fn"):
        prune(cnn, images, 0.3, importance="taylor", measure=False)
    with pytest.raises(PruningError, match="steps"):
        prune(cnn, images, 0.3, steps=0, measure=False)
    with pytest.raises(PruningError, match="not_there"):
        prune(cnn, images, 0.3, ignored=["not_there"], measure=False)
    with pytest.raises(PruningError, match="nn.Module"):
        prune(lambda x: x, images, 0.3, measure=False)


def test_taylor_with_loss(cnn, images):
    target = torch.zeros(8, dtype=torch.long)
    r = prune(cnn, images, 0.5, importance="taylor",
              loss_fn=lambda m: nn.functional.cross_entropy(m(images), target), force=True, measure=False)
    assert r.module.conv1.out_channels == 8 and all(p.grad is None or not p.grad.any() for p in r.module.parameters())


class WithBilinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 32)
        self.b = nn.Linear(32, 16)
        self.bil = nn.Bilinear(16, 16, 4)

    def forward(self, x: "torch.Tensor") -> "torch.Tensor":
        h = self.b(torch.relu(self.a(x)))
        return self.bil(h, h)


def test_unsupported_layer_named_and_ignorable():
    torch.manual_seed(0)
    model = WithBilinear().eval()
    x = torch.randn(8, 8)
    with pytest.raises(PruningError, match=r"bil \(Bilinear\)"):
        prune(model, x, 0.5, measure=False)
    r = prune(model, x, 0.5, ignored=["bil", model.b], measure=False, force=True)
    assert r.module.a.out_features == 16 and r.module.b.out_features == 16 and r.module(x).shape == (8, 4)


def test_missing_torch_pruning_names_the_extra():
    code = (
        "import sys; sys.modules['torch_pruning'] = None\n"
        "import torch, fastort\n"
        "try:\n"
        "    fastort.prune(torch.nn.Linear(4, 4), torch.randn(2, 4), 0.5)\n"
        "except fastort.MissingDependencyError as e:\n"
        "    print('MISSING', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "MISSING" in out.stdout and "fastort[prune]" in out.stdout and "torch-pruning" in out.stdout
    assert issubclass(MissingDependencyError, ImportError)


def test_prepare_cli_prune(tmp_path, capsys):
    model = _mlp().eval()
    src = tmp_path / "mlp.pt"
    torch.save(model, src)
    out = tmp_path / "pkg"
    rc = main(["prepare", str(src), "-o", str(out), "--input-shape", "16,16", "--prune", "0.5", "--force",
               "--no-progress", "--latency-seconds", "0.2"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "pruned 0.5 of the channels" in text
    manifest = json.loads((out / "fastort.json").read_text())
    steps = [p["step"] for p in manifest["provenance"]]
    assert steps[0] == "prune" and "convert" in steps
    assert manifest["provenance"][0]["settings"]["ratio"] == 0.5
    with fastort.Engine(str(out)) as engine:
        y = engine.run({engine.inputs[0].name: np.zeros((3, 16), np.float32)})
    assert list(y.values())[0].shape == (3, 4)


def test_prepare_prune_refuses_non_torch(tmp_path):
    import prep_models
    from fastort.prepare import prepare

    with pytest.raises(PruningError, match="torch"):
        prepare(prep_models.mlp((4, 8, 2)), tmp_path / "p", prune=0.3, progress=False)
