"""The wire between a feed and its worker processes: framed messages over a Unix socket.

Both ends speak one protocol over a connected Unix stream socket:

- every message is a frame ``[u32 header length][u64 payload length][header][payload]``;
  the header is a small pickled tuple whose first item is the message kind, the payload raw
  bytes (inline chunk data or a pickled object);
- :class:`Link` is an asyncio ``BufferedProtocol`` that cuts frames out of the stream. A large
  payload is received straight into a fresh numpy buffer (one copy, by the kernel).

Chunk data above ``ring.INLINE_MAX_BYTES`` goes through the worker's shared-memory ring
(``ring.py``) instead. Which of the two is cheaper was measured
(``benchmarks/procs_bench.py``): for rows of a few KiB and more, the ring costs the feed's
process a fraction of a socket read.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import struct
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Final, final

import numpy as np

__all__ = ["Link", "frame", "send_frame_blocking"]

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


_PREFIX: Final = struct.Struct("<IQ")
_SCRATCH: Final = 256 * 1024
_BIG: Final = 64 * 1024  # payloads above this are received straight into their own buffer
_PIECE: Final = 256 * 1024  # large payloads are written this much at a time


def frame(header: tuple[Any, ...], payload_len: int = 0) -> bytes:
    """The prefix and header of one frame; ``payload_len`` bytes must follow it."""
    head = pickle.dumps(header, protocol=pickle.HIGHEST_PROTOCOL)
    return _PREFIX.pack(len(head), payload_len) + head


def send_frame_blocking(sock: Any, header: tuple[Any, ...]) -> None:
    """Send one payload-less frame on a blocking socket (before a worker has a loop)."""
    sock.sendall(frame(header))


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
