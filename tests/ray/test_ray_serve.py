"""Ray Serve: a fastort deployment on the test cluster, by handle and over HTTP."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import models
from conftest import free_port

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

from ray import serve  # noqa: E402

from fastort import Engine  # noqa: E402
from fastort.ray import ServeConfig, deployment  # noqa: E402
from fastort.ray.serve_deployment import USER_CODE_THREAD_ENV, serve_options  # noqa: E402

RESULT_TIMEOUT_S = 60
DEPLOY_TIMEOUT_S = 120
#: Replicas reserve a fraction of a worker node's logical CPUs.
REPLICA_OPTIONS = {"num_cpus": 0.5}


@pytest.fixture(scope="module")
def serve_http(ray_cluster):
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


def run_app(app, name, route_prefix=None):
    """serve.run with a bound on how long the deployment may take to come up."""
    box = {}
    thread = threading.Thread(target=lambda: box.update(handle=serve.run(app, name=name, route_prefix=route_prefix)),
                              daemon=True)
    thread.start()
    thread.join(DEPLOY_TIMEOUT_S)
    assert "handle" in box, f"application {name} did not start within {DEPLOY_TIMEOUT_S} s"
    return box["handle"]


def mlp_app(name, **kwargs):
    config = ServeConfig(name=name, max_batch_size=16, max_delay_us=2000, ray_actor_options=REPLICA_OPTIONS)
    return deployment(models.mlp(), config, **kwargs)


def test_concurrent_requests_by_handle_are_batched_in_fastort(serve_http, rng):
    handle = run_app(mlp_app("mlp_handle"), "handle_app", "/handle")
    try:
        requests = [rng.standard_normal((int(rng.integers(1, 4)), 8)).astype(np.float32) for _ in range(200)]
        responses = [handle.remote(x) for x in requests]
        results = [r.result(timeout_s=RESULT_TIMEOUT_S) for r in responses]
        with Engine(models.mlp()) as engine:
            for x, result in zip(requests, results):
                np.testing.assert_allclose(result["y"], engine.run({"x": x})["y"], rtol=1e-5, atol=1e-6)
        stats = handle.stats.remote().result(timeout_s=RESULT_TIMEOUT_S)
        assert stats["requests"] == 200
        assert stats["batches"] < 200  # fastort's batcher merged requests (max_ongoing_requests let them in)
    finally:
        serve.delete("handle_app")


def post(url, body, timeout=RESULT_TIMEOUT_S):
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_concurrent_http_requests_in_open_inference_protocol_json(serve_http, rng):
    run_app(mlp_app("mlp_http"), "http_app", "/mlp")
    url = f"{serve_http}/mlp/v2/models/mlp_http/infer"
    try:
        inputs = [rng.standard_normal((2, 8)).astype(np.float32) for _ in range(40)]
        bodies = [json.dumps({"inputs": [{"name": "x", "shape": [2, 8], "datatype": "FP32",
                                          "data": x.reshape(-1).tolist()}]}).encode() for x in inputs]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda b: post(url, b), bodies))
        with Engine(models.mlp()) as engine:
            for x, (status, answer) in zip(inputs, answers):
                assert status == 200, answer
                (out,) = answer["outputs"]
                assert out["name"] == "y" and out["shape"] == [2, 4] and out["datatype"] == "FP32"
                np.testing.assert_allclose(np.array(out["data"], np.float32).reshape(2, 4),
                                           engine.run({"x": x})["y"], rtol=1e-5, atol=1e-6)
        status, answer = post(url, b'{"inputs": [{"name": "x", "shape": [2, 8], "datatype": "FP32", "data": [1]}]}')
        assert status == 400 and "needs 16 elements" in answer["error"]
        status, answer = post(url, b"{not json")
        assert status == 400 and "not valid JSON" in answer["error"]
        status, answer = post(url, b'{"inputs": [{"name": "x", "shape": [1, 8], "datatype": "INT64", '
                                   b'"data": [1, 2, 3, 4, 5, 6, 7, 8]}]}')
        assert status == 400 and "int64" in answer["error"]
        with urllib.request.urlopen(f"{serve_http}/mlp", timeout=RESULT_TIMEOUT_S) as response:
            meta = json.loads(response.read())
        assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 8]}]
    finally:
        serve.delete("http_app")


def replicas_running(app, name):
    status = serve.status().applications[app].deployments[name]
    return status.replica_states.get("RUNNING", 0)


def test_scaling_from_one_to_two_replicas_while_requests_flow(serve_http, rng):
    handle = run_app(mlp_app("mlp_scale", num_replicas=1), "scale_app", "/scale")
    x = rng.standard_normal((3, 8)).astype(np.float32)
    with Engine(models.mlp()) as engine:
        expected = engine.run({"x": x})["y"]
    stop = threading.Event()
    failures, done = [], [0]

    def client():
        deadline = time.monotonic() + 180  # bounded loop
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                y = handle.remote(x).result(timeout_s=RESULT_TIMEOUT_S)["y"]
                if not np.allclose(y, expected, rtol=1e-5, atol=1e-6):
                    failures.append("wrong result")
                done[0] += 1
            except Exception as e:  # any failure fails the test below
                failures.append(repr(e))

    clients = [threading.Thread(target=client, daemon=True) for _ in range(8)]
    try:
        for t in clients:
            t.start()
        time.sleep(1.0)
        before = done[0]
        run_app(mlp_app("mlp_scale", num_replicas=2), "scale_app", "/scale")  # in-place update: 1 -> 2
        deadline = time.monotonic() + DEPLOY_TIMEOUT_S
        while replicas_running("scale_app", "mlp_scale") < 2:
            assert time.monotonic() < deadline, "the second replica did not start"
            time.sleep(0.5)
        after = done[0]
        time.sleep(1.5)
    finally:
        stop.set()
        for t in clients:
            t.join(RESULT_TIMEOUT_S)
    try:
        assert not failures, failures[:5]
        assert before > 0 and done[0] > after, "requests did not keep flowing"
        # Routers learn of the new replica on their own schedule: ask in concurrent rounds
        # (power-of-two routing spreads concurrent calls) until both answer or the deadline passes.
        pids: set[int] = set()
        deadline = time.monotonic() + DEPLOY_TIMEOUT_S
        while len(pids) < 2 and time.monotonic() < deadline:
            calls = [handle.stats.remote() for _ in range(8)]
            pids.update(c.result(timeout_s=RESULT_TIMEOUT_S)["pid"] for c in calls)
        assert len(pids) == 2, "requests did not reach both replicas"
    finally:
        serve.delete("scale_app")


def test_deleting_the_application_drains_requests_in_flight(serve_http, rng):
    config = ServeConfig(name="slow", max_batch_size=32, max_delay_us=1000, ray_actor_options=REPLICA_OPTIONS)
    handle = run_app(deployment(models.slow(n=256, loops=64), config), "drain_app", "/drain")
    x = rng.standard_normal((16, 256)).astype(np.float32)
    started = time.monotonic()
    handle.remote(x).result(timeout_s=RESULT_TIMEOUT_S)  # warm, and how long one request takes
    one = time.monotonic() - started
    sent = time.monotonic()
    responses = [handle.remote(x) for _ in range(8)]  # max_ongoing_requests = 64: all go to the replica
    # The 8 take several times `one` (at most 2 per batch): delete comes while most are in flight
    assert time.monotonic() - sent < one
    serve.delete("drain_app")  # blocks until the replica has stopped
    results = [r.result(timeout_s=RESULT_TIMEOUT_S) for r in responses]
    assert all(r["y"].shape == (16, 256) for r in results)


def test_replica_settings_for_a_handler_that_never_blocks():
    options = serve_options(ServeConfig(), {})
    assert options["logging_config"] == {"enable_access_log": False}
    assert options["ray_actor_options"]["runtime_env"]["env_vars"] == {USER_CODE_THREAD_ENV: "0"}
    mine = {"num_cpus": 2, "runtime_env": {"env_vars": {"MINE": "1", USER_CODE_THREAD_ENV: "1"}, "pip": ["x"]}}
    options = serve_options(ServeConfig(access_log=True, ray_actor_options=mine), {})
    assert options["logging_config"] == {"enable_access_log": True}
    assert options["ray_actor_options"]["runtime_env"] == {"env_vars": {"MINE": "1", USER_CODE_THREAD_ENV: "1"},
                                                           "pip": ["x"]}  # the user's choice wins
    assert mine["runtime_env"]["env_vars"] == {"MINE": "1", USER_CODE_THREAD_ENV: "1"}  # not modified
    options = serve_options(ServeConfig(user_code_thread=True), {})
    assert "runtime_env" not in options["ray_actor_options"]


def test_contradictory_settings_are_warned_about():
    with pytest.warns(RuntimeWarning, match="never hands a replica enough requests"):
        deployment(models.mlp(), ServeConfig(max_batch_size=32, max_ongoing_requests=4))
    with pytest.warns(RuntimeWarning, match="long before a batch can fill"):
        deployment(models.mlp(), ServeConfig(max_batch_size=32),
                   autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 2})
    with pytest.warns(RuntimeWarning, match="oversubscribe"):
        deployment(models.mlp(), ServeConfig(ray_actor_options={"num_cpus": 1}), intra_op_threads=4)
