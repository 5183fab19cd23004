"""The asyncfeed exception tree.

Every error the library raises on purpose derives from :class:`AsyncFeedError`. Leaves also
derive from the builtin that callers already catch::

    AsyncFeedError
    ├── ConfigError(ValueError)        a constructor argument is out of range or of the wrong kind
    ├── ChunkError(ValueError)         a fetcher returned a chunk that does not fit the blobs
    ├── FetchError                     a fetcher raised; carries worker_id / key, chains the cause
    │   ├── HttpError                  an HTTP fetch failed for good: url, status, attempts
    │   └── DecodeError(ValueError)    bytes that are not a readable image or array: source
    ├── FeedStateError(RuntimeError)   an operation the feed's lifecycle does not allow now
    ├── FeedExhausted                  get() on a finite feed that delivered its last batch
    ├── FeedTimeoutError(TimeoutError) get(), stop() or a sink's blocking read ran past its timeout
    ├── RemoteTraceback                the traceback text of an exception raised in a worker process
    └── SinkError                      a sink failed to take a batch (other than by being closed)
        └── RecordError(ValueError)    a record does not fit the sink: blob count, unsupported dtype

All of them pickle, so they cross process-pool boundaries intact.
"""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

__all__ = [
    "AsyncFeedError",
    "ChunkError",
    "ConfigError",
    "DecodeError",
    "FeedExhausted",
    "FeedStateError",
    "FeedTimeoutError",
    "FetchError",
    "HttpError",
    "RecordError",
    "RemoteTraceback",
    "SinkError",
    "remote_error",
]


class AsyncFeedError(Exception):
    """Root of every error asyncfeed raises on purpose."""


class ConfigError(AsyncFeedError, ValueError):
    """A constructor argument is invalid; the message names it and the value given."""


class ChunkError(AsyncFeedError, ValueError):
    """A chunk does not fit the feed's blobs; the message names the blob, worker and shapes."""


class FeedStateError(AsyncFeedError, RuntimeError):
    """The feed's lifecycle does not allow the operation (e.g. iterating a feed never started)."""


class FeedExhausted(AsyncFeedError):
    """``get()`` was called on a finite feed that has delivered its last batch."""


class FeedTimeoutError(AsyncFeedError, TimeoutError):
    """``get()``, ``stop()`` or a sink's blocking read did not complete within its timeout."""


class RemoteTraceback(AsyncFeedError):
    """The formatted traceback of an exception raised in a worker process or a Ray actor.

    When the original exception is re-raised in the feed's process it carries this as its
    ``__cause__``, so the worker's stack shows in the consumer's traceback. It stands in for
    the original when that could not be pickled. ``str()`` is the traceback text.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text.rstrip()}\n"""'


def remote_error(pickled: bytes | None, text: str) -> BaseException:
    """An exception raised in a worker process or actor, rebuilt from its pickle, with its
    traceback text chained as the cause (the :class:`RemoteTraceback` alone when the
    exception did not pickle)."""
    cause = RemoteTraceback(text)
    try:
        exc = pickle.loads(pickled) if pickled is not None else None
    except Exception:
        exc = None
    if not isinstance(exc, Exception):
        return cause
    exc.__cause__ = cause
    return exc


class SinkError(AsyncFeedError):
    """A sink failed to accept a batch; the sink's own exception is chained."""


class RecordError(SinkError, ValueError):
    """A record does not fit the sink: wrong number of blobs, or a dtype it cannot hold."""


class FetchError(AsyncFeedError):
    """A fetcher failed.

    Attributes:
        worker_id: the fetch worker that failed, or ``None`` for keyed sources.
        key: the key whose fetch failed, or ``None`` for seed-style fetchers.

    The original exception is chained as ``__cause__``.
    """

    def __init__(self, message: str, *, worker_id: int | None = None, key: Any = None) -> None:
        super().__init__(message)
        self.worker_id = worker_id
        self.key = key

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_fetch_error, (str(self), self.worker_id, self.key))


def _rebuild_fetch_error(message: str, worker_id: int | None, key: Any) -> FetchError:
    return FetchError(message, worker_id=worker_id, key=key)


class HttpError(FetchError):
    """An HTTP fetch failed for good (not retried, or out of attempts).

    Attributes:
        url: the URL requested.
        status: the last HTTP status, or ``None`` when no response came (connection error,
            timeout).
        attempts: how many requests were made.
        kind: what went wrong, as counted in the per-host stats: ``"status"``, ``"timeout"``,
            ``"connection"``, ``"too_large"``, ``"content_type"`` or ``"url"``.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str,
        status: int | None = None,
        attempts: int = 1,
        kind: str = "status",
        key: Any = None,
    ) -> None:
        super().__init__(message, key=key)
        self.url = url
        self.status = status
        self.attempts = attempts
        self.kind = kind

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_http_error,
            (str(self), self.url, self.status, self.attempts, self.kind, self.key),
        )


def _rebuild_http_error(
    message: str, url: str, status: int | None, attempts: int, kind: str, key: Any
) -> HttpError:
    return HttpError(message, url=url, status=status, attempts=attempts, kind=kind, key=key)


class DecodeError(FetchError, ValueError):
    """Fetched bytes are not a readable image or array, or the image has too many pixels.

    Attributes:
        source: the URL or path the bytes came from.
    """

    def __init__(self, message: str, *, source: str, key: Any = None) -> None:
        super().__init__(message, key=key)
        self.source = source

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_decode_error, (str(self), self.source, self.key))


def _rebuild_decode_error(message: str, source: str, key: Any) -> DecodeError:
    return DecodeError(message, source=source, key=key)


def first_error(group: BaseExceptionGroup[Any]) -> BaseException:
    """The error to show a consumer from a task group's failure.

    An asyncfeed error first, else the first real (non-cancellation) one; a raw
    ``ExceptionGroup`` never reaches the user unless it holds nothing else.
    """
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        elif not isinstance(exc, asyncio.CancelledError):
            leaves.append(exc)

    walk(group)
    for exc in leaves:
        if isinstance(exc, AsyncFeedError):
            return exc
    return leaves[0] if leaves else group
