"""Prometheus export: a real scrape over HTTP, parsed with prometheus-client's text parser."""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

import asyncfeed as af
import asyncfeed.metrics as afm

pytestmark = pytest.mark.timeout(60)

Scrape = dict[str, Any]  # family name → prometheus_client Metric

#: Every family: its type and its labels (a histogram's samples add ``le``).
EXPECTED: dict[str, tuple[str, set[str]]] = {
    "asyncfeed_rows": ("counter", {"source", "state"}),
    "asyncfeed_rows_dropped": ("counter", {"source", "cause"}),
    "asyncfeed_rows_in_flight": ("gauge", {"source", "stage"}),
    "asyncfeed_batches": ("counter", {"source"}),
    "asyncfeed_fetch_calls": ("counter", {"source"}),
    "asyncfeed_fetch_errors": ("counter", {"source"}),
    "asyncfeed_fetch_none": ("counter", {"source"}),
    "asyncfeed_fetch_empty": ("counter", {"source"}),
    "asyncfeed_consumer_wait_seconds": ("counter", {"source", "cause"}),
    "asyncfeed_consumer_waits": ("counter", {"source"}),
    "asyncfeed_backpressure_seconds": ("counter", {"source", "stage"}),
    "asyncfeed_starvation_ratio": ("gauge", {"source"}),
    "asyncfeed_time_to_first_batch_seconds": ("gauge", {"source"}),
    "asyncfeed_queue_items": ("gauge", {"source", "queue"}),
    "asyncfeed_queue_capacity": ("gauge", {"source", "queue"}),
    "asyncfeed_fetch_calls_inflight": ("gauge", {"source"}),
    "asyncfeed_concurrency_limit": ("gauge", {"source", "reason"}),
    "asyncfeed_feeds": ("gauge", {"source", "state"}),
    "asyncfeed_fetch_duration_seconds": ("histogram", {"source", "host"}),
    "asyncfeed_fetch_inflight": ("gauge", {"source", "host"}),
    "asyncfeed_fetch_concurrency_limit": ("gauge", {"source", "host", "reason"}),
    "asyncfeed_fetch_rate_limit": ("gauge", {"source", "host", "reason"}),
    "asyncfeed_http_requests": ("counter", {"source", "host", "code_class"}),
    "asyncfeed_http_retries": ("counter", {"source", "host", "reason"}),
    "asyncfeed_http_failures": ("counter", {"source", "host", "reason"}),
    "asyncfeed_http_response_bytes": ("counter", {"source", "host"}),
    "asyncfeed_http_requests_per_second": ("gauge", {"source", "host"}),
    "asyncfeed_http_held_requests": ("gauge", {"source", "host"}),
    "asyncfeed_http_held_seconds": ("counter", {"source", "host"}),
}


def parse(text: str) -> Scrape:
    return {family.name: family for family in text_string_to_metric_families(text)}


async def scrape(url: str, accept: str | None = None) -> tuple[str, str]:
    headers = {} if accept is None else {"Accept": accept}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        assert resp.status == 200
        return resp.headers["Content-Type"], await resp.text()


