"""``processes=2`` under faults: remote exceptions, error budgets, killed workers, stopping."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import asyncfeed as af
from tests import procs_fetchers as pf
from tests.conftest import check_accounting
from tests.procs_support import no_leaks, worker_processes

pytestmark = pytest.mark.slow

STOP_BOUND_S = 2.0


@pytest.fixture(autouse=True)
def _no_leaked_processes() -> Iterator[None]:
    with no_leaks():
        yield


def _feed(fetch: Any, **kw: Any) -> af.Feed:
    opts: dict[str, Any] = {
        "blobs": ["ids", "x"],
        "batch_size": 8,
        "concurrency": 4,
        "processes": 2,
        "log_interval": None,
    }
    return af.Feed(fetch, **(opts | kw))


async def test_worker_exception_reaches_the_consumer_with_its_traceback() -> None:
    feed = _feed(pf.explode)
    message = r"^fetch failed in worker \d+: ValueError: bad record"
    with pytest.raises(af.FetchError, match=message) as info:
        async with feed:
            await anext(feed)
    err = info.value
    assert err.worker_id in feed.worker_ids
    original = err.__cause__
    assert type(original) is ValueError and str(original) == f"bad record in worker {err.worker_id}"
    remote = original.__cause__
    assert isinstance(remote, af.RemoteTraceback)
    assert "procs_fetchers.py" in remote.text and "_check_invariant" in remote.text
    shown = "".join(traceback.format_exception(err))
    assert "in _check_invariant" in shown and 'raise ValueError(f"bad record' in shown


async def test_max_errors_skips_failed_keys_in_every_process() -> None:
    keys = range(100)
    feed = af.Feed.from_keys(
        keys,
        pf.failing_key_rows,
        blobs=["ids", "x"],
        batch_size=8,
        concurrency=4,
        max_errors=10,
        processes=2,
        log_interval=None,
    )
    async with feed:
        ids = sorted(int(i) for b in [b async for b in feed] for i in b["ids"])
    assert ids == pf.expected_key_ids([k for k in keys if k % 10 != 3])
    assert feed.stats().fetch_errors == 10
    check_accounting(feed.stats())

    feed = af.Feed.from_keys(
        keys, pf.failing_key_rows, blobs=["ids", "x"], batch_size=8, max_errors=2, processes=2
    )
    with pytest.raises(af.FetchError, match=r"^3 failed fetches exceed max_errors=2; .*KeyError"):
        async with feed:
            async for _ in feed:
                pass
    check_accounting(feed.stats())


async def test_a_worker_killed_mid_run_fails_the_feed_naming_it() -> None:
    feed = _feed(pf.seed_rows, blobs=["ids", "x", "pid"])
    with pytest.raises(af.FetchError) as info:
        async with feed:
            pids: set[int] = set()
            while len(pids) < 2:  # both workers are serving
                pids |= set((await anext(feed))["pid"].tolist())
            victim = min(pids)
            os.kill(victim, signal.SIGKILL)
            async for _ in feed:
                pass
    assert re.fullmatch(
        rf"worker process [01] \(pid {victim}\) of feed 'train' died with exit code -9 \(SIGKILL\)",
        str(info.value),
    )
    stats = feed.stats()
    check_accounting(stats)
    assert stats.rows_in_flight == 0 and stats.rows_delivered > 0


async def test_a_worker_that_kills_itself_is_reported() -> None:
    feed = _feed(pf.kill_me, concurrency=2)
    with pytest.raises(af.FetchError, match=r"^worker process [01] \(pid \d+\) .*-9 \(SIGKILL\)$"):
        async with feed:
            await anext(feed)


async def test_worker_init_failure_is_reported_with_its_traceback() -> None:
    feed = _feed(pf.seed_rows, worker_init=pf.failing_init)
    with pytest.raises(
        af.FetchError, match=r"^worker_init failed in worker process [01]: RuntimeError: no device"
    ) as info:
        async with feed:
            await anext(feed)
    remote = info.value.__cause__
    assert isinstance(remote, af.RemoteTraceback) and "in failing_init" in remote.text


async def test_a_fetcher_that_cannot_load_in_the_worker_is_reported() -> None:
    feed = _feed(pf.Unloadable())
    with pytest.raises(
        af.FetchError, match=r"could not load the fetcher: ImportError: this fetcher"
    ):
        async with feed:
            await anext(feed)


def test_unpicklable_fetcher_or_worker_init_is_a_config_error() -> None:
    async def local(worker_id: int, batch_size: int) -> None:
        return None

    message = r"^processes=2 with start_method 'spawn' needs a picklable fetcher; <function .*local"
    with pytest.raises(af.ConfigError, match=message):
        _feed(local)
    with pytest.raises(
        af.ConfigError, match=r"needs a picklable worker_init; <function .*<lambda>"
    ):
        _feed(pf.seed_rows, worker_init=lambda i: None)
    with pytest.raises(af.ConfigError, match=r"needs a picklable fetcher"):
        af.Feed.from_keys([1], lambda k: None, blobs=["x"], batch_size=1, processes=1)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"processes": 0}, r"^processes must be >= 1, got 0$"),
        (
            {"processes": 2, "start_method": "bogus"},
            r"^start_method must be one of \[.*'spawn'\], got 'bogus'$",
        ),
        (
            {"processes": None, "worker_init": pf.remember_index},
            r"^worker_init needs processes=N, got processes=None$",
        ),
        (
            {"processes": 3, "concurrency": 2},
            r"^concurrency must be >= processes, got concurrency=2 and processes=3$",
        ),
        ({"processes": 2, "worker_init": 5}, r"^worker_init must be callable, got 5$"),
    ],
)
def test_process_options_are_checked(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(af.ConfigError, match=message):
        _feed(pf.seed_rows, **kw)


def test_an_executor_cannot_be_combined_with_processes() -> None:
    message = r"^executor cannot be used with processes=N: sync fetchers run in a thread pool"
    with ThreadPoolExecutor(1) as pool, pytest.raises(af.ConfigError, match=message):
        _feed(pf.sync_seed_rows, executor=pool)


async def _reach(state: str, feed: af.Feed) -> None:
    """Bring a feed of two workers to ``state`` (waiting on conditions, not on time)."""
    if state == "new":
        return
    await feed.__aenter__()
    if state == "starting":  # the processes exist, their interpreters are still booting
        while len(worker_processes()) < 2:
            await asyncio.sleep(0)
        return
    if state == "full queues":
        while feed.stats().batch_queue_depth < 2 or feed.stats().chunk_queue_depth < 4:
            await asyncio.sleep(0.005)
        return
    pids: set[int] = set()
    while len(pids) < 2:  # each worker answered once; its next calls hang
        pids |= set((await anext(feed))["pid"].tolist())


@pytest.mark.parametrize(
    ("state", "fetch"),
    [
        ("new", pf.seed_rows),
        ("starting", pf.seed_rows),
        ("full queues", pf.seed_rows),
        ("hung async calls", pf.hang),
        ("stuck sync calls", pf.sync_hang),
        ("blocked worker loops", pf.block_loop),
    ],
)
async def test_stop_from_every_state_ends_every_worker_quickly(state: str, fetch: Any) -> None:
    feed = _feed(fetch, max_buffered_chunks=4, blobs=["ids", "x", "pid"], batch_size=1)
    await _reach(state, feed)
    start = time.monotonic()
    await feed.aclose()
    assert time.monotonic() - start < STOP_BOUND_S
    assert feed.state is af.FeedState.STOPPED
    assert worker_processes() == []
    check_accounting(feed.stats())


async def test_cancelling_the_consumer_task_ends_the_workers() -> None:
    feed = _feed(pf.seed_rows, blobs=["ids", "x", "pid"])
    first = asyncio.Event()

    async def consume() -> None:
        async with feed:
            async for _ in feed:
                first.set()

    task = asyncio.create_task(consume())
    await first.wait()
    task.cancel()
    start = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - start < STOP_BOUND_S
    assert worker_processes() == []
    assert feed.state is af.FeedState.STOPPED
