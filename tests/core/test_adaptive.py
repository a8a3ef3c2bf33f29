"""The adaptive batching policy seen from Python: what it learned, inline runs,
no waiting for rows that never come, per-request queue vs compute time."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import numpy as np
import pytest

import fastort
import models


def mlp_ref(engine_plain: fastort.Engine, x: np.ndarray) -> np.ndarray:
    return engine_plain.run({"x": x})["y"]


def test_policy_stats_and_results():
    plain = fastort.Engine(models.mlp())
    eng = fastort.Engine(models.mlp(), replicas=2, max_batch_size=16, max_delay_us=2000)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((1 + i % 3, 8)).astype(np.float32) for i in range(120)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda x: eng.run({"x": x})["y"], xs))
    for x, y in zip(xs, outs):
        np.testing.assert_allclose(y, mlp_ref(plain, x), rtol=1e-5, atol=1e-6)
    futures = [eng.submit({"x": x}) for x in xs]
    for x, f in zip(xs, futures):
        np.testing.assert_allclose(f.result(10)["y"], mlp_ref(plain, x), rtol=1e-5, atol=1e-6)
    s = eng.stats()
    policy = s["policy"]
    assert policy["adaptive"] is True
    assert 1 <= policy["batch_cap"] <= 16
    assert policy["us_per_row_by_batch_size"], policy
    assert all(k in (1, 2, 4, 8, 16) and v > 0 for k, v in policy["us_per_row_by_batch_size"].items())
    assert sum(policy["dispatch_reasons"].values()) == s["batches"]
    assert set(policy["dispatch_reasons"]) <= {"closing", "idle", "unbatchable", "delayed", "full", "free", "inline",
                                               "direct"}
    assert s["requests"] == 240
    eng.close()


def test_lone_caller_runs_inline():
    plain = fastort.Engine(models.mlp())
    eng = fastort.Engine(models.mlp(), max_batch_size=8)
    rng = np.random.default_rng(1)
    for i in range(20):
        x = rng.standard_normal((1 + i % 3, 8)).astype(np.float32)
        np.testing.assert_allclose(eng.run({"x": x})["y"], mlp_ref(plain, x), rtol=1e-5, atol=1e-6)
    s = eng.stats()
    # Nothing queued and a replica free: each run ran on the caller's thread,
    # counted by the queue (rows, latency, learned cost), not as a direct run.
    assert s["policy"]["dispatch_reasons"].get("inline") == 20
    assert s["requests"] == 20 and s["batches"] == 20 and s["rows"] == sum(1 + i % 3 for i in range(20))
    assert s["direct"]["requests"] == 0 and s["latency_p50_us"] > 0
    assert s["policy"]["us_per_row_by_batch_size"], s["policy"]
    # A run that fails on the lent replica gives it back: the next ones still run.
    with pytest.raises(fastort.errors.InvalidInputError):
        eng.run({"x": np.ones((1, 9), np.float32)})
    eng.run({"x": np.ones((1, 8), np.float32)})
    futures = [eng.submit({"x": np.ones((1, 8), np.float32)}) for _ in range(4)]
    assert all(f.result(10)["y"].shape == (1, 4) for f in futures)
    eng.close()
    plain.close()


def test_no_wait_for_rows_that_never_come():
    # A 3 s max_delay: the fixed rule holds queued rows while a batch runs; the
    # adaptive one runs them on the free replica at once.
    eng = fastort.Engine(models.slow(), replicas=2, max_batch_size=32, max_delay_us=3_000_000)
    x = np.ones((1, 256), np.float32)
    eng.run({"x": x})
    start = time.perf_counter()

    def client() -> None:
        for _ in range(5):
            eng.run({"x": x})

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - start
    s = eng.stats()
    assert took < 2.5, (took, s["policy"])
    assert "delayed" not in s["policy"]["dispatch_reasons"], s["policy"]
    eng.close()


def test_route_learner_measures_both_routes():
    # Many callers waiting on run(): the queue serves them batched for an
    # epoch, then probes running them straight on the replicas (as an engine
    # without a queue would), and keeps the route that measured faster. Which
    # one wins depends on the machine; what is checked is that both routes ran,
    # every answer is right, and the counts add up.
    plain = fastort.Engine(models.mlp())
    eng = fastort.Engine(models.mlp(), max_batch_size=16)
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((1, 8)).astype(np.float32) for _ in range(64)]
    refs = [mlp_ref(plain, x) for x in xs]
    stop = time.perf_counter() + 1.5
    wrong: list = []
    counts = [0] * 8

    def client(k: int) -> None:
        i = k
        while time.perf_counter() < stop:
            y = eng.run({"x": xs[i % 64]})["y"]
            if not np.allclose(y, refs[i % 64], rtol=1e-5, atol=1e-6):
                wrong.append(i)
            i += 1
            counts[k] += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not wrong
    s = eng.stats()
    route = s["policy"]["route"]
    assert route is not None and route["epochs"] >= 2 and route["probes"] >= 1, route
    assert set(route["last_epoch"]) == {"queue", "direct"}, route
    assert all(e["requests"] >= 4 and e["requests_per_s"] > 0 and e["latency_mean_us"] > 0
               for e in route["last_epoch"].values())
    assert route["mode"] in ("queue", "direct") and route["chosen"] in ("queue", "direct")
    assert s["policy"]["dispatch_reasons"].get("direct", 0) > 0
    # Direct runs are counted once, by the queue (runs of their own), not as unqueued runs.
    assert s["requests"] == sum(counts) and s["rows"] == sum(counts)
    assert s["direct"]["requests"] == 0
    assert sum(s["batch_size_histogram"].values()) == s["batches"]
    eng.close()
    # Not learned where a direct run would skip what the queue does: priorities,
    # the fixed rule.
    for kwargs in ({"priority_levels": 2}, {"adaptive_batching": False}):
        eng = fastort.Engine(models.mlp(), max_batch_size=16, **kwargs)
        assert eng.stats()["policy"]["route"] is None
        eng.close()
    plain.close()


def test_fixed_rule_still_available():
    eng = fastort.Engine(models.mlp(), max_batch_size=8, max_delay_us=100, adaptive_batching=False)
    x = np.ones((2, 8), np.float32)
    for _ in range(5):
        eng.run({"x": x})
    s = eng.stats()
    assert s["policy"]["adaptive"] is False
    assert s["policy"]["batch_cap"] == 8
    assert "inline" not in s["policy"]["dispatch_reasons"]
    eng.close()
    eng = fastort.Engine(models.mlp(), batching=fastort.BatchConfig(max_batch_size=4, adaptive=False))
    assert eng.stats()["policy"]["adaptive"] is False
    eng.close()


def test_queue_and_compute_time_per_request():
    eng = fastort.Engine(models.slow(), max_batch_size=8)
    x = np.ones((1, 256), np.float32)
    futures = [eng.submit({"x": x}) for _ in range(6)]
    timings = []
    for f in futures:
        f.result(30)
        t = f.timing  # type: ignore[attr-defined]
        assert t["queue_us"] >= 0 and t["compute_us"] > 0
        timings.append(t)
    # A request of a batch that ran (several ms) waited less than the whole test.
    assert all(t["queue_us"] + t["compute_us"] < 30e6 for t in timings)
    s = eng.stats()
    assert s["queue_us_total"] == pytest.approx(sum(t["queue_us"] for t in timings), rel=1e-6)
    assert s["compute_us_total"] == pytest.approx(sum(t["compute_us"] for t in timings), rel=1e-6)
    eng.close()


def test_plain_engine_counts_requests():
    eng = fastort.Engine(models.mlp())
    x = np.ones((2, 8), np.float32)
    for _ in range(7):
        eng.run({"x": x})
    with pytest.raises(fastort.errors.InvalidInputError):
        eng.run({"x": np.ones((2, 3), np.float32)})
    s = eng.stats()
    assert s["batching"] is False and s["max_batch_size"] == 1
    assert s["requests"] >= 7 and s["latency_mean_us"] > 0 and s["compute_us_total"] > 0
    assert s["queue_us_total"] == 0  # no queue: run time is all compute
    assert s["direct"]["requests"] == s["requests"]
    eng.reset_stats()
    assert eng.stats()["requests"] == 0
    eng.close()


def test_unbatchable_engine_reports_what_it_does():
    with pytest.warns(UserWarning, match="cannot be batched"):
        eng = fastort.Engine(models.identity(1, [2, 3]), max_batch_size=8)
    s = eng.stats()
    assert s["batching"] is False and s["max_batch_size"] == 1
    assert "fixed dim 0" in s["unbatchable_reason"]
    assert "max_batch_size=8" not in repr(eng) and "unbatched" in repr(eng)
    eng.close()
    eng = fastort.Engine(models.mlp(), max_batch_size=8)
    assert "max_batch_size=8" in repr(eng) and eng.stats()["max_batch_size"] == 8
    eng.close()
