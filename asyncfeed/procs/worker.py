"""The worker process of ``processes=N``: one event loop serving fetch calls for a feed.

:func:`worker_main` is the process target. The worker receives its ring (see ``wire``), loads
the fetcher, runs ``worker_init(index)``, then answers every CALL from the feed's process:
``async def`` fetchers as tasks on its loop, plain functions on a pool of daemon threads.
Results go back as arrays (inline or through the ring), None, or a pickled object the feed
checks; exceptions go back pickled with their traceback text. The worker ends on STOP or
when the feed's process goes away (its socket closes); it ignores SIGINT, which the feed's
process handles for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import inspect
import logging
import mmap
import os
import pickle
import signal
import socket
import sys
import time
import traceback
from collections.abc import Mapping
from typing import Any, Final, final

import numpy as np

from ..bridge import DaemonThreadPool
from ..protocols import is_async_callable
from .options import WorkerSpec
from .ring import RingAllocator, block_layout
from .wire import (
    ARRAYS,
    CALL,
    ERROR,
    FATAL,
    FREE,
    NONE,
    OBJECT,
    READY,
    STATS,
    STOP,
    Link,
    send_frame_blocking,
)

__all__ = ["worker_main"]

log = logging.getLogger("asyncfeed.procs")

STATS_INTERVAL: Final = 0.5
RING_WAIT: Final = 0.05  # seconds a result waits for a ring slot before going inline
_PR_SET_PDEATHSIG: Final = 1
CLOSE_TIMEOUT: Final = 1.0


def worker_main(
    index: int,
    sock: socket.socket,
    spec: bytes | WorkerSpec,
    close_fds: tuple[int, ...],
    parent_pid: int | None,
) -> None:
    """Process target: serve fetch calls until told to stop or the feed's process is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    for fd in close_fds:  # with fork: the feed's ends of the sockets, so EOF reaches us
        with contextlib.suppress(OSError):
            os.close(fd)
    sock.setblocking(True)
    _, fds, _, _ = socket.recv_fds(sock, 1, 1)
    try:
        loaded = pickle.loads(spec) if isinstance(spec, bytes) else spec
    except Exception as exc:
        send_frame_blocking(
            sock,
            (
                FATAL,
                f"worker process {index} could not load the fetcher: {type(exc).__name__}: {exc}",
                traceback.format_exc(),
            ),
        )
        return
    asyncio.run(_Server(index, sock, loaded, fds[0] if fds else None).run())


