"""Where fetch calls run: the worker-backend protocol, and the in-process backend.

A feed's fetch workers (``fetch.py``) never call the user's fetcher themselves: they await a
*call* from the feed's backend, which runs it somewhere and returns an :data:`Outcome`. Key
order, sharding, the checks, the ledger and the error budget stay with the workers, in the
feed's process, whatever the backend. Backends:

- :class:`LocalBackend`: this process. ``async def`` fetchers are awaited on the feed's loop;
  sync ones run on the feed's own daemon threads (seed-style ones in pumps, see
  ``pump.Pump``) or on the user's executor.
- ``procs.pool.WorkerPool``: worker processes (``workers=Processes(n)``).
- ``ray.backend.RayBackend``: Ray actors (``workers=RayActors(n)``), imported only then.

A backend is started before the workers, watched while they run, and stopped by the stop's
deadline after they ended.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import BrokenExecutor, Executor
from concurrent.futures import Future as ConcurrentFuture
from typing import TYPE_CHECKING, Any, Final, Protocol, final

from .bridge import DaemonThreadPool, Outcome, to_thread
from .protocols import is_async_callable
from .resources import fetcher_host_stats
from .sizing import Sizing

if TYPE_CHECKING:
    from .options import RunSpec

__all__ = [
    "KeyCall",
    "LocalBackend",
    "Outcome",
    "SeedCall",
    "SizeHint",
    "WorkerBackend",
    "make_backend",
]

#: One fetch call of a keyed feed: ``await call(key)`` → its outcome.
KeyCall = Callable[[Any], Awaitable[Outcome]]
#: The batch size a seed-style fetcher is told, read at each call (it may change).
SizeHint = Callable[[], int]


class SeedCall(Protocol):
    """The repeated call of one seed-style worker: ``await call()`` → the next outcome."""

    def __call__(self) -> Awaitable[Outcome]: ...

    def leftovers(self) -> list[Outcome]:
        """Stop; return outcomes made ahead that the worker never took (counted, then dropped)."""
        ...


class WorkerBackend(Protocol):
    """Where a feed's fetch calls run."""

    #: True when the feed opens the fetcher's resources (``open(feed)``) on its own loop;
    #: False when the backend's workers open theirs where they run.
    opens_fetcher: bool

    async def start(self) -> None:
        """Get ready to take calls (start processes, pools).

        Raises:
            FetchError: the backend could not start; the message names what failed.
        """
        ...

    def seed_call(self, worker_id: int, batch_size: SizeHint) -> SeedCall:
        """The call a seed-style worker repeats: ``fetch(worker_id, batch_size())``."""
        ...

    def key_call(self) -> KeyCall:
        """The call keyed workers make once per key: ``fetch_one(key)``."""
        ...

    async def watch(self) -> None:
        """Return when there is nothing to watch; raise when the backend breaks.

        Raises:
            FetchError: a worker died or failed for good; names it.
        """
        ...

    async def stop(self, deadline: float) -> None:
        """Stop everything started, by ``deadline`` (``time.monotonic()``). Never raises."""
        ...

    def host_stats(self) -> Mapping[str, Mapping[str, Any]]:
        """Per-host statistics of the fetchers, merged across workers."""
        ...


@final
class _AwaitCall:
    """An ``async def`` fetcher awaited on the feed's loop, one call at a time."""

    __slots__ = ("_fn", "_size", "_worker")

    def __init__(self, fn: Callable[..., Awaitable[Any]], worker_id: int, size: SizeHint) -> None:
        self._fn: Final = fn
        self._worker: Final = worker_id
        self._size: Final = size

    async def __call__(self) -> Outcome:
        start = time.perf_counter()
        try:
            value = await self._fn(self._worker, self._size())
        except Exception as exc:
            return False, exc, time.perf_counter() - start
        return True, value, time.perf_counter() - start

    def leftovers(self) -> list[Outcome]:
        return []


async def submit(
    executor: Executor,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    on_late: Callable[[Any], None],
) -> Outcome:
    """One call of a sync ``fn`` on ``executor``, awaited; abandoned if the waiter is cancelled.

    A call already running when its waiter is cancelled cannot be interrupted: it finishes
    on its own thread and its result goes to ``on_late`` (its rows are counted as dropped).
    An executor that refuses calls yields a ``BrokenExecutor`` outcome (the feed stops).
    """
    start = time.perf_counter()
    try:
        cf = executor.submit(fn, *args)
    except BrokenExecutor as exc:
        return False, exc, 0.0
    except RuntimeError as exc:  # "cannot schedule new futures after shutdown"
        return False, BrokenExecutor(f"{executor!r} refused the call: {exc}"), 0.0
    try:
        value = await asyncio.wrap_future(cf)
    except asyncio.CancelledError:
        if not cf.cancel():  # already running: it cannot be interrupted
            cf.add_done_callback(functools.partial(_late, on_late))
        raise
    except Exception as exc:
        return False, exc, time.perf_counter() - start
    return True, value, time.perf_counter() - start


