"""Keyed sources: what the keys are and how they are walked, sharding, in-order reassembly.

A keyed feed walks its keys epoch after epoch (``epochs``), each epoch in its own order
(``shuffle``, ``seed``), and takes its rank's share (``shard``) by position in that order.
``epochs.py`` turns a :class:`KeySpec` into each epoch's keys; ``checkpoint.py`` records
which of them the consumer received.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterable, Callable, Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass
from typing import Any, Final, Literal, cast, final

from .errors import ConfigError

__all__ = ["KeySpec", "KeyedFetch", "Keys", "Reorderer", "Shard", "auto_shard", "check_shard"]

#: Keys: a sequence, a callable returning a fresh (async) iterable each epoch, or a one-shot
#: (async) iterable (one epoch only).
Keys = Iterable[Any] | AsyncIterable[Any] | Callable[[], Iterable[Any] | AsyncIterable[Any]]


def _one_shot(keys: object) -> bool:
    """True for iterators and async iterators: they can be walked once only."""
    if isinstance(keys, AsyncIterable):
        return keys.__aiter__() is keys
    return isinstance(keys, Iterable) and iter(keys) is keys


#: ``from_keys(shard=...)``: ``(rank, world_size)``, ``"auto"``, or None for one rank.
Shard = tuple[int, int] | Literal["auto"] | None


@dataclass(frozen=True, slots=True)
class KeySpec:
    """The keys of a keyed feed and how they are walked: fixed when the feed is made.

    Attributes:
        keys: see :data:`Keys`.
        ordered: deliver rows in key order.
        shard: ``(rank, world_size)``; this rank takes the positions ``p`` of each epoch's
            order with ``p % world_size == rank``.
        epochs: passes over the keys; None: forever.
        shuffle: walk each epoch in its own seeded order.
        seed: the shuffle's seed; epoch ``e`` of a sequence walks
            ``numpy.random.default_rng([seed, e]).permutation(len(keys))``.
        shuffle_buffer: a window shuffle over this many keys (for iterables; with a
            sequence, instead of the full permutation).
        state: a checkpoint to resume from (``Feed.state_dict()``, or ``Feed.merge_states``).
    """

    keys: Keys
    ordered: bool
    shard: tuple[int, int]
    epochs: int | None = 1
    shuffle: bool = False
    seed: int = 0
    shuffle_buffer: int | None = None
    state: Mapping[str, Any] | None = None

    @classmethod
    def check(
        cls,
        keys: object,
        *,
        ordered: object,
        shard: object,
        epochs: object = 1,
        shuffle: object = False,
        seed: object = 0,
        shuffle_buffer: object = None,
        state: object = None,
    ) -> KeySpec:
        """Validate ``from_keys``'s key options.

        Raises:
            ConfigError: the message names the option and the value given.
        """
        if isinstance(keys, str | bytes):
            raise ConfigError(f"keys must be a collection of keys, got the string {keys!r}")
        if not (isinstance(keys, Iterable | AsyncIterable) or callable(keys)):
            raise ConfigError(
                f"keys must be a sequence, an iterable or async iterable, or a callable "
                f"returning one, got {keys!r}"
            )
        for name, flag in (("ordered", ordered), ("shuffle", shuffle)):
            if not isinstance(flag, bool):
                raise ConfigError(f"{name} must be a bool, got {flag!r}")
        if epochs is not None and (
            isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1
        ):
            raise ConfigError(f"epochs must be an int >= 1 or None (forever), got {epochs!r}")
        if epochs != 1 and _one_shot(keys):
            raise ConfigError(
                f"epochs={epochs} needs keys that can be walked again: a sequence, or a "
                f"callable returning a fresh iterable; got the one-shot {keys!r}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed must be an int >= 0, got {seed!r}")
        if shuffle_buffer is not None and (
            isinstance(shuffle_buffer, bool)
            or not isinstance(shuffle_buffer, int)
            or shuffle_buffer < 1
        ):
            raise ConfigError(f"shuffle_buffer must be an int >= 1 or None, got {shuffle_buffer!r}")
        if shuffle and shuffle_buffer is None and not isinstance(keys, Sequence):
            raise ConfigError(
                "shuffle=True with keys that are not a sequence needs shuffle_buffer=N "
                "(a window shuffle over N keys)"
            )
        if state is not None and not isinstance(state, Mapping):
            raise ConfigError(f"state must be a dict from Feed.state_dict(), got {state!r}")
        return cls(
            keys=cast(Keys, keys),
            ordered=ordered,  # type: ignore[arg-type]
            shard=check_shard(shard),
            epochs=epochs,
            shuffle=shuffle,  # type: ignore[arg-type]
            seed=seed,
            shuffle_buffer=shuffle_buffer,
            state=state,
        )

    @property
    def size(self) -> int | None:
        """How many keys an epoch has, when the keys say (a sized collection)."""
        return len(self.keys) if isinstance(self.keys, Sized) else None

    def batches(self, batch_size: int, *, drop_last: bool) -> int:
        """Batches of one row per key this rank's share of an epoch makes.

        Raises:
            TypeError: the keys have no ``len()``.
        """
        size = self.size
        if size is None:
            raise TypeError(f"the keys of this feed have no len(): {self.keys!r}")
        rank, world_size = self.shard
        mine = len(range(rank, size, world_size))
        return mine // batch_size if drop_last else -(-mine // batch_size)


@final
class KeyedFetch:
    """What ``Feed.from_keys`` hands ``Feed.__init__``: the keyed fetcher and its keys."""

    __slots__ = ("fn", "spec")

    def __init__(self, fn: Callable[[Any], Any], spec: KeySpec) -> None:
        self.fn: Final = fn
        self.spec: Final = spec


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
