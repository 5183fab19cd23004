"""The sink stage: a feed's batches handed to a blocking ``Sink.put`` on a dedicated thread.

The thread is started by ``bridge.py``; everything that crosses between it and the feed's
loop is here: a ``SimpleQueue`` of batches towards the thread, a deque of outcomes back, and
a future resolved with ``loop.call_soon_threadsafe`` when the loop waits. Nothing polls.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Final, final

from .attribution import Blocked
from .batch import Batch, Provenance
from .bridge import start_thread, to_thread
from .errors import AsyncFeedError, ConfigError, SinkError
from .queues import Channel, ChannelClosed
from .sinks import Sink, WatchedSink
from .stats import DropCause, Ledger, Stage

__all__ = ["HANDOFF_DEPTH", "Receipts", "SinkBridge", "check_sink"]

log = logging.getLogger("asyncfeed.handoff")


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def check_sink(sink: object) -> Sink:
    """Return ``sink`` if it has ``put``, ``close`` and ``closed``; else raise ConfigError."""
    if not isinstance(sink, Sink):
        raise ConfigError(f"sink must have put(batch) -> bool, close() and closed; got {sink!r}")
    return sink


HANDOFF_DEPTH: Final = 4


@final
class Receipts:
    """When a keyed feed's batches count as received, through a sink.

    With a sink that reports its reads (``WatchedSink``), a batch is received when its
    reader takes it: the batch's provenance waits in order, from just before ``put`` (the
    reader may take it before ``put`` returns) until :meth:`taken`. With any other sink it
    is received when ``put`` accepts it.
    """

    __slots__ = ("_on_received", "_waiting", "watched")

    def __init__(self, on_received: Callable[[Provenance, int], None], *, watched: bool) -> None:
        self._on_received: Final = on_received
        self._waiting: deque[tuple[Provenance, int]] = deque()
        self.watched: Final = watched

    def handing(self, batch: Batch) -> None:
        """The bridge thread, just before ``put``."""
        if self.watched and batch.provenance is not None:
            self._waiting.append((batch.provenance, batch.rows))

    def handed(self, batch: Batch, accepted: bool) -> None:
        """The bridge thread, once ``put`` returned (``accepted``: it took the batch)."""
        if batch.provenance is None:
            return
        if not self.watched:
            if accepted:
                self._on_received(batch.provenance, batch.rows)
        elif not accepted:
            self._waiting.pop()  # the newest: only this thread appends

    def taken(self) -> None:
        """The sink's reader took the oldest batch it holds."""
        try:
            provenance, rows = self._waiting.popleft()
        except IndexError:  # a batch put by someone other than the feed
            return
        self._on_received(provenance, rows)