def _late(on_late: Callable[[Any], None], cf: ConcurrentFuture[Any]) -> None:
    if not cf.cancelled() and cf.exception() is None:
        on_late(cf.result())


@final
class _SubmitCall:
    """A sync seed-style fetcher on the user's executor: one submit per call."""

    __slots__ = ("_executor", "_fn", "_on_late", "_size", "_worker")

    def __init__(
        self,
        executor: Executor,
        fn: Callable[..., Any],
        worker_id: int,
        size: SizeHint,
        on_late: Callable[[Any], None],
    ) -> None:
        self._executor: Final = executor
        self._fn: Final = fn
        self._worker: Final = worker_id
        self._size: Final = size
        self._on_late: Final = on_late

    def __call__(self) -> Awaitable[Outcome]:
        return submit(self._executor, self._fn, (self._worker, self._size()), self._on_late)

    def leftovers(self) -> list[Outcome]:
        return []


@final
class _PumpCall:
    """A sync seed-style fetcher on the feed's own pool, repeated by a pump."""

    __slots__ = ("_pump",)

    def __init__(self, pool: DaemonThreadPool, call: Callable[[], Any], ahead: int, on_late: Any):
        self._pump: Final = pool.pump(call, ahead=ahead, on_late=on_late)

    def __call__(self) -> Awaitable[Outcome]:
        return self._pump.get()

    def leftovers(self) -> list[Outcome]:
        return self._pump.stop()


@final
class LocalBackend:
    """Fetch calls in this process: on the feed's loop, its own threads, or an executor.

    Args:
        fn: the user's fetcher.
        executor: the user's executor for a sync fetcher; None: the feed's own threads.
        sizing: thread count and pump depth.
        source: for thread names.
        on_late: takes the result of a sync call that finished after its worker stopped.
    """

    opens_fetcher = True

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        executor: Executor | None,
        sizing: Sizing,
        source: str,
        on_late: Callable[[Any], None],
    ) -> None:
        self._fn: Final = fn
        self._async: Final = is_async_callable(fn)
        self._executor = executor
        self._sizing: Final = sizing
        self._source: Final = source
        self._on_late: Final = on_late
        self._own: DaemonThreadPool | None = None

    async def start(self) -> None:
        if not self._async and self._executor is None:
            self._own = DaemonThreadPool(self._sizing.threads, f"asyncfeed-{self._source}-fetch")
            self._executor = self._own

    def seed_call(self, worker_id: int, batch_size: SizeHint) -> SeedCall:
        fn = self._fn
        if self._async:
            return _AwaitCall(fn, worker_id, batch_size)
        if self._own is not None and self._sizing.pump_ahead:

            def call() -> Any:
                return fn(worker_id, batch_size())

            return _PumpCall(self._own, call, self._sizing.pump_ahead, self._late_outcome)
        assert self._executor is not None
        return _SubmitCall(self._executor, fn, worker_id, batch_size, self._on_late)

    def key_call(self) -> KeyCall:
        fn = self._fn
        if self._async:

            async def call(key: Any) -> Outcome:
                start = time.perf_counter()
                try:
                    value = await fn(key)
                except Exception as exc:
                    return False, exc, time.perf_counter() - start
                return True, value, time.perf_counter() - start

            return call
        executor, on_late = self._executor, self._on_late
        assert executor is not None
        return lambda key: submit(executor, fn, (key,), on_late)

    async def watch(self) -> None:
        return  # calls on this loop and its threads fail call by call, never all at once

    async def stop(self, deadline: float) -> None:
        own = self._own
        if own is None:
            return
        own.shutdown(wait=False, cancel_futures=True)
        remaining = max(0.0, deadline - time.monotonic())
        await to_thread(own.join, remaining, name=f"asyncfeed-{self._source}-join")

    def host_stats(self) -> Mapping[str, Mapping[str, Any]]:
        return fetcher_host_stats(self._fn)

    def _late_outcome(self, outcome: Outcome) -> None:
        if outcome[0]:
            self._on_late(outcome[1])


def make_backend(spec: RunSpec, on_late: Callable[[Any], None]) -> WorkerBackend:
    """The backend for a feed's ``workers`` option (None: this process)."""
    opts, sizing = spec.options, spec.sizing
    workers, source = opts.workers, opts.source
    if workers is None:
        return LocalBackend(
            spec.fn, executor=opts.executor, sizing=sizing, source=source, on_late=on_late
        )
    assert spec.process_spec is not None
    from .procs.options import Processes

    if isinstance(workers, Processes):
        from .procs.pool import WorkerPool

        return WorkerPool(workers, spec.process_spec, source=source, worker_ids=spec.worker_ids)
    from .ray.backend import RayBackend

    return RayBackend(
        workers,
        spec.process_spec,
        source=source,
        worker_ids=spec.worker_ids,
        concurrency=sizing.workers,
    )
