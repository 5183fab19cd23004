"""``processes=N``: the feed's fetch calls run in N worker processes, one event loop each.

:class:`WorkerPool` is the feed's worker backend (``backend.WorkerBackend``) for
``workers=Processes(n)``. The feed's process keeps everything that needs one owner: key
iteration, sharding, ordering, the error budget, the chunk checks, the row ledger, the
rebatcher and the consumer. Its fetch workers await the pool's calls instead of the user's
function; each call is a request to one worker process (a seed-style worker id always to the
same process; a key to the least busy one) and its outcome is the user's result, or the
user's exception re-raised with the worker's traceback chained (``RemoteTraceback``). So
``ordered``, ``shard``, ``drop_last`` and ``max_errors`` mean what they mean in one
process, and the feed always knows which calls are in flight.

The run starts the pool, watches it while the workers run, and stops it by the stop's
deadline: STOP, then SIGTERM, then SIGKILL, each given a share of the time left, and every
process is reaped. A worker that dies or cannot start fails the feed with
:class:`FetchError` naming it and its exit code. Fetchers and ``worker_init`` must be
picklable (``spawn`` / ``forkserver``) and should create sessions lazily, inside the loop
that runs them. See ``wire`` and ``ring`` for the transport.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import os
import pickle
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from multiprocessing.process import BaseProcess
from typing import Any, Final, final

from ..backend import KeyCall, Outcome, SeedCall, SizeHint
from ..errors import FetchError, RemoteTraceback, remote_error
from ..fetchers.hoststats import merge_host_stats
from . import ring as ring_config
from .options import Processes, WorkerSpec
from .reaping import EXIT_WAIT, describe_exit, resolve, wait_exits
from .ring import Ring, arrays_from_block, create_ring_fd
from .wire import ARRAYS, CALL, ERROR, FATAL, NONE, OBJECT, STATS, STOP, Link
from .worker import worker_main

__all__ = ["WorkerPool"]

log = logging.getLogger("asyncfeed.procs")

STOP_GRACE: Final = 0.5  # seconds a worker gets to end after STOP, then after SIGTERM


@final
class _Worker:
    """The feed's side of one worker process."""

    __slots__ = ("index", "inflight", "link", "pending", "process", "ring", "sock")

    def __init__(self, index: int, sock: socket.socket) -> None:
        self.index: Final = index
        self.sock: Final = sock
        self.process: BaseProcess | None = None
        self.link: Link | None = None
        self.ring: Ring | None = None
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.inflight = 0

    def name(self) -> str:
        pid = self.process.pid if self.process is not None else None
        return f"worker process {self.index} (pid {pid})"


