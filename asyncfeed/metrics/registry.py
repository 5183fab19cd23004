"""``FeedSet``: the feeds an exporter reads, held weakly, their counters kept past their end.

Exporters read a :class:`FeedSet` when they are scraped, never in between: each
:meth:`FeedSet.families` call takes one ``stats()`` snapshot of every live feed (nothing is
added to a feed's hot path). Feeds are held weakly: registering one never keeps it alive.

Counters stay monotonic across feeds: when a registered feed stops (or is collected, or
unregistered), its last counters and histograms are kept for its source and added to those
of the source's later feeds, so one ``source`` label makes one series across epochs (a feed
per epoch) as Prometheus expects. Its gauges go with it.

Feeds of one source are combined (see ``families.merge``): their own counters add up;
seed-style feeds of a source share one row ledger and chunk queue (on one loop), so the
rows are taken once from them; keyed feeds own theirs, so theirs add up.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final, Protocol, final

from ..stats import FeedStats
from .families import METRICS, Family, combine, feed_families, merge

if TYPE_CHECKING:
    from ..options import FeedOptions

__all__ = ["FeedSet", "MeteredFeed", "as_feed_set", "default_feeds", "register", "unregister"]

log = logging.getLogger("asyncfeed.metrics")


class MeteredFeed(Protocol):
    """What a registered feed offers: ``stats()``, ``options``, ``worker_ids``."""

    @property
    def options(self) -> FeedOptions: ...

    @property
    def worker_ids(self) -> tuple[int, ...]: ...

    def stats(self) -> FeedStats: ...


@final
class _Entry:
    __slots__ = ("capacities", "concurrency", "last", "ref", "seed", "source")

    def __init__(self, ref: weakref.ref[Any], feed: MeteredFeed) -> None:
        opts = feed.options
        self.ref = ref
        self.source = opts.source
        self.seed = bool(feed.worker_ids)  # keyed feeds have no seed worker ids
        concurrency: object = opts.concurrency
        self.concurrency = concurrency if isinstance(concurrency, int) else 0
        self.capacities = {"chunks": opts.max_buffered_chunks, "batches": opts.prefetch_batches}
        self.last: FeedStats | None = None


@final
class FeedSet:
    """Feeds to export, held weakly; thread-safe.

    Args:
        feeds: feeds to add at once.
    """

    def __init__(self, feeds: Iterable[MeteredFeed] = ()) -> None:
        self._lock: Final = threading.Lock()
        self._entries: dict[int, _Entry] = {}
        self._dead: deque[_Entry] = deque()  # from weakref callbacks, handled on collect
        self._retired: dict[str, Family] = {name: Family(m) for name, m in METRICS.items()}
        for feed in feeds:
            self.add(feed)

    def add(self, feed: MeteredFeed) -> None:
        """Export ``feed`` (held weakly); adding it again does nothing."""
        key = id(feed)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.ref() is feed:
                return
            dead = self._dead

            def gone(_: weakref.ref[Any], key: int = key) -> None:
                entry = self._entries.pop(key, None)  # dict ops are atomic: no lock here
                if entry is not None:
                    dead.append(entry)

            self._entries[key] = _Entry(weakref.ref(feed, gone), feed)

    def discard(self, feed: MeteredFeed) -> None:
        """Stop exporting ``feed``; its counters so far stay in its source's totals."""
        with self._lock:
            entry = self._entries.pop(id(feed), None)
            if entry is None or entry.ref() is not feed:
                return
            entry.last = feed.stats()
            self._retire([entry], live=self._live_seed_sources())

    def __contains__(self, feed: object) -> bool:
        entry = self._entries.get(id(feed))
        return entry is not None and entry.ref() is feed

    def __len__(self) -> int:
        return sum(1 for e in list(self._entries.values()) if e.ref() is not None)

    def families(self) -> list[Family]:
        """Every metric's samples now: one snapshot of each live feed, plus retired totals."""
        with self._lock:
            dead: list[_Entry] = []
            while self._dead:
                dead.append(self._dead.popleft())
            live: list[tuple[_Entry, FeedStats]] = []
            for key, entry in list(self._entries.items()):
                feed = entry.ref()
                if feed is None:
                    continue
                try:
                    stats = feed.stats()
                except Exception:
                    log.exception("stats() of %r failed; not exported this time", feed)
                    continue
                entry.last = stats
                if stats.state == "stopped":
                    dead.append(entry)
                    del self._entries[key]
                else:
                    live.append((entry, stats))
            seed_sources = {e.source for e, _ in live if e.seed}
            self._retire(dead, live=seed_sources)
            out = self._combine(live)
        return list(out.values())

    def _live_seed_sources(self) -> set[str]:
        return {e.source for e in self._entries.values() if e.seed and e.ref() is not None}

    def _retire(self, entries: list[_Entry], *, live: set[str]) -> None:
        """Keep the counters of ended feeds; rows only once no live feed shares their ledger
        (and once for ended seed-style feeds of one source: the one that saw the most)."""
        owners: dict[str, _Entry] = {}
        for entry in entries:
            if entry.seed and entry.last is not None:
                best = owners.get(entry.source)
                if (
                    best is None
                    or best.last is None
                    or (entry.last.rows_fetched > best.last.rows_fetched)
                ):
                    owners[entry.source] = entry
        for entry in entries:
            if entry.last is None:
                continue
            shared = entry.seed and (entry.source in live or owners[entry.source] is not entry)
            for name, fam in feed_families(entry.last, entry.capacities, entry.concurrency).items():
                metric = fam.metric
                if metric.kind == "gauge" or (shared and metric.combine == "ledger"):
                    continue
                into = self._retired[name].samples
                for labels, value in fam.samples.items():
                    into[labels] = combine("sum", into.get(labels), value)

    def _combine(self, live: list[tuple[_Entry, FeedStats]]) -> dict[str, Family]:
        by_source: dict[str, list[tuple[_Entry, FeedStats]]] = {}
        for entry, stats in live:
            by_source.setdefault(entry.source, []).append((entry, stats))
        groups: list[dict[str, Family]] = []
        for members in by_source.values():
            parts = [
                feed_families(stats, entry.capacities, entry.concurrency)
                for entry, stats in members
            ]
            owner = None
            seeds = [i for i, (entry, _) in enumerate(members) if entry.seed]
            if len(seeds) > 1 and len(seeds) == len(members):  # one shared ledger
                owner = max(seeds, key=lambda i: members[i][1].rows_fetched)
            groups.append(merge(parts, ledger_owner=owner))
        groups.append(self._retired)
        return merge(groups)


#: The feed set of :func:`register`, read by exporters given no other.
default_feeds: Final = FeedSet()


def register(feed: MeteredFeed, feeds: FeedSet | None = None) -> None:
    """Export ``feed`` (weakly) with the default exporters, or those of ``feeds``."""
    (default_feeds if feeds is None else feeds).add(feed)


def unregister(feed: MeteredFeed, feeds: FeedSet | None = None) -> None:
    """Stop exporting ``feed``; its counters so far stay in its source's totals."""
    (default_feeds if feeds is None else feeds).discard(feed)


def as_feed_set(feeds: FeedSet | Iterable[MeteredFeed] | None) -> FeedSet:
    """``feeds`` as a :class:`FeedSet`: the default one for None."""
    if feeds is None:
        return default_feeds
    if isinstance(feeds, FeedSet):
        return feeds
    return FeedSet(feeds)
