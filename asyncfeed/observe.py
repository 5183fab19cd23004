"""A running feed seen from outside: its wait probe, and its statistics snapshots.

Both read a :class:`~asyncfeed.run.Run`'s parts as they are; nothing here changes them or
runs per row (see ``attribution.py`` for the clocks and the rule).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from .attribution import Probe
from .stats import FeedCounters, FeedStats, Stage

if TYPE_CHECKING:
    from .run import Run

__all__ = ["probe_for", "snapshot", "unstarted"]


def probe_for(run: Run) -> Probe:
    """The wait probe of ``run``."""
    ledger, spec = run.sq.ledger, run.spec
    bridge = run.bridge

    def ready_rows() -> int:
        return ledger.rows(Stage.QUEUED) + ledger.rows(Stage.REBATCHING)

    def handing() -> int:
        return len(run.batches) + (0 if bridge is None else bridge.busy)

    def keys_starved() -> bool:
        keys = run.key_channel
        return keys is not None and not keys and keys.waiting_getters > 0 and not keys.closed

    return Probe(
        batch_size=run.batch_size,
        counters=run.counters,
        inflight=run.inflight,
        ready_rows=ready_rows,
        limit=lambda: run.limit,
        remote=not run.backend.opens_fetcher,
        keys_starved=None if spec.keys is None else keys_starved,
        load=run.load,
        handing=handing,
    )


def snapshot(run: Run, state: str) -> FeedStats:
    """A consistent snapshot of ``run``'s statistics; callable from any thread."""
    counters = run.counters
    base = counters.snapshot(
        source=run.source,
        state=state,
        ledger=run.sq.ledger,
        chunk_queue_depth=len(run.sq.channel),
        batch_queue_depth=len(run.batches),
        hosts=run.backend.host_stats(),
    )
    total, by_cause, waits, share = run.waits.snapshot()
    queues: dict[str, tuple[int, int]] = {
        "chunks": (len(run.sq.channel), run.sq.channel.maxsize),
        "batches": (len(run.batches), run.batches.maxsize),
    }
    keys = run.key_channel
    if keys is not None:
        queues["keys"] = (len(keys), keys.maxsize)
    backpressure = {
        "chunk_queue": run.fetcher.blocked.seconds,
        "batch_queue": run.stage.blocked.seconds,
    }
    bridge = run.bridge
    if bridge is not None:
        backpressure["sink"] = bridge.blocked.seconds
        sink: Any = bridge.sink
        try:
            queues["sink"] = (len(sink), int(getattr(sink, "capacity", 0)))
        except TypeError:  # a sink with no len()
            pass
    return dataclasses.replace(
        base,
        consumer_wait_s=total,
        consumer_wait_by_cause=by_cause,
        consumer_waits=waits,
        starvation=share,
        backpressure_s_by_stage=backpressure,
        time_to_first_batch_s=counters.time_to_first_batch(),
        queues=queues,
        inflight=run.inflight(),
        concurrency_limit=run.limit,
        concurrency_reason=run.limit_reason,
        epoch=None if run.tracker is None else run.tracker.epoch,
        epoch_position=0 if run.tracker is None else run.tracker.position(),
    )


def unstarted(source: str, state: str, epoch: int | None = None) -> FeedStats:
    """The statistics of a feed that never ran: all zero (``epoch``: a keyed feed's)."""
    stats = FeedCounters().snapshot(
        source=source,
        state=state,
        ledger=None,
        chunk_queue_depth=0,
        batch_queue_depth=0,
        hosts={},
    )
    return stats if epoch is None else dataclasses.replace(stats, epoch=epoch)
