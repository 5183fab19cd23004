"""The feed lifecycle: its states, and the one state machine that moves between them."""

from __future__ import annotations

import asyncio
import enum
import threading
import time
from collections.abc import Callable
from typing import Final, final

from .errors import FeedStateError

__all__ = ["FeedState", "Lifecycle", "wait_through_cancel"]


class FeedState(enum.Enum):
    """Lifecycle: NEW → RUNNING → STOPPING → STOPPED (or NEW → STOPPED)."""

    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


@final
class Lifecycle:
    """A feed's state, moved only through these methods, from any thread.

    ``RUNNING → STOPPING`` happens when a stop begins or the run ends on its own (an error,
    the end of the keys, the sink closed by its reader); ``→ STOPPED`` once the stop is
    complete. Callbacks registered with :meth:`on_stopped` run once, at ``STOPPED``.
    """

    __slots__ = ("_listeners", "_lock", "_state")

    def __init__(self) -> None:
        self._lock: Final = threading.Lock()
        self._state = FeedState.NEW
        self._listeners: list[Callable[[], None]] = []

    @property
    def state(self) -> FeedState:
        return self._state

    def start(self) -> None:
        """NEW → RUNNING.

        Raises:
            FeedStateError: the feed was started or stopped before.
        """
        with self._lock:
            if self._state is not FeedState.NEW:
                raise FeedStateError(
                    f"a feed starts once; this one is {self._state.value} (create a new Feed)"
                )
            self._state = FeedState.RUNNING

    def stop_if_new(self) -> bool:
        """NEW → STOPPED, atomically; True when the feed was NEW (it never ran)."""
        with self._lock:
            if self._state is not FeedState.NEW:
                return False
            self._state = FeedState.STOPPED
            listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener()
        return True

    def begin_stop(self) -> FeedState:
        """Begin stopping; return the state found. NEW → STOPPED, RUNNING → STOPPING."""
        if self.stop_if_new():
            return FeedState.NEW
        with self._lock:
            found = self._state
            if found is FeedState.RUNNING:
                self._state = FeedState.STOPPING
        return found

    def ended(self) -> None:
        """The run ended on its own: RUNNING → STOPPING (a stop completes it)."""
        with self._lock:
            if self._state is FeedState.RUNNING:
                self._state = FeedState.STOPPING

    def stopped(self) -> None:
        """→ STOPPED; the callbacks of :meth:`on_stopped` run once."""
        with self._lock:
            if self._state is FeedState.STOPPED and not self._listeners:
                return
            self._state = FeedState.STOPPED
            listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener()

    def on_stopped(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` at STOPPED (at once if already there)."""
        with self._lock:
            if self._state is not FeedState.STOPPED:
                self._listeners.append(callback)
                return
        callback()


async def wait_through_cancel(
    task: asyncio.Task[None], deadline: float
) -> asyncio.CancelledError | None:
    """Wait for ``task`` until ``deadline``, even when cancelled meanwhile.

    A feed that is stopping finishes stopping first; the cancellation is returned for the
    caller to re-raise once it has (None when there was none).
    """
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            await asyncio.wait({task}, timeout=remaining)
        except asyncio.CancelledError as exc:
            cancelled = exc
    return cancelled
