"""fastort.tune on tiny models with budgets of seconds: the search runs for
real (real engines, real onnxruntime baseline, real client threads); the
assertions are about what the result says, not about which config wins on a
shared machine."""

from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import fastort
import models
from fastort.engine.manifest import is_package, load_package, read_manifest
from fastort.errors import ConfigError, InvalidInputError, ModelNotFoundError
from fastort.tune import Budget, CandidateResult, Config, Measurement, Targets
from fastort.tune.cli import main as tune_cli
from fastort.tune.result import rank_key

QUICK = Budget(minutes=0.5, warmup_s=0.05, window_s=0.1, min_windows=2, max_windows=3)


def quick(trials: int) -> Budget:
    return Budget(minutes=QUICK.minutes, trials=trials, warmup_s=QUICK.warmup_s, window_s=QUICK.window_s,
                  min_windows=QUICK.min_windows, max_windows=QUICK.max_windows)


def seq_model() -> onnx.ModelProto:
    """y[batch, seq, 4] = relu(x[batch, seq, 4]): a symbolic dim besides the batch."""
    return models.make_model([helper.make_node("Relu", ["x"], ["y"])],
                             [models.tensor("x", TensorProto.FLOAT, ["batch", "seq", 4])],
                             [models.tensor("y", TensorProto.FLOAT, ["batch", "seq", 4])])


@pytest.fixture(scope="module")
def mlp_path(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("tune") / "mlp.onnx")
    onnx.save(models.mlp((16, 32, 4)), path)
    return path


def _m(throughput: float, p99: float, dropped: int = 0) -> Measurement:
    return Measurement(throughput, throughput, p99 / 2, p99, 3, True, 100, dropped=dropped)


# -- feasibility -----------------------------------------------------------------


def test_judge_names_each_missed_target_and_by_how_much():
    c = CandidateResult(Config(), "x", measurement=_m(1000, 30.0), error=0.02, size_bytes=5_000_000)
    c.judge(Targets(p99_ms=20, max_error=0.01, max_size_mb=2))
    assert not c.feasible
    text = " | ".join(c.misses)
    assert "p99 30 ms > 20 ms (+50%)" in text
    assert "max abs error 0.02 > 0.01 (+100%)" in text
    assert "size 5 MB > 2 MB (+150%)" in text
    assert c.violation == pytest.approx(0.5 + 1.0 + 1.5)
    c.judge(Targets(p99_ms=40, max_error=0.05, max_size_mb=10))
    assert c.feasible and c.misses == []
    c.judge(Targets())
    assert c.feasible


def test_dropped_requests_and_label_mismatch_are_misses():
    c = CandidateResult(Config(), "x", measurement=_m(10, 1.0, dropped=3), error_ok=False,
                        error_detail="label outputs differ: label")
    c.judge(Targets())
    assert any("dropped 3" in m for m in c.misses) and "label outputs differ: label" in c.misses


def test_ranking_feasible_first_then_closest_then_failed():
    fast_but_slow_p99 = CandidateResult(Config(replicas=2), "x", measurement=_m(5000, 50.0))
    ok_slow = CandidateResult(Config(), "x", measurement=_m(1000, 5.0))
    ok_fast = CandidateResult(Config(intra_op_threads=1), "x", measurement=_m(2000, 8.0))
    near_miss = CandidateResult(Config(intra_op_threads=2), "x", measurement=_m(9000, 11.0))
    failed = CandidateResult(Config(max_batch_size=4), "x", failed="RunError: boom")
    targets = Targets(p99_ms=10)
    cands = [fast_but_slow_p99, ok_slow, ok_fast, near_miss, failed]
    for c in cands:
        c.judge(targets)
    order = sorted(cands, key=lambda c: rank_key(c, "throughput"))
    assert order == [ok_fast, ok_slow, near_miss, fast_but_slow_p99, failed]
    assert sorted(cands, key=lambda c: rank_key(c, "latency"))[0] is ok_slow


