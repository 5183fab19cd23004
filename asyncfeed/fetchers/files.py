"""``FileFetcher``: local images, ``.npy`` and ``.npz`` files, read with aiofiles, decoded off-loop.

Use it as ``fetch_one`` for a keyed feed over paths, for example a directory walked lazily::

    feed = af.Feed.from_keys(af.iter_files("data/train"), af.FileFetcher(), blobs=["data"], ...)

Reads, decoding and the optional ``transform`` run in the fetcher's thread pool (from
``bridge.py``), opened with the feed and closed after it. Every error names the path.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, Final, Literal, final

import aiofiles
import numpy as np

from ..errors import ConfigError, DecodeError, FetchError
from ..options import check_positive_int
from .decode import decode_image
from .image_options import ImageOptions
from .loader import Loader, chunk_from, feed_concurrency, split_key
from .transform import Item, Transform, check_transform, describe, run_transform

if TYPE_CHECKING:
    from ..feed import Feed

__all__ = ["FileFetcher", "iter_files"]

IMAGE_SUFFIXES: Final = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
ARRAY_SUFFIXES: Final = (".npy", ".npz")
MAX_IO_THREADS: Final = 32


def iter_files(
    root: str | os.PathLike[str], suffixes: Iterable[str] = IMAGE_SUFFIXES + ARRAY_SUFFIXES
) -> Iterator[str]:
    """Paths of the files under ``root`` with one of ``suffixes`` (case-insensitive).

    Lazy and depth-first in name order: a directory is listed when the walk reaches it, so
    the order is stable and a huge tree starts streaming at once.
    """
    wanted = tuple(s.lower() for s in suffixes)
    stack = [_listing(os.fspath(root))]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
        elif entry.is_dir():
            stack.append(_listing(entry.path))
        elif entry.name.lower().endswith(wanted):
            yield entry.path


def _listing(directory: str) -> Iterator[os.DirEntry[str]]:
    with os.scandir(directory) as it:
        return iter(sorted(it, key=lambda e: e.name))


def decode_file(
    data: bytes, path: str, image: ImageOptions, arrays: str
) -> tuple[np.ndarray | dict[str, np.ndarray], bool]:
    """Decode a file's bytes by its suffix: ``(value, value holds rows)``.

    The value is an image or ``.npy`` array, or an ``.npz`` file's arrays by name. It holds
    rows (a first dimension to batch along) only for arrays with ``arrays="chunk"``.

    Raises:
        DecodeError: the bytes do not hold what the suffix says; the message names ``path``.
    """
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in ARRAY_SUFFIXES:
        return decode_image(data, image, path), False
    try:
        if suffix == ".npy":
            value: np.ndarray | dict[str, np.ndarray] = np.load(
                io.BytesIO(data), allow_pickle=False
            )
        else:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                value = {name: npz[name] for name in npz.files}
    except Exception as exc:
        raise DecodeError(f"cannot load {path}: {type(exc).__name__}: {exc}", source=path) from exc
    return value, arrays == "chunk"


def load_file(
    data: bytes,
    path: str,
    key: Any,
    image: ImageOptions,
    arrays: str,
    transform: Transform | None,
) -> tuple[Item | None, bool]:
    """:func:`decode_file`, then ``transform``: one call in the decode pool.

    Raises:
        DecodeError: as :func:`decode_file` (``key`` set).
        FetchError: the transform failed.
    """
    try:
        value, many = decode_file(data, path, image, arrays)
    except DecodeError as exc:
        exc.key = key
        raise
    if transform is None:
        return value, many
    return run_transform(transform, value, key, path), many


@final
class FileFetcher(Loader):
    """Reads and decodes local files; a ``fetch_one(key)`` for keyed feeds.

    Args:
        image: how images are decoded (size, fit, channels, max_pixels).
        arrays: ``"row"``: each ``.npy`` / ``.npz`` file is one row; ``"chunk"``: its arrays'
            first dimension holds the rows.
        max_bytes: largest file read (default 256 MiB).
        executor: where reads and decoding run; not shut down by the fetcher. Default: a
            pool owned by the fetcher with ``threads`` daemon threads (default: the feed's
            concurrency, at most 32, and at least the number of CPUs).
        threads: size of the default pool.
        transform: ``fn(value, key)``, run in the pool on each decoded file (an image, a
            ``.npy`` array or a ``.npz`` file's dict of arrays); returns an array, a mapping
            of blob name to array, or None to drop the key (see ``transform.py``). With
            ``arrays="chunk"`` it sees an array file whole, and returns rows.

    A key is a path, a ``(path, label)`` pair or a mapping with ``"path"`` (and ``"label"``).
    Images and ``.npy`` files give ``[array]`` (``[array, label]`` with a label); ``.npz``
    files give a mapping from array name to array (plus ``"label"``), so name the blobs after
    the arrays.

    Raises:
        ConfigError: for any invalid argument.
    """

    _kind = "files"

    def __init__(
        self,
        *,
        image: ImageOptions | None = None,
        arrays: Literal["row", "chunk"] = "row",
        max_bytes: int = 256 << 20,
        executor: Executor | None = None,
        threads: int | None = None,
        transform: Transform | None = None,
    ) -> None:
        super().__init__(executor=executor, decode_threads=threads, threads_arg="threads")
        if image is not None and not isinstance(image, ImageOptions):
            raise ConfigError(f"image must be an ImageOptions, got {image!r}")
        if arrays not in ("row", "chunk"):
            raise ConfigError(f"arrays must be 'row' or 'chunk', got {arrays!r}")
        self._image: Final = image if image is not None else ImageOptions()
        self._arrays: Final = arrays
        self._max_bytes: Final = check_positive_int("max_bytes", max_bytes)
        self._threads_given: Final = threads is not None
        self._transform: Final = check_transform(transform)

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        transform = f" transform={describe(self._transform)}" if self._transform else ""
        return f"<FileFetcher {state} image={self._image} arrays={self._arrays!r}{transform}>"

    def _pool_size(self, feed: Feed | None) -> int:
        """Reads block on the disk: by default one thread per fetch worker, up to a cap."""
        if self._threads_given or feed is None:
            return self._decode_threads
        return max(self._decode_threads, min(feed_concurrency(feed), MAX_IO_THREADS))

    async def __call__(self, key: Any) -> list[np.ndarray] | dict[str, np.ndarray] | None:
        """Read, decode and transform one file into a one-row chunk (or a chunk of its rows).

        Returns None when the transform dropped the key.

        Raises:
            FetchError: the file cannot be read (missing, unreadable, too large), or the
                transform failed.
            DecodeError: its bytes are not what its suffix says.
            FeedStateError: the fetcher is open on another event loop.
        """
        location, label = split_key(key, "path")
        path = os.fspath(location)
        pool = self._ensure_open()
        limit = self._max_bytes
        try:
            # Not 'async with': aiofiles' __aexit__ closes in the default executor, not ours.
            f = await aiofiles.open(path, "rb", executor=pool)
            try:
                data = await f.read(limit + 1)
            finally:
                await f.close()
        except OSError as exc:
            raise FetchError(
                f"cannot read {path}: {exc.strerror or type(exc).__name__}", key=key
            ) from exc
        if len(data) > limit:
            raise FetchError(f"cannot read {path}: larger than max_bytes={limit:,}", key=key)
        item, many = await self._in_pool(
            load_file, data, path, key, self._image, self._arrays, self._transform
        )
        return None if item is None else chunk_from(item, label, rows=many)
