"""The lifecycle state machine (``state.py``): one message per illegal move, callbacks once."""

from __future__ import annotations

import threading

import pytest

from asyncfeed import FeedState, FeedStateError
from asyncfeed.state import Lifecycle


def state(life: Lifecycle) -> FeedState:
    """The state now (a call, so a type checker does not keep an earlier reading)."""
    return life.state


def test_the_normal_path_new_running_stopping_stopped() -> None:
    life = Lifecycle()
    seen: list[FeedState] = []
    life.on_stopped(lambda: seen.append(life.state))
    assert state(life) is FeedState.NEW
    life.start()
    assert state(life) is FeedState.RUNNING
    assert life.begin_stop() is FeedState.RUNNING and state(life) is FeedState.STOPPING
    assert life.begin_stop() is FeedState.STOPPING  # a second stop just finds it stopping
    life.stopped()
    life.stopped()
    assert state(life) is FeedState.STOPPED and seen == [FeedState.STOPPED]  # once


def test_a_run_that_ends_on_its_own_waits_for_a_stop() -> None:
    life = Lifecycle()
    life.start()
    life.ended()
    assert state(life) is FeedState.STOPPING
    life.ended()
    assert state(life) is FeedState.STOPPING


def test_new_goes_straight_to_stopped() -> None:
    life = Lifecycle()
    seen: list[str] = []
    life.on_stopped(lambda: seen.append("stopped"))
    assert life.begin_stop() is FeedState.NEW and state(life) is FeedState.STOPPED
    assert seen == ["stopped"]
    assert not life.stop_if_new()


@pytest.mark.parametrize("moves", [["start"], ["stop"], ["start", "stop"]])
def test_a_feed_starts_once(moves: list[str]) -> None:
    life = Lifecycle()
    for move in moves:
        life.start() if move == "start" else life.begin_stop()
    now = state(life).value
    with pytest.raises(
        FeedStateError, match=rf"^a feed starts once; this one is {now} \(create a new Feed\)$"
    ):
        life.start()


def test_a_callback_registered_after_the_stop_runs_at_once() -> None:
    life = Lifecycle()
    life.begin_stop()
    seen: list[int] = []
    life.on_stopped(lambda: seen.append(1))
    assert seen == [1]


def test_one_of_many_racing_threads_starts_the_feed() -> None:
    life = Lifecycle()
    won: list[int] = []
    barrier = threading.Barrier(8)

    def race(i: int) -> None:
        barrier.wait()
        try:
            life.start()
            won.append(i)
        except FeedStateError:
            pass

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(won) == 1 and state(life) is FeedState.RUNNING
