"""A progress bar for the user's own loop over a feed: ``for batch in feed.progress(): ...``.

It wraps the feed's iteration (sync or async), so it times the consumer's own waits, and
shows rows/s, the rows skipped under ``max_errors``, the retried requests of the fetcher's
hosts, and the share of time the loop waited for batches with its main cause.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, Final, TextIO, final

if TYPE_CHECKING:
    from .batch import Batch
    from .feed import Feed
    from .stats import FeedStats

__all__ = ["Progress"]


@final
class Progress:
    """Iterates a feed's batches (``for`` or ``async for``) while a tqdm bar shows how it goes.

    The bar closes when the iteration ends, fails or is left early.
    """

    __slots__ = ("_bar", "_feed", "_shown", "_started", "_waited", "interval")

    def __init__(
        self,
        feed: Feed,
        *,
        file: TextIO | None = None,
        interval: float = 0.5,
        desc: str | None = None,
    ) -> None:
        from tqdm import tqdm

        class Bar(tqdm):  # type: ignore[type-arg]
            monitor_interval = 0  # no monitor thread: threads are bridge.py's alone

        self._feed: Final = feed
        self.interval: Final = interval
        self._bar: Any = Bar(
            unit=" rows",
            unit_scale=True,
            mininterval=interval,
            file=file,
            desc=desc or feed.source,
            leave=True,
        )
        self._started = time.perf_counter()
        self._waited = 0.0
        self._shown = 0.0

    @property
    def waiting_share(self) -> float:
        """The share of the loop's time spent waiting for batches so far (0 to 1)."""
        elapsed = time.perf_counter() - self._started
        return min(1.0, self._waited / elapsed) if elapsed > 0 else 0.0

    def __iter__(self) -> Iterator[Batch]:
        iterator = iter(self._feed)
        try:
            while True:
                start = time.perf_counter()
                try:
                    batch = next(iterator)
                except StopIteration:
                    return
                self._waited += time.perf_counter() - start
                self._update(batch.rows)
                yield batch
        finally:
            self._bar.close()

    async def __aiter__(self) -> AsyncIterator[Batch]:
        try:
            while True:
                start = time.perf_counter()
                try:
                    batch = await anext(self._feed)
                except StopAsyncIteration:
                    return
                self._waited += time.perf_counter() - start
                self._update(batch.rows)
                yield batch
        finally:
            self._bar.close()

    def _update(self, rows: int) -> None:
        bar = self._bar
        bar.update(rows)
        now = time.monotonic()
        if now - self._shown < self.interval:
            return
        self._shown = now
        bar.set_postfix_str(self.postfix(self._feed.stats()), refresh=False)

    def postfix(self, stats: FeedStats) -> str:
        """``skipped=…, retried=…, waiting=…% (cause)``, from a stats snapshot."""
        retried = sum(int(h.get("retries", 0)) for h in stats.hosts.values())
        causes = stats.consumer_wait_by_cause
        cause = f" {max(causes, key=causes.__getitem__)}" if causes else ""
        return (
            f"skipped={stats.fetch_errors}, retried={retried}, "
            f"waiting={self.waiting_share:.0%}{cause}"
        )
