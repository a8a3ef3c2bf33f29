"""Fixtures of the serve tests: the model repositories and running servers."""

from __future__ import annotations

from typing import Iterator

import onnx
import pytest

pytest.importorskip("tritonclient.http")
pytest.importorskip("tritonclient.grpc")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

import models  # noqa: E402  (tests/models.py)
from servers import Served, alltypes, slow, start, stop  # noqa: E402


@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("repo")
    onnx.save(models.tiny(), str(root / "tiny.onnx"))
    onnx.save(alltypes(), str(root / "alltypes.onnx"))
    (root / "mlp" / "1").mkdir(parents=True)
    (root / "mlp" / "2").mkdir(parents=True)
    onnx.save(models.mlp(seed=1), str(root / "mlp" / "1" / "model.onnx"))
    onnx.save(models.mlp(seed=2), str(root / "mlp" / "2" / "model.onnx"))
    return str(root)


@pytest.fixture(scope="session")
def slow_repo(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("slow")
    onnx.save(slow(), str(root / "slow.onnx"))
    return str(root)


@pytest.fixture(scope="session")
def server(repo: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = start(repo, str(tmp_path_factory.mktemp("run")), "--max-request-bytes", str(1 << 20))
    try:
        yield s
    finally:
        assert stop(s.proc) == 0, open(s.log).read()


@pytest.fixture(scope="module")
def slow_server(slow_repo: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = start(slow_repo, str(tmp_path_factory.mktemp("slowrun")), "--max-queue", "1", "--max-batch-size", "1",
              "--intra-op-threads", "1")
    try:
        yield s
    finally:
        stop(s.proc)
