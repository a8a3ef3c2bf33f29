"""Fault injection: requests that make onnxruntime fail, timeouts while a batch
runs, close() racing submit()/run_async(), exceptions inside map(), Ctrl-C
during a blocking run. After each fault nothing hangs, every accepted request
ends with a result or an error, and the engine keeps serving."""

from __future__ import annotations

import _thread
import asyncio
import concurrent.futures
import threading
import time
from typing import List

import numpy as np
import pytest

import fastort
from fastort import EngineClosedError, FastortError, QueueFullError, RequestTimeoutError
import models

DATA = np.arange(6, dtype=np.float32).reshape(3, 2)  # models.gather()'s table
WAIT = 30  # seconds: a hang fails the test instead of blocking the suite


def gather_ok(engine: fastort.Engine, i: int = 1) -> None:
    """The engine still serves: a good request gets the right answer."""
    out = engine.run({"idx": np.array([i % 3], np.int64)})
    np.testing.assert_array_equal(out["y"], DATA[[i % 3]])


def slow_engine(**kwargs) -> fastort.Engine:
    return fastort.Engine(models.slow(256, 400), intra_op_threads=1, **kwargs)


def slow_input(rows: int = 256) -> np.ndarray:
    return np.ones((rows, 256), np.float32)


def test_bad_request_merged_into_a_batch_fails_alone():
    # A running blocker makes the next requests queue up and merge into one batch;
    # the bad one among them must not take its batch mates down.
    engine = fastort.Engine(models.gather(), max_batch_size=16, max_delay_us=50_000)
    futures = [engine.submit({"idx": np.array([i % 3], np.int64)}) for i in range(4)]
    futures.append(engine.submit({"idx": np.array([7], np.int64)}))  # out of range: onnxruntime fails
    futures += [engine.submit({"idx": np.array([i % 3, (i + 1) % 3], np.int64)}) for i in range(4)]
    with pytest.raises(FastortError, match=r"Gather|indices"):
        futures[4].result(timeout=WAIT)
    for i in range(4):
        np.testing.assert_array_equal(futures[i].result(timeout=WAIT)["y"], DATA[[i % 3]])
        np.testing.assert_array_equal(futures[5 + i].result(timeout=WAIT)["y"], DATA[[i % 3, (i + 1) % 3]])
    stats = engine.stats()
    assert stats["failed"] == 1 and stats["requests"] == 9
    gather_ok(engine)


