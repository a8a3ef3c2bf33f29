"""Shared fixtures. The models themselves are built in code by tests/models.py
(onnx.helper, no downloads); onnxruntime's own InferenceSession is the reference
every result is compared with."""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import numpy as np
import onnx
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter, for the tf tests

import models  # noqa: E402


def ort_session(model: Any):
    """An onnxruntime.InferenceSession (the reference) of a ModelProto, bytes or path."""
    import onnxruntime as ort

    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    elif isinstance(model, os.PathLike):
        model = os.fspath(model)
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def ort_run(model: Any, feeds: Mapping[str, Any], outputs: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """What onnxruntime.InferenceSession returns, as a dict of output name -> value."""
    sess = ort_session(model)
    names = list(outputs) if outputs is not None else [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, dict(feeds))))


@pytest.fixture
def reference() -> Callable[..., Dict[str, Any]]:
    """reference(model, feeds, outputs=None) -> {name: value} from InferenceSession."""
    return ort_run


@pytest.fixture
def ort_sess() -> Callable[[Any], Any]:
    """ort_sess(model) -> onnxruntime.InferenceSession."""
    return ort_session


@pytest.fixture(scope="module")
def tiny_model() -> onnx.ModelProto:
    """y[batch, 3] = relu(x[batch, 4] @ W)."""
    return models.tiny()


@pytest.fixture
def tiny_engine(tiny_model):
    import fastort

    engine = fastort.Engine(tiny_model)
    yield engine
    engine.close()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261125)
