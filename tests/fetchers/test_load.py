"""The ready fetchers' load(): decode calls queued and running, their queue wait, held requests."""

from __future__ import annotations

import asyncio
import pickle
import threading
from typing import Any

import numpy as np
import pytest

import asyncfeed as af
from tests.fetchers.test_http_adaptive import until

pytestmark = pytest.mark.timeout(20)


async def test_load_counts_decode_calls_queued_and_running(png_service: af.ImageService) -> None:
    gate = threading.Event()
    entered = threading.Event()

    def held(image: np.ndarray, key: Any) -> np.ndarray:
        entered.set()
        if not gate.wait(10):
            raise TimeoutError("never released")
        return image

    fetcher = af.HttpFetcher(transform=held, decode_threads=1)
    assert fetcher.load() == {
        "decode_queued": 0,
        "decode_running": 0,
        "decode_wait_s": 0.0,
        "throttled": 0,
    }
    async with fetcher:
        tasks = [asyncio.create_task(fetcher(url)) for url in png_service.urls(3)]
        try:  # one thread: one call runs (and blocks), two wait for it
            await until(lambda: entered.is_set() and fetcher.load()["decode_queued"] == 2)
            load = fetcher.load()
            assert load["decode_running"] == 1 and load["throttled"] == 0
        finally:
            gate.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        load = fetcher.load()
        assert load["decode_queued"] == load["decode_running"] == 0
        assert load["decode_wait_s"] > 0  # two calls waited for the thread


def test_load_is_fresh_after_pickling() -> None:
    fetcher = af.HttpFetcher(adaptive=True)
    clone = pickle.loads(pickle.dumps(fetcher))
    assert clone.load()["decode_queued"] == 0 and clone.adaptive is None  # resolved on open
