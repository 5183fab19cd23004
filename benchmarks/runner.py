"""What a pipeline under test looks like to the measuring process, and the run's timeline.

A :class:`Runner` wraps one pipeline (asyncfeed, the classic design, a peer). The
:class:`Timeline` drives it through fixed phases:

1. start, wait for the first batch (time to first batch);
2. warm-up for ``warmup`` seconds;
3. the measured window of ``window`` seconds (rows, batches, CPU of the process tree);
4. drain: the source stops producing; batches are read until the pipeline ends its stream,
   stays idle for ``idle`` seconds, or ``drain_timeout`` passes; then the rows the pipeline
   still holds are asked for, so that every produced row is accounted for;
5. stop (time to stop).

Every batch of every phase goes through the :class:`~benchmarks.checks.BatchChecker`.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil

from .checks import BatchChecker
from .data import Streams

__all__ = ["AsyncRunner", "Phases", "Runner", "ServiceClock", "Timeline", "cpu_seconds"]


def cpu_seconds(proc: psutil.Process | None = None) -> float:
    """User + system CPU seconds of this process and its live descendants."""
    proc = proc or psutil.Process()
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


class ServiceClock:
    """CPU seconds of a process outside the measured tree (a server) over a span of time.

    ``pid`` None, or a process that cannot be read, measures nothing.
    """

    def __init__(self, pid: int | None) -> None:
        self._proc: psutil.Process | None = None
        if pid is not None:
            try:
                self._proc = psutil.Process(pid)
            except psutil.Error:
                self._proc = None
        self._start: float | None = None

    def _now(self) -> float | None:
        if self._proc is None:
            return None
        try:
            t = self._proc.cpu_times()
        except psutil.Error:
            return None
        return float(t.user + t.system)

    def start(self) -> None:
        self._start = self._now()

    def seconds(self) -> float | None:
        """CPU seconds since :meth:`start`; None when not measured."""
        now = self._now()
        if now is None or self._start is None:
            return None
        return now - self._start


@dataclass(frozen=True)
class Phases:
    """Durations of the timeline's phases, in seconds."""

    warmup: float = 0.5
    window: float = 2.0
    first_batch_timeout: float = 60.0
    idle: float = 0.3
    drain_timeout: float = 5.0


class Runner(abc.ABC):
    """One pipeline, driven from the measuring thread.

    Subclasses build the pipeline in :meth:`start` (imports included, so that time to first
    batch counts them only if they happen there) and deliver batches as sequences of arrays
    (or CPU tensors), one per blob.
    """

    #: Shown next to the pipeline's numbers (how it was written, what it cannot do).
    note: str = ""

    def __init__(self, streams: Streams) -> None:
        self.streams = streams

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def next_batch(self, timeout: float | None) -> Sequence[Any] | None:
        """The next batch; None once the pipeline ended its stream.

        Raises:
            TimeoutError: no batch within ``timeout`` seconds.
        """

    def drain(self) -> None:
        """Stop producing. Sources see ``streams.draining`` and end or return nothing."""
        self.streams.drain()

    def extras(self) -> dict[str, Any]:
        """Facts about the run beyond the timeline's metrics (returned with the result)."""
        return {}

    def held_rows(self, ended: bool) -> int | None:
        """Rows still inside the pipeline after the drain; None when it cannot tell.

        A pipeline that ended its stream has flushed everything.
        """
        return 0 if ended else None

    def quiescent(self) -> bool:
        """False while a fetch started before the drain may still deliver rows.

        The drain goes on past an idle spell until this is True (or its deadline passes),
        so that a slow fetch in flight is not taken for a lost row.
        """
        return True

    @abc.abstractmethod
    def stop(self) -> None: ...

    def run(self, timeline: Timeline) -> None:
        """Drive this pipeline through ``timeline`` from a plain thread."""
        tl = timeline
        tl.begin()
        self.start()
        ended = False
        while not tl.draining:
            batch = self.next_batch(tl.next_timeout())
            if batch is None:
                ended = True
                tl.ended_early()
                break
            tl.batch(batch)
        if not ended:
            self.drain()
            while (timeout := tl.drain_timeout()) > 0:
                try:
                    batch = self.next_batch(timeout)
                except TimeoutError:
                    if self.quiescent():
                        break
                    continue
                if batch is None:
                    ended = True
                    break
                tl.batch(batch, final=True)
        tl.held = self.held_rows(ended)
        tl.ended = ended
        stop_start = time.perf_counter()
        self.stop()
        tl.stop_s = time.perf_counter() - stop_start


