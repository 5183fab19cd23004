"""The ready fetchers' ``transform=fn`` hook: user code on each item, in the decode pool.

``fn(item, key)`` receives what the fetcher would otherwise put in the chunk (the decoded
image as :class:`~.image_options.ImageOptions` describes it; for ``FileFetcher`` also a
``.npy`` array or a ``.npz`` file's dict of arrays) and the key it came from. It returns:

- an array: the item's blob (the first; the label, when the key has one, is the second);
- a mapping of blob name to array: one blob each, and ``"label"`` added from the key unless
  the mapping has its own; name the feed's blobs after the mapping's keys;
- None: nothing for this key (counted by the feed as a call that returned nothing).

It runs in the fetcher's decode pool, right after decoding (one hop off the loop, never on
it). Its exceptions go through the feed's error policy as :class:`FetchError` naming the
source and the key, chained to the original; an asyncfeed error it raises passes as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..errors import AsyncFeedError, ConfigError, DecodeError, FetchError
from .decode import decode_image
from .image_options import ImageOptions

__all__ = ["Item", "Transform", "check_transform", "describe", "load_image", "run_transform"]

Transform = Callable[[Any, Any], Any]
Item = np.ndarray | dict[str, np.ndarray]


def check_transform(transform: object) -> Transform | None:
    """``transform`` if it is callable or None.

    Raises:
        ConfigError: anything else.
    """
    if transform is not None and not callable(transform):
        raise ConfigError(f"transform must be callable or None, got {transform!r}")
    return transform


def describe(transform: Transform | None) -> str:
    """A stable name for reprs: the qualified name of a function, else its type."""
    if transform is None:
        return "None"
    name = getattr(transform, "__qualname__", None) or type(transform).__qualname__
    return str(name)


def run_transform(transform: Transform, item: Any, key: Any, source: str) -> Item | None:
    """``transform(item, key)``, its result checked.

    Raises:
        FetchError: the transform raised (chained), or returned something other than an
            array, a mapping of names to arrays, or None; ``key`` is set.
    """
    try:
        result = transform(item, key)
    except FetchError as exc:
        if exc.key is None:
            exc.key = key
        raise
    except AsyncFeedError:
        raise
    except Exception as exc:
        raise FetchError(
            f"transform {describe(transform)} failed on {source}: {type(exc).__name__}: {exc}",
            key=key,
        ) from exc
    if result is None or isinstance(result, np.ndarray):
        return result
    if isinstance(result, Mapping) and all(
        isinstance(n, str) and isinstance(a, np.ndarray) for n, a in result.items()
    ):
        return dict(result)
    raise FetchError(
        f"transform {describe(transform)} returned {type(result).__name__} for {source}; "
        "expected a numpy array, a mapping of blob name to numpy array, or None",
        key=key,
    )


def load_image(
    data: bytes, options: ImageOptions, source: str, key: Any, transform: Transform | None
) -> Item | None:
    """Decode ``data`` and apply ``transform``: one call in the decode pool.

    Raises:
        DecodeError: the bytes are not a readable image (``key`` set).
        FetchError: the transform failed.
    """
    try:
        image = decode_image(data, options, source)
    except DecodeError as exc:
        exc.key = key
        raise
    if transform is None:
        return image
    return run_transform(transform, image, key, source)
