"""The only place where threads meet the event loop.

- :class:`LoopThread`: a private event loop in a daemon thread, for synchronous programs
  (anyio's blocking portal). Feeds started with ``start()`` share one per process, so feeds
  of one source still share its chunk queue.
- :class:`DaemonThreadPool`: the executor for sync fetchers. Its threads are daemons, so a
  fetcher stuck in a call that cannot be interrupted never blocks interpreter exit.
- :meth:`DaemonThreadPool.pump`: a blocking call repeated on one pool thread, its results
  taken by a coroutine (``pump.Pump``).
- :func:`to_thread`: run one blocking call on a fresh daemon thread, awaitable and
  abandonable.
- :func:`stop_at_exit`: stop hooks run when the interpreter shuts down, before it joins threads.
- :func:`start_thread`: a named daemon thread: the sink handoff (``handoff.py``), the thread
  a feed's own local Ray lives on (``ray/connect.py``).

Cross-thread wake-ups go through ``loop.call_soon_threadsafe`` or thread-safe queues; nothing
here polls.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, Final, Protocol, TypeVar, final

from .pump import Outcome, Pump

__all__ = [
    "DaemonThreadPool",
    "LoopThread",
    "Outcome",
    "acquire_loop_thread",
    "release_loop_thread",
    "start_thread",
    "stop_at_exit",
    "to_thread",
]

log = logging.getLogger("asyncfeed.bridge")

T = TypeVar("T")


@final
class LoopThread:
    """An event loop running forever in a named daemon thread until :meth:`close`."""

    def __init__(self, name: str) -> None:
        self.loop: Final = asyncio.new_event_loop()
        self._thread: Final = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop; return a future to wait on from another thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, fn: Callable[..., object], *args: object) -> None:
        """Run ``fn(*args)`` on the loop as soon as possible."""
        self.loop.call_soon_threadsafe(fn, *args)

    def close(self, timeout: float) -> bool:
        """Stop the loop and join the thread; True when the thread ended in time."""
        if self._thread is threading.current_thread():
            raise RuntimeError("a LoopThread cannot be closed from its own thread")
        if not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(self.loop.stop)
            except RuntimeError:  # closed between the check and the call
                pass
        self._thread.join(timeout)
        return not self._thread.is_alive()


_shared_lock = threading.Lock()
_shared_loop: LoopThread | None = None
_shared_users = 0


def acquire_loop_thread() -> LoopThread:
    """The process-wide private loop thread, started on first use."""
    global _shared_loop, _shared_users
    with _shared_lock:
        if _shared_loop is None:
            _shared_loop = LoopThread("asyncfeed-loop")
        _shared_users += 1
        return _shared_loop


def release_loop_thread(portal: LoopThread, timeout: float) -> None:
    """Give back a loop thread from :func:`acquire_loop_thread`; the last user stops it."""
    global _shared_loop, _shared_users
    with _shared_lock:
        _shared_users -= 1
        if _shared_users > 0 or _shared_loop is not portal:
            return
        _shared_loop = None
    if not portal.close(timeout):
        log.warning("asyncfeed loop thread did not stop within %.1f s; left as a daemon", timeout)


_WorkItem = tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...], bool]


@final
class DaemonThreadPool(concurrent.futures.Executor):
    """A thread pool of named daemon threads, started lazily up to ``max_workers``.

    Unlike ``ThreadPoolExecutor``, ``shutdown(wait=False)`` leaves a thread stuck in a call
    to finish on its own, and interpreter exit does not wait for it.
    """

    def __init__(self, max_workers: int, name_prefix: str) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self._max_workers: Final = max_workers
        self._prefix: Final = name_prefix
        self._work: queue.SimpleQueue[_WorkItem | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._threads: list[threading.Thread] = []
        self._busy: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._shutdown = False

    def submit(  # type: ignore[override]
        self, fn: Callable[..., T], /, *args: Any
    ) -> concurrent.futures.Future[T]:
        return self._submit(fn, args, True)

    def pump(
        self, call: Callable[[], T], *, ahead: int, on_late: Callable[[Outcome], object]
    ) -> Pump[T]:
        """Start ``call()`` repeating on one of the pool's threads; see :class:`Pump`.

        The thread counts as inside a call (abandoned by :meth:`join`) only while it is in
        ``call()``, not while it waits for room.
        """
        pump = Pump(call, ahead=ahead, on_late=on_late)
        self._submit(pump._run, (self._busy,), False)
        return pump

    def _submit(
        self, fn: Callable[..., T], args: tuple[Any, ...], busy: bool
    ) -> concurrent.futures.Future[T]:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit to a pool that was shut down")
            future: concurrent.futures.Future[T] = concurrent.futures.Future()
            self._work.put((future, fn, args, busy))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self._max_workers:
                thread = threading.Thread(
                    target=self._worker, name=f"{self._prefix}-{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
            return future

    def _worker(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            future, fn, args, busy = item
            del item
            if future.set_running_or_notify_cancel():
                me = threading.current_thread()
                if busy:
                    self._busy.add(me)
                try:
                    result = fn(*args)
                except BaseException as exc:  # handed to the waiter, not swallowed
                    future.set_exception(exc)
                else:
                    future.set_result(result)
                    del result  # not held while this thread waits for its next call
                finally:
                    self._busy.discard(me)
            del future, fn, args
            self._idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            if not self._shutdown:
                self._shutdown = True
                if cancel_futures:
                    self._cancel_pending()
                for _ in self._threads:
                    self._work.put(None)
        if wait:
            for thread in self._threads:
                thread.join()

    def _cancel_pending(self) -> None:
        pending: list[_WorkItem] = []
        while True:
            try:
                item = self._work.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                pending.append(item)
        for future, _, _, _ in pending:
            future.cancel()

    def join(self, timeout: float) -> bool:
        """After shutdown, wait up to ``timeout`` s for the idle threads to end.

        Threads still inside a call are abandoned, not waited for: they end on their own
        when the call returns. True when every thread has ended.
        """
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread not in self._busy:
                thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)


_thread_ids = itertools.count()


async def to_thread(fn: Callable[..., T], *args: Any, name: str) -> T:
    """Run ``fn(*args)`` on a new daemon thread and await its result.

    If the awaiting task is cancelled, the thread is abandoned: it finishes on its own and
    its result is discarded.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(ok: bool, value: Any) -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def run() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:  # handed to the awaiting task
            outcome: tuple[bool, Any] = (False, exc)
        else:
            outcome = (True, result)
        try:
            loop.call_soon_threadsafe(deliver, *outcome)
        except RuntimeError:  # the loop closed meanwhile: nobody is waiting
            pass

    threading.Thread(target=run, name=f"{name}-{next(_thread_ids)}", daemon=True).start()
    return await future


