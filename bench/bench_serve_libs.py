"""Which HTTP server library for fastort serve: a small POST endpoint (read a
4 KiB body, answer 1 KiB of JSON) in each candidate, same client, one run.

    .venv/bin/python bench/bench_serve_libs.py [--seconds 3] [--clients 8]

Candidates: a plain ASGI app on uvicorn (httptools), the same on uvicorn with
Starlette's Request/Response and routing, and aiohttp.web. The client is a
process of threads doing keep-alive http.client POSTs (closed loop).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import socket
import sys
import threading
import time
from typing import Any, List

ANSWER = json.dumps({"outputs": [{"name": "y", "data": list(range(200))}]}).encode()


def serve(kind: str, sock: socket.socket) -> None:
    if kind == "aiohttp":
        from aiohttp import web

        async def handle(request: Any) -> Any:
            await request.read()
            return web.Response(body=ANSWER, content_type="application/json")

        app = web.Application()
        app.router.add_post("/v2/models/m/infer", handle)
        web.run_app(app, sock=sock, print=None, access_log=None)
        return
    import uvicorn

    if kind == "starlette":
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        async def endpoint(request: Request) -> Response:
            await request.body()
            return Response(ANSWER, media_type="application/json")

        app: Any = Starlette(routes=[Route("/v2/models/{name}/infer", endpoint, methods=["POST"])])
    else:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            more = True
            while more:
                message = await receive()
                more = message.get("more_body", False)
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(ANSWER)).encode())]})
            await send({"type": "http.response.body", "body": ANSWER})
    uvicorn.Server(uvicorn.Config(app, http="httptools", lifespan="off", access_log=False,
                                  log_level="warning")).run(sockets=[sock])


def client(port: int, clients: int, seconds: float, out: Any) -> None:
    import http.client

    body = b"x" * 4096
    counts: List[int] = []

    def loop() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        n = 0
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            conn.request("POST", "/v2/models/m/infer", body=body, headers={"Content-Type": "application/json"})
            conn.getresponse().read()
            n += 1
        counts.append(n)

    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(sum(counts) / seconds)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    for kind in ("uvicorn-asgi", "starlette", "aiohttp"):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(512)
        port = sock.getsockname()[1]
        server = ctx.Process(target=serve, args=(kind, sock), daemon=True)
        server.start()
        time.sleep(2.0)
        q = ctx.Queue()
        c = ctx.Process(target=client, args=(port, args.clients, args.seconds, q))
        c.start()
        rps = q.get(timeout=args.seconds + 60)
        c.join()
        server.terminate()
        server.join(10)
        sock.close()
        print(f"{kind:13s} {rps:8.0f} req/s ({args.clients} keep-alive clients)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
