"""Each epoch's keys, in order, and which of them are this rank's to fetch.

Epoch ``e`` walks the keys in position order: as given, or shuffled — a sequence by
``numpy.random.default_rng([seed, e]).permutation(len(keys))``, an iterable (or a sequence
with ``shuffle_buffer``) by a seeded window shuffle. A rank takes its share by position.

Resuming, a *plan* says which positions are left: positions consumed under the plan's base
(a record merged from every rank of an earlier world, see ``checkpoint.merge_states``) are
skipped, the others are numbered in order and dealt out round robin to this world's ranks,
and this rank skips those it consumed itself (its progress counts its own dispatch order).
Plans nest, one level per resize within an epoch; the next epoch starts fresh.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, final

import numpy as np

from .keys import KeySpec

__all__ = ["Assigned", "Assigner", "Plan", "Progress", "assigned_async", "assigned_sync"]

#: What a rank fetches: (position in the epoch, index in this rank's dispatch order, key,
#: rows of the key already delivered before a resume).
Assigned = tuple[int, int, Any, int]


@dataclass(slots=True)
class Progress:
    """What one rank consumed of one epoch, counted in its own dispatch order.

    ``watermark``: every index below it is consumed; ``consumed``: consumed indices at or
    above it; ``done``: the whole share; ``partial``: position → rows delivered of keys only
    partly delivered.
    """

    watermark: int = 0
    consumed: set[int] = field(default_factory=set)
    partial: dict[int, int] = field(default_factory=dict)
    done: bool = False

    def is_consumed(self, index: int) -> bool:
        return self.done or index < self.watermark or index in self.consumed

    def consume(self, index: int) -> None:
        """Mark ``index`` consumed, moving the watermark over every consumed index."""
        if index < self.watermark:
            return
        consumed = self.consumed
        consumed.add(index)
        watermark = self.watermark
        while watermark in consumed:
            consumed.discard(watermark)
            watermark += 1
        self.watermark = watermark

    def consume_all(self, indices: list[int]) -> None:
        """Mark ``indices`` consumed: a batch's worth at once, in set operations."""
        consumed = self.consumed
        consumed.update(indices)
        watermark = self.watermark
        if min(indices) < watermark:  # already below it (never in one run; be safe)
            consumed.difference_update([i for i in indices if i < watermark])
        if watermark not in consumed:
            return
        top = max(consumed)
        if top - watermark + 1 == len(consumed):  # one run up from the watermark
            consumed.clear()
            self.watermark = top + 1
            return
        start = watermark
        while watermark in consumed:
            watermark += 1
        consumed.difference_update(range(start, watermark))
        self.watermark = watermark

    @classmethod
    def load(cls, record: Mapping[str, Any]) -> Progress:
        if record.get("done"):
            return cls(done=True)
        return cls(
            watermark=int(record.get("watermark", 0)),
            consumed={int(i) for i in record.get("consumed", ())},
            partial={int(p): int(n) for p, n in record.get("partial", ())},
        )

    def dump(self) -> dict[str, Any]:
        if self.done:
            return {"done": True}
        return {
            "watermark": self.watermark,
            "consumed": sorted(self.consumed),
            "partial": sorted([p, n] for p, n in self.partial.items()),
        }


