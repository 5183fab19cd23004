"""The adaptive option group and the feed-level demand estimate (pure, no clock)."""

from __future__ import annotations

import pytest

import asyncfeed as af
from asyncfeed.adaptive import (
    DemandEstimator,
    DemandSample,
    RateMeter,
    ServedWindow,
    UpdateClock,
    decode_bound,
    littles_law,
)
from asyncfeed.adaptive.demand import REASONS

pytestmark = pytest.mark.timeout(10)


def test_adaptive_defaults_and_start() -> None:
    assert af.Adaptive() == af.Adaptive(min=1, max=512, start=None)
    assert af.Adaptive().initial == 16
    assert af.Adaptive(min=32, max=64).initial == 32
    assert af.Adaptive(max=4).initial == 4
    assert af.Adaptive(start=100).initial == 100
    assert af.Adaptive(min=2, max=10).clamp(0.5) == 2 and af.Adaptive(max=10).clamp(99.9) == 10
    with pytest.raises(AttributeError):
        af.Adaptive().min = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min": 0}, r"^min must be >= 1, got 0$"),
        ({"min": 1.5}, r"^min must be an int, got 1\.5$"),
        ({"max": True}, r"^max must be an int, got True$"),
        ({"min": 8, "max": 4}, r"^max must be >= min \(8\), got 4$"),
        ({"max": 70000}, r"^max must be <= 65536, got 70000$"),
        ({"start": 0}, r"^start must be between min \(1\) and max \(512\), got 0$"),
        ({"max": 8, "start": 9}, r"^start must be between min \(1\) and max \(8\), got 9$"),
        ({"start": "4"}, r"^start must be an int, got '4'$"),
    ],
)
def test_adaptive_is_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(af.ConfigError, match=message):
        af.Adaptive(**kwargs)  # type: ignore[arg-type]


def sample(**kw: float) -> DemandSample:
    values: dict[str, float] = {
        "interval_s": 1.0,
        "rows": 1000,
        "consumer_wait_s": 0.0,
        "fetches": 1000,
        "fetch_time_s": 50.0,  # 50 ms a fetch
        "fetch_rows": 1000,
    }
    values.update(kw)
    return DemandSample(**values)  # type: ignore[arg-type]


def test_littles_law_uses_the_consumers_own_speed() -> None:
    # 1000 rows/s consumed, 50 ms a fetch, one row a fetch: 50 fetches in flight
    assert littles_law(sample()) == pytest.approx(50.0)
    # the consumer waited half the time: it could take 2000 rows/s
    assert littles_law(sample(consumer_wait_s=0.5)) == pytest.approx(100.0)
    # 10 rows a fetch: a tenth of the fetches
    assert littles_law(sample(fetch_rows=10_000)) == pytest.approx(5.0)
    assert littles_law(sample(fetches=0)) == 0.0


def test_a_starved_consumer_grows_the_limit_and_full_buffers_never_do() -> None:
    est = DemandEstimator(af.Adaptive(max=512, start=16))
    decision = est.update(sample(consumer_wait_s=0.5))
    assert decision.reason == "starved" and decision.limit == 150  # 100 needed x headroom
    grown = est.update(sample(rows=10, consumer_wait_s=0.9, fetch_time_s=1.0))
    assert grown.reason == "starved" and grown.limit > 150  # waited: grows all the same
    full = est.update(sample(rows=10, backpressure_s=0.5))
    assert full.reason == "backpressure" and full.limit < grown.limit  # shrinks, by steps
    assert full.limit >= int(grown.limit * 0.8)
    for _ in range(30):
        full = est.update(sample(rows=10, backpressure_s=0.5))
    assert full.limit == 1  # a slow consumer is not worth loading the service for


def test_full_buffers_hold_a_limit_already_below_the_demand() -> None:
    est = DemandEstimator(af.Adaptive(start=10))
    decision = est.update(sample(backpressure_s=0.5))  # needs 75, buffers full: no growth
    assert (decision.limit, decision.reason) == (10, "backpressure")


def test_held_requests_or_a_busy_decode_pool_hold_the_limit() -> None:
    est = DemandEstimator(af.Adaptive(start=20))
    assert est.update(sample(consumer_wait_s=0.5, held=5)).reason == "throttled"
    assert est.limit == 20  # 15 served x headroom is more than the limit: hold
    busy = est.update(sample(consumer_wait_s=0.5, decode_wait_s=30.0))
    assert (busy.limit, busy.reason) == (20, "decode-bound")
    assert decode_bound(30.0, 50.0) and not decode_bound(10.0, 50.0) and not decode_bound(1, 0)


def test_many_held_requests_bring_the_limit_down_to_what_the_host_serves() -> None:
    est = DemandEstimator(af.Adaptive(start=256))
    limits = [est.update(sample(consumer_wait_s=0.5, held=est.limit - 32)).limit for _ in range(12)]
    assert limits[0] == int(256 * 0.8)  # by steps
    assert limits[-1] == 48  # 32 served x headroom
    assert est.reason == "throttled"
    paused = DemandEstimator(af.Adaptive(start=100))
    assert paused.update(sample(consumer_wait_s=0.9, held=100)).limit == 80  # all held


def test_without_waits_the_limit_follows_the_demand_and_stays_in_bounds() -> None:
    est = DemandEstimator(af.Adaptive(min=4, max=60, start=4))
    assert est.update(sample()).limit == 60  # 75 wanted, capped
    for _ in range(20):
        decision = est.update(sample(rows=10))  # almost nothing consumed
    assert (decision.limit, decision.reason) == (4, "demand")
    assert est.update(sample(fetches=0, fetch_rows=0)).reason == "idle"
    assert set(REASONS) >= {"demand", "starved", "backpressure", "decode-bound"}


def test_update_clock_is_due_every_second_or_fifty_completions() -> None:
    clock = UpdateClock(0.0)
    assert not clock.due(0.5)
    assert clock.due(1.0)
    clock.completed(49)
    assert not clock.due(1.2)
    clock.completed(1)
    assert not clock.due(1.05)  # never more often than every 0.1 s
    assert clock.due(1.2) and not clock.due(1.3)


def test_rate_meter_smooths_buckets_and_decays_when_idle() -> None:
    meter = RateMeter(bucket=0.5, smoothing=0.5)
    assert meter.rate(0.0) == 0.0
    for i in range(50):
        meter.add(i / 100)  # 100/s for half a second
    assert meter.rate(0.49) == pytest.approx(50 / 0.49, rel=0.01)  # before a bucket closes
    assert meter.rate(0.5) == pytest.approx(100.0)
    for i in range(25, 50):
        meter.add(i / 50)  # then 50/s
    assert meter.rate(1.0) == pytest.approx(75.0)  # half of the old, half of the new
    for i in range(50, 75):
        meter.add(i / 50)
    assert meter.rate(1.5) == pytest.approx(62.5)
    assert meter.rate(10.0) < 1.0  # nothing since: decays


def test_served_window_reads_the_concurrency_a_host_sustained() -> None:
    served = ServedWindow(window=3.0)
    assert served.level(0.0) is None
    for wave in range(10):  # waves of 4 overlapping successes, 0.1 s each
        for i in range(4):
            served.add(wave * 0.1 + i * 0.001, wave * 0.1 + 0.09)
    served.add(0.95, 0.951)  # a brief fifth one does not count
    assert served.level(1.0) == 4
    assert served.level(10.0) is None  # too old
