"""Reliability fixtures: on top of the thread and task checks, no file descriptor leaks."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

pytest.register_assert_rewrite("tests.reliability.faults")

from tests.reliability.faults import CounterSource, FaultyFetcher, open_fds  # noqa: E402


@pytest.fixture(autouse=True)
def no_leftover_fds() -> Iterator[None]:
    """Fail a test that leaves a file descriptor open (event loops, pipes, sockets, files)."""
    before = open_fds()
    yield
    gc.collect()
    after = open_fds()
    leaked = {fd: what for fd, what in after.items() if before.get(fd) != what}
    assert not leaked, f"file descriptors left open: {leaked}"


@pytest.fixture(params=["async", "sync"])
def flavour(request: pytest.FixtureRequest) -> str:
    """Async fetchers (tasks on the loop) and sync ones (daemon thread pool)."""
    return str(request.param)


@pytest.fixture
def faulty(counter: CounterSource) -> Iterator[FaultyFetcher]:
    """A fault-free FaultyFetcher over ``counter``; tests set ``rates`` / ``at``. Releases hangs."""
    fetcher = FaultyFetcher(counter)
    yield fetcher
    fetcher.release()
