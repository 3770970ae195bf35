"""The baseline: a bare aiohttp handler that reads the same request and answers the same payload.

It does no parsing, authentication, deciding or auditing, so gateway ÷ bare is the cost of
everything Portcullis adds on top of aiohttp itself. ``python -m bench.bare PORT PAYLOAD [LOOP]``
serves it on asyncio's own event loop (the default) or on uvloop's (``uvloop``), so the gateway
can be compared with it on the loop the gateway runs and on each.
"""
from __future__ import annotations

import sys

from aiohttp import web


def make_app(payload: bytes) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=payload, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/check", handler)
    app.router.add_post("/v1/check/batch", handler)
    return app


if __name__ == "__main__":
    port, payload_file, loop = int(sys.argv[1]), sys.argv[2], (sys.argv[3:] or ["asyncio"])[0]
    with open(payload_file, "rb") as handle:
        body = handle.read()
    if loop == "uvloop":
        import uvloop
        uvloop.install()
    web.run_app(make_app(body), host="127.0.0.1", port=port, access_log=None, print=None)