@final
class SinkBridge:
    """Hands a feed's batches to a blocking sink's ``put`` on one dedicated daemon thread.

    The loop never blocks: :meth:`run` queues each batch for the thread (a ``SimpleQueue``)
    and, while ``depth`` batches are handed and not yet settled, awaits a future. The thread
    resolves it through ``loop.call_soon_threadsafe`` once at most ``depth // 2 - 1`` handed
    batches are left (or on a failure), so a fast sink costs one wake-up per few batches, not
    one per batch. Rows are in ``Stage.HANDING`` from the moment they leave the batch channel
    until ``put`` returns: True delivers them; False drops them (cause ``sink_closed``, or
    the feed's stop cause once :meth:`shutdown` began); an exception drops them as ``error``
    and stops the feed; after a put that did not succeed, later batches are dropped, not
    put. At most ``depth`` batches wait here, besides the sink's own capacity.
    """

    __slots__ = (
        "_busy",
        "_depth",
        "_drop_cause",
        "_ledger",
        "_loop",
        "_low",
        "_name",
        "_on_delivered",
        "_outcome",
        "_settled",
        "_shut",
        "_thread",
        "_waiter",
        "_work",
        "blocked",
        "receipts",
        "sink",
    )

    def __init__(
        self,
        sink: Sink,
        *,
        name: str,
        on_delivered: Callable[[int], None],
        on_received: Callable[[Provenance, int], None] | None = None,
        depth: int = HANDOFF_DEPTH,
    ) -> None:
        self.sink: Final = sink
        self._name: Final = name
        self._on_delivered: Final = on_delivered
        #: When a keyed feed's batches count as received (None: a seed-style feed).
        self.receipts: Final = (
            None
            if on_received is None
            else Receipts(on_received, watched=isinstance(sink, WatchedSink))
        )
        self._depth: Final = depth
        self._low: Final = max(0, depth // 2 - 1)  # wake a waiting loop when this few are left
        self._work: Final[queue.SimpleQueue[Batch | None]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ledger = Ledger()
        self._busy = 0  # handed to the thread, not yet collected as settled
        self._settled: deque[tuple[bool | BaseException, int]] = deque()  # thread → loop
        self._waiter: asyncio.Future[None] | None = None  # set while the loop waits for room
        self._outcome: bool | BaseException = True  # first put that did not succeed
        self._drop_cause = DropCause.SINK_CLOSED
        self._shut = False
        self.blocked: Final = Blocked()  # the sink's put() holding batches back

    @property
    def busy(self) -> int:
        """Batches handed to the thread and not yet settled (being put, or waiting to be).

        Read from any thread: those the thread settled count as done at once, though the
        loop collects them only when it next hands a batch.
        """
        return max(0, self._busy - len(self._settled))

    async def run(
        self, batches: Channel[Batch], ledger: Ledger, on_closed: Callable[[], None]
    ) -> None:
        """Stage coroutine: hand batches to the sink until ``batches`` is closed and drained.

        At the end of a finite feed, waits until every batch was accepted, then closes the
        sink so that its reader sees the end. When the sink reports itself closed, calls
        ``on_closed()`` and returns.

        Raises:
            SinkError: ``put`` raised (chained to it); an asyncfeed error passes as it is.
        """
        if self._shut:
            return
        self._loop = asyncio.get_running_loop()
        self._ledger = ledger
        self._thread = start_thread(self._serve, self._name)
        while await self._room(self._depth):
            try:
                batch = await batches.get()  # returns at once when a batch is ready
            except ChannelClosed:
                if not await self._room(1):  # wait until every handed batch settled
                    break
                self.sink.close()
                return
            ledger.move(batch.rows, Stage.BATCHED, Stage.HANDING)
            self._busy += 1
            self._work.put(batch)
        on_closed()

    async def _room(self, limit: int) -> bool:
        """Wait until fewer than ``limit`` batches are unsettled; False once the sink closed."""
        while True:
            self._collect()
            outcome = self._outcome
            if isinstance(outcome, BaseException):
                if isinstance(outcome, AsyncFeedError):
                    raise outcome
                raise SinkError(
                    f"sink {self.sink!r} failed in put(): {type(outcome).__name__}: {outcome}"
                ) from outcome
            if not outcome:
                return False
            if self._busy < limit:
                return True
            assert self._loop is not None
            waiter = self._waiter = self._loop.create_future()
            self.blocked.enter()
            try:
                if not self._settled:  # checked after publishing the waiter: no lost wake-up
                    await waiter
            finally:
                self._waiter = None
                self.blocked.leave()

    def _collect(self) -> None:
        """On the loop: count the batches the thread has settled since the last call."""
        settled = self._settled
        while settled:
            outcome, rows = settled.popleft()
            self._busy -= 1
            if outcome is True:
                self._on_delivered(rows)
            elif self._outcome is True:
                self._outcome = outcome

    def _serve(self) -> None:
        """The bridge thread: ``put`` each batch, account for its rows, tell the loop."""
        work, sink, ledger, receipts = self._work, self.sink, self._ledger, self.receipts
        halted: DropCause | None = None  # after a failed put, later batches are not put
        try:
            while (batch := work.get()) is not None:
                rows = batch.rows
                outcome: bool | BaseException = False
                if self._shut:
                    halted = self._drop_cause
                if halted is None:
                    if receipts is not None:
                        receipts.handing(batch)
                    try:
                        outcome = bool(sink.put(batch))
                    except Exception as exc:
                        outcome = exc
                    if receipts is not None:
                        receipts.handed(batch, outcome is True)
                del batch
                if outcome is True:
                    ledger.deliver(rows, Stage.HANDING)
                else:
                    if halted is None:
                        failed = isinstance(outcome, BaseException)
                        halted = DropCause.ERROR if failed else self._drop_cause
                    ledger.drop(rows, Stage.HANDING, halted)
                self._settled.append((outcome, rows))
                if outcome is not True or work.qsize() <= self._low:
                    self._wake()
        finally:
            if not self._shut:  # ended by a BaseException from put(): stop the feed too
                self._settled.append((SinkError(f"the thread feeding {sink!r} died"), 0))
                self._wake()

    def _wake(self) -> None:
        """From the thread: wake the loop if it waits for room."""
        waiter, loop = self._waiter, self._loop
        if waiter is not None and loop is not None:
            try:
                loop.call_soon_threadsafe(_resolve, waiter)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

    def shutdown(self, cause: DropCause) -> None:
        """Close the sink (waking a blocked ``put``) and let the thread end; never blocks.

        Batches handed but not yet put are dropped with ``cause``. Idempotent.
        """
        if self._shut:
            return
        self._shut = True
        self._drop_cause = cause
        try:
            self.sink.close()
        except Exception:
            log.exception("closing sink %r failed", self.sink)
        self._work.put(None)

    async def wait_ended(self, timeout: float) -> bool:
        """After :meth:`shutdown`, await the thread's end (bounded); True if it ended.

        Counts the batches it settled last, so the feed's counters are final.
        """
        ended = await to_thread(self.join, timeout, name=f"{self._name}-join")
        self._collect()
        return ended

    def join(self, timeout: float) -> bool:
        """After :meth:`shutdown`, wait up to ``timeout`` s for the thread; True if it ended."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        if thread.is_alive():
            log.warning(
                "sink %r: put() still blocked %.1f s after the sink was closed; its thread "
                "%r is left as a daemon",
                self.sink,
                timeout,
                thread.name,
            )
            return False
        return True
