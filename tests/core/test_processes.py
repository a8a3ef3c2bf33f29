"""Engines in other processes: pickling by reconstruction, ProcessPoolExecutor
with the fork and spawn start methods, and an engine inherited through fork()."""

from __future__ import annotations

import multiprocessing
import os
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Dict

import numpy as np
import onnx
import pytest

from fastort import Engine
from fastort.bench.models import tiny_model
from fastort.errors import EngineClosedError

X = np.arange(8, dtype=np.float32).reshape(2, 4)


def _run_pickled(engine: Engine) -> Dict[str, Any]:
    out = engine.run(X)
    engine.close()
    return out


def _run_inherited(engine: Engine) -> str:
    try:
        engine.run(X)
    except EngineClosedError as e:
        return str(e)
    return "ran"


@pytest.fixture()
def model_path(tmp_path: Path) -> str:
    path = str(tmp_path / "tiny.onnx")
    onnx.save(tiny_model(), path)
    return path


def test_pickle_by_path_sends_no_weights(model_path: str) -> None:
    with Engine(model_path, intra_op_threads=1) as engine:
        data = pickle.dumps(engine)
        assert len(data) < os.path.getsize(model_path) + 2000
        assert model_path.encode() in data
        clone = pickle.loads(data)
        assert clone.options == engine.options
        for a, b in zip(clone.run(X).values(), engine.run(X).values()):
            np.testing.assert_array_equal(a, b)
        clone.close()


def test_pickle_from_bytes_and_proto() -> None:
    for model in (tiny_model().SerializeToString(), tiny_model()):
        with Engine(model, max_batch_size=4) as engine:
            clone = pickle.loads(pickle.dumps(engine))
            assert clone.batch_config == engine.batch_config
            for a, b in zip(clone.run(X).values(), engine.run(X).values()):
                np.testing.assert_array_equal(a, b)
            clone.close()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_process_pool(model_path: str, method: str) -> None:
    ctx = multiprocessing.get_context(method)
    with Engine(model_path, intra_op_threads=1, max_batch_size=2) as engine:
        expected = engine.run(X)
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            got = pool.submit(_run_pickled, engine).result(timeout=120)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])


def test_engine_inherited_through_fork_refuses(model_path: str) -> None:
    ctx = multiprocessing.get_context("fork")
    engine = Engine(model_path, intra_op_threads=1, max_batch_size=2)
    engine.run(X)  # thread pools and the queue are running at the fork
    try:
        global _INHERITED
        _INHERITED = engine
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            message = pool.submit(_use_inherited).result(timeout=120)
        assert "inherited through fork()" in message and "spawn" in message
        engine.run(X)  # the parent's engine is untouched
    finally:
        engine.close()


_INHERITED: Any = None


def _use_inherited() -> str:
    return _run_inherited(_INHERITED)