@final
class WorkerPool:
    """The worker processes of one feed, and the calls in flight to them.

    Args:
        workers: the feed's ``Processes`` option group.
        spec: what each worker runs.
        source: the feed's source name, for process and thread names.
        worker_ids: seed-style worker ids; id ``worker_ids[i]`` runs in process
            ``i % n``. Empty for keyed feeds.
        ring_bytes: size of each worker's shared-memory ring; None: ``ring.RING_BYTES``;
            0: every chunk travels inline.
    """

    opens_fetcher = False  # each worker opens its own fetcher, lazily, in its own loop

    def __init__(
        self,
        workers: Processes,
        spec: WorkerSpec,
        *,
        source: str,
        worker_ids: Sequence[int] = (),
        ring_bytes: int | None = None,
    ) -> None:
        self._opts: Final = workers
        self._spec: Final = spec
        self._source: Final = source
        self._owner: Final = {wid: i % workers.n for i, wid in enumerate(worker_ids)}
        self._ring_bytes: Final = ring_config.RING_BYTES if ring_bytes is None else ring_bytes
        self._workers: list[_Worker] = []
        self._fatal: asyncio.Future[FetchError] | None = None
        self._requests = itertools.count()
        self._next = 0
        self._hosts: dict[int, dict[str, dict[str, Any]]] = {}

    # -- the calls the feed's fetch workers make -----------------------------------------------

    def seed_call(self, worker_id: int, batch_size: SizeHint) -> SeedCall:
        """``fn(worker_id, batch_size())`` in the process that owns ``worker_id``."""
        worker = self._workers[self._owner[worker_id]]
        return _RemoteCall(self, worker, worker_id, batch_size)

    def key_call(self) -> KeyCall:
        """``fn(key)`` in the worker process with the fewest calls in flight."""
        return self._call_one

    async def _call_one(self, key: Any) -> Outcome:
        workers = self._workers
        start = self._next
        self._next = (start + 1) % len(workers)
        best = workers[start]
        for k in range(1, len(workers)):
            w = workers[(start + k) % len(workers)]
            if w.inflight < best.inflight:
                best = w
        return await self.call(best, (key,))

    async def call(self, w: _Worker, args: tuple[Any, ...]) -> Outcome:
        """One call in worker ``w``, timed, as an outcome."""
        begin = time.perf_counter()
        try:
            value = await self._call(w, args)
        except Exception as exc:
            return False, exc, time.perf_counter() - begin
        return True, value, time.perf_counter() - begin

    async def _call(self, w: _Worker, args: tuple[Any, ...]) -> Any:
        link = w.link
        loop = asyncio.get_running_loop()
        if link is None or not link.connected:
            await loop.create_future()  # the pool's watch() reports this worker's end
        assert link is not None
        req = next(self._requests)
        fut: asyncio.Future[Any] = loop.create_future()
        w.pending[req] = fut
        w.inflight += 1
        try:
            link.send((CALL, req, args))
            return await fut
        finally:
            del w.pending[req]
            w.inflight -= 1

    def _on_message(self, w: _Worker, header: tuple[Any, ...], payload: Any) -> None:
        kind = header[0]
        if kind == ARRAYS:
            _, req, names, layout, slot = header
            fut = w.pending.get(req)
            arrays: list[Any] | None
            if slot is None:
                arrays = arrays_from_block(payload, layout)
            else:
                arrays = w.ring.view(slot[0], slot[1], layout) if w.ring is not None else None
            if arrays is None:
                return
            if fut is not None and not fut.done():
                fut.set_result(arrays if names is None else dict(zip(names, arrays, strict=True)))
        elif kind == NONE:
            resolve(w.pending.get(header[1]), None)
        elif kind == OBJECT:
            fut = w.pending.get(header[1])
            if fut is not None and not fut.done():
                try:
                    fut.set_result(pickle.loads(payload))
                except Exception as exc:
                    fut.set_exception(exc)
        elif kind == ERROR:
            fut = w.pending.get(header[1])
            if fut is not None and not fut.done():
                fut.set_exception(remote_error(header[2], header[3]))
        elif kind == STATS:
            self._hosts[w.index] = header[1]
        elif kind == FATAL and self._fatal is not None and not self._fatal.done():
            err = FetchError(f"{header[1]} (feed {self._source!r})")
            err.__cause__ = RemoteTraceback(header[2])
            self._fatal.set_result(err)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the worker processes and connect to them.

        Raises:
            FetchError: a process could not be started.
        """
        loop = asyncio.get_running_loop()
        self._fatal = loop.create_future()
        opts = self._opts
        fork = opts.method == "fork"
        ctx: Any = multiprocessing.get_context(opts.method)
        spec: bytes | WorkerSpec = self._spec if fork else pickle.dumps(self._spec)
        tid = threading.get_ident()
        feed_fds: list[int] = []  # with fork, children inherit these and must close them
        parent_pid = None if opts.method == "forkserver" else os.getpid()
        try:
            for i in range(opts.n):
                parent, child = socket.socketpair()
                w = _Worker(i, parent)
                self._workers.append(w)
                if fork:
                    feed_fds.append(parent.fileno())
                try:
                    self._send_ring(w, loop, tid)
                    proc = ctx.Process(
                        target=worker_main,
                        args=(i, child, spec, tuple(feed_fds), parent_pid),
                        name=f"asyncfeed-{self._source}-proc-{i}",
                        daemon=True,
                    )
                    proc.start()
                    w.process = proc
                finally:
                    child.close()
            for w in self._workers:
                _, w.link = await loop.connect_accepted_socket(self._link_factory(w), w.sock)
        except Exception as exc:
            raise FetchError(
                f"starting the worker processes of feed {self._source!r} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        log.debug("feed %r: %d worker processes started", self._source, opts.n)

    def _link_factory(self, w: _Worker) -> Callable[[], Link]:
        def on_message(header: tuple[Any, ...], payload: Any) -> None:
            self._on_message(w, header, payload)

        return lambda: Link(on_message)

    def _send_ring(self, w: _Worker, loop: asyncio.AbstractEventLoop, tid: int) -> None:
        fd = create_ring_fd(self._ring_bytes)
        if fd is None:
            w.sock.sendall(b"N")
            return
        try:
            socket.send_fds(w.sock, [b"R"], [fd])

            def send(header: tuple[Any, ...]) -> None:
                if w.link is not None:
                    w.link.send(header)

            w.ring = Ring(fd, loop, send, tid)
        finally:
            os.close(fd)

    async def watch(self) -> None:
        """Wait until a worker dies or reports a fatal error, then raise.

        Raises:
            FetchError: names the worker, its pid and its exit code, or what failed.
        """
        assert self._fatal is not None
        lost: dict[asyncio.Future[Any], _Worker] = {
            w.link.lost: w for w in self._workers if w.link is not None
        }
        watched: list[asyncio.Future[Any]] = [self._fatal, *lost]
        done, _ = await asyncio.wait(watched, return_when="FIRST_COMPLETED")
        if not self._fatal.done():
            w = lost[next(f for f in done if f is not self._fatal)]
            assert w.link is not None
            if w.link.error is not None:
                err = w.link.error
                raise FetchError(
                    f"the link to {w.name()} of feed {self._source!r} failed: "
                    f"{type(err).__name__}: {err}"
                ) from err
            code = await self._exit_code(w)
            if not self._fatal.done():
                raise FetchError(
                    f"{w.name()} of feed {self._source!r} died with exit code {describe_exit(code)}"
                )
        raise self._fatal.result()

    async def _exit_code(self, w: _Worker) -> int | None:
        assert w.process is not None
        still = await wait_exits([w.process], EXIT_WAIT)
        if still:
            w.process.kill()
            await wait_exits(still, EXIT_WAIT)
        return w.process.exitcode

    async def stop(self, deadline: float) -> None:
        """Stop every worker by ``deadline``: STOP, then SIGTERM, then SIGKILL, each waited
        for on the process's sentinel for a share of the time left; every process is reaped.
        """
        procs = [w.process for w in self._workers if w.process is not None]

        def share(fraction: float, cap: float) -> float:
            return max(0.0, min(cap, fraction * (deadline - time.monotonic())))

        try:
            for w in self._workers:
                if w.link is not None:
                    w.link.send((STOP,))
            alive = await wait_exits(procs, share(0.4, STOP_GRACE))
            for proc in alive:
                proc.terminate()
            alive = await wait_exits(alive, share(0.5, STOP_GRACE))
            for proc in alive:
                proc.kill()
            alive = await wait_exits(alive, share(0.9, EXIT_WAIT))
            if alive:
                log.error("feed %r: worker processes %s did not die", self._source, alive)
            links = [w.link for w in self._workers if w.link is not None]
            for link in links:
                link.close()
            if links:
                await asyncio.wait([lk.lost for lk in links], timeout=share(0.5, STOP_GRACE))
        except BaseException:
            for proc in procs:  # cancelled again: no more waiting on the loop
                if proc.exitcode is None:
                    proc.kill()
                    proc.join(EXIT_WAIT)
            raise
        finally:
            for w in self._workers:
                if w.link is not None and w.link.transport is not None:
                    w.link.transport.abort()
                elif w.link is None:
                    w.sock.close()
                if w.ring is not None:
                    w.ring.close()
                if w.process is not None and w.process.exitcode is not None:
                    w.process.close()

    # -- stats ---------------------------------------------------------------------------------

    def host_stats(self) -> dict[str, dict[str, Any]]:
        """Per-host stats of the workers' fetchers (their ``host_stats()``), merged."""
        return merge_host_stats(list(self._hosts.values()))


@final
class _RemoteCall:
    """The repeated call of one seed-style worker, in the process that owns its id."""

    __slots__ = ("_id", "_pool", "_size", "_worker")

    def __init__(self, pool: WorkerPool, worker: _Worker, worker_id: int, size: SizeHint) -> None:
        self._pool: Final = pool
        self._worker: Final = worker
        self._id: Final = worker_id
        self._size: Final = size

    def __call__(self) -> Awaitable[Outcome]:
        return self._pool.call(self._worker, (self._id, self._size()))

    def leftovers(self) -> list[Outcome]:
        return []
