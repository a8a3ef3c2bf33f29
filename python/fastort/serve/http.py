"""The HTTP/REST front end: a plain ASGI application (served by uvicorn).

It reads the body itself so that it can refuse an oversized request from its
Content-Length before reading it, keep a one-chunk body as is (binary tensors
become arrays over it), and notice a client that disconnects while its request
waits in the batcher (the request is then cancelled).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import zlib
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple

import numpy as np

from .protocol import (ProtocolError, check_shape, dtype_of, error_for, from_json, from_raw, json_data,
                       output_arrays, parse_parameters, raw_bytes)
from .service import EngineTime, Service

Scope = Dict[str, Any]
Receive = Callable[[], Awaitable[Dict[str, Any]]]
Send = Callable[[Dict[str, Any]], Awaitable[None]]

HEADER_LENGTH = b"inference-header-content-length"
_MODEL = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(?:/(ready|config|stats|infer))?/?$")
_REPO = re.compile(r"^/v2/repository/models/([^/]+)/(load|unload)/?$")
_JSON = b"application/json"


class _Disconnected(Exception):
    pass


def _headers(scope: Scope) -> Dict[bytes, bytes]:
    return {k.lower(): v for k, v in scope.get("headers", ())}


async def _send(send: Send, status: int, body: bytes, content_type: bytes = _JSON,
                extra: Tuple[Tuple[bytes, bytes], ...] = ()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})


async def _send_json(send: Send, status: int, obj: Any) -> None:
    await _send(send, status, json.dumps(obj).encode())


async def _send_error(send: Send, error: ProtocolError) -> None:
    await _send_json(send, error.http_status, {"error": str(error)})


class HttpApp:
    """ASGI app for the Open Inference Protocol's REST endpoints."""

    def __init__(self, service: Service, max_request_bytes: int) -> None:
        self.service = service
        self.max_request_bytes = max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # pragma: no cover - uvicorn runs with lifespan off
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        try:
            if path.startswith("/v2/models/") and path != "/v2/models/stats":
                await self._model_route(scope, receive, send, path, method)
            else:
                await self._server_route(scope, receive, send, path, method)
        except _Disconnected:
            return
        except ProtocolError as e:
            await _send_error(send, e)

    # -- routes ----------------------------------------------------------------------

    async def _server_route(self, scope: Scope, receive: Receive, send: Send, path: str, method: str) -> None:
        s = self.service
        path = path.rstrip("/") or "/"
        if path in ("/v2/health/live", "/v2/health/ready"):
            self._method(method, "GET", path)
            ok = True if path.endswith("live") else s.ready
            await _send(send, 200 if ok else 503, b"")
        elif path == "/v2":
            self._method(method, "GET", path)
            await _send_json(send, 200, s.metadata())
        elif path == "/v2/models/stats":
            self._method(method, "GET", path)
            await _send_json(send, 200, s.statistics(s.models_for_stats("", "")))
        elif path == "/v2/repository/index":
            self._method(method, "POST", path)
            body = await self._body(scope, receive)
            request = self._json(body) if body else {}
            ready_only = bool(request.get("ready")) if isinstance(request, dict) else False
            index = s.repository.index()
            await _send_json(send, 200, [m for m in index if m["state"] == "READY"] if ready_only else index)
        elif _REPO.match(path):
            self._method(method, "POST", path)
            m = _REPO.match(path)
            assert m is not None
            await self._body(scope, receive)
            name, action = m.group(1), m.group(2)
            try:
                if action == "load":
                    await asyncio.to_thread(s.repository.load, name)
                else:
                    await asyncio.to_thread(s.repository.unload, name)
            except Exception as e:
                error = error_for(e)
                if error.kind == "internal":  # a model that fails to load is the request's problem
                    error = ProtocolError(f"failed to load '{name}': {e}", "invalid")
                raise error from None
            await _send(send, 200, b"")
        elif path == "/metrics" and s.metrics is not None:
            self._method(method, "GET", path)
            await _send(send, 200, s.metrics.exposition(), b"text/plain; version=0.0.4; charset=utf-8")
        else:
            raise ProtocolError(f"no endpoint {method} {path}", "not_found")

    async def _model_route(self, scope: Scope, receive: Receive, send: Send, path: str, method: str) -> None:
        m = _MODEL.match(path)
        if m is None:
            raise ProtocolError(f"no endpoint {method} {path}", "not_found")
        name, version, op = m.group(1), m.group(2) or "", m.group(3) or ""
        s = self.service
        if op == "infer":
            self._method(method, "POST", path)
            await self._infer(scope, receive, send, name, version)
            return
        self._method(method, "GET", path)
        if op == "ready":
            try:
                s.model(name, version)
                ok = s.ready
            except ProtocolError:
                ok = False
            await _send(send, 200 if ok else 400, b"")
            return
        model = s.model(name, version)
        if op == "config":
            await _send_json(send, 200, s.model_config(model))
        elif op == "stats":
            await _send_json(send, 200, s.statistics([model]))
        else:
            await _send_json(send, 200, s.model_metadata(model))

    @staticmethod
    def _method(method: str, want: str, path: str) -> None:
        if method != want:
            raise ProtocolError(f"{path} takes {want}, not {method}", "invalid")

    # -- request bodies ------------------------------------------------------------

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.max_request_bytes
        headers = _headers(scope)
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                n = int(declared)
            except ValueError:
                raise ProtocolError(f"Content-Length {declared!r} is not a number") from None
            if n > limit:
                raise ProtocolError(f"request body of {n} bytes exceeds --max-request-bytes {limit}", "too_large")
        chunks: List[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise ProtocolError(f"request body exceeds --max-request-bytes {limit}", "too_large")
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        encoding = headers.get(b"content-encoding", b"identity").lower()
        if encoding in (b"gzip", b"deflate"):
            body = self._inflate(body, encoding)
        elif encoding != b"identity":
            raise ProtocolError(f"unsupported Content-Encoding {encoding.decode(errors='replace')!r} "
                                "(gzip, deflate or identity)")
        return body

    def _inflate(self, body: bytes, encoding: bytes) -> bytes:
        d = zlib.decompressobj(wbits=31 if encoding == b"gzip" else 15)
        try:
            out = d.decompress(body, self.max_request_bytes + 1)
        except zlib.error as e:
            raise ProtocolError(f"request body is not valid {encoding.decode()} data: {e}") from None
        if len(out) > self.max_request_bytes:
            raise ProtocolError(f"decompressed request exceeds --max-request-bytes {self.max_request_bytes}",
                                "too_large")
        return out

    @staticmethod
    def _json(data: Any) -> Any:
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise ProtocolError(f"malformed JSON in request: {e}") from None

    # -- inference -----------------------------------------------------------------

    async def _infer(self, scope: Scope, receive: Receive, send: Send, name: str, version: str) -> None:
        s = self.service
        t0 = time.perf_counter()
        model = s.model(name, version)
        body = await self._body(scope, receive)
        s.begin(model)
        error: Optional[ProtocolError] = None
        rows = 0
        t_infer = t_out = t0
        engine_time: Optional[EngineTime] = None
        try:
            request, binary = self._split(scope, body)
            inputs, outputs, binary_out, priority, timeout = self._decode(model, request, binary)
            rows = s.rows(model, inputs)
            t_infer = time.perf_counter()
            result, engine_time = await self._run_watching(receive, model, inputs, outputs, priority, timeout)
            t_out = time.perf_counter()
            payload, headers, content_type = self._encode(model, request, result, binary_out)
            await _send(send, 200, payload, content_type, headers)
        except ProtocolError as e:
            error = e
            if e.kind != "cancelled":
                await _send_error(send, e)
        except Exception as e:  # never a crash: the client gets a 500 naming it
            error = error_for(e)
            await _send_error(send, error)
        finally:
            s.end(model, "http", error, rows, t0, t_infer, t_out, time.perf_counter(), engine_time)

    async def _run_watching(self, receive: Receive, model: Any, inputs: Dict[str, np.ndarray],
                            outputs: Optional[List[str]], priority: int,
                            timeout: Optional[float]) -> Tuple[Dict[str, Any], EngineTime]:
        """Runs the request while watching the connection: a disconnect cancels it."""
        run = asyncio.ensure_future(self.service.run(model, inputs, outputs, priority, timeout))

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    run.cancel()
                    return

        watcher = asyncio.ensure_future(watch())
        try:
            return await run
        except asyncio.CancelledError:
            if run.cancelled() and watcher.done():
                raise ProtocolError("client disconnected; request cancelled", "cancelled") from None
            raise
        finally:
            watcher.cancel()

    def _split(self, scope: Scope, body: bytes) -> Tuple[Dict[str, Any], memoryview]:
        """The JSON header and the binary part of an infer request."""
        declared = _headers(scope).get(HEADER_LENGTH)
        view = memoryview(body)
        if declared is None:
            header_len = len(body)
        else:
            try:
                header_len = int(declared)
            except ValueError:
                raise ProtocolError(f"Inference-Header-Content-Length {declared!r} is not a number") from None
            if header_len < 0 or header_len > len(body):
                raise ProtocolError(f"Inference-Header-Content-Length {header_len} exceeds the body's "
                                    f"{len(body)} bytes")
        request = self._json(view[:header_len].tobytes() if declared is not None else body)
        if not isinstance(request, dict):
            raise ProtocolError("infer request must be a JSON object")
        return request, view[header_len:]

    def _decode(self, model: Any, request: Dict[str, Any], binary: memoryview
                ) -> Tuple[Dict[str, np.ndarray], Optional[List[str]], Dict[str, bool], int, Optional[float]]:
        s = self.service
        where = f"model '{model.name}'"
        raw_inputs = request.get("inputs")
        if not isinstance(raw_inputs, list):
            raise ProtocolError(f"{where}: request needs an 'inputs' list")
        params = request.get("parameters") or {}
        if not isinstance(params, dict):
            raise ProtocolError(f"{where}: request 'parameters' must be an object")
        priority, timeout = parse_parameters(where, params, s.priority_levels(model))
        batched = model.max_batch_size > 0
        inputs: Dict[str, np.ndarray] = {}
        offset = 0
        for item in raw_inputs:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise ProtocolError(f"{where}: each input must be an object with a 'name'")
            iname = item["name"]
            spec = s.input_spec(model, iname)
            iwhere = f"{where} input '{iname}'"
            if iname in inputs:
                raise ProtocolError(f"{iwhere}: given twice")
            datatype = item.get("datatype")
            if not isinstance(datatype, str):
                raise ProtocolError(f"{iwhere}: needs a 'datatype'")
            dtype = dtype_of(datatype)
            dims = check_shape(model.name, spec, datatype, item.get("shape"), batched)
            iparams = item.get("parameters") or {}
            size = iparams.get("binary_data_size") if isinstance(iparams, dict) else None
            if size is not None:
                if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                    raise ProtocolError(f"{iwhere}: binary_data_size must be a non-negative int, got {size!r}")
                if offset + size > len(binary):
                    raise ProtocolError(f"{iwhere}: binary_data_size {size} at offset {offset} runs past the "
                                        f"{len(binary)} bytes of binary data in the body")
                inputs[iname] = from_raw(iwhere, dtype, dims, binary[offset:offset + size])
                offset += size
            elif "data" in item:
                inputs[iname] = from_json(iwhere, dtype, dims, item["data"])
            else:
                raise ProtocolError(f"{iwhere}: has neither 'data' nor parameters.binary_data_size")
        if offset != len(binary):
            raise ProtocolError(f"{where}: the body has {len(binary) - offset} bytes of binary data that no input "
                                "claims")
        s.check_inputs(model, inputs)
        binary_default = bool(params.get("binary_data_output", False))
        binary_out: Dict[str, bool] = {}
        outputs: Optional[List[str]] = None
        requested = request.get("outputs")
        if requested is not None:
            if not isinstance(requested, list):
                raise ProtocolError(f"{where}: 'outputs' must be a list")
            outputs = []
            for o in requested:
                if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                    raise ProtocolError(f"{where}: each requested output must be an object with a 'name'")
                oparams = o.get("parameters") or {}
                if not isinstance(oparams, dict):
                    raise ProtocolError(f"{where}: output '{o['name']}' parameters must be an object")
                if oparams.get("classification"):
                    raise ProtocolError(f"{where}: the classification extension is not supported")
                outputs.append(o["name"])
                binary_out[o["name"]] = bool(oparams.get("binary_data", binary_default))
            s.check_outputs(model, outputs)
        else:
            for spec in model.engine.outputs:
                binary_out[spec.name] = binary_default
        return inputs, outputs, binary_out, priority, timeout

    @staticmethod
    def _encode(model: Any, request: Dict[str, Any], result: Dict[str, Any], binary_out: Dict[str, bool]
                ) -> Tuple[bytes, Tuple[Tuple[bytes, bytes], ...], bytes]:
        from .protocol import datatype_of

        arrays = output_arrays(model.name, result)
        response: Dict[str, Any] = {"model_name": model.name, "model_version": model.version}
        if "id" in request:
            response["id"] = request["id"]
        entries = []
        parts: List[Any] = []
        for name, arr in arrays.items():
            entry: Dict[str, Any] = {"name": name, "datatype": datatype_of(arr.dtype), "shape": list(arr.shape)}
            if binary_out.get(name, False):
                raw = raw_bytes(arr)
                entry["parameters"] = {"binary_data_size": len(raw) if isinstance(raw, bytes) else raw.nbytes}
                parts.append(raw)
            else:
                entry["data"] = json_data(arr)
            entries.append(entry)
        response["outputs"] = entries
        header = json.dumps(response).encode()
        if not parts:
            return header, (), _JSON
        return (b"".join([header, *parts]), ((b"inference-header-content-length", str(len(header)).encode()),),
                b"application/octet-stream")


class MetricsApp:
    """ASGI app serving ``/metrics`` (Prometheus text format) on the metrics port."""

    def __init__(self, metrics: Any) -> None:
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"].rstrip("/") != "/metrics":
            await _send(send, 404, b"not found: metrics are at /metrics", b"text/plain")
            return
        await _send(send, 200, self.metrics.exposition(), b"text/plain; version=0.0.4; charset=utf-8")
