"""Fetchers that own resources (an HTTP session, a decode pool) opened and closed with a feed.

A fetcher object may hold resources that must live on the loop that runs the feed. The feed's
runner opens them before the fetch workers start and closes them after the workers ended,
whether the feed stopped, failed or ran out of keys:

- an object with ``async open(feed)`` and ``async aclose()`` (see :class:`FeedResource`), or
- an async context manager (``__aenter__`` / ``__aexit__``).

A fetcher may also expose ``host_stats()`` returning per-host statistics; ``Feed.stats()``
puts them in ``FeedStats.hosts``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .bridge import to_thread
from .errors import AsyncFeedError, FetchError
from .protocols import is_async_callable

if TYPE_CHECKING:
    from .feed import Feed

__all__ = ["call_init", "fetcher_host_stats", "open_fetcher"]

log = logging.getLogger("asyncfeed.resources")


async def open_fetcher(fn: object, feed: Feed, stack: contextlib.AsyncExitStack) -> None:
    """Open ``fn``'s resources, if it has any, and register their closing on ``stack``.

    Raises:
        FetchError: opening failed (an asyncfeed error passes as it is).
    """
    try:
        if inspect.iscoroutinefunction(getattr(fn, "open", None)) and inspect.iscoroutinefunction(
            getattr(fn, "aclose", None)
        ):
            resource: Any = fn
            await resource.open(feed)
            stack.push_async_callback(_close_quietly, resource.aclose, fn)
        elif hasattr(fn, "__aenter__") and hasattr(fn, "__aexit__"):
            manager: Any = fn
            await manager.__aenter__()
            stack.push_async_callback(
                _close_quietly, functools.partial(manager.__aexit__, None, None, None), fn
            )
    except AsyncFeedError:
        raise
    except Exception as exc:
        raise FetchError(f"opening the fetcher {fn!r} failed: {type(exc).__name__}: {exc}") from exc


async def _close_quietly(aclose: Any, fn: object) -> None:
    try:
        await aclose()
    except Exception:
        log.exception("closing the fetcher %r failed; ignored", fn)


def fetcher_host_stats(fn: object) -> Mapping[str, Mapping[str, Any]]:
    """``fn.host_stats()`` when the fetcher has it, else an empty mapping."""
    host_stats = getattr(fn, "host_stats", None)
    if host_stats is None:
        return {}
    stats: Mapping[str, Mapping[str, Any]] = host_stats()
    return stats


async def call_init(init_fun: Callable[[Feed], Any], feed: Feed, source: str) -> None:
    """Call a feed's ``init_fun(feed)``: awaited if async, else on a thread of its own.

    Raises:
        FetchError: ``init_fun`` raised; chained to it.
    """
    try:
        if is_async_callable(init_fun):
            await init_fun(feed)
        else:
            await to_thread(init_fun, feed, name=f"asyncfeed-{source}-init")
    except Exception as exc:
        raise FetchError(f"init_fun {init_fun!r} failed: {type(exc).__name__}: {exc}") from exc
