"""A scripted aiohttp server on 127.0.0.1 for the HTTP fetcher tests.

Routes serve known images (``/png/{i}`` pixel-exact, ``/jpg/{i}``) and faults (``/html``,
``/corrupt.jpg``, ``/bomb.png``, ``/huge``, ``/huge-declared``, ``/reset``, ``/slow``,
``/status/{code}``). ``plan(path, *actions)`` makes the next requests to ``path`` fail in a
given way before it is served normally. The server records hits per path, the peak number of
requests in flight and the bytes written by streaming handlers.
"""

from __future__ import annotations

import asyncio
import io
import socket
import struct
import time
import zlib
from collections import Counter, deque
from typing import Any

import numpy as np
from aiohttp import web
from PIL import Image

from asyncfeed.fetchers.service import synthetic_image

PNG_SIZE = 32
JPG_SIZE = 64
HUGE_BYTES = 64 << 20


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(array: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def png_header_bomb(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width x height`` pixels, with one tiny IDAT chunk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + chunk(b"IEND", b"")
    )


def jpeg_header_bomb(width: int, height: int) -> bytes:
    """A real small JPEG whose SOF frame header is patched to declare ``width x height``."""
    data = bytearray(jpeg_bytes(synthetic_image(0, 16)))
    pos = 2
    while True:
        marker, length = data[pos + 1], struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            data[pos + 5 : pos + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        pos += 2 + length


class FaultServer:
    """The scripted server; start with ``await server.start()``, stop with ``aclose()``."""

    def __init__(self) -> None:
        self.port = 0
        self.hits: Counter[str] = Counter()
        self.times: dict[str, list[float]] = {}
        self.plans: dict[str, deque[tuple[Any, ...]]] = {}
        self.in_flight = 0
        self.peak = 0
        self.latency = 0.0
        self.streamed = 0
        self.peers: set[object] = set()  # client (host, port) pairs: one per connection
        self.release = asyncio.Event()  # set at teardown: parked /slow handlers return
        self._runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def plan(self, path: str, *actions: tuple[Any, ...]) -> None:
        """Actions for the next requests to ``path``: ("status", code[, headers]), ("reset",)."""
        self.plans.setdefault(path, deque()).extend(actions)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        self._runner = runner

    async def aclose(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.hits[path] += 1
        assert request.transport is not None
        self.peers.add(request.transport.get_extra_info("peername"))
        self.times.setdefault(path, []).append(time.monotonic())
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)  # injected latency: the condition under test
            plan = self.plans.get(path)
            if plan:
                action = plan.popleft()
                if action[0] == "status":
                    headers = action[2] if len(action) > 2 else None
                    return web.Response(status=action[1], text="planned", headers=headers)
                if action[0] == "reset":
                    return await self._reset(request)
            return await self._serve(request, path)
        finally:
            self.in_flight -= 1

    async def _serve(self, request: web.Request, path: str) -> web.StreamResponse:
        head, _, tail = path.strip("/").partition("/")
        if head == "png":
            return _image(png_bytes(synthetic_image(int(tail), PNG_SIZE)), "image/png")
        if head == "jpg":
            return _image(jpeg_bytes(synthetic_image(int(tail), JPG_SIZE)), "image/jpeg")
        if head == "status":
            return web.Response(status=int(tail), text="status")
        if head == "html":
            return web.Response(text="<html>not an image</html>", content_type="text/html")
        if head == "corrupt.jpg":
            good = jpeg_bytes(synthetic_image(1, JPG_SIZE))
            return _image(good[: len(good) // 3], "image/jpeg")
        if head == "bomb.png":
            return _image(png_header_bomb(100_000, 100_000), "image/png")
        if head == "huge-declared":
            return await self._declared(request)
        if head == "huge":
            return await self._stream(request)
        if head == "reset":
            return await self._reset(request)
        if head == "slow":
            await self._park()
            return _image(png_bytes(synthetic_image(0, PNG_SIZE)), "image/png")
        return web.Response(status=404, text="no such route")

    async def _park(self) -> None:
        """Wait until teardown (or 10 s): a response that never comes in time."""
        try:
            await asyncio.wait_for(self.release.wait(), 10)
        except TimeoutError:
            pass

    async def _declared(self, request: web.Request) -> web.StreamResponse:
        """Declare HUGE_BYTES in Content-Length, send 1 kB, then stall until teardown."""
        resp = web.StreamResponse(
            headers={"Content-Type": "image/png", "Content-Length": str(HUGE_BYTES)}
        )
        await resp.prepare(request)
        await resp.write(b"\0" * 1024)
        self.streamed += 1024
        await self._park()
        return resp

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        """Chunked (no Content-Length) body of HUGE_BYTES, written 256 KiB at a time."""
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        piece = b"\0" * (256 << 10)
        try:
            while self.streamed < HUGE_BYTES:
                await resp.write(piece)
                self.streamed += len(piece)
        except (ConnectionResetError, ConnectionError):
            return resp
        await resp.write_eof()
        return resp

    async def _reset(self, request: web.Request) -> web.StreamResponse:
        """Promise 100 kB, send 1 kB, then drop the connection."""
        resp = web.StreamResponse(headers={"Content-Type": "image/png", "Content-Length": "100000"})
        await resp.prepare(request)
        await resp.write(b"\0" * 1024)
        assert request.transport is not None
        request.transport.close()
        return resp


def _image(body: bytes, content_type: str) -> web.Response:
    return web.Response(body=body, headers={"Content-Type": content_type})
