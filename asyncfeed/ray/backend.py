"""``workers=RayActors(n)``: the feed's fetch calls run on n Ray actors.

:class:`RayBackend` is the feed's worker backend (``backend.WorkerBackend``) for Ray. The
feed's process keeps everything that needs one owner — key order, sharding, the error
budget, the checks, the ledger, the rebatcher, the consumer — and its fetch workers await
the backend's calls, which ``dispatch.Dispatcher`` sends to the actors in batches.

This module owns the actors: it joins Ray (``connect``), starts them and waits until they
are placed, and handles their loss. A lost actor (dead, or its node lost) fails the calls
it held with :class:`FetchError` naming the actor, its node and the keys (skipped within
``max_errors``), or — with ``max_restarts`` — is replaced and its calls sent again, each
exactly once: a worker gets the outcome of its call's last sending and nothing else.
``watch()`` raises once no actor is left. ``stop(deadline)`` closes the actors' fetchers,
kills the actors and waits for Ray to confirm their end, all by the deadline; no object ref
of the feed's outlives it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any, Final, final

from ..backend import KeyCall, SeedCall, SizeHint
from ..errors import AsyncFeedError, FetchError
from ..fetchers.hoststats import merge_host_stats
from ..procs.options import WorkerSpec
from .actor import FetchActor
from .calls import describe_calls, unpack_error
from .connect import LocalRay, join_ray, leave_ray
from .dispatch import Dispatcher
from .options import RayActors
from .slots import Slot, SlotState

__all__ = ["RayBackend"]

log = logging.getLogger("asyncfeed.ray")

PLACE_WARN_S: Final = 10.0  # log while actors wait this long to be placed
CLOSE_GRACE: Final = 0.5  # seconds the actors get to close their fetchers at stop


@final
class RayBackend:
    """The Ray actors of one feed, and the calls in flight to them.

    Args:
        workers: the feed's ``RayActors`` option group.
        spec: what each actor runs.
        source: the feed's source name (actor and thread names, messages).
        worker_ids: seed-style worker ids; ``worker_ids[i]`` goes to actor ``i % n``.
        concurrency: the feed's concurrency (the most calls in flight).
    """

    opens_fetcher = False  # each actor opens its fetcher's resources where it runs

    def __init__(
        self,
        workers: RayActors,
        spec: WorkerSpec,
        *,
        source: str,
        worker_ids: Sequence[int] = (),
        concurrency: int,
    ) -> None:
        self._opts: Final = workers
        self._spec: Final = spec
        self._source: Final = source
        self._max_concurrency: Final = concurrency + 4  # batches, the lifeline, close
        self._slots: Final = [Slot(i) for i in range(workers.n)]
        self._calls: Final = Dispatcher(
            self._slots,
            keys_per_call=workers.calls_per_batch,
            worker_ids=worker_ids,
            on_loss=self._lost,
        )
        self._token: Final = uuid.uuid4().hex[:8]
        self._ray: Any = None
        self._local: LocalRay | None = None
        self._actor_cls: Any = None
        self._initial: asyncio.Future[None] | None = None
        self._broken: asyncio.Future[FetchError] | None = None
        self._stopping = False
        self._old_hosts: list[dict[str, dict[str, Any]]] = []

    def seed_call(self, worker_id: int, batch_size: SizeHint) -> SeedCall:
        """``fn(worker_id, batch_size())`` on the actor that owns ``worker_id``."""
        return self._calls.seed_call(worker_id, batch_size)

    def key_call(self) -> KeyCall:
        """``fn(key)`` on the ready actor with the fewest calls in flight."""
        return self._calls.key_call()

    # -- actors --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Join Ray (or start a local one), start the actors and wait until they are placed.

        Raises:
            FetchError: an actor could not start, or ``worker_init`` failed in one; names it.
        """
        loop = asyncio.get_running_loop()
        self._broken = loop.create_future()
        self._initial = loop.create_future()
        try:
            self._ray, self._local = await join_ray(self._source)
            ray = self._ray
            ex = ray.exceptions
            loss_types = (
                ex.RayActorError,
                ex.ObjectLostError,
                ex.WorkerCrashedError,
                ex.NodeDiedError,
                ex.ActorUnschedulableError,
            )
            self._calls.bind(loop, loss_types)
            self._warn_missing_resources()
            self._actor_cls = ray.remote(FetchActor)
            for slot in self._slots:
                self._create(slot)
        except AsyncFeedError:
            raise
        except Exception as exc:
            raise FetchError(
                f"starting the Ray actors of feed {self._source!r} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        began = time.monotonic()
        while not self._initial.done():
            await asyncio.wait([self._initial], timeout=PLACE_WARN_S)
            waiting = [s for s in self._slots if s.state is SlotState.STARTING]
            if waiting and not self._initial.done():
                log.warning(
                    "feed %r: %d of %d Ray actors not started after %.0f s (options %s); "
                    "waiting for the cluster to place them",
                    self._source,
                    len(waiting),
                    len(self._slots),
                    time.monotonic() - began,
                    self._opts.actor_options(),
                )
        self._initial.result()
        log.debug("feed %r: %d Ray actors started", self._source, len(self._slots))

    def _warn_missing_resources(self) -> None:
        have = self._ray.cluster_resources()
        missing = sorted(set(self._opts.actor_options().get("resources", {})) - set(have))
        if missing:
            log.warning(
                "feed %r: no node of the Ray cluster has the resources %s that its RayActors "
                "need; the actors wait until one joins",
                self._source,
                missing,
            )

    def _create(self, slot: Slot) -> None:
        """Create the slot's next actor and ask it to start."""
        name = f"asyncfeed-{self._source}-{self._token}-{slot.index}.{slot.incarnation + 1}"
        options = self._opts.actor_options()
        options.update(
            name=name,
            max_concurrency=self._max_concurrency,
            max_restarts=0,  # asyncfeed replaces lost actors itself, to keep calls exactly once
            max_task_retries=0,
        )
        handle = self._actor_cls.options(**options).remote(slot.index, self._spec)
        incarnation = slot.new_incarnation(handle, name)
        slot.start_ref = handle.start.remote()
        self._calls.when_done(slot.start_ref, self._started, slot, incarnation, copy=False)

    def _started(self, slot: Slot, incarnation: int, result: tuple[bool, Any]) -> None:
        if slot.incarnation != incarnation or self._stopping:
            return
        ok, where = result
        if not ok:
            self._lost(slot, incarnation, where)
            return
        slot.placed(where)
        error = where.get("error")
        if error is not None:
            cause = unpack_error(error)
            err = FetchError(
                f"worker_init failed in {slot.describe()} of feed {self._source!r}: "
                f"{type(cause).__name__}: {cause}"
            )
            err.__cause__ = cause
            self._lost(slot, incarnation, err)
            return
        slot.state = SlotState.READY
        slot.lifeline = slot.handle.lifeline.remote()
        self._calls.when_done(slot.lifeline, self._ended, slot, incarnation, copy=False)
        log.debug("feed %r: %s started", self._source, slot.describe())
        initial = self._initial
        ready = all(s.state is SlotState.READY for s in self._slots)
        if initial is not None and not initial.done() and ready:
            initial.set_result(None)
        self._calls.schedule_flush()

    def _ended(self, slot: Slot, incarnation: int, result: tuple[bool, Any]) -> None:
        """An actor's lifeline ended: the actor is gone."""
        ok, value = result
        if not self._stopping:
            cause = value if not ok else RuntimeError("its lifeline returned")
            self._lost(slot, incarnation, cause)

    def _lost(self, slot: Slot, incarnation: int, exc: BaseException) -> None:
        """Actor ``slot`` (this incarnation) is gone: replace it, or fail its calls."""
        if slot.incarnation != incarnation or slot.state is SlotState.DEAD or self._stopping:
            return
        what = slot.describe()
        calls = slot.take_batches()
        slot.kill(self._ray)
        if slot.hosts:
            self._old_hosts.append(slot.hosts)
            slot.hosts = {}
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        cause = exc if isinstance(exc, FetchError) else f"{type(exc).__name__}: {first}"
        initial = self._initial
        if initial is not None and not initial.done():
            slot.state = SlotState.DEAD
            err = (
                exc
                if isinstance(exc, FetchError)
                else FetchError(f"{what} of feed {self._source!r} could not start: {cause}")
            )
            if err is not exc:
                err.__cause__ = exc
            initial.set_exception(err)
            return
        if slot.restarts < self._opts.max_restarts:
            slot.restarts += 1
            log.warning(
                "feed %r: %s was lost (%s) holding %s; replacing it (restart %d of %d), "
                "its calls go again",
                self._source,
                what,
                cause,
                describe_calls(calls),
                slot.restarts,
                self._opts.max_restarts,
            )
            self._calls.requeue(slot, calls)
            try:
                self._create(slot)
            except Exception as again:
                slot.state = SlotState.STARTING
                self._lost(slot, slot.incarnation, again)
            self._calls.schedule_flush()
            return
        slot.state = SlotState.DEAD
        message = (
            f"{what} of feed {self._source!r} was lost ({cause}) holding {describe_calls(calls)}"
        )
        log.warning("%s", message)
        for call in calls:
            err = FetchError(message, worker_id=call.worker_id, key=call.key)
            err.__cause__ = exc
            call.resolve(False, err)
        self._calls.rehome(slot)
        if all(s.state is SlotState.DEAD for s in self._slots):
            assert self._broken is not None
            if not self._broken.done():
                self._broken.set_result(
                    FetchError(
                        f"every Ray actor of feed {self._source!r} is lost; the last: {message}"
                    )
                )
        self._calls.schedule_flush()

    async def watch(self) -> None:
        """Raise once no actor is left (each lost one failed its calls, or was replaced).

        Raises:
            FetchError: every actor is lost; names the last one.
        """
        assert self._broken is not None
        raise await self._broken

    async def stop(self, deadline: float) -> None:
        """Close the actors' fetchers, kill the actors and wait for their end, by ``deadline``.

        Never raises; drops every object ref the feed held.
        """
        self._stopping = True
        self._calls.close()
        initial = self._initial
        if initial is not None and initial.done() and not initial.cancelled():
            initial.exception()  # raised by start() already, if anyone was there to see it
        ray = self._ray
        try:
            if ray is not None:
                await self._close_actors(deadline)
        except asyncio.CancelledError:
            self._kill_all()
            raise
        except Exception:
            log.exception("feed %r: stopping its Ray actors failed", self._source)
            self._kill_all()
        finally:
            for slot in self._slots:
                slot.take_batches()
                slot.start_ref = slot.lifeline = slot.handle = None
        self._actor_cls = None
        await leave_ray(self._local, deadline)
        self._local = None

    async def _close_actors(self, deadline: float) -> None:
        live = [s for s in self._slots if s.handle is not None and s.state is SlotState.READY]
        closes: list[tuple[Slot, asyncio.Future[tuple[bool, Any]]]] = []
        for slot in live:
            closes.append((slot, self._calls.future_of(slot.handle.close.remote())))
        grace = min(CLOSE_GRACE, 0.4 * (deadline - time.monotonic()))
        if closes and grace > 0:
            await asyncio.wait([f for _, f in closes], timeout=grace)
        for slot, fut in closes:
            if fut.done() and fut.result()[0] and fut.result()[1]:
                slot.hosts = fut.result()[1]
        self._kill_all()
        # Death confirmed: each actor's lifeline (or start) call failed. Every other call
        # still out ends with it; waiting for those too means that no ref of the feed's is
        # still held by Ray's callbacks once stop() returns.
        deaths = [
            self._calls.future_of(ref)
            for s in self._slots
            if (ref := s.lifeline if s.lifeline is not None else s.start_ref) is not None
        ]
        others = [f for _, f in closes if not f.done()]
        others += [
            self._calls.future_of(b.ref)
            for s in self._slots
            for b in s.batches
            if b.ref is not None and not b.settled
        ]
        remaining = 0.9 * (deadline - time.monotonic())
        if (deaths or others) and remaining > 0:
            await asyncio.wait([*deaths, *others], timeout=remaining)
        alive = sum(not f.done() for f in deaths)
        for fut in [*deaths, *others]:
            fut.cancel()
        if alive:
            log.warning(
                "feed %r: Ray did not confirm the end of %d actors by the stop's deadline",
                self._source,
                alive,
            )

    def _kill_all(self) -> None:
        for slot in self._slots:
            slot.kill(self._ray)
            slot.state = SlotState.DEAD

    # -- stats ---------------------------------------------------------------------------------

    def host_stats(self) -> dict[str, dict[str, Any]]:
        """Per-host stats of the actors' fetchers (their ``host_stats()``), merged."""
        return merge_host_stats([*self._old_hosts, *(s.hosts for s in self._slots)])
