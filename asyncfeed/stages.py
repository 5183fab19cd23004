"""Stage coroutines that the feed runs as tasks: rebatching, key dispatch, stats logging.

Like SPDL's stage coroutines, each is handed its input and output channels; none creates a
task or a thread.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, Final, final

from .attribution import Blocked
from .batch import Batch, Provenance
from .queues import Channel, ChannelClosed, Chunk
from .rebatch import Rebatcher
from .stats import DropCause, ExternalLogger, FeedStats, Ledger, Stage, report

__all__ = ["RebatchStage", "log_every"]


@final
class RebatchStage:
    """Chunk queue → rebatcher → batch channel, keeping every held row accounted for.

    Rows stay in ``Stage.REBATCHING`` while the rebatcher carries them or a finished batch
    waits in the outbox for room in the batch channel; :meth:`discard` drops them at stop.
    A chunk of more than ``batch_size`` rows is pushed a batch at a time, each batch emitted
    before the next is cut, so a huge chunk neither blocks the loop nor piles up batches.
    """

    __slots__ = (
        "_outbox",
        "_unpushed",
        "batches",
        "blocked",
        "chunks",
        "drop_last",
        "ledger",
        "on_dropped",
        "on_starved",
        "rebatcher",
    )

    def __init__(
        self,
        chunks: Channel[Chunk],
        batches: Channel[Batch],
        rebatcher: Rebatcher,
        ledger: Ledger,
        *,
        drop_last: bool,
        on_starved: Callable[[], None],
        on_dropped: Callable[[Provenance, int], None] | None = None,
    ) -> None:
        self.chunks: Final = chunks
        self.batches: Final = batches
        self.rebatcher: Final = rebatcher
        self.ledger: Final = ledger
        self.drop_last: Final = drop_last
        self.on_starved: Final = on_starved
        self.on_dropped: Final = on_dropped  # keyed feeds: rows drop_last drops, settled
        self._outbox: deque[Batch] = deque()
        self.blocked: Final = Blocked()  # waiting for room in the batch channel
        self._unpushed = 0  # rows of the current chunk the rebatcher has not taken yet

    async def run(self) -> None:
        """Run until the chunk queue is closed and drained, then flush and close the output.

        An epoch-end marker (a chunk of no rows) in the queue flushes the epoch's partial
        batch there, so batches never mix epochs.
        """
        chunks = self.chunks
        ledger = self.ledger
        rebatcher = self.rebatcher
        push = rebatcher.push
        track = rebatcher.track
        while True:
            try:
                try:
                    arrays, rows, origin = chunks.get_nowait()
                except asyncio.QueueEmpty:
                    self.on_starved()
                    arrays, rows, origin = await chunks.get()
            except ChannelClosed:
                break
            # Small chunks: take what is already queued, without awaiting, until a batch is
            # complete; the taken rows change stage in one ledger update, before anything
            # can observe a batch made of them.
            moved = 0
            made: list[Batch] = []
            large = marker = False
            try:
                while True:
                    if not rows:  # an epoch ends here
                        marker = True
                        break
                    large = rows > rebatcher.batch_size and rebatcher.rebatch
                    if large:
                        break
                    moved += rows
                    made = push(arrays, origin if track else None)  # type: ignore[arg-type]
                    if made:
                        break
                    try:
                        arrays, rows, origin = chunks.get_nowait()
                    except (asyncio.QueueEmpty, ChannelClosed):
                        break
            finally:  # also when push() raises: the rows are the rebatcher's now
                if moved:
                    ledger.move(moved, Stage.QUEUED, Stage.REBATCHING)
            if large:
                await self._push_large(arrays, rows, origin if track else None)
                continue
            del arrays  # hold no chunk while waiting: it may pin a worker's shared memory
            if made:
                self._outbox.extend(made)
                del made
                await self._emit()
            if marker:
                await self._flush()
        await self._flush()
        self.batches.close()

    async def _push_large(self, arrays: Any, rows: int, tag: Any) -> None:
        """A chunk of more than a batch, pushed a batch at a time, each batch emitted before
        the next is cut (so a huge chunk neither blocks the loop nor piles up batches)."""
        self.ledger.move(rows, Stage.QUEUED, Stage.REBATCHING)
        rebatcher = self.rebatcher
        pos = 0
        while pos < rows:
            end = min(rows, pos + rebatcher.batch_size)
            piece = [a[pos:end] for a in arrays]
            self._unpushed = rows - pos
            piece_tag = None if tag is None else (*tag[:3], tag[3] + pos, tag[3] + end, tag[5])
            self._outbox.extend(rebatcher.push(piece, piece_tag))
            self._unpushed = rows - end
            pos = end
            del piece
            if pos == rows:
                del arrays  # hold no chunk while waiting: it may pin shared memory
            if self._outbox:
                await self._emit()

    async def _flush(self) -> None:
        """End an epoch (or the data): its partial batch goes out, or is dropped."""
        if self.drop_last:
            rows, provenance = self.rebatcher.drop_partial()
            if rows:
                self.ledger.drop(rows, Stage.REBATCHING, DropCause.DROP_LAST)
            if self.on_dropped is not None and provenance:
                self.on_dropped(provenance, self.rebatcher.batches_made)
            return
        last = self.rebatcher.flush()
        if last is not None:
            self._outbox.append(last)
            await self._emit()

    async def _emit(self) -> None:
        outbox = self._outbox
        while outbox:
            batch = outbox[0]
            if not self.batches.put_nowait(batch):
                self.blocked.enter()
                try:
                    await self.batches.put(batch)
                finally:
                    self.blocked.leave()
            outbox.popleft()
            self.ledger.move(batch.rows, Stage.REBATCHING, Stage.BATCHED)

    def discard(self, cause: DropCause) -> None:
        """Drop every row the stage holds (carried or waiting in the outbox)."""
        held = self.rebatcher.discard() + sum(b.rows for b in self._outbox) + self._unpushed
        self._outbox.clear()
        self._unpushed = 0
        self.ledger.drop(held, Stage.REBATCHING, cause)


async def log_every(
    interval: float, snapshot: Callable[[], FeedStats], loggers: tuple[ExternalLogger, ...]
) -> None:
    """Report a stats snapshot every ``interval`` seconds, forever."""
    while True:
        await asyncio.sleep(interval)
        report(snapshot(), loggers)
