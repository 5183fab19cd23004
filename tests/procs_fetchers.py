"""Fetchers for ``processes=N`` tests: module level, so spawned worker processes import them.

Rows are identifiable: blob ``ids`` (int64) and ``x`` (float32[n, 4], every value == id), as
in ``conftest.CounterSource``. Seed-style ids are ``worker_id * 1_000_000 + serial``, so
rows are unique across the process tree as long as worker ids are.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

_serial: dict[int, int] = {}
_init_index: list[int] = []


def rows(ids: np.ndarray) -> list[np.ndarray]:
    ids = ids.astype(np.int64)
    return [ids, np.repeat(ids.astype(np.float32)[:, None], 4, axis=1)]


def _next_ids(worker_id: int) -> np.ndarray:
    n = _serial.get(worker_id, 0)
    _serial[worker_id] = n + 1
    count = 1 + n % 5
    start = worker_id * 1_000_000 + n * 5
    return np.arange(start, start + count)


async def seed_rows(worker_id: int, batch_size: int) -> list[np.ndarray]:
    """1 to 5 new rows per call, with the worker process id as a third blob."""
    await asyncio.sleep(0)
    ids = _next_ids(worker_id)
    return [*rows(ids), np.full(len(ids), os.getpid(), np.int64)]


def sync_seed_rows(worker_id: int, batch_size: int) -> list[np.ndarray]:
    ids = _next_ids(worker_id)
    return [*rows(ids), np.full(len(ids), os.getpid(), np.int64)]


def key_rows(key: int) -> list[np.ndarray]:
    """Key ``k`` gives rows ``8k .. 8k + k % 5`` (1 to 5 rows)."""
    return rows(np.arange(8 * key, 8 * key + 1 + key % 5))


async def async_key_rows(key: int) -> Any:
    """Like :func:`key_rows` with a key-dependent delay, as a mapping; None for k % 7 == 6."""
    await asyncio.sleep((key % 4) * 0.001)
    if key % 7 == 6:
        return None
    ids, x = key_rows(key)
    return {"x": x, "ids": ids}


def expected_key_ids(keys: Iterable[int]) -> list[int]:
    return [i for k in keys for i in range(8 * k, 8 * k + 1 + k % 5)]


def failing_key_rows(key: int) -> list[np.ndarray]:
    if key % 10 == 3:
        raise KeyError(f"no such record: {key}")
    return key_rows(key)


def images(worker_id: int, batch_size: int) -> list[np.ndarray]:
    """Image-like rows big enough to travel through the shared-memory ring."""
    ids = _next_ids(worker_id)
    x = np.empty((len(ids), 3, 64, 64), np.float32)
    x[:] = ids.astype(np.float32)[:, None, None, None]
    return [ids.astype(np.int64), x]


def whole_batches(worker_id: int, batch_size: int) -> list[np.ndarray]:
    """Exactly one batch of big rows per call: the rebatcher hands it on without a copy."""
    n = _serial.get(worker_id, 0)
    _serial[worker_id] = n + 1
    ids = np.arange(batch_size, dtype=np.int64) + worker_id * 1_000_000 + n * batch_size
    x = np.empty((batch_size, 3, 64, 64), np.float32)
    x[:] = ids.astype(np.float32)[:, None, None, None]
    return [ids, x]


def _check_invariant(worker_id: int) -> None:
    raise ValueError(f"bad record in worker {worker_id}")


async def explode(worker_id: int, batch_size: int) -> list[np.ndarray]:
    _check_invariant(worker_id)
    return []


def _first_call(worker_id: int) -> list[np.ndarray] | None:
    """One row tagged with the process id on a worker id's first call, else None."""
    n = _serial.get(worker_id, 0)
    _serial[worker_id] = n + 1
    if n:
        return None
    return [*rows(np.array([worker_id])), np.array([os.getpid()], np.int64)]


async def hang(worker_id: int, batch_size: int) -> list[np.ndarray]:
    """One row, then calls that never return (until cancelled)."""
    first = _first_call(worker_id)
    if first is None:
        await asyncio.Event().wait()
    assert first is not None
    return first


def sync_hang(worker_id: int, batch_size: int) -> list[np.ndarray] | None:
    """One row, then calls that cannot be interrupted."""
    first = _first_call(worker_id)
    if first is None:
        time.sleep(3600)
    return first


async def block_loop(worker_id: int, batch_size: int) -> list[np.ndarray] | None:
    """One row, then a call that blocks the worker's event loop: only a signal ends it."""
    first = _first_call(worker_id)
    if first is None:
        time.sleep(3600)
    return first


def kill_me(worker_id: int, batch_size: int) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def remember_index(index: int) -> None:
    _init_index.append(index)


def init_index_rows(worker_id: int, batch_size: int) -> list[np.ndarray]:
    """Rows carrying the worker's init index (-1 if worker_init never ran) and its pid."""
    ids = _next_ids(worker_id)
    index = _init_index[0] if len(_init_index) == 1 else -1
    return [ids, np.full(len(ids), index, np.int64), np.full(len(ids), os.getpid(), np.int64)]


def failing_init(index: int) -> None:
    raise RuntimeError(f"no device for worker {index}")


class HostCounting:
    """A fetcher with per-host stats, as the HTTP fetchers have."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, worker_id: int, batch_size: int) -> list[np.ndarray]:
        self.calls += 1
        return rows(_next_ids(worker_id))

    def host_stats(self) -> dict[str, dict[str, Any]]:
        return {"example.org": {"requests": self.calls, "workers": 1, "p99": 5.0}}


def _refuse_to_load() -> None:
    raise ImportError("this fetcher only loads in the process that made it")


class Unloadable:
    """Pickles fine, but cannot be unpickled: the worker reports it could not load it."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_refuse_to_load, ())

    def __call__(self, worker_id: int, batch_size: int) -> None:
        return None


def ignore_sigterm(index: int) -> None:
    """worker_init of a worker that ignores SIGTERM: only SIGKILL ends it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


async def slow_key_rows(key: int) -> list[np.ndarray]:
    """:func:`key_rows`, 20 ms later."""
    await asyncio.sleep(0.02)
    return key_rows(key)


# -- counter rows for the checkpoint tests: key k gives 1 + k % 3 rows, ids 10 k + i ----------


def counter_rows(key: int) -> list[np.ndarray]:
    ids = np.arange(10 * key, 10 * key + 1 + key % 3, dtype=np.int64)
    return [ids, ids.astype(np.float32)[:, None] * np.ones((1, 2), np.float32)]


def failing_counter_rows(key: int) -> list[np.ndarray]:
    """Keys ``k % 11 == 5`` raise (skipped under ``max_errors``)."""
    if key % 11 == 5:
        raise LookupError(f"no record {key}")
    return counter_rows(key)


async def async_counter_rows(key: int) -> list[np.ndarray]:
    await asyncio.sleep(0.001 * (key % 3))  # completion order differs from key order
    return counter_rows(key)


async def async_failing_counter_rows(key: int) -> list[np.ndarray]:
    await asyncio.sleep(0.001 * (key % 3))
    return failing_counter_rows(key)
