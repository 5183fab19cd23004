"""The framed socket protocol of the worker processes (``procs/wire.py``), property-tested.

Frames of random headers and payloads (empty, small, larger than the receive buffer, larger
than the big-payload threshold) are cut at random points, as a socket may deliver them, and
fed to a :class:`Link`: every message comes out whole, in order, once. And a pair of real
connected sockets carries the same frames both ways.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncfeed.procs import wire
from asyncfeed.procs.wire import Link, frame

pytestmark = pytest.mark.timeout(60)

PAYLOAD_SIZES = st.one_of(
    st.just(0),
    st.integers(1, 300),
    st.integers(wire._BIG - 2, wire._BIG + 2),  # around the big-payload threshold
    st.integers(wire._SCRATCH - 100, wire._SCRATCH + 5000),  # larger than the buffer
)
HEADERS = st.tuples(st.integers(1, 20), st.one_of(st.none(), st.integers(), st.text(max_size=20)))


class Received:
    def __init__(self, expect: int = 0) -> None:
        self.messages: list[tuple[tuple[Any, ...], bytes | None]] = []
        self.expect = expect
        self.all_in = asyncio.Event()

    def __call__(self, header: tuple[Any, ...], payload: np.ndarray | None) -> None:
        self.messages.append((header, None if payload is None else payload.tobytes()))
        if len(self.messages) == self.expect:
            self.all_in.set()


def _wire_bytes(frames: list[tuple[tuple[Any, ...], bytes]]) -> bytes:
    return b"".join(frame(h, len(p)) + p for h, p in frames)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(HEADERS, PAYLOAD_SIZES), min_size=1, max_size=6),
    st.lists(st.integers(1, 70_000), max_size=40),
    st.integers(0, 255),
)
def test_frames_cut_at_any_points_come_out_whole_and_in_order(
    specs: list[tuple[tuple[Any, ...], int]], cuts: list[int], fill: int
) -> None:
    frames = [(h, bytes([(fill + i) % 256]) * n) for i, (h, n) in enumerate(specs)]
    data = _wire_bytes(frames)

    async def feed_link() -> Received:
        got = Received()
        link = Link(got)
        pos = 0
        pieces = iter(cuts)
        while pos < len(data):
            want = next(pieces, len(data))
            buf = link.get_buffer(want)
            n = min(len(buf), want, len(data) - pos)
            buf[:n] = data[pos : pos + n]
            link.buffer_updated(n)
            pos += n
        assert link.error is None
        return got

    got = asyncio.run(feed_link())
    expected = [(h, p if p else None) for h, p in frames]
    assert got.messages == expected


async def test_frames_cross_a_real_socket_pair_both_ways() -> None:
    loop = asyncio.get_running_loop()
    a_sock, b_sock = socket.socketpair()
    got_a, got_b = Received(20), Received(20)
    _, a = await loop.connect_accepted_socket(lambda: Link(got_a), a_sock)
    _, b = await loop.connect_accepted_socket(lambda: Link(got_b), b_sock)
    big = np.arange(wire._SCRATCH * 3, dtype=np.uint8)
    for i in range(20):
        a.send((7, i), [big.data], big.nbytes)  # large: written piecewise as the socket drains
        b.send((8, i))  # small: corked into one write per loop iteration
    async with asyncio.timeout(30):
        await got_a.all_in.wait()
        await got_b.all_in.wait()
    assert [h for h, _ in got_b.messages] == [(7, i) for i in range(20)]
    assert all(p == big.tobytes() for _, p in got_b.messages)
    assert got_a.messages == [((8, i), None) for i in range(20)]
    a.close()
    b.close()
    await asyncio.wait([a.lost, b.lost], timeout=5)
    assert a.lost.done() and b.lost.done()


def test_a_header_too_large_for_the_buffer_is_an_error_not_a_hang() -> None:
    async def run() -> Link:
        link = Link(Received())
        data = frame(("x" * (wire._SCRATCH + 10),), 0)
        buf = link.get_buffer(len(data))
        n = min(len(buf), len(data))
        buf[:n] = data[:n]
        link.buffer_updated(n)
        return link

    link = asyncio.run(run())
    assert isinstance(link.error, ValueError)
