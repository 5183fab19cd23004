"""HostGate: requests wait for their host's policy in FIFO order, retries first, no polling."""

from __future__ import annotations

import asyncio

import pytest

import asyncfeed as af
from asyncfeed.adaptive import HostPolicy, Outcome
from asyncfeed.fetchers.throttle import HostGate

pytestmark = pytest.mark.timeout(10)


def gate(start: int) -> HostGate:
    return HostGate(HostPolicy(af.Adaptive(start=start)), asyncio.get_running_loop())


async def test_requests_over_the_limit_wait_in_order_for_a_slot() -> None:
    g = gate(2)
    first, second = g.try_acquire(), g.try_acquire()
    assert first is not None and second is not None and g.try_acquire() is None
    order: list[str] = []

    async def wait(name: str, front: bool = False) -> None:
        ticket = await g.acquire(first=front)
        order.append(name)
        g.release(ticket, Outcome.OK)

    tasks = [asyncio.create_task(wait("a")), asyncio.create_task(wait("b"))]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(wait("retry", front=True)))
    await asyncio.sleep(0)
    assert g.waiting == 3 and g.inflight == 2 and order == []
    g.release(first, Outcome.OK)
    g.release(second, Outcome.OK)
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert order == ["retry", "a", "b"] and g.inflight == 0 and g.waiting == 0


async def test_a_paused_host_lets_requests_go_when_the_pause_ends() -> None:
    g = gate(4)
    ticket = g.try_acquire()
    assert ticket is not None
    g.release(ticket, Outcome.THROTTLED, retry_after=0.2)
    assert g.try_acquire() is None  # paused
    loop = asyncio.get_running_loop()
    began = loop.time()
    waiting = await asyncio.wait_for(g.acquire(), 5)  # woken by the gate's timer
    assert loop.time() - began >= 0.19
    g.release(waiting, Outcome.OK)
    g.close()


async def test_cancelling_a_waiter_leaves_the_line_and_a_granted_slot_is_given_back() -> None:
    g = gate(1)
    held = g.try_acquire()
    assert held is not None
    task = asyncio.create_task(g.acquire())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert g.waiting == 0
    granted = asyncio.create_task(g.acquire())
    await asyncio.sleep(0)
    g.release(held, Outcome.OK)  # grants the waiter, which is cancelled before it runs
    granted.cancel()
    with pytest.raises(asyncio.CancelledError):
        await granted
    assert g.inflight == 0 and g.try_acquire() is not None
