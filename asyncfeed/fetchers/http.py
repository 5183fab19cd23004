"""``HttpFetcher``: images over HTTP with aiohttp, retried, size-limited, decoded off the loop.

Use it as ``fetch_one`` for a keyed feed, or seed-style over an endless iterator of keys::

    fetcher = af.HttpFetcher(image=af.ImageOptions(size=(224, 224)))
    feed = af.Feed.from_keys(urls, fetcher, blobs=["data"], batch_size=32, concurrency=64)
    feed = af.Feed(fetcher.seed(itertools.cycle(records)), blobs=["data", "label"], ...)

The feed opens the fetcher on its own loop before the workers start: one
``aiohttp.ClientSession`` whose ``TCPConnector`` allows as many connections as the feed has
workers (keep-alive on), and a decode pool; both are closed when the feed stops. A session
passed in by the user is used as it is and never closed by the fetcher. A ``transform``
runs in the decode pool after decoding, so wrapping the fetcher in a function of your own
(which would hide it from the feed's open and close) is never needed.

Each fetch retries as ``retry.py`` says: capped exponential backoff with full jitter, or as
long as ``Retry-After`` says, for at most ``retry.attempts`` requests and ``retry.deadline``
seconds. A fetch that fails for good raises :class:`HttpError` (URL, status, attempts) or
:class:`DecodeError`; the feed's error policy then stops the feed or skips the key within
``max_errors``.

**Adaptive.** When the feed's ``concurrency`` is an :class:`~asyncfeed.Adaptive` (or with
``adaptive=True``), every host gets a :class:`~asyncfeed.adaptive.HostPolicy`: a concurrency
limit and a request rate that follow the host's answers, and a pause for its
``Retry-After``. Requests wait for their host's policy in a :class:`~.throttle.HostGate`
before they are sent; that wait is neither an attempt nor part of the retry deadline, and
a request refused with 429 (or any answer with ``Retry-After``) goes back to the front of
its host's line: the policy, not the backoff, decides when it goes again. A throttling
host costs time, never keys. What the fetcher learned about a host is kept across opens
(a feed per epoch), as long as the bounds stay the same.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping, Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, Final, TypeVar, final

import aiohttp
import numpy as np
from yarl import URL

from ..adaptive import Adaptive, HostPolicy, Outcome
from ..errors import ConfigError, DecodeError, HttpError
from ..options import check_positive_int
from .attempt import Failed, attempt, final_error
from .hoststats import HostStats
from .image_options import ImageOptions
from .loader import Loader, chunk_from, feed_concurrency, split_key
from .retry import Retry
from .throttle import HostGate
from .transform import Transform, check_transform, describe, load_image

if TYPE_CHECKING:
    from ..feed import Feed

__all__ = ["DEFAULT_TIMEOUT", "HttpFetcher"]

log = logging.getLogger("asyncfeed.http")

T = TypeVar("T")

MiB: Final = 1 << 20
DEFAULT_TIMEOUT: Final = aiohttp.ClientTimeout(total=60.0, connect=10.0, sock_read=20.0)
DEFAULT_LIMIT: Final = 64  # connections when opened outside a feed
IMAGE_TYPES: Final = ("image/", "application/octet-stream")


@final
class HttpFetcher(Loader):
    """Fetches images (or raw bytes) over HTTP; a ``fetch_one(key)`` for keyed feeds.

    Args:
        image: how images are decoded (size, fit, channels, max_pixels).
        session: an ``aiohttp.ClientSession`` to share (e.g. with the orchestrator); not
            closed by the fetcher, and its connector limit applies. Default: one session per
            open, created on the feed's loop.
        timeout: per-request timeouts (connect, sock_read, total); default
            :data:`DEFAULT_TIMEOUT`.
        retry: the retry policy; default ``Retry()``: up to 60 s of capped, jittered
            backoff for connection errors, timeouts, 408, 429 and 5xx (see ``retry.py``).
        max_bytes: largest body accepted, enforced while it streams (default 32 MiB).
        content_types: accepted content-type prefixes; None accepts any.
        limit: connections of the fetcher's own session; default: the feed's concurrency.
        headers: extra request headers.
        transform: ``fn(image, key)``, run in the decode pool on each decoded image; returns
            an array, a mapping of blob name to array, or None to drop the key (see
            ``transform.py``). Must pickle with ``processes=N``.
        executor, decode_threads: where decoding runs (see :class:`~asyncfeed.loader.Loader`).
        adaptive: per-host adaptive limits (see the module's docstring). None (default):
            when the feed's ``concurrency`` is an ``Adaptive``; True: always, with the
            feed's bounds or ``Adaptive()``'s; an ``Adaptive``: always, with its bounds;
            False: never. The host limit starts at ``initial`` and stays within
            ``[1, max]``.

    A key is a URL, a ``(url, label)`` pair or a mapping with ``"url"`` (and ``"label"``); the
    chunk is ``[image[None]]`` or ``[image[None], label[None]]`` (a transform's mapping:
    blob name → array, plus ``"label"``).

    Raises:
        ConfigError: for any invalid argument.
    """

    _kind = "http"

    def __init__(
        self,
        *,
        image: ImageOptions | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
        retry: Retry | None = None,
        max_bytes: int = 32 * MiB,
        content_types: Sequence[str] | None = IMAGE_TYPES,
        limit: int | None = None,
        headers: Mapping[str, str] | None = None,
        transform: Transform | None = None,
        executor: Executor | None = None,
        decode_threads: int | None = None,
        adaptive: bool | Adaptive | None = None,
    ) -> None:
        super().__init__(executor=executor, decode_threads=decode_threads)
        if adaptive is not None and not isinstance(adaptive, bool | Adaptive):
            raise ConfigError(f"adaptive must be None, a bool or an Adaptive, got {adaptive!r}")
        if image is not None and not isinstance(image, ImageOptions):
            raise ConfigError(f"image must be an ImageOptions, got {image!r}")
        if session is not None and not isinstance(session, aiohttp.ClientSession):
            raise ConfigError(f"session must be an aiohttp.ClientSession, got {session!r}")
        if timeout is not None and not isinstance(timeout, aiohttp.ClientTimeout):
            raise ConfigError(f"timeout must be an aiohttp.ClientTimeout, got {timeout!r}")
        if retry is not None and not isinstance(retry, Retry):
            raise ConfigError(f"retry must be a Retry, got {retry!r}")
        if content_types is not None and (
            isinstance(content_types, str) or not all(isinstance(t, str) for t in content_types)
        ):
            raise ConfigError(f"content_types must be a list of strings, got {content_types!r}")
        self._image: Final = image if image is not None else ImageOptions()
        self._user_session: Final = session
        self._timeout: Final = timeout if timeout is not None else DEFAULT_TIMEOUT
        self._retry: Final = retry if retry is not None else Retry()
        self._max_bytes: Final = check_positive_int("max_bytes", max_bytes)
        self._types: Final = None if content_types is None else tuple(content_types)
        self._limit: Final = None if limit is None else check_positive_int("limit", limit)
        self._headers: Final = dict(headers or {})
        self._transform: Final = check_transform(transform)
        self._adaptive_arg: Final = adaptive
        self._feed_adaptive: Adaptive | None = None
        self._adaptive: Adaptive | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stats = HostStats()
        self._gates: dict[str, HostGate] = {}  # while open, on its loop
        self._policies: dict[str, HostPolicy] = {}  # kept across opens: hosts stay learned
        self._held = 0

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        transform = f" transform={describe(self._transform)}" if self._transform else ""
        return f"<HttpFetcher {state} image={self._image} retry={self._retry}{transform}>"

    @property
    def session(self) -> aiohttp.ClientSession | None:
        """The session in use while open, else None."""
        return self._session

    @property
    def adaptive(self) -> Adaptive | None:
        """The adaptive bounds of the last open (None: fixed, no host limits)."""
        return self._adaptive

    def use_adaptive(self, adaptive: Adaptive | None) -> None:
        """Follow a feed's adaptive policy where the fetcher opens without the feed.

        A feed calls this before it hands the fetcher to worker processes, which open it
        lazily; ``open(feed)`` reads the feed's policy by itself. ``adaptive=False`` at
        construction still wins.
        """
        if adaptive is not None and not isinstance(adaptive, Adaptive):
            raise ConfigError(f"adaptive must be None or an Adaptive, got {adaptive!r}")
        self._feed_adaptive = adaptive

    def _resolve_adaptive(self, feed: Feed | None) -> Adaptive | None:
        arg = self._adaptive_arg
        if arg is False:
            return None
        if isinstance(arg, Adaptive):
            return arg
        followed = self._feed_adaptive
        if feed is not None:
            concurrency: object = feed.options.concurrency
            followed = concurrency if isinstance(concurrency, Adaptive) else None
        if arg is True:
            return followed or Adaptive()
        return followed

    def _open_resources(self, feed: Feed | None) -> None:
        adaptive = self._resolve_adaptive(feed)
        if adaptive != self._adaptive:
            self._policies = {}  # other bounds: learn again
        self._adaptive = adaptive
        if self._user_session is not None:
            self._session = self._user_session
            return
        limit = self._limit or _connections(feed)
        connector = aiohttp.TCPConnector(
            limit=limit, limit_per_host=0, keepalive_timeout=30.0, ttl_dns_cache=300
        )
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, headers=self._headers
        )

    async def _close_resources(self) -> None:
        gates, self._gates = self._gates, {}
        for gate in gates.values():
            gate.close()
        session, self._session = self._session, None
        if session is not None and session is not self._user_session:
            await session.close()

    def host_stats(self) -> dict[str, dict[str, Any]]:
        """Per host: requests by status class, bytes, retries by reason, errors by kind,
        latency histogram and p50/p99 (seconds), in flight, rate, held; with adaptive
        limits also ``limit``, ``rate_limit`` and their reasons (see ``hoststats.py``)."""
        hosts = self._stats.snapshot()
        now = time.monotonic()
        for host, policy in dict(self._policies).items():  # a copy: the loop may add hosts
            hosts.setdefault(host, {}).update(policy.snapshot(now))
        return hosts

    def _throttled(self) -> int:
        return self._held

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.update(_session=None, _gates={}, _policies={}, _held=0, _adaptive=None)
        del state["_stats"]  # holds a lock; a fresh one is made on unpickling
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._stats = HostStats()

    # -- fetching -------------------------------------------------------------------------

    async def __call__(self, key: Any) -> list[np.ndarray] | dict[str, np.ndarray] | None:
        """Fetch, decode and transform one key into a one-row chunk.

        Returns None when the transform dropped the key.

        Raises:
            HttpError: the fetch failed for good.
            DecodeError: the body is not a readable image, or has too many pixels.
            FetchError: the transform failed.
            FeedStateError: the fetcher is open on another event loop.
        """
        url, label = split_key(key, "url")
        source = str(url)
        data, host = await self._get(source, key)
        try:
            item = await self._in_pool(load_image, data, self._image, source, key, self._transform)
        except DecodeError:
            self._stats.failed(host, "decode", retried=False, responded=True)
            raise
        return None if item is None else chunk_from(item, label)

    async def fetch_bytes(self, url: str) -> bytes:
        """The body of ``url``, with the fetcher's retries and limits, undecoded.

        Raises:
            HttpError: the fetch failed for good.
            FeedStateError: the fetcher is open on another event loop.
        """
        data, _ = await self._get(url, url)
        return data

    async def _get(self, url: str, key: Any) -> tuple[bytes, str]:
        self._ensure_open()
        session = self._session
        assert session is not None
        target = URL(url)
        if target.scheme not in ("http", "https") or not target.host:
            raise HttpError(
                f"GET {url} refused: only absolute http and https URLs are fetched",
                url=url,
                attempts=0,
                kind="url",
                key=key,
            )
        host = target.host if target.is_default_port() else f"{target.host}:{target.port}"
        gate = self._gate(host)
        stats = self._stats
        policy = self._retry
        attempts = 0
        held = 0.0  # seconds held by the host's gate: not part of the retry deadline
        first = time.perf_counter()
        again = False
        while True:
            ticket = None
            if gate is not None:
                ticket = gate.try_acquire()
                if ticket is None:
                    since = time.perf_counter()
                    ticket = await self._held_for(host, gate.acquire(first=again))
                    held += time.perf_counter() - since
            attempts += 1
            stats.sent(host)
            start = time.perf_counter()
            try:
                data = await attempt(
                    session,
                    target,
                    timeout=self._timeout,
                    types=self._types,
                    max_bytes=self._max_bytes,
                )
            except Failed as exc:
                failure = exc
            except BaseException:  # cancelled: the request ends unobserved
                if gate is not None and ticket is not None:
                    gate.release(ticket, Outcome.CANCELLED)
                raise
            else:
                stats.request(host, time.perf_counter() - start, len(data))
                if gate is not None and ticket is not None:
                    gate.release(ticket, Outcome.OK)
                return data, host
            finally:
                stats.ended(host)
            now = time.perf_counter()
            paced = gate is not None and failure.paced
            if gate is not None and ticket is not None:
                gate.release(ticket, _outcome(failure), failure.retry_after)
            elapsed = now - first - held
            wait = None
            if failure.retry:  # adaptive: the gate holds a throttled request, not a sleep
                wait = policy.next_wait(attempts, elapsed, None if paced else failure.retry_after)
            responded = failure.status is not None
            if responded:
                stats.request(host, now - start, 0, failure.status)
            stats.failed(
                host,
                failure.reason,
                retried=wait is not None,
                responded=responded,
                latency=now - start,
            )
            if wait is None:
                error = final_error(url, key, attempts, failure, policy, elapsed)
                raise error from failure.__cause__
            again = True
            if paced:
                log.debug("GET %s attempt %d: %s; back in line", url, attempts, failure)
                continue
            log.debug("GET %s attempt %d: %s; retrying in %.3f s", url, attempts, failure, wait)
            await self._held_for(host, asyncio.sleep(wait))

    def _gate(self, host: str) -> HostGate | None:
        adaptive = self._adaptive
        if adaptive is None:
            return None
        gate = self._gates.get(host)
        if gate is None:
            policy = self._policies.get(host)
            if policy is None:
                policy = self._policies[host] = HostPolicy(adaptive)
            gate = self._gates[host] = HostGate(policy, asyncio.get_running_loop())
        return gate

    async def _held_for(self, host: str, wait: Awaitable[T]) -> T:
        """Await ``wait`` counted as a request held back (``load()``, ``held`` per host)."""
        self._held += 1
        self._stats.held(host, 1)
        since = time.perf_counter()
        try:
            return await wait
        finally:
            self._held -= 1
            self._stats.held(host, -1, time.perf_counter() - since)


def _outcome(failure: Failed) -> Outcome:
    if failure.status == 429:
        return Outcome.THROTTLED
    if failure.status == 503:
        return Outcome.UNAVAILABLE
    if failure.kind == "timeout":
        return Outcome.TIMEOUT
    return Outcome.FAILED


def _connections(feed: Feed | None) -> int:
    """Connections of the fetcher's own session: the feed's (largest) concurrency."""
    return DEFAULT_LIMIT if feed is None else feed_concurrency(feed)
