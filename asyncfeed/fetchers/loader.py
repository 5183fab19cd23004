"""What the HTTP and file fetchers share: key records, the decode pool, the lifecycle.

A key is a location (a URL or a path), or a record holding one and a label: a
``(location, label)`` pair or a mapping with ``"url"`` / ``"path"`` and ``"label"``. A fetched
item becomes a one-row chunk (:func:`chunk_from`): ``[image[None]]``, or
``[image[None], label[None]]`` when the key carries a label; an item that is a mapping of
arrays (a ``.npz`` file, a transform's result) becomes a mapping chunk, blob name → array,
with ``"label"`` added unless it has one.

Decoding runs in a :class:`~asyncfeed.bridge.DaemonThreadPool` (or the executor the user
passes), opened with the feed and closed after it, never on the event loop. Used outside a
feed (in a ``processes=N`` worker, or a script), a fetcher opens itself on the first call, in
the loop that makes it, and :meth:`Loader.aclose` (or ``async with``) closes it.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar, final

import numpy as np

from ..bridge import DaemonThreadPool, to_thread
from ..errors import ConfigError, FeedStateError, FetchError
from .decodeload import DecodeLoad

if TYPE_CHECKING:
    from ..feed import Feed

__all__ = [
    "NO_LABEL",
    "Loader",
    "SeedFetch",
    "chunk_from",
    "chunk_of",
    "feed_concurrency",
    "split_key",
]

log = logging.getLogger("asyncfeed.loader")

T = TypeVar("T")

NO_LABEL: Final = object()
POOL_JOIN_TIMEOUT: Final = 5.0


def feed_concurrency(feed: Feed) -> int:
    """The most fetch calls ``feed`` may have in flight (an adaptive policy's ``max``)."""
    concurrency: object = feed.options.concurrency
    if isinstance(concurrency, int):
        return concurrency
    bound = getattr(concurrency, "max", None)  # an Adaptive
    if isinstance(bound, int):
        return bound
    raise TypeError(f"feed concurrency {concurrency!r} is neither an int nor an Adaptive")


def split_key(key: Any, location: str) -> tuple[Any, Any]:
    """``(location, label)`` of a key; the label is ``NO_LABEL`` when the key has none.

    Raises:
        FetchError: the key is neither a location nor a record holding one.
    """
    if isinstance(key, str | os.PathLike):
        return key, NO_LABEL
    if isinstance(key, tuple | list) and len(key) == 2:
        return key[0], key[1]
    if isinstance(key, Mapping) and location in key:
        return key[location], key.get("label", NO_LABEL)
    raise FetchError(
        f"key {key!r} is not a {location}, a ({location}, label) pair or a mapping with "
        f"{location!r} (and 'label')",
        key=key,
    )


def chunk_of(item: np.ndarray, label: Any) -> list[np.ndarray]:
    """A one-row chunk holding ``item``, and ``label`` when the key carried one."""
    if label is NO_LABEL:
        return [item[None]]
    return [item[None], np.asarray(label)[None]]


def chunk_from(
    item: np.ndarray | Mapping[str, np.ndarray], label: Any, *, rows: bool = False
) -> list[np.ndarray] | dict[str, np.ndarray]:
    """The chunk of one fetched item, and its key's label.

    ``rows=False``: the item is one row (each array gets a leading dimension of 1);
    ``rows=True``: each array's first dimension holds the rows, and the label is repeated
    for each. A mapping item gives a mapping chunk; its own ``"label"`` wins over the key's.
    """
    if isinstance(item, Mapping):
        named = {name: a if rows else a[None] for name, a in item.items()}
        if label is not NO_LABEL and "label" not in named:
            count = next(iter(named.values())).shape[0] if named else 1
            named["label"] = _labels(label, count)
        return named
    if not rows:
        return chunk_of(item, label)
    if label is NO_LABEL:
        return [item]
    return [item, _labels(label, item.shape[0] if item.ndim else 1)]


def _labels(label: Any, count: int) -> np.ndarray:
    one = np.asarray(label)[None]
    return one if count == 1 else np.repeat(one, count, axis=0)


class Loader(abc.ABC):
    """Base of the ready-made fetchers: refcounted open/close on one loop, a decode pool.

    Args:
        executor: runs decoding; not shut down by the fetcher. Default: a pool of
            ``decode_threads`` daemon threads owned by the fetcher.
        decode_threads: size of the default pool (default: the number of CPUs).
        threads_arg: the subclass's name for ``decode_threads``, for error messages.
    """

    _kind = "fetcher"

    def __init__(
        self,
        *,
        executor: Executor | None,
        decode_threads: int | None,
        threads_arg: str = "decode_threads",
    ) -> None:
        if executor is not None and not isinstance(executor, Executor):
            raise ConfigError(f"executor must be a concurrent.futures.Executor, got {executor!r}")
        threads = decode_threads if decode_threads is not None else (os.cpu_count() or 1)
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"{threads_arg} must be an int >= 1, got {decode_threads!r}")
        self._executor = executor
        self._decode_threads = threads
        self._pool: Executor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._users = 0
        self._decode = DecodeLoad()

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self, feed: Feed | None = None) -> None:
        """Open on the running loop (a feed calls this); nested opens are counted.

        Raises:
            FeedStateError: the fetcher is open on another event loop.
        """
        loop = asyncio.get_running_loop()
        if self._users and self._loop is not loop:
            raise FeedStateError(f"{self._kind} is already open on another event loop")
        self._users += 1
        if self._users > 1:
            return
        try:
            self._start(loop, feed)
        except BaseException:
            self._users = 0
            await self._close_pool()
            raise

    def _start(self, loop: asyncio.AbstractEventLoop, feed: Feed | None) -> None:
        """Create the pool and the subclass's resources; no awaiting, so no interleaving."""
        self._loop = loop
        pool = self._executor
        if pool is None:
            pool = DaemonThreadPool(self._pool_size(feed), f"asyncfeed-{self._kind}-decode")
        self._pool = pool
        self._open_resources(feed)

    async def aclose(self) -> None:
        """Close once the last opener closes: resources first, then the decode pool."""
        if self._users == 0:
            return
        self._users -= 1
        if self._users:
            return
        try:
            await self._close_resources()
        finally:
            await self._close_pool()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _close_pool(self) -> None:
        pool, self._pool = self._pool, None
        self._loop = None
        if pool is None or pool is self._executor:
            return
        assert isinstance(pool, DaemonThreadPool)
        pool.shutdown(wait=False, cancel_futures=True)
        if not await to_thread(pool.join, POOL_JOIN_TIMEOUT, name=f"asyncfeed-{self._kind}-join"):
            log.debug("%s: decode threads still in a call finish on their own", self._kind)

    def _pool_size(self, feed: Feed | None) -> int:
        """Threads of the default pool."""
        return self._decode_threads

    def _open_resources(self, feed: Feed | None) -> None:
        """Subclasses: create loop-bound resources (no awaiting); none by default."""
        return None

    async def _close_resources(self) -> None:
        """Subclasses: close what :meth:`_open_resources` created; nothing by default."""
        return None

    @property
    def is_open(self) -> bool:
        return self._users > 0

    def _ensure_open(self) -> Executor:
        """The decode pool; the first call outside a feed opens the fetcher on this loop.

        A lazily opened fetcher (a worker process, a script) is closed by :meth:`aclose`.

        Raises:
            FeedStateError: the fetcher is open on another event loop.
        """
        loop = asyncio.get_running_loop()
        pool = self._pool
        if pool is None:
            self._users = 1
            try:
                self._start(loop, None)
            except BaseException:
                self._users = 0
                self._pool = self._loop = None
                raise
            pool = self._pool
            assert pool is not None
        elif self._loop is not loop:
            raise FeedStateError(f"{self._kind} is open on another event loop")
        return pool

    async def _in_pool(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in the decode pool; on cancel the call finishes unobserved."""
        pool = self._ensure_open()
        future = pool.submit(self._decode.wrap(fn, args))
        future.add_done_callback(self._decode.dropped)
        return await asyncio.wrap_future(future)

    def load(self) -> dict[str, int | float]:
        """What holds fetches up now; cheap, from any thread.

        ``decode_queued``: calls waiting for a decode thread; ``decode_running``: calls in
        one; ``decode_wait_s``: seconds all calls waited for a thread so far;
        ``throttled``: requests held back right now (retry backoff, ``Retry-After``, an
        adaptive limit or rate; always 0 for fetchers without them).
        """
        queued, running, wait = self._decode.snapshot()
        return {
            "decode_queued": queued,
            "decode_running": running,
            "decode_wait_s": wait,
            "throttled": self._throttled(),
        }

    def _throttled(self) -> int:
        """Subclasses: requests held back now."""
        return 0

    # -- seed-style use -------------------------------------------------------------------

    def seed(self, keys: Iterable[Any]) -> SeedFetch:
        """A seed-style ``fetch(worker_id, batch_size)`` fetching the next key of ``keys``.

        ``keys`` should be endless (``itertools.cycle``, a generator): seed-style feeds have
        no end of data, so an exhausted iterator raises :class:`FetchError`. For finite key
        lists use ``Feed.from_keys(keys, fetcher, ...)``.
        """
        return SeedFetch(self, iter(keys))

    def host_stats(self) -> Mapping[str, Mapping[str, Any]]:
        """Per-host statistics; empty for fetchers that have no hosts."""
        return {}

    @abc.abstractmethod
    async def __call__(self, key: Any) -> list[np.ndarray] | dict[str, np.ndarray] | None:
        """Fetch and decode one key into a chunk (None: a transform dropped it)."""

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the configuration only: resources are recreated in the loop that opens it."""
        state = dict(self.__dict__)
        state.update(_pool=None, _loop=None, _users=0)
        del state["_decode"]  # holds a lock; a fresh one is made on unpickling
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._decode = DecodeLoad()


@final
class SeedFetch:
    """Seed-style adapter: every call fetches the next key of a shared iterator.

    Opens, closes and reports host stats through the fetcher it wraps.
    """

    def __init__(self, fetcher: Loader, keys: Iterator[Any]) -> None:
        self.fetcher: Final = fetcher
        self._keys = keys

    async def __call__(
        self, worker_id: int, batch_size: int
    ) -> list[np.ndarray] | dict[str, np.ndarray] | None:
        try:
            key = next(self._keys)
        except StopIteration:
            raise FetchError(
                "the key iterator of a seed-style feed is exhausted; use "
                "Feed.from_keys(keys, fetcher, ...) for a finite list",
                worker_id=worker_id,
            ) from None
        return await self.fetcher(key)

    async def open(self, feed: Feed | None = None) -> None:
        await self.fetcher.open(feed)

    async def aclose(self) -> None:
        await self.fetcher.aclose()

    def host_stats(self) -> Mapping[str, Mapping[str, Any]]:
        return self.fetcher.host_stats()

    def load(self) -> dict[str, int | float]:
        return self.fetcher.load()

    def use_adaptive(self, adaptive: Any) -> None:
        """Forwarded to the fetcher, if it adapts (see ``HttpFetcher.use_adaptive``)."""
        use = getattr(self.fetcher, "use_adaptive", None)
        if use is not None:
            use(adaptive)
