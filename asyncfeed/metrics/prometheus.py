"""The Prometheus side (``pip install 'asyncfeed[metrics]'``): a collector, an aiohttp
handler, a standalone endpoint.

- :class:`FeedCollector`: a ``prometheus_client`` collector over a :class:`FeedSet`, read at
  scrape time; register it with any registry (``REGISTRY.register(FeedCollector())``).
- :func:`handler`: an aiohttp handler serving the metrics in the text format (or
  OpenMetrics, if the scraper asks), to mount on an orchestrator's own application::

      app.router.add_get("/metrics", af.metrics.handler())

- :func:`serve`: the same on its own endpoint, ``http://127.0.0.1:PORT/metrics``, served by
  a private event loop in a daemon thread (``bridge.LoopThread``) until ``close()``.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Final, Self, final

from aiohttp import web
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from ..bridge import LoopThread
from .families import Family, HistogramValue
from .registry import FeedSet, MeteredFeed, as_feed_set

__all__ = ["FeedCollector", "MetricsServer", "handler", "make_registry", "serve"]

START_TIMEOUT: Final = 10.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Feeds = FeedSet | Iterable[MeteredFeed] | None


@final
class FeedCollector(Collector):
    """A ``prometheus_client`` collector of the feeds of a :class:`FeedSet`.

    Args:
        feeds: a :class:`FeedSet`, feeds to export, or None for the default set
            (``af.metrics.register``).
    """

    def __init__(self, feeds: Feeds = None) -> None:
        self.feeds: Final = as_feed_set(feeds)

    def describe(self) -> list[Metric]:
        """Nothing: a registry then collects only when scraped."""
        return []

    def collect(self) -> Iterator[Metric]:
        """One snapshot of every feed, as Prometheus metric families."""
        for family in self.feeds.families():
            yield _to_prometheus(family)


def _to_prometheus(family: Family) -> Metric:
    m = family.metric
    labels = list(m.labels)
    metric: CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily
    if m.kind == "histogram":
        metric = HistogramMetricFamily(m.name, m.help, labels=labels, unit="")
        for values, hist in family.samples.items():
            if isinstance(hist, HistogramValue):
                bounds = [_bound(b) for b in hist.bounds] + ["+Inf"]
                buckets = list(zip(bounds, hist.buckets, strict=True))
                metric.add_metric(list(values), buckets, hist.sum)
        return metric
    cls = CounterMetricFamily if m.kind == "counter" else GaugeMetricFamily
    metric = cls(m.name, m.help, labels=labels)
    for values, value in family.samples.items():
        if not isinstance(value, HistogramValue):
            metric.add_metric(list(values), value)
    return metric


def _bound(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def make_registry(feeds: Feeds = None) -> CollectorRegistry:
    """A registry holding one :class:`FeedCollector` of ``feeds`` and nothing else."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FeedCollector(feeds))
    return registry


def handler(feeds: Feeds = None, *, registry: CollectorRegistry | None = None) -> Handler:
    """An aiohttp handler answering a scrape with the metrics of ``feeds`` (or ``registry``).

    Mount it on an application of your own: ``app.router.add_get("/metrics", handler())``.
    Collecting takes one ``stats()`` snapshot per feed, on the handler's loop.
    """
    source = registry if registry is not None else make_registry(feeds)

    async def metrics(request: web.Request) -> web.Response:
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(source), headers={"Content-Type": content_type})

    return metrics


@final
class MetricsServer:
    """A running metrics endpoint; :meth:`close` (or ``with``) stops it."""

    def __init__(self, portal: LoopThread, runner: web.AppRunner, host: str, port: int, path: str):
        self._portal: LoopThread | None = portal
        self._runner = runner
        self.host: Final = host
        self.port: Final = port
        self.path: Final = path

    @property
    def url(self) -> str:
        """``http://HOST:PORT/metrics``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.path}"

    def __repr__(self) -> str:
        state = "closed" if self._portal is None else "serving"
        return f"<MetricsServer {state} {self.url}>"

    def close(self, *, timeout: float = 5.0) -> None:
        """Stop serving and end the server's thread, within ``timeout`` seconds. Idempotent."""
        portal, self._portal = self._portal, None
        if portal is None:
            return
        try:
            portal.submit(self._runner.cleanup()).result(timeout)
        finally:
            portal.close(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def serve(
    port: int = 0,
    host: str = "127.0.0.1",
    *,
    feeds: Feeds = None,
    registry: CollectorRegistry | None = None,
    path: str = "/metrics",
) -> MetricsServer:
    """Serve the metrics of ``feeds`` (or ``registry``) at ``http://host:port/metrics``.

    ``port=0`` picks a free port (see :attr:`MetricsServer.port`). The server runs on its
    own loop thread, so it keeps answering whatever the caller's loop does.

    Raises:
        OSError: the address cannot be listened on.
    """
    app = web.Application()
    app.router.add_get(path, handler(feeds, registry=registry))
    portal = LoopThread("asyncfeed-metrics")
    try:
        runner, bound = portal.submit(_start(app, host, port)).result(START_TIMEOUT)
    except BaseException:
        portal.close(START_TIMEOUT)
        raise
    return MetricsServer(portal, runner, host, bound, path)


async def _start(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        await runner.setup()
        await web.SockSite(runner, sock).start()
    except BaseException:
        sock.close()
        await runner.cleanup()
        raise
    return runner, int(sock.getsockname()[1])
