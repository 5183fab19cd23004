"""What ``concurrency`` means, decided in one place.

``concurrency`` is the most fetch calls a feed has in flight, wherever they run:

- **async fetchers** (in this process): ``concurrency`` worker tasks on the feed's loop, each
  awaiting one call at a time. Keyed workers take sync keys straight from their iterable;
  async keys add one dispatcher task and a key channel of ``concurrency`` keys.
- **an adaptive limit** (``concurrency=Adaptive(min, max)``): everything below is sized for
  ``max``, and a gate (``gate.py``) admits as many calls as the limit of the moment.
- **sync fetchers on the feed's own threads** (no ``executor``): ``concurrency`` daemon
  threads, started as needed. A seed-style fetcher runs in a pump: its thread calls it again
  and again, up to :func:`pump_ahead` results ahead of its worker task, so all the pumps
  together hold at most half as many chunks as the chunk queue. A keyed fetcher runs one
  call per key.
- **sync fetchers on the user's executor**: one submit per call, at most ``concurrency``
  at a time; the executor's own size also limits them.
- **worker processes** (``Processes(n)``): the feed's loop still runs ``concurrency`` worker
  tasks (they keep order, the ledger and the error budget), each waiting on one remote call;
  each process serves up to ``ceil(concurrency / n)`` calls at once, on as many threads for
  sync fetchers.
- **Ray actors** (``RayActors(n)``): as with processes, ``concurrency`` worker tasks on the
  feed's loop, one call each in flight; each actor runs up to its share,
  ``ceil(concurrency / n)`` fetches at once (``concurrency_per_actor`` overrides it), on as
  many threads for sync fetchers. The calls travel in batches of up to ``keys_per_call``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

__all__ = ["MAX_PUMP_AHEAD", "Sizing", "plan", "pump_ahead"]

MAX_PUMP_AHEAD: Final = 16


def pump_ahead(max_buffered_chunks: int, concurrency: int) -> int:
    """How many results each pumped sync fetcher may make ahead of its worker.

    Enough to hand results over in bursts (16 ahead runs 1-row chunks about 2x faster than
    4), while all the pumps together hold at most half as many chunks as the chunk queue.
    """
    return max(1, min(MAX_PUMP_AHEAD, max_buffered_chunks // (2 * concurrency)))


@dataclass(frozen=True, slots=True)
class Sizing:
    """How a feed's ``concurrency`` is spent.

    Attributes:
        workers: fetch worker tasks on the feed's loop.
        key_buffer: keys the dispatcher may hand out ahead of the workers (keyed feeds).
        threads: threads of the feed's own pool for sync fetchers in this process (0: none).
        pump_ahead: results each pumped sync fetcher may make ahead of its worker (0: no
            pumps, one submit per call).
        per_process: calls each worker process (or Ray actor) serves at once (0 without
            either): its share of ``concurrency``.
    """

    workers: int
    key_buffer: int
    threads: int
    pump_ahead: int
    per_process: int


def plan(
    concurrency: int,
    max_buffered_chunks: int,
    *,
    own_threads: bool,
    processes: int | None,
    gated: bool = False,
) -> Sizing:
    """The sizing of a feed; ``own_threads``: a sync fetcher runs on the feed's own pool;
    ``processes``: the worker processes or Ray actors the calls are shared by; ``gated``:
    an adaptive limit admits the calls (``concurrency`` is its ``max``), so no pump may call
    ahead of it (``pump_ahead`` 0: one submit per call, on threads started as needed)."""
    return Sizing(
        workers=concurrency,
        key_buffer=concurrency,
        threads=concurrency if own_threads and processes is None else 0,
        pump_ahead=0 if gated else pump_ahead(max_buffered_chunks, concurrency),
        per_process=math.ceil(concurrency / processes) if processes else 0,
    )
