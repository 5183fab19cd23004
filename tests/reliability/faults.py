"""Reusable fault injection and invariant checks for the reliability tests.

- :class:`FaultyFetcher`: a seeded, thread-safe fetcher (async and sync flavours) that
  injects raises, ``None``, bad chunks, hangs and slow calls at random or at chosen calls,
  and counts what it injected, so a test can compare with the feed's stats.
- :class:`Tracker`: every delivered row identifiable and seen exactly once, in batches of
  exactly ``batch_size`` rows except a single final partial batch.
- :func:`assert_clean_end`: the end-of-run invariants (state, accounting, causes).
- :func:`timed`: bounded stop (``STOP_BOUND_S``).
- :func:`open_fds`: the process's open file descriptors, for the leak fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

import asyncfeed as af
from tests.conftest import CounterSource as CounterSource
from tests.conftest import check_accounting, check_batch

STOP_BOUND_S = 2.0

FAULTS = ("raise", "none", "bad", "hang", "slow")


class Injected(RuntimeError):
    """The exception a faulty fetcher raises."""


def bad_chunks(source: CounterSource) -> list[Callable[[], Any]]:
    """Malformed chunks for the blobs ``("ids", "x")`` that can never fix a schema."""
    ids = np.arange(3, dtype=np.int64)
    x = np.zeros((3, 4), np.float32)
    return [
        lambda: [ids],  # one array short
        lambda: [ids, x, x],  # one too many
        lambda: [ids.tolist(), x],  # a list, not an ndarray
        lambda: [[ids.tolist()], x],  # nested list
        lambda: [ids, x[:2]],  # first dimensions differ
        lambda: [np.int64(7), x],  # numpy scalar
        lambda: [np.array(7), x],  # 0-d array
        lambda: [ids.astype(object), x],  # object dtype
        lambda: {"ids": ids, "y": x},  # mapping with a wrong key
        lambda: "ids,x",  # not a chunk at all
        lambda: 42,
    ]


class FaultyFetcher:
    """A counter-based fetcher that injects faults; use :attr:`async_fetch` or :attr:`sync_fetch`.

    Args:
        source: where good rows come from (only good chunks draw ids from it).
        seed: seeds the random fault choice.
        rates: probability per call of each fault in :data:`FAULTS`.
        at: call number → fault, overriding ``rates``.
        rows: inclusive range of rows per good chunk.
        slow_s: how long a ``slow`` call takes (asyncio.sleep / time.sleep: the system
            under test, not synchronisation).

    A ``hang`` never returns in the async flavour (it must be cancelled); in the sync
    flavour it blocks until :meth:`release`, then returns a late result: a good chunk, or a
    bad one when :attr:`late` is ``"bad"``.
    """

    def __init__(
        self,
        source: CounterSource,
        *,
        seed: int = 0,
        rates: Mapping[str, float] | None = None,
        at: Mapping[int, str] | None = None,
        rows: tuple[int, int] = (1, 9),
        slow_s: float = 0.05,
    ) -> None:
        self.source = source
        self.rates = dict(rates or {})
        assert set(self.rates) <= set(FAULTS), self.rates
        self.at = dict(at or {})
        self.rows = rows
        self.slow_s = slow_s
        self.late = "ok"  # what a released sync hang returns: "ok" or "bad"
        self.injected: Counter[str] = Counter()
        self.calls = 0
        self.hanging = threading.Event()  # set when the first hang begins
        self.hung_threads: set[threading.Thread] = set()  # sync calls stuck in a hang
        self._release = threading.Event()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._bad = bad_chunks(source)

    def decide(self) -> tuple[int, str, int]:
        """(call number, fault or "ok", good-chunk rows) for the next call."""
        with self._lock:
            n = self.calls
            self.calls += 1
            fault = self.at.get(n)
            if fault is None:
                roll = self._rng.random()
                fault = "ok"
                for name, rate in self.rates.items():
                    if roll < rate:
                        fault = name
                        break
                    roll -= rate
            self.injected[fault] += 1
            return n, fault, self._rng.randint(*self.rows)

    def _result(self, n: int, fault: str, rows: int) -> Any:
        if fault == "raise":
            raise Injected(f"injected failure at call {n}")
        if fault == "none":
            return None
        if fault == "bad":
            return self._bad[n % len(self._bad)]()
        return self.source.chunk(rows)

    async def async_fetch(self, worker_id: int, batch_size: int) -> Any:
        n, fault, rows = self.decide()
        await asyncio.sleep(0)
        if fault == "hang":
            self.hanging.set()
            await asyncio.get_running_loop().create_future()  # never resolved
        if fault == "slow":
            await asyncio.sleep(self.slow_s)
        return self._result(n, fault, rows)

    def sync_fetch(self, worker_id: int, batch_size: int) -> Any:
        n, fault, rows = self.decide()
        if fault == "hang":
            with self._lock:
                self.hung_threads.add(threading.current_thread())
            self.hanging.set()
            self._release.wait(30)
            fault = self.late
        if fault == "slow":
            time.sleep(self.slow_s)
        return self._result(n, fault, rows)

    def fetch(self, flavour: str) -> Callable[[int, int], Any]:
        return self.async_fetch if flavour == "async" else self.sync_fetch

    def release(self) -> None:
        """Let every hung sync call return its (late) chunk."""
        self._release.set()


class Tracker:
    """Checks every delivered batch: exact size, self-consistent rows, each id once."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.seen: set[int] = set()
        self.batches = 0
        self.partial = False

    @property
    def rows(self) -> int:
        return len(self.seen)

    def add(self, batch: af.Batch) -> None:
        assert not self.partial, "a partial batch must be the last one"
        ids = check_batch(batch, self.batch_size)
        if batch.rows != self.batch_size:
            self.partial = True
        fresh = self.seen.isdisjoint(ids) and len(set(ids)) == len(ids)
        assert fresh, f"row delivered twice in batch {batch.index}"
        self.seen.update(ids)
        self.batches += 1


