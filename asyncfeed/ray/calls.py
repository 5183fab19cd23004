"""The feed's side of calls to Ray actors: one call, a batch of them, and what comes back.

A :class:`Call` is one fetch (``fn(key)`` or ``fn(worker_id, batch_size)``) awaited by one of
the feed's workers; a :class:`Batch` is the calls one actor call carries. What comes back is
copied out of Ray's object store at once (:func:`copy_out`), so the store holds only the
results of calls in flight, never the rows the feed keeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Final, final

import numpy as np

from ..errors import remote_error

__all__ = ["Batch", "Call", "copy_out", "describe_calls", "unpack_error"]

SHOWN_KEYS: Final = 8  # keys named in an error message; the rest are counted


@final
class Call:
    """One fetch call, waiting for its outcome.

    Attributes:
        args: the fetcher's arguments.
        key: the key (keyed feeds), for error messages; None for seed-style calls.
        worker_id: the seed-style worker that made it; None for keyed calls.
        future: resolved with ``(returned, value)`` once, on the feed's loop.
        sent: times it was sent to an actor (more than once only after a lost actor).
    """

    __slots__ = ("args", "future", "key", "sent", "worker_id")

    def __init__(
        self, args: tuple[Any, ...], key: Any, worker_id: int | None, future: asyncio.Future[Any]
    ) -> None:
        self.args: Final = args
        self.key: Final = key
        self.worker_id: Final = worker_id
        self.future: Final = future
        self.sent = 0

    def resolve(self, returned: bool, value: Any) -> None:
        if not self.future.done():
            self.future.set_result((returned, value))

    @property
    def waiting(self) -> bool:
        """False once resolved, or once its worker stopped waiting (cancelled)."""
        return not self.future.done()


@final
class Batch:
    """The calls one actor call carries, and the actor incarnation it went to."""

    __slots__ = ("calls", "incarnation", "ref", "settled", "slot")

    def __init__(self, slot: int, incarnation: int, calls: list[Call]) -> None:
        self.slot: Final = slot
        self.incarnation: Final = incarnation
        self.calls: Final = calls
        self.ref: Any = None  # the ObjectRef, held until the result is in
        self.settled = False


def copy_out(outcomes: Sequence[tuple[bool, Any, float]]) -> list[tuple[bool, Any]]:
    """Outcomes with every array copied out of Ray's object store (its views released)."""
    out: list[tuple[bool, Any]] = []
    for returned, value, _ in outcomes:
        if returned and value is not None:
            value = _copied(value)
        out.append((returned, value))
    return out


def _copied(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.copy() if value.base is not None else value
    if isinstance(value, list):
        return [_copied(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_copied(v) for v in value)
    if isinstance(value, Mapping):
        return {k: _copied(v) for k, v in value.items()}
    return value


def unpack_error(packed: tuple[bytes | None, str]) -> BaseException:
    """The actor's exception, rebuilt, with its traceback text chained as the cause."""
    return remote_error(*packed)


def describe_calls(calls: Sequence[Call]) -> str:
    """``keys [...]`` or ``calls of workers [...]``, the first few named, the rest counted."""
    if not calls:
        return "no calls"
    keyed = calls[0].worker_id is None
    items = [repr(c.key) if keyed else str(c.worker_id) for c in calls[:SHOWN_KEYS]]
    more = f" and {len(calls) - SHOWN_KEYS} more" if len(calls) > SHOWN_KEYS else ""
    s = "s" if len(calls) > 1 else ""
    what = f"key{s}" if keyed else f"call{s} of worker{s}"
    return f"{len(calls)} {what} [{', '.join(items)}{more}]"
