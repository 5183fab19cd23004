"""Exactly-once resume (``checkpoint.py``): interrupted runs deliver one uninterrupted run's rows.

Rows are counter-based: key ``k`` gives ``1 + k % 3`` rows with ids ``10 k + i``, and with
``failing`` the keys ``k % 11 == 5`` raise (skipped under ``max_errors``), so every run of a
configuration must deliver the same rows: in the same order with ``ordered=True``, as the
same multiset otherwise.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import asyncfeed as af
from tests import procs_fetchers

pytestmark = pytest.mark.timeout(120)


rows_of = procs_fetchers.counter_rows


def make_fetch(failing: bool, sync: bool) -> Callable[[int], Any]:
    if sync:
        return procs_fetchers.failing_counter_rows if failing else procs_fetchers.counter_rows
    return (
        procs_fetchers.async_failing_counter_rows if failing else procs_fetchers.async_counter_rows
    )


Config = dict[str, Any]


def make_feed(config: Config, state: dict[str, Any] | None) -> af.Feed:
    """The feed of ``config``; optional entries: ``processes`` (worker processes), ``sink``
    (a ``BlobsQueue`` the consumer dequeues from), ``batch_sizes`` ({batch: new size})."""
    extra: dict[str, Any] = {}
    if config.get("processes"):
        extra["workers"] = af.Processes(config["processes"])
    if config.get("sink"):
        extra["sink"] = af.BlobsQueue(capacity=3, num_blobs=2)
    return af.Feed.from_keys(
        range(config["keys"]),
        make_fetch(config["failing"], config["sync"]),
        blobs=["ids", "x"],
        batch_size=config["batch_size"],
        concurrency=config["concurrency"],
        ordered=config["ordered"],
        drop_last=config["drop_last"],
        epochs=config["epochs"],
        shuffle=config["shuffle"],
        seed=7,
        max_errors=1000,
        state=state,
        log_interval=None,
        **extra,
    )


async def batches(feed: af.Feed) -> AsyncIterator[tuple[np.ndarray, int | None]]:
    """The ids of each batch the consumer receives (and its epoch; None from a sink)."""
    sink = feed.options.sink
    if sink is None:
        async for batch in feed:
            yield batch["ids"], batch.epoch
        return
    assert isinstance(sink, af.BlobsQueue)
    while (record := await sink.dequeue_async()) is not None:
        yield record[0], None


async def segment(
    config: Config, state: dict[str, Any] | None, stop_after: int | None
) -> tuple[list[int], dict[str, Any], list[int | None]]:
    """Run a feed from ``state``, taking ``stop_after`` batches (None: all); return the ids
    it delivered, its state after them, and the epochs of its batches."""
    feed = make_feed(config, state)
    resizes: dict[int, int] = config.get("batch_sizes", {})
    ids: list[int] = []
    epochs: list[int | None] = []
    async with feed:
        taken = 0
        if stop_after != 0:
            async for got, epoch in batches(feed):
                ids.extend(int(i) for i in got)
                epochs.append(epoch)
                assert len(got) == feed.batch_size or not config["drop_last"] or resizes
                taken += 1
                delivered = feed.state_dict()["delivered"]["batches"]
                if delivered in resizes:
                    feed.set_batch_size(resizes[delivered])
                if taken == stop_after:
                    break
        state = feed.state_dict()  # as a training loop saves it, right after a batch
    # stopping adds no received batch (keys that fail or rows drop_last drops may still
    # settle meanwhile: they deliver nothing either way)
    assert feed.state_dict()["delivered"] == state["delivered"]
    return ids, json.loads(json.dumps(state)), epochs


def same_rows(config: Config, resumed: list[int], full: list[int]) -> None:
    """The same rows as one uninterrupted run. With drop_last in completion order, which
    rows an epoch's dropped partial batch held varies from run to run (it holds those that
    came last): then no row twice, and as many delivered per epoch."""
    if config["ordered"]:
        assert resumed == full
    elif config["drop_last"]:
        per_epoch = [i for k in range(config["keys"]) for i in rows_of(k)[0].tolist()]
        assert len(resumed) == len(full)
        for i in set(resumed):
            assert resumed.count(i) <= config["epochs"] and i in per_epoch
    else:
        assert sorted(resumed) == sorted(full)


configs = st.fixed_dictionaries(
    {
        "keys": st.integers(0, 40),
        "batch_size": st.integers(1, 7),
        "concurrency": st.integers(1, 6),
        "ordered": st.booleans(),
        "drop_last": st.booleans(),
        "epochs": st.integers(1, 3),
        "shuffle": st.booleans(),
        "failing": st.booleans(),
        "sync": st.booleans(),
        "sink": st.booleans(),
    }
)


async def interrupted(config: Config, stops: list[int]) -> None:
    """Stop after each count of ``stops`` batches and resume, then run to the end: the rows
    are one uninterrupted run's, and a failed key is skipped once and stays counted."""
    full, end, _ = await segment(config, None, None)
    got: list[int] = []
    state: dict[str, Any] | None = None
    for stop in stops:
        ids, state, _ = await segment(config, state, stop)
        got += ids
    ids, last, _ = await segment(config, state, None)
    got += ids
    same_rows(config, got, full)
    assert last["epoch"] == end["epoch"] == config["epochs"]
    assert last["delivered"] == end["delivered"] or not config["drop_last"] or config["ordered"]
    if config["failing"]:
        failed = sum(1 for k in range(config["keys"]) if k % 11 == 5) * config["epochs"]
        assert last["skipped"] == end["skipped"] == failed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs, st.lists(st.integers(0, 12), max_size=3))
