"""Stats: snapshots, interval logging, external loggers, the lagging warning."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import numpy as np
import pytest

import asyncfeed as af
from asyncfeed.stats import DropCause, LagWarning, Ledger, Stage
from tests.conftest import CounterSource


class Recorder:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.called = asyncio.Event()

    def log(self, metrics: dict[str, Any]) -> None:
        self.calls.append(metrics)
        self.called.set()


class Broken:
    def log(self, metrics: dict[str, Any]) -> None:
        raise RuntimeError("logger down")


async def test_external_loggers_get_caffe2_metric_names(
    counter: CounterSource, caplog: pytest.LogCaptureFixture
) -> None:
    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        await asyncio.sleep(0)
        return counter.chunk(4)

    recorder = Recorder()
    feed = af.Feed(
        fetch,
        blobs=counter.blobs,
        batch_size=8,
        log_interval=0.05,
        external_loggers=[Broken(), recorder],
    )
    caplog.set_level(logging.INFO, logger="asyncfeed")
    async with feed:
        async for _ in feed:
            if recorder.called.is_set():
                break
    metrics = recorder.calls[0]
    for name in ("fetcher_time", "enqueue_time", "inputs_per_sec", "queue_size", "time_elapsed"):
        assert name in metrics
    assert metrics["rows_fetched"] >= metrics["rows_delivered"]
    assert any("external logger" in r.message and "failed" in r.message for r in caplog.records)
    assert any("rows delivered" in r.message for r in caplog.records)


def test_snapshot_is_frozen_and_consistent() -> None:
    async def fetch(worker_id: int, batch_size: int) -> None:
        return None

    feed = af.Feed(fetch, blobs=["x"], batch_size=4)
    stats = feed.stats()
    assert stats.state == "new" and stats.rows_fetched == 0 and stats.inputs_per_sec == 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.rows_fetched = 3  # type: ignore[misc]


def test_ledger_moves_rows_between_stages() -> None:
    ledger = Ledger()
    ledger.fetch(10)
    ledger.move(10, Stage.QUEUED, Stage.REBATCHING)
    ledger.move(8, Stage.REBATCHING, Stage.BATCHED)
    ledger.deliver(8, Stage.BATCHED)
    ledger.drop(2, Stage.REBATCHING, DropCause.STOP)
    ledger.drop(3, None, DropCause.ABANDONED)
    fetched, delivered, dropped, stages = ledger.snapshot()
    assert (fetched, delivered, dropped, stages) == (
        13,
        8,
        {"stop": 2, "abandoned": 3},
        (0, 0, 0, 0),
    )


def test_lag_warning_is_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    lag = LagWarning("train", period=3600, grace=0.0)
    lag.check(depth=100, capacity=800)  # 12 % full: fine
    lag.check(depth=0, capacity=800)
    lag.check(depth=1, capacity=800)
    warnings = [r for r in caplog.records if "data loading lagging" in r.message]
    assert len(warnings) == 1 and "'train'" in warnings[0].message
    quiet = LagWarning("test", grace=3600)  # a feed starts with an empty queue: no warning
    quiet.check(depth=0, capacity=800)
    assert not [r for r in caplog.records if "'test'" in r.message]


async def test_inputs_per_sec_is_meaningful_from_the_first_batches(counter: CounterSource) -> None:
    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        await asyncio.sleep(0.001)  # a steady, slow source
        return counter.chunk(8)

    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=8, concurrency=4)
    async with feed:
        async for _ in feed:
            rate = feed.stats().inputs_per_sec
            if rate > 0:
                break
    assert rate > 0


async def test_inputs_per_sec_of_a_short_run_stays_meaningful_after_it_stops(
    counter: CounterSource,
) -> None:
    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        await asyncio.sleep(0)
        return counter.chunk(8)

    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=8, concurrency=2)
    async with feed:
        for _ in range(20):  # well under a second
            await anext(feed)
        running = feed.stats().inputs_per_sec
    stopped = feed.stats()
    assert running > 0 and stopped.inputs_per_sec > 0
    # over the run's delivering time: at least the 20 batches' rows in that span
    assert stopped.inputs_per_sec * stopped.time_elapsed >= 8 * 19