def test_a_winner_must_beat_the_defaults_by_more_than_the_noise():
    from fastort.tune.search import NOISE_MARGIN, _prefer_default

    default = CandidateResult(Config(), "default", measurement=_m(1000, 5.0))
    close = CandidateResult(Config(intra_op_threads=1), "threads", measurement=_m(1000 * (1 + NOISE_MARGIN / 2), 5.0))
    clear = CandidateResult(Config(replicas=2), "replicas", measurement=_m(1000 * (1 + 2 * NOISE_MARGIN), 5.0))
    for c in (default, close, clear):
        c.judge(Targets())
    assert _prefer_default(close, default, "throughput") is default
    assert any("within 3%" in n for n in default.notes)
    assert _prefer_default(clear, default, "throughput") is clear
    slow_p99 = CandidateResult(Config(), "default", measurement=_m(1000, 9.0))
    slow_p99.judge(Targets(p99_ms=8))  # the defaults miss the target: never preferred
    assert _prefer_default(close, slow_p99, "throughput") is close
    assert _prefer_default(close, default, "latency") is default
    assert _prefer_default(CandidateResult(Config(), "x", measurement=_m(900, 2.0)), default, "latency").stage == "x"


# -- whole runs --------------------------------------------------------------------


def test_batching_is_tried_on_the_best_threads_and_on_the_default_ones():
    from fastort.tune import space
    from fastort.tune.space import Config

    default = Config(provider="CPUExecutionProvider")
    best = Config(provider="CPUExecutionProvider", intra_op_threads=1, replicas=2)
    configs = space.batching_stages(best, default, concurrency=16, rows_per_request=1)
    assert len(configs) == len(set(configs)) == 4 + 4  # sizes 16 and 8 x delays 200 and 2000, on each base
    # interleaved: the largest batch on each base comes first
    assert (configs[0].replicas, configs[0].intra_op_threads) == (2, 1)
    assert (configs[1].replicas, configs[1].intra_op_threads) == (1, default.intra_op_threads)
    assert {c.max_batch_size for c in configs[:2]} == {16}
    # when the best is the default, nothing is tried twice
    assert space.batching_stages(default, default, 16, 1) == space.batching_stage(default, 16, 1)


def test_tune_returns_winner_table_and_baseline(mlp_path):
    r = fastort.tune(mlp_path, clients=2, targets=Targets(p99_ms=1000), budget=quick(4), progress=False)
    assert r.winner is not None and r.feasible
    assert len(r.candidates) == 4 and r.candidates[0].stage == "default"
    assert r.baseline and r.baseline_throughput > 0
    assert all(c.ratio is not None and c.ratio > 0 for c in r.candidates)
    assert r.budget_exhausted and any(reason == "budget spent" for _, reason in r.skipped)
    text = r.table()
    assert "WINNER" in text and "baseline: one shared onnxruntime InferenceSession" in text
    data = json.loads(r.to_json())
    assert data["winner"]["label"] == r.winner.config.label() and len(data["candidates"]) == 4
    m = r.winner.measurement
    assert m.throughput > 0 and 0 < m.p50_ms <= m.p99_ms and m.windows >= 1
    # the 3 leaders and the defaults were measured again, between two more baselines; the winner is one of
    # them, unless the budget cut a leader's second run (on a loaded machine): then every candidate competes
    confirmed = [c for c in r.candidates if c.repeats]
    cut = [c for c in r.candidates if not c.repeats and any("not re-measured" in n for n in c.notes)]
    assert 1 <= len(confirmed) <= 4 and (r.winner in confirmed or cut)
    for c in cut:
        assert any(label == f"confirmation of {c.config.label()}" for label, _ in r.skipped)
    assert len(r.baseline) >= 3
    assert all(len(c.repeat_ratios) == 1 and c.worst_p99_ms >= c.measurement.p99_ms for c in confirmed)
    r = fastort.tune(mlp_path, clients=2, budget=Budget(minutes=0.5, trials=2, window_s=0.1, confirm=0),
                     progress=False, baseline=False)
    assert not any(c.repeats for c in r.candidates) and r.baseline == [] and r.winner.ratio is None


def test_infeasible_everything_still_returns_the_closest_with_reasons(mlp_path):
    r = fastort.tune(mlp_path, clients=2, targets=Targets(p99_ms=1e-6), budget=quick(3), progress=False)
    assert not r.feasible
    assert r.winner is not None and r.winner.measurement is not None
    assert all(not c.feasible and any(m.startswith("p99") for m in c.misses) for c in r.candidates)
    assert r.winner.violation == min(c.violation for c in r.candidates)
    assert "NO candidate meets the targets" in r.table()