def test_failing_requests_under_concurrency_with_replicas():
    engine = fastort.Engine(models.gather(), replicas=2, max_batch_size=8, max_delay_us=1000)
    failures: List[int] = []
    wrong: List[int] = []

    def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(150):
            bad = rng.random() < 0.2
            idx = np.array([5 if bad else int(rng.integers(0, 3))], np.int64)
            try:
                out = engine.run({"idx": idx})
            except FastortError:
                if not bad:
                    wrong.append(int(idx[0]))
                failures.append(int(idx[0]))
                continue
            if bad or not np.array_equal(out["y"], DATA[idx]):
                wrong.append(int(idx[0]))

    threads = [threading.Thread(target=client, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=WAIT)
    assert not any(t.is_alive() for t in threads)
    assert wrong == [] and failures  # only bad requests failed, each one did
    stats = engine.stats()
    assert stats["failed"] == len(failures) and stats["requests"] == 900
    gather_ok(engine)


def test_unbatched_run_failure_keeps_the_engine_serving():
    engine = fastort.Engine(models.gather(), replicas=2)
    for i in range(20):
        with pytest.raises(FastortError):
            engine.run({"idx": np.array([0, 1, 99], np.int64)})
        gather_ok(engine, i)


def test_timeouts_while_a_batch_is_running():
    engine = slow_engine(max_batch_size=4, max_delay_us=0)
    running = engine.submit({"x": slow_input(2048)})  # a few hundred ms
    time.sleep(0.02)  # it is running now
    doomed = [engine.submit({"x": slow_input(1)}, timeout=0.01) for _ in range(5)]
    patient = engine.submit({"x": slow_input(1)}, timeout=WAIT)
    assert running.result(timeout=WAIT)["y"].shape == (2048, 256)  # a deadline never cuts a running batch
    for f in doomed:
        with pytest.raises(RequestTimeoutError):
            f.result(timeout=WAIT)
    assert patient.result(timeout=WAIT)["y"].shape == (1, 256)
    stats = engine.stats()
    assert stats["timed_out"] == 5 and stats["requests"] == 7
    assert engine.run({"x": slow_input(2)})["y"].shape == (2, 256)


@pytest.mark.parametrize("drain", [True, False])
def test_close_races_submit(drain: bool):
    engine = fastort.Engine(models.gather(), replicas=2, max_batch_size=8, max_queue=64)
    accepted: List["concurrent.futures.Future"] = []
    lock = threading.Lock()
    start = threading.Event()

    def producer(seed: int) -> None:
        start.wait()
        for i in range(5000):
            try:
                f = engine.submit({"idx": np.array([(seed + i) % 3], np.int64)})
            except QueueFullError:
                time.sleep(0.0005)
                continue
            except EngineClosedError:
                return
            with lock:
                accepted.append(f)

    threads = [threading.Thread(target=producer, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    start.set()
    time.sleep(0.05)
    engine.close(drain=drain)
    for t in threads:
        t.join(timeout=WAIT)
    assert not any(t.is_alive() for t in threads)
    done = closed = 0
    for f in accepted:  # every accepted request ends: a result, or (no drain) EngineClosedError
        try:
            f.result(timeout=WAIT)
            done += 1
        except EngineClosedError:
            assert not drain
            closed += 1
    assert done + closed == len(accepted) and done > 0
    with pytest.raises(EngineClosedError):
        engine.submit({"idx": np.array([0], np.int64)})


def test_close_races_run_async_cancellations():
    engine = slow_engine(max_batch_size=8, max_delay_us=1000)

    async def main() -> List[object]:
        tasks = [asyncio.ensure_future(engine.run_async({"x": slow_input(4)})) for _ in range(40)]
        await asyncio.sleep(0.01)
        for t in tasks[::2]:
            t.cancel()
        loop = asyncio.get_running_loop()
        closing = loop.run_in_executor(None, lambda: engine.close(drain=False))
        for t in tasks[1::4]:
            t.cancel()
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), WAIT)
        await asyncio.wait_for(closing, WAIT)
        return results

    results = asyncio.run(main())
    assert len(results) == 40
    for r in results:
        assert isinstance(r, (dict, asyncio.CancelledError, EngineClosedError)), r
        if isinstance(r, dict):
            assert r["y"].shape == (4, 256)
    assert any(isinstance(r, asyncio.CancelledError) for r in results)
    again = fastort.Engine(models.gather(), max_batch_size=8)  # a new engine in the same process serves
    gather_ok(again)


def test_exceptions_inside_map_iterators():
    engine = fastort.Engine(models.gather(), replicas=2, max_batch_size=8)

    def requests(fail_at: int):
        for i in range(100):
            if i == fail_at:
                raise RuntimeError(f"iterator failed at {i}")
            yield {"idx": np.array([i % 3], np.int64)}

    for fail_at in (0, 1, 7, 50):
        with pytest.raises(RuntimeError, match=f"failed at {fail_at}"):
            for _ in engine.map(requests(fail_at), max_in_flight=4):
                pass
        gather_ok(engine, fail_at)

    # A request the model fails inside map surfaces as that request's error.
    def with_bad():
        yield {"idx": np.array([0], np.int64)}
        yield {"idx": np.array([42], np.int64)}
        yield {"idx": np.array([1], np.int64)}

    it = engine.map(with_bad())
    np.testing.assert_array_equal(next(it)["y"], DATA[[0]])
    with pytest.raises(FastortError):
        next(it)

    # The consumer stops early (an exception in its loop body): in-flight requests are dropped cleanly.
    with pytest.raises(ZeroDivisionError):
        for n, _ in enumerate(engine.map(requests(10**9), max_in_flight=8)):
            if n == 3:
                1 / 0
    deadline = time.time() + WAIT
    while engine.stats()["queue_requests"] and time.time() < deadline:
        time.sleep(0.01)
    assert engine.stats()["queue_requests"] == 0
    gather_ok(engine)


def test_keyboard_interrupt_during_a_blocking_run():
    engine = slow_engine(max_batch_size=1)
    blocker = engine.submit({"x": slow_input(4096)})  # about a second
    timer = threading.Timer(0.15, _thread.interrupt_main)
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        engine.run({"x": slow_input()})  # queued behind the blocker: Ctrl-C cancels it
    assert time.monotonic() - t0 < 5
    timer.join()
    assert blocker.result(timeout=WAIT)["y"].shape == (4096, 256)
    assert engine.run({"x": slow_input(3)})["y"].shape == (3, 256)  # and it keeps serving
    stats = engine.stats()
    assert stats["cancelled"] == 1


def test_keyboard_interrupt_during_an_unbatched_run():
    # Without a queue the interrupt is raised once onnxruntime returns; the engine stays usable.
    engine = slow_engine()
    timer = threading.Timer(0.01, _thread.interrupt_main)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        engine.run({"x": slow_input()})
        time.sleep(5)  # the interrupt arrives here at the latest
    timer.join()
    assert engine.run({"x": slow_input(2)})["y"].shape == (2, 256)
