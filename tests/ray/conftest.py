"""A real Ray cluster on this machine: a head and two worker nodes, each with its
own (logical) CPU count and a custom resource naming it, so that tests can place
actors on named nodes. Shut down at the end of the session even when tests fail;
every Ray wait in these tests has a timeout."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, TypeVar

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)

#: Object store per node: small, the machine is shared.
OBJECT_STORE_BYTES = 200 << 20
#: Logical CPUs per worker node (Ray's num_cpus is a scheduling count, not cores).
WORKER_CPUS = 2

T = TypeVar("T")


@dataclass
class RayCluster:
    cluster: Any
    address: str
    #: "w0"/"w1" -> Ray node id of that worker node; resource "node_w0"/"node_w1" pins to it.
    nodes: Dict[str, str]
    pid_dir: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def within(seconds: float, fn: Callable[[], T], what: str) -> T:
    """fn() run in a thread that must finish within ``seconds`` (Ray Data jobs have no timeout of their own)."""
    box: Dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the test below
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"{what} did not finish within {seconds:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    # Short path: Ray's unix sockets live under it (108-byte limit); private to this session.
    temp_dir = tempfile.mkdtemp(prefix="frt")
    pid_dir = os.path.join(temp_dir, "pids")
    os.makedirs(pid_dir)
    saved = {k: os.environ.get(k)
             for k in ("PYTHONPATH", "FASTORT_TEST_PID_DIR", "RAY_USAGE_STATS_ENABLED", "RAY_TMPDIR")}
    # Ray writes the cluster's address under RAY_TMPDIR/ray (else /tmp/ray, absent on a fresh machine).
    os.environ["RAY_TMPDIR"] = temp_dir
    os.makedirs(os.path.join(temp_dir, "ray"))
    # The nodes' workers inherit this environment: they import tests/ray/ray_helpers.py and tests/models.py.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, TESTS, saved["PYTHONPATH"]) if p)
    os.environ["FASTORT_TEST_PID_DIR"] = pid_dir
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    common = dict(object_store_memory=OBJECT_STORE_BYTES, temp_dir=temp_dir, include_dashboard=False)
    cluster = None
    try:
        cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=1, resources={"head": 1}, **common))
        nodes = {}
        for name in ("w0", "w1"):
            node = cluster.add_node(num_cpus=WORKER_CPUS, resources={f"node_{name}": 1, "worker": 1}, **common)
            nodes[name] = node.node_id
        ray.init(address=cluster.address, log_to_driver=False)
        yield RayCluster(cluster, cluster.address, nodes, pid_dir)
    finally:
        try:
            if "ray.serve" in __import__("sys").modules:
                from ray import serve

                try:
                    serve.shutdown()
                except Exception:
                    pass
            ray.shutdown()
        finally:
            if cluster is not None:
                cluster.shutdown()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            shutil.rmtree(temp_dir, ignore_errors=True)