def test_interrupted_runs_deliver_the_rows_of_one_uninterrupted_run(
    config: Config, stops: list[int]
) -> None:
    asyncio.run(interrupted(config, stops))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("ordered", "drop_last", "sync", "stops"),
    [(True, False, False, [2, 5]), (False, True, True, [1, 4, 3])],
)
async def test_with_worker_processes_too(
    ordered: bool, drop_last: bool, sync: bool, stops: list[int]
) -> None:
    config: Config = {
        "keys": 40, "batch_size": 5, "concurrency": 6, "ordered": ordered,
        "drop_last": drop_last, "epochs": 2, "shuffle": True, "failing": True, "sync": sync,
        "processes": 2,
    }  # fmt: skip
    await interrupted(config, stops)


def cut(rows: list[list[int]], sizes: list[list[int]], drop_last: bool) -> list[list[int]]:
    """The batches of an ordered run: each epoch's rows cut by the size schedule ``sizes``
    ([first batch index, size], ...), each epoch ending with its partial batch (or not)."""
    out: list[list[int]] = []
    for epoch_rows in rows:
        pos = 0
        while pos < len(epoch_rows):
            size = [n for i, n in sizes if i <= len(out)][-1]
            if len(epoch_rows) - pos < size and drop_last:
                break
            out.append(epoch_rows[pos : pos + size])
            pos += size
    return out


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize(("resize_at", "stop"), [(3, 3), (3, 7), (9, 4)])
async def test_a_batch_size_change_is_in_the_state_and_a_resume_makes_the_same_batches(
    drop_last: bool, resize_at: int, stop: int
) -> None:
    """A change asked for after batch ``resize_at``, a checkpoint after batch ``stop`` (before
    or after the change took effect, or before it was asked for), then a resume: every batch
    is what the recorded schedule makes of one run's rows, and indices go on counting."""
    config: Config = {
        "keys": 30, "batch_size": 4, "concurrency": 4, "ordered": True, "drop_last": drop_last,
        "epochs": 2, "shuffle": True, "failing": False, "sync": False,
        "batch_sizes": {resize_at: 7},
    }  # fmt: skip
    feed = make_feed(config, None)
    got: list[tuple[int, list[int]]] = []
    async with feed:
        async for batch in feed:
            got.append((batch.index, [int(i) for i in batch["ids"]]))
            if len(got) == resize_at:
                feed.set_batch_size(7)
            if len(got) == stop:
                break
        state = json.loads(json.dumps(feed.state_dict()))
    sizes = state["batch_sizes"]
    assert sizes[0] == [0, 4] and sizes[-1][1] == 7 if stop >= resize_at else sizes == [[0, 4]]
    async with make_feed(config, state) as feed:
        async for batch in feed:
            got.append((batch.index, [int(i) for i in batch["ids"]]))
            if batch.index + 1 == resize_at and stop < resize_at:
                feed.set_batch_size(7)
        sizes = feed.state_dict()["batch_sizes"]
    assert [i for i, _ in got] == list(range(len(got)))
    orders = [np.random.default_rng([7, e]).permutation(30) for e in range(2)]
    rows = [[i for k in order for i in rows_of(int(k))[0].tolist()] for order in orders]
    assert [ids for _, ids in got] == cut(rows, sizes, drop_last)


