"""Session pool and dynamic batching: results, latency controls, lifecycle, stress."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import numpy as np
import pytest

import fastort
from fastort import EngineClosedError, QueueFullError, RequestTimeoutError
import models

W = models.tiny_weights()


def expected(x: np.ndarray) -> np.ndarray:
    return np.maximum(x @ W, 0)


def row(i: int, rows: int = 1) -> np.ndarray:
    return np.full((rows, 4), float(i), np.float32) + np.arange(4, dtype=np.float32) / 8


def test_batched_equals_unbatched():
    plain = fastort.Engine(models.mlp())
    batched = fastort.Engine(models.mlp(), replicas=2, max_batch_size=16, max_delay_us=5000)
    assert batched.batching
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((1 + i % 3, 8)).astype(np.float32) for i in range(60)]
    # Two long requests first keep both replicas busy while the short ones queue
    # up (an idle replica takes each request at once, and this model is fast).
    big = np.ones((400_000, 8), np.float32)
    firsts = [batched.submit({"x": big}) for _ in range(2)]
    deadline = time.monotonic() + 10
    while batched.stats()["in_flight_batches"] < 2 and not all(f.done() for f in firsts) \
            and time.monotonic() < deadline:
        time.sleep(0.0002)
    futures = [batched.submit({"x": x}) for x in xs]
    for f in firsts:
        assert f.result(timeout=10)["y"].shape == (len(big), 4)
    for x, f in zip(xs, futures):
        got = f.result(timeout=10)["y"]
        np.testing.assert_allclose(got, plain.run({"x": x})["y"], rtol=1e-5, atol=1e-6)
        assert got.shape[0] == x.shape[0]
        assert not got.flags.owndata  # a view of the batch output
    stats = batched.stats()
    assert stats["requests"] == 62 and stats["rows"] == sum(len(x) for x in xs) + 2 * len(big)
    assert stats["batches"] < 62  # requests were merged
    hist = stats["batch_size_histogram"]  # its last bucket, 16 + 1, counts the larger ones
    assert hist[17] == 2 and max(n for n in hist if n != 17) <= 16
    batched.close()


def test_large_request_runs_alone_and_is_not_split():
    engine = fastort.Engine(models.tiny(), max_batch_size=4)
    x = row(3, rows=10)
    np.testing.assert_allclose(engine.run({"x": x})["y"], expected(x), rtol=1e-6)
    assert engine.stats()["batch_size_histogram"] == {6: 1} or 10 in engine.stats()["batch_size_histogram"] or \
        engine.stats()["batches"] == 1
    assert engine.stats()["batches"] == 1 and engine.stats()["rows"] == 10


def test_different_shapes_are_never_mixed():
    engine = fastort.Engine(models.scale_seq(), max_batch_size=64, max_delay_us=50_000)
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((1, 2 + i % 3)).astype(np.float32) for i in range(30)]
    futures = [engine.submit({"x": x}) for x in xs]
    for x, f in zip(xs, futures):
        out = f.result(timeout=10)
        np.testing.assert_allclose(out["y"], 2 * x, rtol=1e-6)
        np.testing.assert_allclose(out["n"], x.sum(axis=1, keepdims=True), rtol=1e-5)
    # three distinct lengths: at least three batches, none bigger than one length's requests
    stats = engine.stats()
    assert stats["batches"] >= 3 and max(stats["batch_size_histogram"]) <= 10


def test_padding_merges_lengths_and_cuts_outputs_back():
    engine = fastort.Engine(models.scale_seq(), max_batch_size=64, max_delay_us=50_000, padding={"x": {1: 0.0}})
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((1 + i % 2, 1 + i % 5)).astype(np.float32) for i in range(30)]
    # A long request first keeps the one replica busy while the short ones queue up
    # (an idle engine runs each request at once, and this model is very fast).
    long = np.ones((1, 16_000_000), np.float32)
    first = engine.submit({"x": long})
    deadline = time.monotonic() + 10
    while engine.stats()["in_flight_batches"] == 0 and not first.done() and time.monotonic() < deadline:
        time.sleep(0.0002)
    futures = [engine.submit({"x": x}) for x in xs]
    assert first.result(timeout=10)["n"] == pytest.approx(long.size)
    for x, f in zip(xs, futures):
        out = f.result(timeout=10)
        assert out["y"].shape == x.shape  # cut back to its own length
        np.testing.assert_allclose(out["y"], 2 * x, rtol=1e-6)
        np.testing.assert_allclose(out["n"], x.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-6)  # zeros padded
    assert engine.stats()["batches"] < 1 + 30


def test_unbatchable_model_warns_and_serves():
    model = models.identity(1, [2, 3])  # fixed leading dim
    with pytest.warns(UserWarning, match=r"cannot be batched .*fixed dim 0"):
        engine = fastort.Engine(model, max_batch_size=8)
    assert not engine.batching
    x = np.ones((2, 3), np.float32)
    futures = [engine.submit({"x": x * i}) for i in range(5)]
    for i, f in enumerate(futures):
        np.testing.assert_array_equal(f.result(timeout=10)["y"], x * i)


def busy_engine(**kwargs) -> fastort.Engine:
    """One replica, a slow model: requests stay queued while it runs."""
    return fastort.Engine(models.slow(256, 400), intra_op_threads=1, max_batch_size=1, **kwargs)


def slow_input(i: float = 1.0) -> np.ndarray:
    """About 50-100 ms of work on one core."""
    return np.full((256, 256), i, np.float32)


def test_timeout_fails_queued_request_without_running_it():
    engine = busy_engine()
    blocker = engine.submit({"x": slow_input()})
    doomed = engine.submit({"x": slow_input()}, timeout=0.001)
    with pytest.raises(RequestTimeoutError, match=r"deadline passed"):
        doomed.result(timeout=10)
    blocker.result(timeout=10)
    stats = engine.stats()
    assert stats["timed_out"] == 1 and stats["rows"] == 256  # the doomed one never ran
    with pytest.raises(RequestTimeoutError):
        engine.run({"x": slow_input()}, timeout=1e-9)


def test_cancel_removes_queued_request():
    engine = busy_engine()
    blocker = engine.submit({"x": slow_input()})
    queued = [engine.submit({"x": slow_input()}) for _ in range(3)]
    assert engine.stats()["queue_requests"] >= 2
    assert all(f.cancel() for f in queued)
    blocker.result(timeout=10)
    stats = engine.stats()
    assert stats["cancelled"] >= 2 and stats["queue_requests"] == 0
    assert stats["batches"] <= 2  # the blocker (and at most one already taken)


def test_queue_full_is_backpressure():
    engine = busy_engine(max_queue=2)
    futures = [engine.submit({"x": slow_input()})]
    time.sleep(0.05)  # the first is running now
    futures += [engine.submit({"x": slow_input()}) for _ in range(2)]
    with pytest.raises(QueueFullError, match=r"queue is full"):
        engine.submit({"x": slow_input()})
    assert engine.stats()["rejected"] == 1
    for f in futures:
        f.result(timeout=10)


def test_priorities():
    engine = busy_engine(priority_levels=2)
    order = []
    blocker = engine.submit({"x": slow_input()})
    time.sleep(0.02)
    low = [engine.submit({"x": slow_input()}, priority=1) for _ in range(3)]
    high = [engine.submit({"x": slow_input()}, priority=0) for _ in range(3)]
    for name, fs in (("low", low), ("high", high)):
        for f in fs:
            f.add_done_callback(lambda _, name=name: order.append(name))
    for f in [blocker] + low + high:
        f.result(timeout=20)
    assert order[:3] == ["high"] * 3, order
    with pytest.raises(fastort.InvalidInputError, match=r"priority must be in \[0, 1\]"):
        engine.submit({"x": slow_input()}, priority=2)


def test_failure_inside_a_batch_fails_only_that_batch():
    engine = fastort.Engine(models.gather(), max_batch_size=8, max_delay_us=20_000)
    bad = engine.submit({"idx": np.array([9], np.int64)})
    time.sleep(0.1)
    goods = [engine.submit({"idx": np.array([i % 3], np.int64)}) for i in range(6)]
    with pytest.raises(fastort.FastortError, match=r"Gather"):
        bad.result(timeout=10)
    for i, f in enumerate(goods):
        np.testing.assert_array_equal(f.result(timeout=10)["y"], [[2.0 * (i % 3), 2.0 * (i % 3) + 1]])
    assert engine.stats()["failed"] == 1


def test_run_async_many_tasks_and_cancel():
    engine = fastort.Engine(models.tiny(), replicas=2, max_batch_size=32)

    async def main():
        xs = [row(i) for i in range(500)]
        results = await asyncio.gather(*(engine.run_async({"x": x}) for x in xs))
        for x, r in zip(xs, results):
            np.testing.assert_allclose(r["y"], expected(x), rtol=1e-6)
        return len(results)

    assert asyncio.run(main()) == 500
    slow = busy_engine()

    async def cancel_one():
        blocker = asyncio.ensure_future(slow.run_async({"x": slow_input()}))
        await asyncio.sleep(0.01)
        queued = asyncio.ensure_future(slow.run_async({"x": slow_input()}))
        await asyncio.sleep(0.01)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        await blocker

    asyncio.run(cancel_one())
    assert slow.stats()["cancelled"] == 1


def test_map_streams_in_order():
    engine = fastort.Engine(models.tiny(), replicas=2, max_batch_size=64)
    data = np.random.default_rng(3).standard_normal((1000, 4)).astype(np.float32)
    chunks = list(engine.map(data, batch_size=96, progress=True))
    assert len(chunks) == 11
    np.testing.assert_allclose(np.concatenate([c["y"] for c in chunks]), expected(data), rtol=1e-5, atol=1e-6)
    chunks = list(engine.map({"x": data[:200]}, batch_size=50))
    np.testing.assert_allclose(np.concatenate([c["y"] for c in chunks]), expected(data[:200]), rtol=1e-5, atol=1e-6)
    gen = ({"x": data[i : i + 3]} for i in range(0, 30, 3))
    outs = list(engine.map(gen, max_in_flight=2))
    np.testing.assert_allclose(np.concatenate([o["y"] for o in outs]), expected(data[:30]), rtol=1e-5, atol=1e-6)


def test_map_propagates_iterator_errors():
    engine = fastort.Engine(models.tiny(), max_batch_size=8)

    def broken():
        yield {"x": row(1)}
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        list(engine.map(broken()))
    np.testing.assert_allclose(engine.run({"x": row(2)})["y"], expected(row(2)), rtol=1e-6)


def test_stats_and_reset():
    engine = fastort.Engine(models.tiny(), max_batch_size=8)
    for i in range(20):
        engine.run({"x": row(i)})
    s = engine.stats()
    for key in ("requests", "rows", "batches", "batch_size_histogram", "queue_requests", "latency_p50_us",
                "latency_p90_us", "latency_p99_us", "rows_per_s", "elapsed_s"):
        assert key in s
    assert s["requests"] == 20 and s["rows"] == 20 and 0 < s["latency_p50_us"] <= s["latency_p99_us"]
    assert engine.stats(reset=True)["requests"] == 20
    assert engine.stats()["requests"] == 0


def test_close_drains_and_refuses_new_work():
    engine = busy_engine()
    futures = [engine.submit({"x": slow_input(i)}) for i in range(4)]
    engine.close()
    for f in futures:
        assert f.result(timeout=0)["y"].shape == (256, 256)  # all completed before close returned
    with pytest.raises(EngineClosedError):
        engine.submit({"x": slow_input()})
    with pytest.raises(EngineClosedError):
        engine.run({"x": slow_input()})


def test_close_without_drain_fails_queued_requests():
    engine = busy_engine()
    futures = [engine.submit({"x": slow_input(i)}) for i in range(4)]
    time.sleep(0.01)
    engine.close(drain=False)
    outcomes = []
    for f in futures:
        try:
            f.result(timeout=10)
            outcomes.append("ok")
        except EngineClosedError:
            outcomes.append("closed")
    assert "closed" in outcomes and len(outcomes) == 4


def test_close_while_threads_submit():
    engine = fastort.Engine(models.tiny(), replicas=2, max_batch_size=16)
    accepted, refused = [], []

    def producer():
        for i in range(2000):
            while True:
                try:
                    accepted.append(engine.submit({"x": row(i)}))
                    break
                except QueueFullError:  # backpressure: wait and retry
                    time.sleep(0.001)
                except EngineClosedError:
                    refused.append(i)
                    return

    threads = [threading.Thread(target=producer) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.02)
    engine.close()
    for t in threads:
        t.join(timeout=30)
    for f in accepted:  # every accepted request completed or failed cleanly: none hangs
        try:
            f.result(timeout=10)
        except EngineClosedError:
            pass
    assert refused or len(accepted) == 8000


def test_stress_threads():
    engine = fastort.Engine(models.tiny(), replicas=2, max_batch_size=32, max_delay_us=1000)
    errors = []

    def client(k: int) -> None:
        try:
            for i in range(2000):
                x = row(k * 10_000 + i)
                y = engine.run({"x": x})["y"]
                if not np.allclose(y, expected(x), rtol=1e-5):
                    errors.append((k, i))
                    return
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors[:3]
    assert engine.stats()["requests"] == 32_000 and engine.stats()["failed"] == 0


def test_pool_without_batching_runs_concurrently():
    engine = fastort.Engine(models.mlp((8, 256, 4)), replicas=3)
    plain = fastort.Engine(models.mlp((8, 256, 4)))
    xs = [np.random.default_rng(i).standard_normal((2, 8)).astype(np.float32) for i in range(64)]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        outs = list(pool.map(lambda x: engine.run({"x": x})["y"], xs))
    for x, y in zip(xs, outs):
        np.testing.assert_allclose(y, plain.run({"x": x})["y"], rtol=1e-5, atol=1e-6)
