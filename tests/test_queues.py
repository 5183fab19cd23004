"""Channel: bounded FIFO whose close() gives every waiter a defined outcome; shared sources."""

from __future__ import annotations

import asyncio

import pytest

from asyncfeed import ConfigError
from asyncfeed.queues import Channel, ChannelClosed, attach_source, detach_source


async def test_fifo_and_bound() -> None:
    ch: Channel[int] = Channel(2)
    assert ch.put_nowait(1) and ch.put_nowait(2)
    assert not ch.put_nowait(3)
    assert ch.full() and len(ch) == 2
    assert ch.get_nowait() == 1 and ch.get_nowait() == 2
    with pytest.raises(asyncio.QueueEmpty):
        ch.get_nowait()


async def test_putter_parks_while_full_and_resumes_after_a_get() -> None:
    ch: Channel[int] = Channel(1)
    await ch.put(1)
    putter = asyncio.create_task(ch.put(2))
    await asyncio.sleep(0)
    assert not putter.done()
    assert await ch.get() == 1
    await asyncio.wait_for(putter, 1)
    assert ch.get_nowait() == 2


async def test_a_parked_putter_is_never_overtaken() -> None:
    ch: Channel[int] = Channel(2)
    assert ch.put_nowait(1) and ch.put_nowait(2)
    parked = asyncio.create_task(ch.put(3))
    await asyncio.sleep(0)
    assert not ch.put_nowait(4)  # a putter waits: no overtaking
    assert ch.get_nowait() == 1
    assert not ch.put_nowait(4)  # the freed slot is kept for the parked putter
    await asyncio.wait_for(parked, 1)
    assert ch.put_nowait(4) is False and [ch.get_nowait(), ch.get_nowait()] == [2, 3]


async def test_a_woken_putter_that_is_cancelled_hands_its_slot_on() -> None:
    ch: Channel[int] = Channel(1)
    ch.put_nowait(1)
    first = asyncio.create_task(ch.put(2))
    second = asyncio.create_task(ch.put(3))
    await asyncio.sleep(0)
    assert ch.get_nowait() == 1  # wakes `first`, keeping the slot for it
    first.cancel()
    await asyncio.wait_for(second, 1)
    assert first.cancelled() and ch.get_nowait() == 3
    assert ch.put_nowait(5)  # no slot left kept for anyone


async def test_a_producer_that_never_waits_cannot_starve_a_parked_one() -> None:
    """A fast producer puts without yielding whenever there is room; a parked producer
    still gets each slot freed for it (its key is not held back for good)."""
    ch: Channel[int] = Channel(4)
    for i in range(4):
        ch.put_nowait(i)
    parked = asyncio.create_task(ch.put(-1))
    await asyncio.sleep(0)
    got = []
    for i in range(4, 100):
        got.append(ch.get_nowait())
        if ch.put_nowait(i):  # a fast producer, trying after every get
            continue
        if not parked.done():
            await asyncio.sleep(0)  # the parked producer runs
    got.extend(ch.drain())
    assert parked.done() and -1 in got


async def test_close_wakes_getters_and_putters() -> None:
    ch: Channel[int] = Channel(1)
    getter = asyncio.create_task(ch.get())
    await asyncio.sleep(0)
    ch.close()
    with pytest.raises(ChannelClosed):
        await asyncio.wait_for(getter, 1)
    full: Channel[int] = Channel(1)
    full.put_nowait(1)
    putter = asyncio.create_task(full.put(2))
    await asyncio.sleep(0)
    full.close()
    with pytest.raises(ChannelClosed):
        await asyncio.wait_for(putter, 1)
    # items put before close stay readable, then the end is signalled
    assert full.get_nowait() == 1
    with pytest.raises(ChannelClosed):
        await full.get()


async def test_cancelled_getter_passes_its_wakeup_on() -> None:
    ch: Channel[int] = Channel(4)
    first = asyncio.create_task(ch.get())
    second = asyncio.create_task(ch.get())
    await asyncio.sleep(0)
    ch.put_nowait(7)  # wakes `first`
    first.cancel()
    assert await asyncio.wait_for(second, 1) == 7
    assert first.cancelled()


async def test_put_front_returns_an_item_to_the_head() -> None:
    ch: Channel[int] = Channel(2)
    ch.put_nowait(2)
    ch.put_front(1)
    assert [ch.get_nowait(), ch.get_nowait()] == [1, 2]


async def test_drain_frees_parked_putters() -> None:
    ch: Channel[int] = Channel(1)
    ch.put_nowait(1)
    putter = asyncio.create_task(ch.put(2))
    await asyncio.sleep(0)
    assert ch.drain() == [1]
    await asyncio.wait_for(putter, 1)
    assert ch.get_nowait() == 2


async def test_many_producers_and_consumers_lose_and_duplicate_nothing() -> None:
    ch: Channel[int] = Channel(3)
    got: list[int] = []

    async def produce(base: int) -> None:
        for i in range(200):
            await ch.put(base + i)

    async def consume() -> None:
        while True:
            try:
                got.append(await ch.get())
            except ChannelClosed:
                return

    consumers = [asyncio.create_task(consume()) for _ in range(4)]
    await asyncio.gather(*(produce(k * 1000) for k in range(5)))
    ch.close()
    await asyncio.wait_for(asyncio.gather(*consumers), 5)
    assert sorted(got) == sorted(k * 1000 + i for k in range(5) for i in range(200))


async def test_sources_are_shared_per_name_and_checked() -> None:
    a = attach_source("s", ["x"], 10)
    b = attach_source("s", ["x"], 10)
    other = attach_source("t", ["x"], 10)
    assert a is b and a is not other
    with pytest.raises(ConfigError, match=r"^source 's' is already fed with blobs \['x'\]"):
        attach_source("s", ["y"], 10)
    private = attach_source("s", ["x"], 10, shared=False)
    assert private is not a
    assert not detach_source(a)
    assert detach_source(b)
    assert detach_source(other)
    fresh = attach_source("s", ["y"], 5)  # the last user left: a new queue, new blobs
    assert fresh is not a
    assert detach_source(fresh)