async def test_a_checkpoint_at_an_epoch_end_resumes_at_the_next_epochs_first_batch() -> None:
    config: Config = {
        "keys": 12, "batch_size": 4, "concurrency": 3, "ordered": True, "drop_last": False,
        "epochs": 2, "shuffle": True, "failing": False, "sync": False,
    }  # fmt: skip
    full, _, full_epochs = await segment(config, None, None)
    per_epoch = sum(1 + k % 3 for k in range(12)) // 4  # 24 rows: 6 batches an epoch
    ids, state, epochs = await segment(config, None, per_epoch)  # every batch of epoch 0
    assert epochs == [0] * per_epoch and state["epoch"] == 1 and state["epochs"] == {}
    rest, _, rest_epochs = await segment(config, state, None)
    assert rest_epochs == [1] * per_epoch  # epoch 1 whole: not skipped, not repeated
    assert ids + rest == full and full_epochs == [0] * per_epoch + [1] * per_epoch


async def test_the_state_before_the_first_batch_and_after_the_last() -> None:
    config: Config = {
        "keys": 10, "batch_size": 3, "concurrency": 2, "ordered": False, "drop_last": True,
        "epochs": 1, "shuffle": False, "failing": False, "sync": True,
    }  # fmt: skip
    _, first, _ = await segment(config, None, 0)
    assert first["epoch"] == 0 and first["delivered"] == {"batches": 0, "rows": 0}
    _, last, _ = await segment(config, None, None)
    assert last["epoch"] == 1 and last["epochs"] == {}
    again, _, _ = await segment(config, last, None)
    assert again == []  # resuming after the last batch delivers nothing


async def test_batches_never_mix_epochs_and_each_ends_with_its_partial_batch() -> None:
    config: Config = {
        "keys": 10, "batch_size": 4, "concurrency": 4, "ordered": False, "drop_last": False,
        "epochs": 3, "shuffle": True, "failing": False, "sync": False,
    }  # fmt: skip
    feed = make_feed(config, None)
    seen: list[tuple[int, int]] = []
    async with feed:
        async for batch in feed:
            assert batch.epoch is not None
            seen.append((batch.epoch, batch.rows))
            assert {p[0] for p in batch.provenance or ()} == {batch.epoch}
    rows = sum(1 + k % 3 for k in range(10))  # 20 rows an epoch: 4 + 4 + 4 + 4 + 4
    assert [e for e, _ in seen] == sorted(e for e, _ in seen)
    for epoch in range(3):
        assert sum(r for e, r in seen if e == epoch) == rows


