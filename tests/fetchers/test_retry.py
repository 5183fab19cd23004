"""Retry policy: validation, capped exponential backoff with full jitter, the deadline,
Retry-After parsing."""

from __future__ import annotations

import email.utils

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import asyncfeed as af
from asyncfeed.fetchers.retry import parse_retry_after, retryable_status


def test_backoff_doubles_and_is_capped() -> None:
    policy = af.Retry(attempts=10, backoff=0.1, max_delay=1.0, jitter=0.0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.1, 0.2, 0.4, 0.8, 1.0]


def test_jitter_stays_within_its_fraction() -> None:
    policy = af.Retry(backoff=1.0, max_delay=100.0, jitter=0.5)
    delays = [policy.delay(3) for _ in range(200)]
    assert all(2.0 <= d <= 4.0 for d in delays)
    assert len(set(delays)) > 100  # workers failing together do not retry together


def test_the_default_is_capped_exponential_backoff_with_full_jitter() -> None:
    policy = af.Retry()
    assert (policy.attempts, policy.backoff, policy.max_delay, policy.jitter) == (
        30,
        0.5,
        10.0,
        1.0,
    )
    assert policy.deadline == 60.0
    for attempt, bound in [(1, 0.5), (2, 1.0), (4, 4.0), (5, 8.0), (6, 10.0), (29, 10.0)]:
        delays = [policy.delay(attempt) for _ in range(300)]
        assert 0.0 <= min(delays) < bound / 4 and bound * 3 / 4 < max(delays) <= bound


def test_retry_after_is_honoured_beyond_max_delay() -> None:
    policy = af.Retry(backoff=0.001, max_delay=5.0)
    assert policy.delay(1, retry_after=2.0) == 2.0
    assert policy.next_wait(1, 0.0, retry_after=30.0) == 30.0


def test_the_deadline_bounds_every_wait_and_ends_the_retries() -> None:
    policy = af.Retry(attempts=100, backoff=10.0, max_delay=10.0, jitter=0.0, deadline=25.0)
    assert policy.next_wait(1, 0.0) == 10.0
    assert policy.next_wait(2, 20.0) == 5.0  # shortened to end on the deadline
    assert policy.next_wait(3, 25.0) is None
    assert policy.next_wait(2, 20.0, retry_after=6.0) is None  # it would end past it
    assert policy.next_wait(2, 20.0, retry_after=4.0) == 4.0
    assert af.Retry(attempts=3).next_wait(3, 0.0) is None
    assert af.Retry(attempts=1).next_wait(1, 0.0) is None


@settings(max_examples=200, deadline=None)
@given(
    attempts=st.integers(1, 50),
    backoff=st.floats(0, 20),
    max_delay=st.floats(0, 30),
    jitter=st.floats(0, 1),
    deadline=st.floats(0.01, 120),
    request_s=st.floats(0, 5),
)
def test_no_attempt_starts_after_the_deadline(
    attempts: int,
    backoff: float,
    max_delay: float,
    jitter: float,
    deadline: float,
    request_s: float,
) -> None:
    policy = af.Retry(attempts, backoff, max_delay, jitter, deadline)
    clock, made = request_s, 1  # the first attempt has failed after request_s
    while (wait := policy.next_wait(made, clock)) is not None:
        assert 0.0 <= wait <= max(max_delay, 0.0) + 1e-9
        clock += wait
        assert clock <= deadline + 1e-9  # the next attempt starts by the deadline
        made += 1
        clock += request_s
    assert made <= attempts


def test_the_defaults_outlast_a_server_down_for_several_seconds() -> None:
    """Simulated: a fetch that fails at once while the server is down for 8 s still has an
    attempt after it is back, in every one of 2,000 draws of the jitter."""
    policy = af.Retry()
    for _ in range(2000):
        clock, made = 0.0, 1
        while clock < 8.0:
            wait = policy.next_wait(made, clock)
            assert wait is not None, f"gave up after {made} attempts at {clock:.1f} s"
            clock += wait
            made += 1


def test_retry_after_parses_seconds_and_http_dates() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    date = email.utils.formatdate(1_000_030.0, usegmt=True)
    assert parse_retry_after(date, now=1_000_000.0) == 30.0
    assert parse_retry_after(date, now=2_000_000.0) == 0.0


def test_which_statuses_are_retried() -> None:
    statuses = (200, 301, 400, 401, 403, 404, 408, 410, 413, 429, 500, 502, 503, 504, 599)
    assert [s for s in statuses if retryable_status(s)] == [408, 429, 500, 502, 503, 504, 599]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attempts": 0}, "attempts must be >= 1, got 0"),
        ({"attempts": 1.5}, "attempts must be an int, got 1.5"),
        ({"backoff": -1}, "backoff must be a finite number >= 0, got -1"),
        ({"max_delay": float("inf")}, "max_delay must be a finite number >= 0, got inf"),
        ({"jitter": 2}, "jitter must be a number in [0, 1], got 2"),
        ({"deadline": 0}, "deadline must be a finite number > 0, got 0"),
        ({"deadline": float("nan")}, "deadline must be a finite number > 0, got nan"),
        ({"deadline": True}, "deadline must be a finite number > 0, got True"),
    ],
)
def test_retry_is_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(af.ConfigError) as info:
        af.Retry(**kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_bytes": 0}, "max_bytes must be >= 1, got 0"),
        ({"limit": 0}, "limit must be >= 1, got 0"),
        ({"retry": 3}, "retry must be a Retry, got 3"),
        ({"timeout": 5}, "timeout must be an aiohttp.ClientTimeout, got 5"),
        ({"content_types": "image/"}, "content_types must be a list of strings, got 'image/'"),
        ({"decode_threads": 0}, "decode_threads must be an int >= 1, got 0"),
        ({"transform": 3}, "transform must be callable or None, got 3"),
    ],
)
def test_http_fetcher_is_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(af.ConfigError) as info:
        af.HttpFetcher(**kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message
