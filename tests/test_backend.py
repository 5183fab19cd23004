"""The in-process worker backend (``backend.py``): every kind of call yields an outcome."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from asyncfeed.backend import LocalBackend, submit
from asyncfeed.bridge import to_thread
from asyncfeed.sizing import plan

pytestmark = pytest.mark.timeout(20)


def backend(fn: Callable[..., Any], executor: Any = None) -> tuple[LocalBackend, list[Any]]:
    late: list[Any] = []
    sizing = plan(2, 800, own_threads=executor is None, processes=None)
    return LocalBackend(fn, executor=executor, sizing=sizing, source="t", on_late=late.append), late


async def test_an_async_fetcher_is_awaited_on_the_loop_and_timed() -> None:
    async def fetch(worker_id: int, batch_size: int) -> tuple[int, int]:
        await asyncio.sleep(0)
        return worker_id, batch_size

    b, _ = backend(fetch)
    await b.start()
    call = b.seed_call(3, lambda: 8)
    returned, value, seconds = await call()
    assert (returned, value) == (True, (3, 8)) and seconds >= 0
    assert call.leftovers() == []
    await b.stop(0.0)


async def test_an_exception_is_an_outcome_and_a_cancel_is_not() -> None:
    async def fetch(key: Any) -> None:
        if key == "bad":
            raise KeyError(key)
        await asyncio.Event().wait()

    b, _ = backend(fetch)
    await b.start()
    call = b.key_call()
    returned, value, _ = await call("bad")
    assert not returned and isinstance(value, KeyError)
    task = asyncio.ensure_future(call("hang"))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_sync_seed_fetcher_runs_in_a_pump_whose_leftovers_are_returned() -> None:
    made = threading.Semaphore(0)

    def fetch(worker_id: int, batch_size: int) -> int:
        made.release()
        return worker_id

    b, _ = backend(fetch)
    await b.start()
    call = b.seed_call(5, lambda: 1)
    assert (await call())[:2] == (True, 5)
    for _ in range(3):  # the pump runs ahead of its taker
        await to_thread(made.acquire, name="test-wait")
    leftovers = call.leftovers()
    assert leftovers and all(outcome[:2] == (True, 5) for outcome in leftovers)
    await b.stop(time.monotonic() + 5)


async def test_a_sync_call_abandoned_while_running_hands_its_result_to_on_late() -> None:
    entered, release = threading.Event(), threading.Event()

    def fetch(key: Any) -> str:
        entered.set()
        release.wait(10)
        return f"late {key}"

    late: list[Any] = []
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        task = asyncio.ensure_future(submit(pool, fetch, ("k",), late.append))
        await to_thread(entered.wait, 10, name="test-wait")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
    assert late == ["late k"]


async def test_an_executor_that_refuses_calls_yields_a_broken_executor_outcome() -> None:
    pool = concurrent.futures.ThreadPoolExecutor(1)
    pool.shutdown()
    returned, value, _ = await submit(pool, lambda: None, (), lambda r: None)
    assert not returned and isinstance(value, concurrent.futures.BrokenExecutor)
    assert "refused the call" in str(value)


async def test_the_fetchers_host_stats_pass_through() -> None:
    class WithHosts:
        async def __call__(self, key: Any) -> None:
            return None

        def host_stats(self) -> dict[str, dict[str, int]]:
            return {"h": {"requests": 1}}

    b, _ = backend(WithHosts())
    assert b.host_stats() == {"h": {"requests": 1}} and b.opens_fetcher
