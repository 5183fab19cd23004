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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, Final, final

import aiohttp
import numpy as np
from yarl import URL

from ..errors import ConfigError, DecodeError, HttpError
from ..options import check_positive_int
from .hoststats import HostStats
from .image_options import ImageOptions
from .loader import Loader, chunk_from, split_key
from .retry import Retry, parse_retry_after, retryable_status
from .transform import Transform, check_transform, describe, load_image

if TYPE_CHECKING:
    from ..feed import Feed

__all__ = ["DEFAULT_TIMEOUT", "HttpFetcher"]

log = logging.getLogger("asyncfeed.http")

MiB: Final = 1 << 20
DEFAULT_TIMEOUT: Final = aiohttp.ClientTimeout(total=60.0, connect=10.0, sock_read=20.0)
DEFAULT_LIMIT: Final = 64  # connections when opened outside a feed
IMAGE_TYPES: Final = ("image/", "application/octet-stream")
ERROR_BODY_READ: Final = 64 << 10


class _Failed(Exception):
    """One failed attempt: its kind, status, whether to retry, and a Retry-After wait."""

    def __init__(
        self,
        kind: str,
        detail: str,
        *,
        status: int | None = None,
        retry: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.status = status
        self.retry = retry
        self.retry_after = retry_after


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
    ) -> None:
        super().__init__(executor=executor, decode_threads=decode_threads)
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
        self._session: aiohttp.ClientSession | None = None
        self._stats = HostStats()

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        transform = f" transform={describe(self._transform)}" if self._transform else ""
        return f"<HttpFetcher {state} image={self._image} retry={self._retry}{transform}>"

    @property
    def session(self) -> aiohttp.ClientSession | None:
        """The session in use while open, else None."""
        return self._session

    def _open_resources(self, feed: Feed | None) -> None:
        if self._user_session is not None:
            self._session = self._user_session
            return
        limit = self._limit or (feed.concurrency if feed is not None else DEFAULT_LIMIT)
        connector = aiohttp.TCPConnector(
            limit=limit, limit_per_host=0, keepalive_timeout=30.0, ttl_dns_cache=300
        )
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, headers=self._headers
        )

    async def _close_resources(self) -> None:
        session, self._session = self._session, None
        if session is not None and session is not self._user_session:
            await session.close()

    def host_stats(self) -> dict[str, dict[str, Any]]:
        """Per host: requests, bytes, retries, errors by kind, latency p50/p99 (seconds)."""
        return self._stats.snapshot()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.update(_session=None)
        del state["_stats"]  # holds a lock; a fresh one is made on unpickling
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
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
        stats = self._stats
        policy = self._retry
        attempt = 0
        first = time.perf_counter()
        while True:
            attempt += 1
            start = time.perf_counter()
            try:
                data = await self._get_once(session, target)
            except _Failed as exc:
                failure, cause = exc, exc.__cause__
            except TimeoutError as exc:
                detail = f"timed out ({_describe(self._timeout)})"
                failure, cause = _Failed("timeout", detail, retry=True), exc
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
                detail = f"{type(exc).__name__}: {exc}"
                failure, cause = _Failed("connection", detail, retry=True), exc
            except aiohttp.ClientError as exc:
                failure, cause = _Failed("client", f"{type(exc).__name__}: {exc}"), exc
            else:
                stats.request(host, time.perf_counter() - start, len(data))
                return data, host
            now = time.perf_counter()
            wait = None
            if failure.retry:
                wait = policy.next_wait(attempt, now - first, failure.retry_after)
            responded = failure.status is not None
            if responded:
                stats.request(host, now - start, 0)
            kind = f"http_{failure.status}" if failure.kind == "status" else failure.kind
            stats.failed(host, kind, retried=wait is not None, responded=responded)
            if wait is None:
                raise _final_error(url, key, attempt, failure, policy, now - first) from cause
            log.debug("GET %s attempt %d: %s; retrying in %.3f s", url, attempt, failure, wait)
            await asyncio.sleep(wait)

    async def _get_once(self, session: aiohttp.ClientSession, target: URL) -> bytes:
        async with session.get(target, timeout=self._timeout) as resp:
            status = resp.status
            if not 200 <= status < 300:
                retry = retryable_status(status)
                retry_after = None
                if retry:
                    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                length = resp.content_length
                if length is not None and length <= ERROR_BODY_READ:
                    await resp.read()  # a short error body: read it so the connection is reused
                raise _Failed(
                    "status",
                    f"HTTP {status} {resp.reason or ''}".rstrip(),
                    status=status,
                    retry=retry,
                    retry_after=retry_after,
                )
            types = self._types
            if types is not None and not resp.content_type.startswith(types):
                raise _Failed(
                    "content_type",
                    f"content type {resp.content_type!r} is not one of {list(types)}",
                    status=status,
                )
            limit = self._max_bytes
            length = resp.content_length
            if length is not None and length > limit:
                raise _Failed(
                    "too_large",
                    f"body of {length:,} bytes is larger than max_bytes={limit:,}",
                    status=status,
                )
            if length is not None and resp.headers.get("Content-Encoding", "identity") in (
                "identity",
                "",
            ):
                return await resp.read()  # the parser stops at Content-Length
            return await _read_limited(resp, limit, status)


async def _read_limited(resp: aiohttp.ClientResponse, limit: int, status: int) -> bytes:
    """Read a body of unknown length, failing as soon as it passes ``limit`` bytes."""
    buf = bytearray()
    async for piece in resp.content.iter_any():
        buf += piece
        if len(buf) > limit:
            raise _Failed(
                "too_large",
                f"body is larger than max_bytes={limit:,} (stopped reading at {len(buf):,})",
                status=status,
            )
    return bytes(buf)


def _final_error(
    url: str, key: Any, attempts: int, failure: _Failed, policy: Retry, elapsed: float
) -> HttpError:
    plural = "s" if attempts != 1 else ""
    if failure.status is not None and failure.kind == "status":
        what = str(failure)
    elif failure.status is not None:
        what = f"HTTP {failure.status}, {failure}"
    else:
        what = f"no response (status none), {failure}"
    why = ""
    if failure.retry and attempts < policy.attempts:  # the deadline ended the retries
        left = policy.deadline - elapsed
        if failure.retry_after is not None and 0 < left < failure.retry_after:
            why = (
                f" (Retry-After {failure.retry_after:g} s ends past the retry deadline, "
                f"{left:.1f} s away)"
            )
        else:
            why = f" in {elapsed:.1f} s (retry deadline {policy.deadline:g} s)"
    return HttpError(
        f"GET {url} failed after {attempts} attempt{plural}{why}: {what}",
        url=url,
        status=failure.status,
        attempts=attempts,
        kind=failure.kind,
        key=key,
    )


def _describe(timeout: aiohttp.ClientTimeout) -> str:
    parts = [
        f"{name}={value} s"
        for name in ("total", "connect", "sock_connect", "sock_read")
        if (value := getattr(timeout, name)) is not None
    ]
    return ", ".join(parts) or "no limits"
