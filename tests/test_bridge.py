"""The feed's own thread pool and the pumps that run sync fetchers on it (bridge.py)."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Iterator

import pytest

from asyncfeed.bridge import DaemonThreadPool, Outcome

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def pool() -> Iterator[DaemonThreadPool]:
    pool = DaemonThreadPool(2, "test-pool")
    yield pool
    pool.shutdown(wait=False)
    assert pool.join(5)


class Gated:
    """A blocking call that returns 0, 1, 2, ... once per ``open()``; counts its calls."""

    def __init__(self) -> None:
        self.gate = threading.Semaphore(0)
        self.started = threading.Semaphore(0)
        self._n = itertools.count()

    def __call__(self) -> int:
        self.started.release()
        assert self.gate.acquire(timeout=10)
        return next(self._n)

    def open(self, n: int = 1) -> None:
        for _ in range(n):
            self.gate.release()

    def wait_started(self, n: int = 1) -> None:
        for _ in range(n):
            assert self.started.acquire(timeout=10)


async def test_a_pump_hands_over_every_result_in_order(pool: DaemonThreadPool) -> None:
    calls = itertools.count()
    pump = pool.pump(lambda: next(calls), ahead=3, on_late=lambda o: None)
    got = [(await pump.get())[:2] for _ in range(100)]
    assert got == [(True, i) for i in range(100)]
    left = pump.stop()
    assert [value for _, value, _ in left] == list(range(100, 100 + len(left)))
    assert len(left) <= 3


async def test_a_pump_runs_at_most_ahead_calls_ahead_of_its_taker(pool: DaemonThreadPool) -> None:
    call = Gated()
    pump = pool.pump(call, ahead=2, on_late=lambda o: None)
    call.open(10)
    call.wait_started(2)  # two results made: no room for a third call
    assert call.started.acquire(timeout=0.2) is False
    assert [(await pump.get())[1] for _ in range(4)] == [0, 1, 2, 3]  # taking makes room
    assert len(pump.stop()) <= 2
    call.open(10)


async def test_a_call_in_progress_at_stop_goes_to_on_late(pool: DaemonThreadPool) -> None:
    call = Gated()
    late: list[Outcome] = []
    returned = threading.Event()

    def on_late(outcome: Outcome) -> None:
        late.append(outcome)
        returned.set()

    pump = pool.pump(call, ahead=1, on_late=on_late)
    call.wait_started()
    assert pump.stop() == []
    call.open()
    assert returned.wait(5)
    assert [(ok, v) for ok, v, _ in late] == [(True, 0)]
    call.open(5)  # the thread made no further call
    assert call.started.acquire(timeout=0.2) is False


async def test_exceptions_are_handed_over_not_raised_in_the_thread(pool: DaemonThreadPool) -> None:
    outcomes = iter([1, ValueError("bad"), 2])

    def call() -> int:
        item = next(outcomes)
        if isinstance(item, Exception):
            raise item
        assert isinstance(item, int)
        return item

    pump = pool.pump(call, ahead=1, on_late=lambda o: None)
    first, second, third = [await pump.get() for _ in range(3)]
    assert first[:2] == (True, 1) and third[:2] == (True, 2)
    assert second[0] is False and isinstance(second[1], ValueError)
    pump.stop()


async def test_a_taker_waiting_on_an_empty_pump_can_be_cancelled(pool: DaemonThreadPool) -> None:
    call = Gated()
    pump = pool.pump(call, ahead=1, on_late=lambda o: None)
    call.wait_started()
    taker = asyncio.ensure_future(pump.get())
    await asyncio.sleep(0)
    taker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await taker
    call.open()  # the result made after the cancel is still there for the next get()
    assert (await pump.get())[:2] == (True, 0)
    pump.stop()
    call.open(5)


def test_join_waits_for_an_idle_pump_thread_and_abandons_one_in_a_call() -> None:
    async def scenario() -> tuple[DaemonThreadPool, Gated]:
        pool = DaemonThreadPool(2, "test-join")
        idle = pool.pump(lambda: 0, ahead=1, on_late=lambda o: None)
        stuck = Gated()
        busy = pool.pump(stuck, ahead=1, on_late=lambda o: None)
        await idle.get()
        stuck.wait_started()
        idle.stop()
        busy.stop()
        return pool, stuck

    pool, stuck = asyncio.run(scenario())
    pool.shutdown(wait=False)
    assert pool.join(5) is False  # the stuck call is abandoned, not waited for
    assert sum(t.is_alive() for t in pool._threads) == 1  # the idle one was joined
    stuck.open()  # the call returns: its thread ends on its own
    for thread in pool._threads:
        thread.join(5)
        assert not thread.is_alive()
