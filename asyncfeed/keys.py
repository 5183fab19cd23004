"""Keyed sources: key iteration, sharding, and bounded in-order reassembly."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncGenerator, AsyncIterable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, cast, final

from .errors import ConfigError

__all__ = ["KeySpec", "Keys", "Reorderer", "Shard", "auto_shard", "check_shard", "iterate_keys"]

Keys = Iterable[Any] | AsyncIterable[Any]
#: ``from_keys(shard=...)``: ``(rank, world_size)``, ``"auto"``, or None for one rank.
Shard = tuple[int, int] | Literal["auto"] | None


@dataclass(frozen=True, slots=True)
class KeySpec:
    """The keys of a keyed feed and how they are walked: fixed when the feed is made."""

    keys: Keys
    ordered: bool
    shard: tuple[int, int]

    @classmethod
    def check(cls, keys: object, *, ordered: object, shard: object) -> KeySpec:
        """Validate ``from_keys``'s key options.

        Raises:
            ConfigError: the message names the option and the value given.
        """
        if not isinstance(keys, Iterable | AsyncIterable):
            raise ConfigError(f"keys must be an iterable or async iterable, got {keys!r}")
        if not isinstance(ordered, bool):
            raise ConfigError(f"ordered must be a bool, got {ordered!r}")
        return cls(keys, ordered, check_shard(shard))


def check_shard(shard: object) -> tuple[int, int]:
    """Validate ``shard=(rank, world_size)``; None means (0, 1); ``"auto"``: :func:`auto_shard`.

    Raises:
        ConfigError: not a pair of ints with ``0 <= rank < world_size``, or ``"auto"`` found
            a malformed ``RANK`` / ``WORLD_SIZE``.
    """
    if shard is None:
        return 0, 1
    if isinstance(shard, str) and shard == "auto":
        return auto_shard()
    try:
        rank, world_size = cast(tuple[object, object], shard)
    except (TypeError, ValueError):
        raise ConfigError(f"shard must be a (rank, world_size) pair, got {shard!r}") from None
    if not isinstance(rank, int) or not isinstance(world_size, int) or world_size < 1:
        raise ConfigError(f"shard must be (rank, world_size) with world_size >= 1, got {shard!r}")
    if not 0 <= rank < world_size:
        raise ConfigError(f"shard rank must be in [0, {world_size}), got {rank}")
    return rank, world_size


def auto_shard() -> tuple[int, int]:
    """This trainer's ``(rank, world_size)``: from an initialised ``torch.distributed`` group,
    else the ``RANK`` and ``WORLD_SIZE`` environment variables (torchrun, Ray Train and
    Slurm launchers set them), else ``(0, 1)``.

    Never imports torch: a group can only be initialised once torch is imported.

    Raises:
        ConfigError: ``RANK`` / ``WORLD_SIZE`` are set but not a valid pair.
    """
    dist: Any = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return check_shard((int(dist.get_rank()), int(dist.get_world_size())))
    rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    if rank is None and world is None:
        return 0, 1
    try:
        pair = (int(rank if rank is not None else ""), int(world if world is not None else ""))
    except ValueError:
        raise ConfigError(
            f"shard='auto' needs RANK and WORLD_SIZE to be ints, got RANK={rank!r} and "
            f"WORLD_SIZE={world!r}"
        ) from None
    try:
        return check_shard(pair)
    except ConfigError as exc:
        raise ConfigError(f"shard='auto' from RANK and WORLD_SIZE: {exc}") from None


async def iterate_keys(keys: Keys, shard: tuple[int, int]) -> AsyncGenerator[tuple[int, Any], None]:
    """Yield ``(sequence number, key)`` for every ``world_size``-th key from ``rank``.

    Sequence numbers count this shard's keys from 0; they fix the delivery order when
    ``ordered=True``.
    """
    rank, world_size = shard
    seq = 0
    index = 0
    if isinstance(keys, AsyncIterable):
        async for key in keys:
            if index % world_size == rank:
                yield seq, key
                seq += 1
            index += 1
        return
    for key in keys:
        if index % world_size == rank:
            yield seq, key
            seq += 1
        index += 1


@final
class Reorderer:
    """Lets results through in sequence order.

    Each fetch worker holds at most one finished result while it waits for its turn, so the
    memory spent on reordering is bounded by the feed's concurrency.
    """

    __slots__ = ("_next", "_waiters")

    def __init__(self) -> None:
        self._next = 0
        self._waiters: dict[int, asyncio.Future[None]] = {}

    async def wait_turn(self, seq: int) -> None:
        """Return once every result before ``seq`` has been released."""
        if seq == self._next:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[seq] = fut
        try:
            await fut
        finally:
            self._waiters.pop(seq, None)

    def done(self, seq: int) -> None:
        """Release ``seq`` (delivered or skipped); wake the next in line."""
        self._next = seq + 1
        fut = self._waiters.get(self._next)
        if fut is not None and not fut.done():
            fut.set_result(None)
