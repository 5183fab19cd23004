"""Per-host statistics: status classes, latency histogram, in flight, rate, held, merging."""

from __future__ import annotations

import math
import pickle

import pytest

from asyncfeed.fetchers.hoststats import (
    CODE_CLASSES,
    LATENCY_BUCKETS,
    HostStats,
    code_class,
    merge_host_stats,
)

pytestmark = pytest.mark.timeout(10)


def test_status_classes() -> None:
    assert [code_class(s) for s in (200, 204, 301, 404, 429, 503, None, 101)] == [
        "2xx",
        "2xx",
        "3xx",
        "4xx",
        "4xx",
        "5xx",
        "error",
        "2xx",
    ]
    assert CODE_CLASSES == ("2xx", "3xx", "4xx", "5xx", "error")


def test_requests_by_class_histogram_and_retries_by_reason() -> None:
    stats = HostStats()
    stats.sent("h")
    stats.request("h", 0.004, 100)  # 200
    stats.ended("h")
    stats.request("h", 0.02, 0, 429)
    stats.failed("h", "http_429", retried=True, responded=True)
    stats.failed("h", "timeout", retried=True, responded=False, latency=30.5)
    stats.failed("h", "connection", retried=False, responded=False, latency=0.0001)
    stats.request("h", 0.03, 50)
    stats.failed("h", "decode", retried=False, responded=True)
    (h,) = stats.snapshot().values()
    assert h["requests"] == 5 == h["latency_count"] == sum(h["status"].values())
    assert h["status"] == {"2xx": 2, "3xx": 0, "4xx": 1, "5xx": 0, "error": 2}
    assert h["retries"] == 2 and h["retries_by_reason"] == {"http_429": 1, "timeout": 1}
    assert h["errors"] == {"http_429": 1, "timeout": 1, "connection": 1, "decode": 1}
    assert h["latency_sum"] == pytest.approx(0.004 + 0.02 + 30.5 + 0.0001 + 0.03)
    buckets = h["latency_buckets"]
    assert len(buckets) == len(LATENCY_BUCKETS) + 1 and buckets[-1] == 5
    assert buckets == sorted(buckets)  # cumulative
    le = dict(zip(LATENCY_BUCKETS, buckets, strict=False))
    assert le[0.001] == 1 and le[0.005] == 2 and le[0.025] == 3 and le[0.05] == 4
    assert le[30.0] == 4 and le[60.0] == 5
    assert h["bytes"] == 150 and h["inflight"] == 0 and h["latency_p50"] > 0


def test_inflight_rate_and_held() -> None:
    stats = HostStats()
    for _ in range(3):
        stats.sent("h")
    stats.ended("h")
    stats.held("h", 2)
    stats.held("h", -1, 0.25)
    (h,) = stats.snapshot().values()
    assert h["inflight"] == 2 and h["held"] == 1 and h["held_s"] == 0.25
    assert h["rate"] > 0
    assert stats.totals()["inflight"] == 2 and stats.totals()["held"] == 1


def test_merging_sums_counters_buckets_inflight_and_limits() -> None:
    a, b = HostStats(), HostStats()
    for stats, latency in ((a, 0.004), (b, 2.0)):
        stats.sent("h")
        stats.request("h", latency, 10)
    one = a.snapshot()
    two = b.snapshot()
    one["h"].update(limit=8, rate_limit=50.0, limit_reason="probing", rate_limit_reason="probing")
    two["h"].update(limit=6, rate_limit=math.inf, limit_reason="throttled")
    two["h"]["rate_limit_reason"] = "unlimited"
    merged = merge_host_stats([one, two])["h"]
    assert merged["requests"] == 2 and merged["inflight"] == 2 and merged["bytes"] == 20
    assert merged["latency_buckets"] == [
        x + y for x, y in zip(one["h"]["latency_buckets"], two["h"]["latency_buckets"], strict=True)
    ]
    assert merged["latency_count"] == 2 and merged["latency_sum"] == pytest.approx(2.004)
    assert merged["status"]["2xx"] == 2
    assert merged["limit"] == 14  # each process limits its own share: the host sees the sum
    assert merged["rate_limit"] == math.inf  # one process unlimited: no limit overall
    assert merged["limit_reason"] == "throttled" and merged["rate_limit_reason"] == "probing"
    assert merged["latency_p99"] == max(one["h"]["latency_p99"], two["h"]["latency_p99"])


def test_host_stats_pickle_as_plain_data() -> None:
    stats = HostStats()
    stats.sent("h")
    stats.request("h", 0.01, 1)
    snap = stats.snapshot()
    assert pickle.loads(pickle.dumps(snap)) == snap
