"""What a fetcher is: the two call shapes, the resource hook, and how async ones are told apart.

A leaf module (it imports nothing of asyncfeed's at run time), so every room can use it.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .feed import Feed

__all__ = ["FeedResource", "FetchFn", "FetchOneFn", "is_async_callable"]


class FetchFn(Protocol):
    """Seed-style fetcher: ``fetch(worker_id, batch_size)`` returns a chunk or None.

    May be ``async def`` or a plain function. ``batch_size`` is a hint only.
    """

    def __call__(self, worker_id: int, batch_size: int, /) -> Any: ...


class FetchOneFn(Protocol):
    """Keyed fetcher: ``fetch_one(key)`` returns one chunk or None. Async or sync."""

    def __call__(self, key: Any, /) -> Any: ...


@runtime_checkable
class FeedResource(Protocol):
    """A fetcher with resources bound to the feed's event loop (a session, a decode pool).

    The feed calls ``open(feed)`` on its loop before its fetch workers start and
    ``aclose()`` after they ended, whether it stopped, failed or ran out of keys. An async
    context manager (``__aenter__`` / ``__aexit__``) works the same way. A fetcher may also
    have ``host_stats()`` returning per-host statistics (``FeedStats.hosts``).
    """

    async def open(self, feed: Feed) -> None:
        """Called on the feed's loop before its fetch workers start."""

    async def aclose(self) -> None:
        """Called on the feed's loop after its fetch workers ended; must not raise."""


def is_async_callable(fn: object) -> bool:
    """True for ``async def`` functions, partials of them, and objects with async __call__."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - looking for an async __call__
    )
