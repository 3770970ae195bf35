"""The baseline: a bare aiohttp handler that reads the same request and answers the same payload.

It does no parsing, authentication, deciding or auditing, so gateway ÷ bare is the cost of
everything Portcullis adds on top of aiohttp itself.
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
    port, payload_file = int(sys.argv[1]), sys.argv[2]
    with open(payload_file, "rb") as handle:
        body = handle.read()
    web.run_app(make_app(body), host="127.0.0.1", port=port, access_log=None, print=None)
