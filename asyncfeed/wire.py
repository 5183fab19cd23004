"""The wire between a feed and its worker processes: framed messages and a shared-memory ring.

Both ends speak one protocol over a connected Unix stream socket:

- every message is a frame ``[u32 header length][u64 payload length][header][payload]``;
  the header is a small pickled tuple whose first item is the message kind, the payload raw
  bytes (inline chunk data or a pickled object);
- :class:`Link` is an asyncio ``BufferedProtocol`` that cuts frames out of the stream. A large
  payload is received straight into a fresh numpy buffer (one copy, by the kernel);
- chunk data above :data:`INLINE_MAX_BYTES` travels through a per-worker :class:`Ring`: an
  anonymous ``memfd`` the feed's process creates and hands to the worker over the socket.
  The worker copies the arrays in and sends only their layout; the feed's process maps them
  as zero-copy numpy views and frees the slot when the last view is garbage. Nothing is ever
  named in ``/dev/shm``, so nothing can leak: the memory goes when the last process mapping
  it does. Where ``memfd_create`` is missing every chunk travels inline.

Which of the two is cheaper was measured (``benchmarks/procs_bench.py``): for rows of a few
KiB and more, the ring costs the feed's process a fraction of a socket read.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import mmap
import os
import pickle
import struct
import threading
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Final, final

import numpy as np

__all__ = [
    "INLINE_MAX_BYTES",
    "RING_BYTES",
    "Link",
    "Ring",
    "RingAllocator",
    "block_layout",
    "frame",
    "send_frame_blocking",
]

log = logging.getLogger("asyncfeed.procs")

# Message kinds. Feed → worker:
CALL: Final = 1  # (CALL, request id, args)
FREE: Final = 2  # (FREE, [(ring offset, size), ...])
STOP: Final = 3  # (STOP,)
# Worker → feed:
READY: Final = 10  # (READY, pid)
NONE: Final = 11  # (NONE, request id)
ARRAYS: Final = 12  # (ARRAYS, request id, names | None, layout, ring slot | None)
OBJECT: Final = 13  # (OBJECT, request id); payload: the pickled result
ERROR: Final = 14  # (ERROR, request id, pickled exception | None, traceback text)
FATAL: Final = 15  # (FATAL, what failed, traceback text)
STATS: Final = 16  # (STATS, {host: {name: value}})

INLINE_MAX_BYTES = 32 * 1024  # chunk data up to this size travels in the frame
RING_BYTES = 64 * 1024 * 1024  # per worker; pages are touched only as slots are used
ALIGN: Final = 64

_PREFIX: Final = struct.Struct("<IQ")
_SCRATCH: Final = 256 * 1024
_BIG: Final = 64 * 1024  # payloads above this are received straight into their own buffer
_PIECE: Final = 256 * 1024  # large payloads are written this much at a time

Layout = list[tuple[Any, tuple[int, ...], int]]  # (dtype, shape, offset in the block)


def frame(header: tuple[Any, ...], payload_len: int = 0) -> bytes:
    """The prefix and header of one frame; ``payload_len`` bytes must follow it."""
    head = pickle.dumps(header, protocol=pickle.HIGHEST_PROTOCOL)
    return _PREFIX.pack(len(head), payload_len) + head


def send_frame_blocking(sock: Any, header: tuple[Any, ...]) -> None:
    """Send one payload-less frame on a blocking socket (before a worker has a loop)."""
    sock.sendall(frame(header))


def block_layout(arrays: Sequence[np.ndarray]) -> tuple[Layout, int]:
    """Where each array goes in one contiguous block (64-byte aligned), and the block size."""
    layout: Layout = []
    pos = 0
    for arr in arrays:
        dtype = arr.dtype
        portable: Any = dtype.str if np.dtype(dtype.str) == dtype else dtype
        layout.append((portable, arr.shape, pos))
        pos += -(-arr.nbytes // ALIGN) * ALIGN
    return layout, pos


def arrays_from_block(block: np.ndarray, layout: Layout) -> list[np.ndarray]:
    """Numpy views of ``block`` (a uint8 array) laid out by :func:`block_layout`."""
    out = []
    for dtype, shape, offset in layout:
        dt = np.dtype(dtype)
        nbytes = dt.itemsize * math.prod(shape)
        out.append(block[offset : offset + nbytes].view(dt).reshape(shape))
    return out


@final
class RingAllocator:
    """First-fit allocation of ring slots, lowest offset first (so unused pages stay untouched).

    Used by the worker only, on its event loop. Slots may be freed in any order.
    """

    __slots__ = ("_free", "size")

    def __init__(self, size: int) -> None:
        self.size: Final = size
        self._free: list[tuple[int, int]] = [(0, size)] if size else []  # sorted (start, size)

    def allocate(self, nbytes: int) -> int | None:
        """Offset of a free slot of ``nbytes`` (rounded up to 64), or None when full."""
        need = -(-nbytes // ALIGN) * ALIGN
        for i, (start, size) in enumerate(self._free):
            if size >= need:
                if size == need:
                    del self._free[i]
                else:
                    self._free[i] = (start + need, size - need)
                return start
        return None

    def free(self, start: int, nbytes: int) -> None:
        """Give a slot back; merges it with free neighbours."""
        size = -(-nbytes // ALIGN) * ALIGN
        free = self._free
        i = bisect.bisect(free, (start, 0))
        if i < len(free) and start + size == free[i][0]:
            size += free[i][1]
            del free[i]
        if i > 0 and free[i - 1][0] + free[i - 1][1] == start:
            start, size = free[i - 1][0], free[i - 1][1] + size
            del free[i - 1]
            i -= 1
        free.insert(i, (start, size))

    @property
    def free_bytes(self) -> int:
        return sum(size for _, size in self._free)


def create_ring_fd(size: int) -> int | None:
    """An anonymous shared-memory file of ``size`` bytes, or None where unsupported."""
    create = getattr(os, "memfd_create", None)
    if create is None or size <= 0:
        return None
    fd: int = create("asyncfeed-ring", getattr(os, "MFD_CLOEXEC", 0))
    try:
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd


@final
class Ring:
    """The feed-side mapping of one worker's ring: zero-copy views and their release.

    A slot is freed once every array viewing it is garbage: a weak reference on the slot's
    uint8 holder (which numpy keeps as the base of every view) queues the slot, and the
    queue is sent to the worker as one FREE message per loop iteration.
    """

    __slots__ = ("_flush_scheduled", "_leases", "_loop", "_pending", "_send", "_tid", "mm")

    def __init__(
        self,
        fd: int,
        loop: asyncio.AbstractEventLoop,
        send: Callable[[tuple[Any, ...]], None],
        thread_id: int,
    ) -> None:
        self.mm: mmap.mmap | None = mmap.mmap(fd, os.fstat(fd).st_size)
        self._loop: Final = loop
        self._send: Final = send
        self._tid: Final = thread_id
        self._leases: dict[int, Any] = {}
        self._pending: list[tuple[int, int]] = []
        self._flush_scheduled = False

    def view(self, start: int, nbytes: int, layout: Layout) -> list[np.ndarray] | None:
        """The arrays of one slot, as views that keep the slot until they are all gone.

        None once the ring is closed (the worker is stopping: its results are not wanted).
        """
        if self.mm is None:
            return None
        holder = np.frombuffer(self.mm, np.uint8, nbytes, start)
        self._leases[start] = weakref.ref(holder, self._released_cb(start, nbytes))
        return arrays_from_block(holder, layout)

    def _released_cb(self, start: int, nbytes: int) -> Callable[[Any], None]:
        def released(_: Any) -> None:
            self._leases.pop(start, None)
            if self.mm is None:  # the worker is gone: nobody to tell
                return
            try:
                if threading.get_ident() == self._tid:
                    self._queue_free(start, nbytes)
                else:
                    self._loop.call_soon_threadsafe(self._queue_free, start, nbytes)
            except RuntimeError:  # the loop is closed: the worker is gone too
                pass

        return released

    def _queue_free(self, start: int, nbytes: int) -> None:
        self._pending.append((start, nbytes))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, []
        if pending and self.mm is not None:
            self._send((FREE, pending))

    def close(self) -> None:
        """Stop sending frees; the mapping itself goes when the last view does."""
        self.mm = None


@final
class Link(asyncio.BufferedProtocol):
    """Frames in, frames out, over one socket; ``on_message(header, payload)`` per frame.

    ``payload`` is None or a uint8 numpy array that the receiver owns. ``lost`` resolves
    when the connection ends, with the error if any; ``error`` is set when a message could
    not be read or handled (the link is then aborted).
    """

    def __init__(self, on_message: Callable[[tuple[Any, ...], np.ndarray | None], None]) -> None:
        self._on_message: Final = on_message
        self._scratch = bytearray(_SCRATCH)
        self._view = memoryview(self._scratch)
        self._start = 0
        self._end = 0
        self._header: tuple[Any, ...] | None = None  # while receiving a big payload
        self._big: np.ndarray | None = None
        self._got = 0
        self.transport: asyncio.Transport | None = None
        self.error: Exception | None = None
        self._outbox: deque[memoryview] = deque()
        self._corked: list[Any] = []
        self._uncork_scheduled = False
        self._paused = False
        self._loop: Final = asyncio.get_running_loop()
        self.lost: asyncio.Future[None] = self._loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=2 * _PIECE, low=_PIECE)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.lost.done():
            if exc is None:
                self.lost.set_result(None)
            else:
                self.lost.set_exception(exc)
                self.lost.exception()  # retrieved: the owner reports it its own way

    @property
    def connected(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def send(self, header: tuple[Any, ...], parts: Sequence[Any] = (), size: int = 0) -> None:
        """Queue one frame: ``header``, then ``parts`` (buffers of ``size`` bytes in all).

        Frames go out whole and in order. Small frames queued in one loop iteration leave
        in one write; large parts are written a piece at a time, as the socket drains,
        without being copied into the transport's buffer.
        """
        if self.transport is None:
            return
        data = frame(header, size)
        if size <= _BIG:
            self._corked.append(data)
            self._corked.extend(parts)
            if not self._uncork_scheduled:
                self._uncork_scheduled = True
                self._loop.call_soon(self._uncork)
            return
        self._uncork()
        self._outbox.append(memoryview(data))
        self._outbox.extend(memoryview(p).cast("B") for p in parts)
        self._pump()

    def _uncork(self) -> None:
        self._uncork_scheduled = False
        if self._corked:
            self._outbox.append(memoryview(b"".join(self._corked)))
            self._corked.clear()
            self._pump()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._pump()

    def _pump(self) -> None:
        outbox = self._outbox
        while outbox and not self._paused:
            transport = self.transport
            if transport is None or transport.is_closing():
                outbox.clear()
                return
            piece = outbox[0]
            if len(piece) > _PIECE:
                outbox[0] = piece[_PIECE:]
                piece = piece[:_PIECE]
            else:
                outbox.popleft()
            transport.write(piece)

    def close(self) -> None:
        """Send what is queued, then close."""
        self._uncork()
        if self.transport is not None:
            self.transport.close()

    # -- receiving ----------------------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._big is not None:
            return memoryview(self._big)[self._got :]  # type: ignore[arg-type]
        if self._end == len(self._scratch):
            self._compact()
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        try:
            if self._big is not None:
                self._got += nbytes
                if self._got == len(self._big):
                    header, big = self._header, self._big
                    self._header, self._big = None, None
                    assert header is not None
                    self._on_message(header, big)
                return
            self._end += nbytes
            self._parse()
        except Exception as exc:
            log.debug("asyncfeed: bad message on a worker link", exc_info=True)
            self.error = exc
            if self.transport is not None:
                self.transport.abort()

    def _parse(self) -> None:
        view = self._view
        while self._end - self._start >= _PREFIX.size:
            hlen, plen = _PREFIX.unpack_from(self._scratch, self._start)
            head_end = self._start + _PREFIX.size + hlen
            if head_end > self._end:
                if head_end - self._start > len(self._scratch):
                    raise ValueError(f"frame header of {hlen} bytes is too large")
                break
            if plen > _BIG:
                header = pickle.loads(view[self._start + _PREFIX.size : head_end])
                big = np.empty(plen, np.uint8)
                have = min(plen, self._end - head_end)
                big[:have] = np.frombuffer(self._scratch, np.uint8, have, head_end)
                self._start = head_end + have
                if have == plen:
                    self._on_message(header, big)
                    continue
                self._header, self._big, self._got = header, big, have
                return
            if head_end + plen > self._end:
                break
            header = pickle.loads(view[self._start + _PREFIX.size : head_end])
            payload = (
                np.frombuffer(self._scratch, np.uint8, plen, head_end).copy() if plen else None
            )
            self._start = head_end + plen
            self._on_message(header, payload)
        if self._start == self._end:
            self._start = self._end = 0
        elif self._end == len(self._scratch):
            self._compact()

    def _compact(self) -> None:
        live = self._end - self._start
        self._scratch[:live] = self._scratch[self._start : self._end]
        self._start, self._end = 0, live
