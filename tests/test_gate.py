"""The adaptive feed's gate: at most ``limit`` holders, a limit that moves, no slot leaked."""

from __future__ import annotations

import asyncio

import pytest

from asyncfeed.gate import COMPLETIONS, Gate

pytestmark = pytest.mark.timeout(10)


async def holders(gate: Gate, n: int) -> tuple[list[asyncio.Task[None]], asyncio.Event]:
    """``n`` tasks that take a slot and hold it until the returned event is set."""
    release = asyncio.Event()

    async def hold() -> None:
        await gate.acquire()
        try:
            await release.wait()
        finally:
            gate.release()

    tasks = [asyncio.create_task(hold()) for _ in range(n)]
    for _ in range(3):
        await asyncio.sleep(0)  # let every task reach the gate
    return tasks, release


async def test_at_most_limit_holders_and_the_rest_wait_in_order() -> None:
    gate = Gate(3)
    tasks, release = await holders(gate, 5)
    assert gate.inflight == 3
    release.set()
    await asyncio.gather(*tasks)
    assert gate.inflight == 0 and gate.completions == 5


async def test_raising_the_limit_admits_waiters_and_lowering_it_admits_none() -> None:
    gate = Gate(2)
    tasks, release = await holders(gate, 6)
    gate.set_limit(4)
    assert gate.inflight == 4
    gate.set_limit(1)  # the four running go on; nobody new until below one
    assert gate.inflight == 4
    release.set()
    await asyncio.gather(*tasks)
    assert gate.inflight == 0


async def test_a_cancelled_waiter_takes_no_slot_even_when_admitted_with_the_cancel() -> None:
    gate = Gate(1)
    tasks, release = await holders(gate, 1)
    waiting = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert gate.inflight == 1  # the holder only
    second = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    gate.set_limit(2)  # admits it ...
    second.cancel()  # ... and the cancel lands before it resumes: the slot is given back
    with pytest.raises(asyncio.CancelledError):
        await second
    assert gate.inflight == 1
    release.set()
    await asyncio.gather(*tasks)
    assert gate.inflight == 0


async def test_the_controller_is_woken_after_enough_completions() -> None:
    gate = Gate(1)
    for _ in range(COMPLETIONS - 1):
        await gate.acquire()
        gate.release()
    assert not gate.due.is_set()
    await gate.acquire()
    gate.release()
    assert gate.due.is_set() and gate.completions == COMPLETIONS