def test_a_shuffled_sequence_walks_each_epochs_permutation_in_order() -> None:
    feed = af.Feed.from_keys(
        list(range(20)), lambda k: [np.array([k])], blobs=["k"], batch_size=5,
        ordered=True, epochs=2, shuffle=True, seed=3,
    )  # fmt: skip
    with feed:
        keys = [int(k) for batch in feed for k in batch["k"]]
    expected = [int(i) for e in range(2) for i in np.random.default_rng([3, e]).permutation(20)]
    assert keys == expected


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_split_each_epochs_order_by_position_and_cover_it(world_size: int) -> None:
    by_epoch: list[list[list[int]]] = [[], []]  # [epoch][rank] -> keys
    for rank in range(world_size):
        feed = af.Feed.from_keys(
            list(range(31)), lambda k: [np.array([k])], blobs=["k"], batch_size=4,
            epochs=2, shuffle=True, shard=(rank, world_size), ordered=True,
        )  # fmt: skip
        for ranks_keys in by_epoch:
            ranks_keys.append([])
        with feed:
            for batch in feed:
                assert batch.epoch is not None
                by_epoch[batch.epoch][rank].extend(int(k) for k in batch["k"])
    for epoch, ranks in enumerate(by_epoch):
        order: list[int] = np.random.default_rng([0, epoch]).permutation(31).tolist()
        for rank, keys in enumerate(ranks):
            assert keys == order[rank::world_size]  # dealt by position in the epoch's order


async def test_elastic_resume_two_ranks_to_three_delivers_every_remaining_key_once() -> None:
    def feed_of(rank: int, world: int, state: dict[str, Any] | None) -> af.Feed:
        return af.Feed.from_keys(
            range(50), make_fetch(False, False), blobs=["ids", "x"], batch_size=3,
            concurrency=4, shard=(rank, world), epochs=2, shuffle=True, state=state,
        )  # fmt: skip

    got: list[int] = []
    states = []
    for rank, stop in ((0, 9), (1, 20)):  # the two ranks are at different points (and epochs)
        feed = feed_of(rank, 2, None)
        async with feed:
            taken = 0
            async for batch in feed:
                got.extend(int(i) for i in batch["ids"])
                taken += 1
                if taken == stop:
                    break
            states.append(feed.state_dict())
    merged = json.loads(json.dumps(af.Feed.merge_states(states)))
    for rank in range(3):
        feed = feed_of(rank, 3, merged)
        async with feed:
            async for batch in feed:
                got.extend(int(i) for i in batch["ids"])
    every = [i for k in range(50) for i in rows_of(k)[0].tolist()] * 2
    assert sorted(got) == sorted(every)


def test_a_state_from_another_configuration_is_refused_naming_the_field() -> None:
    def feed(**kw: Any) -> af.Feed:
        args: dict[str, Any] = {"blobs": ["k"], "batch_size": 4, "shuffle": True, "seed": 1}
        args.update(kw)
        return af.Feed.from_keys(list(range(10)), lambda k: [np.array([k])], **args)

    state = feed().state_dict()
    with pytest.raises(af.ConfigError, match=r"^state was made with seed=1, this feed has seed=2$"):
        feed(seed=2, state=state)
    with pytest.raises(af.ConfigError, match=r"^state was made with batch_size=4 \(now 4\)"):
        feed(batch_size=8, state=state)
    with pytest.raises(af.ConfigError, match=r"^state was made by rank 0 of 1, this feed is rank"):
        feed(shard=(1, 2), state=state)
    with pytest.raises(af.ConfigError, match=r"^state was made with keys=10, this feed has"):
        af.Feed.from_keys(
            list(range(11)), lambda k: None, blobs=["k"], batch_size=4, shuffle=True, seed=1,
            state=state,
        )  # fmt: skip


def test_a_seed_style_feed_has_no_state() -> None:
    async def fetch(worker_id: int, batch_size: int) -> None:
        return None

    with pytest.raises(af.FeedStateError, match=r"^a seed-style feed has no position"):
        af.Feed(fetch, blobs=["x"], batch_size=2).state_dict()


