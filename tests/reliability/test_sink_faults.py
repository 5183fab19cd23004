"""Faults with a sink: misbehaving fetchers behind a BlobsQueue, a reader that closes the
sink mid-run, stop while the bridge thread is blocked in put (even a put that ignores the
close), a put that raises."""

from __future__ import annotations

import threading
from collections.abc import Mapping

import numpy as np
import pytest

import asyncfeed as af
from asyncfeed.sinks import BlobsQueue, QueuePerBlob
from tests.reliability.faults import (
    CounterSource,
    FaultyFetcher,
    Tracker,
    assert_clean_end,
    join_threads,
    timed,
)

pytestmark = pytest.mark.timeout(30)


def read(q: BlobsQueue, tracker: Tracker, records: int | None = None) -> None:
    """Dequeue ``records`` records (None: until closed and drained) into ``tracker``."""
    while records is None or tracker.batches < records:
        record = q.dequeue(timeout=10)
        if record is None:
            return
        ids, x = record
        tracker.add(af.Batch({"ids": ids, "x": x}, tracker.batches, ids.shape[0]))


def settle(flavour: str) -> None:
    join_threads("asyncfeed-train-sink")
    if flavour == "sync":
        join_threads("asyncfeed-train-fetch")


@pytest.mark.parametrize(
    "rates", [{"raise": 0.05}, {"none": 0.3}, {"bad": 0.1}, {"slow": 0.05}], ids=str
)
def test_faulty_fetchers_behind_a_sink_deliver_every_row_once(
    faulty: FaultyFetcher, counter: CounterSource, flavour: str, rates: dict[str, float]
) -> None:
    faulty.rates = rates
    faulty.at = {0: "ok"}
    faulty.slow_s = 0.01
    q = BlobsQueue(capacity=3, num_blobs=2)
    feed = af.Feed(
        faulty.fetch(flavour),
        blobs=counter.blobs,
        batch_size=16,
        concurrency=3,
        max_errors=10**6,
        sink=q,
    )
    tracker = Tracker(16)
    feed.start()
    read(q, tracker, 150)
    with timed():
        feed.stop()
    read(q, tracker)  # what the sink accepted before the stop stays readable
    settle(flavour)
    assert_clean_end(feed, tracker, causes={"stop", "abandoned"}, issued=counter.issued)


@pytest.mark.parametrize("after", [0, 1, 7, 40])
def test_the_reader_closing_the_sink_stops_the_feed_and_loses_nothing_it_accepted(
    faulty: FaultyFetcher, counter: CounterSource, flavour: str, after: int
) -> None:
    faulty.rates = {"none": 0.2, "raise": 0.02}
    q = BlobsQueue(capacity=2, num_blobs=2)
    feed = af.Feed(
        faulty.fetch(flavour),
        blobs=counter.blobs,
        batch_size=8,
        concurrency=4,
        max_errors=10**6,
        sink=q,
    )
    tracker = Tracker(8)
    feed.start()
    read(q, tracker, after)
    q.close()  # the training side is done with it
    read(q, tracker)  # records accepted before the close are still there, in order
    with timed():
        feed.stop()  # the feed stopped (or is stopping) on its own: no error
    settle(flavour)
    stats = assert_clean_end(
        feed, tracker, causes={"sink_closed", "stop", "abandoned"}, issued=counter.issued
    )
    assert stats.rows_delivered == tracker.rows


class StuckSink:
    """A sink whose put() blocks until released and ignores close() (a wedged driver)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self._closed = False
        self.accepted = 0

    def put(self, batch: Mapping[str, np.ndarray]) -> bool:
        self.entered.set()
        self.release.wait(30)
        self.accepted += 1
        return not self._closed

    def close(self) -> None:
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed


def test_stop_while_put_is_wedged_and_ignores_the_close(
    counter: CounterSource, caplog: pytest.LogCaptureFixture
) -> None:
    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return counter.chunk(4)

    sink = StuckSink()
    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=4, sink=sink)
    feed.start()
    try:
        assert sink.entered.wait(5)
        with timed(1.0 + 1.5):
            feed.stop(timeout=1.0)  # the bridge thread is abandoned, with a warning
        assert any("still blocked" in r.getMessage() for r in caplog.records)
    finally:
        sink.release.set()
    join_threads("asyncfeed-train-sink")
    join_threads("asyncfeed-train-fetch")
    stats = assert_clean_end(feed, causes={"stop", "abandoned"}, issued=counter.issued)
    assert stats.rows_delivered == 0  # the wedged put returned False: the sink was closed


def test_a_put_that_raises_stops_the_feed_with_sink_error(
    faulty: FaultyFetcher, counter: CounterSource, flavour: str
) -> None:
    calls = [0]
    q = BlobsQueue(capacity=4, num_blobs=2)

    class Failing:
        closed = property(lambda self: q.closed)

        def put(self, batch: Mapping[str, np.ndarray]) -> bool:
            calls[0] += 1
            if calls[0] == 5:
                raise OSError("device lost")
            return q.put(batch)

        def close(self) -> None:
            q.close()

    feed = af.Feed(
        faulty.fetch(flavour), blobs=counter.blobs, batch_size=8, concurrency=2, sink=Failing()
    )
    tracker = Tracker(8)
    feed.start()
    read(q, tracker)  # the failure closes the sink: the reader sees the end
    with timed(), pytest.raises(af.SinkError, match=r"failed in put\(\): OSError: device lost"):
        feed.stop()
    settle(flavour)
    stats = assert_clean_end(feed, tracker, causes={"error", "abandoned"}, issued=counter.issued)
    assert tracker.batches == 4 and stats.rows_delivered == 32


def test_a_keyed_feed_into_a_sink_flushes_then_closes_it() -> None:
    def fetch_one(key: int) -> list[np.ndarray]:
        return [np.array([key], np.int64), np.full((1, 4), key, np.float32)]

    q = BlobsQueue(capacity=1, num_blobs=2)
    feed = af.Feed.from_keys(range(53), fetch_one, blobs=["ids", "x"], batch_size=10, sink=q)
    tracker = Tracker(10)
    feed.start()
    read(q, tracker)  # ends when the feed closes the sink after the flushed partial batch
    feed.stop()
    join_threads("asyncfeed-keys-sink")
    assert tracker.partial and sorted(tracker.seen) == list(range(53))
    assert_clean_end(feed, tracker, causes=set(), issued=53)


@pytest.mark.timeout(10)
def test_closing_a_queue_per_blob_sink_mid_put_leaves_no_half_batch() -> None:
    sink = QueuePerBlob(["ids", "x"], capacity=1)
    assert sink.queues["x"].safe_enqueue((np.zeros(2),))  # x full, ids empty
    outcome: list[bool] = []
    writer = threading.Thread(
        target=lambda: outcome.append(sink.put({"ids": np.arange(2), "x": np.ones(2)}))
    )
    writer.start()
    writer.join(0.2)
    assert writer.is_alive()  # the bridge thread is blocked in put, waiting for room in x
    sink.close()  # the training side closes the sink
    writer.join(5)
    assert outcome == [False]  # the batch is counted as not accepted: none of it is readable
    assert sink.queues["ids"].dequeue(timeout=1) is None
    got = sink.queues["x"].dequeue(timeout=1)
    assert got is not None and not got[0].any()  # only what was there before
    assert sink.queues["x"].dequeue(timeout=1) is None
