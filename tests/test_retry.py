"""Retry policy: validation, exponential backoff with jitter, Retry-After parsing."""

from __future__ import annotations

import email.utils

import pytest

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


def test_retry_after_sets_the_wait_up_to_max_delay() -> None:
    policy = af.Retry(backoff=0.001, max_delay=5.0)
    assert policy.delay(1, retry_after=2.0) == 2.0
    assert policy.delay(1, retry_after=3600.0) == 5.0


def test_retry_after_parses_seconds_and_http_dates() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    date = email.utils.formatdate(1_000_030.0, usegmt=True)
    assert parse_retry_after(date, now=1_000_000.0) == 30.0
    assert parse_retry_after(date, now=2_000_000.0) == 0.0


def test_which_statuses_are_retried() -> None:
    assert [s for s in (200, 301, 400, 404, 408, 429, 500, 503, 599) if retryable_status(s)] == [
        429,
        500,
        503,
        599,
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attempts": 0}, "attempts must be >= 1, got 0"),
        ({"attempts": 1.5}, "attempts must be an int, got 1.5"),
        ({"backoff": -1}, "backoff must be a number >= 0, got -1"),
        ({"max_delay": float("inf")}, "max_delay must be a number >= 0, got inf"),
        ({"jitter": 2}, "jitter must be a number in [0, 1], got 2"),
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
    ],
)
def test_http_fetcher_is_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(af.ConfigError) as info:
        af.HttpFetcher(**kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message
