"""Fuzzed constructor arguments: each invalid one gets a ConfigError naming the argument and
the offending value; valid ones construct; a batch_size too large for the rows it must hold
fails with a ConfigError naming it, not a raw MemoryError."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import asyncfeed as af
from asyncfeed.bridge import to_thread
from asyncfeed.options import MAX_BATCH_SIZE
from tests.reliability.faults import assert_clean_end, timed

pytestmark = pytest.mark.timeout(60)


async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
    return [np.zeros(1)]


BASE: dict[str, Any] = {"blobs": ["x"], "batch_size": 4}

not_int = st.one_of(
    st.booleans(), st.floats(allow_nan=False), st.text(max_size=3), st.none(), st.just([1])
)


def ints(minimum: int, maximum: int | None = None) -> st.SearchStrategy[Any]:
    """Invalid values for an int argument in [minimum, maximum]."""
    bad = [not_int, st.integers(max_value=minimum - 1)]
    if maximum is not None:
        bad.append(st.integers(min_value=maximum + 1))
    return st.one_of(*bad)


INVALID: dict[str, st.SearchStrategy[Any]] = {
    "batch_size": ints(1, MAX_BATCH_SIZE),
    "concurrency": ints(1, 65536),
    "max_buffered_chunks": ints(1),
    "prefetch_batches": ints(1),
    "max_errors": st.one_of(
        st.booleans(), st.floats(allow_nan=False), st.text(max_size=2), st.integers(max_value=-1)
    ),
    "source": st.one_of(st.just(""), st.integers(), st.none(), st.just(["train"])),
    "rebatch": st.one_of(st.none(), st.integers(), st.text(max_size=2)),
    "drop_last": st.one_of(st.none(), st.integers(), st.text(max_size=2)),
    "log_interval": st.one_of(
        st.floats(max_value=0), st.integers(max_value=0), st.booleans(), st.text(max_size=2)
    ),
    "blobs": st.one_of(
        st.text(max_size=4),  # a bare string is not a list of names
        st.just([]),
        st.lists(st.text(max_size=3), min_size=1, max_size=4).map(lambda b: [*b, ""]),
        st.lists(st.sampled_from(["a", "b", "c"]), min_size=2, max_size=5).filter(
            lambda b: len(set(b)) < len(b)
        ),
        st.lists(st.one_of(st.integers(), st.none(), st.binary(max_size=2)), min_size=1),
    ),
}


def expected_mention(name: str, value: Any) -> tuple[str, str]:
    """(message prefix, text naming the offending value)."""
    if name != "blobs" or isinstance(value, str) or not value:
        return name, repr(value) if not isinstance(value, list) or value else "[]"
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            return "blob names must be non-empty strings", repr(item)
        if item in value[:i]:
            return "blob names must be unique", f"{item!r} twice"
    raise AssertionError(f"{value!r} is valid")


@settings(max_examples=300, deadline=None)
@given(data=st.data(), keyed=st.booleans())
def test_every_invalid_argument_is_named_with_its_value(data: st.DataObject, keyed: bool) -> None:
    name = data.draw(st.sampled_from(sorted(INVALID)), label="argument")
    value = data.draw(INVALID[name], label="value")
    if keyed and name == "source":
        return  # covered by the seed-style constructor; from_keys has its own default
    kwargs = {**BASE, name: value}
    with pytest.raises(af.ConfigError) as info:
        if keyed:
            af.Feed.from_keys(range(3), fetch, **kwargs)  # type: ignore[arg-type]
        else:
            af.Feed(fetch, **kwargs)
    prefix, mention = expected_mention(name, value)
    message = str(info.value)
    assert message.startswith(prefix), message
    assert mention in message, message
    assert isinstance(info.value, ValueError)


@settings(max_examples=100, deadline=None)
@given(
    batch_size=st.one_of(st.integers(1, 64), st.just(MAX_BATCH_SIZE)),
    concurrency=st.one_of(st.integers(1, 8), st.just(65536)),
    blobs=st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=5, unique=True),
    max_errors=st.one_of(st.none(), st.integers(0, 10**9)),
)
def test_valid_arguments_construct_a_new_feed(
    batch_size: int, concurrency: int, blobs: list[str], max_errors: int | None
) -> None:
    feed = af.Feed(
        fetch, blobs=blobs, batch_size=batch_size, concurrency=concurrency, max_errors=max_errors
    )
    assert feed.state is af.FeedState.NEW and feed.blobs == tuple(blobs)
    assert len(set(feed.worker_ids)) == concurrency
    feed.stop()


@pytest.mark.parametrize("api", ["async", "sync"])
async def test_a_batch_size_too_large_for_its_rows_is_a_config_error(api: str) -> None:
    async def wide(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return [np.zeros((1, 2**20))]  # 8 MiB rows: one batch would need 16 PiB

    # two buffered chunks: a fetcher that never suspends fills the whole chunk queue first
    feed = af.Feed(
        wide, blobs=["x"], batch_size=MAX_BATCH_SIZE, concurrency=1, max_buffered_chunks=2
    )
    pattern = rf"^batch_size={MAX_BATCH_SIZE} is too large for blob 'x' \(float64 rows of "
    with timed(), pytest.raises(af.ConfigError, match=pattern) as info:
        if api == "async":
            async with feed:
                await anext(feed)
        else:
            await to_thread(_sync_run, feed, name="test-sync-run")
    assert isinstance(info.value.__cause__, MemoryError)
    assert_clean_end(feed, causes={"error"})


def _sync_run(feed: af.Feed) -> None:
    feed.start()
    try:
        feed.get(timeout=5)
    finally:
        feed.stop()
