"""``HostGate``: where an adaptive fetcher's requests to one host wait for its policy.

The gate asks its :class:`~asyncfeed.adaptive.HostPolicy` whether a request may go, and
parks it in FIFO order when not: until a request of the host ends (a slot frees up), or
until a timer for the pause or the next rate token fires (one ``loop.call_at`` handle, no
task and no polling). A retried request joins the front of the line, so a key refused
once is not sent to the back behind every other. Waiting here is not a failed attempt:
the fetcher excludes it from the retry deadline and counts it as *held*.

Used on the fetcher's event loop only.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Final, final

from ..adaptive import HostPolicy, Outcome, Ticket

__all__ = ["HostGate"]


@final
class HostGate:
    """The requests of one host, let through as its policy allows."""

    __slots__ = ("_timer", "_timer_at", "_waiters", "inflight", "loop", "policy")

    def __init__(self, policy: HostPolicy, loop: asyncio.AbstractEventLoop) -> None:
        self.policy: Final = policy
        self.loop: Final = loop
        self.inflight = 0
        self._waiters: deque[asyncio.Future[Ticket]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    @property
    def waiting(self) -> int:
        """Requests parked now."""
        return sum(1 for f in self._waiters if not f.done())

    def try_acquire(self) -> Ticket | None:
        """A ticket at once if nobody waits and the policy lets a request go now."""
        if self._waiters:
            return None
        now = self.loop.time()
        if self.policy.delay(now, self.inflight) != 0:
            return None
        return self._grant(now)

    async def acquire(self, *, first: bool = False) -> Ticket:
        """Wait for the policy to let a request go; ``first``: join the front of the line.

        Cancelling the wait gives the slot back if one was granted meanwhile.
        """
        ticket = self.try_acquire()
        if ticket is not None:
            return ticket
        waiter: asyncio.Future[Ticket] = self.loop.create_future()
        if first:
            self._waiters.appendleft(waiter)
        else:
            self._waiters.append(waiter)
        self._wake()
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result(), Outcome.CANCELLED)
            else:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass
            raise

    def release(self, ticket: Ticket, outcome: Outcome, retry_after: float | None = None) -> None:
        """The request of ``ticket`` ended: tell the policy, let the next ones go."""
        self.inflight -= 1
        self.policy.finish(ticket, self.loop.time(), outcome, retry_after)
        self._wake()

    def close(self) -> None:
        """Cancel the timer (parked requests belong to tasks that are being cancelled)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _grant(self, now: float) -> Ticket:
        ticket = self.policy.start(now, self.inflight)
        self.inflight += 1
        return ticket

    def _wake(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters[0]
            if waiter.done():
                waiters.popleft()
                continue
            now = self.loop.time()
            delay = self.policy.delay(now, self.inflight)
            if delay is None:
                return  # a release wakes us
            if delay > 0:
                self._schedule(now + delay)
                return
            waiters.popleft()
            waiter.set_result(self._grant(now))

    def _schedule(self, when: float) -> None:
        timer = self._timer
        if timer is not None and not timer.cancelled():
            if self._timer_at <= when:
                return  # an earlier wake-up is due anyway
            timer.cancel()
        self._timer_at = when
        self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._wake()
