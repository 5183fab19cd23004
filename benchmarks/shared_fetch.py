"""The fetch code every pipeline runs in the http workload's like-for-like rows.

One key is ``(url, row id)``; one fetch turns it into one row ``(image, row id)``. There are
two faces of the same fetch, and every pipeline uses the one that fits it:

- :class:`AsyncFetch` for pipelines that run coroutines on an event loop (asyncfeed, SPDL):
  one ``aiohttp.ClientSession`` per event loop (and process), created lazily inside the loop
  that first calls it, with the connector settings of :func:`connector_settings`; the body is
  decoded in a decode pool of :data:`DECODE_THREADS` threads, also one per loop (the size
  Python gives a loop's default executor; not the default executor itself, because SPDL
  replaces that with its own pool).
- :class:`SyncFetch` for pipelines that call plain functions on threads or worker
  processes (the classic design, DataLoader workers, ``torchdata.nodes`` threads): one
  ``http.client.HTTPConnection`` per thread (and process), kept alive, reconnected once
  when the server closed it (as aiohttp does for a reused connection); the body is decoded
  on the calling thread.

Both decode with :func:`decode`, asyncfeed's own ``decode_image`` with default options (a
JPEG goes through simplejpeg, which releases the GIL), check the status (200 or
``RuntimeError``) and time out after :data:`TIMEOUT_S`. Both objects pickle without their
connections, so they travel to spawned or forked worker processes and open their own there.

:func:`sequential_rate` measures the same fetch with nothing else running: one key at a
time on one thread, for the CPU bound (no latency, decode inline) and the round trip (the
fetch exactly as a pipeline's slot calls it).
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import os
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

__all__ = [
    "DECODE_THREADS",
    "TIMEOUT_S",
    "AsyncChunks",
    "AsyncFetch",
    "SyncFetch",
    "connector_settings",
    "decode",
    "sequential_rate",
]

Key = tuple[str, int]
Row = tuple[np.ndarray, np.int64]

TIMEOUT_S = 60.0
DECODE_THREADS = min(32, (os.cpu_count() or 1) + 4)


@functools.cache
def _decoder() -> tuple[Any, Any]:
    from asyncfeed.fetchers.decode import ImageOptions, decode_image

    return decode_image, ImageOptions()


def decode(data: bytes, url: str) -> np.ndarray:
    """The one decoder: asyncfeed's ``decode_image`` with default options."""
    decode_image, options = _decoder()
    return decode_image(data, options, url)  # type: ignore[no-any-return]


def connector_settings(limit: int) -> dict[str, Any]:
    """``aiohttp.TCPConnector`` arguments of every async pipeline's session."""
    return {"limit": limit, "limit_per_host": 0, "keepalive_timeout": 30.0}


class _LoopState:
    """What one event loop's fetches share: a session and a decode pool."""

    def __init__(self, limit: int) -> None:
        import aiohttp

        self.pid = os.getpid()
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(**connector_settings(limit)),
            timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
        )
        self.pool = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="bench-decode")

    async def aclose(self) -> None:
        await self.session.close()
        self.pool.shutdown(wait=False, cancel_futures=True)


class AsyncFetch:
    """``await fetch(key)`` → ``(image, row id)``; one session and decode pool per loop.

    Args:
        limit: the connector's connection limit (the pipeline's concurrency).
        decode_inline: decode on the loop's thread instead of the pool (the CPU bound only).
    """

    def __init__(self, limit: int, *, decode_inline: bool = False) -> None:
        self.limit = limit
        self.decode_inline = decode_inline
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )

    def __getstate__(self) -> dict[str, Any]:
        return {"limit": self.limit, "decode_inline": self.decode_inline}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["limit"], decode_inline=state["decode_inline"])  # type: ignore[misc]

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None or state.pid != os.getpid():
            state = self._states[loop] = _LoopState(self.limit)
        return state

    async def __call__(self, key: Key) -> Row:
        url, ident = key
        state = self._state()
        async with state.session.get(url) as resp:
            if resp.status != 200:
                raise RuntimeError(f"GET {url}: HTTP {resp.status}")
            data = await resp.read()
        if self.decode_inline:
            image = decode(data, url)
        else:
            image = await asyncio.get_running_loop().run_in_executor(state.pool, decode, data, url)
        return image, np.int64(ident)

    async def aclose(self) -> None:
        """Close the session and pool of the running loop (asyncfeed's worker processes call
        it when they stop; the benchmark's runners call it after their pipeline stopped)."""
        state = self._states.pop(asyncio.get_running_loop(), None)
        if state is not None and state.pid == os.getpid():
            await state.aclose()

    async def aclose_all(self) -> None:
        """Close every loop's session and pool of this process from the running loop.

        A session made on another loop that is already closed is only dropped.
        """
        states = list(self._states.items())
        self._states.clear()
        current = asyncio.get_running_loop()
        for loop, state in states:
            if state.pid != os.getpid():
                continue
            if loop is current:
                await state.aclose()
            else:
                state.pool.shutdown(wait=False, cancel_futures=True)


