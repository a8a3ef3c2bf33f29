"""Engine construction: EngineOptions (one source of defaults), the typed
structs the core receives, Engine.from_package, and the core's batchability
rule as the package layer asks it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import fastort
import models
from fastort import EngineOptions, _core
from fastort.errors import ConfigError
from fastort.prepare.package import _batchable, package


def test_engine_options_are_the_keywords_and_their_defaults():
    names = {f.name for f in dataclasses.fields(EngineOptions)}
    assert {"providers", "replicas", "max_batch_size", "output_device", "use_package_settings"} <= names
    assert EngineOptions().max_delay_us == fastort.BatchConfig().max_delay_us  # one source per default
    engine = fastort.Engine(models.tiny(), EngineOptions(replicas=2), intra_op_threads=1)
    with engine:
        assert engine.replicas == 2 and engine.options.intra_op_threads == 1
        assert engine.options == EngineOptions(replicas=2, intra_op_threads=1)
        x = np.ones((3, 4), np.float32)
        assert engine.run({"x": x})["y"].shape == (3, 3)


def test_unknown_keywords_and_conflicts_are_refused():
    with pytest.raises(TypeError, match="unexpected keyword argument 'replica'"):
        fastort.Engine(models.tiny(), replica=2)
    with pytest.raises(ConfigError, match="not both"):
        fastort.Engine(models.tiny(), batching=fastort.BatchConfig(), max_batch_size=4)
    with pytest.raises(ConfigError, match="needs the CUDA provider"):
        fastort.Engine(models.tiny(), output_device="cuda")


def test_core_structs_carry_every_field():
    config = _core.EngineConfig()
    assert config.providers == ["CPUExecutionProvider"] and config.replicas == 1 and config.share_weights
    assert config.pinned_staging_min_bytes == 64 * 1024
    config.session_config = [("session.intra_op.allow_spinning", "0")]
    config.max_request_rows, config.row_axis = 5, 1
    assert (config.session_config, config.max_request_rows, config.row_axis) == (
        [("session.intra_op.allow_spinning", "0")], 5, 1)
    batch = _core.BatchConfig()
    assert (batch.max_batch_size, batch.max_delay_us, batch.max_queue) == (32, 2000, 1024)
    batch.padding = [(0, 1, -1.0)]
    assert batch.padding == [(0, 1, -1.0)]


def test_from_package_is_engine_of_a_package(tmp_path):
    out = package(models.mlp(), tmp_path / "pkg", replicas=2)
    x = np.ones((2, 8), np.float32)
    with fastort.Engine.from_package(out) as a, fastort.Engine(out) as b:
        assert a.replicas == b.replicas == 2 and a.batching and b.batching
        np.testing.assert_array_equal(a.run({"x": x})["y"], b.run({"x": x})["y"])
    with fastort.Engine.from_package(out, replicas=1, use_package_settings=False) as c:
        assert c.replicas == 1 and not c.batching


def test_batchability_is_the_core_rule_on_the_configured_axis():
    model = models.identity(1, [3, "n"])  # fixed dim 0, dynamic dim 1
    ok, why = _batchable(model)
    assert not ok and "fixed dim 0" in why
    assert _batchable(model, batch_axis=1) == (True, "")
    # The engine's batcher says the same for the same axis.
    with fastort.Engine(model, max_batch_size=4, batch_axis=1) as engine:
        assert engine.batching
    with pytest.warns(UserWarning, match="fixed dim 0"):
        engine = fastort.Engine(model, max_batch_size=4)
    assert not engine.batching and "fixed dim 0" in engine._core.unbatchable_reason
    engine.close()
    assert _core.batchability([("s", "seq(tensor(float))", None)], [], 0) == (
        False, "input 's' is a seq(tensor(float)): sequence, map and optional inputs are never merged into batches")
    assert _core.batchability([("x", "tensor(float)", ("b", 4))], [("y", "tensor(float)", None)])[0]
