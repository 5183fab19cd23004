"""Metrics of running feeds for Prometheus and OpenTelemetry (optional extras).

``pip install 'asyncfeed[metrics]'`` for Prometheus, ``'asyncfeed[otel]'`` for OpenTelemetry.
Exporters read ``feed.stats()`` snapshots when scraped, never in between::

    import asyncfeed.metrics

    asyncfeed.metrics.register(feed)                 # weakly; counters outlive the feed
    server = asyncfeed.metrics.serve(port=9100)      # http://127.0.0.1:9100/metrics
    app.router.add_get("/metrics", asyncfeed.metrics.handler())  # or on your own app
    asyncfeed.metrics.otel.instrument()              # OpenTelemetry observable instruments

Every metric, its labels and PromQL examples: ``docs/observability.md``.

- ``families.py``: the metric list and how a snapshot fills it (pure);
- ``registry.py``: :class:`FeedSet`, weakly held feeds, their counters kept past their end;
- ``prometheus.py``: collector, aiohttp handler, standalone server (needs prometheus-client);
- ``otel.py``: the OpenTelemetry bridge (needs opentelemetry-api).

Importing this package needs neither extra; the names that do are loaded on first use.
"""

import importlib as _importlib
import typing as _typing

from .families import METRICS, Family, HistogramValue, MetricDef
from .registry import FeedSet, MeteredFeed, default_feeds, register, unregister

if _typing.TYPE_CHECKING:
    from .prometheus import FeedCollector as FeedCollector
    from .prometheus import MetricsServer as MetricsServer
    from .prometheus import handler as handler
    from .prometheus import make_registry as make_registry
    from .prometheus import serve as serve

_PROMETHEUS = frozenset({"FeedCollector", "MetricsServer", "handler", "make_registry", "serve"})

__all__ = [
    "METRICS",
    "FeedCollector",
    "FeedSet",
    "Family",
    "HistogramValue",
    "MeteredFeed",
    "MetricDef",
    "MetricsServer",
    "default_feeds",
    "handler",
    "make_registry",
    "register",
    "serve",
    "unregister",
]


def __getattr__(name: str) -> _typing.Any:
    if name == "otel":
        return _extra(".otel", "otel", "opentelemetry-api")
    if name not in _PROMETHEUS:
        raise AttributeError(f"module 'asyncfeed.metrics' has no attribute {name!r}")
    value = getattr(_extra(".prometheus", "metrics", "prometheus-client"), name)
    globals()[name] = value
    return value


def _extra(module: str, extra: str, package: str) -> _typing.Any:
    try:
        return _importlib.import_module(module, __name__)
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] in (
            "prometheus_client",
            "opentelemetry",
        ):
            raise ModuleNotFoundError(
                f"asyncfeed.metrics{module} needs {package}: pip install 'asyncfeed[{extra}]'",
                name=exc.name,
            ) from exc
        raise