class AsyncChunks(AsyncFetch):
    """:class:`AsyncFetch` returning a one-row chunk ``[image[None], [row id]]`` (asyncfeed)."""

    async def __call__(self, key: Key) -> list[np.ndarray]:  # type: ignore[override]
        image, ident = await super().__call__(key)
        return [image[None], np.array([ident], np.int64)]


class _Connection:
    __slots__ = ("conn", "host", "pid", "port")

    def __init__(self, host: str, port: int | None) -> None:
        self.pid = os.getpid()
        self.host = host
        self.port = port
        self.conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT_S)


class SyncFetch:
    """``fetch(key)`` → ``(image, row id)``; one keep-alive ``http.client`` connection per
    thread. Safe from many threads."""

    def __init__(self) -> None:
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]

    def _connection(self, host: str, port: int | None) -> _Connection:
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.pid != os.getpid() or (conn.host, conn.port) != (host, port):
            conn = self._local.conn = _Connection(host, port)
        return conn

    def _get(self, url: str) -> bytes:
        parts = urllib.parse.urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn = self._connection(parts.hostname or "127.0.0.1", parts.port)
        for attempt in (0, 1):
            try:
                conn.conn.request("GET", path)
                resp = conn.conn.getresponse()
                data = resp.read()
                break
            except (http.client.RemoteDisconnected, ConnectionError):
                conn.conn.close()  # the server closed a kept-alive connection: once more
                if attempt:
                    raise
        if resp.status != 200:
            raise RuntimeError(f"GET {url}: HTTP {resp.status}")
        return data

    def __call__(self, key: Key) -> Row:
        url, ident = key
        return decode(self._get(url), url), np.int64(ident)

    def chunk(self, key: Key) -> list[np.ndarray]:
        """A one-row chunk ``[image[None], [row id]]`` (the classic design's fetch_fun)."""
        image, ident = self(key)
        return [image[None], np.array([ident], np.int64)]

    def close(self) -> None:
        """Close the calling thread's connection."""
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.conn.close()
            self._local.conn = None


class Clock(Protocol):
    """CPU of another process over the window (``benchmarks.runner.ServiceClock``)."""

    def start(self) -> None: ...

    def seconds(self) -> float | None: ...


def _rate(n: int, secs: float, cpu_s: float, other: Clock | None) -> dict[str, float]:
    out = {
        "rows_per_s": n / secs,
        "rows": n,
        "window_s": secs,
        "cpu_us_per_row": 1e6 * cpu_s / n,
        "round_trip_ms": 1e3 * secs / n,
    }
    other_s = other.seconds() if other is not None else None
    if other_s is not None:
        out["other_cpu_us_per_row"] = 1e6 * other_s / n
    return out


def sequential_rate(
    template: str,
    images: int,
    warmup: float,
    window: float,
    *,
    client: str,
    inline: bool,
    other: Clock | None = None,
) -> dict[str, float]:
    """Fetch one key at a time on one thread: rows/s, CPU µs and ms per key.

    ``client``: ``"async"`` (:class:`AsyncFetch` on a fresh event loop; ``inline`` decodes on
    the loop's thread, else in its pool as the pipelines do) or ``"sync"``
    (:class:`SyncFetch`; it always decodes on the calling thread). ``other``: a clock of
    another process (the server) read over the same window (``other_cpu_us_per_row``).
    """
    if client == "sync":
        fetch = SyncFetch()
        try:
            return _timed_sync(
                lambda i: fetch((template.format(i=i % images), i)), warmup, window, other
            )
        finally:
            fetch.close()
    if client != "async":
        raise ValueError(f"client must be 'async' or 'sync', got {client!r}")

    async def run() -> dict[str, float]:
        afetch = AsyncFetch(1, decode_inline=inline)
        try:
            i = 0
            deadline = time.perf_counter() + warmup
            while time.perf_counter() < deadline:
                await afetch((template.format(i=i % images), i))
                i += 1
            n = 0
            if other is not None:
                other.start()
            cpu = time.process_time()
            start = time.perf_counter()
            while time.perf_counter() - start < window:
                await afetch((template.format(i=(i + n) % images), i + n))
                n += 1
            return _rate(n, time.perf_counter() - start, time.process_time() - cpu, other)
        finally:
            await afetch.aclose_all()

    return asyncio.run(run())


def _timed_sync(
    one: Callable[[int], Any], warmup: float, window: float, other: Clock | None
) -> dict[str, float]:
    i = 0
    deadline = time.perf_counter() + warmup
    while time.perf_counter() < deadline:
        one(i)
        i += 1
    n = 0
    if other is not None:
        other.start()
    cpu = time.process_time()
    start = time.perf_counter()
    while time.perf_counter() - start < window:
        one(i + n)
        n += 1
    return _rate(n, time.perf_counter() - start, time.process_time() - cpu, other)
