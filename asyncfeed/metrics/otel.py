"""The OpenTelemetry bridge (``pip install 'asyncfeed[otel]'``): observable instruments over
the same snapshots as the Prometheus collector.

:func:`instrument` creates one observable instrument per metric of ``families.METRICS`` on a
meter of the given (or the global) ``MeterProvider``; their callbacks read a
:class:`~.registry.FeedSet` when the SDK collects, never in between. Counters become
observable counters (cumulative, monotonic), gauges observable gauges, each label an
attribute. OpenTelemetry has no observable histogram, so the fetch-duration histogram
becomes two observable counters, ``….count`` and ``….sum``.

Names drop the Prometheus unit suffix for a unit: ``asyncfeed_consumer_wait_seconds``
becomes ``asyncfeed.consumer_wait`` in ``s``; an OpenTelemetry Prometheus exporter turns
them back into the same names as :mod:`~asyncfeed.metrics.prometheus`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Final, final

from opentelemetry import metrics as otel
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from .. import __version__
from .families import METRICS, Family, HistogramValue, MetricDef
from .registry import FeedSet, MeteredFeed, as_feed_set

__all__ = ["OtelBridge", "instrument", "otel_name"]

UNITS: Final = {"seconds": "s", "bytes": "By", "ratio": "1"}

Callback = Callable[[CallbackOptions], Iterable[Observation]]


def otel_name(metric: MetricDef) -> tuple[str, str]:
    """``(name, unit)`` of ``metric`` in OpenTelemetry's style."""
    name = metric.name
    if metric.unit and name.endswith("_" + metric.unit):
        name = name[: -len(metric.unit) - 1]
    return "asyncfeed." + name.removeprefix("asyncfeed_"), UNITS.get(metric.unit, "")


@final
class OtelBridge:
    """The instruments made by :func:`instrument`; :meth:`close` makes them report nothing."""

    def __init__(self, feeds: FeedSet, meter_provider: MeterProvider | None, max_age: float):
        self.feeds: Final = feeds
        self._max_age = max_age
        self._lock = threading.Lock()
        self._taken = -max_age
        self._families: dict[str, Family] = {}
        self.closed = False
        provider = meter_provider if meter_provider is not None else otel.get_meter_provider()
        meter = provider.get_meter("asyncfeed", __version__)
        self.names: Final[list[str]] = []
        for metric in METRICS.values():
            name, unit = otel_name(metric)
            doc = metric.help
            if metric.kind == "histogram":
                for part, part_unit in (("count", ""), ("sum", unit)):
                    meter.create_observable_counter(
                        f"{name}.{part}",
                        callbacks=[self._observer(metric.name, part)],
                        unit=part_unit,
                        description=f"{doc} ({part})",
                    )
                    self.names.append(f"{name}.{part}")
                continue
            create = (
                meter.create_observable_counter
                if metric.kind == "counter"
                else meter.create_observable_gauge
            )
            create(name, callbacks=[self._observer(metric.name)], unit=unit, description=doc)
            self.names.append(name)

    def close(self) -> None:
        """Report nothing from now on (OpenTelemetry cannot remove instruments)."""
        self.closed = True

    def _snapshot(self) -> dict[str, Family]:
        """One snapshot for all the callbacks of one collection (at most ``max_age`` old)."""
        with self._lock:
            now = time.monotonic()
            if now - self._taken >= self._max_age:
                self._families = {f.metric.name: f for f in self.feeds.families()}
                self._taken = now
            return self._families

    def _observer(self, name: str, part: str | None = None) -> Callback:
        def observe(options: CallbackOptions) -> Iterator[Observation]:
            if self.closed:
                return
            family = self._snapshot().get(name)
            if family is None:
                return
            labels = family.metric.labels
            for values, value in family.samples.items():
                attributes = dict(zip(labels, values, strict=True))
                if isinstance(value, HistogramValue):
                    if part is not None:
                        yield Observation(value.count if part == "count" else value.sum, attributes)
                else:
                    yield Observation(value, attributes)

        return observe


def instrument(
    *,
    meter_provider: MeterProvider | None = None,
    feeds: FeedSet | Iterable[MeteredFeed] | None = None,
    max_age: float = 0.5,
) -> OtelBridge:
    """Observe the feeds of ``feeds`` (default: ``af.metrics.register``'s) with
    OpenTelemetry instruments of ``meter_provider`` (default: the global one).

    One collection takes one snapshot of the feeds, reused by every instrument's callback
    for ``max_age`` seconds.
    """
    return OtelBridge(as_feed_set(feeds), meter_provider, max_age)
