"""One sizing policy (``sizing.py``): what ``concurrency`` turns into, everywhere."""

from __future__ import annotations

import pytest

from asyncfeed.sizing import MAX_PUMP_AHEAD, plan, pump_ahead


def test_in_process_async_fetchers_get_tasks_and_no_threads() -> None:
    s = plan(64, 800, own_threads=False, processes=None)
    assert (s.workers, s.key_buffer, s.threads, s.per_process) == (64, 64, 0, 0)


def test_sync_fetchers_on_the_feeds_own_pool_get_one_thread_each() -> None:
    s = plan(8, 800, own_threads=True, processes=None)
    assert s.threads == 8 and s.workers == 8


@pytest.mark.parametrize(("concurrency", "processes", "share"), [(4, 2, 2), (5, 2, 3), (64, 3, 22)])
def test_each_worker_process_serves_its_share_rounded_up(
    concurrency: int, processes: int, share: int
) -> None:
    s = plan(concurrency, 800, own_threads=True, processes=processes)
    assert s.per_process == share and s.threads == 0  # the threads live in the workers
    assert s.workers == concurrency  # the feed still keeps one task per call in flight


@pytest.mark.parametrize(
    ("buffered", "concurrency", "ahead"),
    [(800, 4, MAX_PUMP_AHEAD), (800, 64, 6), (800, 512, 1), (4, 4, 1)],
)
def test_pumps_together_hold_at_most_half_the_chunk_queue(
    buffered: int, concurrency: int, ahead: int
) -> None:
    assert pump_ahead(buffered, concurrency) == ahead
    assert ahead * concurrency <= max(buffered // 2, concurrency)
