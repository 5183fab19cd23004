"""Which feeds an exporter reads: held weakly, counters kept past a feed's end, sources merged,
worker processes merged; and the OpenTelemetry bridge over the same snapshots."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import asyncfeed as af
import asyncfeed.metrics as afm
from asyncfeed.metrics.otel import instrument, otel_name
from asyncfeed.stats import WAIT_CAUSES
from tests.metrics.test_prometheus import parse, scrape, value

pytestmark = pytest.mark.timeout(60)


def sample(feeds: afm.FeedSet, name: str, **labels: str) -> float:
    """The sum of the samples of family ``name`` matching ``labels``."""
    total = 0.0
    for family in feeds.families():
        if family.metric.name != name:
            continue
        for values, number in family.samples.items():
            named = dict(zip(family.metric.labels, values, strict=True))
            if all(named.get(k) == v for k, v in labels.items()):
                assert isinstance(number, float)
                total += number
    return total


async def fetch_one(key: int) -> list[np.ndarray]:
    return [np.full((1, 2), key, np.int64)]


def keyed(n: int, source: str = "epoch") -> af.Feed:
    return af.Feed.from_keys(
        range(n), fetch_one, blobs=["x"], batch_size=5, source=source, log_interval=None
    )


async def drain(feed: af.Feed) -> None:
    async with feed:
        async for _ in feed:
            pass


async def test_counters_carry_on_across_the_feeds_of_a_source() -> None:
    feeds = afm.FeedSet()
    first = keyed(20)
    feeds.add(first)
    feeds.add(first)  # twice: once
    await drain(first)
    assert sample(feeds, "asyncfeed_rows", state="delivered") == 20
    assert len(feeds) == 0 and first not in feeds  # stopped: retired
    second = keyed(15)
    afm.register(second, feeds)
    async with second:
        await anext(second)
        assert sample(feeds, "asyncfeed_rows", state="delivered") == 25  # 20 + 5 so far
        assert sample(feeds, "asyncfeed_feeds", state="running") == 1
        assert second in feeds
        async for _ in second:
            pass
    assert sample(feeds, "asyncfeed_rows", state="delivered") == 35  # 15 of the second
    assert sample(feeds, "asyncfeed_batches") == 7
    assert sample(feeds, "asyncfeed_feeds") == 0  # gauges go with the feeds


async def test_feeds_are_held_weakly_and_keep_their_counters() -> None:
    feeds = afm.FeedSet()
    feed: af.Feed | None = keyed(10)
    assert feed is not None
    feeds.add(feed)
    async with feed:
        await anext(feed)
        assert sample(feeds, "asyncfeed_rows", state="delivered") == 5
        afm.unregister(feed, feeds)  # its counters so far stay
        assert feed not in feeds
    assert sample(feeds, "asyncfeed_rows", state="delivered") == 5
    other: af.Feed | None = keyed(5, source="other")
    assert other is not None
    feeds.add(other)
    assert sample(feeds, "asyncfeed_feeds", state="new", source="other") == 1
    del other
    gc.collect()
    assert len(feeds) == 0 and sample(feeds, "asyncfeed_feeds") == 0


async def test_seed_feeds_of_one_source_count_their_shared_rows_once(
    counter: Any,
) -> None:
    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return counter.chunk(2)  # type: ignore[no-any-return]

    make: Callable[[], af.Feed] = lambda: af.Feed(  # noqa: E731
        fetch, blobs=list(counter.blobs), batch_size=4, source="shared", log_interval=None
    )
    a, b = make(), make()
    feeds = afm.FeedSet([a, b])
    async with a, b:
        await anext(a)
        await anext(b)
        stats = a.stats()
        running = sample(feeds, "asyncfeed_rows", state="fetched")
        assert running >= stats.rows_fetched  # one ledger, read once, not twice
        assert running <= b.stats().rows_fetched
        assert sample(feeds, "asyncfeed_batches") >= 2
    assert a.stats().rows_fetched == b.stats().rows_fetched
    assert sample(feeds, "asyncfeed_rows", state="fetched") == a.stats().rows_fetched
    assert sample(feeds, "asyncfeed_batches") == (
        a.stats().batches_delivered + b.stats().batches_delivered
    )


async def test_metrics_of_a_feed_with_worker_processes_are_merged() -> None:
    async with af.ImageService(count=8, size=16, fmt="png") as service:
        feed = af.Feed.from_keys(
            service.urls(32),
            af.HttpFetcher(decode_threads=1),
            blobs=["data"],
            batch_size=8,
            concurrency=4,
            processes=2,
            log_interval=None,
        )
        feeds = afm.FeedSet([feed])
        with afm.serve(feeds=feeds) as server:
            await drain(feed)
            stats = feed.stats()
            families = parse((await scrape(server.url))[1])
    (host,) = stats.hosts.values()
    assert value(families, "asyncfeed_rows_total", state="delivered") == 32
    assert value(families, "asyncfeed_http_requests_total") == host["requests"] >= 1
    assert value(families, "asyncfeed_fetch_duration_seconds_count") == host["latency_count"]
    assert host["requests"] <= service.requests == 32  # the workers' reports, merged


async def test_the_opentelemetry_bridge_observes_the_same_snapshot() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    feed = keyed(20, source="otel")
    bridge = instrument(meter_provider=provider, feeds=[feed], max_age=0.0)
    try:
        async with feed:
            await anext(feed)
            first = points(reader)
            async for _ in feed:
                pass
            second = points(reader)
        assert first["asyncfeed.rows"][(("source", "otel"), ("state", "delivered"))] == 5
        assert second["asyncfeed.rows"][(("source", "otel"), ("state", "delivered"))] == 20
        assert second["asyncfeed.batches"][(("source", "otel"),)] == 4
        waits = second["asyncfeed.consumer_wait"]
        assert {dict(k)["cause"] for k in waits} == set(WAIT_CAUSES)
        assert second["asyncfeed.queue_capacity"][(("queue", "chunks"), ("source", "otel"))] == 800
        assert set(bridge.names) >= {"asyncfeed.fetch_duration.count", "asyncfeed.rows"}
        bridge.close()
        assert not points(reader).get("asyncfeed.rows")
    finally:
        provider.shutdown()


def points(reader: InMemoryMetricReader) -> dict[str, dict[tuple[tuple[str, Any], ...], float]]:
    """Metric name → attributes → value, from one collection."""
    out: dict[str, dict[tuple[tuple[str, Any], ...], float]] = {}
    data = reader.get_metrics_data()
    if data is None:
        return out
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    attrs = tuple(sorted((point.attributes or {}).items()))
                    out.setdefault(metric.name, {})[attrs] = point.value  # type: ignore[union-attr]
    return out


def test_opentelemetry_names_drop_the_unit_suffix_for_a_unit() -> None:
    metrics = afm.METRICS
    assert otel_name(metrics["asyncfeed_consumer_wait_seconds"]) == ("asyncfeed.consumer_wait", "s")
    assert otel_name(metrics["asyncfeed_http_response_bytes"]) == ("asyncfeed.http_response", "By")
    assert otel_name(metrics["asyncfeed_starvation_ratio"]) == ("asyncfeed.starvation", "1")
    assert otel_name(metrics["asyncfeed_rows"]) == ("asyncfeed.rows", "")
