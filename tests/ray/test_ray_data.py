"""Ray Data batch scoring on the test cluster (a head and two worker nodes)."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

import models
from conftest import within

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

import ray.data  # noqa: E402

import ray_helpers  # noqa: E402
from fastort import Engine  # noqa: E402
from fastort.ray import PredictorConfig, ScoreConfig, score  # noqa: E402

ROWS = 100_000
JOB_TIMEOUT_S = 120


def collect(ds, columns):
    """All rows of ``ds`` as numpy columns."""
    parts = {c: [] for c in columns}
    for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
        for c in columns:
            parts[c].append(batch[c])
    return {c: np.concatenate(v) for c, v in parts.items()}


def dataset(rows=ROWS, blocks=40):
    return ray.data.range(rows, override_num_blocks=blocks).map_batches(ray_helpers.features, batch_format="numpy")


def test_100k_rows_scored_once_each_on_both_worker_nodes(ray_cluster):
    model = models.mlp()
    # One actor per worker node: each worker node has one unit of the "worker" resource.
    config = ScoreConfig(actors=2, resources={"worker": 1}, batch_size=2048,
                         predictor_class=ray_helpers.NodeTaggingPredictor)
    scored = score(dataset(), model, config)
    out = within(JOB_TIMEOUT_S, lambda: collect(scored, ["id", "x", "y", "node"]), "scoring 100k rows")
    order = np.argsort(out["id"])
    np.testing.assert_array_equal(out["id"][order], np.arange(ROWS))  # every row exactly once
    assert set(out["node"]) == set(ray_cluster.nodes.values())  # actors on both worker nodes
    x = ray_helpers.features_of(np.arange(ROWS))
    np.testing.assert_array_equal(out["x"][order], x)  # rows kept their identity
    with Engine(model, intra_op_threads=1) as engine:
        expected = engine.run({"x": x})["y"]
    np.testing.assert_allclose(out["y"][order], expected, rtol=1e-5, atol=1e-6)


def test_an_actor_killed_mid_job_loses_and_duplicates_no_row(ray_cluster):
    pid_dir = ray_cluster.pid_dir
    for name in os.listdir(pid_dir):
        os.remove(os.path.join(pid_dir, name))
    rows = 40_000
    config = ScoreConfig(actors=2, resources={"worker": 1}, batch_size=500,
                         predictor_class=ray_helpers.PidRecordingPredictor)
    scored = score(dataset(rows, blocks=80), models.mlp(), config)
    killed = []

    def kill_one_when_under_way():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            progress = [f for f in os.listdir(pid_dir) if f.startswith("progress-")]
            if progress:
                done = sum(len(open(os.path.join(pid_dir, f)).read().split()) for f in progress)
                if done >= 5:
                    pid = int(progress[0].split("-")[1])
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            time.sleep(0.05)

    import threading

    killer = threading.Thread(target=kill_one_when_under_way, daemon=True)
    killer.start()
    out = within(JOB_TIMEOUT_S, lambda: collect(scored, ["id", "y"]), "scoring with an actor killed")
    killer.join(5)
    assert killed, "the job finished before an actor could be killed"
    order = np.argsort(out["id"])
    np.testing.assert_array_equal(out["id"][order], np.arange(rows))  # none lost, none twice
    pids = {int(f.split("-")[1]) for f in os.listdir(pid_dir) if f.startswith("pid-")}
    assert len(pids) >= 3, "Ray did not start a replacement actor"
    with Engine(models.mlp()) as engine:
        expected = engine.run({"x": ray_helpers.features_of(np.arange(rows))})["y"]
    np.testing.assert_allclose(out["y"][order], expected, rtol=1e-5, atol=1e-6)


def test_a_model_that_fails_to_load_fails_the_job_at_start_with_the_reason(ray_cluster):
    scored = score(dataset(1000, blocks=2), models.unknown_op(), ScoreConfig(actors=1))
    started = time.monotonic()
    with pytest.raises(Exception, match="NoSuchOp"):
        within(JOB_TIMEOUT_S, lambda: collect(scored, ["y"]), "a job whose model cannot load")
    assert time.monotonic() - started < JOB_TIMEOUT_S


def idx_dataset(bad_at):
    idx = np.arange(2000, dtype=np.int64) % 3
    idx[bad_at] = 7  # out of range for the Gather: onnxruntime fails the run
    return ray.data.from_items([{"row": i, "idx": int(v)} for i, v in enumerate(idx)], override_num_blocks=4)


def test_bad_rows_go_to_the_error_column(ray_cluster):
    bad = [17, 1500]
    scored = score(idx_dataset(bad), models.gather(), ScoreConfig(actors=1, batch_size=256),
                   PredictorConfig(error_column="error", id_column="row"))
    out = within(JOB_TIMEOUT_S, lambda: collect(scored, ["row", "idx", "y", "error"]), "scoring with bad rows")
    order = np.argsort(out["row"])
    errors = out["error"][order]
    assert sorted(np.flatnonzero(errors != "")) == bad
    assert all("out of data bounds" in e for e in errors[bad])
    good = np.setdiff1d(np.arange(2000), bad)
    table = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.testing.assert_array_equal(out["y"][order][good], table[out["idx"][order][good]])


def test_a_bad_row_without_an_error_column_fails_the_job_naming_its_batch(ray_cluster):
    scored = score(idx_dataset([300]), models.gather(), ScoreConfig(actors=1, batch_size=256),
                   PredictorConfig(id_column="row"))
    with pytest.raises(Exception, match=r"out of data bounds.*batch of rows with row \[256, 257"):
        within(JOB_TIMEOUT_S, lambda: collect(scored, ["y"]), "a job with a bad row")