def assert_clean_end(
    feed: af.Feed,
    tracker: Tracker | None = None,
    *,
    causes: set[str] = frozenset({"stop"}),  # type: ignore[assignment]
    issued: int | None = None,
) -> af.FeedStats:
    """The invariants at the end of every run; returns the final stats."""
    stats = feed.stats()
    assert feed.state is af.FeedState.STOPPED
    check_accounting(stats)
    assert stats.rows_in_flight == 0
    assert stats.rows_fetched == stats.rows_delivered + stats.rows_dropped
    assert set(stats.dropped_by_cause) <= causes, stats.dropped_by_cause
    if tracker is not None:
        assert stats.rows_delivered == tracker.rows
        assert stats.batches_delivered == tracker.batches
    if issued is not None:
        assert stats.rows_fetched == issued
    return stats


@contextlib.contextmanager
def timed(bound: float = STOP_BOUND_S) -> Iterator[None]:
    """Assert the block (a stop, a close) finishes within ``bound`` seconds."""
    start = time.monotonic()
    yield
    elapsed = time.monotonic() - start
    assert elapsed <= bound, f"took {elapsed:.2f} s, bound {bound} s"


def join_threads(
    prefix: str,
    timeout: float = 5.0,
    exclude: set[threading.Thread] = frozenset(),  # type: ignore[assignment]
) -> None:
    """Wait for the threads whose name starts with ``prefix`` (abandoned fetch calls)."""
    for thread in threading.enumerate():
        if thread.name.startswith(prefix) and thread not in exclude:
            thread.join(timeout)
            assert not thread.is_alive(), f"{thread.name} still running"


def open_fds() -> dict[int, str]:
    """Open file descriptors of this process and what they point at."""
    fds: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own handle, closed by now
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return fds


async def consume(feed: af.Feed, tracker: Tracker, rows: int) -> None:
    """Take batches until ``rows`` rows arrived or the feed ends."""
    async for batch in feed:
        tracker.add(batch)
        if tracker.rows >= rows:
            return


def consume_sync(feed: af.Feed, tracker: Tracker, rows: int, timeout: float = 10.0) -> None:
    """Like :func:`consume`, with ``get()`` from a thread other than the feed's loop."""
    while tracker.rows < rows:
        try:
            tracker.add(feed.get(timeout=timeout))
        except af.FeedExhausted:
            return