class AsyncRunner(Runner):
    """A pipeline consumed with ``async for`` on its own event loop."""

    def next_batch(self, timeout: float | None) -> Sequence[Any] | None:  # pragma: no cover
        raise NotImplementedError("an AsyncRunner is driven by run()")

    def start(self) -> None:  # the pipeline starts inside arun()
        pass

    def stop(self) -> None:
        pass

    @abc.abstractmethod
    def batches(self) -> Any:
        """An async context manager yielding an async iterator of batches."""

    async def held_rows_async(self, ended: bool) -> int | None:
        return self.held_rows(ended)

    def run(self, timeline: Timeline) -> None:
        asyncio.run(self.arun(timeline))

    async def arun(self, timeline: Timeline) -> None:
        tl = timeline
        tl.begin()
        ended = False
        cm = self.batches()
        batches: AsyncIterator[Sequence[Any]] = await cm.__aenter__()
        try:
            while not tl.draining:
                try:
                    async with asyncio.timeout(tl.next_timeout()):
                        batch = await anext(batches)
                except StopAsyncIteration:
                    ended = True
                    tl.ended_early()
                    break
                tl.batch(batch)
            if not ended:
                self.drain()
                while (timeout := tl.drain_timeout()) > 0:
                    try:
                        async with asyncio.timeout(timeout):
                            batch = await anext(batches)
                    except TimeoutError:
                        if self.quiescent():
                            break
                        continue
                    except StopAsyncIteration:
                        ended = True
                        break
                    tl.batch(batch, final=True)
            tl.held = await self.held_rows_async(ended)
            tl.ended = ended
        finally:
            stop_start = time.perf_counter()
            await cm.__aexit__(None, None, None)
            tl.stop_s = time.perf_counter() - stop_start


@dataclass
class Timeline:
    """Phase clock and counters of one run; fed every batch by the runner."""

    checker: BatchChecker
    phases: Phases
    t0: float = 0.0
    first_batch_s: float | None = None
    window_start: float | None = None
    window_end: float | None = None
    rows_at_window: int = 0
    batches_at_window: int = 0
    window_rows: int = 0
    window_batches: int = 0
    window_s: float = 0.0
    window_cpu_s: float = 0.0
    cpu_at_window: float = 0.0
    driver_cpu_s: float = 0.0  # the measuring process alone (the feed's, for asyncfeed)
    driver_at_window: float = 0.0
    draining: bool = False
    drain_deadline: float = 0.0
    last_batch_at: float = 0.0
    held: int | None = None
    service: ServiceClock | None = None
    service_cpu_s: float | None = None
    ended: bool = False
    stop_s: float | None = None
    early_end: bool = False
    notes: list[str] = field(default_factory=list)

    def begin(self) -> None:
        self.t0 = time.perf_counter()

    def next_timeout(self) -> float:
        """How long the runner may wait for the next batch in the current phase."""
        if self.first_batch_s is None:
            return self.phases.first_batch_timeout
        return max(self.phases.idle * 10, 5.0)

    def drain_timeout(self) -> float:
        """How long the runner may wait for the next batch while draining (<= 0: stop)."""
        now = time.perf_counter()
        return min(self.phases.idle, self.drain_deadline - now)

    def batch(self, arrays: Sequence[Any], *, final: bool = False) -> None:
        rows = self.checker.check(arrays, final=final)
        now = time.perf_counter()
        self.last_batch_at = now
        if self.first_batch_s is None:
            self.first_batch_s = now - self.t0
            self.window_start = now + self.phases.warmup
            return
        if final or self.draining:
            return
        del rows
        if self.window_end is None:
            if self.window_start is not None and now >= self.window_start:
                self._open_window(now)
            return
        if now >= self.window_end:
            self._close_window(now)

    def _open_window(self, now: float) -> None:
        self.window_start = now
        self.window_end = now + self.phases.window
        self.rows_at_window = self.checker.rows
        self.batches_at_window = self.checker.batches
        self.cpu_at_window = cpu_seconds()
        self.driver_at_window = time.process_time()
        if self.service is not None:
            self.service.start()

    def _close_window(self, now: float) -> None:
        assert self.window_start is not None
        self.window_s = now - self.window_start
        self.window_rows = self.checker.rows - self.rows_at_window
        self.window_batches = self.checker.batches - self.batches_at_window
        self.window_cpu_s = cpu_seconds() - self.cpu_at_window
        self.driver_cpu_s = time.process_time() - self.driver_at_window
        if self.service is not None:
            self.service_cpu_s = self.service.seconds()
        self.draining = True
        self.drain_deadline = now + self.phases.drain_timeout

    def ended_early(self) -> None:
        """The pipeline ended its stream before the window closed."""
        self.early_end = True
        now = time.perf_counter()
        if self.window_end is not None:
            self._close_window(now)
        self.draining = True
        self.notes.append("the pipeline ended its stream before the window closed")

    def metrics(self) -> dict[str, Any]:
        """The run's measurements (rates over the window)."""
        secs = self.window_s
        rows = self.window_rows
        return {
            "rows_per_s": rows / secs if secs > 0 else 0.0,
            "batches_per_s": self.window_batches / secs if secs > 0 else 0.0,
            "cpu_us_per_row": 1e6 * self.window_cpu_s / rows if rows else None,
            "cpu_util": self.window_cpu_s / secs if secs > 0 else None,
            "driver_cpu_us_per_row": 1e6 * self.driver_cpu_s / rows if rows else None,
            "service_cpu_us_per_row": (
                1e6 * self.service_cpu_s / rows if rows and self.service_cpu_s is not None else None
            ),
            "window_s": secs,
            "window_rows": rows,
            "first_batch_s": self.first_batch_s,
            "stop_s": self.stop_s,
            "ended": self.ended,
            "early_end": self.early_end,
            "notes": list(self.notes),
        }
