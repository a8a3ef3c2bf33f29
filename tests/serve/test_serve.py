"""``fastort serve`` driven by the real tritonclient (HTTP and gRPC, sync and
async, binary and JSON) against the same models run in-process with Engine.run."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import threading
from typing import Optional

import numpy as np
import pytest

import tritonclient.grpc as tg
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

from servers import DATATYPES, Served, alltypes, start, stop
from fastort import Engine


def sample(dt: str, shape, rng: np.random.Generator) -> np.ndarray:
    if dt == "BOOL":
        return rng.integers(0, 2, shape).astype(bool)
    if dt == "BYTES":
        words = np.array(["", "a", "été", "naïve words", "∑ 42"], dtype=object)
        return np.array([w.encode() for w in words[rng.integers(0, len(words), int(np.prod(shape)))]],
                        dtype=object).reshape(shape)
    if dt == "BF16":
        import ml_dtypes

        return rng.standard_normal(shape).astype(ml_dtypes.bfloat16)
    dtype = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}.get(dt)
    if dtype is not None:
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dt.lower())
    return rng.integers(info.min, info.max, shape, dtype=dt.lower(), endpoint=True)


def same(a: np.ndarray, b: np.ndarray) -> None:
    if a.dtype == object or b.dtype == object:
        enc = lambda v: v.encode() if isinstance(v, str) else bytes(v)  # noqa: E731
        assert a.shape == b.shape
        assert [enc(v) for v in a.ravel()] == [enc(v) for v in b.ravel()]
    else:
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


@pytest.fixture(scope="module")
def reference():
    with Engine(alltypes().SerializeToString()) as engine:
        yield engine


# -- health, metadata, configuration, statistics, repository -----------------------


def test_health_metadata_config(server: Served) -> None:
    h = th.InferenceServerClient(server.http_url)
    g = tg.InferenceServerClient(server.grpc_url)
    for c in (h, g):
        assert c.is_server_live() and c.is_server_ready()
        assert c.is_model_ready("tiny") and not c.is_model_ready("nope")
    meta = h.get_server_metadata()
    assert meta["name"] == "fastort"
    assert {"binary_tensor_data", "model_configuration", "statistics", "model_repository"} <= set(meta["extensions"])
    assert "statistics" in g.get_server_metadata(as_json=True)["extensions"]
    for m in (h.get_model_metadata("tiny"), g.get_model_metadata("tiny", as_json=True)):
        assert m["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "4"] if isinstance(
            m["inputs"][0]["shape"][0], str) else [-1, 4]}]
        assert m["outputs"][0]["name"] == "y" and m["versions"] == ["1"]
    for cfg in (h.get_model_config("tiny"), g.get_model_config("tiny", as_json=True)["config"]):
        assert int(cfg["max_batch_size"]) == 32
        assert [int(d) for d in cfg["input"][0]["dims"]] == [4]  # the batch dim is implicit
        assert cfg["input"][0]["data_type"] == "TYPE_FP32"
        assert int(cfg["dynamic_batching"]["max_queue_delay_microseconds"]) == 2000
    # numbered versions: the highest is served, other versions are not ready
    assert h.get_model_metadata("mlp")["versions"] == ["2"]
    assert h.is_model_ready("mlp", "2") and not h.is_model_ready("mlp", "1")
    index = {m["name"]: m for m in h.get_model_repository_index()}
    assert index["tiny"]["state"] == "READY" and index["mlp"]["version"] == "2"
    assert {m.name for m in g.get_model_repository_index().models} == set(index)


def test_every_datatype_round_trips(server: Served, reference: Engine) -> None:
    rng = np.random.default_rng(0)
    feeds = {f"in_{dt}": sample(dt, (2, 3), rng) for dt in DATATYPES}
    expected = reference.run(feeds)
    h = th.InferenceServerClient(server.http_url)
    g = tg.InferenceServerClient(server.grpc_url)
    for binary in (True, False):
        inputs, outputs = [], []
        for dt in DATATYPES:
            json_ok = binary or dt not in ("FP16", "BF16")  # tritonclient sends these only as binary
            i = th.InferInput(f"in_{dt}", [2, 3], dt)
            i.set_data_from_numpy(feeds[f"in_{dt}"], binary_data=not json_ok or binary)
            inputs.append(i)
            outputs.append(th.InferRequestedOutput(f"out_{dt}", binary_data=not json_ok or binary))
        result = h.infer("alltypes", inputs, outputs=outputs)
        for dt in DATATYPES:
            got = result.as_numpy(f"out_{dt}")
            if dt == "BF16" and got.dtype != expected[f"out_{dt}"].dtype:  # older tritonclient: raw uint16
                got = got.view(expected[f"out_{dt}"].dtype)
            same(got, expected[f"out_{dt}"])
    inputs = []
    for dt in DATATYPES:
        i = tg.InferInput(f"in_{dt}", [2, 3], dt)
        i.set_data_from_numpy(feeds[f"in_{dt}"])
        inputs.append(i)
    result = g.infer("alltypes", inputs)
    for dt in DATATYPES:
        same(result.as_numpy(f"out_{dt}"), expected[f"out_{dt}"])


def test_async_clients_get_their_own_rows(server: Served) -> None:
    import tritonclient.grpc.aio as tga
    import tritonclient.http.aio as tha

    with Engine(server_model_path(server, "tiny")) as engine:
        xs = [np.full((1 + i % 3, 4), i, np.float32) for i in range(24)]

        async def go() -> None:
            h = tha.InferenceServerClient(server.http_url)
            g = tga.InferenceServerClient(server.grpc_url)
            try:
                async def one(i: int, x: np.ndarray) -> None:
                    if i % 2:
                        inp = tha.InferInput("x", list(x.shape), "FP32")
                        inp.set_data_from_numpy(x, binary_data=i % 4 == 1)
                        r = await h.infer("tiny", [inp])
                    else:
                        inp = tga.InferInput("x", list(x.shape), "FP32")
                        inp.set_data_from_numpy(x)
                        r = await g.infer("tiny", [inp])
                    np.testing.assert_array_equal(r.as_numpy("y"), engine.run({"x": x})["y"])

                await asyncio.gather(*(one(i, x) for i, x in enumerate(xs)))
            finally:
                await h.close()
                await g.close()

        asyncio.run(go())


def test_concurrent_sync_clients(server: Served) -> None:
    with Engine(server_model_path(server, "tiny")) as engine:
        errors = []

        def client(k: int) -> None:
            try:
                c = th.InferenceServerClient(server.http_url) if k % 2 else tg.InferenceServerClient(server.grpc_url)
                mod = th if k % 2 else tg
                for j in range(10):
                    x = np.random.default_rng(k * 100 + j).standard_normal((2, 4)).astype(np.float32)
                    i = mod.InferInput("x", [2, 4], "FP32")
                    i.set_data_from_numpy(x)
                    np.testing.assert_array_equal(c.infer("tiny", [i]).as_numpy("y"), engine.run({"x": x})["y"])
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors


def server_model_path(server: Served, name: str) -> str:
    repo = server_repo(server)
    return os.path.join(repo, f"{name}.onnx")


def server_repo(server: Served) -> str:
    args = server.proc.args
    assert isinstance(args, list)
    return str(args[3])


def test_statistics_and_metrics_move(server: Served) -> None:
    h = th.InferenceServerClient(server.http_url)
    g = tg.InferenceServerClient(server.grpc_url)
    before = h.get_inference_statistics("tiny")["model_stats"][0]
    success0 = server.metric("nv_inference_request_success", model="tiny")
    count0 = server.metric("nv_inference_count", model="tiny")
    exec0 = server.metric("nv_inference_exec_count", model="tiny")
    queue0 = server.metric("nv_inference_queue_duration_us", model="tiny", version="1")
    infer0 = server.metric("nv_inference_compute_infer_duration_us", model="tiny", version="1")
    for _ in range(5):
        i = th.InferInput("x", [3, 4], "FP32")
        i.set_data_from_numpy(np.ones((3, 4), np.float32))
        h.infer("tiny", [i])
    after = h.get_inference_statistics("tiny")["model_stats"][0]
    assert after["inference_stats"]["success"]["count"] == before["inference_stats"]["success"]["count"] + 5
    assert after["inference_count"] == before["inference_count"] + 15
    assert after["execution_count"] > before["execution_count"]
    # the engine's per-request split (tiny batches): time queued, then running
    stats0, stats1 = before["inference_stats"], after["inference_stats"]
    for part in ("queue", "compute_infer"):
        assert int(stats1[part]["count"]) == int(stats0[part]["count"]) + 5
        assert int(stats1[part]["ns"]) > int(stats0[part]["ns"]) and int(stats1[part]["ns"]) > 0, part
    assert int(stats1["queue"]["ns"]) + int(stats1["compute_infer"]["ns"]) <= int(stats1["success"]["ns"])
    assert int(g.get_inference_statistics("tiny").model_stats[0].inference_count) == after["inference_count"]
    assert server.metric("nv_inference_request_success", model="tiny", version="1") == success0 + 5
    assert server.metric("nv_inference_count", model="tiny") == count0 + 15
    assert server.metric("nv_inference_exec_count", model="tiny") > exec0
    assert server.metric("nv_inference_request_duration_us", model="tiny") > 0
    queue1 = server.metric("nv_inference_queue_duration_us", model="tiny", version="1")
    infer1 = server.metric("nv_inference_compute_infer_duration_us", model="tiny", version="1")
    assert queue1 > queue0 and queue1 > 0
    assert infer1 > infer0 and infer1 > 0
    assert queue1 + infer1 <= server.metric("nv_inference_request_duration_us", model="tiny")
    assert server.metric("fastort_inference_request_duration_seconds_count", model="tiny", protocol="http") >= 5
    failures0 = server.metric("nv_inference_request_failure", model="tiny", reason="OTHER")
    with pytest.raises(InferenceServerException):
        i = th.InferInput("x", [3, 5], "FP32")
        i.set_data_from_numpy(np.ones((3, 5), np.float32))
        h.infer("tiny", [i])
    assert server.metric("nv_inference_request_failure", model="tiny", reason="OTHER") == failures0 + 1


def test_unload_and_load(server: Served) -> None:
    h = th.InferenceServerClient(server.http_url)
    g = tg.InferenceServerClient(server.grpc_url)
    h.unload_model("mlp")
    assert not h.is_model_ready("mlp")
    index = {m["name"]: m for m in h.get_model_repository_index()}
    assert index["mlp"]["state"] == "UNAVAILABLE"
    i = th.InferInput("x", [1, 8], "FP32")
    i.set_data_from_numpy(np.ones((1, 8), np.float32))
    with pytest.raises(InferenceServerException, match="not ready"):
        h.infer("mlp", [i])
    g.load_model("mlp")
    assert h.is_model_ready("mlp")
    assert h.infer("mlp", [i]).as_numpy("y").shape == (1, 4)
    with pytest.raises(InferenceServerException, match="not in the repository"):
        h.load_model("nope")


# -- bad input: 4xx naming what was wrong, and the server carries on ---------------------


def post(server: Served, path: str, body: bytes, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.http, timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def x_input(shape=(2, 4), datatype="FP32", name="x"):
    i = th.InferInput(name, list(shape), datatype)
    i.set_data_from_numpy(np.ones(shape, {"FP32": np.float32, "FP64": np.float64}[datatype]))
    return i


@pytest.mark.parametrize("kind", ["http", "grpc"])
def test_bad_requests_name_what_was_wrong(server: Served, kind: str) -> None:
    mod = th if kind == "http" else tg
    c = mod.InferenceServerClient(server.http_url if kind == "http" else server.grpc_url)

    def fails(match: Optional[str], status: str, model: str = "tiny", inputs=None, **kw) -> None:
        with pytest.raises(InferenceServerException, match=match) as e:
            c.infer(model, inputs, **kw)
        assert status in str(e.value.status()), e.value

    def inp(shape=(2, 4), datatype="FP32", name="x"):
        i = mod.InferInput(name, list(shape), datatype)
        i.set_data_from_numpy(np.ones(shape, {"FP32": np.float32, "FP64": np.float64}[datatype]))
        return i

    not_found = "404" if kind == "http" else "NOT_FOUND"
    bad = "400" if kind == "http" else "INVALID_ARGUMENT"
    fails("unknown model 'nope'", not_found, model="nope", inputs=[inp()])
    fails("has no input 'z'", bad, inputs=[inp(name="z")])
    fails("datatype FP64 does not match the model's FP32", bad, inputs=[inp(datatype="FP64")])
    fails(r"dim 1 must be 4 .*got shape \[2, 5\]", bad, inputs=[inp(shape=(2, 5))])
    fails("expected rank 2", bad, inputs=[inp(shape=(2, 4, 1))])
    fails("has no output 'nope'", bad, inputs=[inp()], outputs=[mod.InferRequestedOutput("nope")])
    fails("priority 5 is beyond", bad, inputs=[inp()], priority=5)
    big = mod.InferInput("x", [70000, 4], "FP32")
    big.set_data_from_numpy(np.ones((70000, 4), np.float32))  # 1.1 MB > --max-request-bytes 1 MiB
    fails(None if kind == "grpc" else "exceeds --max-request-bytes", "413" if kind == "http" else "RESOURCE_EXHAUSTED",
          inputs=[big])
    assert c.is_server_live() and c.is_server_ready()


def test_malformed_http_bodies(server: Served) -> None:
    path = "/v2/models/tiny/infer"
    cases = [
        (b"{not json", {}, "malformed JSON"),
        (b"[1, 2]", {}, "must be a JSON object"),
        (b'{"inputs": 3}', {}, "'inputs' list"),
        (json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3]}]}).encode(),
         {}, "data has 3 elements, shape \\[1, 4\\] needs 4"),
        (json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                                 "data": ["a", "b", "c", "d"]}]}).encode(), {}, "must be numbers"),
        (json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, -4], "data": []}]}).encode(),
         {}, "non-negative ints"),
        (json.dumps({"inputs": [{"name": "x", "datatype": "FP99", "shape": [1, 4], "data": []}]}).encode(),
         {}, "unknown datatype 'FP99'"),
        (json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4]}]}).encode(), {},
         "neither 'data' nor"),
        (json.dumps({"inputs": []}).encode(), {}, "missing input"),
    ]
    header = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                                     "parameters": {"binary_data_size": 16}}]}).encode()
    cases += [
        (header + b"\0" * 8, {"Inference-Header-Content-Length": str(len(header))}, "runs past the 8 bytes"),
        (header + b"\0" * 20, {"Inference-Header-Content-Length": str(len(header))}, "4 bytes of binary data that"),
        (header, {"Inference-Header-Content-Length": str(len(header) + 5)}, "exceeds the body"),
        (header, {"Inference-Header-Content-Length": "abc"}, "not a number"),
    ]
    for body, headers, match in cases:
        status, text = post(server, path, body, headers)
        assert status == 400, (match, status, text)
        import re

        assert re.search(match, json.loads(text)["error"]), (match, text)
    status, text = post(server, path, b"x" * (2 << 20))
    assert status == 413 and b"max-request-bytes" in text
    status, text = post(server, "/v2/models/tiny/infer", b"{}", {"Content-Encoding": "br"})
    assert status == 400 and b"Content-Encoding" in text
    assert th.InferenceServerClient(server.http_url).is_server_live()


# -- backpressure, deadlines, disconnects, drain ---------------------------------------


def slow_input(mod, rows: int = 1):
    i = mod.InferInput("x", [rows, 256, 256], "FP32")
    i.set_data_from_numpy(np.full((rows, 256, 256), 0.01, np.float32))
    return i


def test_queue_full_and_timeout(slow_server: Served) -> None:
    import tritonclient.grpc.aio as tga
    import tritonclient.http.aio as tha

    async def go() -> None:
        h = tha.InferenceServerClient(slow_server.http_url)
        g = tga.InferenceServerClient(slow_server.grpc_url)
        try:
            # one runs, one waits (max_queue 1): the rest are refused at once
            results = await asyncio.gather(*(h.infer("slow", [slow_input(tha)]) for _ in range(6)),
                                           return_exceptions=True)
            refused = [r for r in results if isinstance(r, InferenceServerException)]
            assert refused and all("503" in str(r.status()) and "queue full" in str(r) for r in refused), results
            assert any(not isinstance(r, BaseException) for r in results)
            busy = asyncio.ensure_future(h.infer("slow", [slow_input(tha, 4)]))
            await asyncio.sleep(0.05)
            grpc_results = await asyncio.gather(*(g.infer("slow", [slow_input(tga)]) for _ in range(6)),
                                                return_exceptions=True)
            await busy
            assert any(isinstance(r, InferenceServerException) and "UNAVAILABLE" in str(r.status())
                       for r in grpc_results), grpc_results
            # a queued request whose timeout passes behind a running one fails, never runs
            first = asyncio.ensure_future(h.infer("slow", [slow_input(tha, 8)]))
            await asyncio.sleep(0.05)
            with pytest.raises(InferenceServerException, match="timeout") as e:
                await h.infer("slow", [slow_input(tha)], timeout=1000)
            assert "504" in str(e.value.status())
            await first
            first = asyncio.ensure_future(g.infer("slow", [slow_input(tga, 8)]))
            await asyncio.sleep(0.05)
            with pytest.raises(InferenceServerException) as e:
                await g.infer("slow", [slow_input(tga)], timeout=1000)
            assert "DEADLINE_EXCEEDED" in str(e.value.status())
            await first
        finally:
            await h.close()
            await g.close()

    asyncio.run(go())
    assert slow_server.metric("nv_inference_request_failure", model="slow", reason="REJECTED") >= 3


def test_client_disconnect_cancels_queued_request(slow_server: Served) -> None:
    import socket

    cancelled0 = slow_server.metric("nv_inference_request_failure", model="slow", reason="CANCELED")
    exec0 = slow_server.metric("nv_inference_exec_count", model="slow")
    h = th.InferenceServerClient(slow_server.http_url)
    x = np.full((1, 256, 256), 0.01, np.float32)
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 256, 256],
                                   "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    done = threading.Event()
    outcome = []

    def busy() -> None:  # keeps the only replica running while the next request waits
        try:
            h.infer("slow", [slow_input(th, 16)])
            outcome.append("ok")
        except Exception as e:
            outcome.append(e)
        finally:
            done.set()

    t = threading.Thread(target=busy)
    t.start()
    try:
        import time

        time.sleep(0.1)
        sock = socket.create_connection(("127.0.0.1", slow_server.http))
        sock.sendall(b"POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                     b"Inference-Header-Content-Length: %d\r\n\r\n" % (len(body) + x.nbytes, len(body)) + body
                     + x.tobytes())
        time.sleep(0.05)
        sock.close()  # gone while its request waits in the queue
        deadline = time.monotonic() + 20
        while slow_server.metric("nv_inference_request_failure", model="slow", reason="CANCELED") <= cancelled0:
            assert time.monotonic() < deadline, ("the disconnected request was not cancelled", outcome,
                                                 slow_server.metrics_text())
            time.sleep(0.05)
    finally:
        t.join(60)
    assert done.is_set() and outcome == ["ok"], outcome
    # removed from the engine's queue, not only abandoned: one replica, one row a batch, so had it
    # stayed queued it would have run before this request; the busy one and this one are the only runs
    th.InferenceServerClient(slow_server.http_url).infer("slow", [slow_input(th)])  # a client of this thread
    assert slow_server.metric("nv_inference_exec_count", model="slow") == exec0 + 2


def test_sigterm_drains_every_accepted_request(slow_repo: str, tmp_path) -> None:
    import tritonclient.http.aio as tha

    s = start(slow_repo, str(tmp_path), "--max-batch-size", "1", "--intra-op-threads", "1")
    try:
        async def go() -> None:
            h = tha.InferenceServerClient(s.http_url)
            try:
                tasks = [asyncio.ensure_future(h.infer("slow", [slow_input(tha, 4)])) for _ in range(4)]
                loop = asyncio.get_running_loop()
                while await loop.run_in_executor(None, lambda: s.metric("nv_inference_pending_request_count",
                                                                        model="slow")) < 4:
                    await asyncio.sleep(0.02)
                s.proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.1)
                assert not await h.is_server_ready()  # draining: not ready, still answering
                results = await asyncio.gather(*tasks)
                assert all(r.as_numpy("y").shape == (4, 256, 256) for r in results)
            finally:
                await h.close()

        asyncio.run(go())
        assert s.proc.wait(timeout=60) == 0, open(s.log).read()
    finally:
        stop(s.proc)