def _die_with_parent(parent_pid: int | None) -> None:
    """On Linux, have the kernel kill this worker when its parent dies, even mid-call.

    The socket's end of file stops a worker whose loop runs; this also stops one whose loop
    is blocked. ``parent_pid`` None (forkserver) skips the check for a parent already gone.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
            return
    except (OSError, AttributeError):
        return
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)  # the parent died before we asked


def _as_arrays(result: object) -> tuple[list[np.ndarray], list[Any] | None] | None:
    """A chunk of plain numeric ndarrays in order (and mapping keys), or None for anything else."""
    names: list[Any] | None = None
    if isinstance(result, Mapping):
        names = list(result.keys())
        values = list(result.values())
    elif isinstance(result, list | tuple):
        values = list(result)
    else:
        return None
    for value in values:
        if type(value) is not np.ndarray or value.dtype.hasobject or value.ndim == 0:
            return None
    return [np.ascontiguousarray(v) for v in values], names


@final
class _Server:
    """The worker's event-loop side: one link to the feed, one task per fetch call."""

    def __init__(self, index: int, sock: socket.socket, spec: WorkerSpec, ring_fd: int | None):
        self.index: Final = index
        self.spec: Final = spec
        self._sock = sock
        self._ring_fd = ring_fd
        self._mm: mmap.mmap | None = None
        self._alloc: RingAllocator | None = None
        self._is_async: Final = is_async_callable(spec.fn)
        self._pool: DaemonThreadPool | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._host_stats = getattr(spec.fn, "host_stats", None)
        self._stats_at = 0.0
        self._link: Link | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._freed: asyncio.Future[None] | None = None  # resolved by the next FREE

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._stopped = loop.create_future()
        if self._ring_fd is not None:
            self._mm = mmap.mmap(self._ring_fd, os.fstat(self._ring_fd).st_size)
            os.close(self._ring_fd)
            self._alloc = RingAllocator(len(self._mm))
        _, link = await loop.connect_accepted_socket(lambda: Link(self._on_message), self._sock)
        self._link = link
        if not self._is_async:
            self._pool = DaemonThreadPool(
                self.spec.threads, f"asyncfeed-{self.spec.source}-proc{self.index}-fetch"
            )
        try:
            if await self._init():
                link.send((READY, os.getpid()))
                await asyncio.wait([self._stopped, link.lost], return_when="FIRST_COMPLETED")
        finally:
            await self._close()

    async def _init(self) -> bool:
        init = self.spec.worker_init
        if init is None:
            return True
        try:
            result = init(self.index)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            assert self._link is not None
            self._link.send(
                (
                    FATAL,
                    f"worker_init failed in worker process {self.index}: "
                    f"{type(exc).__name__}: {exc}",
                    traceback.format_exc(),
                )
            )
            return False
        return True

    async def _close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        self._send_stats()  # before aclose(), which may reset the fetcher's counters
        aclose = getattr(self.spec.fn, "aclose", None)
        if callable(aclose):
            try:
                await asyncio.wait_for(aclose(), CLOSE_TIMEOUT)
            except Exception:
                log.warning("closing the fetcher in worker process %d failed", self.index)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        link = self._link
        if link is not None:
            link.close()
            await asyncio.wait([link.lost], timeout=CLOSE_TIMEOUT)

    def _on_message(self, header: tuple[Any, ...], payload: np.ndarray | None) -> None:
        kind = header[0]
        if kind == CALL:
            task = asyncio.get_running_loop().create_task(self._serve(header[1], header[2]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif kind == FREE:
            assert self._alloc is not None
            for start, nbytes in header[1]:
                self._alloc.free(start, nbytes)
            if self._freed is not None and not self._freed.done():
                self._freed.set_result(None)
        elif kind == STOP:
            assert self._stopped is not None
            if not self._stopped.done():
                self._stopped.set_result(None)

    async def _serve(self, req: int, args: tuple[Any, ...]) -> None:
        fn = self.spec.fn
        try:
            if self._is_async:
                result = await fn(*args)
            else:
                assert self._pool is not None
                result = await asyncio.wrap_future(self._pool.submit(fn, *args))
            await self._send_result(req, result)
        except Exception as exc:
            self._send_error(req, exc)
        if self._host_stats is not None and time.monotonic() - self._stats_at >= STATS_INTERVAL:
            self._send_stats()

    async def _send_result(self, req: int, result: object) -> None:
        link = self._link
        assert link is not None
        if result is None:
            link.send((NONE, req))
            return
        chunk = _as_arrays(result)
        if chunk is None:
            payload = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
            link.send((OBJECT, req), [payload], len(payload))
            return
        arrays, names = chunk
        layout, size = block_layout(arrays)
        start = await self._allocate(size)
        if start is not None:
            assert self._mm is not None
            block = np.frombuffer(self._mm, np.uint8, size, start)
            for arr, (_, _, offset) in zip(arrays, layout, strict=True):
                block[offset : offset + arr.nbytes] = arr.reshape(-1).view(np.uint8)
            del block
            link.send((ARRAYS, req, names, layout, (start, size)))
            return
        parts: list[Any] = []
        pos = 0
        for arr, (_, _, offset) in zip(arrays, layout, strict=True):
            if offset > pos:
                parts.append(bytes(offset - pos))
            parts.append(arr.reshape(-1).view(np.uint8).data)
            pos = offset + arr.nbytes
        if size > pos:
            parts.append(bytes(size - pos))
        link.send((ARRAYS, req, names, layout, None), parts, size)

    async def _allocate(self, size: int) -> int | None:
        """A ring slot for ``size`` bytes, waiting up to RING_WAIT for one to be freed.

        None: the chunk goes inline (small, too big for the ring, or no slot came back, as
        when the consumer keeps its batches, which are views of the ring).
        """
        alloc = self._alloc
        if alloc is None or size <= self.spec.inline_max or size > alloc.size // 2:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RING_WAIT
        while (start := alloc.allocate(size)) is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            if self._freed is None or self._freed.done():
                self._freed = loop.create_future()
            await asyncio.wait([self._freed], timeout=remaining)
        return start

    def _send_error(self, req: int, exc: Exception) -> None:
        text = "".join(traceback.format_exception(exc))
        try:
            blob: bytes | None = pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            blob = None
        assert self._link is not None
        self._link.send((ERROR, req, blob, text))

    def _send_stats(self) -> None:
        get = self._host_stats
        if get is None or self._link is None:
            return
        self._stats_at = time.monotonic()
        try:
            hosts = {str(h): dict(v) for h, v in dict(get()).items()}
            pickle.dumps(hosts)
        except Exception:
            log.warning(
                "host_stats() of the fetcher failed in worker %d", self.index, exc_info=True
            )
            return
        self._link.send((STATS, hosts))
