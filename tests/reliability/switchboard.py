"""A fault switchboard: an aiohttp image server on 127.0.0.1 that fails on purpose.

``/img/{i}`` serves the lossless PNG of ``synthetic_image(i)``. Each request first draws a
*transient* fault from ``rates`` (seeded): a 500, 503 or 429 (``Retry-After: 0``), a reset
mid-body, a truncated body (``Content-Length`` promised, half sent, then EOF) or a hang (the
request is accepted and never answered until teardown). Some keys carry a *permanent*
fault, the same on every attempt: a corrupt image, a decompression bomb, an oversized body.
The server can be killed and restarted on the same port.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections import Counter
from collections.abc import Mapping

from aiohttp import web

from asyncfeed.fetchers.service import synthetic_image
from tests.httpserver import png_bytes, png_header_bomb

SIZE = 16
TRANSIENT = ("500", "503", "429", "reset", "truncated", "hang")
PERMANENT = ("corrupt", "bomb", "oversized")
OVERSIZED = 256 << 10  # more than the tests' max_bytes


def image_body(i: int) -> bytes:
    return png_bytes(synthetic_image(i, SIZE))


class Switchboard:
    """Start with ``await start()``, stop with ``aclose()``; ``kill()`` / ``restart()``."""

    def __init__(
        self,
        *,
        rates: Mapping[str, float] | None = None,
        permanent: Mapping[int, str] | None = None,
        seed: int = 0,
    ) -> None:
        self.rates = dict(rates or {})
        assert set(self.rates) <= set(TRANSIENT), self.rates
        self.permanent = dict(permanent or {})
        assert set(self.permanent.values()) <= set(PERMANENT), self.permanent
        self.injected: Counter[str] = Counter()
        self.requests = 0
        self.served: Counter[int] = Counter()  # good responses per key
        self.hanging = asyncio.Event()  # set when a request is first left unanswered
        self._release = asyncio.Event()
        self._rng = random.Random(seed)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.port}/img/{i}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/img/{i}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await runner.setup()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        self._runner = runner

    async def kill(self) -> None:
        """Stop listening and drop every connection (the same port is kept for restart)."""
        self._release.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def restart(self) -> None:
        self._release = asyncio.Event()
        await self.start()

    async def aclose(self) -> None:
        await self.kill()

    def _draw(self) -> str:
        roll = self._rng.random()
        for name, rate in self.rates.items():
            if roll < rate:
                return name
            roll -= rate
        return "ok"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        i = int(request.match_info["i"])
        fault = self._draw()
        if fault == "ok":
            fault = self.permanent.get(i, "ok")
        self.injected[fault] += 1
        if fault in ("500", "503"):
            return web.Response(status=int(fault), text="injected")
        if fault == "429":
            return web.Response(status=429, text="slow down", headers={"Retry-After": "0"})
        if fault == "hang":
            self.hanging.set()
            await self._release.wait()
            return web.Response(status=503, text="released")
        body = image_body(i)
        if fault == "corrupt":
            return _png(body[: len(body) // 2] + b"\0" * 64)
        if fault == "bomb":
            return _png(png_header_bomb(60_000, 60_000))
        if fault == "oversized":
            return _png(body + b"\0" * OVERSIZED)
        if fault in ("reset", "truncated"):
            resp = web.StreamResponse(
                headers={"Content-Type": "image/png", "Content-Length": str(len(body))}
            )
            await resp.prepare(request)
            await resp.write(body[: len(body) // 2])
            assert request.transport is not None
            if fault == "reset":
                sock = request.transport.get_extra_info("socket")
                if sock is not None:  # RST instead of FIN: linger 0
                    sock.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
            request.transport.close()
            return resp
        self.served[i] += 1
        return _png(body)


def _png(body: bytes) -> web.Response:
    return web.Response(body=body, headers={"Content-Type": "image/png"})
