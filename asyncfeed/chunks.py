"""Chunk checks: one array per blob, equal first dimensions, a fixed dtype and trailing shape.

Pure and synchronous. A fetcher may return a sequence of arrays (one per blob, in blob order)
or a mapping from blob name to array. The first non-empty chunk fixes each blob's dtype and
trailing shape; every later chunk must match it. Violations raise :class:`ChunkError` naming
the blob, the origin (worker id or key) and the shapes or dtypes involved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, final

import numpy as np

from .errors import ChunkError

Arrays = tuple[np.ndarray, ...]


def describe_origin(worker_id: int | None, key: Any) -> str:
    """Human-readable origin of a chunk, for error messages."""
    if key is not None:
        return f"key {key!r}"
    return f"worker {worker_id}"


@final
class ChunkSchema:
    """Validates chunks for a fixed list of blob names.

    The schema (dtype and trailing shape per blob) is fixed by the first non-empty chunk and
    never changes afterwards; feeds that share a source share one schema.
    """

    __slots__ = ("_specs", "blobs")

    def __init__(self, blobs: Sequence[str]) -> None:
        self.blobs: Final = tuple(blobs)
        self._specs: tuple[tuple[np.dtype[Any], tuple[int, ...]], ...] | None = None

    @property
    def specs(self) -> tuple[tuple[np.dtype[Any], tuple[int, ...]], ...] | None:
        """(dtype, trailing shape) per blob once fixed, else None."""
        return self._specs

    def check(self, chunk: object, *, worker_id: int | None = None, key: Any = None) -> Arrays:
        """Return the chunk's arrays in blob order, or raise :class:`ChunkError`.

        A zero-row chunk is returned as is (the caller counts and skips it) once its arrays
        are well formed; it does not fix the schema.
        """
        specs = self._specs
        if specs is not None and type(chunk) in (list, tuple):
            fast = self._check_fast(chunk, specs)  # type: ignore[arg-type]
            if fast is not None:
                return fast
        arrays = self._arrays(chunk, worker_id, key)
        rows = -1
        for name, arr in zip(self.blobs, arrays, strict=True):
            if not isinstance(arr, np.ndarray):
                raise ChunkError(
                    f"blob {name!r} from {describe_origin(worker_id, key)}: expected a "
                    f"numpy.ndarray, got {type(arr).__name__}"
                )
            if arr.ndim == 0:
                raise ChunkError(
                    f"blob {name!r} from {describe_origin(worker_id, key)}: got a 0-d array; "
                    "a chunk needs a first (row) dimension"
                )
            if arr.dtype.hasobject:
                raise ChunkError(
                    f"blob {name!r} from {describe_origin(worker_id, key)}: dtype {arr.dtype} "
                    "holds Python objects, which cannot be batched"
                )
            if rows < 0:
                rows = arr.shape[0]
            elif arr.shape[0] != rows:
                shapes = ", ".join(
                    f"{n!r}: {a.shape}" for n, a in zip(self.blobs, arrays, strict=True)
                )
                raise ChunkError(
                    f"blob {name!r} from {describe_origin(worker_id, key)}: first dimensions "
                    f"differ between blobs ({shapes})"
                )
        if self._specs is None:
            if rows > 0:
                self._specs = tuple((a.dtype, a.shape[1:]) for a in arrays)
            return arrays
        for name, arr, (dtype, trailing) in zip(self.blobs, arrays, self._specs, strict=True):
            if arr.dtype != dtype or arr.shape[1:] != trailing:
                fixed = "(N" + "".join(f", {d}" for d in trailing) + ")"
                raise ChunkError(
                    f"blob {name!r} from {describe_origin(worker_id, key)}: got dtype "
                    f"{arr.dtype} and shape {arr.shape}, but the blob's first chunk fixed "
                    f"dtype {dtype} and shape {fixed}"
                )
        return arrays

    def rows_if_valid(self, chunk: object) -> int:
        """Rows ``chunk`` holds if it would pass :meth:`check`, else 0.

        Leaves the schema as it is, so it is safe off the loop (abandoned calls' late results).
        """
        probe = ChunkSchema(self.blobs)
        probe._specs = self._specs
        try:
            return int(probe.check(chunk)[0].shape[0])
        except Exception:
            return 0

    @staticmethod
    def _check_fast(
        chunk: list[object] | tuple[object, ...],
        specs: tuple[tuple[np.dtype[Any], tuple[int, ...]], ...],
    ) -> Arrays | None:
        """The common case, checked cheaply: None sends the chunk to the full check."""
        if len(chunk) != len(specs):
            return None
        rows = -1
        ndarray = np.ndarray
        for arr, (dtype, trailing) in zip(chunk, specs, strict=False):  # lengths checked
            if type(arr) is not ndarray:
                return None
            got = arr.dtype
            if got is not dtype and got != dtype:  # builtin dtypes are usually one object
                return None
            shape = arr.shape
            if shape[1:] != trailing or not shape:
                return None
            if rows < 0:
                rows = shape[0]
            elif shape[0] != rows:
                return None
        return tuple(chunk)  # type: ignore[arg-type]

    def _arrays(self, chunk: object, worker_id: int | None, key: Any) -> Arrays:
        if isinstance(chunk, Mapping):
            names = set(chunk)
            if names != set(self.blobs):
                missing = sorted(set(self.blobs) - names)
                extra = sorted(map(str, names - set(self.blobs)))
                raise ChunkError(
                    f"chunk from {describe_origin(worker_id, key)}: mapping keys do not match "
                    f"the blobs {list(self.blobs)} (missing {missing}, unexpected {extra})"
                )
            return tuple(chunk[n] for n in self.blobs)
        if not isinstance(chunk, list | tuple):
            raise ChunkError(
                f"chunk from {describe_origin(worker_id, key)}: expected a list of "
                f"{len(self.blobs)} arrays (one per blob {list(self.blobs)}), "
                f"got {type(chunk).__name__}"
            )
        if len(chunk) != len(self.blobs):
            raise ChunkError(
                f"chunk from {describe_origin(worker_id, key)}: expected {len(self.blobs)} "
                f"arrays (one per blob {list(self.blobs)}), got {len(chunk)}"
            )
        return tuple(chunk)