def value(families: Scrape, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` (a family or sample name) matching ``labels``."""
    family = families[name.removesuffix("_total").removesuffix("_count").removesuffix("_sum")]
    samples: list[Sample] = family.samples
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def counters(families: Scrape) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        if f.type in ("counter", "histogram")
        for s in f.samples
    }


@pytest.fixture
async def service() -> AsyncIterator[af.ImageService]:
    async with af.ImageService(count=16, size=16, fmt="png", error_rate=0.1) as svc:
        yield svc


async def test_a_scrape_lists_every_metric_with_its_type_and_labels(
    service: af.ImageService,
) -> None:
    feed = af.Feed.from_keys(
        service.urls(64),
        af.HttpFetcher(adaptive=True, decode_threads=1),
        blobs=["data"],
        batch_size=8,
        concurrency=4,
        log_interval=None,
    )
    feeds = afm.FeedSet([feed])
    with afm.serve(feeds=feeds) as server:
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        async with feed:
            await anext(feed)
            content_type, text = await scrape(server.url)
            async for _ in feed:
                pass
    assert content_type.startswith("text/plain; version=0.0.4")
    families = parse(text)
    assert set(families) == set(EXPECTED)
    for name, (kind, labels) in EXPECTED.items():
        family = families[name]
        assert family.type == kind, name
        for sample in family.samples:
            extra = {"le"} if sample.name.endswith("_bucket") else set()
            assert set(sample.labels) == labels | extra, (name, sample)
    empty = {n for n, f in families.items() if not f.samples}
    assert empty <= {"asyncfeed_time_to_first_batch_seconds", "asyncfeed_http_retries"} | {
        "asyncfeed_http_failures"
    }  # these need a first batch timed by the core, or a failure
    host = f"127.0.0.1:{service.port}"
    assert value(families, "asyncfeed_fetch_concurrency_limit", host=host) >= 1
    assert value(families, "asyncfeed_queue_capacity", queue="chunks") == 800
    assert value(families, "asyncfeed_feeds", state="running") == 1
    assert value(families, "asyncfeed_concurrency_limit", reason="fixed") == 4
    assert value(families, "asyncfeed_fetch_duration_seconds_count", host=host) == value(
        families, "asyncfeed_http_requests_total", host=host
    )


async def test_counters_are_monotonic_and_totals_equal_stats_and_the_ledger(
    service: af.ImageService,
) -> None:
    feed = af.Feed.from_keys(
        service.urls(96),
        af.HttpFetcher(retry=af.Retry(backoff=0.01), decode_threads=1),
        blobs=["data"],
        batch_size=8,
        concurrency=8,
        log_interval=None,
    )
    feeds = afm.FeedSet([feed])
    scrapes: list[Scrape] = []
    with afm.serve(feeds=feeds) as server:
        async with feed:
            async for _ in feed:
                families = parse((await scrape(server.url))[1])
                fetched = value(families, "asyncfeed_rows_total", state="fetched")
                settled = value(families, "asyncfeed_rows_total", state="delivered") + value(
                    families, "asyncfeed_rows_total", state="dropped"
                )
                assert fetched == settled + value(families, "asyncfeed_rows_in_flight")
                scrapes.append(families)
        stats = feed.stats()
        final = parse((await scrape(server.url))[1])
    scrapes.append(final)
    for before, after in itertools.pairwise(scrapes):
        old, new = counters(before), counters(after)
        for key, number in old.items():
            assert new.get(key, 0.0) >= number, key  # counters never go back
    assert stats.state == "stopped" and stats.rows_delivered == 96
    assert value(final, "asyncfeed_rows_total", state="fetched") == stats.rows_fetched
    assert value(final, "asyncfeed_rows_total", state="delivered") == stats.rows_delivered
    assert value(final, "asyncfeed_rows_total", state="dropped") == stats.rows_dropped
    assert value(final, "asyncfeed_batches_total") == stats.batches_delivered == 12
    assert value(final, "asyncfeed_fetch_calls_total") == stats.fetch_calls
    (host,) = stats.hosts.values()
    assert value(final, "asyncfeed_http_requests_total") == host["requests"]
    assert value(final, "asyncfeed_http_requests_total", code_class="5xx") == host["status"]["5xx"]
    assert value(final, "asyncfeed_http_retries_total", reason="http_503") == host["retries"]
    assert host["retries"] == service.errors_injected > 0
    assert value(final, "asyncfeed_http_response_bytes_total") == host["bytes"]
    assert value(final, "asyncfeed_fetch_duration_seconds_sum") == pytest.approx(
        host["latency_sum"]
    )
    assert not final["asyncfeed_feeds"].samples  # a stopped feed's gauges go with it


async def test_the_handler_serves_on_an_orchestrators_own_application() -> None:
    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def fetch_one(key: int) -> list[Any]:
        return [np.full((1, 2), key, np.int64)]

    feed = af.Feed.from_keys(range(20), fetch_one, blobs=["x"], batch_size=5, log_interval=None)
    app = web.Application()
    app.router.add_get("/healthz", health)
    app.router.add_get("/metrics", afm.handler(afm.FeedSet([feed])))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        async with feed:
            async for _ in feed:
                pass
            _, text = await scrape(f"http://127.0.0.1:{port}/metrics")
            kind, open_text = await scrape(
                f"http://127.0.0.1:{port}/metrics", accept="application/openmetrics-text"
            )
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/healthz") as resp,
        ):
            assert await resp.text() == "ok"
    finally:
        await runner.cleanup()
    assert value(parse(text), "asyncfeed_rows_total", state="delivered", source="keys") == 20
    assert kind.startswith("application/openmetrics-text")
    assert open_text.rstrip().endswith("# EOF")


def test_import_asyncfeed_metrics_loads_no_exporter_until_asked() -> None:
    code = (
        "import sys, asyncfeed.metrics as m; "
        "assert 'prometheus_client' not in sys.modules and 'opentelemetry' not in sys.modules; "
        "m.serve; assert 'prometheus_client' in sys.modules; "
        "m.otel; assert 'opentelemetry' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], timeout=60, check=True)