class _Stoppable(Protocol):
    def stop(self, *, timeout: float = ...) -> None: ...


EXIT_STOP_TIMEOUT = 1.0
_exit_objects: weakref.WeakSet[_Stoppable] = weakref.WeakSet()
_exit_registered = False


def stop_at_exit(obj: _Stoppable, enabled: bool = True) -> None:
    """Have ``obj.stop(timeout=EXIT_STOP_TIMEOUT)`` called at interpreter shutdown.

    It runs before the interpreter joins non-daemon threads.

    Holds ``obj`` weakly; ``enabled=False`` cancels the hook.
    """
    global _exit_registered
    if not enabled:
        _exit_objects.discard(obj)
        return
    with _shared_lock:
        if not _exit_registered:
            register = getattr(threading, "_register_atexit", None)
            if register is None:  # pragma: no cover - other interpreters
                import atexit

                register = atexit.register
            register(_run_exit_hooks)
            _exit_registered = True
    _exit_objects.add(obj)


def _run_exit_hooks() -> None:
    for obj in list(_exit_objects):
        try:
            obj.stop(timeout=EXIT_STOP_TIMEOUT)
        except Exception:
            log.exception("asyncfeed: stopping %r at interpreter exit failed", obj)


def start_thread(target: Callable[[], object], name: str) -> threading.Thread:
    """Run ``target()`` on a new, started, named daemon thread (the sink bridge's thread)."""
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread
