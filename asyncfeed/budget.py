"""The feed's error policy (``max_errors``): stop on a failure, or skip it within a budget."""

from __future__ import annotations

import logging
import time
from collections import Counter
from concurrent.futures import BrokenExecutor
from typing import Any, Final, final

from .chunks import describe_origin
from .errors import AsyncFeedError, FetchError
from .stats import FeedCounters

__all__ = ["ErrorBudget"]

log = logging.getLogger("asyncfeed.fetch")


@final
class ErrorBudget:
    """The feed's error policy: raise to stop the feed, return to skip the failure.

    ``max_errors=None`` stops on the first failure: a :class:`ChunkError` (or any other
    asyncfeed error) as it is, anything else as :class:`FetchError` chained to it. With
    ``max_errors=N`` failures are skipped until more than N occurred. A broken executor
    (``BrokenExecutor``: a dead worker process, or one shut down under the feed) never
    recovers, so it stops the feed whatever the budget.

    Skipped failures are logged without flooding the log: the first :data:`LOG_FIRST` one
    line each, then one summary line per :data:`LOG_INTERVAL` seconds with the count by
    kind (exception type) since the last line.
    """

    __slots__ = ("_last", "_logged", "_unlogged", "counters", "max_errors")

    LOG_FIRST: Final = 5
    LOG_INTERVAL: Final = 10.0

    def __init__(self, max_errors: int | None, counters: FeedCounters) -> None:
        self.max_errors: Final = max_errors
        self.counters: Final = counters
        self._logged = 0
        self._unlogged: Counter[str] = Counter()
        self._last = 0.0

    def __call__(self, exc: Exception, worker_id: int | None, key: Any) -> None:
        origin = describe_origin(worker_id, key)
        budget = self.max_errors
        if budget is None or isinstance(exc, BrokenExecutor):
            if isinstance(exc, AsyncFeedError):
                raise exc
            raise FetchError(
                f"fetch failed in {origin}: {type(exc).__name__}: {exc}",
                worker_id=worker_id,
                key=key,
            ) from exc
        errors = self.counters.fetch_errors
        if errors > budget:
            raise FetchError(
                f"{errors} failed fetches exceed max_errors={budget}; last in {origin}: "
                f"{type(exc).__name__}: {exc}",
                worker_id=worker_id,
                key=key,
            ) from exc
        self._log(exc, origin, errors, budget)

    def _log(self, exc: Exception, origin: str, errors: int, budget: int) -> None:
        kind = type(exc).__name__
        if self._logged < self.LOG_FIRST:
            self._logged += 1
            more = " (further ones are summarised)" if self._logged == self.LOG_FIRST else ""
            log.warning(
                "skipping failed fetch in %s (%d of max_errors=%d): %s: %s%s",
                origin, errors, budget, kind, exc, more,
            )  # fmt: skip
            self._last = time.monotonic()
            return
        self._unlogged[kind] += 1
        now = time.monotonic()
        if now - self._last >= self.LOG_INTERVAL:
            self.flush_log(now)

    def flush_log(self, now: float | None = None) -> None:
        """Log the summary of skipped failures not logged yet (also when the feed ends)."""
        if not self._unlogged:
            return
        counts = ", ".join(f"{k} {n}" for k, n in self._unlogged.most_common())
        log.warning(
            "skipped %d more failed fetches (%s); %d of max_errors=%s so far",
            sum(self._unlogged.values()), counts, self.counters.fetch_errors, self.max_errors,
        )  # fmt: skip
        self._unlogged.clear()
        self._last = time.monotonic() if now is None else now
