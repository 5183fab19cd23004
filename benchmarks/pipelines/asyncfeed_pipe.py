"""asyncfeed, consumed with ``async for`` on the feed's loop or with ``get()`` from a thread."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from ..data import Streams
from ..runner import AsyncRunner, Runner, Timeline
from ..spec import Unavailable

__all__ = ["DataWorkersRunner", "FeedAsyncRunner", "FeedSyncRunner"]

FeedFactory = Callable[[], Any]  # () -> asyncfeed.Feed, called where the feed will run


class _Arrays:
    """Async iterator over a feed's batches as lists of arrays in blob order; counts the
    batches that carry provenance (a keyed feed's, unless ablated)."""

    def __init__(self, feed: Any) -> None:
        self._feed = feed
        self._blobs = tuple(feed.blobs)
        self.with_provenance = 0

    def __aiter__(self) -> _Arrays:
        return self

    async def __anext__(self) -> list[Any]:
        batch = await self._feed.__anext__()
        if batch.provenance is not None:
            self.with_provenance += 1
        return [batch[name] for name in self._blobs]


def _quiescent(feed: Any) -> bool:
    """No fetch call in flight (one in retry backoff may still deliver its row)."""
    return feed is None or feed.stats().inflight == 0


class FeedAsyncRunner(AsyncRunner):
    """``async with feed: async for batch in feed`` — the consumer shares the feed's loop.

    ``loop="uvloop"`` runs it on uvloop instead of asyncio's default loop. ``cleanup`` is
    awaited on the loop after the feed stopped (e.g. to close the fetcher's sessions).
    """

    def __init__(
        self,
        streams: Streams,
        make_feed: FeedFactory,
        note: str = "",
        loop: str = "asyncio",
        cleanup: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(streams)
        self._make_feed = make_feed
        self._feed: Any = None
        self._loop = loop
        self._cleanup = cleanup
        self._arrays: _Arrays | None = None
        self.note = note

    def run(self, timeline: Timeline) -> None:
        if self._loop != "uvloop":
            super().run(timeline)
            return
        try:
            import uvloop
        except ImportError as exc:
            raise Unavailable(f"uvloop does not import: {exc}") from exc
        uvloop.run(self.arun(timeline))

    @contextlib.asynccontextmanager
    async def batches(self) -> AsyncIterator[_Arrays]:
        feed = self._make_feed()
        self._feed = feed
        try:
            async with feed:
                self._arrays = _Arrays(feed)
                yield self._arrays
        finally:
            if self._cleanup is not None:
                await self._cleanup()

    async def held_rows_async(self, ended: bool) -> int | None:
        stats = self._feed.stats()
        return int(stats.rows_in_flight)

    def quiescent(self) -> bool:
        return _quiescent(self._feed)

    def extras(self) -> dict[str, Any]:
        """Batches with provenance, the consumer's attributed waits, and for a keyed feed
        the batches its checkpoint state counts as received."""
        feed = self._feed
        if feed is None or self._arrays is None:
            return {}
        stats = feed.stats()
        out: dict[str, Any] = {
            "batches": stats.batches_delivered,
            "batches_with_provenance": self._arrays.with_provenance,
            "consumer_waits": stats.consumer_waits,
            "backpressure_s": sum(stats.backpressure_s_by_stage.values()),
        }
        if stats.epoch is not None:
            out["checkpoint_batches"] = feed.state_dict()["delivered"]["batches"]
        return out


class FeedSyncRunner(Runner):
    """``feed.start()`` / ``feed.get()`` / ``feed.stop()``: the feed runs on its private loop
    thread, the consumer is the measuring thread."""

    def __init__(self, streams: Streams, make_feed: FeedFactory, note: str = "") -> None:
        super().__init__(streams)
        self._make_feed = make_feed
        self._feed: Any = None
        self.note = note

    def start(self) -> None:
        self._feed = self._make_feed()
        self._feed.start()

    def next_batch(self, timeout: float | None) -> Sequence[Any] | None:
        from asyncfeed import FeedExhausted

        try:
            batch = self._feed.get(timeout=timeout)
        except FeedExhausted:
            return None
        return [batch[name] for name in self._feed.blobs]

    def held_rows(self, ended: bool) -> int | None:
        stats = self._feed.stats()
        return int(stats.rows_in_flight)

    def quiescent(self) -> bool:
        return _quiescent(self._feed)

    def stop(self) -> None:
        if self._feed is not None:
            self._feed.stop()


class DataWorkersRunner(Runner):
    """asyncfeed's classic API (``asyncfeed.data_workers``): the classic program with one
    import changed — ``init_data_input_workers(None, blobs, fetch_fun, ...)``, sync fetchers
    on threads, batches read from the per-blob ``BlobsQueue``s."""

    def __init__(
        self,
        streams: Streams,
        blobs: Sequence[str],
        fetch_fun: Callable[[int, int], Any],
        *,
        batch_size: int,
        num_worker_threads: int,
        max_buffered_batches: int,
        note: str = "",
    ) -> None:
        super().__init__(streams)
        self._blobs = list(blobs)
        self._fetch_fun = fetch_fun
        self._batch_size = batch_size
        self._threads = num_worker_threads
        self._max_buffered = max_buffered_batches
        self._coordinator: Any = None
        self._feed: Any = None
        self._queues: Any = None
        self.note = note or "classic signature, sync fetch_fun on threads, BlobsQueue per blob"

    def _capture(self, data_coordinator: Any, global_coordinator: Any) -> None:
        self._feed = data_coordinator.feed

    def start(self) -> None:
        from asyncfeed.data_workers import init_data_input_workers

        self._coordinator = init_data_input_workers(
            None,
            self._blobs,
            self._fetch_fun,
            self._batch_size,
            num_worker_threads=self._threads,
            max_buffered_batches=self._max_buffered,
            init_fun=self._capture,
        )
        self._coordinator.start()
        self._queues = self._coordinator.get_queues()

    def next_batch(self, timeout: float | None) -> Sequence[Any] | None:
        out = []
        for name in self._blobs:
            record = self._queues[name].dequeue(timeout=timeout)
            if record is None:
                return None
            out.append(record[0])
        return out

    def held_rows(self, ended: bool) -> int | None:
        if self._feed is None:
            return None
        return int(self._feed.stats().rows_in_flight)

    def stop(self) -> None:
        if self._coordinator is not None:
            self._coordinator.stop()