@final
class _Level:
    """One merged record of an earlier world: renumbers the positions it leaves."""

    __slots__ = ("_inner", "_next", "_ranks", "_world")

    def __init__(self, record: Mapping[str, Any]) -> None:
        base = record.get("base")
        self._inner: Final = None if base is None else _Level(base)
        self._world: Final = int(record["world_size"])
        self._ranks: Final = [Progress.load(r) for r in record["ranks"]]
        self._next = 0

    def index(self, k: int) -> int | None:
        """The index among this level's remaining positions of the base's ``k``-th, or None
        when an earlier rank consumed it."""
        if self._inner is not None:
            inner = self._inner.index(k)
            if inner is None:
                return None
            k = inner
        if self._ranks[k % self._world].is_consumed(k // self._world):
            return None
        index = self._next
        self._next += 1
        return index

    def partial(self) -> dict[int, int]:
        """Rows delivered of partly delivered keys, the nearest level winning."""
        rows = {} if self._inner is None else self._inner.partial()
        for rank in self._ranks:
            rows.update(rank.partial)
        return rows


@dataclass(slots=True)
class Plan:
    """Which positions of an epoch are this rank's: ``base`` (None: all) dealt over
    ``world_size`` ranks, minus what ``progress`` says this rank already consumed."""

    world_size: int
    rank: int
    base: Mapping[str, Any] | None = None
    progress: Progress = field(default_factory=Progress)

    @property
    def fresh(self) -> bool:
        """Nothing consumed and dealt as a fresh epoch would be: the state can omit it."""
        p = self.progress
        return self.base is None and not (p.done or p.watermark or p.consumed or p.partial)

    def dump(self) -> dict[str, Any]:
        out = self.progress.dump()
        out.update(base=self.base, world_size=self.world_size, rank=self.rank)
        return out


@final
class Assigner:
    """Deals an epoch's positions by a plan; ``size`` counts the indices dealt to this rank
    so far, consumed ones included (the epoch's share, once the keys are all seen)."""

    __slots__ = ("_level", "_partial", "_plan", "plain", "size")

    def __init__(self, plan: Plan) -> None:
        self._plan: Final = plan
        self._level: Final = None if plan.base is None else _Level(plan.base)
        partial = {} if self._level is None else self._level.partial()
        partial.update(plan.progress.partial)
        self._partial: Final = partial
        self.size = 0
        #: Every position is this rank's, as it is (one rank, nothing consumed or resumed).
        self.plain: Final = plan.world_size == 1 and plan.fresh

    def take(self, position: int, key: Any) -> Assigned | None:
        k: int | None = position if self._level is None else self._level.index(position)
        plan = self._plan
        if k is None or k % plan.world_size != plan.rank:
            return None
        index = k // plan.world_size
        self.size = index + 1
        if plan.progress.is_consumed(index):
            return None
        return position, index, key, self._partial.get(position, 0)


def _source(spec: KeySpec) -> Any:
    keys = spec.keys
    if isinstance(keys, Sequence) or not callable(keys):
        return keys
    return keys()


def _permuted(spec: KeySpec, epoch: int, keys: Sequence[Any]) -> Iterator[Any]:
    order = np.random.default_rng([spec.seed, epoch]).permutation(len(keys))
    return (keys[int(i)] for i in order)


_HELD: Final = object()  # _Window.swap: the key went into the window, none came out


@final
class _Window:
    """The seeded window shuffle of ``shuffle_buffer`` keys, one for sync and async keys
    (both must make the same order from the same keys)."""

    __slots__ = ("_buffer", "_rng", "_size")

    def __init__(self, spec: KeySpec, epoch: int) -> None:
        self._rng: Final = np.random.default_rng([spec.seed, epoch])
        self._buffer: Final[list[Any]] = []
        self._size: Final = spec.shuffle_buffer or 1

    def swap(self, key: Any) -> Any:
        """Take ``key``; give back a key to yield now, or ``_HELD`` while the window fills."""
        buffer = self._buffer
        if len(buffer) < self._size:
            buffer.append(key)
            return _HELD
        i = int(self._rng.integers(self._size))
        buffer[i], key = key, buffer[i]
        return key

    def rest(self) -> list[Any]:
        """The keys still in the window, shuffled, once the keys ran out."""
        self._rng.shuffle(self._buffer)
        return self._buffer


def _window(spec: KeySpec, epoch: int, keys: Iterable[Any]) -> Iterator[Any]:
    window = _Window(spec, epoch)
    for key in keys:
        if (out := window.swap(key)) is not _HELD:
            yield out
    yield from window.rest()


async def _window_async(spec: KeySpec, epoch: int, keys: AsyncIterable[Any]) -> AsyncIterator[Any]:
    window = _Window(spec, epoch)
    async for key in keys:
        if (out := window.swap(key)) is not _HELD:
            yield out
    for key in window.rest():
        yield key


def _ordered_sync(spec: KeySpec, epoch: int, keys: Iterable[Any]) -> Iterator[Any]:
    if not spec.shuffle:
        return iter(keys)
    if spec.shuffle_buffer is None and isinstance(keys, Sequence):
        return _permuted(spec, epoch, keys)
    return _window(spec, epoch, keys)


def assigned_sync(spec: KeySpec, epoch: int, assigner: Assigner) -> Iterator[Assigned] | None:
    """This rank's keys of ``epoch`` in order; None when the epoch's keys are async."""
    keys = _source(spec)
    if isinstance(keys, AsyncIterable):
        return None
    return _assign_sync(_ordered_sync(spec, epoch, keys), assigner)


def _assign_sync(keys: Iterator[Any], assigner: Assigner) -> Iterator[Assigned]:
    if assigner.plain:  # the common case, a key at the cost of a generator step
        for position, key in enumerate(keys):
            assigner.size = position + 1
            yield position, position, key, 0
        return
    take = assigner.take
    for position, key in enumerate(keys):
        item = take(position, key)
        if item is not None:
            yield item


async def assigned_async(spec: KeySpec, epoch: int, assigner: Assigner) -> AsyncIterator[Assigned]:
    """This rank's keys of ``epoch`` in order, from sync or async keys."""
    keys = _source(spec)
    if not isinstance(keys, AsyncIterable):
        for item in _assign_sync(_ordered_sync(spec, epoch, keys), assigner):
            yield item
        return
    ordered = _window_async(spec, epoch, keys) if spec.shuffle else aiter(keys)
    take = assigner.take
    position = 0
    async for key in ordered:
        dealt = take(position, key)
        position += 1
        if dealt is not None:
            yield dealt