def test_variant_outside_max_error_is_infeasible_and_metric_replaces_error(mlp_path):
    r = fastort.tune(mlp_path, clients=1, allow=("quantize",), targets=Targets(max_error=1e-9),
                     budget=quick(5), progress=False)
    names = [c.config.variant for c in r.candidates]
    assert names == ["original", "int8-dynamic"]
    q = r.candidates[1]
    assert q.error > 1e-9 and any("max abs error" in m for m in q.misses)
    assert r.winner.config.variant == "original" and r.feasible
    assert ("int8-static", "no calibration data (give calibration= or real inputs=)") in r.skipped
    r2 = fastort.tune(mlp_path, clients=1, allow=("quantize",), targets=Targets(metric=lambda ref, cand: False),
                      budget=quick(5), progress=False)
    assert not r2.candidates[1].feasible and r2.candidates[1].misses == ["metric failed"]


def test_open_loop_arrivals(mlp_path):
    r = fastort.tune(mlp_path, arrival_rate=200.0, allow=(), budget=quick(1), progress=False)
    m = r.winner.measurement
    assert 100 < m.throughput < 400 and m.dropped == 0
    assert "open-loop arrivals at 200 requests/s" in r.table()
    assert r.objective == "latency"  # every candidate that keeps up serves the same rate: rank by p99


# -- inputs --------------------------------------------------------------------------


def test_synthetic_inputs_are_disclosed_and_real_ones_are_not(mlp_path):
    r = fastort.tune(mlp_path, allow=(), budget=quick(1), progress=False, baseline=False)
    assert r.synthetic_inputs and json.loads(r.to_json())["synthetic_inputs"] is True
    assert "SYNTHETIC" in r.table() and any("SYNTHETIC" in n for n in r.notes)
    x = np.random.default_rng(1).standard_normal((32, 16)).astype(np.float32)
    r = fastort.tune(mlp_path, inputs={"x": x}, allow=(), budget=quick(1), progress=False, baseline=False)
    assert not r.synthetic_inputs and "SYNTHETIC" not in r.table()
    assert "cut into 32 request(s)" in r.inputs


def test_requests_list_with_variable_lengths_and_generator():
    model = seq_model()
    reqs = [{"x": np.ones((1, n, 4), np.float32)} for n in (3, 7, 11)]
    r = fastort.tune(model, inputs=reqs, allow=(), budget=quick(1), progress=False, baseline=False)
    assert r.inputs == "3 request(s) given as a list"
    gen = ({"x": np.ones((1, 5, 4), np.float64)} for _ in range(10))  # float64 is cast (same kind)
    r = fastort.tune(model, inputs=gen, allow=(), budget=quick(1), progress=False, baseline=False)
    assert r.inputs == "10 request(s) from an iterable" and r.winner.failed is None


def test_symbolic_dims_must_be_given(tmp_path):
    model = seq_model()
    with pytest.raises(ConfigError, match=r"'seq'.*--dims name=size"):
        fastort.tune(model, budget=quick(1), progress=False)
    with pytest.raises(ConfigError, match=r"'sqe', which is not a symbolic dim.*symbolic dims: \['batch', 'seq', 'x:0', 'x:1'\]"):
        fastort.tune(model, dims={"sqe": 8}, budget=quick(1), progress=False)
    with pytest.raises(ConfigError, match=r"dims\['seq'\] must be an int >= 1"):
        fastort.tune(model, dims={"seq": 0}, budget=quick(1), progress=False)
    r = fastort.tune(model, dims={"seq": 8, "batch": 2}, allow=(), budget=quick(1), progress=False, baseline=False)
    assert "x[2, 8, 4]" in r.inputs
    r = fastort.tune(model, dims={"x:1": 5}, allow=(), budget=quick(1), progress=False, baseline=False)
    assert "x[1, 5, 4]" in r.inputs
    # two axes that share a name ('?', as exporters write them) are told apart by input:axis
    img = models.make_model([helper.make_node("Relu", ["x"], ["y"])],
                            [models.tensor("x", TensorProto.FLOAT, [None, 3, "?", "?"])],
                            [models.tensor("y", TensorProto.FLOAT, [None, 3, "?", "?"])])
    with pytest.raises(ConfigError, match=r"'\?' \(input 'x', axis 2: key '\?' or 'x:2'\)"):
        fastort.tune(img, budget=quick(1), progress=False)
    r = fastort.tune(img, dims={"x:2": 48, "x:3": 192}, allow=(), budget=quick(1), progress=False, baseline=False)
    assert "x[1, 3, 48, 192]" in r.inputs
    r = fastort.tune(model, allow_default_dims=True, allow=(), budget=quick(1), progress=False, baseline=False)
    assert any("dim 'seq' of input 'x' set to 1" in n for n in r.notes)


