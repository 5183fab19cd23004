"""Construction-time validation with exact messages."""

from __future__ import annotations

from typing import Any

import pytest

import asyncfeed as af


async def fetch(worker_id: int, batch_size: int) -> None:
    return None


async def fetch_one(key: Any) -> None:
    return None


def make(**overrides: Any) -> af.Feed:
    kwargs: dict[str, Any] = {"blobs": ["x"], "batch_size": 4}
    kwargs.update(overrides)
    return af.Feed(fetch, **kwargs)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"batch_size": 0}, r"^batch_size must be >= 1, got 0$"),
        ({"batch_size": -3}, r"^batch_size must be >= 1, got -3$"),
        ({"batch_size": 2**40}, r"^batch_size must be <= 2147483647, got 1099511627776$"),
        ({"batch_size": 1.5}, r"^batch_size must be an int, got 1.5$"),
        ({"batch_size": True}, r"^batch_size must be an int, got True$"),
        ({"concurrency": 0}, r"^concurrency must be >= 1, got 0$"),
        ({"max_buffered_chunks": 0}, r"^max_buffered_chunks must be >= 1, got 0$"),
        ({"prefetch_batches": 0}, r"^prefetch_batches must be >= 1, got 0$"),
        ({"max_errors": -1}, r"^max_errors must be >= 0, got -1$"),
        ({"blobs": []}, r"^blobs must name at least one blob, got \[\]$"),
        ({"blobs": "data"}, r"^blobs must be a list of names, got 'data'$"),
        ({"blobs": ["a", "a"]}, r"^blob names must be unique, got 'a' twice$"),
        ({"blobs": ["a", ""]}, r"^blob names must be non-empty strings, got ''$"),
        ({"blobs": ["a", 3]}, r"^blob names must be non-empty strings, got 3$"),
        ({"source": ""}, r"^source must be a non-empty string, got ''$"),
        ({"executor": "pool"}, r"^executor must be a concurrent.futures.Executor, got 'pool'$"),
        ({"init_fun": 3}, r"^init_fun must be callable, got 3$"),
        ({"rebatch": 1}, r"^rebatch must be a bool, got 1$"),
        ({"log_interval": 0}, r"^log_interval must be a number > 0 or None, got 0$"),
        (
            {"external_loggers": [object()]},
            r"^external logger <object .*> has no log\(dict\) method$",
        ),
    ],
)
def test_invalid_arguments(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(af.ConfigError, match=message):
        make(**overrides)


def test_fetcher_must_be_callable() -> None:
    with pytest.raises(af.ConfigError, match=r"^the fetcher must be callable, got 'nope'$"):
        af.Feed("nope", blobs=["x"], batch_size=1)  # type: ignore[arg-type]
    with pytest.raises(af.ConfigError, match=r"^ordered must be a bool, got 'yes'$"):
        af.Feed.from_keys([], fetch, blobs=["x"], batch_size=1, ordered="yes")  # type: ignore[arg-type]


def test_valid_feed_repr() -> None:
    feed = make(blobs=["a", "b"], batch_size=7)
    assert repr(feed) == "<Feed seed source='train' blobs=['a', 'b'] batch_size=7 state=new>"
    assert feed.blobs == ("a", "b") and feed.batch_size == 7 and feed.source == "train"


def test_one_option_list_for_both_constructors() -> None:
    """Every option of FeedOptions is a keyword of both constructors (FeedKwargs), and back."""
    import dataclasses

    from asyncfeed.options import FeedKwargs, FeedOptions

    fields = {f.name for f in dataclasses.fields(FeedOptions)} - {"blobs", "batch_size"}
    shorthand = {"processes", "start_method", "worker_init"}
    assert set(FeedKwargs.__annotations__) == fields | shorthand
    seed = make(concurrency=3, max_errors=2, prefetch_batches=5)
    keyed = af.Feed.from_keys(
        [1], fetch_one, blobs=["x"], batch_size=4, concurrency=3, max_errors=2, prefetch_batches=5
    )
    same = ("concurrency", "max_errors", "prefetch_batches", "max_buffered_chunks", "rebatch")
    assert all(getattr(seed.options, n) == getattr(keyed.options, n) for n in same)
    assert (seed.source, keyed.source) == ("train", "keys")  # the one default that differs


def test_an_unknown_option_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"^unexpected option\(s\): colour$"):
        make(colour="red")
    with pytest.raises(TypeError, match=r"^unexpected option\(s\): colour$"):
        af.Feed.from_keys([1], fetch_one, blobs=["x"], batch_size=1, colour="red")  # type: ignore[call-arg]


def test_workers_takes_a_processes_group_and_the_shorthand_is_the_same() -> None:
    from tests import procs_fetchers as pf

    group = af.Processes(2, start_method="spawn", worker_init=pf.remember_index)
    a = make(workers=group, concurrency=4)
    b = make(processes=2, start_method="spawn", worker_init=pf.remember_index, concurrency=4)
    assert a.options.workers == b.options.workers == group
    assert make().options.workers is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, r"^processes must be >= 1, got 0$"),
        ({"n": 1.5}, r"^processes must be an int, got 1.5$"),
        ({"n": 2, "start_method": "bogus"}, r"^start_method must be one of \[.*\], got 'bogus'$"),
        ({"n": 2, "worker_init": 5}, r"^worker_init must be callable, got 5$"),
    ],
)
def test_an_invalid_processes_group(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(af.ConfigError, match=message):
        af.Processes(**kwargs)


def test_workers_and_its_shorthand_together_are_refused() -> None:
    with pytest.raises(af.ConfigError, match=r"^give workers= or its shorthand"):
        make(workers=af.Processes(2), processes=2, concurrency=4)
    with pytest.raises(
        af.ConfigError, match=r"^workers must be None, Processes\(...\) or RayActors\(...\), got 3$"
    ):
        make(workers=3)
