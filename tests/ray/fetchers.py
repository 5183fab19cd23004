"""Fetchers the Ray tests run on actors (importable there: the cluster has the repo on its path).

Rows are ``ids`` (int64) and ``node`` (int64: :func:`node_tag` of the node that fetched
them), so a test sees every key once and where it was fetched.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import ray


def node_tag(node_id: str) -> int:
    """A node id as an int64 tag (its first 15 hex digits)."""
    return int(node_id[:15], 16)


def _here() -> int:
    return node_tag(ray.get_runtime_context().get_node_id())


def _rows(key: int, node: int) -> list[np.ndarray]:
    return [np.array([key], np.int64), np.array([node], np.int64)]


async def tagged(key: int) -> list[np.ndarray]:
    """One row: the key and the node that fetched it."""
    await asyncio.sleep(0)
    return _rows(key, _here())


def tagged_sync(key: int) -> list[np.ndarray]:
    """:func:`tagged` as a plain function (runs on the actor's threads)."""
    time.sleep(0.001)
    return _rows(key, _here())


async def seeded(worker_id: int, batch_size: int) -> list[np.ndarray]:
    """Seed-style: two rows whose ids are ``worker_id``; node tags as above."""
    await asyncio.sleep(0)
    return [np.full(2, worker_id, np.int64), np.full(2, _here(), np.int64)]


async def fails_on_sevens(key: int) -> list[np.ndarray]:
    if key % 10 == 7:
        raise ValueError(f"bad key {key}")
    return _rows(key, _here())


def actor_place() -> tuple[int, int]:
    """(index, incarnation) of the running actor, from its name ``...-<index>.<incarnation>``."""
    name = ray.get_runtime_context().get_actor_name()
    assert name is not None, "not in an actor"
    index, incarnation = name.rsplit("-", 1)[1].split(".")
    return int(index), int(incarnation)


@ray.remote(resources={"trainer": 0.01})  # on the head: it outlives any worker node
class Probe:
    """Counts the keys that reached a blocking fetcher, and lets a test wait for them."""

    def __init__(self) -> None:
        self.keys: list[Any] = []
        self.changed = asyncio.Event()

    async def arrived(self, key: Any) -> None:
        self.keys.append(key)
        self.changed.set()

    async def wait_for(self, n: int) -> list[Any]:
        while len(self.keys) < n:
            self.changed.clear()
            await self.changed.wait()
        return list(self.keys)

    async def seen(self) -> list[Any]:
        return list(self.keys)


class Blocking:
    """Fetches ``tagged`` rows, except in actor ``index``'s first incarnation (every actor's
    with None), where every call tells the probe its key and then never returns.
    """

    def __init__(self, probe: Any, index: int | None = 0) -> None:
        self.probe = probe
        self.index = index

    async def __call__(self, key: int) -> list[np.ndarray]:
        index, incarnation = actor_place()
        if incarnation == 1 and self.index in (None, index):
            await self.probe.arrived.remote(key)
            await asyncio.Event().wait()
        return _rows(key, _here())


class Big:
    """``rows`` rows of ``nbytes`` bytes per key (object-store pressure), ids ``key``."""

    def __init__(self, nbytes: int, rows: int = 1) -> None:
        self.nbytes = nbytes
        self.rows = rows

    async def __call__(self, key: int) -> list[np.ndarray]:
        ids = np.full(self.rows, key, np.int64)
        return [ids, np.full((self.rows, self.nbytes), key % 251, np.uint8)]


class Stuck:
    """Never returns (a fetch that hangs)."""

    async def __call__(self, key: int) -> list[np.ndarray]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")