@pytest.mark.parametrize("inputs, match", [
    ({"y": np.zeros((4, 16), np.float32)}, r"unknown input\(s\) \['y'\]; missing input\(s\) \['x'\]"),
    ({"x": np.zeros((4, 15), np.float32)}, r"dim 1 is 15, the model fixes it at 16"),
    ({"x": np.zeros((4,), np.float32)}, r"rank 1 .* expects rank 2"),
    ({"x": np.array([["a"] * 16])}, r"dtype <U1 cannot stand for the model's float32"),
    ([], r"the list of requests is empty"),
    (iter(()), r"the generator gave no requests"),
    (42, r"inputs must be arrays"),
    ("/nonexistent/inputs.npz", r"inputs file not found"),
])
def test_bad_inputs_are_clear_errors(mlp_path, inputs, match):
    with pytest.raises(InvalidInputError, match=match):
        fastort.tune(mlp_path, inputs=inputs, budget=quick(1), progress=False)


@pytest.mark.parametrize("kwargs, match", [
    ({"targets": Targets}, r"targets must be a Targets"),
    ({"clients": 2, "arrival_rate": 5.0}, r"exactly one of clients="),
    ({"clients": 0}, r"clients must be an int within"),
    ({"allow": ("threads", "warp")}, r"unknown knobs \['warp'\]"),
    ({"objective": "speed"}, r"objective must be one of"),
    ({"targets": {"p99ms": 3}}, r"targets: .*p99ms"),
])
def test_bad_settings_are_clear_errors(mlp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        fastort.tune(mlp_path, **{"budget": quick(1), "progress": False, **kwargs})


@pytest.mark.parametrize("make, match", [
    (lambda: Targets(p99_ms=-1), r"p99_ms must be a finite number > 0"),
    (lambda: Targets(p99_ms=math.nan), r"p99_ms must be a finite number"),
    (lambda: Targets(max_error="0.1"), r"max_error must be a finite number >= 0"),
    (lambda: Targets(max_size_mb=0), r"max_size_mb must be a finite number > 0"),
    (lambda: Targets(metric=3), r"metric must be callable"),
    (lambda: Budget(minutes=0), r"minutes must be a finite number > 0"),
    (lambda: Budget(trials=0), r"trials must be an int >= 1"),
    (lambda: Budget(min_windows=4, max_windows=2), r"max_windows \(2\) is below min_windows \(4\)"),
])
def test_bad_targets_and_budgets(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_missing_model_is_model_not_found():
    with pytest.raises(ModelNotFoundError):
        fastort.tune("/nonexistent/model.onnx", budget=quick(1), progress=False)


# -- the package ----------------------------------------------------------------------


def test_written_package_loads_with_the_tuned_settings(mlp_path, tmp_path):
    r = fastort.tune(mlp_path, clients=4, allow=("replicas", "batching"), budget=quick(12), progress=False)
    out = r.save(tmp_path / "pkg")
    model_path, kwargs = load_package(out)
    want = r.winner.config.engine_kwargs()
    assert {k: (tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()} == want
    with fastort.Engine(out) as engine:
        assert engine.replicas == r.winner.config.replicas
        assert (engine.batch_config.max_batch_size if engine.batch_config else 0) == r.winner.config.max_batch_size
    # every stage's settings survive the trip, not only the winner's: package a batching candidate
    batching = [c for c in r.candidates if c.config.max_batch_size]
    assert batching, [c.config.label() for c in r.candidates]
    r.winner = batching[-1]
    out2 = r.save(tmp_path / "pkg2")
    with fastort.Engine(out2) as engine:
        assert engine.batch_config is not None
        assert engine.batch_config.max_batch_size == batching[-1].config.max_batch_size
        assert engine.batch_config.max_delay_us == batching[-1].config.max_delay_us
        assert engine.replicas == batching[-1].config.replicas
        y = engine.run({"x": np.ones((1, 16), np.float32)})["y"]
    ref = fastort.Engine(mlp_path).run({"x": np.ones((1, 16), np.float32)})["y"]
    np.testing.assert_allclose(y, ref, rtol=1e-6)
    manifest = read_manifest(out2)
    assert manifest["extra"]["tuned_on"]["cores"] == len(os.sched_getaffinity(0))


def test_engine_warns_when_the_package_was_tuned_on_another_cpu(mlp_path, tmp_path):
    r = fastort.tune(mlp_path, allow=(), budget=quick(1), progress=False, baseline=False, output=tmp_path / "pkg")
    assert r.package_dir == os.fspath(tmp_path / "pkg")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastort.Engine(r.package_dir).close()  # same machine: no warning
    mpath = os.path.join(r.package_dir, "fastort.json")
    with open(mpath) as f:
        manifest = json.load(f)
    manifest["extra"]["tuned_on"] = {"cpu": "Some Other CPU 9000", "cores": 128}
    with open(mpath, "w") as f:
        json.dump(manifest, f)
    with pytest.warns(RuntimeWarning, match=r"tuned on another machine \(cpu 'Some Other CPU 9000' there.*"
                                            r"cores 128 there"):
        fastort.Engine(r.package_dir).close()


def test_output_dir_not_empty_is_refused_before_measuring(mlp_path, tmp_path):
    (tmp_path / "junk.txt").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        fastort.tune(mlp_path, budget=quick(1), progress=False, output=tmp_path)


# -- command line ----------------------------------------------------------------------


def test_cli_json_package_and_plot(mlp_path, tmp_path, capsys):
    out = tmp_path / "pkg"
    rc = tune_cli([mlp_path, "--clients", "2", "--p99-ms", "1000", "--trials", "2", "--minutes", "0.5",
                   "--json", "-o", str(out), "--plot", str(tmp_path / "p.png")])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    data = json.loads(captured.out)
    assert data["feasible"] and data["package"] == str(out) and len(data["candidates"]) == 2
    assert is_package(out)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "plot skipped: matplotlib is not installed" in captured.err
    else:
        assert (tmp_path / "p.png").stat().st_size > 1000


def test_cli_through_fastort_main_and_errors(mlp_path, tmp_path, capsys):
    from fastort.cli import main

    rc = main(["tune", mlp_path, "--p99-ms", "0.000001", "--trials", "1", "--quiet", "--no-baseline"])
    out = capsys.readouterr().out
    assert rc == 3 and "NO candidate meets the targets" in out
    assert main(["tune", str(tmp_path / "seq.onnx")]) == 1
    assert "ModelNotFoundError" in capsys.readouterr().err
    onnx.save(seq_model(), str(tmp_path / "seq.onnx"))
    assert main(["tune", str(tmp_path / "seq.onnx"), "--dims", "seq"]) == 1
    assert "--dims takes name=size" in capsys.readouterr().err
    assert main(["tune", str(tmp_path / "seq.onnx"), "--p99-ms", "-3"]) == 1
    assert "p99_ms must be a finite number > 0" in capsys.readouterr().err


def test_provider_with_options_survives_the_manifest(tmp_path):
    # a device provider is written as [name, {options}] (JSON has no tuples); Engine needs (name, options)
    out = fastort.package(models.tiny(), tmp_path / "pkg", max_batch_size=0,
                                  runtime={"providers": [["cpu", {}], "cpu"], "use_global_thread_pool": False})
    _, kwargs = load_package(out)
    assert kwargs["providers"] == (("cpu", {}), "cpu") and kwargs["use_global_thread_pool"] is False
    with fastort.Engine(out) as engine:
        assert engine.providers == ("CPUExecutionProvider",)


def test_device_entries_become_provider_specs():
    from fastort.tune.space import _device_provider, thread_stage

    assert _device_provider("cpu") is None and _device_provider("CPUExecutionProvider") is None
    assert _device_provider("cuda") == "cuda"
    assert _device_provider(("openvino", {"device_type": "GPU"})) == ("openvino", {"device_type": "GPU"})
    assert _device_provider({"provider": "openvino", "options": {"device_type": "NPU"}}) == \
        ("openvino", {"device_type": "NPU"})
    assert _device_provider({"provider": "CPUExecutionProvider"}) is None
    # every provider gets its own thread candidates, and Engine keywords put the CPU last
    stage = thread_stage(Config(), ["cpu", ("openvino", {"device_type": "GPU"})], 2, ("threads",))
    dev = [c for c in stage if c.provider != "cpu"]
    assert dev and dev[0].engine_kwargs()["providers"] == (("openvino", {"device_type": "GPU"}), "cpu")
