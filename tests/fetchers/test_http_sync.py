"""HttpFetcher from synchronous code and across processes: a session per loop, pickling."""

from __future__ import annotations

import asyncio
import itertools
import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import asyncfeed as af
from asyncfeed.fetchers.service import synthetic_image
from benchmarks.http_bench import serve_in_subprocess
from tests.transforms import flip_with_pid


def session_of(fetcher: af.HttpFetcher) -> object:
    """The fetcher's session now (a call, so a type checker keeps no earlier narrowing)."""
    return fetcher.session


@pytest.fixture
def served_pngs() -> Iterator[str]:
    """``python -m asyncfeed serve-images`` in a child process: 4 PNGs of 16x16."""
    with serve_in_subprocess(0.0, count=4, size=16, flags=["--format=png"]) as template:
        yield template


@pytest.mark.timeout(30)
def test_a_started_feed_opens_its_session_on_the_private_loop(served_pngs: str) -> None:
    fetcher = af.HttpFetcher()
    keys = ((served_pngs.format(i=i % 4), i) for i in itertools.count())  # endless: runs until stop
    feed = af.Feed.from_keys(
        keys, fetcher, blobs=["data", "label"], batch_size=4, ordered=True, log_interval=None
    )
    feed.start()
    try:
        first = feed.get(timeout=10)
        session = fetcher.session
        assert session is not None and not session.closed
        second = feed.get(timeout=10)
    finally:
        feed.stop()
    assert session.closed and session_of(fetcher) is None
    data = np.concatenate([first["data"], second["data"]])
    assert all(np.array_equal(data[i], synthetic_image(i % 4, 16)) for i in range(8))
    assert np.concatenate([first["label"], second["label"]]).tolist() == list(range(8))


@pytest.mark.timeout(60)
def in_two_processes(
    template: str, fetcher: af.HttpFetcher, blobs: list[str]
) -> tuple[af.Feed, list[af.Batch]]:
    """The 16 keys ``(url of image i % 4, i)`` fetched in 2 worker processes, in order."""
    keys = [(template.format(i=i % 4), i) for i in range(16)]
    feed = af.Feed.from_keys(
        keys, fetcher, blobs=blobs, batch_size=8, ordered=True, concurrency=4, processes=2,
        log_interval=None,
    )  # fmt: skip
    feed.start()
    try:
        return feed, [feed.get(timeout=30) for _ in range(2)]
    finally:
        feed.stop()


def test_processes_open_the_fetcher_in_each_worker(served_pngs: str) -> None:
    feed, batches = in_two_processes(served_pngs, af.HttpFetcher(), ["data", "label"])
    data = np.concatenate([b["data"] for b in batches])
    assert all(np.array_equal(data[i], synthetic_image(i % 4, 16)) for i in range(16))
    (host,) = feed.stats().hosts.values()  # the workers report every so often: a lower bound
    assert 1 <= host["requests"] <= 16 and host["bytes"] > 0


@pytest.mark.timeout(60)
def test_a_transform_runs_in_the_worker_processes(served_pngs: str) -> None:
    fetcher = af.HttpFetcher(transform=flip_with_pid)
    _, batches = in_two_processes(served_pngs, fetcher, ["data", "pid", "label"])
    data = np.concatenate([b["data"] for b in batches])
    assert all(np.array_equal(data[i], synthetic_image(i % 4, 16)[:, ::-1]) for i in range(16))
    assert np.concatenate([b["label"] for b in batches]).tolist() == list(range(16))
    pids = set(np.concatenate([b["pid"] for b in batches]).tolist())
    assert os.getpid() not in pids and 1 <= len(pids) <= 2


def test_a_fetcher_serves_one_loop_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "0.npy"
    np.save(path, np.zeros(3))
    files = af.FileFetcher()
    asyncio.run(files.open())
    with pytest.raises(af.FeedStateError, match=r"^files is open on another event loop$"):
        asyncio.run(files(str(path)))
    asyncio.run(files.aclose())
    chunk = asyncio.run(files(str(path)))
    assert isinstance(chunk, list) and chunk[0].shape == (1, 3)  # lazily opened, on this loop
    asyncio.run(files.aclose())


def test_fetchers_pickle_their_configuration_only() -> None:
    http = af.HttpFetcher(
        image=af.ImageOptions(size=(8, 8), normalize=(0.5, 0.5)),
        retry=af.Retry(attempts=2),
        transform=flip_with_pid,
    )
    back = pickle.loads(pickle.dumps(http))
    assert back.session is None and not back.is_open and back.host_stats() == {}
    assert repr(back) == repr(http)
    files = pickle.loads(pickle.dumps(af.FileFetcher(arrays="chunk")))
    assert "arrays='chunk'" in repr(files) and not files.is_open
