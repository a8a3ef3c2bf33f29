"""fastort.ray.Predictor called the way Ray Data calls it (a dict of read-only
column arrays), in this process: zero-copy inputs, column mapping, padding,
non-tensor outputs, error routing, threads. The cluster tests are in test_ray_cluster.py."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

import models
from fastort import Engine
from fastort.errors import ConfigError, FastortError, InvalidInputError

pytest.importorskip("ray")
pytestmark = pytest.mark.ray

from fastort.ray import Predictor, PredictorConfig, ScoreConfig, cpu_budget, score  # noqa: E402
from fastort.ray import threads as ray_threads  # noqa: E402


def readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


def test_inputs_are_read_in_place_and_columns_pass_through(rng):
    x = readonly(rng.standard_normal((100, 8)).astype(np.float32))
    ids = readonly(np.arange(100, dtype=np.int64))
    batch = {"id": ids, "x": x}
    predictor = Predictor(models.mlp().SerializeToString())
    feeds = predictor.feeds(batch)
    assert feeds["x"] is x and np.shares_memory(feeds["x"], x)  # no copy of the read-only batch
    out = predictor(batch)
    assert out["id"] is ids and out["x"] is x  # passed through, rows in order
    with Engine(models.mlp()) as engine:
        np.testing.assert_array_equal(out["y"], engine.run({"x": x})["y"])
    assert out["y"].shape == (100, 4)


def test_multi_input_columns_and_output_names(rng):
    a = readonly(rng.standard_normal(50).astype(np.float32))
    b = readonly(rng.standard_normal(50).astype(np.float32))
    config = PredictorConfig(input_columns={"a": "left", "b": "right"}, output_columns={"s": "sum"},
                             outputs=["s", "p"], keep_columns=False)
    out = Predictor(models.add_mul(), config)({"left": a, "right": b})
    assert sorted(out) == ["p", "sum"]
    np.testing.assert_allclose(out["sum"], a + b, rtol=1e-6)
    np.testing.assert_allclose(out["p"], a * b, rtol=1e-6)


def test_variable_length_rows_are_padded_by_the_batcher(rng):
    rows = [readonly(rng.standard_normal(n).astype(np.float32)) for n in (3, 7, 1, 5, 7)]
    column = np.empty(len(rows), dtype=object)
    column[:] = rows
    predictor = Predictor(models.scale_seq(), padding={"x": {1: 0.0}})
    out = predictor({"x": column})
    assert out["y"].dtype == object and len(out["y"]) == len(rows)
    for row, y in zip(rows, out["y"]):
        np.testing.assert_allclose(y, 2 * row, rtol=1e-6)  # cut back to the row's own length
    np.testing.assert_allclose(out["n"][:, 0], [r.sum() for r in rows], rtol=1e-5)
    stats = predictor.engine.stats()
    # the rows went through the padding batcher (whether two of them shared a batch depends on timing:
    # the adaptive policy runs a lone request at once on a free replica)
    assert stats["batching"] and stats["requests"] == len(rows)
    with pytest.raises(ConfigError, match="padding"):
        Predictor(models.scale_seq())({"x": column})


def test_non_tensor_outputs_become_object_columns(rng):
    p = readonly(rng.random((6, 3)).astype(np.float32))
    out = Predictor(models.zipmap("int64"))({"p": p})
    assert out["probs"].dtype == object and len(out["probs"]) == 6
    assert sorted(out["probs"][4]) == [10, 11, 12]
    assert math.isclose(out["probs"][4][11], float(p[4, 1]), rel_tol=1e-6)


def test_bad_row_goes_to_the_error_column():
    idx = readonly(np.array([0, 1, 7, 2, 1], dtype=np.int64))  # 7 is out of range: onnxruntime fails the run
    out = Predictor(models.gather(), PredictorConfig(error_column="error"))({"idx": idx})
    assert list(out["error"][[0, 1, 3, 4]]) == ["", "", "", ""]
    assert "RunError" in out["error"][2] or "Error" in out["error"][2]
    assert np.isnan(out["y"][2]).all()
    data = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.testing.assert_array_equal(out["y"][[0, 1, 3, 4]], data[[0, 1, 2, 1]])


def test_bad_row_fails_its_batch_with_the_row_ids():
    batch = {"row": np.arange(100, 105), "idx": readonly(np.array([0, 1, 7, 2, 1], dtype=np.int64))}
    with pytest.raises(FastortError, match=r"row \[100, 101, 102, 103, 104\]"):
        Predictor(models.gather(), PredictorConfig(id_column="row"))(batch)


def test_wrong_dtype_is_refused_or_cast(rng):
    x = rng.standard_normal((4, 8))  # float64
    with pytest.raises(InvalidInputError, match="float64.*float32"):
        Predictor(models.mlp())({"x": x})
    out = Predictor(models.mlp(), PredictorConfig(cast_inputs=True))({"x": x})
    assert out["y"].shape == (4, 4)


def test_configuration_mistakes_are_named():
    with pytest.raises(ConfigError, match="input_columns"):
        Predictor(models.mlp(), PredictorConfig(input_columns={"nope": "x"}))
    with pytest.raises(ConfigError, match="no column 'x'"):
        Predictor(models.mlp())({"features": np.zeros((2, 8), np.float32)})
    with pytest.raises(ConfigError, match="overwrite"):
        Predictor(models.mlp(), PredictorConfig(output_columns={"y": "x"}))({"x": np.zeros((2, 8), np.float32)})


def test_score_settings_are_checked_before_ray_runs():
    for bad, what in ((ScoreConfig(actors=0), "actors"), (ScoreConfig(batch_size=0), "batch_size"),
                      (ScoreConfig(max_concurrent_calls_per_actor=0), "max_concurrent_calls_per_actor")):
        with pytest.raises(ConfigError, match=what):
            score(None, models.mlp(), bad)


def test_threads_come_from_the_cpu_budget_not_the_host():
    affinity = len(os.sched_getaffinity(0))
    assert cpu_budget(ray_cpus=0.5).threads == 1
    assert cpu_budget(ray_cpus=1.5).threads == 1
    big = cpu_budget(ray_cpus=affinity + 10)
    assert big.threads <= affinity and big.limited_by in ("affinity", "cgroup")
    assert cpu_budget(ray_cpus=1).limited_by == "ray"


def test_cgroup_quota_is_read(tmp_path, monkeypatch):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    monkeypatch.setattr(ray_threads, "_cgroup_dirs", lambda: [("v2", str(tmp_path))])
    assert ray_threads.cgroup_cpu_quota() == 1.5
    assert cpu_budget(ray_cpus=4).threads == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert ray_threads.cgroup_cpu_quota() is None