def test_load_state_dict_before_the_start_only() -> None:
    feed = af.Feed.from_keys(range(5), lambda k: [np.array([k])], blobs=["k"], batch_size=2)
    state = feed.state_dict()
    feed.load_state_dict(state)
    with feed:
        assert sum(b.rows for b in feed) == 5
        with pytest.raises(af.FeedStateError, match=r"^load_state_dict\(\) must come before"):
            feed.load_state_dict(state)


def test_one_shot_keys_cannot_make_several_epochs() -> None:
    with pytest.raises(af.ConfigError, match=r"^epochs=2 needs keys that can be walked again"):
        af.Feed.from_keys(iter(range(3)), lambda k: None, blobs=["k"], batch_size=1, epochs=2)
    with pytest.raises(af.ConfigError, match=r"needs shuffle_buffer=N"):
        af.Feed.from_keys(iter(range(3)), lambda k: None, blobs=["k"], batch_size=1, shuffle=True)


def test_a_callable_gives_fresh_keys_each_epoch_with_a_window_shuffle() -> None:
    calls: list[int] = []

    def keys() -> Any:
        calls.append(1)
        return iter(range(30))

    def run() -> list[int]:
        feed = af.Feed.from_keys(
            keys, lambda k: [np.array([k])], blobs=["k"], batch_size=5, epochs=2,
            shuffle=True, shuffle_buffer=8, seed=5, ordered=True,
        )  # fmt: skip
        with feed:
            return [int(k) for batch in feed for k in batch["k"]]

    first, second = run(), run()
    assert first == second  # seeded
    assert sorted(first) == sorted(list(range(30)) * 2) and first[:30] != list(range(30))
    assert len(calls) == 4  # one fresh iterable per epoch, per run


async def test_set_batch_size_takes_effect_from_the_next_batch_and_keeps_every_row() -> None:
    feed = af.Feed.from_keys(
        range(60), make_fetch(False, True), blobs=["ids", "x"], batch_size=4, ordered=True
    )
    sizes: list[int] = []
    ids: list[int] = []
    async with feed:
        async for batch in feed:
            sizes.append(batch.rows)
            ids.extend(int(i) for i in batch["ids"])
            if len(sizes) == 3:
                feed.set_batch_size(9)
        assert feed.state_dict()["batch_size"] == 9
    assert sizes[:3] == [4, 4, 4] and 9 in sizes and set(sizes[:-1]) <= {4, 9}
    assert ids == [i for k in range(60) for i in rows_of(k)[0].tolist()]


def test_a_state_taken_right_after_get_counts_the_batch_get_returned() -> None:
    """``get()`` from a thread: the batch is counted as received before the getter sees
    it, so a ``state_dict()`` taken next never misses it (and a resume never repeats it).
    Thread switches are forced as often as possible to give a race every chance."""
    feed = af.Feed.from_keys(range(3000), lambda k: [np.array([k])], blobs=["k"], batch_size=1)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with feed:
            for n in range(1, 1501):
                feed.get(timeout=30)
                assert feed.state_dict()["delivered"]["batches"] == n
    finally:
        sys.setswitchinterval(interval)


@pytest.mark.parametrize("ordered", [True, False])
async def test_the_state_stays_small_while_the_feed_runs_full(ordered: bool) -> None:
    """Keys that complete at once keep the chunk queue full; no key may be held back for
    good behind it (the watermark follows the consumer, the state does not grow)."""

    async def instant(key: int) -> list[np.ndarray]:
        return [np.array([key])]

    feed = af.Feed.from_keys(
        itertools.count(), instant, blobs=["k"], batch_size=64, concurrency=4,
        max_buffered_chunks=100, ordered=ordered, log_interval=None,
    )  # fmt: skip
    async with feed:
        received = 0
        async for _ in feed:
            received += 1
            if received == 100:
                break
        (record,) = feed.state_dict()["epochs"].values()
    assert 100 * 64 - 2 * 100 <= record["watermark"] <= 100 * 64
    assert len(record.get("consumed", ())) <= 2 * 100
