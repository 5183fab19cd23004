"""The feed-level controller of ``concurrency=Adaptive(...)``: measure, decide, set the gate.

Every second, or sooner after ``gate.COMPLETIONS`` completed calls (never more often than
every 0.1 s), the controller takes what the feed measured since it last looked — rows the
consumer received and the time it waited (less the waits for keys or for the sink, which no
number of fetches shortens: :data:`NOT_FETCH_BOUND`), calls completed with their time and
rows, time the feed was blocked on full queues or the sink, and from the fetcher's
``load()`` the time items queued for a decode thread and the requests a host is holding
back — and hands it to the pure :class:`~asyncfeed.adaptive.demand.DemandEstimator`, whose
decision becomes the gate's limit, ``stats().concurrency_limit`` and
``concurrency_reason``.

The hosts' own limits (429s, ``Retry-After``, latency, request rate) are the fetcher's
business (``fetchers/throttle.py``); a feed held back by them reports ``throttled`` and
comes down towards what the hosts serve.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, final

from .adaptive.demand import DemandEstimator, DemandSample
from .adaptive.options import Adaptive
from .gate import Gate

if TYPE_CHECKING:
    from .run import Run

__all__ = ["Controller"]

log = logging.getLogger("asyncfeed.adapt")

INTERVAL: Final = 1.0  # seconds between decisions at most
MIN_INTERVAL: Final = 0.1  # and at least
#: Wait causes (``stats.WAIT_CAUSES``) that more fetches in flight cannot shorten.
NOT_FETCH_BOUND: Final = ("source", "sink")


@final
class Controller:
    """Runs the control loop of one feed (:meth:`run` is the task's coroutine)."""

    __slots__ = ("_estimator", "_gate", "_last", "_load", "_run", "history")

    def __init__(self, run: Run, gate: Gate, adaptive: Adaptive) -> None:
        self._run: Final = run
        self._gate: Final = gate
        self._estimator: Final = DemandEstimator(adaptive)
        self._load: Final = run.load
        self._last = self._figures(self._read_load())
        self.history: list[tuple[float, int, str]] = []  # (monotonic time, limit, reason)

    def _read_load(self) -> Mapping[str, float] | None:
        """The fetcher's ``load()`` figures, read once a step (None: it has none; empty if
        it failed)."""
        if self._load is None:
            return None
        try:
            figures: Mapping[str, float] = self._load()
        except Exception:  # a figure for the controller is not worth stopping the feed
            return {}
        return figures

    def _figures(self, load: Mapping[str, float] | None) -> tuple[float, ...]:
        """The running totals the samples are differences of."""
        run = self._run
        counters, ledger = run.counters, run.sq.ledger
        fetched, delivered, _, _ = ledger.snapshot()
        backpressure = run.fetcher.blocked.seconds + run.stage.blocked.seconds
        if run.bridge is not None:
            backpressure += run.bridge.blocked.seconds
        decode_wait = 0.0 if load is None else float(load.get("decode_wait_s", 0.0))
        return (
            time.monotonic(),
            float(delivered),
            self._fetch_wait(),
            float(counters.fetch_calls),
            counters.fetch_time,
            float(fetched),
            backpressure,
            decode_wait,
        )

    def _fetch_wait(self) -> float:
        """Seconds the consumer waited in all, less the waits more fetches cannot shorten."""
        total, by_cause, _, _ = self._run.waits.snapshot()
        return total - sum(by_cause.get(cause, 0.0) for cause in NOT_FETCH_BOUND)

    def _held(self, load: Mapping[str, float] | None) -> int:
        """Requests a host holds back now (from worker processes too, through host stats)."""
        if load is not None:
            return int(load.get("throttled", 0))
        hosts = self._run.backend.host_stats()
        return sum(int(h.get("held", 0)) for h in hosts.values())

    def step(self) -> None:
        """One decision from what changed since the last one."""
        load = self._read_load()
        now = self._figures(load)
        d = [b - a for a, b in zip(self._last, now, strict=True)]
        self._last = now
        sample = DemandSample(
            interval_s=d[0],
            rows=int(d[1]),
            consumer_wait_s=d[2],
            fetches=int(d[3]),
            fetch_time_s=d[4],
            fetch_rows=int(d[5]),
            backpressure_s=d[6],
            decode_wait_s=d[7],
            held=self._held(load),
        )
        decision = self._estimator.update(sample)
        run = self._run
        if decision.limit != run.limit:
            log.debug(
                "%s: concurrency %d -> %d (%s, demand %.1f)",
                run.source, run.limit, decision.limit, decision.reason, decision.demand,
            )  # fmt: skip
        run.limit, run.limit_reason = decision.limit, decision.reason
        self._gate.set_limit(decision.limit)
        self.history.append((now[0], decision.limit, decision.reason))
        del self.history[:-600]  # the last ten minutes or so

    async def run(self) -> None:
        """Decide every second, or after enough completions; forever (cancelled at stop)."""
        gate = self._gate
        while True:
            start = time.monotonic()
            try:
                async with asyncio.timeout(INTERVAL):
                    await gate.due.wait()
            except TimeoutError:
                pass
            early = MIN_INTERVAL - (time.monotonic() - start)
            if early > 0:  # woken by completions: not more often than MIN_INTERVAL
                await asyncio.sleep(early)
            gate.due.clear()
            gate.completions = 0
            self.step()
